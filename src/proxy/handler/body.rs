//! Bodies that count: the request body's bytes for `received_bytes`, and the response
//! body that writes the access-log line once it is sent (or dropped).

use super::*;

pub(super) struct PendingLog {
    pub(super) rec: AccessRecord,
    pub(super) dp: Arc<DataPlane>,
    pub(super) received_bytes: Arc<AtomicU64>,
}

/// The response body, counting what it sends; writes the access-log line when it
/// ends or is dropped (client gone), so `sent_bytes` and `time` are final.
pub(super) struct LoggedBody {
    pub(super) inner: Body,
    pub(super) sent: u64,
    pub(super) pending: Option<PendingLog>,
}

impl LoggedBody {
    fn write_log(&mut self) {
        if let Some(PendingLog {
            mut rec,
            dp,
            received_bytes,
        }) = self.pending.take()
        {
            rec.time = timestamp(jiff::Timestamp::now());
            rec.sent_bytes = self.sent;
            rec.received_bytes = received_bytes.load(Ordering::Relaxed);
            if !dp.log.write(&rec) {
                dp.metrics.access_log_dropped.inc();
            }
        }
    }
}

impl HttpBody for LoggedBody {
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
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.write_log(),
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

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.write_log();
    }
}

/// The request body on its way upstream, streamed, with its size counted.
pub(super) struct CountingBody {
    pub(super) inner: Incoming,
    pub(super) count: Arc<AtomicU64>,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
