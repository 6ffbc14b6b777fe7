//! Policy tables: request headers x response headers x age -> decision.

use super::*;
use crate::cache::entry::EntryMeta;
use crate::cache::http::freshness::{
    age, judge as freshness, refreshed, validators, Freshness, StaleUse,
};
use crate::cache::http::key::CacheKey;
use crate::config::Config;
use http::HeaderValue;

const DAY: Duration = Duration::from_secs(86_400);
const T0: Duration = Duration::from_secs(1_800_000_000);

type Headers = &'static [(&'static str, &'static str)];

fn headers(pairs: Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn request(url: &str, pairs: Headers) -> Request<()> {
    let mut request = Request::new(());
    *request.uri_mut() = url.parse().expect("uri");
    *request.headers_mut() = headers(pairs);
    request
}

fn response(status: u16, pairs: Headers) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    *response.headers_mut() = headers(pairs);
    response
}

fn plan(config: &str, url: &str, req: Headers) -> Result<CachePlan, NoCacheReason> {
    let config = Config::parse(config).expect("test config is valid");
    let url = Url::parse(url).expect("test URL parses");
    classify_request(&Method::GET, &url, &headers(req), &config.policy, DAY)
}

#[test]
fn requests_are_classified() {
    let rules = r#"{"rules": [
        {"glob": "cdn.test/fonts/**", "action": "cache", "ttl_secs": 60},
        {"glob": "cdn.test/private/**", "action": "cache", "share_credentials": true},
        {"regex": "^a\\.test/never/", "action": "bypass"},
        {"glob": "a.test/api/**", "standard_caching": false}
    ]}"#;
    let pinned = |ttl: Duration| Ok(Some(ttl));
    type Case = (
        &'static str,
        Headers,
        Result<Option<Duration>, NoCacheReason>,
    );
    let cases: &[Case] = &[
        ("https://a.test/main.dart.js?v=1", &[], pinned(DAY)),
        ("https://a.test/main.dart.js", &[], Ok(None)),
        (
            "https://a.test/api/data",
            &[],
            Err(NoCacheReason::NotVersioned),
        ),
        ("https://a.test/api/app.js?v=3", &[], pinned(DAY)),
        (
            "https://cdn.test/fonts/a/b.bin",
            &[],
            pinned(Duration::from_secs(60)),
        ),
        (
            "https://a.test/never/app.js?v=1",
            &[],
            Err(NoCacheReason::Rule),
        ),
        (
            "https://a.test/app.js?v=1",
            &[("authorization", "Bearer x")],
            Err(NoCacheReason::Authorization),
        ),
        (
            "https://a.test/page",
            &[("authorization", "Bearer x")],
            Err(NoCacheReason::Authorization),
        ),
        (
            "https://cdn.test/private/app.js",
            &[("authorization", "Bearer x")],
            pinned(DAY),
        ),
        (
            "https://a.test/app.js?v=1",
            &[("range", "bytes=0-1")],
            pinned(DAY),
        ),
        (
            "https://a.test/app.js?v=1",
            &[("cache-control", "no-cache"), ("pragma", "no-cache")],
            pinned(DAY),
        ),
    ];
    for (url, req, want) in cases {
        assert_eq!(
            &plan(rules, url, req).map(|p| p.pinned_ttl),
            want,
            "{url} {req:?}"
        );
    }
    let off = plan(
        r#"{"standard_caching": false}"#,
        "https://a.test/main.dart.js",
        &[],
    );
    assert_eq!(off, Err(NoCacheReason::NotVersioned));
    let post = classify_request(
        &Method::POST,
        &Url::parse("https://a.test/a.js?v=1").expect("url"),
        &HeaderMap::new(),
        &Config::default().policy,
        DAY,
    );
    assert_eq!(post, Err(NoCacheReason::Method));
}

/// A request and a response as hyper hands them over: the target and every header value a
/// slice of the connection's read buffer, which is returned too.
fn read_from_one_buffer(
    target: &str,
    req: Headers,
    status: u16,
    res: Headers,
) -> (Request<()>, Response<()>, bytes::Bytes) {
    let mut text = target.to_owned();
    for (_, value) in req.iter().chain(res) {
        text.push_str(value);
    }
    let buffer = bytes::Bytes::from(text);
    let mut at = target.len();
    let mut slice = |len: usize| {
        let value = buffer.slice(at..at + len);
        at += len;
        HeaderValue::from_maybe_shared(value).expect("header value")
    };
    let mut request = Request::new(());
    *request.uri_mut() = http::Uri::from_maybe_shared(buffer.slice(..target.len())).expect("uri");
    for (name, value) in req {
        request.headers_mut().append(*name, slice(value.len()));
    }
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    for (name, value) in res {
        response.headers_mut().append(*name, slice(value.len()));
    }
    (request, response, buffer)
}

#[test]
fn a_stored_policy_keeps_no_connection_buffer_alive() {
    // A stored policy lives as long as its entry; a slice of a read buffer in it would keep
    // the whole buffer (8 KiB and more) alive for an asset of a few hundred bytes.
    let plan = plan("{}", "https://a.test/index.html", &[]).expect("plan");
    let (request, response, buffer) = read_from_one_buffer(
        "https://a.test/index.html",
        &[("accept", "text/html"), ("user-agent", "test")],
        200,
        &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
    );
    let now = SystemTime::UNIX_EPOCH + T0;
    let lifetime = storable(&plan, &request, &response, now, &limits()).expect("storable");
    assert!(matches!(lifetime, Lifetime::Standard(_)));
    drop((request, response));
    assert!(
        buffer.is_unique(),
        "the stored policy holds a slice of the read buffer"
    );
}

fn limits() -> StoreLimits {
    StoreLimits {
        max_object_bytes: 100,
        negative_ttl: Duration::from_secs(60),
        record_for: None,
    }
}

fn lifetime_kind(result: Result<Lifetime, NoCacheReason>) -> Result<&'static str, NoCacheReason> {
    result.map(|lifetime| match lifetime {
        Lifetime::Pinned { ttl_secs: 60 } => "pinned 60s",
        Lifetime::Pinned { .. } => "pinned",
        Lifetime::Standard(_) => "standard",
    })
}

#[test]
fn responses_are_judged_storable() {
    let versioned = plan("{}", "https://a.test/a.js?v=1", &[]).expect("plan");
    let standard = plan("{}", "https://a.test/index.html", &[]).expect("plan");
    let now = SystemTime::UNIX_EPOCH + T0;
    type Case = (
        &'static str,
        u16,
        Headers,
        Result<&'static str, NoCacheReason>,
    );
    let cases: &[Case] = &[
        ("versioned", 200, &[], Ok("pinned")),
        (
            "versioned",
            200,
            &[("cache-control", "no-cache, max-age=0")],
            Ok("pinned"),
        ),
        ("versioned", 404, &[], Ok("pinned 60s")),
        ("versioned", 410, &[], Ok("pinned 60s")),
        ("versioned", 500, &[], Err(NoCacheReason::Status)),
        ("versioned", 206, &[], Err(NoCacheReason::Status)),
        (
            "versioned",
            200,
            &[("cache-control", "public, no-store")],
            Err(NoCacheReason::NoStore),
        ),
        (
            "versioned",
            200,
            &[("cache-control", "private=\"x\"")],
            Err(NoCacheReason::Private),
        ),
        (
            "versioned",
            200,
            &[("set-cookie", "a=b")],
            Err(NoCacheReason::SetCookie),
        ),
        ("versioned", 200, &[("vary", "*")], Err(NoCacheReason::Vary)),
        (
            "versioned",
            200,
            &[("vary", "Accept-Encoding, Cookie")],
            Ok("pinned"),
        ),
        (
            "versioned",
            200,
            &[("content-length", "101")],
            Err(NoCacheReason::TooLarge),
        ),
        (
            "standard",
            200,
            &[("cache-control", "public, max-age=3600")],
            Ok("standard"),
        ),
        (
            "standard",
            200,
            &[("cache-control", "s-maxage=60")],
            Ok("standard"),
        ),
        (
            "standard",
            200,
            &[("expires", "Thu, 01 Jan 2037 00:00:00 GMT")],
            Ok("standard"),
        ),
        (
            "standard",
            200,
            &[("cache-control", "no-cache"), ("etag", "\"a\"")],
            Ok("standard"),
        ),
        (
            "standard",
            200,
            &[("last-modified", "Sat, 01 Nov 2025 10:00:00 GMT")],
            Ok("standard"),
        ),
        ("standard", 200, &[], Err(NoCacheReason::NotCacheable)),
        (
            "standard",
            200,
            &[("cache-control", "no-cache")],
            Err(NoCacheReason::NotCacheable),
        ),
        (
            "standard",
            200,
            &[("cache-control", "private, max-age=60")],
            Err(NoCacheReason::Private),
        ),
        (
            "standard",
            404,
            &[("cache-control", "max-age=60")],
            Err(NoCacheReason::Status),
        ),
    ];
    for (kind, status, res, want) in cases {
        let plan = if *kind == "versioned" {
            &versioned
        } else {
            &standard
        };
        let got = storable(
            plan,
            &request("https://a.test/x", &[]),
            &response(*status, res),
            now,
            &limits(),
        );
        assert_eq!(lifetime_kind(got), *want, "{kind} {status} {res:?}");
    }
}

#[path = "policy_freshness_tests.rs"]
mod freshness_tables;
