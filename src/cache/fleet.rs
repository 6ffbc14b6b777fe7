//! The cache's side of the fleet's shared tier: asking it before a cold fetch, keeping what
//! it had in the local tiers, and retiring the versions other proxies announce.

use std::sync::{Arc, PoisonError, Weak};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::warn;

use super::entry::now_ms;
use super::inflight::FillPermit;
use super::key::CacheKey;
use super::shared::{Claim, SharedTier, VersionNews};
use super::versions::Admission;
use super::{Cache, CachedResponse, Inner};

impl Cache {
    /// Connects the shared tier, if configured, and starts applying the fleet's version
    /// announcements. Inside a tokio runtime; once (later calls do nothing).
    pub fn start_sharing(&self) {
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
            cache.keep(permit, kept, false).await;
            drop(guard);
        });
        entry
    }

    /// Another proxy saw a new version: the versions it retires leave this proxy too.
    async fn apply_news(&self, news: VersionNews) {
        let (index, asset, version) = (
            self.inner.versions.clone(),
            news.asset.clone(),
            news.version.clone(),
        );
        let admitted = tokio::task::spawn_blocking(move || {
            index.admit_announced(&asset, &version, SystemTime::now())
        })
        .await;
        match admitted {
            Ok(Ok(Admission::Store { change, evicted })) => {
                if let Some((old, new)) = change {
                    let what = "asset version changed on another proxy of the fleet";
                    self.note_version_change(&news.asset, &old, &new, what);
                }
                self.evict_versions(&evicted);
            }
            // This proxy holds a newer version already.
            Ok(Ok(Admission::Older)) => {}
            Ok(Err(e)) => {
                self.inner.stats.disk_errors.inc();
                warn!(error = %e, asset = %news.asset, "version index update failed; announced version not applied");
            }
            Err(_) => {}
        }
    }
}

/// Applies announcements until the cache is dropped.
async fn follow_fleet(cache: Weak<Inner>, mut news: mpsc::Receiver<VersionNews>) {
    while let Some(news) = news.recv().await {
        let Some(inner) = cache.upgrade() else { return };
        Cache { inner }.apply_news(news).await;
    }
}
