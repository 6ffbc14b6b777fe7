//! Fleet-wide coalescing: before a proxy fetches a cold key from the origin it takes the key's
//! lock in Redis (`SET NX` with an expiry, holding a token of its own). Other proxies wait
//! for the entry the holder writes, told by the `filled` channel and checking again now and
//! then; a holder that dies stops renewing its lock, which then expires and lets the next
//! proxy lead.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SharedTier;
use crate::cache::entry::CachedResponse;
use crate::cache::http::key::CacheKey;

/// How often a waiting proxy checks for the entry and the lock without being told.
const RECHECK_EVERY: Duration = Duration::from_millis(250);

/// Extends a lock only while it still holds the caller's token.
const RENEW: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lock only while it still holds the caller's token.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// What a proxy about to fetch a cold key learned from the fleet.
pub enum Claim {
    /// Another proxy stored it meanwhile; `waited` when this one waited for that.
    Found {
        /// The entry.
        entry: Box<CachedResponse>,
        /// Whether the request waited for another proxy's fetch.
        waited: bool,
    },
    /// This proxy fetches it for the fleet; the lock goes with the entry to Redis.
    Lead(FleetLock),
    /// Fetch without the fleet: Redis is down or slow, or the wait ran out.
    Alone,
}

/// A held fill lock. It is renewed while held, and deleted when dropped (if still ours).
pub struct FleetLock {
    tier: SharedTier,
    key: String,
    token: String,
    renewal: JoinHandle<()>,
}

impl Drop for FleetLock {
    fn drop(&mut self) {
        self.renewal.abort();
        let Some(mut connection) = self.tier.inner.link.connection() else {
            return;
        };
        let mut release = redis::cmd("EVAL");
        release.arg(RELEASE).arg(1).arg(&self.key).arg(&self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // An unreleased lock only costs the others its expiry.
            runtime.spawn(async move {
                let _ = connection.query::<i64>(&release).await;
            });
        }
    }
}

impl SharedTier {
    /// Takes the fleet's fill lock for `key`, or waits up to `wait` for the proxy that holds
    /// it to store the entry.
    pub async fn claim(&self, key: &CacheKey, wait: Duration) -> Claim {
        let deadline = Instant::now() + wait;
        let digest = key.digest();
        let mut filled = self.inner.filled.subscribe();
        let mut waited = false;
        loop {
            match self.try_lock(key).await {
                None => return Claim::Alone,
                Some(Some(lock)) => {
                    // The previous holder may have stored it just before letting go.
                    return match self.get_answering(key).await {
                        Some(entry) => Claim::Found {
                            entry: Box::new(entry),
                            waited,
                        },
                        None => Claim::Lead(lock),
                    };
                }
                Some(None) => {}
            }
            if !waited {
                waited = true;
                self.inner.stats.shared_lock_waits.inc();
            }
            if let Some(entry) = self.get_answering(key).await {
                return Claim::Found {
                    entry: Box::new(entry),
                    waited,
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Claim::Alone;
            }
            let _ = tokio::time::timeout(left.min(RECHECK_EVERY), announced(&mut filled, &digest))
                .await;
        }
    }

    /// `Some(Some(lock))` taken, `Some(None)` held by another proxy, `None` Redis failed.
    async fn try_lock(&self, key: &CacheKey) -> Option<Option<FleetLock>> {
        let mut connection = self.inner.link.connection()?;
        let (lock_key, token) = (self.lock_key(key), self.inner.instance.clone());
        let ttl = self.inner.config.lock_ttl;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut set = redis::Cmd::set(&lock_key, &token);
        set.arg("NX").arg("PX").arg(ttl_ms);
        let taken: Option<String> = self.bounded(&mut connection, &set).await.ok()?;
        if taken.is_none() {
            return Some(None);
        }
        let mut renew = redis::cmd("EVAL");
        renew
            .arg(RENEW)
            .arg(1)
            .arg(&lock_key)
            .arg(&token)
            .arg(ttl_ms);
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if !matches!(connection.query::<i64>(&renew).await, Ok(1)) {
                    return;
                }
            }
        });
        Some(Some(FleetLock {
            tier: self.clone(),
            key: lock_key,
            token,
            renewal,
        }))
    }
}

/// Resolves when the entry with `digest` is announced (or announcements were missed).
async fn announced(filled: &mut broadcast::Receiver<String>, digest: &str) {
    loop {
        match filled.recv().await {
            Ok(announced) if announced == digest => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
