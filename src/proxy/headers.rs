//! Pure header helpers: hop-by-hop removal (RFC 9110 §7.6.1), `Host` and `Via`, a header's
//! sole value, and the `Cache-Status` vocabulary (RFC 9211) that headers, logs and tests share.

use http::header::{HeaderName, CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Version};
use url::Position;

use crate::cache::http::policy::NoCacheReason;
use crate::cache::Tier;

/// The name the proxy gives itself in `Cache-Status` and `Via`, as a literal for `concat!`.
macro_rules! proxy_name {
    () => {
        "asset-proxy"
    };
}

/// The name the proxy gives itself in `Cache-Status` and `Via`.
pub const PROXY_NAME: &str = proxy_name!();

/// The `Cache-Status` header.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Headers that describe one connection, never forwarded or stored — and the namespace
/// header, which like proxy credentials is addressed to this proxy alone.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "http2-settings",
    "x-asset-proxy-namespace",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The `Host` of a request for `url`: its authority (the port only when not the scheme's).
pub fn host_of(url: &url::Url) -> Option<HeaderValue> {
    HeaderValue::from_str(host_text(url)?).ok()
}

/// Whether `headers` carry the `Host` the URL makes already, and no other.
pub fn has_host_of(headers: &HeaderMap, url: &url::Url) -> bool {
    let sent = sole_value(headers, &http::header::HOST).map(HeaderValue::as_bytes);
    sent.is_some() && sent == host_text(url).map(str::as_bytes)
}

/// The value of `name` when `headers` carry exactly one.
pub fn sole_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// The URL's own text from host to port: no formatting, brackets of IPv6 kept.
fn host_text(url: &url::Url) -> Option<&str> {
    url.host_str()?;
    Some(&url[Position::BeforeHost..Position::AfterPort])
}

/// Appends this proxy to `Via` for a message of `version`.
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    let via = match version {
        Version::HTTP_10 => concat!("1.0 ", proxy_name!()),
        Version::HTTP_2 => concat!("2 ", proxy_name!()),
        Version::HTTP_3 => concat!("3 ", proxy_name!()),
        _ => concat!("1.1 ", proxy_name!()),
    };
    headers.append(http::header::VIA, HeaderValue::from_static(via));
}

/// Why a stale entry was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleServe {
    /// Inside its stale-while-revalidate window; a refresh runs in the background.
    WhileRevalidating,
    /// The origin failed, inside its stale-if-error window.
    OnError,
    /// The proxy runs with `--offline`.
    Offline,
}

impl StaleServe {
    /// The reason in the proxy's vocabulary.
    pub fn as_str(self) -> &'static str {
        match self {
            StaleServe::WhileRevalidating => "stale-while-revalidate",
            StaleServe::OnError => "stale-if-error",
            StaleServe::Offline => "offline",
        }
    }
}

/// What the cache did for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a tier; `collapsed` when the request waited for another's fetch.
    Hit {
        /// The tier.
        tier: Tier,
        /// Whether the request waited for another's fetch first.
        collapsed: bool,
    },
    /// A stale entry served without asking the origin first.
    Stale {
        /// The tier.
        tier: Tier,
        /// Why that was allowed.
        why: StaleServe,
    },
    /// A stale entry confirmed by the origin with a 304 and served.
    Revalidated {
        /// The tier.
        tier: Tier,
    },
    /// Fetched from the origin for the cache; `stored` when the body is being stored.
    Miss {
        /// Whether a stale entry was replaced (`fwd=stale`) rather than none found.
        stale: bool,
        /// Whether the response is being stored.
        stored: bool,
        /// Why not, when not.
        reason: Option<NoCacheReason>,
    },
    /// Forwarded without the cache.
    Bypass(NoCacheReason),
    /// The origin failed; the proxy answered with an error of this kind.
    Error(&'static str),
    /// The proxy refused the request itself (bad request, host not allowed).
    Refused(&'static str),
}

impl CacheStatus {
    /// A plain miss.
    pub fn miss(stored: bool, reason: Option<NoCacheReason>) -> CacheStatus {
        CacheStatus::Miss {
            stale: false,
            stored,
            reason,
        }
    }

    /// The `Cache-Status` field value: a plain hit's is a constant (most answers are hits).
    pub fn header_value(self) -> Cow<'static, str> {
        let text = match self {
            CacheStatus::Hit {
                tier,
                collapsed: false,
            } => {
                return Cow::Borrowed(match tier {
                    Tier::Memory => concat!(proxy_name!(), "; hit; detail=memory"),
                    Tier::Disk => concat!(proxy_name!(), "; hit; detail=disk"),
                    Tier::Shared => concat!(proxy_name!(), "; hit; detail=shared"),
                })
            }
            CacheStatus::Hit {
                tier,
                collapsed: true,
            } => {
                format!("{PROXY_NAME}; hit; collapsed; detail={}", tier.as_str())
            }
            CacheStatus::Stale { why, .. } => format!("{PROXY_NAME}; hit; detail={}", why.as_str()),
            CacheStatus::Revalidated { tier } => {
                format!(
                    "{PROXY_NAME}; fwd=stale; fwd-status=304; detail={}",
                    tier.as_str()
                )
            }
            CacheStatus::Miss {
                stale,
                stored,
                reason,
            } => {
                let fwd = if stale { "stale" } else { "miss" };
                match (stored, reason) {
                    (true, _) => format!("{PROXY_NAME}; fwd={fwd}; stored"),
                    (false, Some(reason)) => {
                        format!("{PROXY_NAME}; fwd={fwd}; detail={}", reason.as_str())
                    }
                    (false, None) => format!("{PROXY_NAME}; fwd={fwd}"),
                }
            }
            CacheStatus::Bypass(NoCacheReason::Method) => format!("{PROXY_NAME}; fwd=method"),
            CacheStatus::Bypass(reason) => {
                format!("{PROXY_NAME}; fwd=bypass; detail={}", reason.as_str())
            }
            CacheStatus::Error(kind) => format!("{PROXY_NAME}; fwd=miss; detail={kind}"),
            CacheStatus::Refused(kind) => format!("{PROXY_NAME}; fwd=request; detail={kind}"),
        };
        Cow::Owned(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-trace"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-type", "text/plain"),
            ("cache-control", "max-age=1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "cache-control"]);
    }

    #[test]
    fn cache_status_values() {
        let cases = [
            (
                CacheStatus::Hit {
                    tier: Tier::Memory,
                    collapsed: false,
                },
                "asset-proxy; hit; detail=memory",
            ),
            (
                CacheStatus::Hit {
                    tier: Tier::Disk,
                    collapsed: true,
                },
                "asset-proxy; hit; collapsed; detail=disk",
            ),
            (
                CacheStatus::Hit {
                    tier: Tier::Disk,
                    collapsed: false,
                },
                "asset-proxy; hit; detail=disk",
            ),
            (
                CacheStatus::Hit {
                    tier: Tier::Shared,
                    collapsed: false,
                },
                "asset-proxy; hit; detail=shared",
            ),
            (
                CacheStatus::miss(true, None),
                "asset-proxy; fwd=miss; stored",
            ),
            (
                CacheStatus::miss(false, Some(NoCacheReason::SetCookie)),
                "asset-proxy; fwd=miss; detail=set-cookie",
            ),
            (
                CacheStatus::Miss {
                    stale: true,
                    stored: true,
                    reason: None,
                },
                "asset-proxy; fwd=stale; stored",
            ),
            (
                CacheStatus::Revalidated { tier: Tier::Disk },
                "asset-proxy; fwd=stale; fwd-status=304; detail=disk",
            ),
            (
                CacheStatus::Stale {
                    tier: Tier::Memory,
                    why: StaleServe::OnError,
                },
                "asset-proxy; hit; detail=stale-if-error",
            ),
            (
                CacheStatus::Bypass(NoCacheReason::NotVersioned),
                "asset-proxy; fwd=bypass; detail=not-versioned",
            ),
            (
                CacheStatus::Bypass(NoCacheReason::Method),
                "asset-proxy; fwd=method",
            ),
            (
                CacheStatus::Error("upstream-refused"),
                "asset-proxy; fwd=miss; detail=upstream-refused",
            ),
        ];
        for (status, want) in cases {
            assert_eq!(status.header_value(), want);
        }
    }

    #[test]
    fn a_host_is_kept_only_when_it_is_the_urls_alone() {
        let url = url::Url::parse("http://example.com:8080/a").expect("url");
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(http::header::HOST, HeaderValue::from_static(value));
            }
            has_host_of(&headers, &url)
        };
        assert!(with(&["example.com:8080"]));
        assert!(!with(&[]));
        assert!(!with(&["example.com"]));
        assert!(!with(&["EXAMPLE.com:8080"]));
        assert!(!with(&["example.com:8080", "evil.test"]));
    }

    #[test]
    fn host_is_the_urls_authority_without_credentials_or_default_port() {
        for (url, want) in [
            ("http://example.com/a", "example.com"),
            ("http://example.com:80/a", "example.com"),
            ("https://example.com:8443/a?b", "example.com:8443"),
            ("http://user:secret@example.com:81/", "example.com:81"),
            ("http://[::1]:8080/", "[::1]:8080"),
            ("http://127.0.0.1/", "127.0.0.1"),
        ] {
            let url = url::Url::parse(url).expect("URL");
            assert_eq!(host_of(&url).expect("host"), want, "{url}");
        }
    }

    #[test]
    fn via_names_the_protocol() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::VIA, HeaderValue::from_static("1.1 cdn"));
        add_via(&mut headers, Version::HTTP_2);
        let via: Vec<&str> = headers
            .get_all(http::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(via, ["1.1 cdn", "2 asset-proxy"]);
    }
}
