//! Client connections served by threads of their own, one per core by default, each with a
//! single-threaded runtime: a connection, and everything it spawns, stays on the thread that
//! serves it. A work-stealing runtime moves tasks between cores, and on a busy proxy that
//! costs more (wakeups across cores, cache lines moving) than it balances.
//!
//! Every thread accepts from the same listening socket and serves what it accepts, unless it
//! already serves more than another thread does: then it hands the connection over to the
//! thread serving the fewest. The kernel alone would give a burst of connections mostly to
//! whichever thread was idle, and a keep-alive client would load that one core for as long as
//! it stays; handing over every connection instead would cost a wakeup on another thread per
//! connection, which a client opening one connection per request pays on every request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use super::Connections;

/// How long a serving thread's runtime waits for its blocking tasks once the proxy stopped.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// What serves one connection, from the client at its address.
pub type Serve = Box<
    dyn Fn(TcpStream, SocketAddr, Connections) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send,
>;

/// A connection handed from one serving thread to another.
type HandedOver = (std::net::TcpStream, SocketAddr);

/// How many serving threads `configured` asks for: 0 means one per core this process may use.
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The serving threads of a running proxy.
pub struct ServingThreads {
    threads: Vec<JoinHandle<()>>,
    finished: CancellationToken,
}

impl ServingThreads {
    /// Starts `count` threads accepting from `listener`, each serving with what `serve` makes
    /// for it, until `connections` is told to stop. Their runtimes keep running after that, for
    /// the connections and cache writes still going, until `finish`.
    pub fn start(
        listener: TcpListener,
        count: usize,
        connections: &Connections,
        serve: impl Fn() -> Serve,
    ) -> std::io::Result<ServingThreads> {
        let listener = listener.into_std()?;
        let count = count.max(1);
        let (handed, arrivals): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let lanes = Arc::new(Lanes {
            handed,
            loads: connections.stats().thread_loads.start(count),
        });
        let finished = CancellationToken::new();
        let span = tracing::Span::current();
        let mut threads = Vec::with_capacity(count);
        for (here, arrivals) in arrivals.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(crate::log_lines::write_held)
                .build()?;
            let thread = ServingThread {
                here,
                lanes: lanes.clone(),
                connections: connections.clone(),
                serve: serve(),
            };
            let listener = listener.try_clone()?;
            let (finished, span) = (finished.clone(), span.clone());
            let handle = std::thread::Builder::new()
                .name(format!("serve-{here}"))
                .spawn(move || {
                    crate::log_lines::hold_on_this_thread();
                    runtime.block_on(
                        async {
                            thread.run(listener, arrivals).await;
                            finished.cancelled().await;
                        }
                        .instrument(span),
                    );
                    runtime.shutdown_timeout(BLOCKING_GRACE);
                    crate::log_lines::write_held();
                })?;
            threads.push(handle);
        }
        Ok(ServingThreads { threads, finished })
    }

    /// Ends the threads once the proxy has stopped (what their runtimes still run is
    /// dropped), and waits for them.
    pub async fn finish(self) {
        self.finished.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// The serving threads' ways in: connections handed to each, and how many each serves now.
struct Lanes {
    handed: Vec<mpsc::UnboundedSender<HandedOver>>,
    loads: Arc<[AtomicUsize]>,
}

impl Lanes {
    /// The thread to hand a connection accepted by thread `here` to: the one serving the
    /// fewest, when it serves at least two fewer than `here` does.
    fn elsewhere(&self, here: usize) -> Option<usize> {
        let loads: Vec<usize> = self
            .loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect();
        least_loaded_other(&loads, here)
    }
}

/// The pure rule of `Lanes::elsewhere`.
fn least_loaded_other(loads: &[usize], here: usize) -> Option<usize> {
    let mine = *loads.get(here)?;
    (0..loads.len())
        .filter(|&other| loads[other] + 1 < mine)
        .min_by_key(|&other| loads[other])
}

/// What one serving thread runs.
struct ServingThread {
    here: usize,
    lanes: Arc<Lanes>,
    connections: Connections,
    serve: Serve,
}

impl ServingThread {
    /// Accepts from `listener` and takes what other threads hand over, until shutdown begins.
    async fn run(
        &self,
        listener: std::net::TcpListener,
        mut arrivals: mpsc::UnboundedReceiver<HandedOver>,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => return warn!(error = %error, "a serving thread cannot listen"),
        };
        let accepting = self
            .connections
            .accept(listener, |stream, peer| self.place(stream, peer));
        let taking = async {
            while let Some((stream, peer)) = arrivals.recv().await {
                match TcpStream::from_std(stream) {
                    Ok(stream) => self.serve_here(stream, peer),
                    Err(error) => {
                        self.lanes.loads[self.here].fetch_sub(1, Ordering::Relaxed);
                        warn!(error = %error, %peer, "cannot serve a connection handed over");
                    }
                }
            }
        };
        tokio::select! {
            () = accepting => {}
            () = taking => {}
            () = self.connections.stopping() => {}
        }
    }

    /// Serves an accepted connection here, or hands it to the thread serving the fewest when
    /// that one serves at least two fewer than this one.
    fn place(&self, stream: TcpStream, peer: SocketAddr) {
        let loads = &self.lanes.loads;
        let Some(other) = self.lanes.elsewhere(self.here) else {
            loads[self.here].fetch_add(1, Ordering::Relaxed);
            return self.serve_here(stream, peer);
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => return warn!(error = %error, %peer, "cannot hand over a connection"),
        };
        loads[other].fetch_add(1, Ordering::Relaxed);
        if let Err(refused) = self.lanes.handed[other].send((stream, peer)) {
            loads[other].fetch_sub(1, Ordering::Relaxed);
            // The other thread is gone (shutdown began): the connection is dropped, as
            // the accept loops are about to stop.
            drop(refused);
        }
    }

    /// Serves a connection on this thread; it was counted in this thread's load already.
    fn serve_here(&self, stream: TcpStream, peer: SocketAddr) {
        let served = Served(self.lanes.loads.clone(), self.here);
        let serving = (self.serve)(stream, peer, self.connections.clone());
        self.connections.spawn_client(peer, async move {
            serving.await;
            drop(served);
        });
    }
}

/// Counts a connection off its thread's load when its task ends, however it ends.
struct Served(Arc<[AtomicUsize]>, usize);

impl Drop for Served {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::least_loaded_other;

    #[test]
    fn a_connection_moves_only_to_a_thread_serving_two_fewer() {
        let cases: [(&[usize], usize, Option<usize>); 7] = [
            (&[0], 0, None),
            (&[1, 0], 0, None),
            (&[2, 0], 0, Some(1)),
            (&[0, 2], 0, None),
            (&[5, 4, 3], 0, Some(2)),
            (&[5, 3, 3], 0, Some(1)),
            (&[4, 9, 3], 1, Some(2)),
        ];
        for (loads, here, expected) in cases {
            assert_eq!(
                least_loaded_other(loads, here),
                expected,
                "{loads:?} at {here}"
            );
        }
    }
}
