//! Pre-warming: right after a start, the memory tier is filled from disk in the background
//! with the most recently used entries (the disk index knows when each was last served), up
//! to most of `memory.max_mb`, so the first requests after a restart are memory hits.

use std::sync::Weak;
use std::time::Instant;

use tracing::{debug, info};

use super::disk::DiskError;
use super::journal::Digest;
use super::Inner;

/// Pre-warming stops at this share of the memory tier, leaving room for new traffic.
const FILL_PERCENT: u64 = 80;

/// Starts pre-warming on a thread of its own; it stops early when the cache is dropped.
pub(super) fn start(cache: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cache-prewarm".into())
        .spawn(move || prewarm(&cache))?;
    Ok(())
}

fn prewarm(cache: &Weak<Inner>) {
    let started = Instant::now();
    let Some(inner) = cache.upgrade() else { return };
    let mut recent: Vec<(Digest, u64, u64)> = inner
        .store
        .index
        .snapshot()
        .into_iter()
        .map(|(digest, slot)| (digest, slot.used_ms, slot.size))
        .collect();
    recent.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.1));
    let budget = inner.config.memory_max_bytes / 100 * FILL_PERCENT;
    drop(inner);
    let (mut entries, mut bytes) = (0u64, 0u64);
    for (digest, _, size) in recent {
        // Holding no strong reference between entries lets a shutdown drop the cache.
        let Some(inner) = cache.upgrade() else { return };
        if inner.memory.usage().1 + size > budget {
            if size > budget {
                continue;
            }
            break;
        }
        match inner.store.tier.read_digest(&digest) {
            Ok(Some(entry)) => {
                // A version retired after it was written (a crash before its removal) stays
                // out of memory: memory hits are not checked against the version index.
                let retired = match (&entry.meta.asset, &entry.meta.version) {
                    (Some(asset), Some(version)) => {
                        inner.versions.is_retired(asset, version).unwrap_or(true)
                    }
                    _ => false,
                };
                if !retired && inner.memory.get(&entry.meta.key).is_none() {
                    bytes += entry.body.len() as u64;
                    entries += 1;
                    inner.memory.insert(std::sync::Arc::new(entry));
                }
            }
            Ok(None) => {}
            Err(e @ DiskError::Corrupt { .. }) => inner.store.health.failed(&e),
            Err(e) => debug!(error = %e, "pre-warming read failed"),
        }
    }
    if let Some(inner) = cache.upgrade() {
        inner.stats.prewarmed_entries.add(entries);
        inner.stats.prewarmed_bytes.add(bytes);
    }
    if entries > 0 {
        info!(
            entries,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "memory tier pre-warmed from disk with the most recently used entries"
        );
    }
}
