//! Background work that shutdown lets finish: client connections, tunnels, sockets, refreshes
//! of stale entries. One tracker for all of it, and one signal that asks each to wind down.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// The tasks of a running proxy. Cloning shares them.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends; shutdown waits for it.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.tracker.spawn(task);
    }

    /// Resolves once shutdown began.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stopping.cancelled()
    }

    /// Asks every task to wind down, and waits up to `grace` for them; `false` when some did
    /// not end in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stopping.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
