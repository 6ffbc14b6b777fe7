//! The cache path of one request: look up, judge freshness, answer from the entry (fresh, or
//! stale where a window allows it), follow another request's fetch, or lead a fetch — a
//! revalidation when a stale entry has validators.

use super::upstream::Route;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, IF_RANGE, RANGE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tracing::{debug, warn};
use url::Url;

use super::encoded;
use super::headers::{remove_hop_by_hop, CacheStatus, StaleServe};
use super::respond::respond;
use super::upstream::UpstreamBody;
use super::{CountedBody, ProxyService};
use crate::body::ProxyBody;
use crate::cache::http::key::CacheKey;
use crate::cache::http::policy::{
    self, CachePlan, Freshness, NoCacheReason, StaleUse, StoreLimits,
};
use crate::cache::inflight::{Fill, FillOutcome, FillPermit};
use crate::cache::shared::{Claim, FleetLock};
use crate::cache::tee::TeeBody;
use crate::cache::{CachedResponse, FillPlan, Tier};
use crate::proxy::error::ProxyError;

/// Request headers that would make an origin answer with less than the whole body. The
/// client's own conditionals and ranges are answered from the cache instead.
const PARTIAL_REQUEST_HEADERS: [&str; 7] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
    "accept-ranges",
];

/// How many times a request waits on other fetches before it fetches for itself.
const MAX_FOLLOWS: usize = 3;

/// A stale entry found for a request.
struct StaleEntry {
    entry: Arc<CachedResponse>,
    tier: Tier,
    usable: StaleUse,
}

/// What the fleet said before a cold fetch.
enum FleetTurn {
    /// The shared tier answered.
    Answered(Fetched),
    /// Fetch from the origin, with the fleet's fill lock if one was taken.
    Fetch(FillPermit, Option<FleetLock>),
}

/// What a fetch for the cache came to.
enum Fetched {
    /// Answer the client with this.
    Answer(Response<ProxyBody>, CacheStatus),
    /// The body is being stored in the background: look it up again.
    Filling,
}

impl ProxyService {
    /// Answers a cacheable request.
    pub(super) async fn cached(
        &self,
        request: Request<Incoming>,
        url: &Url,
        plan: CachePlan,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let cache = &self.ctx.cache;
        let head = request_head(&request, url);
        // Ranges and HEAD are answered from a complete stored body, so their fetch is stored
        // in full first.
        let drain = head.method() == Method::HEAD || head.headers().contains_key(RANGE);
        let offline = self.ctx.policy().offline;
        let arrived = now_ms();
        let mut collapsed = false;
        // Once this request has waited for another's fetch, what that fetch stored or
        // revalidated is fresh enough for it, whatever its lifetime (a no-cache entry point
        // revalidated for ten waiting requests is not revalidated ten more times).
        let mut waited_since: Option<u64> = None;
        for _ in 0..MAX_FOLLOWS {
            let keys = cache.keys_for(url, head.headers(), &plan).await;
            let key = keys.fill_key(&plan);
            let stale = match cache.find(&keys, &plan).await {
                None => None,
                Some((entry, tier)) => match self.judge(&entry, &head, waited_since) {
                    Freshness::Fresh => {
                        return self.reply(&entry, &head, CacheStatus::Hit { tier, collapsed })
                    }
                    Freshness::Stale(_) if offline => {
                        return self.reply(
                            &entry,
                            &head,
                            CacheStatus::Stale {
                                tier,
                                why: StaleServe::Offline,
                            },
                        )
                    }
                    Freshness::Stale(usable) if usable.while_revalidating => {
                        self.refresh_in_background(
                            &entry.meta.key.clone(),
                            &head,
                            url,
                            &plan,
                            StaleEntry {
                                entry: entry.clone(),
                                tier,
                                usable,
                            },
                        );
                        return self.reply(
                            &entry,
                            &head,
                            CacheStatus::Stale {
                                tier,
                                why: StaleServe::WhileRevalidating,
                            },
                        );
                    }
                    Freshness::Stale(usable) => Some(StaleEntry {
                        entry,
                        tier,
                        usable,
                    }),
                },
            };
            if offline {
                return self.failed(ProxyError::Offline {
                    url: url.to_string(),
                });
            }
            if head.method() == Method::HEAD && stale.is_none() {
                break;
            }
            let fill = if plan.live_request {
                Fill::Leader(cache.solo_fill(key))
            } else {
                cache.begin_fill(key)
            };
            let waiter = match fill {
                Fill::Leader(permit) => {
                    // A fill may have ended between the lookup and now; what it stored
                    // since this request arrived is fresh enough for it.
                    let usable = cache.memory_entry(key).filter(|entry| {
                        keys.own.as_ref() == Some(key)
                            || keys.own.is_none()
                            || policy::shared_across_cookies(&plan, entry.meta.header_map())
                    });
                    if let Some(entry) = usable {
                        if self.judge(&entry, &head, Some(arrived)) == Freshness::Fresh {
                            permit.complete(FillOutcome::Stored);
                            let status = CacheStatus::Hit {
                                tier: Tier::Memory,
                                collapsed: true,
                            };
                            return self.reply(&entry, &head, status);
                        }
                    }
                    let fetching_since = now_ms();
                    match self.fetch(&head, url, &plan, permit, stale, drain).await {
                        Fetched::Answer(response, status) => return (response, status),
                        Fetched::Filling => {
                            // What this fetch stores is fresh enough for this request.
                            waited_since = Some(fetching_since);
                            continue;
                        }
                    }
                }
                Fill::Follower(waiter) => waiter,
            };
            collapsed = true;
            waited_since = Some(now_ms());
            self.ctx.stats.coalesced_waits.inc();
            match waiter.wait(cache.config().coalesce_wait).await {
                Some(FillOutcome::Stored | FillOutcome::Abandoned) => continue,
                Some(FillOutcome::NotStorable) => break,
                None => {
                    self.ctx.stats.misses.inc();
                    let status = CacheStatus::miss(false, Some(NoCacheReason::CoalesceTimeout));
                    return self.forward(request, url, status).await;
                }
            }
        }
        self.ctx.stats.misses.inc();
        self.forward(request, url, CacheStatus::miss(false, None))
            .await
    }

    /// How fresh an entry is for this request.
    fn judge(
        &self,
        entry: &CachedResponse,
        head: &Request<()>,
        since_ms: Option<u64>,
    ) -> Freshness {
        // Strictly later, in whole milliseconds: an entry stored in the same millisecond may
        // predate the request, and must then be judged by its lifetime.
        if since_ms.is_some_and(|since| entry.meta.stored_at_ms > since) {
            return Freshness::Fresh;
        }
        policy::freshness(&entry.meta, head, SystemTime::now(), &self.ctx.policy())
    }

    /// Answers from an entry, counting the hit.
    fn reply(
        &self,
        entry: &Arc<CachedResponse>,
        head: &Request<()>,
        status: CacheStatus,
    ) -> (Response<ProxyBody>, CacheStatus) {
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
        if let Some(mark) = entry.prefetched.as_ref().filter(|mark| mark.claim()) {
            stats.prefetch_used.inc();
            stats.prefetch_used_bytes.add(mark.bytes());
        }
        let age = policy::age(&entry.meta, SystemTime::now());
        let mut response = respond(entry, head, age);
        if self.ctx.config.cache.serve_compressed {
            let chosen = encoded::choose(entry, head);
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

    /// Starts one background refresh of a stale entry, unless one is under way.
    fn refresh_in_background(
        &self,
        key: &CacheKey,
        head: &Request<()>,
        url: &Url,
        plan: &CachePlan,
        stale: StaleEntry,
    ) {
        let Fill::Leader(permit) = self.ctx.cache.begin_fill(key) else {
            return;
        };
        let (this, head, url, plan) = (self.clone(), clone_head(head), url.clone(), plan.clone());
        self.ctx.tasks.spawn(async move {
            let stale = StaleEntry {
                usable: StaleUse::default(),
                ..stale
            };
            let _ = this
                .fetch(&head, &url, &plan, permit, Some(stale), true)
                .await;
        });
    }

    /// Leads the fetch of a key: a revalidation when a stale entry has validators, else a
    /// plain GET. A storable body streams to the client while it is stored; with `drain` it
    /// is stored in the background and the caller looks it up again.
    /// Fetches a key no client is waiting for into the cache (a prefetch); the entry is
    /// stored behind the fetch.
    pub(super) async fn fill_in_background(
        &self,
        head: &Request<()>,
        url: &Url,
        plan: &CachePlan,
        permit: FillPermit,
    ) {
        // What the fetch answers goes nowhere; a stored body is read to its end regardless.
        let _ = self.fetch(head, url, plan, permit, None, true).await;
    }

    async fn fetch(
        &self,
        head: &Request<()>,
        url: &Url,
        plan: &CachePlan,
        permit: FillPermit,
        stale: Option<StaleEntry>,
        drain: bool,
    ) -> Fetched {
        let stats = &self.ctx.stats;
        let mut fleet_lock = None;
        let mut permit = permit;
        if stale.is_none() {
            match self.ask_fleet(head, permit).await {
                FleetTurn::Answered(fetched) => return fetched,
                FleetTurn::Fetch(returned, lock) => (permit, fleet_lock) = (returned, lock),
            }
        }
        if stale.is_some() {
            stats.revalidations.inc();
        } else {
            stats.misses.inc();
        }
        let sent = fill_request(head, stale.as_ref().map(|s| &*s.entry));
        let outgoing = clone_head(&sent).map(|()| empty_upstream_body());
        let response = match self.send(outgoing, url).await {
            Ok(response) => response,
            Err(error) => return self.failed_with_stale(error, stale, head),
        };
        if response.status() == StatusCode::NOT_MODIFIED {
            if let Some(stale) = stale {
                return self
                    .revalidated(head, url, &sent, &response, permit, stale)
                    .await;
            }
        }
        if response.status().is_server_error() && stale.as_ref().is_some_and(|s| s.usable.on_error)
        {
            let error = ProxyError::Upstream {
                origin: url.host_str().unwrap_or("").to_owned(),
                detail: format!("answered {}", response.status()),
            };
            return self.failed_with_stale(error, stale, head);
        }
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let chained = parts.extensions.get::<Route>() == Some(&Route::Chained);
        let counted = CountedBody::new(body, stats.clone(), chained);
        let limits = StoreLimits {
            max_object_bytes: self.ctx.cache.config().max_object_bytes,
            negative_ttl: self.ctx.policy().negative_ttl,
        };
        let mut answered = Response::new(());
        *answered.status_mut() = parts.status;
        *answered.headers_mut() = parts.headers.clone();
        let had_stale = stale.is_some();
        match policy::storable(plan, &sent, &answered, SystemTime::now(), &limits) {
            Ok(lifetime) => {
                let expected = parts
                    .headers
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                let fill = FillPlan {
                    plan: plan.clone(),
                    request: sent,
                    status: parts.status,
                    headers: parts.headers.clone(),
                    lifetime,
                    previous: stale.map(|s| s.entry),
                    fleet_lock,
                    prefetched: super::prefetch::prefetch_mark(head),
                };
                let tee = TeeBody::new(counted, self.ctx.cache.clone(), permit, fill, expected);
                if drain {
                    tokio::spawn(async move {
                        // Read to the end; the tee keeps the body, nothing else needs to.
                        let mut tee = std::pin::pin!(tee);
                        while let Some(Ok(_)) = tee.frame().await {}
                    });
                    return Fetched::Filling;
                }
                let status = CacheStatus::Miss {
                    stale: had_stale,
                    stored: true,
                    reason: None,
                };
                Fetched::Answer(
                    Response::from_parts(parts, tee.map_err(Into::into).boxed()),
                    status,
                )
            }
            Err(reason) => {
                debug!(url = %url, reason = reason.as_str(), "response not stored");
                permit.complete(FillOutcome::NotStorable);
                let status = CacheStatus::Miss {
                    stale: had_stale,
                    stored: false,
                    reason: Some(reason),
                };
                Fetched::Answer(
                    Response::from_parts(parts, counted.map_err(Into::into).boxed()),
                    status,
                )
            }
        }
    }

    /// Before a cold fetch, the fleet: another proxy may have stored the key in the shared
    /// tier, or be fetching it (then this waits for it); else this proxy fetches, holding the
    /// fleet's lock when Redis gave it.
    async fn ask_fleet(&self, head: &Request<()>, permit: FillPermit) -> FleetTurn {
        let cache = &self.ctx.cache;
        match cache.claim_shared(permit.key()).await {
            Claim::Found { entry, waited } => {
                if self.judge(&entry, head, None) != Freshness::Fresh {
                    return FleetTurn::Fetch(permit, None);
                }
                let entry = cache.adopt(permit, *entry);
                let status = CacheStatus::Hit {
                    tier: Tier::Shared,
                    collapsed: waited,
                };
                let (response, status) = self.reply(&entry, head, status);
                FleetTurn::Answered(Fetched::Answer(response, status))
            }
            Claim::Lead(lock) => FleetTurn::Fetch(permit, Some(lock)),
            Claim::Alone => FleetTurn::Fetch(permit, None),
        }
    }

    /// A 304 for a stale entry: refresh its metadata and answer from its body.
    async fn revalidated(
        &self,
        head: &Request<()>,
        url: &Url,
        sent: &Request<()>,
        response: &Response<Incoming>,
        permit: FillPermit,
        stale: StaleEntry,
    ) -> Fetched {
        let mut not_modified = Response::new(());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        *not_modified.headers_mut() = response.headers().clone();
        remove_hop_by_hop(not_modified.headers_mut());
        let Some(meta) =
            policy::refreshed(&stale.entry.meta, sent, &not_modified, SystemTime::now())
        else {
            // The 304 does not confirm our copy; fetch without validators.
            drop(permit);
            return self
                .pass(
                    head,
                    url,
                    CacheStatus::Miss {
                        stale: true,
                        stored: false,
                        reason: None,
                    },
                )
                .await;
        };
        let stats = &self.ctx.stats;
        stats.not_modified.inc();
        stats
            .bytes_saved_by_revalidation
            .add(stale.entry.body.len() as u64);
        let refreshed = Arc::new(stale.entry.with_meta(meta));
        self.ctx
            .cache
            .refresh(permit, &stale.entry, refreshed.meta.clone());
        let (response, status) = self.reply(
            &refreshed,
            head,
            CacheStatus::Revalidated { tier: stale.tier },
        );
        Fetched::Answer(response, status)
    }

    /// The origin failed: serve the stale entry if its stale-if-error window allows.
    fn failed_with_stale(
        &self,
        error: ProxyError,
        stale: Option<StaleEntry>,
        head: &Request<()>,
    ) -> Fetched {
        match stale.filter(|s| s.usable.on_error) {
            Some(stale) => {
                self.ctx.stats.upstream_errors.inc();
                warn!(error = %error, "origin failed; serving a stale entry (stale-if-error)");
                let status = CacheStatus::Stale {
                    tier: stale.tier,
                    why: StaleServe::OnError,
                };
                let (response, status) = self.reply(&stale.entry, head, status);
                Fetched::Answer(response, status)
            }
            None => {
                let (response, status) = self.failed(error);
                Fetched::Answer(response, status)
            }
        }
    }

    /// Sends the request head as it is, without a body, and streams the answer back.
    async fn pass(&self, head: &Request<()>, url: &Url, status: CacheStatus) -> Fetched {
        let outgoing = clone_head(head).map(|()| empty_upstream_body());
        let (response, status) = self.relay(outgoing, url, status).await;
        Fetched::Answer(response, status)
    }
}

/// Now, in milliseconds since the Unix epoch (the resolution entries record).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The client's request without its body, with the absolute URL.
fn request_head(request: &Request<Incoming>, url: &Url) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = url.as_str().parse().unwrap_or_default();
    *head.headers_mut() = request.headers().clone();
    head
}

fn clone_head(head: &Request<()>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.headers_mut() = head.headers().clone();
    copy
}

/// The GET that fills the cache: the client's headers without its conditionals and ranges,
/// plus the stale entry's validators.
fn fill_request(head: &Request<()>, stale: Option<&CachedResponse>) -> Request<()> {
    let mut request = clone_head(head);
    *request.method_mut() = Method::GET;
    let headers = request.headers_mut();
    for name in PARTIAL_REQUEST_HEADERS {
        headers.remove(name);
    }
    headers.remove(IF_RANGE);
    if let Some(stale) = stale {
        for (name, value) in policy::validators(&stale.meta) {
            headers.insert(name, value);
        }
    }
    request
}

fn empty_upstream_body() -> UpstreamBody {
    Empty::new().map_err(|never| match never {}).boxed()
}
