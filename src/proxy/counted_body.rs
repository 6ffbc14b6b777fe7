//! An origin body whose bytes are counted as they arrive: from origins, and through an
//! upstream proxy.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;

use crate::stats::Stats;

/// An origin body whose bytes are counted as they arrive.
pub(crate) struct CountedBody {
    inner: Incoming,
    stats: Arc<Stats>,
    /// Whether the bytes came through the upstream proxy.
    chained: bool,
}

impl CountedBody {
    pub(crate) fn new(inner: Incoming, stats: Arc<Stats>, chained: bool) -> CountedBody {
        CountedBody {
            inner,
            stats,
            chained,
        }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.stats.bytes_from_upstream.add(data.len() as u64);
                if self.chained {
                    self.stats.bytes_via_upstream_proxy.add(data.len() as u64);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
