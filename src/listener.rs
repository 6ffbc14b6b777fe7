//! Client connections: the accept loop, serving HTTP/1.1 and HTTP/2 on each connection (plain
//! TCP, or TLS inside an intercepted tunnel), one task and tracing span per client, and
//! graceful shutdown of all of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

use crate::proxy::{Context, ProxyService};

/// Largest request head a client may send; a larger one gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Every task serving a client, so shutdown can ask them to finish and wait for them.
#[derive(Clone)]
pub struct Connections {
    tracker: TaskTracker,
    stopping: CancellationToken,
    /// A client that has not sent its request headers within this time is disconnected.
    header_timeout: Duration,
}

impl Connections {
    /// No connections yet; clients get `header_timeout` to send their request headers.
    pub fn new(header_timeout: Duration) -> Connections {
        Connections {
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            header_timeout,
        }
    }

    /// Runs `task` as part of serving clients.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.tracker.spawn(task);
    }

    /// Accepts clients until the future is dropped.
    pub async fn accept(&self, listener: TcpListener, ctx: Arc<Context>) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let service = ProxyService::new(ctx.clone());
                    let connections = self.clone();
                    let span = info_span!("client", %peer);
                    self.spawn(
                        async move { connections.serve(stream, service).await }.instrument(span),
                    );
                }
                Err(error) => {
                    warn!(error = %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on `io` until the client leaves or shutdown ends it.
    ///
    /// Boxed: an intercepted tunnel is served through this same function from inside a
    /// request, so the future's type would otherwise contain itself.
    pub fn serve<I>(&self, io: I, service: ProxyService) -> Pin<Box<dyn Future<Output = ()> + Send>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stopping = self.stopping.clone();
        let header_timeout = self.header_timeout;
        Box::pin(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BYTES);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(MAX_HEADER_BYTES as u32);
            let handler = service_fn(move |request| service.clone().handle(request));
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), handler);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(error = %error, "connection ended with an error");
                    }
                }
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        })
    }

    /// Asks every connection to finish its requests, and waits up to `grace` for them.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stopping.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
