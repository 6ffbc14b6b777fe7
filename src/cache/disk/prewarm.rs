//! Pre-warming: right after a start, the memory tier is filled from disk in the background
//! with the entries used most recently and most often (the disk index knows when each was
//! last served and how often), up to most of `memory.max_mb`, so the first requests after a
//! restart are memory hits.

use std::sync::Weak;
use std::time::Instant;

use tracing::{debug, info};

use std::collections::HashMap;

use crate::cache::disk::index::Slot;
use crate::cache::disk::journal::Digest;
use crate::cache::disk::DiskError;
use crate::cache::disk::{DiskStore, Wanted};

/// Pre-warming stops at this share of the memory tier, leaving room for new traffic.
const FILL_PERCENT: u64 = 80;

/// Starts pre-warming `store`'s memory tier, up to most of `memory_max_bytes`, with the
/// entries `wanted` accepts, on a thread of its own; it stops early when the store is dropped.
pub fn start(store: Weak<DiskStore>, memory_max_bytes: u64, wanted: Wanted) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cache-prewarm".into())
        .spawn(move || prewarm(&store, memory_max_bytes, &wanted))?;
    Ok(())
}

fn prewarm(cache: &Weak<DiskStore>, memory_max_bytes: u64, wanted: &Wanted) {
    let started = Instant::now();
    let Some(inner) = cache.upgrade() else { return };
    let recent = by_worth(inner.index.snapshot(), crate::cache::entry::now_ms());
    let budget = memory_max_bytes / 100 * FILL_PERCENT;
    drop(inner);
    let (mut entries, mut bytes) = (0u64, 0u64);
    for (digest, size) in recent {
        // Holding no strong reference between entries lets a shutdown drop the cache.
        let Some(inner) = cache.upgrade() else { return };
        if inner.memory.usage().1 + size > budget {
            if size > budget {
                continue;
            }
            break;
        }
        match inner.tier.read_digest(&digest) {
            Ok(Some(entry)) => {
                // A version retired after it was written (a crash before its removal) stays
                // out of memory: it would be held by no record, so never retired again.
                if wanted(&entry.meta) && inner.memory.get(&entry.meta.key).is_none() {
                    bytes += entry.meta.body_len;
                    entries += 1;
                    inner.memory.insert(std::sync::Arc::new(entry));
                }
            }
            Ok(None) => {}
            Err(e @ DiskError::Corrupt { .. }) => inner.health.failed(&e),
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
            "memory tier pre-warmed from disk with the most used entries"
        );
    }
}

/// The entries, most worth holding in memory first: uses weighed down by the hours since the
/// last one, so that an entry used often an hour ago comes before one used once a minute ago,
/// and one used often last week after both. Ties go to the more recent. With sizes.
fn by_worth(slots: HashMap<Digest, Slot>, now_ms: u64) -> Vec<(Digest, u64)> {
    let worth = |slot: &Slot| {
        let hours = now_ms.saturating_sub(slot.used_ms) as f64 / 3_600_000.0;
        (slot.uses + 1) as f64 / (1.0 + hours)
    };
    let mut ranked: Vec<(Digest, Slot)> = slots.into_iter().collect();
    ranked.sort_unstable_by(|a, b| {
        worth(&b.1)
            .total_cmp(&worth(&a.1))
            .then(b.1.used_ms.cmp(&a.1.used_ms))
    });
    ranked
        .into_iter()
        .map(|(digest, slot)| (digest, slot.size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn often_and_recently_used_entries_come_first() {
        let hour = 3_600_000;
        let now = 1_000 * hour;
        let slot = |hours_ago: u64, uses: u64| Slot {
            size: 1,
            used_ms: now - hours_ago * hour,
            uses,
        };
        let slots = HashMap::from([
            ([1; 32], slot(0, 0)),    // written just now, never served
            ([2; 32], slot(1, 20)),   // served often, an hour ago
            ([3; 32], slot(0, 1)),    // served once, just now
            ([4; 32], slot(168, 50)), // served often, last week
            ([5; 32], slot(24, 0)),   // written yesterday, never served
        ]);
        let order: Vec<u8> = by_worth(slots, now).iter().map(|(d, _)| d[0]).collect();
        assert_eq!(order, [2, 3, 1, 4, 5]);
    }
}
