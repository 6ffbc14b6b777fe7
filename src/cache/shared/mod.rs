//! The fleet's shared tier on Redis, after memory and disk: entries fetched by one proxy are
//! written there in the background (with the time they stay fresh as expiry) and found by the
//! others; each proxy publishes when it last used the versions it holds, so that every proxy
//! retires versions by the whole fleet's uses; and a lock per key makes a cold asset reach the
//! origin once for the whole fleet.
//!
//! Redis is an accelerator, never a dependency: every command on a request's path has a
//! short limit, any failure makes the proxy skip Redis until it answers again, and the local
//! tiers and origins keep serving meanwhile.
//!
//! Keys and channels, all under the configured prefix: `entry:<key digest>` (an entry in the
//! disk tier's checksummed encoding), `lock:<key digest>` (a fill lock holding its owner's
//! token), channel `filled` (the digests of entries just written), channel `versions` (JSON
//! reports of the last uses of versions).

pub mod claim;
pub mod link;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tracing::{debug, warn};

use crate::cache::entry::CachedResponse;
use crate::cache::http::key::CacheKey;
use crate::cache::http::version::{AssetId, Version};
use crate::config::SharedConfig;
use crate::stats::Stats;
pub use claim::{Claim, FleetLock};
use link::{Connection, Link, Message};

/// Body bytes of background writes under way at most; beyond it writes are skipped.
const WRITE_BUDGET_KIB: usize = 64 * 1024;
/// Entries fresh for less than this are not worth sharing.
const MIN_SHARED_TTL: Duration = Duration::from_secs(1);
/// Use reports from other proxies waiting to be applied.
const NEWS_QUEUE: usize = 1024;
/// Assets per use report at most; more go in several messages.
const ASSETS_PER_REPORT: usize = 256;

/// When another proxy of the fleet last used the versions of some assets: what each proxy
/// needs to apply the retirement rule to its own copies with the whole fleet's uses. A lost
/// report only delays a retirement elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionNews {
    /// The proxy that reports (so that it ignores its own report).
    pub from: String,
    /// The assets, each with its versions and their last uses.
    pub assets: Vec<AssetUses>,
}

/// The versions of one asset a proxy holds, with when each was last used (ms since the
/// Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetUses {
    /// The asset.
    pub asset: AssetId,
    /// Its versions and their last uses.
    pub uses: Vec<(Version, u64)>,
}

/// The shared tier. Cloning shares it.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
}

struct Inner {
    config: SharedConfig,
    link: Arc<Link>,
    stats: Arc<Stats>,
    /// This proxy's name in announcements and lock tokens.
    instance: String,
    /// Digests of entries other proxies just wrote, for requests waiting on their locks.
    filled: broadcast::Sender<String>,
    news: mpsc::Sender<VersionNews>,
    writes: Arc<Semaphore>,
}

impl SharedTier {
    /// The tier and the announcements of other proxies' new versions; nothing connects
    /// until `start`.
    pub fn new(
        config: SharedConfig,
        stats: Arc<Stats>,
    ) -> (SharedTier, mpsc::Receiver<VersionNews>) {
        let (news, received) = mpsc::channel(NEWS_QUEUE);
        let link = Arc::new(Link::new(config.nodes.clone(), stats.clone()));
        let inner = Inner {
            config,
            link,
            stats,
            instance: instance_name(),
            filled: broadcast::channel(256).0,
            news,
            writes: Arc::new(Semaphore::new(WRITE_BUDGET_KIB)),
        };
        (
            SharedTier {
                inner: Arc::new(inner),
            },
            received,
        )
    }

    /// Starts the task that connects, reconnects and listens. Inside a tokio runtime.
    pub fn start(&self) {
        let channels = vec![self.channel("filled"), self.channel("versions")];
        let weak = Arc::downgrade(&self.inner);
        let link = Arc::downgrade(&self.inner.link);
        tokio::spawn(link::keep(link, channels, move |message| {
            if let Some(inner) = weak.upgrade() {
                inner.receive(message);
            }
        }));
    }

    /// Whether Redis is connected.
    pub fn is_up(&self) -> bool {
        self.inner.link.is_up()
    }

    /// The Redis nodes, without passwords.
    pub fn display(&self) -> String {
        self.inner.link.display()
    }

    /// The entry for `key` if Redis holds a valid one. Counts misses; a failure or a slow
    /// answer is a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedResponse> {
        self.read(key, true).await
    }

    /// The entry that answers a request keyed `key`: its own, else the body without a coding
    /// kept for its URL and variant, which answers every client. One miss is counted when
    /// Redis holds neither.
    pub async fn get_answering(&self, key: &CacheKey) -> Option<CachedResponse> {
        let Some(uncoded) = key.for_uncoded_body() else {
            return self.get(key).await;
        };
        match self.read(key, false).await {
            Some(entry) => Some(entry),
            None => self
                .get(&uncoded)
                .await
                .filter(|entry| entry.meta.body_uncoded()),
        }
    }

    /// `get`, counting a miss only when `count_miss`.
    async fn read(&self, key: &CacheKey, count_miss: bool) -> Option<CachedResponse> {
        let stats = &self.inner.stats;
        let mut connection = self.inner.link.connection()?;
        let command = redis::Cmd::get(self.entry_key(key));
        let bytes: Option<Vec<u8>> = self.bounded(&mut connection, &command).await.ok()?;
        let Some(bytes) = bytes else {
            if count_miss {
                stats.shared_misses.inc();
            }
            return None;
        };
        match CachedResponse::decode(Bytes::from(bytes)) {
            Ok(entry) if entry.meta.key == *key => Some(entry),
            Ok(_) | Err(_) => {
                stats.shared_corrupt.inc();
                warn!(key = %key, "shared cache entry failed verification; removed, will be refetched");
                // Gone before this answers: the fill that follows looks again once it holds
                // the fleet's lock, and must not find the same damaged entry.
                let remove = redis::Cmd::del(self.entry_key(key));
                let _ = self.bounded::<()>(&mut connection, &remove).await;
                None
            }
        }
    }

    /// Writes an entry in the background with `ttl` as its expiry, announces it to proxies
    /// waiting for it, then lets go of the fill lock. Skipped (and counted) when the tier is
    /// down or too many bytes are being written already.
    pub fn put(&self, entry: Arc<CachedResponse>, ttl: Duration, lock: Option<FleetLock>) {
        if ttl < MIN_SHARED_TTL {
            return;
        }
        let stats = &self.inner.stats;
        let kib = u32::try_from(entry.meta.body_len / 1024 + 1).unwrap_or(u32::MAX);
        let (Some(mut connection), Ok(budget)) = (
            self.inner.link.connection(),
            self.inner.writes.clone().try_acquire_many_owned(kib),
        ) else {
            stats.shared_writes_skipped.inc();
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let key = entry.meta.key.clone();
            let encoded = entry.encode();
            drop(entry);
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let mut write = redis::Cmd::set(this.entry_key(&key), &encoded[..]);
            write.arg("PX").arg(ttl_ms);
            match connection.query::<()>(&write).await {
                Ok(()) => {
                    this.inner.stats.shared_writes.inc();
                    let announce = redis::Cmd::publish(this.channel("filled"), key.digest());
                    if let Err(e) = connection.query::<()>(&announce).await {
                        this.inner.link.failed(&connection, &e);
                    }
                }
                Err(e) => this.inner.link.failed(&connection, &e),
            }
            drop(budget);
            drop(lock);
        });
    }

    /// Writes the entry file at `path` (already in the shared encoding) under `key` in the
    /// background, within the same budget as `put`: for bodies a fill spilled to disk.
    pub fn put_file(
        &self,
        key: &CacheKey,
        path: std::path::PathBuf,
        ttl: Duration,
        lock: Option<FleetLock>,
    ) {
        if ttl < MIN_SHARED_TTL {
            return;
        }
        let stats = &self.inner.stats;
        let size = std::fs::metadata(&path).map_or(u64::MAX, |m| m.len());
        let kib = u32::try_from(size / 1024 + 1).unwrap_or(u32::MAX);
        let (Some(mut connection), Ok(budget)) = (
            self.inner.link.connection(),
            self.inner.writes.clone().try_acquire_many_owned(kib),
        ) else {
            stats.shared_writes_skipped.inc();
            return;
        };
        let (this, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let Ok(Ok(encoded)) = tokio::task::spawn_blocking(move || std::fs::read(path)).await
            else {
                this.inner.stats.shared_writes_skipped.inc();
                return;
            };
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let mut write = redis::Cmd::set(this.entry_key(&key), &encoded[..]);
            write.arg("PX").arg(ttl_ms);
            drop(encoded);
            match connection.query::<()>(&write).await {
                Ok(()) => {
                    this.inner.stats.shared_writes.inc();
                    let announce = redis::Cmd::publish(this.channel("filled"), key.digest());
                    if let Err(e) = connection.query::<()>(&announce).await {
                        this.inner.link.failed(&connection, &e);
                    }
                }
                Err(e) => this.inner.link.failed(&connection, &e),
            }
            drop(budget);
            drop(lock);
        });
    }

    /// Tells the fleet when this proxy last used the versions of `assets`, in the background.
    pub fn report(&self, assets: Vec<AssetUses>) {
        if assets.is_empty() {
            return;
        }
        let Some(mut connection) = self.inner.link.connection() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            for chunk in assets.chunks(ASSETS_PER_REPORT) {
                let news = VersionNews {
                    from: this.inner.instance.clone(),
                    assets: chunk.to_vec(),
                };
                let payload = serde_json::to_vec(&news).unwrap_or_default();
                let publish = redis::Cmd::publish(this.channel("versions"), payload);
                if let Err(e) = this.bounded::<()>(&mut connection, &publish).await {
                    debug!(error = %e, "use report not sent");
                    return;
                }
            }
        });
    }

    /// Removes entries from Redis in the background (versions retired here, damaged copies).
    pub fn remove(&self, keys: &[CacheKey]) {
        let Some(mut connection) = self.inner.link.connection() else {
            return;
        };
        // One command per key: in a cluster the keys live on different nodes.
        let commands: Vec<redis::Cmd> = keys
            .iter()
            .map(|key| redis::Cmd::del(self.entry_key(key)))
            .collect();
        if commands.is_empty() {
            return;
        }
        let link = self.inner.link.clone();
        tokio::spawn(async move {
            for command in commands {
                if let Err(e) = connection.query::<()>(&command).await {
                    link.failed(&connection, &e);
                    return;
                }
            }
        });
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        format!("{}entry:{}", self.inner.config.prefix, key.digest())
    }

    fn lock_key(&self, key: &CacheKey) -> String {
        format!("{}lock:{}", self.inner.config.prefix, key.digest())
    }

    fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.inner.config.prefix)
    }

    /// Runs a command on a request's path: within `shared.timeout_ms`, or it counts as a
    /// failure (the answer is then `Err` with the reason, already counted and logged).
    async fn bounded<T: redis::FromRedisValue>(
        &self,
        connection: &mut Connection,
        command: &redis::Cmd,
    ) -> Result<T, String> {
        let limit = self.inner.config.timeout;
        let failure = match tokio::time::timeout(limit, connection.query(command)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", limit.as_millis()),
        };
        self.inner.link.failed(connection, &failure);
        Err(failure)
    }
}

impl Inner {
    /// A pub/sub message from the keeper.
    fn receive(&self, message: Message) {
        let prefix = &self.config.prefix;
        let Some(channel) = message.channel.strip_prefix(prefix.as_str()) else {
            return;
        };
        match channel {
            "filled" => {
                // Nobody waiting is the usual case, not an error.
                let _ = self
                    .filled
                    .send(String::from_utf8_lossy(&message.payload).into_owned());
            }
            "versions" => match serde_json::from_slice::<VersionNews>(&message.payload) {
                Ok(news) if news.from == self.instance => {}
                Ok(news) => {
                    self.stats.shared_versions_received.inc();
                    if self.news.try_send(news).is_err() {
                        debug!("use reports arrive faster than they are applied; one dropped");
                    }
                }
                Err(e) => debug!(error = %e, "unreadable use report ignored"),
            },
            _ => {}
        }
    }
}

/// A name for this proxy that no other proxy of the fleet has: random, with the process id.
fn instance_name() -> String {
    let mut random = [0u8; 8];
    // Without randomness the pid and the clock still tell proxies apart in practice.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    format!(
        "{}-{}-{}",
        std::process::id(),
        crate::cache::http::key::hex(&random),
        crate::cache::entry::now_ms()
    )
}
