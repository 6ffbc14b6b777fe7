//! Tests of the version index and its records.

use super::*;
use http::HeaderMap;
use std::time::Duration;
use url::Url;

const SECOND: u64 = 1000;

fn key(version: &str) -> CacheKey {
    let url = format!("https://a.test/a.js?v={version}");
    CacheKey::new(&Url::parse(&url).expect("url"), &HeaderMap::new())
}

fn v(text: &str) -> Version {
    serde_json::from_value(serde_json::json!(text)).expect("version")
}

fn rule(keep: usize, after_secs: u64) -> RetireRule {
    RetireRule {
        keep,
        after: Duration::from_secs(after_secs),
    }
}

/// Uses at the given seconds, then the rule applied at `now`: the versions still held.
fn held_after(uses: &[(&str, u64)], now: u64, rule: RetireRule) -> (Vec<String>, Outcome) {
    let mut record = AssetRecord::default();
    let mut outcome = Outcome::default();
    for (version, at) in uses {
        record.hold(&v(version), Some(&key(version)), at * SECOND);
        let step = record.retire(at * SECOND, rule);
        outcome.retired.extend(step.retired);
        outcome.took_over = step.took_over.or(outcome.took_over);
    }
    let step = record.retire(now * SECOND, rule);
    outcome.retired.extend(step.retired);
    outcome.took_over = step.took_over.or(outcome.took_over);
    let mut held: Vec<String> = record
        .versions
        .iter()
        .map(|h| h.version.as_str().to_owned())
        .collect();
    held.sort();
    (held, outcome)
}

#[test]
fn versions_retire_by_use_not_by_first_appearance() {
    type Case = (
        &'static str,
        &'static [(&'static str, u64)],
        u64,
        RetireRule,
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            "a canary keeps both",
            &[("a", 0), ("b", 1), ("a", 2), ("a", 3), ("b", 4), ("a", 5)],
            6,
            rule(1, 300),
            &["a", "b"],
        ),
        (
            "a redeploy retires the old one once unused long enough",
            &[("v1", 0), ("v2", 10), ("v2", 400)],
            400,
            rule(1, 300),
            &["v2"],
        ),
        (
            "not yet unused long enough",
            &[("v1", 0), ("v2", 10), ("v2", 200)],
            200,
            rule(1, 300),
            &["v1", "v2"],
        ),
        (
            "a one-off does not retire the version in use",
            &[("good", 0), ("x", 1), ("good", 2)],
            2,
            rule(1, 300),
            &["good", "x"],
        ),
        (
            "the one-off retires once unused",
            &[("good", 0), ("x", 1), ("good", 2), ("good", 400)],
            400,
            rule(1, 300),
            &["good"],
        ),
        (
            "nothing else used since: kept however old",
            &[("v1", 0)],
            100_000,
            rule(1, 300),
            &["v1"],
        ),
        (
            "0 retires at once",
            &[("v1", 0), ("v2", 1)],
            1,
            rule(1, 0),
            &["v2"],
        ),
        (
            "keep_versions keeps the most recently used",
            &[("v1", 0), ("v2", 1), ("v3", 2)],
            1000,
            rule(2, 0),
            &["v2", "v3"],
        ),
        (
            "an old version asked for again is held again",
            &[("v1", 0), ("v2", 1), ("v1", 2)],
            2,
            rule(1, 0),
            &["v1"],
        ),
    ];
    for (what, uses, now, rule, want) in cases {
        let (held, _) = held_after(uses, *now, *rule);
        assert_eq!(held, *want, "{what}");
    }
}

#[test]
fn a_takeover_is_a_version_change_and_a_one_off_is_not() {
    let (_, redeploy) = held_after(&[("v1", 0), ("v2", 10), ("v2", 400)], 400, rule(1, 300));
    assert_eq!(redeploy.took_over, Some((v("v1"), v("v2"))));
    assert_eq!(redeploy.retired.len(), 1);
    assert!(!redeploy.retired[0].one_off);
    assert_eq!(redeploy.retired[0].keys, vec![key("v1")]);

    let (_, noise) = held_after(&[("good", 0), ("x", 1), ("good", 400)], 400, rule(1, 300));
    assert_eq!(noise.took_over, None);
    assert_eq!(noise.retired.len(), 1);
    assert!(noise.retired[0].one_off);
}

#[test]
fn thousands_of_one_off_versions_stay_bounded_and_resurrect_nothing() {
    let mut record = AssetRecord::default();
    let rule = rule(1, 300);
    for n in 0..10_000u64 {
        // `good` is used once for every fifty one-offs, and counted as used.
        if n % 50 == 0 {
            record.hold(&v("good"), Some(&key("good")), n * 2);
            let counted = |k: &CacheKey| {
                (*k == key("good")).then_some(Use {
                    at_ms: n * 2,
                    count: n / 50 + 1,
                })
            };
            record.note_uses(&counted, &HashMap::new());
        }
        let one_off = format!("x{n}");
        record.hold(&v(&one_off), Some(&key(&one_off)), n * 2 + 1);
        record.retire(n * 2 + 1, rule);
        assert!(record.versions.len() <= MAX_HELD);
        assert!(
            record.versions.iter().any(|h| h.version == v("good")),
            "at {n}"
        );
    }
    record.hold(&v("good"), Some(&key("good")), 20_000);
    record.retire(20_000, rule);
    assert_eq!(
        record.current,
        Some(v("good")),
        "the version in use stays current"
    );
    assert!(record.versions.iter().any(|h| h.version == v("good")));
    let json = serde_json::to_vec(&record).expect("json");
    assert!(json.len() < 32 * 1024, "{} bytes", json.len());
}

#[test]
fn uses_from_entries_and_the_fleet_count() {
    let mut record = AssetRecord::default();
    record.hold(&v("v1"), Some(&key("v1")), 0);
    record.hold(&v("v2"), Some(&key("v2")), SECOND);
    let local = |k: &CacheKey| {
        (*k == key("v1")).then_some(Use {
            at_ms: 500 * SECOND,
            count: 1,
        })
    };
    assert!(record.note_uses(&local, &HashMap::new()));
    let outcome = record.retire(500 * SECOND, rule(1, 300));
    assert!(
        outcome.retired.iter().any(|r| r.version == v("v2")),
        "v1 used since: v2 retires"
    );
    let remote = HashMap::from([(v("v2"), 900 * SECOND)]);
    record.hold(&v("v2"), Some(&key("v2")), 800 * SECOND);
    assert!(record.note_uses(&|_| None, &remote));
    let last = |ver: &str| {
        record
            .versions
            .iter()
            .find(|h| h.version == v(ver))
            .map(|h| h.last_used_ms)
    };
    assert_eq!(last("v2"), Some(900 * SECOND));
}

#[test]
fn records_of_the_previous_format_are_read() {
    let old = r#"{"asset": "https://a.test/a.js", "versions": [{"version": "2", "first_seen_ms": 5, "keys": []}], "retired": ["1"]}"#;
    let record: AssetRecord = serde_json::from_str(old).expect("old record");
    assert_eq!(record.versions[0].last_used_ms, 0);
    assert_eq!(record.current, None);
}
