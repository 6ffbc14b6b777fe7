//! What an answer is, from its `Content-Type`, and what a request asks for, from
//! `Sec-Fetch-Dest`: the facts behind two rules of the cache. Pure.
//!
//! - Static assets (scripts, styles, wasm, fonts, images, media) are the same for every
//!   session, so a request's cookie does not split the cache for them when the response is
//!   shareable (RFC 9111 lets the response decide; browsers send cookies with every asset).
//! - Data answers (JSON, plain text, event streams) and answers to `fetch()`/XHR requests are
//!   live: without an explicit lifetime they are not stored, so they are never shared between
//!   clients nor collapsed onto one fetch.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES};
use http::HeaderMap;

/// The request header a browser names the destination of a fetch with.
const SEC_FETCH_DEST: &str = "sec-fetch-dest";

/// `Sec-Fetch-Dest` values of requests for static assets.
const ASSET_DESTINATIONS: [&str; 10] = [
    "script",
    "style",
    "font",
    "image",
    "audio",
    "video",
    "track",
    "worker",
    "sharedworker",
    "serviceworker",
];

/// What an answer is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// Script, style, wasm, font, image, audio or video: the same for everyone.
    Asset,
    /// An HTML document.
    Document,
    /// JSON, plain text, XML or an event stream: what APIs answer.
    Data,
    /// Anything else, or no `Content-Type`.
    Other,
}

/// The kind of an answer with these headers.
pub fn kind_of(headers: &HeaderMap) -> ContentKind {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return ContentKind::Other;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (top, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    match (top, sub) {
        ("image" | "audio" | "video" | "font", _) => ContentKind::Asset,
        ("text", "javascript" | "ecmascript" | "css") => ContentKind::Asset,
        ("application", "javascript" | "x-javascript" | "ecmascript" | "wasm") => {
            ContentKind::Asset
        }
        ("application", sub) if sub.starts_with("font-") || sub.starts_with("x-font") => {
            ContentKind::Asset
        }
        ("application", "vnd.ms-fontobject") => ContentKind::Asset,
        ("text", "html") | ("application", "xhtml+xml") => ContentKind::Document,
        ("text", "plain" | "event-stream" | "xml" | "csv") => ContentKind::Data,
        ("application", "json" | "xml" | "x-ndjson" | "ndjson" | "graphql-response+json") => {
            ContentKind::Data
        }
        ("application", sub) if sub.ends_with("+json") || sub.ends_with("+xml") => {
            ContentKind::Data
        }
        _ => ContentKind::Other,
    }
}

/// Whether a browser made the request with `fetch()` or XHR (`Sec-Fetch-Dest: empty`).
pub fn is_fetch_request(request: &HeaderMap) -> bool {
    destination(request).is_some_and(|dest| dest.eq_ignore_ascii_case("empty"))
}

/// Whether a browser asked for a static asset (a script, style, font, image, media, worker).
pub fn asks_for_asset(request: &HeaderMap) -> bool {
    destination(request).is_some_and(|dest| {
        ASSET_DESTINATIONS
            .iter()
            .any(|known| dest.eq_ignore_ascii_case(known))
    })
}

fn destination(request: &HeaderMap) -> Option<&str> {
    request
        .get(SEC_FETCH_DEST)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether a response states its lifetime (`max-age`, `s-maxage` or `Expires`), rather than
/// leaving it to heuristics or to revalidation on every use.
pub fn has_explicit_lifetime(response: &HeaderMap) -> bool {
    let directive = response
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| item.split('=').next())
        .any(|name| {
            let name = name.trim();
            name.eq_ignore_ascii_case("max-age") || name.eq_ignore_ascii_case("s-maxage")
        });
    directive || response.contains_key(EXPIRES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn content_types_are_sorted_into_kinds() {
        let cases = [
            ("text/javascript; charset=utf-8", ContentKind::Asset),
            ("application/javascript", ContentKind::Asset),
            ("TEXT/CSS", ContentKind::Asset),
            ("application/wasm", ContentKind::Asset),
            ("font/woff2", ContentKind::Asset),
            ("application/font-woff", ContentKind::Asset),
            ("image/svg+xml", ContentKind::Asset),
            ("video/mp4", ContentKind::Asset),
            ("text/html; charset=utf-8", ContentKind::Document),
            ("application/json", ContentKind::Data),
            ("application/problem+json", ContentKind::Data),
            ("text/plain", ContentKind::Data),
            ("text/event-stream", ContentKind::Data),
            ("application/octet-stream", ContentKind::Other),
            ("", ContentKind::Other),
        ];
        for (content_type, want) in cases {
            let map = headers(&[("content-type", content_type)]);
            assert_eq!(kind_of(&map), want, "{content_type}");
        }
        assert_eq!(kind_of(&HeaderMap::new()), ContentKind::Other);
    }

    #[test]
    fn destinations_and_lifetimes_are_read() {
        assert!(is_fetch_request(&headers(&[("sec-fetch-dest", "empty")])));
        assert!(!is_fetch_request(&headers(&[("sec-fetch-dest", "script")])));
        assert!(asks_for_asset(&headers(&[("sec-fetch-dest", "Script")])));
        assert!(!asks_for_asset(&headers(&[("sec-fetch-dest", "document")])));
        assert!(!asks_for_asset(&HeaderMap::new()));
        let cases = [
            (&[("cache-control", "public, max-age=60")][..], true),
            (&[("cache-control", "s-maxage=5")][..], true),
            (&[("expires", "Thu, 01 Jan 2037 00:00:00 GMT")][..], true),
            (&[("cache-control", "public")][..], false),
            (
                &[("cache-control", "no-cache"), ("etag", "\"1\"")][..],
                false,
            ),
            (&[][..], false),
        ];
        for (pairs, want) in cases {
            assert_eq!(has_explicit_lifetime(&headers(pairs)), want, "{pairs:?}");
        }
    }
}
