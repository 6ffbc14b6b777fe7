//! Freshness tables: a stored entry x request headers x age -> fresh, stale, revalidated.

use super::*;

fn stored(url: &str, status: u16, res: Headers, lifetime: Lifetime, versioned: bool) -> EntryMeta {
    let key = CacheKey::new(&Url::parse(url).expect("url"), &HeaderMap::new());
    let mut meta = EntryMeta::new(
        key,
        StatusCode::from_u16(status).expect("status"),
        &headers(res),
        lifetime,
        SystemTime::UNIX_EPOCH + T0,
        b"body",
    );
    if versioned {
        meta.version = Some(serde_json::from_value(serde_json::json!("1")).expect("version"));
    }
    meta
}

fn standard_entry(res: Headers) -> EntryMeta {
    let now = SystemTime::UNIX_EPOCH + T0;
    let req = request("https://a.test/index.html", &[]);
    let policy = CachePolicy::new_options(&req, &response(200, res), now, shared_cache());
    stored(
        "https://a.test/index.html",
        200,
        res,
        Lifetime::Standard(Box::new(policy)),
        false,
    )
}

#[test]
fn a_refreshed_policy_keeps_no_connection_buffer_alive() {
    let meta = standard_entry(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    let (request, not_modified, buffer) = read_from_one_buffer(
        "https://a.test/index.html",
        &[("if-none-match", "\"v1\"")],
        304,
        &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
    );
    let now = SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(120);
    let refreshed = refreshed(&meta, &request, &not_modified, now).expect("refreshed");
    assert!(matches!(refreshed.lifetime, Lifetime::Standard(_)));
    drop((request, not_modified));
    assert!(
        buffer.is_unique(),
        "the refreshed policy holds a slice of the read buffer"
    );
}

#[test]
fn entries_are_judged_fresh_or_stale_by_age() {
    let config = Config::default().policy;
    let secs = Duration::from_secs;
    let fresh = Freshness::Fresh;
    let stale = |while_revalidating, on_error| {
        Freshness::Stale(StaleUse {
            while_revalidating,
            on_error,
        })
    };
    let pinned = |ttl| Lifetime::Pinned { ttl_secs: ttl };
    type Case = (&'static str, EntryMeta, Headers, u64, Freshness);
    let cases: Vec<Case> = vec![
        (
            "versioned, young",
            stored("https://a.test/a.js?v=1", 200, &[], pinned(60), true),
            &[],
            59,
            fresh,
        ),
        (
            "versioned, client reload",
            stored("https://a.test/a.js?v=1", 200, &[], pinned(60), true),
            &[("cache-control", "no-cache")],
            10,
            fresh,
        ),
        (
            "versioned, past ttl: config windows",
            stored("https://a.test/a.js?v=1", 200, &[], pinned(60), true),
            &[],
            61,
            stale(true, true),
        ),
        (
            "versioned, past every window",
            stored("https://a.test/a.js?v=1", 200, &[], pinned(60), true),
            &[],
            60 + 8 * 86_400,
            stale(false, false),
        ),
        (
            "negative, past ttl",
            stored("https://a.test/a.js?v=2", 404, &[], pinned(60), true),
            &[],
            61,
            stale(false, false),
        ),
        (
            "rule entry, response windows",
            stored(
                "https://a.test/f.bin",
                200,
                &[(
                    "cache-control",
                    "stale-while-revalidate=30, stale-if-error=300",
                )],
                pinned(60),
                false,
            ),
            &[],
            80,
            stale(true, true),
        ),
        (
            "rule entry, past swr",
            stored(
                "https://a.test/f.bin",
                200,
                &[(
                    "cache-control",
                    "stale-while-revalidate=30, stale-if-error=300",
                )],
                pinned(60),
                false,
            ),
            &[],
            100,
            stale(false, true),
        ),
        (
            "standard max-age",
            standard_entry(&[("cache-control", "max-age=100")]),
            &[],
            99,
            fresh,
        ),
        (
            "standard max-age, client reload (ignored by default)",
            standard_entry(&[("cache-control", "max-age=100")]),
            &[("cache-control", "no-cache"), ("pragma", "no-cache")],
            10,
            fresh,
        ),
        (
            "standard past max-age",
            standard_entry(&[("cache-control", "max-age=100")]),
            &[],
            101,
            stale(false, false),
        ),
        (
            "standard swr",
            standard_entry(&[("cache-control", "max-age=100, stale-while-revalidate=50")]),
            &[],
            120,
            stale(true, false),
        ),
        (
            "standard sie",
            standard_entry(&[("cache-control", "max-age=100, stale-if-error=500")]),
            &[],
            400,
            stale(false, true),
        ),
        (
            "standard must-revalidate forbids stale",
            standard_entry(&[(
                "cache-control",
                "max-age=100, must-revalidate, stale-if-error=500",
            )]),
            &[],
            120,
            stale(false, false),
        ),
        (
            "standard no-cache",
            standard_entry(&[("cache-control", "no-cache"), ("etag", "\"a\"")]),
            &[],
            0,
            stale(false, false),
        ),
    ];
    for (name, meta, req, age, want) in cases {
        let now = SystemTime::UNIX_EPOCH + T0 + secs(age);
        assert_eq!(
            freshness(
                &meta,
                &request("https://a.test/index.html", req),
                now,
                &config
            ),
            want,
            "{name}"
        );
    }
}

#[test]
fn client_reloads_revalidate_standard_entries_when_honoured() {
    let mut config = Config::default().policy;
    config.honour_client_reload = true;
    let now = SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(10);
    let entry = standard_entry(&[("cache-control", "max-age=100")]);
    let judged = |headers: Headers| {
        freshness(
            &entry,
            &request("https://a.test/index.html", headers),
            now,
            &config,
        )
    };
    let stale = Freshness::Stale(StaleUse::default());
    assert_eq!(judged(&[("cache-control", "no-cache")]), stale);
    assert_eq!(judged(&[("cache-control", "max-age=0")]), stale);
    assert_eq!(judged(&[("pragma", "no-cache")]), stale);
    assert_eq!(judged(&[]), Freshness::Fresh);
    let versioned = stored(
        "https://a.test/a.js?v=1",
        200,
        &[],
        Lifetime::Pinned { ttl_secs: 60 },
        true,
    );
    let reload = request("https://a.test/a.js?v=1", &[("cache-control", "no-cache")]);
    assert_eq!(
        freshness(&versioned, &reload, now, &config),
        Freshness::Fresh,
        "a versioned entry is never defeated by a reload"
    );
}

#[test]
fn a_head_is_judged_as_the_get_it_asks_about() {
    let config = Config::default().policy;
    let entry = standard_entry(&[("cache-control", "max-age=100")]);
    let head = |pairs: Headers| {
        let mut head = request("https://a.test/index.html", pairs);
        *head.method_mut() = http::Method::HEAD;
        head
    };
    let at = |secs: u64| SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs);
    assert_eq!(
        freshness(&entry, &head(&[]), at(10), &config),
        Freshness::Fresh
    );
    assert_eq!(
        freshness(
            &entry,
            &head(&[("cache-control", "no-cache")]),
            at(10),
            &config
        ),
        Freshness::Fresh,
        "a reload is ignored for HEAD as for GET"
    );
    assert_eq!(
        freshness(&entry, &head(&[]), at(150), &config),
        Freshness::Stale(StaleUse::default())
    );
}

#[test]
fn a_304_refreshes_headers_and_lifetime() {
    let meta = stored(
        "https://a.test/f.bin",
        200,
        &[("etag", "\"a\""), ("x-old", "1"), ("content-length", "4")],
        Lifetime::Pinned { ttl_secs: 60 },
        false,
    );
    let later = SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(500);
    let not_modified = response(
        304,
        &[("etag", "\"a\""), ("x-old", "2"), ("content-length", "0")],
    );
    let refreshed = refreshed(
        &meta,
        &request("https://a.test/f.bin", &[]),
        &not_modified,
        later,
    )
    .expect("confirmed");
    assert_eq!(refreshed.stored_at(), later);
    let headers = refreshed.header_map();
    assert_eq!(headers["x-old"], "2");
    assert_eq!(
        headers["content-length"], "4",
        "a 304 never changes the body's length"
    );

    let other = response(304, &[("etag", "\"b\"")]);
    assert!(refreshed_is_none(&meta, &other));
    assert_eq!(
        validators(&meta),
        vec![(
            http::header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\"")
        )]
    );
}

fn refreshed_is_none(meta: &EntryMeta, not_modified: &Response<()>) -> bool {
    refreshed(
        meta,
        &request("https://a.test/f.bin", &[]),
        not_modified,
        SystemTime::UNIX_EPOCH + T0,
    )
    .is_none()
}

#[test]
fn age_counts_the_age_the_response_arrived_with() {
    let meta = stored(
        "https://a.test/a.js?v=1",
        200,
        &[("age", "30")],
        Lifetime::Pinned { ttl_secs: 60 },
        true,
    );
    let now = SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(10);
    assert_eq!(age(&meta, now), Duration::from_secs(40));
}
