//! Cache policy: may this request use the cache, may this response be stored, is this entry
//! still fresh. Pure: no I/O, and `now` is a parameter.

use std::time::{Duration, SystemTime};

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, RANGE, SET_COOKIE, VARY,
};
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use super::version::{self, VersionedAsset};
use crate::config::{PolicyConfig, RuleAction};

/// Why a request or response does not go through the cache. Shown in `Cache-Status` details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCacheReason {
    /// Neither GET nor HEAD.
    Method,
    /// Not a versioned asset URL and no rule names it.
    NotVersioned,
    /// A bypass rule matched.
    Rule,
    /// The request carries credentials and no rule allows sharing the answer.
    Authorization,
    /// A range request (whole bodies only).
    Range,
    /// The response status is not 200.
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The response sets a cookie.
    SetCookie,
    /// The response varies on more than Accept-Encoding.
    Vary,
    /// The body is larger than `max_object_mb`.
    TooLarge,
    /// A newer version of this asset is already held.
    OlderVersion,
    /// Another request's fetch took longer than `coalesce_wait_secs`.
    CoalesceTimeout,
}

impl NoCacheReason {
    /// The reason in the proxy's vocabulary (headers, logs, stats).
    pub fn as_str(self) -> &'static str {
        match self {
            NoCacheReason::Method => "method",
            NoCacheReason::NotVersioned => "not-versioned",
            NoCacheReason::Rule => "rule",
            NoCacheReason::Authorization => "authorization",
            NoCacheReason::Range => "range",
            NoCacheReason::Status => "status",
            NoCacheReason::NoStore => "no-store",
            NoCacheReason::Private => "private",
            NoCacheReason::SetCookie => "set-cookie",
            NoCacheReason::Vary => "vary",
            NoCacheReason::TooLarge => "too-large",
            NoCacheReason::OlderVersion => "older-version",
            NoCacheReason::CoalesceTimeout => "coalesce-timeout",
        }
    }
}

/// How a cacheable request is to be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    /// Identity and version, when the URL carries one.
    pub versioned: Option<VersionedAsset>,
    /// How long a stored entry is served before it is fetched again.
    pub ttl: Duration,
}

/// Whether a request may be answered from, and stored into, the cache.
pub fn classify_request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    policy: &PolicyConfig,
    default_ttl: Duration,
) -> Result<CachePlan, NoCacheReason> {
    if method != Method::GET && method != Method::HEAD {
        return Err(NoCacheReason::Method);
    }
    let rule = policy
        .rules
        .iter()
        .find(|rule| rule.pattern.is_match(&match_text(url)));
    if rule.is_some_and(|rule| rule.action == RuleAction::Bypass) {
        return Err(NoCacheReason::Rule);
    }
    let versioned = version::detect(url, policy);
    if rule.is_none() && versioned.is_none() {
        return Err(NoCacheReason::NotVersioned);
    }
    let allow_authorization = rule.is_some_and(|rule| rule.allow_authorization);
    if headers.contains_key(AUTHORIZATION) && !allow_authorization {
        return Err(NoCacheReason::Authorization);
    }
    if headers.contains_key(RANGE) {
        return Err(NoCacheReason::Range);
    }
    let ttl = rule.and_then(|rule| rule.ttl).unwrap_or(default_ttl);
    Ok(CachePlan { versioned, ttl })
}

/// The text rules match: `host[:port]/path`, without scheme and query.
pub fn match_text(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{host}:{port}{}", url.path()),
        None => format!("{host}{}", url.path()),
    }
}

/// Whether an origin response may be stored. Versioned URLs ignore `no-cache` and `max-age=0`:
/// the version in the URL pins the content.
pub fn check_response(
    status: StatusCode,
    headers: &HeaderMap,
    max_object_bytes: u64,
) -> Result<(), NoCacheReason> {
    if status != StatusCode::OK || headers.contains_key(CONTENT_RANGE) {
        return Err(NoCacheReason::Status);
    }
    for directive in list_items(headers, CACHE_CONTROL) {
        let name = directive.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("no-store") {
            return Err(NoCacheReason::NoStore);
        }
        if name.eq_ignore_ascii_case("private") {
            return Err(NoCacheReason::Private);
        }
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NoCacheReason::SetCookie);
    }
    if list_items(headers, VARY).any(|name| !name.eq_ignore_ascii_case("accept-encoding")) {
        return Err(NoCacheReason::Vary);
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|length| length > max_object_bytes) {
        return Err(NoCacheReason::TooLarge);
    }
    Ok(())
}

/// Whether an entry stored at `stored_at` with this lifetime may still be served at `now`.
/// An entry from the future (a clock set back) counts as stale.
pub fn is_fresh(stored_at: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(stored_at).is_ok_and(|age| age < ttl)
}

/// The comma-separated items of every field line of one header, trimmed.
fn list_items(headers: &HeaderMap, name: http::header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::HeaderValue;

    const DAY: Duration = Duration::from_secs(86_400);

    type Headers = &'static [(&'static str, &'static str)];

    fn headers(pairs: Headers) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn classify(
        config: &str,
        method: Method,
        url: &str,
        req: Headers,
    ) -> Result<Duration, NoCacheReason> {
        let config = Config::parse(config).expect("test config is valid");
        let url = Url::parse(url).expect("test URL parses");
        classify_request(&method, &url, &headers(req), &config.policy, DAY).map(|plan| plan.ttl)
    }

    #[test]
    fn requests_are_classified() {
        let rules = r#"{"rules": [
            {"glob": "cdn.test/fonts/**", "action": "cache", "ttl_secs": 60},
            {"glob": "cdn.test/private/**", "action": "cache", "allow_authorization": true},
            {"regex": "^a\\.test/never/", "action": "bypass"}
        ]}"#;
        let cases: &[(Method, &str, Headers, Result<Duration, NoCacheReason>)] = &[
            (Method::GET, "https://a.test/main.dart.js?v=1", &[], Ok(DAY)),
            (
                Method::HEAD,
                "https://a.test/main.dart.js?v=1",
                &[],
                Ok(DAY),
            ),
            (
                Method::POST,
                "https://a.test/main.dart.js?v=1",
                &[],
                Err(NoCacheReason::Method),
            ),
            (
                Method::GET,
                "https://a.test/main.dart.js",
                &[],
                Err(NoCacheReason::NotVersioned),
            ),
            (
                Method::GET,
                "https://a.test/api?v=1",
                &[],
                Err(NoCacheReason::NotVersioned),
            ),
            (
                Method::GET,
                "https://cdn.test/fonts/a/b.bin",
                &[],
                Ok(Duration::from_secs(60)),
            ),
            (
                Method::GET,
                "https://a.test/never/app.js?v=1",
                &[],
                Err(NoCacheReason::Rule),
            ),
            (
                Method::GET,
                "https://a.test/app.js?v=1",
                &[("authorization", "Bearer x")],
                Err(NoCacheReason::Authorization),
            ),
            (
                Method::GET,
                "https://cdn.test/private/app.js",
                &[("authorization", "Bearer x")],
                Ok(DAY),
            ),
            (
                Method::GET,
                "https://a.test/app.js?v=1",
                &[("range", "bytes=0-1")],
                Err(NoCacheReason::Range),
            ),
            (
                Method::GET,
                "https://a.test/app.js?v=1",
                &[("cache-control", "no-cache"), ("pragma", "no-cache")],
                Ok(DAY),
            ),
        ];
        for (method, url, req, want) in cases {
            assert_eq!(
                &classify(rules, method.clone(), url, req),
                want,
                "{method} {url} {req:?}"
            );
        }
    }

    #[test]
    fn responses_are_checked() {
        let cases: &[(u16, Headers, Result<(), NoCacheReason>)] = &[
            (200, &[], Ok(())),
            (200, &[("cache-control", "no-cache, max-age=0")], Ok(())),
            (200, &[("vary", "Accept-Encoding")], Ok(())),
            (200, &[("content-length", "100")], Ok(())),
            (206, &[], Err(NoCacheReason::Status)),
            (404, &[], Err(NoCacheReason::Status)),
            (
                200,
                &[("cache-control", "public, no-store")],
                Err(NoCacheReason::NoStore),
            ),
            (
                200,
                &[("cache-control", "private=\"x\"")],
                Err(NoCacheReason::Private),
            ),
            (200, &[("set-cookie", "a=b")], Err(NoCacheReason::SetCookie)),
            (
                200,
                &[("vary", "accept-encoding, cookie")],
                Err(NoCacheReason::Vary),
            ),
            (200, &[("vary", "*")], Err(NoCacheReason::Vary)),
            (
                200,
                &[("content-length", "101")],
                Err(NoCacheReason::TooLarge),
            ),
        ];
        for (status, response, want) in cases {
            let status = StatusCode::from_u16(*status).expect("valid status");
            assert_eq!(
                &check_response(status, &headers(response), 100),
                want,
                "{status} {response:?}"
            );
        }
    }

    #[test]
    fn freshness_follows_the_lifetime() {
        let stored = SystemTime::UNIX_EPOCH + DAY;
        let ttl = Duration::from_secs(10);
        assert!(is_fresh(stored, ttl, stored));
        assert!(is_fresh(stored, ttl, stored + Duration::from_secs(9)));
        assert!(!is_fresh(stored, ttl, stored + ttl));
        assert!(!is_fresh(stored, ttl, stored - Duration::from_secs(1)));
    }
}
