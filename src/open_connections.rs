//! Every open client connection and relay (an opaque tunnel, a WebSocket): when bytes last
//! moved on it, what it has in flight, and how to ask it to close.
//!
//! The listener registers the connections it serves over HTTP; `mitm` and `proxy` register
//! the relays they splice once the HTTP connection that opened them has ended. All of them are
//! counted in `clients.open` and weighed in file descriptors, so that when the proxy runs short
//! of descriptors it closes the longest quiet first, whatever kind they are.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::stats::Stats;

/// The open connections of one proxy. Cloning shares them.
#[derive(Clone)]
pub struct OpenConnections {
    inner: Arc<Shared>,
}

struct Shared {
    /// When the clock of every connection's activity started.
    epoch: Instant,
    open: Mutex<HashMap<u64, Registered>>,
    next_id: AtomicU64,
    /// File descriptors the open connections hold together.
    descriptors: AtomicU64,
    stats: Arc<Stats>,
}

/// What is known of one open connection.
struct Registered {
    activity: Arc<Activity>,
    close: CancellationToken,
}

/// When bytes last moved on a connection (ms since the registry's epoch) and its requests in
/// flight.
#[derive(Default)]
pub struct Activity {
    pub(crate) last_ms: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
}

impl OpenConnections {
    /// None open yet; `clients.open` and `clients.closed_for_descriptors` counted in `stats`.
    pub fn new(stats: Arc<Stats>) -> OpenConnections {
        OpenConnections {
            inner: Arc::new(Shared {
                epoch: Instant::now(),
                open: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                descriptors: AtomicU64::new(0),
                stats,
            }),
        }
    }

    /// Registers a connection holding `descriptors` file descriptors (a client socket 1, a
    /// relay to an origin 2) until the returned registration is dropped.
    pub fn register(&self, descriptors: u64) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(self.now_ms(), Ordering::Relaxed);
        let close = CancellationToken::new();
        self.lock().insert(
            id,
            Registered {
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        self.inner
            .descriptors
            .fetch_add(descriptors, Ordering::Relaxed);
        self.inner.stats.clients_open.inc();
        Registration {
            open: self.clone(),
            id,
            descriptors,
            activity,
            close,
        }
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// File descriptors the open connections hold.
    pub fn descriptors(&self) -> u64 {
        self.inner.descriptors.load(Ordering::Relaxed)
    }

    /// Asks up to `count` connections with nothing in flight, the longest quiet first, to
    /// close; returns how many.
    pub fn close_quietest(&self, count: usize) -> usize {
        let open = self.lock();
        let mut idle: Vec<(u64, &CancellationToken)> = open
            .values()
            .filter(|c| c.activity.in_flight.load(Ordering::Relaxed) == 0)
            .filter(|c| !c.close.is_cancelled())
            .map(|c| (c.activity.last_ms.load(Ordering::Relaxed), &c.close))
            .collect();
        idle.sort_by_key(|(last, _)| *last);
        let closing = idle.len().min(count);
        for (_, close) in idle.iter().take(closing) {
            close.cancel();
        }
        self.inner
            .stats
            .clients_closed_for_descriptors
            .add(closing as u64);
        closing
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open connection, registered until this is dropped.
pub struct Registration {
    open: OpenConnections,
    id: u64,
    descriptors: u64,
    activity: Arc<Activity>,
    close: CancellationToken,
}

impl Registration {
    /// The connection's activity, for counting its requests in flight.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// `io`, noting on this connection when bytes move on it.
    pub fn track<I>(&self, io: I) -> Tracked<I> {
        Tracked {
            inner: io,
            activity: self.activity.clone(),
            epoch: self.open.inner.epoch,
        }
    }

    /// Resolves once the proxy asked this connection to close (descriptors ran short).
    pub fn close_requested(&self) -> WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }

    /// Resolves once the connection has had nothing in flight and moved no byte for `limit`.
    pub async fn quiet_for(&self, limit: Duration) {
        let activity = &self.activity;
        let epoch = self.open.inner.epoch;
        loop {
            let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
            tokio::time::sleep_until(epoch + last + limit).await;
            let quiet = activity.last_ms.load(Ordering::Relaxed) == last.as_millis() as u64;
            if quiet && activity.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            if quiet {
                // A request in flight waits for its origin, bounded by the upstream timeouts;
                // look again a full period later.
                activity
                    .last_ms
                    .store(self.open.now_ms(), Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = self.open.lock().remove(&self.id);
        if removed.is_some() {
            self.open
                .inner
                .descriptors
                .fetch_sub(self.descriptors, Ordering::Relaxed);
            self.open.inner.stats.clients_open.dec();
        }
    }
}

/// A connection's byte stream, noting when bytes move.
pub struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl<I> Tracked<I> {
    fn moved(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.activity.last_ms.store(now, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_longest_quiet_without_requests_in_flight_are_closed_first() {
        let open = OpenConnections::new(Arc::new(Stats::default()));
        let oldest = open.register(2);
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = open.register(1);
        busy.activity().in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = open.register(1);
        assert_eq!((open.count(), open.descriptors()), (3, 4));
        assert_eq!(open.close_quietest(1), 1);
        assert!(oldest.close.is_cancelled(), "the quietest is asked first");
        assert_eq!(
            open.close_quietest(5),
            1,
            "one with a request in flight stays"
        );
        assert!(newer.close.is_cancelled() && !busy.close.is_cancelled());
        drop(oldest);
        assert_eq!((open.count(), open.descriptors()), (2, 2));
    }
}
