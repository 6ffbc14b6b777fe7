//! Client connections served by threads of their own, one per core by default, each with a
//! single-threaded runtime: a connection, and everything it spawns, stays on the thread it
//! was handed to. A work-stealing runtime moves tasks between cores, and on a busy proxy that
//! costs more (wakeups across cores, cache lines moving) than it balances. The accept loop
//! hands each new connection to the thread serving the fewest; a kernel left to choose (threads
//! accepting from one socket, or `SO_REUSEPORT`) can give one thread most of a burst of
//! connections, and a keep-alive client then loads that core for as long as it stays.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use super::Connections;

/// How long a serving thread's runtime waits for its blocking tasks once the proxy stopped.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// What serves one connection.
pub type Serve =
    Box<dyn Fn(TcpStream, Connections) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A connection handed to a serving thread.
type HandedOver = (std::net::TcpStream, SocketAddr);

/// The serving threads of a running proxy.
pub struct ServingThreads {
    threads: Vec<ServingThread>,
    /// Where the search for the least loaded thread starts, so that ties take turns.
    next: AtomicUsize,
    finished: CancellationToken,
}

struct ServingThread {
    handed: mpsc::UnboundedSender<HandedOver>,
    /// Connections it serves now.
    load: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

/// How many serving threads `configured` asks for: 0 means one per core this process may use.
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl ServingThreads {
    /// Starts `count` threads, each serving what it is handed with what `serve` makes for it,
    /// until `connections` is told to stop. Their runtimes keep running after that, for the
    /// connections and cache writes still going, until `finish`.
    pub fn start(
        count: usize,
        connections: &Connections,
        serve: impl Fn() -> Serve,
    ) -> std::io::Result<ServingThreads> {
        let finished = CancellationToken::new();
        let span = tracing::Span::current();
        let mut threads = Vec::with_capacity(count);
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (handed, arrivals) = mpsc::unbounded_channel();
            let load = Arc::new(AtomicUsize::new(0));
            let serving = serve_handed(arrivals, connections.clone(), serve(), load.clone());
            let (finished_here, span) = (finished.clone(), span.clone());
            let thread = std::thread::Builder::new()
                .name(format!("serve-{n}"))
                .spawn(move || {
                    runtime.block_on(
                        async {
                            serving.await;
                            finished_here.cancelled().await;
                        }
                        .instrument(span),
                    );
                    runtime.shutdown_timeout(BLOCKING_GRACE);
                })?;
            threads.push(ServingThread {
                handed,
                load,
                thread,
            });
        }
        Ok(ServingThreads {
            threads,
            next: AtomicUsize::new(0),
            finished,
        })
    }

    /// Hands an accepted connection to the thread serving the fewest.
    pub fn hand_over(&self, stream: TcpStream, peer: SocketAddr) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.threads.len();
        let Some(thread) = (0..count)
            .map(|i| &self.threads[(start + i) % count])
            .min_by_key(|t| t.load.load(Ordering::Relaxed))
        else {
            return;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => return warn!(error = %error, %peer, "cannot hand over a connection"),
        };
        thread.load.fetch_add(1, Ordering::Relaxed);
        if thread.handed.send((stream, peer)).is_err() {
            thread.load.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends the threads once the proxy has stopped (what their runtimes still run is
    /// dropped), and waits for them.
    pub async fn finish(self) {
        self.finished.cancel();
        let threads: Vec<_> = self.threads.into_iter().map(|t| t.thread).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Serves the connections handed to this thread until shutdown begins.
async fn serve_handed(
    mut arrivals: mpsc::UnboundedReceiver<HandedOver>,
    connections: Connections,
    serve: Serve,
    load: Arc<AtomicUsize>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            handed = arrivals.recv() => match handed {
                Some(handed) => handed,
                None => return,
            },
            () = connections.stopping() => return,
        };
        let done = Served(load.clone());
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                let serving = serve(stream, connections.clone());
                connections.spawn_client(peer, async move {
                    serving.await;
                    drop(done);
                });
            }
            Err(error) => warn!(error = %error, %peer, "cannot serve a connection handed over"),
        }
    }
}

/// Counts a connection off its thread's load when its task ends, however it ends.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
