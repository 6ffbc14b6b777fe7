//! Answers from a cached entry: the whole body, headers only (HEAD), 304 for a client's
//! matching conditional, 206 for a single byte range (with If-Range), 416 for a range
//! outside the body. `choose` is pure and table-tested; `respond` builds the response, sharing
//! the body's memory (a range is a slice, not a copy).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, AGE, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{empty, full, ProxyBody};
use crate::cache::CachedResponse;

/// Headers a 304 carries from the stored response (RFC 9110 §15.4.5).
const NOT_MODIFIED_HEADERS: [&str; 7] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "last-modified",
    "vary",
];

/// What to answer from a stored `200` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The whole response (headers only for HEAD).
    Full,
    /// 304: the client's copy is current.
    NotModified,
    /// 206 with bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// 416: the range is outside the body.
    Unsatisfiable,
}

/// Chooses the answer to a GET or HEAD with `request` headers from a stored 200 response.
pub fn choose(method: &Method, request: &HeaderMap, stored: &HeaderMap, body_len: u64) -> Reply {
    if let Some(tags) = request.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if etag_matches_any(tags, stored.get(ETAG)) {
            return Reply::NotModified;
        }
    } else if let Some(since) = date(request.get(IF_MODIFIED_SINCE)) {
        // The stored date is parsed only when asked about: most hits carry no condition.
        if date(stored.get(LAST_MODIFIED)).is_some_and(|modified| modified <= since) {
            return Reply::NotModified;
        }
    }
    if method != Method::GET {
        return Reply::Full;
    }
    let Some(range) = request.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Reply::Full;
    };
    if let Some(condition) = request.get(IF_RANGE) {
        if !if_range_holds(condition, stored) {
            return Reply::Full;
        }
    }
    byte_range(range, body_len)
}

/// Weak comparison of a client's If-None-Match list with the stored ETag.
fn etag_matches_any(list: &str, stored: Option<&HeaderValue>) -> bool {
    let Some(stored) = stored.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let weak = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    list.split(',')
        .any(|tag| tag.trim() == "*" || weak(tag) == weak(stored))
}

/// If-Range holds when it names the stored strong ETag, or exactly its Last-Modified date.
fn if_range_holds(condition: &HeaderValue, stored: &HeaderMap) -> bool {
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    let condition = condition.trim();
    if condition.starts_with('"') {
        return stored
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|etag| etag.trim() == condition);
    }
    match (
        httpdate::parse_http_date(condition).ok(),
        date(stored.get(LAST_MODIFIED)),
    ) {
        (Some(asked), Some(modified)) => asked == modified,
        _ => false,
    }
}

fn date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(value?.to_str().ok()?).ok()
}

/// Whether `headers` carry one `Content-Length`, and it is `len`.
fn is_only_length(headers: &HeaderMap, len: u64) -> bool {
    let stored = super::headers::sole_value(headers, &CONTENT_LENGTH);
    stored.and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) == Some(len)
}

/// A single `bytes=` range; several ranges or a malformed header get the whole body.
fn byte_range(header: &str, len: u64) -> Reply {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Reply::Full;
    };
    if spec.contains(',') {
        return Reply::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Reply::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), parse(first), parse(last)) {
        (true, _, Some(0)) => Reply::Unsatisfiable,
        (true, _, Some(suffix)) if len > 0 => Reply::Partial {
            start: len - suffix.min(len),
            end: len - 1,
        },
        (false, Some(start), _) if start >= len => Reply::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => Reply::Partial {
            start,
            end: len - 1,
        },
        (false, Some(start), Some(end)) if start <= end => Reply::Partial {
            start,
            end: end.min(len - 1),
        },
        (true, _, Some(_)) => Reply::Unsatisfiable,
        _ => Reply::Full,
    }
}

/// Whether the answer to `request` from `entry` carries its body or part of it: not for a
/// HEAD, a 304 or a 416, which an entry kept as its compressed frame answers without
/// decoding it.
pub fn sends_body(entry: &CachedResponse, request: &Request<()>) -> bool {
    if request.method() == Method::HEAD {
        return false;
    }
    if entry.meta.status() != StatusCode::OK {
        return true;
    }
    let (method, headers) = (request.method(), request.headers());
    let reply = choose(
        method,
        headers,
        entry.meta.header_map(),
        entry.meta.body_len,
    );
    matches!(reply, Reply::Full | Reply::Partial { .. })
}

/// The response to `request` from `entry`, whose age is `age`. `body` is the entry's body as
/// it is; `None` when the answer goes in a content coding, set by `encoded::apply`.
pub fn respond(
    entry: &CachedResponse,
    body: Option<&Bytes>,
    request: &Request<()>,
    age: Duration,
) -> Response<ProxyBody> {
    let mut stored = entry.meta.header_map().clone();
    // Room for the headers this answer adds (length, ranges, age, coding, cache status, via):
    // the map grows once here, not once or twice on the way out.
    stored.reserve(8);
    let len = entry.meta.body_len;
    let reply = if entry.meta.status() == StatusCode::OK {
        choose(request.method(), request.headers(), &stored, len)
    } else {
        Reply::Full
    };
    let head_only = request.method() == Method::HEAD;
    let (status, mut headers, body) = match reply {
        Reply::Full => {
            let body = match body {
                Some(body) if !head_only => full(body.clone()),
                _ => empty(),
            };
            (entry.meta.status(), stored, body)
        }
        Reply::NotModified => {
            let mut headers = HeaderMap::new();
            for name in NOT_MODIFIED_HEADERS {
                for value in stored.get_all(name) {
                    headers.append(name, value.clone());
                }
            }
            (StatusCode::NOT_MODIFIED, headers, empty())
        }
        Reply::Partial { start, end } => {
            let mut headers = stored;
            let range = format!("bytes {start}-{end}/{len}");
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&range).unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            // A range is never answered in a coding: its body is at hand.
            let slice =
                body.map_or_else(Bytes::new, |body| body.slice(start as usize..=end as usize));
            (StatusCode::PARTIAL_CONTENT, headers, full(slice))
        }
        Reply::Unsatisfiable => {
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            (StatusCode::RANGE_NOT_SATISFIABLE, headers, empty())
        }
    };
    match reply {
        Reply::Full => {
            // The stored length is usually the body's already, alone: nothing to format then.
            if !is_only_length(&headers, len) {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        Reply::Partial { start, end } => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(end - start + 1));
        }
        Reply::NotModified | Reply::Unsatisfiable => {
            headers.remove(CONTENT_LENGTH);
        }
    }
    if entry.meta.status() == StatusCode::OK {
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    headers.insert(AGE, HeaderValue::from(age.as_secs()));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const LM: &str = "Sat, 01 Nov 2025 10:00:00 GMT";

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn replies_are_chosen() {
        let stored = map(&[("etag", "\"v1\""), ("last-modified", LM)]);
        type Case = (Method, &'static [(&'static str, &'static str)], Reply);
        let cases: &[Case] = &[
            (Method::GET, &[], Reply::Full),
            (
                Method::GET,
                &[("if-none-match", "\"v1\"")],
                Reply::NotModified,
            ),
            (
                Method::HEAD,
                &[("if-none-match", "W/\"v1\"")],
                Reply::NotModified,
            ),
            (
                Method::GET,
                &[("if-none-match", "\"v0\", \"v1\"")],
                Reply::NotModified,
            ),
            (Method::GET, &[("if-none-match", "*")], Reply::NotModified),
            (Method::GET, &[("if-none-match", "\"v2\"")], Reply::Full),
            (
                Method::GET,
                &[("if-none-match", "\"v2\""), ("if-modified-since", LM)],
                Reply::Full,
            ),
            (
                Method::GET,
                &[("if-modified-since", LM)],
                Reply::NotModified,
            ),
            (
                Method::GET,
                &[("if-modified-since", "Sat, 01 Nov 2025 11:00:00 GMT")],
                Reply::NotModified,
            ),
            (
                Method::GET,
                &[("if-modified-since", "Sat, 01 Nov 2025 09:00:00 GMT")],
                Reply::Full,
            ),
            (
                Method::GET,
                &[("range", "bytes=0-9")],
                Reply::Partial { start: 0, end: 9 },
            ),
            (
                Method::GET,
                &[("range", "bytes=90-")],
                Reply::Partial { start: 90, end: 99 },
            ),
            (
                Method::GET,
                &[("range", "bytes=-10")],
                Reply::Partial { start: 90, end: 99 },
            ),
            (
                Method::GET,
                &[("range", "bytes=-500")],
                Reply::Partial { start: 0, end: 99 },
            ),
            (
                Method::GET,
                &[("range", "bytes=50-500")],
                Reply::Partial { start: 50, end: 99 },
            ),
            (
                Method::GET,
                &[("range", "bytes=100-")],
                Reply::Unsatisfiable,
            ),
            (Method::GET, &[("range", "bytes=-0")], Reply::Unsatisfiable),
            (Method::GET, &[("range", "bytes=9-2")], Reply::Full),
            (Method::GET, &[("range", "bytes=0-1,5-6")], Reply::Full),
            (Method::GET, &[("range", "items=0-1")], Reply::Full),
            (Method::HEAD, &[("range", "bytes=0-9")], Reply::Full),
            (
                Method::GET,
                &[("range", "bytes=0-9"), ("if-range", "\"v1\"")],
                Reply::Partial { start: 0, end: 9 },
            ),
            (
                Method::GET,
                &[("range", "bytes=0-9"), ("if-range", "\"v0\"")],
                Reply::Full,
            ),
            (
                Method::GET,
                &[("range", "bytes=0-9"), ("if-range", LM)],
                Reply::Partial { start: 0, end: 9 },
            ),
            (
                Method::GET,
                &[
                    ("range", "bytes=0-9"),
                    ("if-range", "Sat, 01 Nov 2025 09:00:00 GMT"),
                ],
                Reply::Full,
            ),
        ];
        for (method, request, want) in cases {
            assert_eq!(
                choose(method, &map(request), &stored, 100),
                *want,
                "{method} {request:?}"
            );
        }
    }

    #[test]
    fn a_stored_length_is_kept_only_when_it_is_the_bodys_alone() {
        let length = |values: &[&'static str]| {
            let pairs: Vec<_> = values.iter().map(|v| ("content-length", *v)).collect();
            is_only_length(&map(&pairs), 42)
        };
        assert!(length(&["42"]));
        assert!(!length(&[]));
        assert!(!length(&["41"]));
        assert!(!length(&["42", "42"]));
        assert!(!length(&["042x"]));
    }

    #[test]
    fn an_empty_body_satisfies_no_range() {
        assert_eq!(byte_range("bytes=-5", 0), Reply::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-", 0), Reply::Unsatisfiable);
    }
}
