//! The cache's side of the fleet's shared tier: asking it before a cold fetch, keeping what
//! it had in the local tiers, and taking in the uses other proxies report.

use std::sync::{Arc, PoisonError, Weak};

use tokio::sync::mpsc;

use crate::cache::entry::now_ms;
use crate::cache::http::key::CacheKey;
use crate::cache::inflight::FillPermit;
use crate::cache::shared::{Claim, SharedTier, VersionNews};
use crate::cache::{Cache, CachedResponse, Inner};

impl Cache {
    /// Starts the background tasks that need a tokio runtime: the version sweep, and, with a
    /// shared tier, its connection and the fleet's use reports. Once (later calls do nothing).
    pub fn start_sharing(&self) {
        if !self
            .inner
            .sweeping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(crate::cache::retirement::run(Arc::downgrade(&self.inner)));
        }
        let news = self
            .inner
            .news
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (Some(shared), Some(news)) = (&self.inner.shared, news) else {
            return;
        };
        shared.start();
        tokio::spawn(follow_fleet(Arc::downgrade(&self.inner), news));
    }

    /// The shared tier, when configured.
    pub fn shared(&self) -> Option<&SharedTier> {
        self.inner.shared.as_ref()
    }

    /// Before fetching a cold key: the shared tier's entry, else the fleet's fill lock, else
    /// (no shared tier, Redis down or slow, the wait ran out) fetch alone.
    pub async fn claim_shared(&self, key: &CacheKey) -> Claim {
        let Some(shared) = &self.inner.shared else {
            return Claim::Alone;
        };
        if let Some(entry) = shared.get(key).await {
            return Claim::Found {
                entry: Box::new(entry),
                waited: false,
            };
        }
        shared.claim(key, self.inner.config.coalesce_wait).await
    }

    /// Keeps an entry found in the shared tier in the local tiers, in the background (the
    /// requests that follow this one are woken once it is in memory).
    pub fn adopt(&self, permit: FillPermit, entry: CachedResponse) -> Arc<CachedResponse> {
        let entry = Arc::new(entry);
        entry.used.mark(now_ms());
        let (cache, kept, guard) = (self.clone(), entry.clone(), self.pending());
        tokio::spawn(async move {
            cache.keep(permit, kept).await;
            drop(guard);
        });
        entry
    }
}

/// Takes in other proxies' use reports until the cache is dropped; the next sweep applies
/// them.
async fn follow_fleet(cache: Weak<Inner>, mut news: mpsc::Receiver<VersionNews>) {
    while let Some(news) = news.recv().await {
        let Some(inner) = cache.upgrade() else { return };
        inner.retirement.remote_uses(news.assets);
    }
}
