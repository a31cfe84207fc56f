//! Write batching for the gRPC listener's connections.
//!
//! HTTP/2 (h2, under tonic) answers each finished call with its own flush, so under load a
//! connection makes one `writev` per reply: on loopback or a LAN each is a trip through the
//! TCP stack and a wake-up of the peer, for ~200 bytes. [`BatchedIo`] keeps the bytes of a
//! flush and, while other calls are in flight, yields once to the runtime before it writes
//! them: the calls that finish meanwhile (tasks already queued behind the connection) add
//! their replies, and one `write` carries them all. No timer and no wait: the connection task
//! goes to the back of its worker's queue and writes when it comes round again. A connection
//! of a lone caller (nothing else in flight) writes at once, as before.
//!
//! Under TLS the wrapper sits below the TLS stream, so it batches whole records.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::security::Security;

/// Most bytes kept for a flush; a write that would pass it sends what is kept first, and a
/// write this large goes straight through (the buffer never grows past it).
const HIGH_WATER: usize = 64 << 10;

/// A connection whose replies are batched (see the module docs).
pub struct BatchedIo<S> {
    inner: S,
    /// Counts the calls in flight; `None`: no batching, every write goes straight through.
    calls: Option<Arc<Security>>,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    written: usize,
    /// The flush under way has yielded once.
    yielded: bool,
}

impl<S> BatchedIo<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Wraps `inner`; `calls` (the daemon's in-flight count) turns batching on.
    pub fn new(inner: S, calls: Option<Arc<Security>>) -> Self {
        BatchedIo {
            inner,
            calls,
            buf: Vec::new(),
            written: 0,
            yielded: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> BatchedIo<S> {
    /// Writes out the whole buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.calls.is_none() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.len() + len > HIGH_WATER {
            // Large replies (exports, big pages) are not copied: what is kept goes first.
            ready!(this.poll_drain(cx))?;
            if len >= HIGH_WATER {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        let mut n = 0;
        for b in bufs {
            this.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        // Slices are gathered into the buffer (or passed on, unbatched).
        self.calls.is_some() || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            let others = this.calls.as_ref().is_some_and(|c| c.calls_in_flight() > 0);
            if others && !this.yielded {
                // Woken while it runs, the task goes to the back of its worker's queue.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for BatchedIo<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(Default::default()));
        (c.clone(), Waker::from(c))
    }

    fn write(io: &mut BatchedIo<tokio::io::DuplexStream>, cx: &mut Context<'_>, b: &[u8]) {
        assert!(matches!(Pin::new(io).poll_write(cx, b), Poll::Ready(Ok(n)) if n == b.len()));
    }

    /// Bytes the peer can read now, without waiting.
    fn readable(peer: &mut tokio::io::DuplexStream, cx: &mut Context<'_>) -> Vec<u8> {
        let mut out = vec![0; 1 << 20];
        let mut rb = ReadBuf::new(&mut out);
        match Pin::new(peer).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => rb.filled().to_vec(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_flush_with_calls_in_flight_yields_once_and_then_writes_everything_at_once() {
        let security = Security::open();
        let _call = security.enter().unwrap();
        let (a, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = BatchedIo::new(a, Some(security.clone()));
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);

        write(&mut io, &mut cx, b"first reply;");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert_eq!(
            count.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "woke itself"
        );
        assert!(
            readable(&mut peer, &mut cx).is_empty(),
            "nothing written yet"
        );

        // Another call's reply joins before the connection comes round again.
        write(&mut io, &mut cx, b"second reply");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(readable(&mut peer, &mut cx), b"first reply;second reply");

        // The next flush yields again.
        write(&mut io, &mut cx, b"third");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert_eq!(readable(&mut peer, &mut cx), b"third");
    }

    #[tokio::test]
    async fn a_lone_call_and_an_unbatched_connection_write_at_once() {
        let security = Security::open();
        for calls in [Some(security.clone()), None] {
            let (a, mut peer) = tokio::io::duplex(1 << 20);
            let mut io = BatchedIo::new(a, calls);
            let (count, w) = waker();
            let mut cx = Context::from_waker(&w);
            write(&mut io, &mut cx, b"reply");
            assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
            assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 0);
            assert_eq!(readable(&mut peer, &mut cx), b"reply");
        }
    }

    #[tokio::test]
    async fn every_byte_arrives_in_order_through_a_narrow_pipe() {
        let security = Security::open();
        let _call = security.enter().unwrap();
        // A 1 KiB pipe: writes to it are partial and wait for the reader.
        let (a, mut peer) = tokio::io::duplex(1024);
        let mut io = BatchedIo::new(a, Some(security.clone()));
        let data: Vec<u8> = (0..(3 * HIGH_WATER + 777))
            .map(|i| (i % 251) as u8)
            .collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        // Small writes that gather, and writes past the high-water mark that go straight through.
        let (small, large) = data.split_at(data.len() / 2);
        for chunk in small.chunks(5000).chain(large.chunks(HIGH_WATER + 10)) {
            io.write_all(chunk).await.unwrap();
            if chunk[0] % 3 == 0 {
                io.flush().await.unwrap();
            }
        }
        io.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
    }
}
