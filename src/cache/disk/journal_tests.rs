//! Tests of `journal.rs`.

use super::*;

fn record(op: Op, n: u8) -> Record {
    Record {
        op,
        digest: [n; 32],
        at_ms: 1_700_000_000_000 + u64::from(n),
        writer: 7,
    }
}

#[test]
fn records_round_trip_and_damage_is_caught() {
    let ops = [
        Op::Put { size: 12_345 },
        Op::Touch { uses: 1 },
        Op::Remove(Removal::Capacity),
        Op::Remove(Removal::OlderVersion),
        Op::Remove(Removal::Purge),
        Op::Remove(Removal::Damaged),
    ];
    for (n, op) in ops.into_iter().enumerate() {
        let record = record(op, n as u8);
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record));
        for at in [0, 1, 20, 40, 63] {
            let mut damaged = bytes;
            damaged[at] ^= 0x10;
            assert_eq!(Record::decode(&damaged), None, "{op:?} byte {at}");
        }
    }
    assert_eq!(Record::decode(&header()), None);
    assert_eq!(Record::decode(&[0u8; 10]), None);
}

#[test]
fn two_journals_on_one_file_see_each_others_records_and_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = Journal::open(dir.path()).expect("open a");
    let mut b = Journal::open(dir.path()).expect("open b");
    let first = a.lock().and_then(|mut j| j.read_new()).expect("read");
    assert!(first.lost && first.restarted && first.records.is_empty());
    let put = |n: u8| record(Op::Put { size: u64::from(n) }, n);
    a.lock()
        .and_then(|mut j| j.append(&[put(1)]))
        .expect("append");
    let seen = b
        .lock()
        .and_then(|mut j| j.append(&[put(2)]))
        .expect("append");
    assert!(seen.restarted && !seen.lost);
    assert_eq!(seen.records, vec![put(1)]);
    let read = |j: &mut Journal| j.lock().and_then(|mut j| j.read_new()).expect("read");
    assert_eq!(read(&mut a).records, vec![put(2)]);

    b.lock()
        .and_then(|mut j| j.rewrite(&[put(2)]))
        .expect("rewrite");
    let after = read(&mut a);
    assert!(after.restarted && !after.lost);
    assert_eq!(after.records, vec![put(2)]);
    assert!(read(&mut b).records.is_empty());
}

#[test]
fn a_torn_tail_waits_and_a_damaged_record_is_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut journal = Journal::open(dir.path()).expect("open");
    journal.lock().and_then(|mut j| j.read_new()).expect("read");
    let mut bytes = record(Op::Touch { uses: 1 }, 1).encode().to_vec();
    bytes[5] ^= 1;
    bytes.extend_from_slice(&record(Op::Touch { uses: 1 }, 2).encode());
    bytes.extend_from_slice(&record(Op::Touch { uses: 1 }, 3).encode()[..20]);
    let path = dir.path().join("index.journal");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .expect("write");
    let mut locked = journal.lock().expect("lock");
    let replay = locked.read_new().expect("read");
    assert_eq!(replay.records, vec![record(Op::Touch { uses: 1 }, 2)]);
    assert_eq!(replay.damaged, 1);
    // The next append cuts the torn record, so its own lands whole.
    locked
        .append(&[record(Op::Touch { uses: 1 }, 4)])
        .expect("append");
    drop(locked);
    let mut other = Journal::open(dir.path()).expect("open");
    let all = other.lock().and_then(|mut j| j.read_new()).expect("read");
    assert_eq!(
        all.records,
        vec![
            record(Op::Touch { uses: 1 }, 2),
            record(Op::Touch { uses: 1 }, 4)
        ]
    );
}
