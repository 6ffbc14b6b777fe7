//! Tests of `index.rs`.

use super::*;

fn record(op: Op, n: u8, at_ms: u64) -> Record {
    Record {
        op,
        digest: [n; 32],
        at_ms,
        writer: 1,
    }
}

#[test]
fn state_follows_puts_touches_and_removes() {
    let mut state = IndexState::default();
    let steps = [
        (record(Op::Put { size: 100 }, 1, 10), (1, 100)),
        (record(Op::Put { size: 50 }, 2, 20), (2, 150)),
        (record(Op::Put { size: 70 }, 1, 30), (2, 120)),
        (record(Op::Touch { uses: 1 }, 3, 40), (2, 120)),
        (record(Op::Remove(Removal::Capacity), 2, 50), (1, 70)),
        (record(Op::Remove(Removal::Purge), 9, 60), (1, 70)),
    ];
    for (n, (record, want)) in steps.iter().enumerate() {
        state.apply(record);
        assert_eq!(state.usage(), *want, "step {n}");
    }
}

#[test]
fn victims_are_the_least_recently_used_down_to_the_target() {
    let mut state = IndexState::default();
    for (n, used) in [(1u8, 50u64), (2, 10), (3, 40), (4, 20)] {
        state.apply(&record(Op::Put { size: 100 }, n, used));
    }
    state.apply(&record(Op::Touch { uses: 1 }, 2, 60));
    let names = |target| -> Vec<u8> { state.victims(target).iter().map(|v| v.0[0]).collect() };
    let cases: [(u64, &[u8]); 5] = [
        (400, &[]),
        (399, &[4]),
        (300, &[4]),
        (250, &[4, 3]),
        (0, &[4, 3, 1, 2]),
    ];
    for (target, want) in cases {
        assert_eq!(names(target), want, "target {target}");
    }
}

#[test]
fn two_indexes_share_one_journal_and_learn_invalidations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, learned) = DiskIndex::open(dir.path()).expect("open a");
    assert!(learned.lost, "a new directory has no journal");
    let (b, learned) = DiskIndex::open(dir.path()).expect("open b");
    assert!(!learned.lost);
    a.put(&[([1; 32], 100, 1), ([2; 32], 200, 2)]).expect("put");
    b.sync().expect("sync");
    assert_eq!(b.usage(), (2, 300));

    a.remove(&[[1; 32]], Removal::OlderVersion, 3)
        .expect("remove");
    assert!(
        a.sync().expect("sync").invalidated.is_empty(),
        "its own removal"
    );
    b.remove(&[[2; 32]], Removal::Capacity, 4).expect("remove");
    let learned = b.sync().expect("sync");
    assert_eq!(
        learned.invalidated,
        vec![[1; 32]],
        "learned while appending"
    );
    assert!(b.sync().expect("sync").invalidated.is_empty());
    assert_eq!(a.sync().expect("sync").invalidated, Vec::<Digest>::new());
    assert_eq!((a.usage(), b.usage()), ((0, 0), (0, 0)));

    a.put(&[([3; 32], 30, 5), ([4; 32], 40, 5)]).expect("put");
    a.touch(&[([3; 32], 6)]).expect("touch");
    a.touch(&[([3; 32], 7)]).expect("touch");
    b.sync().expect("sync");
    a.remove(&[[4; 32]], Removal::Purge, 6).expect("remove");
    a.compact().expect("compact");
    let learned = b.sync().expect("sync");
    assert_eq!(b.usage(), (1, 30));
    assert_eq!(
        learned.invalidated,
        vec![[4; 32]],
        "a removal folded into a compaction still reaches the others"
    );
    let (c, learned) = DiskIndex::open(dir.path()).expect("reopen");
    assert!(!learned.lost);
    assert_eq!(
        c.get(&[3; 32]),
        Some(Slot {
            size: 30,
            used_ms: 7,
            uses: 2,
        }),
        "uses survive a compaction"
    );
}
