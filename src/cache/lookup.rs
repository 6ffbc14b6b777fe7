//! One request's way through the cache, as explicit phases: find the entry it may be answered
//! from (memory, then disk; the shared key, then the cookie's own), judge it for this request,
//! and then either answer (`Fresh`), serve it stale while a refresh runs (`Revalidating`), or
//! fill — lead the fetch (`Stale` with validators, `Miss` after asking the fleet) or follow
//! another request's fetch and look again. A request that may not wait, or whose wait ran
//! out, passes. The proxy does the network; the cache says what to do.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::COOKIE;
use http::{HeaderMap, Method};
use url::Url;

use crate::cache::disk::neighbours::Attempt;
use crate::cache::disk::ReadNow;
use crate::cache::entry::{now_ms, CachedResponse};
use crate::cache::fill::{Fill, StaleEntry};
use crate::cache::http::freshness::{self, Freshness, StaleUse};
use crate::cache::http::key::CacheKey;
use crate::cache::http::policy::{self, CachePlan, NoCacheReason, Sharing};
use crate::cache::inflight::{self, FillOutcome};
use crate::cache::request::{CacheRequest, Hit};
use crate::cache::shared::Claim;
use crate::cache::store::Put;
use crate::cache::tiers::{Tier, Tiers};
use crate::config::Mode;

/// How many times a request waits on other fetches before it fetches for itself.
const MAX_FOLLOWS: usize = 3;
/// How often a request waiting for a neighbour's fill looks for its entry (a file lock
/// cannot wake it).
const NEIGHBOUR_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// What the cache says to do with a request.
pub enum Lookup {
    /// An entry fresh for the request: answer with it.
    Fresh(Hit),
    /// Offline: a stale entry to answer with, or none.
    Offline(Option<Hit>),
    /// Past its lifetime, inside its stale-while-revalidate window: answer with it now, and
    /// refresh it in the background under the fill, when one is given (none: another request
    /// is refreshing it).
    Revalidating(Hit, Option<Fill>),
    /// Past its lifetime: revalidate (or fetch again) under the fill, which may still answer
    /// with the stale entry when the origin fails.
    Stale(Fill),
    /// Nothing usable held: fetch under the fill.
    Miss(Fill),
    /// Fetch without the cache: `None` when nothing could answer a HEAD, or another request's
    /// answer could not be stored; else why.
    Pass(Option<NoCacheReason>),
}

/// Finds what may answer `ask`, leading or following a fill when nothing fresh is held.
pub(crate) async fn lookup(tiers: &Arc<Tiers>, ask: &CacheRequest<'_>) -> Lookup {
    let arrived = now_ms();
    let mut collapsed = false;
    // Once this request has waited for another's fetch, what that fetch stored or
    // revalidated is fresh enough for it, whatever its lifetime (a no-cache entry point
    // revalidated for ten waiting requests is not revalidated ten more times). The fetch
    // stores after the wait began, in the same millisecond as likely as not: inclusive.
    let mut waited_since = ask.fresh_since;
    for _ in 0..MAX_FOLLOWS {
        let keys = keys_for(tiers, ask.url, ask.head.headers(), ask.plan).await;
        let key = keys.fill_key(ask.plan).clone();
        let stale = match find(tiers, &keys, ask, waited_since).await {
            None => None,
            Some((entry, tier, freshness)) => {
                let hit = Hit {
                    entry,
                    tier,
                    collapsed,
                };
                match freshness {
                    Freshness::Fresh => return Lookup::Fresh(hit),
                    Freshness::Stale(_) if ask.policy.offline() => {
                        return Lookup::Offline(Some(hit))
                    }
                    Freshness::Stale(usable) if usable.while_revalidating => {
                        return revalidating(tiers, ask, hit)
                    }
                    Freshness::Stale(usable) => Some(StaleEntry { hit, usable }),
                }
            }
        };
        if ask.policy.offline() {
            return Lookup::Offline(None);
        }
        if ask.head.method() == Method::HEAD && stale.is_none() {
            return Lookup::Pass(None);
        }
        let begun = if ask.plan.live_request {
            inflight::Fill::Leader(tiers.inflight.solo(&key))
        } else {
            tiers.inflight.begin(&key)
        };
        let waiter = match begun {
            inflight::Fill::Leader(permit) => {
                // A fill may have ended between the lookup and now; what it stored since this
                // request arrived is fresh enough for it.
                if let Some(hit) = stored_meanwhile(tiers, ask, &keys, &key, arrived) {
                    permit.complete(FillOutcome::Stored);
                    return Lookup::Fresh(hit);
                }
                let fill = Fill::new(tiers.clone(), permit, ask, stale.clone());
                if stale.is_some() {
                    return Lookup::Stale(fill);
                }
                return match Box::pin(ask_neighbours(tiers, ask, fill, arrived)).await {
                    Ok(answered) => answered,
                    Err(fill) => Box::pin(ask_fleet(tiers, ask, fill)).await,
                };
            }
            inflight::Fill::Follower(waiter) => waiter,
        };
        if !ask.wait {
            return Lookup::Pass(None);
        }
        collapsed = true;
        waited_since = Some(now_ms());
        tiers.stats.coalesced_waits.inc();
        match waiter.wait(tiers.config.coalesce_wait).await {
            Some(FillOutcome::Stored | FillOutcome::Abandoned) => continue,
            Some(FillOutcome::NotStorable) => return Lookup::Pass(None),
            None => return Lookup::Pass(Some(NoCacheReason::CoalesceTimeout)),
        }
    }
    Lookup::Pass(None)
}

/// The keys a request may be answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestKeys {
    /// The key every client shares (a cookie enters it only when the answers vary on it).
    shared: CacheKey,
    /// The key kept for the request's cookie, when it carries one and not every answer to it
    /// is shared.
    own: Option<CacheKey>,
}

impl RequestKeys {
    /// The same keys for a client that accepts no coding, where bodies the origin sent
    /// without a coding are kept; `None` when the request accepts none itself.
    fn for_uncoded_body(&self) -> Option<RequestKeys> {
        Some(RequestKeys {
            shared: self.shared.for_uncoded_body()?,
            own: self.own.as_ref().and_then(CacheKey::for_uncoded_body),
        })
    }

    /// Whether the entry kept under the shared key may answer this request: always without a
    /// cookie; with one, when its answers are shared across cookies.
    fn shared_serves(&self, plan: &CachePlan, entry: &CachedResponse) -> bool {
        self.own.is_none() || policy::shared_across_cookies(plan, entry.meta.header_map())
    }

    /// The key a fill for this request is led on: the shared one for assets, so sessions
    /// with different cookies wait for one fetch; the cookie's own for anything else.
    fn fill_key(&self, plan: &CachePlan) -> &CacheKey {
        match &self.own {
            Some(own) if !plan.asset_request => own,
            _ => &self.shared,
        }
    }
}

/// The keys a request for `url` may be answered from: its coding class and the values of
/// the headers this URL's responses vary on; with a cookie, also the cookie's own key.
async fn keys_for(tiers: &Tiers, url: &Url, headers: &HeaderMap, plan: &CachePlan) -> RequestKeys {
    let names = vary_names(tiers, url).await;
    let names = names.as_deref().map_or(&[][..], Vec::as_slice);
    let shared = CacheKey::for_request(url, headers, names, true);
    // Only a cookie, on an answer not always shared, can make a key of the request's own.
    let may_differ = plan.sharing != Sharing::Always && headers.contains_key(COOKIE);
    let own = may_differ
        .then(|| CacheKey::for_request(url, headers, names, false))
        .filter(|own| *own != shared);
    RequestKeys { own, shared }
}

/// An entry found for a request, where it was, and how fresh it is for the request.
type Judged = (Arc<CachedResponse>, Tier, Freshness);

/// The request headers `url`'s answers vary on, as recorded; `None` when nothing varies.
async fn vary_names(tiers: &Tiers, url: &Url) -> Option<Arc<Vec<String>>> {
    if !tiers.vary.may_vary() {
        None
    } else if let Some(names) = tiers.vary.cached(url.as_str()) {
        Some(names)
    } else {
        let (vary, owned) = (tiers.vary.clone(), url.as_str().to_owned());
        tokio::task::spawn_blocking(move || vary.names(&owned))
            .await
            .ok()
    }
}

/// Every key a request for `url` with `headers` may be answered from, whatever the answer's
/// sharing: its coding class's (shared, and its cookie's own) and those of a body without a
/// coding. What an unsafe request that succeeded invalidates.
pub(crate) async fn keys_answering(tiers: &Tiers, url: &Url, headers: &HeaderMap) -> Vec<CacheKey> {
    let names = vary_names(tiers, url).await;
    let names = names.as_deref().map_or(&[][..], Vec::as_slice);
    let mut keys = vec![CacheKey::for_request(url, headers, names, true)];
    if headers.contains_key(COOKIE) {
        keys.push(CacheKey::for_request(url, headers, names, false));
    }
    let uncoded: Vec<CacheKey> = keys.iter().filter_map(CacheKey::for_uncoded_body).collect();
    keys.extend(uncoded);
    keys.dedup();
    keys
}

/// The entry a request may be answered from, fresh or not, judged: one kept for its coding
/// class, else a body the origin sent without a coding, which answers every client — so
/// browsers, curl, scripts and `proxy warm`, each accepting other codings, share one fetch.
/// The memory tier is asked for both before the disk is, so a memory hit on either never
/// waits for the disk; a fresh entry is taken before a stale one.
async fn find(
    tiers: &Tiers,
    keys: &RequestKeys,
    ask: &CacheRequest<'_>,
    waited_since: Option<u64>,
) -> Option<Judged> {
    let judged = |(entry, tier): (Arc<CachedResponse>, Tier)| {
        (!refreshed_away(tiers, ask, &entry)).then(|| {
            let freshness = judge(&entry, ask, waited_since);
            (entry, tier, freshness)
        })
    };
    let is_fresh = |found: &Option<Judged>| matches!(found, Some((_, _, Freshness::Fresh)));
    let uncoded_in = |found: Option<(Arc<CachedResponse>, Tier)>| {
        found.filter(|(entry, _)| entry.meta.body_uncoded())
    };
    let mut own_class = find_by(tiers, keys, ask.plan, in_memory).and_then(judged);
    if is_fresh(&own_class) {
        return own_class;
    }
    let uncoded_keys = keys.for_uncoded_body();
    let mut uncoded = uncoded_keys
        .as_ref()
        .and_then(|keys| uncoded_in(find_by(tiers, keys, ask.plan, in_memory)))
        .and_then(judged);
    if is_fresh(&uncoded) {
        return uncoded;
    }
    if own_class.is_none() {
        own_class = find_on_disk(tiers, keys, ask.plan).await.and_then(judged);
        if is_fresh(&own_class) {
            return own_class;
        }
    }
    if uncoded.is_none() {
        if let Some(keys) = &uncoded_keys {
            uncoded = uncoded_in(find_on_disk(tiers, keys, ask.plan).await).and_then(judged);
        }
    }
    // A stale body without a coding before a stale one of the class: fills of bodies without
    // a coding are stored there, so that is the one a revalidation renews.
    uncoded.or(own_class)
}

/// The entry kept under `keys` that `get` finds, fresh or not: the one every client shares
/// when it may serve this request (always, without a cookie; for an asset, with one), else
/// the one kept for the request's cookie.
fn find_by(
    tiers: &Tiers,
    keys: &RequestKeys,
    plan: &CachePlan,
    get: impl Fn(&Tiers, &CacheKey) -> Option<(Arc<CachedResponse>, Tier)>,
) -> Option<(Arc<CachedResponse>, Tier)> {
    get(tiers, &keys.shared)
        .filter(|(entry, _)| keys.shared_serves(plan, entry))
        .or_else(|| keys.own.as_ref().and_then(|own| get(tiers, own)))
}

/// `find_by` on the disk tier (entries found there are promoted to memory).
async fn find_on_disk(
    tiers: &Tiers,
    keys: &RequestKeys,
    plan: &CachePlan,
) -> Option<(Arc<CachedResponse>, Tier)> {
    if let Some(found) = from_disk(tiers, &keys.shared).await {
        if keys.shared_serves(plan, &found.0) {
            return Some(found);
        }
    }
    match &keys.own {
        Some(own) => from_disk(tiers, own).await,
        None => None,
    }
}

/// The entry for `key` if the memory tier holds it, with its tier.
fn in_memory(tiers: &Tiers, key: &CacheKey) -> Option<(Arc<CachedResponse>, Tier)> {
    from_memory(tiers, key).map(|entry| (entry, Tier::Memory))
}

/// The entry for `key` if the memory tier holds it; the use is noted.
fn from_memory(tiers: &Tiers, key: &CacheKey) -> Option<Arc<CachedResponse>> {
    let entry = tiers.memory.get(key)?;
    entry.used.mark(now_ms());
    Some(entry)
}

/// The entry for `key`, fresh or not, from disk (then promoted to memory).
async fn from_disk(tiers: &Tiers, key: &CacheKey) -> Option<(Arc<CachedResponse>, Tier)> {
    let read = match tiers.store.read_now(key) {
        ReadNow::Read(entry) => entry,
        ReadNow::Later => {
            let (store, owned_key) = (tiers.store.clone(), key.clone());
            let read = tokio::task::spawn_blocking(move || store.read(&owned_key)).await;
            read.ok().flatten()
        }
    };
    let entry = Arc::new(read?);
    let now = now_ms();
    entry.used.mark(now);
    tiers.store.note_disk_use(key.digest_bytes(), now);
    tiers.memory.insert(entry.clone());
    Some((entry, Tier::Disk))
}

/// Whether this entry is fetched again whatever its freshness: a refreshing run (`--mode
/// refresh`) began after it was stored, or an unsafe request invalidated its URL since.
fn refreshed_away(tiers: &Tiers, ask: &CacheRequest<'_>, entry: &CachedResponse) -> bool {
    (ask.policy.mode == Mode::Refresh && entry.meta.stored_at_ms < tiers.opened_ms)
        || tiers.invalidated.covers(&entry.meta)
}

/// How fresh an entry is for a request; one stored at or after `stored_from` (ms) is fresh
/// whatever its lifetime.
fn judge(entry: &CachedResponse, ask: &CacheRequest<'_>, stored_from: Option<u64>) -> Freshness {
    if stored_from.is_some_and(|from| entry.meta.stored_at_ms >= from) {
        return Freshness::Fresh;
    }
    freshness::judge(&entry.meta, ask.head, SystemTime::now(), ask.policy)
}

/// The `stored_from` of entries stored after a request arrived at `arrived_ms`: strictly
/// later, in whole milliseconds, since one stored in the same millisecond may predate it.
fn stored_after(arrived_ms: u64) -> Option<u64> {
    Some(arrived_ms + 1)
}

/// A stale entry inside its stale-while-revalidate window, with the fill of its refresh
/// unless one is under way.
fn revalidating(tiers: &Arc<Tiers>, ask: &CacheRequest<'_>, hit: Hit) -> Lookup {
    let refresh = match tiers.inflight.begin(&hit.entry.meta.key) {
        inflight::Fill::Leader(permit) => {
            let stale = StaleEntry {
                hit: hit.clone(),
                usable: StaleUse::default(),
            };
            Some(Fill::new(tiers.clone(), permit, ask, Some(stale)))
        }
        inflight::Fill::Follower(_) => None,
    };
    Lookup::Revalidating(hit, refresh)
}

/// A memory entry a fill stored after this request arrived, if one may answer it: under
/// `key`, or as a body without a coding.
fn stored_meanwhile(
    tiers: &Tiers,
    ask: &CacheRequest<'_>,
    keys: &RequestKeys,
    key: &CacheKey,
    arrived: u64,
) -> Option<Hit> {
    let answers = |entry: &Arc<CachedResponse>| {
        !refreshed_away(tiers, ask, entry)
            && (keys.own.as_ref() == Some(key) || keys.shared_serves(ask.plan, entry))
            && judge(entry, ask, stored_after(arrived)) == Freshness::Fresh
    };
    let entry = from_memory(tiers, key)
        .filter(answers)
        .or_else(|| uncoded_from_memory(tiers, key).filter(answers))?;
    Some(Hit {
        entry,
        tier: Tier::Memory,
        collapsed: true,
    })
}

/// The body without a coding kept for `key`'s URL and variant, if the memory tier holds one.
fn uncoded_from_memory(tiers: &Tiers, key: &CacheKey) -> Option<Arc<CachedResponse>> {
    from_memory(tiers, &key.for_uncoded_body()?).filter(|entry| entry.meta.body_uncoded())
}

/// Before a cold fetch, the processes sharing the cache directory: when another is fetching
/// the key, wait for the entry it writes (an entry stored after this request arrived answers
/// it); else fetch, holding the key's fill lock until the entry is on disk. `Err` gives the
/// fill back to go on with.
async fn ask_neighbours(
    tiers: &Arc<Tiers>,
    ask: &CacheRequest<'_>,
    mut fill: Fill,
    arrived: u64,
) -> Result<Lookup, Fill> {
    if ask.plan.live_request {
        return Err(fill);
    }
    let deadline = tokio::time::Instant::now() + tiers.config.coalesce_wait;
    let mut waited = false;
    loop {
        // One trip to the blocking pool: the lock, and when it is this process's, the entry
        // a neighbour may have written just before letting it go (or just before this
        // request's own look at the disk).
        let (store, key) = (tiers.store.clone(), fill.key().clone());
        let tried = tokio::task::spawn_blocking(move || {
            let attempt = store.try_neighbours_lock(&key)?;
            // A neighbour keeps a body it got without a coding under the key of a client
            // that accepts none.
            let read_uncoded = || {
                store
                    .read(&key.for_uncoded_body()?)
                    .filter(|entry| entry.meta.body_uncoded())
            };
            let written = matches!(attempt, Attempt::Lead(_))
                .then(|| store.read(&key).or_else(read_uncoded))
                .flatten();
            Some((attempt, written))
        })
        .await
        .ok()
        .flatten();
        let (attempt, written) = match tried {
            None => return Err(fill),
            Some(tried) => tried,
        };
        if let Some(entry) = written.and_then(|entry| usable_now(tiers, ask, entry, arrived)) {
            tiers.put(fill.into_permit(), Put::Written(entry.clone()));
            return Ok(Lookup::Fresh(Hit {
                entry,
                tier: Tier::Disk,
                collapsed: waited,
            }));
        }
        if let Attempt::Lead(lock) = attempt {
            fill.hold_neighbour_lock(lock);
            return Err(fill);
        }
        if !ask.wait {
            return Ok(Lookup::Pass(None));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(fill);
        }
        if !waited {
            tiers.stats.coalesced_waits.inc();
        }
        waited = true;
        tokio::time::sleep(NEIGHBOUR_RECHECK).await;
    }
}

/// `entry`, read from disk, if it may answer this request: stored after it arrived, or fresh
/// (and not due for a refreshing run).
fn usable_now(
    tiers: &Tiers,
    ask: &CacheRequest<'_>,
    entry: CachedResponse,
    arrived: u64,
) -> Option<Arc<CachedResponse>> {
    let usable = !refreshed_away(tiers, ask, &entry)
        && judge(&entry, ask, stored_after(arrived)) == Freshness::Fresh;
    usable.then(|| {
        entry.used.mark(now_ms());
        Arc::new(entry)
    })
}

/// Before a cold fetch, the fleet: another proxy may have stored the entry in the shared
/// tier, or be fetching it (then this waits for it); else this proxy fetches, holding the
/// fleet's lock when Redis gave it.
async fn ask_fleet(tiers: &Arc<Tiers>, ask: &CacheRequest<'_>, mut fill: Fill) -> Lookup {
    let Some(shared) = &tiers.shared else {
        return Lookup::Miss(fill);
    };
    let claim = match shared.get_answering(fill.key()).await {
        Some(entry) => Claim::Found {
            entry: Box::new(entry),
            waited: false,
        },
        None => shared.claim(fill.key(), tiers.config.coalesce_wait).await,
    };
    match claim {
        Claim::Found { entry, waited } => {
            if judge(&entry, ask, None) != Freshness::Fresh || tiers.invalidated.covers(&entry.meta)
            {
                return Lookup::Miss(fill);
            }
            let entry = Arc::new(*entry);
            entry.used.mark(now_ms());
            tiers.put(fill.into_permit(), Put::Adopted(entry.clone()));
            Lookup::Fresh(Hit {
                entry,
                tier: Tier::Shared,
                collapsed: waited,
            })
        }
        Claim::Lead(lock) => {
            fill.hold_fleet_lock(lock);
            Lookup::Miss(fill)
        }
        Claim::Alone => Lookup::Miss(fill),
    }
}
