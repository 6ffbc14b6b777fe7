//! An origin body being stored that sends nothing for `upstream.body_timeout_secs` is given
//! up: the requests coalesced behind its fill would otherwise wait for it as long as the
//! origin holds the connection open, and a stalled fetch is never stored anyway.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// What a body given up ends with.
#[derive(Debug, thiserror::Error)]
#[error("the origin sent nothing of the body for {0:?}; given up")]
pub(crate) struct Stalled(Duration);

/// `inner`, ended with [`Stalled`] once it has sent nothing for `limit`.
pub(crate) struct StallLimited<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<B> StallLimited<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> StallLimited<B> {
        StallLimited {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// The body without the limit (one that is not stored, which may pause as it likes).
    pub(crate) fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> Body for StallLimited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + self.limit;
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(self.limit))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
