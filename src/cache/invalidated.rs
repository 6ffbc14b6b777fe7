//! URLs that unsafe requests invalidated lately (RFC 9111 §4.4), and when. What the tiers
//! held for such a URL is removed from memory at once, but from disk by the writer's queue and
//! from the shared tier in the background; until then a lookup must not answer with an entry
//! stored before the invalidation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cache::entry::EntryMeta;

/// URLs remembered at most; the oldest are forgotten first.
const REMEMBERED: u64 = 10_000;

/// How long a URL is remembered: far longer than the writer's queue takes to remove a file.
const REMEMBERED_FOR: Duration = Duration::from_secs(600);

/// The URLs invalidated lately.
pub(crate) struct Invalidated {
    /// Whether any URL was ever invalidated: until then a lookup asks nothing.
    any: AtomicBool,
    at_ms: moka::sync::Cache<String, u64>,
}

impl Default for Invalidated {
    fn default() -> Invalidated {
        Invalidated {
            any: AtomicBool::new(false),
            at_ms: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBERED_FOR)
                .build(),
        }
    }
}

impl Invalidated {
    /// Notes that `url` was invalidated at `at_ms`.
    pub(crate) fn note(&self, url: &str, at_ms: u64) {
        self.at_ms.insert(url.to_owned(), at_ms);
        self.any.store(true, Ordering::Release);
    }

    /// Whether `meta`'s entry was stored before its URL was last invalidated.
    pub(crate) fn covers(&self, meta: &EntryMeta) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .at_ms
                .get(meta.key.url())
                .is_some_and(|at_ms| meta.stored_at_ms <= at_ms)
    }
}
