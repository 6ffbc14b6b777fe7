//! Requests per namespace: how each key space is used, for `/stats` and `cache stats
//! --namespace`. Names come from clients, so at most `MAX_NAMED` are counted one by one; the
//! rest are counted together.

use std::collections::BTreeMap;
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
    figures: Mutex<BTreeMap<String, NamespaceFigures>>,
}

impl Namespaces {
    /// Counts one answered request in `namespace`.
    pub fn count(&self, namespace: &str, hit: bool, miss: bool, bytes: u64) {
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

    /// The figures of `namespace` (zero when it has had no request).
    pub fn of(&self, namespace: &str) -> NamespaceFigures {
        let figures = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        figures.get(namespace).copied().unwrap_or_default()
    }

    /// Every namespace's figures, by name.
    pub fn all(&self) -> BTreeMap<String, NamespaceFigures> {
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
            namespaces.count(&format!("n{i}"), true, false, 10);
        }
        namespaces.count("n0", false, true, 5);
        let all = namespaces.all();
        assert_eq!(all.len(), MAX_NAMED + 1);
        assert_eq!(all[OTHERS].requests, 5);
        assert_eq!(
            namespaces.of("n0"),
            NamespaceFigures {
                requests: 2,
                hits: 1,
                misses: 1,
                bytes_served: 15
            }
        );
    }
}
