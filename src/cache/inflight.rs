//! Coalescing of concurrent misses: the first request for a key leads the fetch, the others
//! follow and wait for its outcome. Dropping the leader's permit without completing it (an
//! error, a cancelled request, a panic) wakes the followers with `Abandoned`, so none waits
//! for a fetch that will never end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::cache::http::key::CacheKey;

/// How a leader's fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// The entry is in the cache: look it up again.
    Stored,
    /// The response may not be stored: fetch for yourself, no need to wait in turn.
    NotStorable,
    /// The leader failed or went away: one of the followers leads next.
    Abandoned,
}

/// The result of asking to fill a key.
pub enum Fill {
    /// Nobody is fetching this key: fetch it, then complete the permit.
    Leader(FillPermit),
    /// Somebody is: wait for them.
    Follower(FillWaiter),
}

type Table = Arc<Mutex<HashMap<CacheKey, watch::Receiver<Option<FillOutcome>>>>>;

/// The fills under way.
#[derive(Clone, Default)]
pub struct InFlight {
    table: Table,
}

impl InFlight {
    /// Leads the fill of `key`, or follows the one under way.
    pub fn begin(&self, key: &CacheKey) -> Fill {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(receiver) = table.get(key) {
            return Fill::Follower(FillWaiter {
                receiver: receiver.clone(),
            });
        }
        let (sender, receiver) = watch::channel(None);
        table.insert(key.clone(), receiver);
        Fill::Leader(FillPermit {
            key: key.clone(),
            table: Some(self.table.clone()),
            sender,
        })
    }

    /// A permit to fill `key` that nobody waits for and that keeps no one waiting: for
    /// requests whose answers are live, which must not be collapsed onto another's fetch.
    pub fn solo(&self, key: &CacheKey) -> FillPermit {
        FillPermit {
            key: key.clone(),
            table: None,
            sender: watch::channel(None).0,
        }
    }
}

/// The right and duty to fill one key. Dropping it without `complete` abandons the fill.
pub struct FillPermit {
    key: CacheKey,
    /// The table the fill is registered in; none for a solo fill.
    table: Option<Table>,
    sender: watch::Sender<Option<FillOutcome>>,
}

impl FillPermit {
    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Ends the fill with `outcome` and wakes the followers.
    pub fn complete(self, outcome: FillOutcome) {
        self.sender.send_replace(Some(outcome));
        // Drop removes the table entry.
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        if self.sender.borrow().is_none() {
            self.sender.send_replace(Some(FillOutcome::Abandoned));
        }
        if let Some(table) = &self.table {
            let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
            table.remove(&self.key);
        }
    }
}

/// A follower's wait for a leader.
pub struct FillWaiter {
    receiver: watch::Receiver<Option<FillOutcome>>,
}

impl FillWaiter {
    /// The leader's outcome, or `None` when it did not come within `limit`.
    pub async fn wait(mut self, limit: Duration) -> Option<FillOutcome> {
        let outcome = tokio::time::timeout(limit, self.receiver.wait_for(Option::is_some)).await;
        match outcome {
            Ok(Ok(value)) => *value,
            // The sender is gone without a value: the permit was dropped mid-drop.
            Ok(Err(_)) => Some(FillOutcome::Abandoned),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use url::Url;

    fn key() -> CacheKey {
        CacheKey::new(
            &Url::parse("https://a.test/a.js?v=1").expect("url"),
            &HeaderMap::new(),
        )
    }

    #[tokio::test]
    async fn followers_see_the_leaders_outcome() {
        let inflight = InFlight::default();
        let Fill::Leader(permit) = inflight.begin(&key()) else {
            panic!("first is leader")
        };
        let Fill::Follower(waiter) = inflight.begin(&key()) else {
            panic!("second follows")
        };
        permit.complete(FillOutcome::Stored);
        assert_eq!(
            waiter.wait(Duration::from_secs(5)).await,
            Some(FillOutcome::Stored)
        );
        assert!(
            matches!(inflight.begin(&key()), Fill::Leader(_)),
            "table entry removed"
        );
    }

    #[tokio::test]
    async fn a_dropped_permit_abandons_the_fill() {
        let inflight = InFlight::default();
        let Fill::Leader(permit) = inflight.begin(&key()) else {
            panic!("first is leader")
        };
        let Fill::Follower(waiter) = inflight.begin(&key()) else {
            panic!("second follows")
        };
        drop(permit);
        assert_eq!(
            waiter.wait(Duration::from_secs(5)).await,
            Some(FillOutcome::Abandoned)
        );
    }

    #[test]
    fn a_solo_fill_keeps_no_one_waiting() {
        let inflight = InFlight::default();
        let solo = inflight.solo(&key());
        let Fill::Leader(_leader) = inflight.begin(&key()) else {
            panic!("a solo fill is not in the table")
        };
        drop(solo);
        assert!(
            matches!(inflight.begin(&key()), Fill::Follower(_)),
            "dropping a solo permit leaves the registered fill alone"
        );
    }

    #[tokio::test]
    async fn a_wait_is_bounded() {
        let inflight = InFlight::default();
        let Fill::Leader(_permit) = inflight.begin(&key()) else {
            panic!("first is leader")
        };
        let Fill::Follower(waiter) = inflight.begin(&key()) else {
            panic!("second follows")
        };
        assert_eq!(waiter.wait(Duration::from_millis(10)).await, None);
    }
}
