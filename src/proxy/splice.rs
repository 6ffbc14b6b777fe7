//! Byte-for-byte relay between two streams: an upgraded connection (a WebSocket) or an opaque
//! tunnel. Each direction ends on its own (a half-close is passed on as a shutdown of the other
//! side's writing half); the relay ends when both have, when either side fails, when no byte
//! has moved either way for the idle limit, or when the proxy asks it to stop (shutdown, or
//! descriptors running short). Bytes are counted each way as they pass, so a relay ended early
//! still knows what was carried.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both sides finished sending.
    Closed,
    /// Nothing moved for the idle limit; the proxy closed both sides.
    Idle,
    /// A read or write failed (a reset, a broken TLS stream).
    Failed,
    /// The proxy asked it to stop: shutdown, or descriptors running short.
    Stopped,
}

impl SpliceEnd {
    /// The ending in the proxy's vocabulary (logs).
    pub fn as_str(self) -> &'static str {
        match self {
            SpliceEnd::Closed => "closed",
            SpliceEnd::Idle => "idle",
            SpliceEnd::Failed => "error",
            SpliceEnd::Stopped => "stopped",
        }
    }
}

/// What a relay carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// Bytes from the client to the origin.
    pub up: u64,
    /// Bytes from the origin to the client.
    pub down: u64,
    /// How it ended.
    pub end: SpliceEnd,
    /// How long it lasted.
    pub open: Duration,
}

/// Relays between `client` and `origin` as one of the proxy's open connections (two file
/// descriptors): counted in `clients.open`, closed at shutdown, and closed when descriptors run
/// short and it is among the longest quiet; `clients.websocket_idle_secs` is its idle limit.
pub async fn relay_registered<C, O>(ctx: &super::Context, client: C, origin: O) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
{
    let registration = ctx.open_connections.register(2);
    let stop = async {
        tokio::select! {
            () = registration.close_requested() => {}
            () = ctx.tasks.stopping() => {}
        }
    };
    let client = registration.track(client);
    splice(client, origin, ctx.config.clients.websocket_idle, stop).await
}

/// Relays between `client` and `origin` until both directions end, one fails, nothing moves
/// for `idle`, or `stop` resolves.
async fn splice<C, O, S>(client: C, origin: O, idle: Duration, stop: S) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    O: AsyncRead + AsyncWrite + Unpin,
    S: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let last_read_ms = Arc::new(AtomicU64::new(0));
    let mut client = Counted::new(client, started, last_read_ms.clone());
    let mut origin = Counted::new(origin, started, last_read_ms.clone());
    let end = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut origin);
        tokio::pin!(copy);
        tokio::pin!(stop);
        loop {
            let last = Duration::from_millis(last_read_ms.load(Ordering::Relaxed));
            tokio::select! {
                result = &mut copy => {
                    break if result.is_ok() { SpliceEnd::Closed } else { SpliceEnd::Failed };
                }
                () = &mut stop => break SpliceEnd::Stopped,
                () = tokio::time::sleep_until(started + last + idle) => {
                    // Bytes may have moved while this slept: only a full idle period ends it.
                    if last_read_ms.load(Ordering::Relaxed) == last.as_millis() as u64 {
                        break SpliceEnd::Idle;
                    }
                }
            }
        }
    };
    Spliced {
        up: client.read,
        down: origin.read,
        end,
        open: started.elapsed(),
    }
}

/// A stream that counts the bytes read from it and notes when the last ones arrived.
struct Counted<T> {
    inner: T,
    read: u64,
    started: Instant,
    last_read_ms: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    fn new(inner: T, started: Instant, last_read_ms: Arc<AtomicU64>) -> Counted<T> {
        Counted {
            inner,
            read: 0,
            started,
            last_read_ms,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            self.read += got as u64;
            let now = self.started.elapsed().as_millis() as u64;
            self.last_read_ms.fetch_max(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_closes_pass_through_and_bytes_are_counted() {
        let (mut client, client_side) = tokio::io::duplex(64);
        let (origin_side, mut origin) = tokio::io::duplex(64);
        let never = std::future::pending();
        let relay = tokio::spawn(splice(
            client_side,
            origin_side,
            Duration::from_secs(60),
            never,
        ));
        client.write_all(b"hello").await.expect("write");
        client.shutdown().await.expect("client done sending");
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.expect("origin reads");
        assert_eq!(got, b"hello", "the origin sees the client's end");
        origin
            .write_all(b"still here")
            .await
            .expect("origin answers");
        origin.shutdown().await.expect("origin done");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("client reads");
        assert_eq!(
            back, b"still here",
            "the other direction goes on after a half-close"
        );
        let spliced = relay.await.expect("relay");
        assert_eq!((spliced.up, spliced.down), (5, 10));
        assert_eq!(spliced.end, SpliceEnd::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_relay_is_closed_after_the_idle_limit() {
        let (mut client, client_side) = tokio::io::duplex(64);
        let (origin_side, _origin) = tokio::io::duplex(64);
        let never = std::future::pending();
        let relay = tokio::spawn(splice(
            client_side,
            origin_side,
            Duration::from_secs(30),
            never,
        ));
        client.write_all(b"x").await.expect("write");
        let spliced = relay.await.expect("relay");
        assert_eq!(spliced.end, SpliceEnd::Idle);
        assert!(spliced.open >= Duration::from_secs(30));
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    }
}
