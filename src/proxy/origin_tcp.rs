//! What the proxy's connections to origins and upstream proxies carry: `OriginTcp`, a TCP
//! connection that counts its bytes, both ways, against the upstream proxy it goes through
//! (from the first byte of the handshake: what the pipe bills), and each upstream's counters
//! and figures.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What went through one upstream proxy.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// Requests and tunnels sent through it.
    pub requests: AtomicU64,
    /// Bytes written to its connections (handshakes included).
    pub bytes_sent: AtomicU64,
    /// Bytes read from its connections (handshakes included).
    pub bytes_received: AtomicU64,
    /// Body bytes of cache hits for URLs that would have been fetched through it: what the
    /// cache kept off it.
    pub bytes_kept_off: AtomicU64,
}

/// One upstream's figures, as `/stats` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamFigures {
    /// The name rules and stats know it by.
    pub name: String,
    /// Its URL, without credentials.
    pub url: String,
    /// Requests and tunnels sent through it.
    pub requests: u64,
    /// Bytes written to it.
    pub bytes_sent: u64,
    /// Bytes read from it.
    pub bytes_received: u64,
    /// Body bytes cache hits kept off it.
    pub bytes_kept_off: u64,
}

/// A TCP connection to an origin or an upstream proxy; one through an upstream proxy counts
/// the bytes it carries against it.
pub struct OriginTcp {
    inner: TcpStream,
    counters: Option<Arc<UpstreamCounters>>,
}

impl OriginTcp {
    /// A direct connection, counted against nothing.
    pub fn direct(inner: TcpStream) -> OriginTcp {
        OriginTcp {
            inner,
            counters: None,
        }
    }

    /// A connection to an upstream proxy, counted against it.
    pub fn counted(inner: TcpStream, counters: Arc<UpstreamCounters>) -> OriginTcp {
        OriginTcp {
            inner,
            counters: Some(counters),
        }
    }
}

impl AsyncRead for OriginTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Some(counters), Poll::Ready(Ok(()))) = (&self.counters, &polled) {
            let read = buf.filled().len() - before;
            counters
                .bytes_received
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for OriginTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl OriginTcp {
    fn count_written(&self, polled: &Poll<io::Result<usize>>) {
        if let (Some(counters), Poll::Ready(Ok(written))) = (&self.counters, polled) {
            counters
                .bytes_sent
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
    }
}

impl Connection for OriginTcp {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}
