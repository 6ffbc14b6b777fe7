//! A response body that keeps a bounded copy of what passes to the client and hands it on
//! once the body ends or the bound is reached. The client's bytes are never held back.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// What is done with the copy.
type Sink = Box<dyn FnOnce(Bytes) + Send + Sync>;

/// A body copied, up to `limit` bytes, into `sink`.
pub struct TapBody {
    inner: ProxyBody,
    copy: BytesMut,
    limit: usize,
    sink: Option<Sink>,
}

impl TapBody {
    /// Wraps `inner`; `sink` gets the first `limit` bytes once they passed or the body ended.
    pub fn new(
        inner: ProxyBody,
        limit: usize,
        sink: impl FnOnce(Bytes) + Send + Sync + 'static,
    ) -> TapBody {
        TapBody {
            inner,
            copy: BytesMut::new(),
            limit,
            sink: Some(Box::new(sink)),
        }
    }

    fn hand_on(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink(std::mem::take(&mut self.copy).freeze());
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if self.sink.is_some() {
                        let room = self.limit.saturating_sub(self.copy.len());
                        let take = room.min(data.len());
                        self.copy.extend_from_slice(&data[..take]);
                        // The last frame may be the last poll: servers stop polling a body
                        // that says it has ended.
                        if self.copy.len() >= self.limit || self.inner.is_end_stream() {
                            self.hand_on();
                        }
                    }
                }
            }
            Poll::Ready(None) => self.hand_on(),
            // A broken body is not scanned: what it refers to may be cut anywhere.
            Poll::Ready(Some(Err(_))) => self.sink = None,
            Poll::Pending => {}
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
