//! A real SOCKS5 server — Debian's `microsocks`, with a user name and password — on a loopback
//! port, started by a test and killed by it; and a relay that counts what crosses it (put in
//! front of an upstream proxy, it sees exactly what the upstream sees); and SOCKS5 servers that
//! misbehave.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a relay saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    /// Bytes from the relay's clients to its target.
    pub up: AtomicU64,
    /// Bytes from the target back.
    pub down: AtomicU64,
    /// The first bytes each client sent (up to 512).
    pub openings: Mutex<Vec<Vec<u8>>>,
}

/// A TCP relay on loopback to `target`, counting connections and bytes.
pub struct CountingRelay {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingRelay {
    pub async fn start(target: SocketAddr) -> CountingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let seen = Arc::new(Seen::default());
        let counted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = counted.clone();
                seen.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let index = {
                        let mut openings = seen.openings.lock().expect("openings");
                        openings.push(Vec::new());
                        openings.len() - 1
                    };
                    let up = pump(client_read, server_write, seen.clone(), true, index);
                    let down = pump(server_read, client_write, seen.clone(), false, index);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        CountingRelay { addr, seen, task }
    }

    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Bytes both ways: (up, down).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.seen.up.load(Ordering::SeqCst),
            self.seen.down.load(Ordering::SeqCst),
        )
    }

    /// Whether any client's first bytes contain `needle`.
    pub fn opening_contains(&self, needle: &[u8]) -> bool {
        self.seen
            .openings
            .lock()
            .expect("openings")
            .iter()
            .any(|opening| opening.windows(needle.len()).any(|w| w == needle))
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Seen>,
    up: bool,
    index: usize,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let counter = if up { &seen.up } else { &seen.down };
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if up {
            let mut openings = seen.openings.lock().expect("openings");
            let opening = &mut openings[index];
            let room = 512usize.saturating_sub(opening.len());
            opening.extend_from_slice(&buffer[..n.min(room)]);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// microsocks on a loopback port, requiring `user`/`password`, with a counting relay in front.
pub struct SocksServer {
    child: Child,
    pub relay: CountingRelay,
}

impl Drop for SocksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SocksServer {
    pub async fn start(user: &str, password: &str) -> SocksServer {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", user, "-P", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("microsocks (apt-get install microsocks)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // It is ready once it accepts a connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "microsocks did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let relay = CountingRelay::start(addr).await;
        SocksServer { child, relay }
    }

    /// `scheme://user:password@relay` (the relay, so that what crosses is counted).
    pub fn url(&self, scheme: &str, user: &str, password: &str) -> String {
        format!("{scheme}://{user}:{password}@{}", self.relay.addr)
    }
}

/// How a fake SOCKS5 server misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BadSocks {
    /// Answers the greeting with an HTTP error page.
    Garbage,
    /// Accepts connections and never answers.
    Silent,
    /// Speaks SOCKS5 but answers every CONNECT with reply code 4 (host unreachable).
    HostUnreachable,
}

/// A SOCKS5 server that misbehaves as `mode` says.
pub struct BadSocksServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for BadSocksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BadSocksServer {
    pub async fn start(mode: BadSocks) -> BadSocksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 512];
                    let _ = client.read(&mut buffer).await;
                    match mode {
                        BadSocks::Silent => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        BadSocks::Garbage => {
                            let _ = client
                                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                                .await;
                        }
                        BadSocks::HostUnreachable => {
                            // No authentication, then: whatever was asked, host unreachable.
                            let _ = client.write_all(&[5, 0]).await;
                            let _ = client.read(&mut buffer).await;
                            let _ = client.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]).await;
                        }
                    }
                });
            }
        });
        BadSocksServer { addr, task }
    }
}
