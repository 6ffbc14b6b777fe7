//! Putting an entry in: `Tiers::put` is the one way every entry enters the cache — a
//! fetched body whole in memory, a fetched body a fill spilled to a temp file, a stored entry
//! refreshed by a 304, an entry the shared tier had, an entry a neighbour process wrote. Each
//! is built into an entry, its version held in the version index (which may retire other
//! versions), kept in memory (large spilled bodies stay on disk only), written to disk, and
//! handed to the shared tier — and the requests waiting for the fill are woken as soon as
//! some tier can answer them.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use tracing::{debug, info, warn};
use url::Url;

use crate::cache::compress::{self, Coding};
use crate::cache::disk::neighbours::NeighbourLock;
use crate::cache::disk::spill::Spilled;
use crate::cache::disk::DiskError;
use crate::cache::entry::{CachedResponse, EntryMeta, Lifetime, PrefetchMark};
use crate::cache::http::content::{self, ContentKind};
use crate::cache::http::freshness;
use crate::cache::http::key::CacheKey;
use crate::cache::http::policy::{self, CachePlan};
use crate::cache::http::vary;
use crate::cache::inflight::{FillOutcome, FillPermit};
use crate::cache::shared::FleetLock;
use crate::cache::tiers::Tiers;
use crate::config::Mode;
use crate::loggable;

/// Spilled bodies up to this share of the memory tier are kept in memory too; larger ones are
/// served from disk.
const MEMORY_SHARE_OF_SPILLED: u64 = 8;

/// What is stored with a body: how the request was classified, what was asked of the
/// origin, what it answered, and the entry this one replaces.
pub struct FillPlan {
    /// How the request was classified.
    pub plan: CachePlan,
    /// The request as sent to the origin (its headers pick the Vary variant).
    pub request: Request<()>,
    /// Response status.
    pub status: StatusCode,
    /// End-to-end response headers.
    pub headers: HeaderMap,
    /// How long the entry may be served.
    pub lifetime: Lifetime,
    /// The stale entry this response replaces, if any.
    pub previous: Option<Arc<CachedResponse>>,
    /// The fleet's fill lock for this key, let go once the entry is in the shared tier.
    pub fleet_lock: Option<FleetLock>,
    /// The fill lock among processes sharing the directory, let go once the entry is on disk.
    pub neighbour_lock: Option<NeighbourLock>,
    /// Set when the fetch is a prefetch: the entry carries the mark.
    pub prefetched: Option<Arc<PrefetchMark>>,
}

/// An entry to put in.
pub(crate) enum Put {
    /// A fetched body, whole in memory.
    Fetched(FillPlan, Bytes),
    /// A fetched body a fill spilled to a temp file.
    Spilled(FillPlan, Spilled),
    /// A stored entry with the metadata of a 304 that confirmed it (the body stays).
    Refreshed(Arc<CachedResponse>),
    /// An entry the shared tier had.
    Adopted(Arc<CachedResponse>),
    /// An entry another process sharing the directory wrote meanwhile (on disk already).
    Written(Arc<CachedResponse>),
}

impl Tiers {
    /// Puts an entry in under the fill's `permit`. A refreshed or adopted entry is in memory
    /// (and its followers woken) when this returns; the rest happens in the background, and
    /// the caller never waits for it.
    pub(crate) fn put(self: &Arc<Self>, permit: FillPermit, what: Put) {
        let guard = self.pending();
        match what {
            Put::Refreshed(entry) => {
                self.memory.insert(entry.clone());
                permit.complete(FillOutcome::Stored);
                let tiers = self.clone();
                tokio::spawn(async move {
                    tiers.queue_write(entry, None).await;
                    drop(guard);
                });
            }
            Put::Adopted(entry) => {
                self.memory.insert(entry.clone());
                permit.complete(FillOutcome::Stored);
                let tiers = self.clone();
                tokio::spawn(async move {
                    tiers.hold_version(&entry.meta).await;
                    tiers.stats.stored.inc();
                    tiers.queue_write(entry, None).await;
                    drop(guard);
                });
            }
            Put::Written(entry) => {
                self.memory.insert(entry);
                permit.complete(FillOutcome::Stored);
            }
            Put::Fetched(fill, body) => {
                let tiers = self.clone();
                tokio::spawn(async move {
                    tiers.store(permit, fill, body).await;
                    drop(guard);
                });
            }
            Put::Spilled(fill, spilled) => {
                let tiers = self.clone();
                tokio::spawn(async move {
                    tiers.store_spilled(permit, fill, spilled).await;
                    drop(guard);
                });
            }
        }
    }

    /// Builds the entry of a fetched body and keeps it, then hands it to the shared tier
    /// with the fleet's fill lock.
    async fn store(self: &Arc<Self>, permit: FillPermit, mut fill: FillPlan, body: Bytes) {
        // A stored answer never carries a cookie: only a rule's `record_cookies` lets one that
        // set a cookie be stored, and the cookie stays with the client it was sent to.
        fill.headers.remove(http::header::SET_COOKIE);
        let meta = self
            .entry_meta(
                &permit,
                &fill,
                body.len() as u64,
                xxhash_rust::xxh3::xxh3_64(&body),
            )
            .await;
        let mut entry = CachedResponse::new(meta, body);
        entry.prefetched = self.mark_prefetched(fill.prefetched, entry.meta.body_len);
        let entry = Arc::new(entry);
        self.keep(permit, entry.clone(), fill.neighbour_lock.take())
            .await;
        if let Some(shared) = &self.shared {
            let ttl = freshness::time_left(&entry.meta, SystemTime::now());
            shared.put(entry, ttl, fill.fleet_lock);
        }
    }

    /// Builds the entry file of a spilled body (compressed when that pays), then keeps the
    /// body in memory when small enough, holds its version and hands the file to the shared
    /// tier; the followers are woken once the file is in place.
    async fn store_spilled(
        self: &Arc<Self>,
        permit: FillPermit,
        mut fill: FillPlan,
        spilled: Spilled,
    ) {
        let meta = self
            .entry_meta(&permit, &fill, spilled.len, spilled.xxh3)
            .await;
        let in_memory = spilled.len <= self.config.memory_max_bytes / MEMORY_SHARE_OF_SPILLED;
        let store = self.store.clone();
        let neighbour_lock = fill.neighbour_lock.take();
        let turn = self.store.spilled_write_turn().await;
        let written = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut spilled = spilled;
            let (path, frame) = store.write_spilled(&meta, &mut spilled, in_memory)?;
            // On disk: neighbours waiting for it may read it now.
            drop(neighbour_lock);
            let body = if in_memory {
                Some((read_all(&mut spilled)?, frame))
            } else {
                None
            };
            Ok::<_, DiskError>((meta, path, body))
        })
        .await;
        let (meta, path, body) = match written {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => return self.store.health.failed(&e),
            Err(e) => return warn!(error = %e, "storing a spilled body failed"),
        };
        let mark = self.mark_prefetched(fill.prefetched, meta.body_len);
        let entry = body.map(|(body, frame)| {
            let mut entry = CachedResponse::new(meta.clone(), body);
            entry.prefetched = mark;
            // The frame its file holds: clients that accept zstd get it from the first hit.
            if let Some(frame) = frame {
                entry.encodings.set(Coding::Zstd, Some(frame));
            }
            Arc::new(entry)
        });
        if let Some(entry) = &entry {
            self.memory.insert(entry.clone());
        }
        permit.complete(FillOutcome::Stored);
        self.hold_version(&meta).await;
        self.stats.stored.inc();
        if let Some(shared) = &self.shared {
            let ttl = freshness::time_left(&meta, SystemTime::now());
            shared.put_file(&meta.key, path, ttl, fill.fleet_lock);
        }
    }

    /// A spill that could not be finished (disk full, unwritable): counted, not stored.
    pub(crate) fn spill_failed(&self, error: &std::io::Error) {
        self.stats.disk_errors.inc();
        debug!(error = %error, "a spilled body could not be finished; not stored");
    }

    /// Where fills spill their bodies: the disk tier's own directory, so that a crash leaves
    /// nothing behind that the next start does not clean.
    pub(crate) fn spill_dir(&self) -> std::path::PathBuf {
        self.store.tier.root().to_owned()
    }

    /// The metadata of a fetched body of `len` bytes hashing to `xxh3`.
    async fn entry_meta(
        &self,
        permit: &FillPermit,
        fill: &FillPlan,
        len: u64,
        xxh3: u64,
    ) -> EntryMeta {
        let key = self.variant_key(permit.key(), fill).await;
        let versioned = fill.plan.versioned.clone().map(|v| (v.asset, v.version));
        let mut meta = EntryMeta::for_body(
            key,
            fill.status,
            &fill.headers,
            fill.lifetime.clone(),
            SystemTime::now(),
            len,
            xxh3,
        );
        (meta.asset, meta.version) = versioned.unzip();
        if let Some(previous) = &fill.previous {
            self.note_content_change(&previous.meta, &meta);
        }
        meta
    }

    /// Counts a prefetched entry of `bytes` and returns its mark.
    fn mark_prefetched(
        &self,
        mark: Option<Arc<PrefetchMark>>,
        bytes: u64,
    ) -> Option<Arc<PrefetchMark>> {
        let mark = mark?;
        mark.set_bytes(bytes);
        self.stats.prefetched.inc();
        self.stats.prefetched_bytes.add(bytes);
        Some(mark)
    }

    /// Keeps an entry: memory first, so waiting requests are answered at once; then its
    /// version in the version index; then the disk writer's queue.
    async fn keep(
        self: &Arc<Self>,
        permit: FillPermit,
        entry: Arc<CachedResponse>,
        neighbour_lock: Option<NeighbourLock>,
    ) {
        self.memory.insert(entry.clone());
        permit.complete(FillOutcome::Stored);
        self.hold_version(&entry.meta).await;
        self.stats.stored.inc();
        self.queue_write(entry, neighbour_lock).await;
    }
}

impl Tiers {
    /// Stores an answer obtained elsewhere (an archive) as if it had just been fetched for
    /// `request`: the same rules (and run mode: a recording run records it) decide whether
    /// and how long, and it takes the same way in.
    /// Resolves once it is in memory; the disk write follows (see `Cache::settled`).
    pub(crate) async fn put_answer(
        self: &Arc<Self>,
        request: Request<()>,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        policy: &crate::config::PolicyConfig,
    ) -> Result<(), policy::NoCacheReason> {
        let url = Url::parse(&request.uri().to_string())
            .map_err(|_| policy::NoCacheReason::NotCacheable)?;
        let plan = policy::classify_request(
            request.method(),
            &url,
            request.headers(),
            policy,
            self.config.max_age,
        )?;
        if request.method() != http::Method::GET {
            return Err(policy::NoCacheReason::Method);
        }
        let mut answer = http::Response::new(());
        *answer.status_mut() = status;
        *answer.headers_mut() = headers.clone();
        let recording = matches!(policy.mode, Mode::Record | Mode::Refresh);
        let limits = policy::StoreLimits {
            max_object_bytes: self.config.max_object_bytes,
            negative_ttl: policy.negative_ttl,
            record_for: recording.then_some(self.config.max_age),
        };
        let lifetime = policy::storable(&plan, &request, &answer, SystemTime::now(), &limits)?;
        if body.len() as u64 > limits.max_object_bytes {
            return Err(policy::NoCacheReason::TooLarge);
        }
        let key = CacheKey::for_request(&url, request.headers(), &[], true);
        let permit = self.inflight.solo(&key);
        let fill = FillPlan {
            plan,
            request,
            status,
            headers,
            lifetime,
            previous: None,
            fleet_lock: None,
            neighbour_lock: None,
            prefetched: None,
        };
        self.store(permit, fill, body).await;
        Ok(())
    }

    /// The key to store a response under: the request's variant for the headers the
    /// response varies on (recorded for the URL when they changed), and the coding class of
    /// a client that accepts none when the body came without a coding, since it answers
    /// every client (lookups of other classes fall back to it).
    async fn variant_key(&self, fill_key: &CacheKey, fill: &FillPlan) -> CacheKey {
        let key = self.varied_key(fill_key, fill).await;
        if compress::uncoded(&fill.headers) {
            return key.for_uncoded_body().unwrap_or(key);
        }
        key
    }

    /// The request's variant for the headers the response varies on, recorded for the URL
    /// when they changed.
    async fn varied_key(&self, fill_key: &CacheKey, fill: &FillPlan) -> CacheKey {
        let names = vary::vary_names(&fill.headers).unwrap_or_default();
        let Ok(url) = Url::parse(fill_key.url()) else {
            return fill_key.clone();
        };
        let shared = policy::shared_across_cookies(&fill.plan, &fill.headers);
        let key = CacheKey::for_request(&url, fill.request.headers(), &names, shared);
        if key == *fill_key {
            return key;
        }
        let (index, owned_url) = (self.vary.clone(), fill_key.url().to_owned());
        let recorded = tokio::task::spawn_blocking(move || index.record(&owned_url, &names)).await;
        if let Ok(Err(e)) = recorded {
            self.stats.disk_errors.inc();
            warn!(error = %e, "vary index write failed");
        }
        key
    }

    /// Logs and counts a changed body of an unversioned URL: a new version of that asset.
    fn note_content_change(&self, old: &EntryMeta, new: &EntryMeta) {
        // Versioned assets change by URL; data answers are not assets at all.
        if new.version.is_some() || content::kind_of(new.header_map()) == ContentKind::Data {
            return;
        }
        let (before, after) = (
            freshness::content_identity(old),
            freshness::content_identity(new),
        );
        if before != after {
            self.stats.version_changes.inc();
            self.stats
                .activity
                .version_changed(new.key.url(), &before, &after);
            info!(asset = %loggable::url(new.key.url()), old = %before, new = %after, "asset version changed");
        }
    }
}

/// The whole of a spilled body, read back into memory.
fn read_all(spilled: &mut Spilled) -> Result<Bytes, DiskError> {
    use std::io::{Read, Seek};
    let path = spilled.file.path().to_owned();
    let io = |source| DiskError::Io {
        op: "read back",
        path: path.clone(),
        source,
    };
    let file = spilled.file.as_file_mut();
    file.rewind().map_err(io)?;
    let mut body = Vec::with_capacity(usize::try_from(spilled.len).unwrap_or(0));
    file.read_to_end(&mut body).map_err(io)?;
    Ok(Bytes::from(body))
}
