//! The HTTP side of a cacheable request: ask the cache what to do (`Cache::lookup`), then
//! answer from an entry, or fetch under the fill the cache gave and hand it the origin's
//! answer — a revalidation when it holds a stale entry. At most three calls to the cache: the
//! lookup, the fill's answer, and a second lookup after a body stored in full (HEAD, ranges).

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, RANGE, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tracing::warn;
use url::Url;

use super::encoded;
use super::headers::{remove_hop_by_hop, CacheStatus, StaleServe};
use super::respond::{respond, sends_body};
use super::stalled_body::StallLimited;
use super::upstream::{Route, UpstreamBody};
use super::{CountedBody, ProxyService};
use crate::body::ProxyBody;
use crate::cache::entry::now_ms;
use crate::cache::http::policy::CachePlan;
use crate::cache::http::{directives, freshness};
use crate::cache::{Answered, CacheRequest, CachedResponse, Fill, Hit, Lookup, Tier};
use crate::loggable;
use crate::proxy::error::ProxyError;

/// What a fetch for the cache came to.
enum Fetched {
    /// Answer the client with this.
    Answer(Response<ProxyBody>, CacheStatus),
    /// The body is being stored in the background: look it up again.
    Filling,
    /// Fetched whole to be stored (for a range, a HEAD, a prefetch or a refresh), and not
    /// storable: a client's own request is to be sent as it is instead, under this status, so
    /// that a range is answered by the origin rather than with the whole body.
    NotStorable(CacheStatus),
}

impl ProxyService {
    /// Answers a cacheable request.
    pub(super) async fn cached(
        &self,
        request: Request<Incoming>,
        url: &Url,
        plan: CachePlan,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let (parts, body) = request.into_parts();
        let head = request_head(parts, url);
        // Ranges and HEAD are answered from a complete stored body, so their fetch is stored
        // in full first.
        let drain = head.method() == Method::HEAD || head.headers().contains_key(RANGE);
        // RFC 9111 §5.2.1.7: a stored answer, or a 504.
        let only_if_cached = directives::has_directive(head.headers(), "only-if-cached");
        let policy = self.ctx.policy();
        let mut fresh_since = None;
        for _ in 0..2 {
            let ask = CacheRequest {
                head: &head,
                url,
                plan: &plan,
                policy: &policy,
                fresh_since,
                wait: true,
                prefetch: None,
            };
            let fill = match self.ctx.cache.lookup(&ask).await {
                Lookup::Fresh(hit) => {
                    let status = CacheStatus::Hit {
                        tier: hit.tier,
                        collapsed: hit.collapsed,
                    };
                    return self.reply(&hit.entry, &head, url, status);
                }
                Lookup::Offline(Some(hit)) => {
                    return self.stale(&hit, &head, url, StaleServe::Offline)
                }
                Lookup::Offline(None) => {
                    return self.failed(
                        ProxyError::Offline {
                            url: loggable::url(url.as_str()).into_owned(),
                        },
                        url,
                    )
                }
                Lookup::Revalidating(hit, refresh) => {
                    if let Some(fill) = refresh {
                        self.refresh_in_background(fill, &head, url);
                    }
                    return self.stale(&hit, &head, url, StaleServe::WhileRevalidating);
                }
                Lookup::Stale(_) | Lookup::Miss(_) | Lookup::Pass(_) if only_if_cached => {
                    // Not an origin's failure: neither counted nor logged as one.
                    let error = ProxyError::NotCached {
                        url: loggable::url(url.as_str()).into_owned(),
                    };
                    let status = error.cache_status();
                    return (error.into_response(), status);
                }
                Lookup::Stale(fill) | Lookup::Miss(fill) => fill,
                Lookup::Pass(reason) => {
                    self.ctx.stats.misses.inc();
                    let request = with_body(head, body);
                    return Box::pin(self.forward(request, url, CacheStatus::miss(false, reason)))
                        .await;
                }
            };
            let fetching_since = now_ms();
            match Box::pin(self.fetch(&head, url, fill, drain)).await {
                Fetched::Answer(response, status) => return (response, status),
                // What this fetch stores is fresh enough for this request.
                Fetched::Filling => fresh_since = Some(fetching_since),
                Fetched::NotStorable(status) => {
                    let request = with_body(head, body);
                    return Box::pin(self.forward(request, url, status)).await;
                }
            }
        }
        self.ctx.stats.misses.inc();
        let request = with_body(head, body);
        Box::pin(self.forward(request, url, CacheStatus::miss(false, None))).await
    }

    /// Answers from an entry for `url`, counting the hit (not when the entry turns out damaged).
    fn reply(
        &self,
        entry: &Arc<CachedResponse>,
        head: &Request<()>,
        url: &Url,
        status: CacheStatus,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let age = freshness::age(&entry.meta, SystemTime::now());
        let serve_compressed = self.ctx.config.cache.serve_compressed;
        let chosen = serve_compressed
            .then(|| encoded::choose(&self.ctx.cache, entry, head))
            .flatten();
        // An entry read from disk may be kept as its zstd frame: its body is decoded only
        // for an answer that is not in a coding and carries it.
        let body = match chosen {
            Some(_) => None,
            None if !entry.body_is_at_hand() && !sends_body(entry, head) => None,
            None => match self.ctx.cache.body_of(entry) {
                Some(body) => Some(body),
                None => {
                    // Logged and counted by the cache, as damage found by a read is.
                    let error = ProxyError::DamagedEntry {
                        url: loggable::url(url.as_str()).into_owned(),
                    };
                    let status = error.cache_status();
                    return (error.into_response(), status);
                }
            },
        };
        // Counted once there is an answer: an entry found damaged just now was no hit.
        let stats = &self.ctx.stats;
        match status {
            CacheStatus::Hit {
                tier: Tier::Memory, ..
            } => stats.hits_memory.inc(),
            CacheStatus::Hit {
                tier: Tier::Disk, ..
            } => stats.hits_disk.inc(),
            CacheStatus::Hit {
                tier: Tier::Shared, ..
            } => stats.hits_shared.inc(),
            CacheStatus::Stale { .. } => stats.stale_served.inc(),
            _ => {}
        }
        if !self.ctx.config.upstream.proxies.is_empty() {
            // What this answer would have cost through the upstream its URL is routed by.
            let route = self.ctx.route(url);
            self.ctx.upstream.count_kept_off(route, entry.meta.body_len);
        }
        if let Some(mark) = entry.prefetched.as_ref().filter(|mark| mark.claim()) {
            stats.prefetch_used.inc();
            stats.prefetch_used_bytes.add(mark.bytes());
        }
        let mut response = respond(entry, body, head, age);
        if serve_compressed {
            if chosen.is_some() && response.status() == StatusCode::OK {
                stats.encoded_responses.inc();
            }
            encoded::apply(&mut response, entry, head, chosen);
        }
        if let Some(length) = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
        {
            if head.method() != Method::HEAD {
                stats.bytes_from_cache.add(length);
            }
        }
        (response, status)
    }

    /// Answers with a stale entry, saying why.
    fn stale(
        &self,
        hit: &Hit,
        head: &Request<()>,
        url: &Url,
        why: StaleServe,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let status = CacheStatus::Stale {
            tier: hit.tier,
            why,
        };
        self.reply(&hit.entry, head, url, status)
    }

    /// Refreshes a stale entry in the background under `fill`.
    fn refresh_in_background(&self, fill: Fill, head: &Request<()>, url: &Url) {
        let (this, head, url) = (self.clone(), clone_head(head), url.clone());
        self.ctx.tasks.spawn(async move {
            let _ = this.fetch(&head, &url, fill, true).await;
        });
    }

    /// Fetches a key no client is waiting for into the cache (a prefetch); the entry is
    /// stored behind the fetch.
    pub(super) async fn fill_in_background(&self, head: &Request<()>, url: &Url, fill: Fill) {
        // What the fetch answers goes nowhere; a stored body is read to its end regardless.
        let _ = self.fetch(head, url, fill, true).await;
    }

    /// Leads the fetch of `fill`: a revalidation when it holds a stale entry with validators,
    /// else a plain GET. A storable body streams to the client while it is stored; with
    /// `drain` it is stored in the background and the caller looks it up again.
    async fn fetch(&self, head: &Request<()>, url: &Url, fill: Fill, drain: bool) -> Fetched {
        let stats = &self.ctx.stats;
        if fill.stale().is_some() {
            stats.revalidations.inc();
        } else {
            stats.misses.inc();
        }
        let sent = fill.origin_request(head);
        let outgoing = clone_head(&sent).map(|()| empty_upstream_body());
        let response = match self.send(outgoing, url).await {
            Ok(response) => response,
            Err(error) => return self.failed_with_stale(error, fill, head, url),
        };
        let revalidating = fill.stale().is_some();
        if response.status() == StatusCode::NOT_MODIFIED && revalidating {
            let mut headers = response.headers().clone();
            remove_hop_by_hop(&mut headers);
            // A cookie the 304 sets is this client's: sent to it, never kept in the entry.
            let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().cloned().collect();
            headers.remove(SET_COOKIE);
            let tier = fill.stale().map_or(Tier::Memory, |s| s.hit.tier);
            return match fill.not_modified(&sent, &headers) {
                Some(hit) => {
                    let (mut response, status) =
                        self.reply(&hit.entry, head, url, CacheStatus::Revalidated { tier });
                    for cookie in cookies {
                        response.headers_mut().append(SET_COOKIE, cookie);
                    }
                    Fetched::Answer(response, status)
                }
                // The 304 does not confirm our copy; fetch without validators.
                None => {
                    let status = CacheStatus::Miss {
                        stale: true,
                        stored: false,
                        reason: None,
                    };
                    self.pass(head, url, status).await
                }
            };
        }
        let on_error = fill.stale().is_some_and(|s| s.usable.on_error);
        if response.status().is_server_error() && on_error {
            let error = ProxyError::Upstream {
                origin: url.host_str().unwrap_or("").to_owned(),
                detail: format!("answered {}", response.status()),
            };
            return self.failed_with_stale(error, fill, head, url);
        }
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let chained = matches!(parts.extensions.get::<Route>(), Some(Route::Via(_)));
        let counted = CountedBody::new(body, stats.clone(), chained);
        let limit = self.ctx.config.upstream.body_timeout;
        match fill.answered(
            sent,
            parts.status,
            &parts.headers,
            StallLimited::new(counted, limit),
        ) {
            Answered::Storing(tee) => {
                if drain {
                    tokio::spawn(async move {
                        // Read to the end; the tee keeps the body, nothing else needs to.
                        let mut tee = std::pin::pin!(tee);
                        while let Some(Ok(_)) = tee.frame().await {}
                    });
                    return Fetched::Filling;
                }
                let status = CacheStatus::Miss {
                    stale: revalidating,
                    stored: true,
                    reason: None,
                };
                let body = tee.map_err(Into::into).boxed();
                Fetched::Answer(Response::from_parts(parts, body), status)
            }
            Answered::NotStored(limited, reason) => {
                let counted = limited.into_inner();
                let status = CacheStatus::Miss {
                    stale: revalidating,
                    stored: false,
                    reason: Some(reason),
                };
                if drain {
                    // The whole body was asked for only to store it: the rest of it is not
                    // read (the origin connection is closed, not reused).
                    drop(counted);
                    return Fetched::NotStorable(status);
                }
                let body = counted.map_err(Into::into).boxed();
                Fetched::Answer(Response::from_parts(parts, body), status)
            }
        }
    }

    /// The origin failed: serve the fill's stale entry if its stale-if-error window allows.
    fn failed_with_stale(
        &self,
        error: ProxyError,
        fill: Fill,
        head: &Request<()>,
        url: &Url,
    ) -> Fetched {
        let stale = fill.stale().filter(|s| s.usable.on_error).cloned();
        drop(fill);
        let (response, status) = match stale {
            Some(stale) => {
                self.ctx.stats.upstream_errors.inc();
                warn!(
                    error = %error,
                    url = %loggable::url(url.as_str()),
                    "origin failed; serving a stale entry (stale-if-error)"
                );
                self.stale(&stale.hit, head, url, StaleServe::OnError)
            }
            None => self.failed(error, url),
        };
        Fetched::Answer(response, status)
    }

    /// Sends the request head as it is, without a body, and streams the answer back.
    async fn pass(&self, head: &Request<()>, url: &Url, status: CacheStatus) -> Fetched {
        let outgoing = clone_head(head).map(|()| empty_upstream_body());
        let (response, status) = self.relay(outgoing, url, status).await;
        Fetched::Answer(response, status)
    }
}

/// The client's request without its body, with the absolute URL.
fn request_head(mut parts: http::request::Parts, url: &Url) -> Request<()> {
    // An absolute-form request usually names the URL already; a tunnel's names a path.
    if parts.uri != url.as_str() {
        parts.uri = url.as_str().parse().unwrap_or_default();
    }
    Request::from_parts(parts, ())
}

/// The client's request again, for forwarding as it is.
fn with_body(head: Request<()>, body: Incoming) -> Request<Incoming> {
    let (parts, ()) = head.into_parts();
    Request::from_parts(parts, body)
}

fn clone_head(head: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.headers_mut() = head.headers().clone();
    copy
}

fn empty_upstream_body() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed()
}
