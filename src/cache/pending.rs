//! Work the cache still has under way — bodies streaming in, commits, disk jobs — counted so
//! that shutdown (and a test) can wait until everything is stored.

use tokio::sync::watch;

/// How many pieces of work are under way. Cloning shares the count.
#[derive(Clone)]
pub struct Pending(watch::Sender<usize>);

impl Default for Pending {
    fn default() -> Pending {
        Pending(watch::channel(0).0)
    }
}

impl Pending {
    /// Counts one piece of work until the guard drops.
    pub fn guard(&self) -> PendingGuard {
        self.0.send_modify(|n| *n += 1);
        PendingGuard(self.0.clone())
    }

    /// Resolves once nothing is under way.
    pub async fn settled(&self) {
        let mut receiver = self.0.subscribe();
        let _ = receiver.wait_for(|pending| *pending == 0).await;
    }
}

/// Counts one fill or commit as pending for as long as it lives.
pub struct PendingGuard(watch::Sender<usize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
