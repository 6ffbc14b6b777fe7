//! `TeeBody`: streams an origin body to the client while keeping it for the cache. Only a
//! clean end, with as many bytes as announced, is committed. A body past `SPILL_AT` goes to a
//! temp file in the cache directory as it arrives instead of staying in memory. If the client
//! goes away first, the rest of the body is still read in the background so the fill (and the
//! requests waiting on it) completes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tracing::debug;

use crate::cache::disk::spill::{Spill, SPILL_AT};
use crate::cache::inflight::{FillOutcome, FillPermit};

use crate::cache::pending::PendingGuard;
use crate::cache::store::{FillPlan, Put};
use crate::cache::tiers::Tiers;

/// An origin body on its way to the client and into the cache.
pub struct TeeBody<B: Body<Data = Bytes> + Unpin + Send + 'static> {
    inner: Option<B>,
    fill: Option<Collector>,
}

/// Where the body is kept while it arrives.
enum Kept {
    Memory(BytesMut),
    Disk(Spill),
}

struct Collector {
    cache: Arc<Tiers>,
    pending: PendingGuard,
    permit: FillPermit,
    plan: FillPlan,
    kept: Kept,
    received: u64,
    expected: Option<u64>,
    max: u64,
}

impl Collector {
    /// Ready for the next chunk: a spill's channel has room. `Err` when the spill failed.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        match &mut self.kept {
            Kept::Memory(_) => Poll::Ready(Ok(())),
            Kept::Disk(spill) => spill.poll_ready(cx),
        }
    }

    async fn ready(&mut self) -> Result<(), ()> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Adds a chunk (after `poll_ready`); `false` when the body grew past the limit or the
    /// spill failed.
    fn push(&mut self, chunk: &Bytes) -> bool {
        self.received += chunk.len() as u64;
        if self.received > self.max {
            return false;
        }
        match &mut self.kept {
            Kept::Memory(buffer) if self.received > SPILL_AT => {
                buffer.extend_from_slice(chunk);
                let first = std::mem::take(buffer).freeze();
                self.kept = Kept::Disk(Spill::start(&self.cache.spill_dir(), first));
                true
            }
            Kept::Memory(buffer) => {
                buffer.extend_from_slice(chunk);
                true
            }
            Kept::Disk(spill) => spill.send(chunk.clone()),
        }
    }

    fn finish(self) {
        if self
            .expected
            .is_some_and(|expected| expected != self.received)
        {
            debug!(received = self.received, expected = ?self.expected, "origin body ended short; not stored");
            return; // Dropping the permit abandons the fill.
        }
        match self.kept {
            Kept::Memory(buffer) => {
                let body = Put::Fetched(self.plan, buffer.freeze());
                self.cache.put(self.permit, body);
            }
            Kept::Disk(spill) => {
                let (cache, permit, plan, pending) =
                    (self.cache, self.permit, self.plan, self.pending);
                tokio::spawn(async move {
                    match spill.finish().await {
                        Ok(spilled) => cache.put(permit, Put::Spilled(plan, spilled)),
                        Err(e) => cache.spill_failed(&e),
                    }
                    drop(pending);
                });
            }
        }
    }
}

impl<B> TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    /// Wraps `inner`; the body is committed under `permit` when it ends cleanly.
    pub(crate) fn new(
        inner: B,
        cache: Arc<Tiers>,
        permit: FillPermit,
        plan: FillPlan,
        expected: Option<u64>,
    ) -> Self {
        let max = cache.config.max_object_bytes;
        // While the disk writer is behind, a body goes to disk as it arrives, whatever its
        // size: the disk sets the pace of new fills, and no entry is left unwritten.
        let kept = if cache.writer.is_congested() {
            Kept::Disk(Spill::start(&cache.spill_dir(), Bytes::new()))
        } else {
            let capacity = expected
                .filter(|len| *len <= max.min(SPILL_AT))
                .unwrap_or(0) as usize;
            Kept::Memory(BytesMut::with_capacity(capacity))
        };
        TeeBody {
            inner: Some(inner),
            fill: Some(Collector {
                pending: cache.pending(),
                cache,
                permit,
                plan,
                kept,
                received: 0,
                expected,
                max,
            }),
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // A spill that cannot take more holds back the origin's body, not the other way.
        if let Some(fill) = this.fill.as_mut() {
            match fill.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(())) => this.fill = None,
                Poll::Ready(Ok(())) => {}
            }
        }
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    if this.fill.as_mut().is_some_and(|fill| !fill.push(chunk)) {
                        if let Some(fill) = this.fill.take() {
                            fill.permit.complete(FillOutcome::NotStorable);
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.fill = None;
                this.inner = None;
            }
            Poll::Ready(None) => {
                if let Some(fill) = this.fill.take() {
                    fill.finish();
                }
                this.inner = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

impl<B: Body<Data = Bytes> + Unpin + Send + 'static> Drop for TeeBody<B> {
    fn drop(&mut self) {
        let (Some(inner), Some(fill)) = (self.inner.take(), self.fill.take()) else {
            return;
        };
        // The client left mid-body: finish the fill in the background, as long as followers
        // would wait for it.
        let limit = fill.cache.config.coalesce_wait;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(tokio::time::timeout(limit, drain(inner, fill)));
        }
    }
}

async fn drain<B: Body<Data = Bytes> + Unpin>(mut inner: B, mut fill: Collector) {
    loop {
        if fill.ready().await.is_err() {
            return;
        }
        let Some(frame) = inner.frame().await else {
            break;
        };
        let Ok(frame) = frame else { return };
        if let Some(chunk) = frame.data_ref() {
            if !fill.push(chunk) {
                fill.permit.complete(FillOutcome::NotStorable);
                return;
            }
        }
    }
    fill.finish();
}
