//! The memory tier: a moka cache of complete responses, weighed by every byte an entry holds
//! (its body, the codings made of it, and what its metadata holds).

use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::cache::entry::{CachedResponse, EntryMeta};
use crate::cache::http::key::CacheKey;
use crate::cache::http::version::AssetId;

/// Bytes the tier itself keeps per entry beside its copy of the key's text: moka's node, its
/// place in the access and write orders, its slot in the map.
const NODE_BOOKKEEPING: u64 = 300;

/// Bytes the memory tier holds, by part.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryParts {
    /// Bodies as received.
    pub body_bytes: u64,
    /// The codings made of them (the stored zstd frame, br and gzip for clients).
    pub coding_bytes: u64,
}

/// Hot entries, shared between requests without copying bodies.
#[derive(Clone)]
pub struct MemoryTier {
    entries: Cache<CacheKey, Arc<CachedResponse>>,
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` of bodies; entries unused for `idle` are dropped.
    pub fn new(max_bytes: u64, idle: Duration) -> MemoryTier {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &CacheKey, entry: &Arc<CachedResponse>| {
                let weight = entry.heap_bytes() + key.text_len() + NODE_BOOKKEEPING;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .time_to_idle(idle)
            .build();
        MemoryTier { entries }
    }

    /// The entry for `key`, if held.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.entries.get(key)
    }

    /// Holds `entry` under its key, evicting at once what no longer fits: moka otherwise
    /// evicts in batches, and a burst of multi-MiB inserts would overshoot the cap by
    /// the batch. Inserts happen once per fill, never per hit.
    pub fn insert(&self, entry: Arc<CachedResponse>) {
        // Through the key's lock, like `reweigh`, so that a re-weighing never puts back an
        // entry another insert has just replaced.
        self.entries
            .entry(entry.meta.key.clone())
            .and_compute_with(|_| Op::Put(entry));
        self.entries.run_pending_tasks();
    }

    /// Weighs `entry` again after a coding was made of its body, if it is still the one held
    /// under its key: the tier's bound counts what the entry holds now.
    pub fn reweigh(&self, entry: &Arc<CachedResponse>) {
        self.entries
            .entry(entry.meta.key.clone())
            .and_compute_with(|held| match held {
                Some(held) if Arc::ptr_eq(held.value(), entry) => Op::Put(held.into_value()),
                _ => Op::Nop,
            });
        self.entries.run_pending_tasks();
    }

    /// Drops the entry held under `stored`'s key if it is that stored entry (stored at the
    /// same time, with the same body), wherever it was read from; another one put there since
    /// (by the fill its damage led to) stays.
    pub fn remove_stored(&self, stored: &EntryMeta) {
        let same = |held: &EntryMeta| {
            (held.stored_at_ms, held.body_xxh3) == (stored.stored_at_ms, stored.body_xxh3)
        };
        self.entries
            .entry_by_ref(&stored.key)
            .and_compute_with(|held| match held {
                Some(held) if same(&held.value().meta) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// Drops every entry `matches` accepts; returns how many.
    pub fn remove_matching(&self, matches: impl Fn(&CachedResponse) -> bool) -> usize {
        let doomed: Vec<Arc<CacheKey>> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches(entry))
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            self.remove(key);
        }
        doomed.len()
    }

    /// Entries held and their weight (bodies, codings and overhead).
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// What the held entries are made of: bytes of bodies, and of codings made of them.
    pub fn parts(&self) -> MemoryParts {
        let mut parts = MemoryParts::default();
        for (_, entry) in self.entries.iter() {
            parts.body_bytes += entry.body_bytes();
            parts.coding_bytes += entry.encodings.made_bytes();
        }
        parts
    }

    /// Keys of the entries served after `since_ms`, with when they were last served.
    pub fn used_since(&self, since_ms: u64) -> Vec<(CacheKey, u64)> {
        self.entries
            .iter()
            .filter_map(|(key, entry)| {
                let at = entry.used.get();
                (at > since_ms).then(|| (key.as_ref().clone(), at))
            })
            .collect()
    }

    /// The entries of versioned assets served after `since_ms`: key, when last served, how
    /// often, asset.
    pub fn versioned_used_since(&self, since_ms: u64) -> Vec<(CacheKey, u64, u64, AssetId)> {
        self.entries
            .iter()
            .filter_map(|(key, entry)| {
                let at = entry.used.get();
                let asset = entry.meta.asset.clone()?;
                (at > since_ms).then(|| (key.as_ref().clone(), at, entry.used.count(), asset))
            })
            .collect()
    }

    /// Drops the entry for `key`, through the key's lock: moka's `invalidate` takes no key
    /// lock, so a re-weighing that had just found the entry would put it back after it.
    /// Whether there was one.
    pub fn remove(&self, key: &CacheKey) -> bool {
        let removed = self
            .entries
            .entry_by_ref(key)
            .and_compute_with(|_| Op::<Arc<CachedResponse>>::Remove);
        matches!(removed, moka::ops::compute::CompResult::Removed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Lifetime;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use std::time::SystemTime;

    fn entry(n: u32) -> Arc<CachedResponse> {
        entry_stored_at(n, SystemTime::now())
    }

    fn entry_stored_at(n: u32, at: SystemTime) -> Arc<CachedResponse> {
        let url = url::Url::parse(&format!("https://a.test/app.js?v={n}")).expect("url");
        let key = CacheKey::new(&url, &HeaderMap::new());
        let body = Bytes::from(vec![7u8; 100]);
        let meta = EntryMeta::new(
            key,
            StatusCode::OK,
            &HeaderMap::new(),
            Lifetime::Pinned { ttl_secs: 60 },
            at,
            &body,
        );
        Arc::new(CachedResponse::new(meta, body))
    }

    /// The disk writer re-weighs every entry it wrote while retirements remove entries on
    /// other threads: a removed entry must stay removed.
    #[test]
    fn a_reweighing_never_brings_back_a_removed_entry() {
        let tier = MemoryTier::new(64 << 20, Duration::from_secs(600));
        let mut back = Vec::new();
        for n in 0..2_000 {
            let entry = entry(n);
            tier.insert(entry.clone());
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..50 {
                        tier.reweigh(&entry);
                    }
                });
                start.wait();
                tier.remove(&entry.meta.key);
            });
            if tier.get(&entry.meta.key).is_some() {
                back.push(n);
            }
        }
        assert!(back.is_empty(), "removed, then back: {back:?}");
    }

    #[test]
    fn an_entry_found_damaged_is_dropped_but_not_one_put_in_its_place() {
        let tier = MemoryTier::new(64 << 20, Duration::from_secs(600));
        let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
        let (damaged, refetched) = (entry_stored_at(1, at(1_000)), entry_stored_at(1, at(1_001)));
        tier.insert(damaged.clone());
        tier.insert(refetched.clone());
        tier.remove_stored(&damaged.meta);
        let held = tier.get(&refetched.meta.key).expect("the new one stays");
        assert!(Arc::ptr_eq(&held, &refetched));
        // The same stored entry read again (from disk, say) is another value, and goes too.
        let read_again = Arc::new(CachedResponse::new(
            refetched.meta.clone(),
            Bytes::from(vec![7u8; 100]),
        ));
        tier.remove_stored(&read_again.meta);
        assert!(tier.get(&refetched.meta.key).is_none());
    }
}
