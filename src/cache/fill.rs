//! `Fill`: the right and duty to fetch one entry for the cache, held by the request that
//! leads it. It says what to ask the origin (the client's request without its conditionals
//! and ranges, plus the stale entry's validators), and takes what the origin answered: a 304
//! refreshes the stale entry, a storable answer is stored as it streams to the client, any
//! other is passed on. Dropped without an answer, the fill is abandoned and the requests
//! waiting on it go on without it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, IF_RANGE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use tracing::debug;

use crate::cache::disk::neighbours::NeighbourLock;
use crate::cache::entry::PrefetchMark;
use crate::cache::http::freshness::{self, StaleUse};
use crate::cache::http::key::CacheKey;
use crate::cache::http::policy::{self, CachePlan, NoCacheReason, StoreLimits};
use crate::cache::inflight::{FillOutcome, FillPermit};
use crate::cache::request::{CacheRequest, Hit};
use crate::cache::shared::FleetLock;
use crate::cache::store::{FillPlan, Put};
use crate::cache::tee::TeeBody;
use crate::cache::tiers::Tiers;
use crate::config::Mode;
use crate::loggable;

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

/// A stale entry a fill may revalidate, and what it may still be used for.
#[derive(Clone)]
pub struct StaleEntry {
    /// The entry.
    pub hit: Hit,
    /// What it may be served for.
    pub usable: StaleUse,
}

/// The lead of one entry's fetch.
pub struct Fill {
    tiers: Arc<Tiers>,
    permit: FillPermit,
    plan: CachePlan,
    stale: Option<StaleEntry>,
    fleet_lock: Option<FleetLock>,
    neighbour_lock: Option<NeighbourLock>,
    prefetched: Option<Arc<PrefetchMark>>,
    limits: StoreLimits,
}

/// What became of an origin's answer.
pub enum Answered<B: Body<Data = Bytes> + Unpin + Send + 'static> {
    /// It is being stored as it streams: this body goes to the client.
    Storing(Box<TeeBody<B>>),
    /// It is not stored, for this reason: the body goes to the client as it is.
    NotStored(B, NoCacheReason),
}

impl Fill {
    pub(crate) fn new(
        tiers: Arc<Tiers>,
        permit: FillPermit,
        ask: &CacheRequest<'_>,
        stale: Option<StaleEntry>,
    ) -> Fill {
        let limits = StoreLimits {
            max_object_bytes: tiers.config.max_object_bytes,
            negative_ttl: ask.policy.negative_ttl,
            record_for: matches!(ask.policy.mode, Mode::Record | Mode::Refresh)
                .then_some(tiers.config.max_age),
        };
        Fill {
            tiers,
            permit,
            plan: ask.plan.clone(),
            stale,
            fleet_lock: None,
            neighbour_lock: None,
            prefetched: ask.prefetch.clone(),
            limits,
        }
    }

    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        self.permit.key()
    }

    /// The stale entry this fill revalidates, if any.
    pub fn stale(&self) -> Option<&StaleEntry> {
        self.stale.as_ref()
    }

    pub(crate) fn hold_fleet_lock(&mut self, lock: FleetLock) {
        self.fleet_lock = Some(lock);
    }

    pub(crate) fn hold_neighbour_lock(&mut self, lock: NeighbourLock) {
        self.neighbour_lock = Some(lock);
    }

    pub(crate) fn into_permit(self) -> FillPermit {
        self.permit
    }

    /// The GET that fills the cache: the client's headers without its conditionals and
    /// ranges, plus the stale entry's validators.
    pub fn origin_request(&self, head: &Request<()>) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = head.uri().clone();
        let headers = request.headers_mut();
        *headers = head.headers().clone();
        for name in PARTIAL_REQUEST_HEADERS {
            headers.remove(name);
        }
        headers.remove(IF_RANGE);
        if let Some(stale) = &self.stale {
            for (name, value) in freshness::validators(&stale.hit.entry.meta) {
                headers.insert(name, value);
            }
        }
        request
    }

    /// The origin confirmed the stale entry (304) to `sent`: its headers are refreshed, it
    /// answers the request, and the requests waiting are woken. `None` when the 304 does not
    /// confirm this entry (another validator): then fetch again without validators.
    pub fn not_modified(self, sent: &Request<()>, headers: &HeaderMap) -> Option<Hit> {
        let stale = self.stale.as_ref()?;
        let mut answer = Response::new(());
        *answer.status_mut() = StatusCode::NOT_MODIFIED;
        *answer.headers_mut() = headers.clone();
        let meta = freshness::refreshed(&stale.hit.entry.meta, sent, &answer, SystemTime::now())?;
        let stats = &self.tiers.stats;
        stats.not_modified.inc();
        stats
            .bytes_saved_by_revalidation
            .add(stale.hit.entry.meta.body_len);
        let entry = Arc::new(stale.hit.entry.with_meta(meta));
        self.tiers.put(self.permit, Put::Refreshed(entry.clone()));
        Some(Hit {
            entry,
            tier: stale.hit.tier,
            collapsed: false,
        })
    }

    /// The origin answered `sent` with `status` and `headers` (hop-by-hop ones removed):
    /// stored as `body` streams when the answer may be, else passed on.
    pub fn answered<B>(
        self,
        sent: Request<()>,
        status: StatusCode,
        headers: &HeaderMap,
        body: B,
    ) -> Answered<B>
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
    {
        let mut answer = Response::new(());
        *answer.status_mut() = status;
        *answer.headers_mut() = headers.clone();
        let lifetime = match policy::storable(
            &self.plan,
            &sent,
            &answer,
            SystemTime::now(),
            &self.limits,
        ) {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                debug!(url = %loggable::url(&sent.uri().to_string()), reason = reason.as_str(), "response not stored");
                self.permit.complete(FillOutcome::NotStorable);
                return Answered::NotStored(body, reason);
            }
        };
        let expected = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let plan = FillPlan {
            plan: self.plan,
            request: sent,
            status,
            headers: headers.clone(),
            lifetime,
            previous: self.stale.map(|s| s.hit.entry),
            fleet_lock: self.fleet_lock,
            neighbour_lock: self.neighbour_lock,
            prefetched: self.prefetched,
        };
        Answered::Storing(Box::new(TeeBody::new(
            body,
            self.tiers,
            self.permit,
            plan,
            expected,
        )))
    }
}
