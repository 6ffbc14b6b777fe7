//! What a request brings to the cache, and what answers it.

use std::sync::Arc;

use http::Request;
use url::Url;

use crate::cache::entry::{CachedResponse, PrefetchMark};
use crate::cache::http::policy::CachePlan;
use crate::cache::tiers::Tier;
use crate::config::PolicyConfig;

/// A request, as the cache needs to see it.
pub struct CacheRequest<'a> {
    /// Method, absolute URI and headers.
    pub head: &'a Request<()>,
    /// The URL.
    pub url: &'a Url,
    /// How the request was classified.
    pub plan: &'a CachePlan,
    /// The cache policy in force.
    pub policy: &'a PolicyConfig,
    /// What was stored at or after this time (ms; by a fetch this request led, which began
    /// then) is fresh enough for it.
    pub fresh_since: Option<u64>,
    /// Whether to wait for another request's fetch of the same entry (a prefetch does not).
    pub wait: bool,
    /// The mark of a prefetch, carried to the entry it stores.
    pub prefetch: Option<Arc<PrefetchMark>>,
}

/// An entry that answers a request.
#[derive(Clone)]
pub struct Hit {
    /// The entry.
    pub entry: Arc<CachedResponse>,
    /// Where it was found.
    pub tier: Tier,
    /// Whether the request waited for another's fetch first.
    pub collapsed: bool,
}
