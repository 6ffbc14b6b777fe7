//! The one log line per request: `LoggedBody` counts the bytes sent and logs when the response
//! body is finished or abandoned, so the line carries the real size and duration.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tracing::info;

use super::headers::CacheStatus;
use crate::body::{BoxError, ProxyBody};
use crate::loggable;
use crate::stats::Stats;

/// What the log line says besides bytes and time.
pub struct RequestSummary {
    /// Request method.
    pub method: Method,
    /// The absolute URL (the line shows it as `loggable::url` does).
    pub url: String,
    /// Response status.
    pub status: StatusCode,
    /// What the cache did.
    pub cache: CacheStatus,
    /// The asset identity (versioned URLs) or URL the bytes count for.
    pub asset: String,
    /// The namespace it was served in; `None` for the default one.
    pub namespace: Option<String>,
    /// The client's address, when it came over a socket.
    pub peer: Option<std::net::SocketAddr>,
    /// When the request arrived.
    pub started: Instant,
    /// Where latency and bytes served are recorded.
    pub stats: std::sync::Arc<Stats>,
}

/// A response body that logs its request when it is dropped.
pub struct LoggedBody {
    inner: ProxyBody,
    summary: RequestSummary,
    bytes: u64,
    complete: bool,
}

impl LoggedBody {
    /// Wraps `inner`.
    pub fn new(inner: ProxyBody, summary: RequestSummary) -> LoggedBody {
        LoggedBody {
            complete: inner.is_end_stream(),
            inner,
            summary,
            bytes: 0,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                self.bytes += len;
                // hyper stops polling once the body says it has ended.
                self.complete = self.inner.is_end_stream();
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let s = &self.summary;
        let elapsed = s.started.elapsed();
        let (hit, miss) = match s.cache {
            CacheStatus::Hit { .. }
            | CacheStatus::Stale { .. }
            | CacheStatus::Revalidated { .. } => {
                s.stats.latency_hits.observe(elapsed);
                (true, false)
            }
            CacheStatus::Miss { .. } => {
                s.stats.latency_misses.observe(elapsed);
                (false, true)
            }
            _ => (false, false),
        };
        s.stats
            .namespaces
            .count(s.namespace.as_deref(), hit, miss, self.bytes);
        if self.bytes > 0 {
            s.stats.activity.served(&s.asset, self.bytes);
        }
        info!(
            peer = s.peer.map(tracing::field::display),
            method = %s.method,
            url = %loggable::url(&s.url),
            status = s.status.as_u16(),
            cache = %s.cache.header_value(),
            bytes = self.bytes,
            ms = elapsed.as_millis() as u64,
            complete = self.complete,
            "request"
        );
    }
}
