//! Requests per namespace: how each key space is used, for `/stats` and `cache stats
//! --namespace`. The default namespace is counted without a lock (every request of a proxy
//! without namespaces lands there); names come from clients, so at most `MAX_NAMED` are
//! counted one by one, the rest together.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Namespaces counted by name; requests in any other are counted under `OTHERS`.
const MAX_NAMED: usize = 1024;
/// Where requests in namespaces beyond `MAX_NAMED` are counted.
const OTHERS: &str = "(others)";

/// What one namespace's requests came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NamespaceFigures {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered from the cache (fresh, stale or revalidated).
    pub hits: u64,
    /// Of those, fetched from the origin for the cache.
    pub misses: u64,
    /// Body bytes sent to clients.
    pub bytes_served: u64,
}

/// Figures per namespace, the default one included.
#[derive(Debug, Default)]
pub struct Namespaces {
    default: DefaultFigures,
    figures: Mutex<BTreeMap<String, NamespaceFigures>>,
}

/// The default namespace's figures, counted without a lock.
#[derive(Debug, Default)]
struct DefaultFigures {
    requests: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_served: AtomicU64,
}

impl DefaultFigures {
    fn get(&self) -> NamespaceFigures {
        NamespaceFigures {
            requests: self.requests.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_served: self.bytes_served.load(Ordering::Relaxed),
        }
    }
}

impl Namespaces {
    /// Counts one answered request in `namespace` (`None`: the default one).
    pub fn count(&self, namespace: Option<&str>, hit: bool, miss: bool, bytes: u64) {
        let Some(namespace) = namespace else {
            let d = &self.default;
            d.requests.fetch_add(1, Ordering::Relaxed);
            d.hits.fetch_add(u64::from(hit), Ordering::Relaxed);
            d.misses.fetch_add(u64::from(miss), Ordering::Relaxed);
            d.bytes_served.fetch_add(bytes, Ordering::Relaxed);
            return;
        };
        let mut figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        let name = if figures.contains_key(namespace) || figures.len() < MAX_NAMED {
            namespace
        } else {
            OTHERS
        };
        let entry = figures.entry(name.to_owned()).or_default();
        entry.requests += 1;
        entry.hits += u64::from(hit);
        entry.misses += u64::from(miss);
        entry.bytes_served += bytes;
    }

    /// The figures of `namespace` (`None`: the default one; zero when it has had no request).
    pub fn of(&self, namespace: Option<&str>) -> NamespaceFigures {
        let Some(namespace) = namespace else {
            return self.default.get();
        };
        let figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        figures.get(namespace).copied().unwrap_or_default()
    }

    /// Every named namespace's figures, by name (the default one is `of(None)`).
    pub fn named(&self) -> BTreeMap<String, NamespaceFigures> {
        self.figures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_beyond_the_bound_are_counted_together() {
        let namespaces = Namespaces::default();
        for i in 0..MAX_NAMED + 5 {
            namespaces.count(Some(&format!("n{i}")), true, false, 10);
        }
        namespaces.count(Some("n0"), false, true, 5);
        namespaces.count(None, true, false, 7);
        let all = namespaces.named();
        assert_eq!(all.len(), MAX_NAMED + 1);
        assert_eq!(namespaces.of(None).requests, 1);
        assert_eq!(namespaces.of(None).bytes_served, 7);
        assert_eq!(all[OTHERS].requests, 5);
        assert_eq!(
            namespaces.of(Some("n0")),
            NamespaceFigures {
                requests: 2,
                hits: 1,
                misses: 1,
                bytes_served: 15
            }
        );
    }
}
