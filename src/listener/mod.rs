//! Client connections: the accept loop, serving HTTP/1.1 and HTTP/2 on each connection (plain
//! TCP, or TLS inside an intercepted tunnel), one task and tracing span per client, deadlines
//! for every phase, the descriptor reserve, and graceful shutdown of all of them.
//!
//! Every connection is registered in `OpenConnections` while it is served, with when bytes last
//! moved on it and how many requests it has in flight. One with nothing in flight that moves no
//! byte for `clients.idle_timeout_secs` is closed, whatever phase it is in (before its first
//! request, between requests, an idle HTTP/2 connection, a TLS tunnel with no request). When
//! the proxy runs short of file descriptors it closes its longest quiet connections and relays
//! first, so a new client is served at once.

mod activity;
pub mod front;
mod limits;
pub mod per_core;
pub mod socks;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::body::ProxyBody;
use crate::open_connections::OpenConnections;
use crate::stats::Stats;
use crate::tasks::Tasks;
use crate::trouble::Trouble;
use activity::{GuardedBody, InFlight};
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
    /// The connections served here, and the relays others registered.
    open: OpenConnections,
    stats: Arc<Stats>,
    accept_trouble: Trouble,
}

impl Connections {
    /// No connections yet; their tasks run among `tasks`, each registered in `open`.
    pub fn new(
        limits: ConnectionLimits,
        tasks: Tasks,
        open: OpenConnections,
        stats: Arc<Stats>,
    ) -> Connections {
        Connections {
            inner: Arc::new(Shared {
                tasks,
                limits,
                open,
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
                    let closed = self.inner.open.close_quietest(CLOSE_ON_EXHAUSTION);
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

    /// Closes the longest quiet connections while fewer descriptors than the reserve are left.
    fn keep_reserve(&self) {
        let (Some(limit), Some(reserve)) =
            (self.inner.limits.descriptors, self.inner.limits.reserve())
        else {
            return;
        };
        let held = self.inner.open.descriptors();
        // Counting every descriptor costs a directory listing: only near the limit.
        if held < limit / 2 {
            return;
        }
        let used = open_descriptors().unwrap_or(held);
        if used + reserve >= limit {
            let excess = (used + reserve + 1 - limit) as usize;
            self.inner.open.close_quietest(excess);
        }
    }

    /// Client connections and relays open now.
    pub fn open_count(&self) -> usize {
        self.inner.open.count()
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
            let registration = this.inner.open.register(1);
            let io = registration.track(io);
            let handler = Arc::new(handler);
            let counted = registration.activity().clone();
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
            let idle = registration.quiet_for(limits.idle_timeout);
            tokio::pin!(idle);
            let why = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(error = %error, "connection ended with an error");
                    }
                    None
                }
                () = this.inner.tasks.stopping() => Some("shutdown"),
                () = registration.close_requested() => Some("descriptors short"),
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
        })
    }

    /// Waits for `first` (a new client's first bytes), the connection registered as idle
    /// meanwhile: the idle limit, closing to free a descriptor or shutdown end the wait
    /// (`None`), as they would end an HTTP connection that sent nothing yet.
    pub async fn before_first_bytes<F: Future>(&self, first: F) -> Option<F::Output> {
        let registration = self.inner.open.register(1);
        tokio::select! {
            out = first => Some(out),
            () = self.inner.tasks.stopping() => None,
            () = registration.close_requested() => None,
            () = registration.quiet_for(self.inner.limits.idle_timeout) => {
                self.inner.stats.clients_closed_idle.inc();
                None
            }
        }
    }
}
