//! Freshness: whether a stored entry may answer a request as it is, or how it may be served
//! once stale (RFC 5861's stale-while-revalidate and stale-if-error); its age and time left;
//! the validators that revalidate it, and the entry a 304 makes of it. Pure: `now` is a
//! parameter.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::header::{CACHE_CONTROL, ETAG, LAST_MODIFIED, PRAGMA};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_cache_semantics::BeforeRequest;

use crate::cache::entry::{EntryMeta, Lifetime};
use crate::cache::http::directives::{directives, has_directive};
use crate::cache::http::policy::{redacted, request_to_store, response_to_store};
use crate::config::PolicyConfig;

/// Whether a stored entry may be served as it is, or how it may be served once stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// Revalidate or refetch first, unless a window allows serving it stale.
    Stale(StaleUse),
}

/// What a stale entry may still be used for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleUse {
    /// Serve it now and refresh it in the background (stale-while-revalidate).
    pub while_revalidating: bool,
    /// Serve it when the origin fails (stale-if-error).
    pub on_error: bool,
}

/// Judges an entry for a request at `now`.
pub fn judge(
    meta: &EntryMeta,
    request: &Request<()>,
    now: SystemTime,
    policy: &PolicyConfig,
) -> Freshness {
    let headers = meta.header_map();
    match &meta.lifetime {
        Lifetime::Pinned { ttl_secs } => {
            let Ok(age) = now.duration_since(meta.stored_at()) else {
                // Stored in the future: the clock moved back. Refetch, serve nothing stale.
                return Freshness::Stale(StaleUse::default());
            };
            let ttl = Duration::from_secs(*ttl_secs);
            if age < ttl {
                return Freshness::Fresh;
            }
            let staleness = age - ttl;
            let negative = meta.status != StatusCode::OK.as_u16();
            let (mut revalidate_window, mut error_window) = stale_windows(headers);
            if meta.version.is_some() && !negative {
                revalidate_window = revalidate_window.max(policy.versioned_stale_while_revalidate);
                error_window = error_window.max(policy.versioned_stale_if_error);
            }
            Freshness::Stale(StaleUse {
                while_revalidating: staleness < revalidate_window,
                on_error: staleness < error_window,
            })
        }
        Lifetime::Standard(cache_policy) => {
            let request = judged_request(request, policy);
            match cache_policy.before_request(&*redacted(&request), now) {
                BeforeRequest::Fresh(_) => Freshness::Fresh,
                BeforeRequest::Stale { .. } => {
                    if has_directive(headers, "must-revalidate")
                        || has_directive(headers, "proxy-revalidate")
                        || has_directive(headers, "no-cache")
                        || has_directive(request.headers(), "no-cache")
                    {
                        return Freshness::Stale(StaleUse::default());
                    }
                    let lifetime = cache_policy.time_to_live(meta.stored_at());
                    let staleness = now
                        .duration_since(meta.stored_at())
                        .unwrap_or_default()
                        .saturating_sub(lifetime);
                    let (revalidate_window, error_window) = stale_windows(headers);
                    Freshness::Stale(StaleUse {
                        while_revalidating: staleness < revalidate_window,
                        on_error: staleness < error_window,
                    })
                }
            }
        }
    }
}

/// The request as freshness judges it: without the client's own cache directives
/// (`Cache-Control`, `Pragma`) unless the config honours client reloads. Browsers under
/// Playwright's request interception, proxy authentication or HAR recording send `no-cache` on
/// every request to bypass their own cache, not this one (shared caches such as Varnish and
/// nginx ignore them too by default).
///
/// A HEAD is judged as the GET it asks about: entries are stored from GETs, and the stored
/// policy would take any other method for a different request (always stale).
fn judged_request<'a>(request: &'a Request<()>, policy: &PolicyConfig) -> Cow<'a, Request<()>> {
    let headers = request.headers();
    let directed = headers.contains_key(CACHE_CONTROL) || headers.contains_key(PRAGMA);
    let strip_directives = directed && !policy.honour_client_reload;
    let head = request.method() == Method::HEAD;
    if !strip_directives && !head {
        return Cow::Borrowed(request);
    }
    let mut copy = Request::new(());
    *copy.method_mut() = if head {
        Method::GET
    } else {
        request.method().clone()
    };
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = headers.clone();
    if strip_directives {
        copy.headers_mut().remove(CACHE_CONTROL);
        copy.headers_mut().remove(PRAGMA);
    }
    Cow::Owned(copy)
}

/// How long an entry stays fresh after `now` by its own lifetime (zero once stale); the
/// expiry its copy in the shared tier gets.
pub fn time_left(meta: &EntryMeta, now: SystemTime) -> Duration {
    match &meta.lifetime {
        Lifetime::Pinned { ttl_secs } => Duration::from_secs(*ttl_secs)
            .saturating_sub(now.duration_since(meta.stored_at()).unwrap_or_default()),
        Lifetime::Standard(policy) => policy.time_to_live(now),
    }
}

/// The `Age` of an entry at `now`: the age it arrived with plus the time stored.
pub fn age(meta: &EntryMeta, now: SystemTime) -> Duration {
    match &meta.lifetime {
        Lifetime::Standard(policy) => policy.age(now),
        Lifetime::Pinned { .. } => {
            let initial = meta
                .header_map()
                .get(http::header::AGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            now.duration_since(meta.stored_at()).unwrap_or_default() + Duration::from_secs(initial)
        }
    }
}

/// Conditional headers that ask the origin whether the stored body is still current.
pub fn validators(meta: &EntryMeta) -> Vec<(HeaderName, HeaderValue)> {
    let headers = meta.header_map();
    let mut out = Vec::new();
    if let Some(etag) = headers.get(ETAG) {
        out.push((http::header::IF_NONE_MATCH, etag.clone()));
    }
    if let Some(modified) = headers.get(LAST_MODIFIED) {
        out.push((http::header::IF_MODIFIED_SINCE, modified.clone()));
    }
    out
}

/// Response headers a 304 may not change in the stored response (RFC 9111 §3.2).
const KEPT_ON_REVALIDATION: [&str; 5] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "etag",
];

/// The entry after a 304: headers updated, lifetime restarted at `now`. `None` when the 304
/// does not confirm this entry (another validator), which then needs a full fetch.
pub fn refreshed(
    meta: &EntryMeta,
    request: &Request<()>,
    not_modified: &Response<()>,
    now: SystemTime,
) -> Option<EntryMeta> {
    let mut meta = meta.clone();
    match &meta.lifetime {
        Lifetime::Standard(policy) => {
            let (request, not_modified) =
                (request_to_store(request), response_to_store(not_modified));
            match policy.after_response(&request, &not_modified, now) {
                http_cache_semantics::AfterResponse::NotModified(policy, parts) => {
                    let mut headers = parts.headers;
                    headers.remove(http::header::AGE);
                    meta.set_headers(&headers);
                    meta.lifetime = Lifetime::Standard(Box::new(policy));
                }
                http_cache_semantics::AfterResponse::Modified(..) => return None,
            }
        }
        Lifetime::Pinned { .. } => {
            let stored_etag = meta.header_map().get(ETAG).cloned();
            let new_etag = not_modified.headers().get(ETAG);
            if new_etag.is_some_and(|new| stored_etag.as_ref() != Some(new)) {
                return None;
            }
            let mut headers = meta.header_map().clone();
            for (name, value) in not_modified.headers() {
                if !KEPT_ON_REVALIDATION.contains(&name.as_str()) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            meta.set_headers(&headers);
        }
    }
    meta.set_stored_at(now);
    Some(meta)
}

/// What identifies a body of an unversioned URL, to notice when the origin changed it: the
/// ETag, else Last-Modified, else the body's checksum.
pub fn content_identity(meta: &EntryMeta) -> String {
    let headers = meta.header_map();
    headers
        .get(ETAG)
        .or_else(|| headers.get(LAST_MODIFIED))
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("xxh3:{:016x}", meta.body_xxh3), str::to_owned)
}

/// The stale-while-revalidate and stale-if-error windows a response grants.
fn stale_windows(headers: &HeaderMap) -> (Duration, Duration) {
    let seconds = |name: &str| {
        directives(headers)
            .filter(|(directive, _)| directive.eq_ignore_ascii_case(name))
            .find_map(|(_, value)| value?.trim_matches('"').parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs)
    };
    (seconds("stale-while-revalidate"), seconds("stale-if-error"))
}
