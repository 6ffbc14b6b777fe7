//! Cache policy: may this request use the cache, and may this response be stored and for how
//! long (whether a stored entry is fresh is `freshness`'s to say). Pure: no I/O, and `now` is
//! a parameter.
//!
//! Three kinds of entry: versioned URLs (the version pins the content, so origin `no-cache`
//! and client reloads do not defeat them), URLs a cache rule names (fresh for the rule's TTL),
//! and everything else under standard shared-cache semantics (RFC 9111, decided by
//! http-cache-semantics in shared mode), plus RFC 5861's stale-while-revalidate and
//! stale-if-error, which it lacks.

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy};
use url::Url;

use crate::cache::entry::Lifetime;
use crate::cache::http::content::{self, ContentKind};
use crate::cache::http::directives::has_directive;
use crate::cache::http::key::secret_digest;
use crate::cache::http::vary;
use crate::cache::http::version::{self, VersionedAsset};
use crate::config::{PolicyConfig, RuleAction};

/// Why a request or response does not go through the cache. Shown in `Cache-Status` details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCacheReason {
    /// Neither GET nor HEAD.
    Method,
    /// Not versioned, no rule names it, and standard caching is off for it.
    NotVersioned,
    /// A bypass rule matched.
    Rule,
    /// The request carries credentials and no rule allows sharing the answer.
    Authorization,
    /// HTTP caching rules do not allow a shared cache to store the response.
    NotCacheable,
    /// The response status is not one the cache stores.
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *`.
    Vary,
    /// The body is larger than `max_object_mb`.
    TooLarge,
    /// Another request's fetch took longer than `coalesce_wait_secs`.
    CoalesceTimeout,
    /// A data answer (JSON, text) or an answer to `fetch()`/XHR, without an explicit lifetime:
    /// fetched for every request, never shared.
    Live,
    /// The request upgrades its connection (a WebSocket).
    Upgrade,
}

impl NoCacheReason {
    /// The reason in the proxy's vocabulary (headers, logs, stats).
    pub fn as_str(self) -> &'static str {
        match self {
            NoCacheReason::Method => "method",
            NoCacheReason::NotVersioned => "not-versioned",
            NoCacheReason::Rule => "rule",
            NoCacheReason::Authorization => "authorization",
            NoCacheReason::NotCacheable => "not-cacheable",
            NoCacheReason::Status => "status",
            NoCacheReason::NoStore => "no-store",
            NoCacheReason::Private => "private",
            NoCacheReason::SetCookie => "set-cookie",
            NoCacheReason::Vary => "vary",
            NoCacheReason::TooLarge => "too-large",
            NoCacheReason::CoalesceTimeout => "coalesce-timeout",
            NoCacheReason::Live => "live",
            NoCacheReason::Upgrade => "upgrade",
        }
    }
}

/// Which answers to requests that carry credentials may serve other clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// A rule shares every answer (`share_credentials: true`), even to `Authorization`.
    Always,
    /// Static assets are shared whatever cookie asked for them; every other answer to a
    /// cookie-carrying request is kept for that cookie. The default.
    Assets,
    /// A rule keeps every answer to a cookie-carrying request for that cookie
    /// (`share_credentials: false`).
    Never,
}

/// How a cacheable request is to be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    /// Identity and version, when the URL carries one.
    pub versioned: Option<VersionedAsset>,
    /// Fixed lifetime of versioned and rule-named entries; `None` under standard semantics.
    pub pinned_ttl: Option<Duration>,
    /// Which answers to cookie-carrying requests may serve other clients.
    pub sharing: Sharing,
    /// The request names a static asset as far as the request can tell (a versioned or
    /// rule-named URL, an asset file extension, a browser's asset destination): sessions
    /// with different cookies wait for one fetch of it.
    pub asset_request: bool,
    /// A browser's `fetch()`/XHR for something that is not an asset: concurrent requests are
    /// not collapsed onto one fetch, since their answers are usually live.
    pub live_request: bool,
    /// A rule lets a recording run store answers that set cookies (without the cookies).
    pub record_cookies: bool,
}

/// Whether a request may be answered from, and stored into, the cache.
pub fn classify_request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    policy: &PolicyConfig,
    max_age: Duration,
) -> Result<CachePlan, NoCacheReason> {
    if method != Method::GET && method != Method::HEAD {
        return Err(NoCacheReason::Method);
    }
    let rule = policy
        .rules
        .iter()
        .find(|rule| rule.pattern.is_match(&match_text(url)));
    let action = rule.and_then(|rule| rule.action);
    if action == Some(RuleAction::Bypass) {
        return Err(NoCacheReason::Rule);
    }
    let versioned = version::detect(url, policy);
    let rule_ttl = (action == Some(RuleAction::Cache))
        .then(|| rule.and_then(|rule| rule.ttl).unwrap_or(max_age));
    let standard = rule
        .and_then(|rule| rule.standard_caching)
        .unwrap_or(policy.standard_caching);
    if versioned.is_none() && rule_ttl.is_none() && !standard {
        return Err(NoCacheReason::NotVersioned);
    }
    let sharing = match rule.and_then(|rule| rule.share_credentials) {
        Some(true) => Sharing::Always,
        Some(false) => Sharing::Never,
        None => Sharing::Assets,
    };
    if headers.contains_key(AUTHORIZATION) && sharing != Sharing::Always {
        return Err(NoCacheReason::Authorization);
    }
    let pinned_ttl = rule_ttl.or(versioned.is_some().then_some(max_age));
    let asset_request = pinned_ttl.is_some()
        || has_asset_extension(url, policy)
        || content::asks_for_asset(headers);
    Ok(CachePlan {
        versioned,
        pinned_ttl,
        sharing,
        asset_request,
        live_request: !asset_request && content::is_fetch_request(headers),
        record_cookies: rule.is_some_and(|rule| rule.record_cookies),
    })
}

fn has_asset_extension(url: &Url, policy: &PolicyConfig) -> bool {
    let file_name = url.path().rsplit('/').next().unwrap_or("");
    file_name
        .rsplit_once('.')
        .is_some_and(|(_, extension)| version::is_asset_extension(extension, policy))
}

/// Whether an answer stored for one client may serve requests that carry other cookies (or
/// none): RFC 9111 lets the response decide, and the cache shares static assets. Answers
/// that set cookies, are `private` or `no-store` are never stored at all, and one that varies
/// on `Cookie` is keyed by it whatever this says.
pub fn shared_across_cookies(plan: &CachePlan, response: &HeaderMap) -> bool {
    match plan.sharing {
        Sharing::Always => true,
        Sharing::Never => false,
        Sharing::Assets => {
            plan.pinned_ttl.is_some() || content::kind_of(response) == ContentKind::Asset
        }
    }
}

/// The text rules match: `host[:port]/path`, without scheme and query.
pub fn match_text(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{host}:{port}{}", url.path()),
        None => format!("{host}{}", url.path()),
    }
}

/// Limits a response is stored within.
pub struct StoreLimits {
    /// Largest body stored.
    pub max_object_bytes: u64,
    /// Lifetime of a 404 or 410 for a versioned URL.
    pub negative_ttl: Duration,
    /// Recording (`--mode record` or `refresh`): every 200 is stored for this long, whatever its
    /// `Cache-Control` says, unless it sets a cookie or varies on everything.
    pub record_for: Option<Duration>,
}

/// Whether an origin response may be stored, and for how long. `request` is what was sent
/// to the origin.
pub fn storable(
    plan: &CachePlan,
    request: &Request<()>,
    response: &Response<()>,
    now: SystemTime,
    limits: &StoreLimits,
) -> Result<Lifetime, NoCacheReason> {
    let (status, headers) = (response.status(), response.headers());
    if status == StatusCode::PARTIAL_CONTENT || headers.contains_key(CONTENT_RANGE) {
        return Err(NoCacheReason::Status);
    }
    if let Some(ttl) = limits
        .record_for
        .filter(|_| recordable(plan, status, headers, limits))
    {
        return Ok(pinned(ttl));
    }
    // A client's `no-store` forbids storing the answer to it too (RFC 9111 §5.2.1.5); what
    // is stored already still answers it.
    if has_directive(headers, "no-store") || has_directive(request.headers(), "no-store") {
        return Err(NoCacheReason::NoStore);
    }
    if has_directive(headers, "private") {
        return Err(NoCacheReason::Private);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NoCacheReason::SetCookie);
    }
    if vary::vary_names(headers).is_none() {
        return Err(NoCacheReason::Vary);
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|length| length > limits.max_object_bytes) {
        return Err(NoCacheReason::TooLarge);
    }
    let negative = matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE);
    match (plan.pinned_ttl, &plan.versioned) {
        (Some(ttl), _) if status == StatusCode::OK => Ok(pinned(ttl)),
        (Some(_), Some(_)) if negative => Ok(pinned(limits.negative_ttl)),
        (Some(_), _) => Err(NoCacheReason::Status),
        (None, _) if status != StatusCode::OK => Err(NoCacheReason::Status),
        (None, _) => {
            let kind = content::kind_of(headers);
            let live = kind == ContentKind::Data
                || kind != ContentKind::Asset && content::is_fetch_request(request.headers());
            if live && !content::has_explicit_lifetime(headers) {
                return Err(NoCacheReason::Live);
            }
            let policy = CachePolicy::new_options(
                &request_to_store(request),
                &response_to_store(response),
                now,
                shared_cache(),
            );
            // An answer that is stale at once and cannot be revalidated would only be
            // rewritten on every request.
            let useful = policy.time_to_live(now) > Duration::ZERO
                || headers.contains_key(ETAG)
                || headers.contains_key(LAST_MODIFIED);
            if policy.is_storable() && useful {
                Ok(Lifetime::Standard(Box::new(policy)))
            } else {
                Err(NoCacheReason::NotCacheable)
            }
        }
    }
}

/// Whether a recording run stores this answer although HTTP caching would not: a whole 200
/// that sets no cookie (unless a rule says `record_cookies`), with a usable `Vary`, within
/// the size limit.
fn recordable(
    plan: &CachePlan,
    status: StatusCode,
    headers: &HeaderMap,
    limits: &StoreLimits,
) -> bool {
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    status == StatusCode::OK
        && (plan.record_cookies || !headers.contains_key(SET_COOKIE))
        && vary::vary_names(headers).is_some()
        && length.is_none_or(|length| length <= limits.max_object_bytes)
}

fn pinned(ttl: Duration) -> Lifetime {
    Lifetime::Pinned {
        ttl_secs: ttl.as_secs(),
    }
}

pub(crate) fn shared_cache() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// Request headers whose values are secrets: the stored policy (which keeps the request it
/// was made from, on disk and in the shared tier) sees only their digests, which compare as
/// the values would.
const SECRET_HEADERS: [HeaderName; 2] = [http::header::COOKIE, AUTHORIZATION];

/// The request as the stored policy may see it: secrets digested, proxy credentials gone.
pub(crate) fn redacted(request: &Request<()>) -> std::borrow::Cow<'_, Request<()>> {
    let headers = request.headers();
    let secret = SECRET_HEADERS.iter().any(|name| headers.contains_key(name))
        || headers.contains_key(http::header::PROXY_AUTHORIZATION);
    if !secret {
        return std::borrow::Cow::Borrowed(request);
    }
    let mut copy = Request::new(());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    let mut kept = headers.clone();
    kept.remove(http::header::PROXY_AUTHORIZATION);
    for name in SECRET_HEADERS {
        let values: Vec<&str> = headers
            .get_all(&name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        if let Ok(digest) = HeaderValue::from_str(&secret_digest(&values.join(", "))) {
            kept.insert(name, digest);
        }
    }
    *copy.headers_mut() = kept;
    std::borrow::Cow::Owned(copy)
}

/// `request` as a stored policy keeps it: `redacted`, with its target and header values
/// copies that own their bytes. As hyper parses a request they are slices of the
/// connection's read buffer, and a stored policy lives as long as its entry: a slice would
/// keep the whole buffer (8 KiB and more) alive for an asset of a few hundred bytes, none of
/// it counted by the memory tier.
pub(crate) fn request_to_store(request: &Request<()>) -> Request<()> {
    let redacted = redacted(request);
    let mut copy = Request::new(());
    *copy.method_mut() = redacted.method().clone();
    let target = bytes::Bytes::from(redacted.uri().to_string());
    *copy.uri_mut() = Uri::from_maybe_shared(target).unwrap_or_else(|_| redacted.uri().clone());
    *copy.headers_mut() = owned_headers(redacted.headers());
    copy
}

/// `response` as a stored policy keeps it: status and headers, the values copies that own
/// their bytes (see `request_to_store`).
pub(crate) fn response_to_store(response: &Response<()>) -> Response<()> {
    let mut copy = Response::new(());
    *copy.status_mut() = response.status();
    *copy.headers_mut() = owned_headers(response.headers());
    copy
}

fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // `from_bytes` copies the value, where `clone` would share its buffer.
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            owned.append(name.clone(), copy);
        }
    }
    owned
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
