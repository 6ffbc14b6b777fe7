//! Client connections: the accept loop, serving HTTP/1.1 and HTTP/2 on each connection (plain
//! TCP, or TLS inside an intercepted tunnel), one task and tracing span per client, deadlines
//! for every phase, the descriptor reserve, and graceful shutdown of all of them.
//!
//! Every connection is registered while it is served, with when bytes last moved on it and how
//! many requests it has in flight. One with nothing in flight that moves no byte for
//! `clients.idle_timeout_secs` is closed, whatever phase it is in (before its first request,
//! between requests, an idle HTTP/2 connection, a TLS tunnel with no request). When the
//! proxy runs short of file descriptors it closes its oldest idle connections first, so a new
//! client is served at once.

mod activity;
pub mod front;
mod limits;
pub mod per_core;
pub mod socks;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::body::ProxyBody;
use crate::stats::Stats;
use crate::tasks::Tasks;
use crate::trouble::Trouble;
use activity::{Activity, GuardedBody, InFlight, Tracked};
use limits::open_descriptors;
pub use limits::{descriptor_limit, ConnectionLimits};

/// Largest request head a client may send; a larger one gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept that freed nothing, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long accepting must go without a failure before a descriptor flood counts as over.
const ACCEPT_SETTLE: Duration = Duration::from_secs(1);
/// Idle connections closed at once when an accept fails for want of descriptors.
const CLOSE_ON_EXHAUSTION: usize = 16;
/// How long a connection asked to close gets to finish before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Every task serving a client, so shutdown can ask them to finish and wait for them.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Shared>,
}

struct Shared {
    tasks: Tasks,
    limits: ConnectionLimits,
    /// When the clock of every connection's activity started.
    epoch: Instant,
    open: Mutex<HashMap<u64, Registered>>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    accept_trouble: Trouble,
}

/// What the registry knows of one open connection.
struct Registered {
    activity: Arc<Activity>,
    close: CancellationToken,
}

impl Connections {
    /// No connections yet; their tasks run among `tasks`.
    pub fn new(limits: ConnectionLimits, tasks: Tasks, stats: Arc<Stats>) -> Connections {
        Connections {
            inner: Arc::new(Shared {
                tasks,
                limits,
                epoch: Instant::now(),
                open: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                stats,
                accept_trouble: Trouble::settling(ACCEPT_SETTLE),
            }),
        }
    }

    /// Resolves once shutdown began.
    pub async fn stopping(&self) {
        self.inner.tasks.stopping().await;
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// Runs `task` as part of serving clients.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.inner.tasks.spawn(task);
    }

    /// Runs `serving`, the task of one client connection from `peer`, in the client's span.
    /// Debug level, as a request's own span is: a span at info is entered and left each time
    /// its connection is polled, which cost a small hit a fifteenth of its time (BENCHMARKS.md),
    /// and the lines logged at info name the client or what they are about themselves.
    pub fn spawn_client<F: Future<Output = ()> + Send + 'static>(
        &self,
        peer: SocketAddr,
        serving: F,
    ) {
        self.spawn(serving.instrument(debug_span!("client", %peer)));
    }

    /// Accepts clients until the future is dropped; hands each connection to `take`.
    pub async fn accept(
        &self,
        listener: TcpListener,
        take: impl Fn(tokio::net::TcpStream, SocketAddr),
    ) {
        loop {
            self.keep_reserve();
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if let Some(hidden) = self.inner.accept_trouble.succeeded() {
                        info!(hidden, "accepting clients again");
                    }
                    take(stream, peer);
                }
                Err(error) => {
                    let closed = self.close_oldest_idle(CLOSE_ON_EXHAUSTION);
                    if let Some(hidden) = self.inner.accept_trouble.failed() {
                        warn!(error = %error, closed_idle = closed, hidden, "accept failed");
                    }
                    if closed == 0 {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }
    }

    /// Closes the oldest idle connections while fewer descriptors than the reserve are left.
    fn keep_reserve(&self) {
        let (Some(limit), Some(reserve)) =
            (self.inner.limits.descriptors, self.inner.limits.reserve())
        else {
            return;
        };
        let open = self.open_count() as u64;
        // Counting every descriptor costs a directory listing: only near the limit.
        if open < limit / 2 {
            return;
        }
        let used = open_descriptors().unwrap_or(open);
        if used + reserve >= limit {
            let excess = (used + reserve + 1 - limit) as usize;
            self.close_oldest_idle(excess);
        }
    }

    /// Client connections open now.
    pub fn open_count(&self) -> usize {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Asks up to `count` connections with nothing in flight, the longest quiet first, to
    /// close; returns how many.
    fn close_oldest_idle(&self, count: usize) -> usize {
        let open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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

    /// Serves HTTP/1.1 or HTTP/2 on `io` with `handler` until the client leaves, goes idle,
    /// is closed to free a descriptor, or shutdown ends it.
    ///
    /// Boxed: an intercepted tunnel is served through this same function from inside a
    /// request, so the future's type would otherwise contain itself.
    pub fn serve<I, H, F>(&self, io: I, handler: H) -> Pin<Box<dyn Future<Output = ()> + Send>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let this = self.clone();
        Box::pin(async move {
            // HTTP/2 runs each request as its own task: it is put back in the client's span.
            let connection_span = tracing::Span::current();
            let (id, activity, close) = this.register();
            let io = Tracked {
                inner: io,
                activity: activity.clone(),
                epoch: this.inner.epoch,
            };
            let handler = Arc::new(handler);
            let counted = activity.clone();
            let service = service_fn(move |request| {
                let guard = InFlight::enter(counted.clone());
                let answer = handler(request).instrument(connection_span.clone());
                async move {
                    let response = answer.await;
                    let guarded = response.map(|body| {
                        GuardedBody {
                            body,
                            _guard: guard,
                        }
                        .boxed()
                    });
                    Ok::<_, Infallible>(guarded)
                }
            });
            let limits = this.inner.limits;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEADER_BYTES);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(MAX_HEADER_BYTES as u32);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(connection);
            let idle = this.idle(&activity);
            tokio::pin!(idle);
            let why = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(error = %error, "connection ended with an error");
                    }
                    None
                }
                () = this.inner.tasks.stopping() => Some("shutdown"),
                () = close.cancelled() => Some("descriptors short"),
                () = &mut idle => Some("idle"),
            };
            if let Some(why) = why {
                if why == "idle" {
                    this.inner.stats.clients_closed_idle.inc();
                }
                debug!(why, "closing the connection");
                connection.as_mut().graceful_shutdown();
                let grace = if why == "shutdown" {
                    None
                } else {
                    Some(CLOSE_GRACE)
                };
                match grace {
                    None => {
                        let _ = connection.await;
                    }
                    Some(grace) => {
                        let _ = tokio::time::timeout(grace, connection).await;
                    }
                }
            }
            this.unregister(id);
        })
    }

    /// Waits for `first` (a new client's first bytes), the connection registered as idle
    /// meanwhile: the idle limit, closing to free a descriptor or shutdown end the wait
    /// (`None`), as they would end an HTTP connection that sent nothing yet.
    pub async fn before_first_bytes<F: Future>(&self, first: F) -> Option<F::Output> {
        let (id, activity, close) = self.register();
        let waited = tokio::select! {
            out = first => Some(out),
            () = self.inner.tasks.stopping() => None,
            () = close.cancelled() => None,
            () = self.idle(&activity) => {
                self.inner.stats.clients_closed_idle.inc();
                None
            }
        };
        self.unregister(id);
        waited
    }

    /// Resolves once the connection has had nothing in flight and moved no byte for the idle
    /// limit.
    async fn idle(&self, activity: &Activity) {
        let limit = self.inner.limits.idle_timeout;
        loop {
            let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
            tokio::time::sleep_until(self.inner.epoch + last + limit).await;
            let quiet = activity.last_ms.load(Ordering::Relaxed) == last.as_millis() as u64;
            if quiet && activity.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            if quiet {
                // A request in flight waits for its origin, bounded by the upstream timeouts;
                // look again a full period later.
                activity.last_ms.store(self.now_ms(), Ordering::Relaxed);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn register(&self) -> (u64, Arc<Activity>, CancellationToken) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(self.now_ms(), Ordering::Relaxed);
        let close = CancellationToken::new();
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Registered {
                    activity: activity.clone(),
                    close: close.clone(),
                },
            );
        self.inner.stats.clients_open.inc();
        (id, activity, close)
    }

    fn unregister(&self, id: u64) {
        let removed = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if removed.is_some() {
            self.inner.stats.clients_open.dec();
        }
    }
}
