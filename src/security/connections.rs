//! Connection limits of a listener: at most `--max-connections` open connections on the gRPC
//! port and `--max-admin-connections` on the admin port, and a handshake deadline
//! (`--handshake-timeout`) for new ones.
//!
//! Without them a client could open connections and send nothing: each holds a socket and a
//! task for ever, and enough of them exhaust the daemon's file descriptors, which the journal
//! needs for its segments and snapshots. A connection over the limit is closed at once; one
//! that has not sent its first [`OPENING_BYTES`] within the deadline is closed then (its read
//! fails with `TimedOut`, which ends the HTTP/2 or TLS handshake). The TLS handshake as a whole
//! has the same deadline (set on the TLS acceptors by the listeners). An established
//! connection may stay idle: gRPC clients keep theirs open, and the limit bounds how many there
//! are.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a new connection must send within the handshake timeout: the length of the HTTP/2
/// connection preface. A TLS ClientHello and an HTTP/1.1 request (with its `Host` header) are
/// longer, so no real client is cut off, and a client that sends a byte or two and stalls is
/// closed like a silent one.
pub const OPENING_BYTES: usize = 24;

/// Why a connection was closed by the daemon before it was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The port had its most connections (`--max-connections`, `--max-admin-connections`) open.
    Limit,
    /// Not [`OPENING_BYTES`], or no finished TLS handshake, within `--handshake-timeout`.
    HandshakeTimeout,
}

impl Refusal {
    /// Every refusal, for the metric's label values.
    pub const ALL: [Refusal; 2] = [Refusal::Limit, Refusal::HandshakeTimeout];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// The open connections of one port and their limits.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// `grpc` or `admin`: the `port` label of the metrics.
    pub port: &'static str,
    max: usize,
    handshake_timeout: Duration,
    open: AtomicUsize,
    refused: [AtomicU64; 2],
}

impl ConnectionLimit {
    /// `port`'s limit of `max` open connections, new ones given `handshake_timeout`.
    pub fn new(port: &'static str, max: usize, handshake_timeout: Duration) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            port,
            max,
            handshake_timeout,
            open: AtomicUsize::new(0),
            refused: Default::default(),
        })
    }

    /// The deadline for a new connection's opening bytes and its TLS handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed for `why` since start.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Counts a connection closed for `why`.
    pub fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a slot for `stream`, or `None` (counted; dropping `stream` closes it) at the
    /// limit. The slot is given back when the returned stream drops.
    pub fn admit<S>(self: &Arc<Self>, stream: S) -> Option<Limited<S>> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.clone());
        if n >= self.max {
            self.refuse(Refusal::Limit);
            tracing::debug!(
                port = self.port,
                open = n,
                "connection refused: at the port's connection limit"
            );
            return None;
        }
        Some(Limited {
            slot,
            inner: stream,
            opening: Some(Opening {
                deadline: Box::pin(tokio::time::sleep(self.handshake_timeout)),
                missing: OPENING_BYTES,
            }),
        })
    }
}

/// File descriptors the daemon keeps for itself beyond its connections (journal segments and
/// snapshots, the data directory, the runtime, outgoing HTTP connections).
pub const RESERVED_FDS: u64 = 256;

/// Makes room for `connections` (both ports' limits together) at start-up: raises the soft
/// open-files limit (`ulimit -n`, often 1024) towards what that needs, up to the hard limit, as
/// Go programs and nginx do, and warns when even the hard limit is short. Otherwise a flood
/// could exhaust the descriptors before it reached the connection limit, and the journal
/// failing to open a segment is fatal.
pub fn raise_open_files_limit(connections: usize) {
    let needed = (connections as u64).saturating_add(RESERVED_FDS);
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let mut soft = limit.current;
        if let Some(to) = raised_soft_limit(limit.current, limit.maximum, needed) {
            match setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(to),
                    maximum: limit.maximum,
                },
            ) {
                Ok(()) => {
                    tracing::debug!(from = ?limit.current, to, "raised the open-files limit");
                    soft = Some(to);
                }
                Err(e) => tracing::debug!(error = %e, "cannot raise the open-files limit"),
            }
        }
        if let Some(soft) = soft.filter(|s| *s < needed) {
            tracing::warn!(
                open_files_limit = soft,
                needed,
                connections,
                "the open-files limit is below what --max-connections and --max-admin-connections need; raise the hard limit (ulimit -Hn, LimitNOFILE) or lower them"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = needed;
}

/// The soft limit to set so that `needed` descriptors fit, capped at `hard` (`None`:
/// unlimited); `None`: no change (already enough, or nothing to gain).
fn raised_soft_limit(soft: Option<u64>, hard: Option<u64>, needed: u64) -> Option<u64> {
    let soft = soft?;
    let to = hard.map_or(needed, |h| h.min(needed));
    (to > soft).then_some(to)
}

/// Gives a connection's slot back.
#[derive(Debug)]
struct Slot(Arc<ConnectionLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The handshake deadline of a new connection.
#[derive(Debug)]
struct Opening {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Opening bytes not received yet.
    missing: usize,
}

/// A connection holding a slot of its port; a read fails with `TimedOut` when the opening bytes
/// have not all arrived within the handshake timeout.
#[derive(Debug)]
pub struct Limited<S> {
    /// Declared first, so it is dropped first: the slot is free before the peer sees the close.
    slot: Slot,
    inner: S,
    /// Until the opening bytes have arrived.
    opening: Option<Opening>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(opening) = &mut this.opening {
            match &r {
                Poll::Ready(Ok(())) => {
                    let got = buf.filled().len() - before;
                    opening.missing = opening.missing.saturating_sub(got);
                    if opening.missing == 0 {
                        this.opening = None;
                    }
                }
                Poll::Ready(Err(_)) => {}
                Poll::Pending => {
                    if opening.deadline.as_mut().poll(cx).is_ready() {
                        this.slot.0.refuse(Refusal::HandshakeTimeout);
                        tracing::debug!(
                            port = this.slot.0.port,
                            "connection closed: no opening bytes within --handshake-timeout"
                        );
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the opening bytes did not arrive within the handshake timeout",
                        )));
                    }
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Limited<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_only_as_far_as_needed_and_allowed() {
        assert_eq!(
            raised_soft_limit(Some(1024), Some(524_288), 11_280),
            Some(11_280)
        );
        assert_eq!(
            raised_soft_limit(Some(1024), Some(4096), 20_256),
            Some(4096)
        );
        assert_eq!(raised_soft_limit(Some(1024), None, 20_256), Some(20_256));
        assert_eq!(raised_soft_limit(Some(65_536), Some(65_536), 20_256), None);
        assert_eq!(raised_soft_limit(Some(4096), Some(4096), 20_256), None);
        assert_eq!(raised_soft_limit(None, None, 20_256), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_and_gives_its_slot_back() {
        let limit = ConnectionLimit::new("grpc", 1, Duration::from_secs(10));
        let (a, _peer) = tokio::io::duplex(64);
        let mut conn = limit.admit(a).expect("a slot");
        assert_eq!(limit.open(), 1);
        let started = tokio::time::Instant::now();
        let err = conn.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(limit.refused(Refusal::HandshakeTimeout), 1);
        drop(conn);
        assert_eq!(limit.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_stalls_in_its_opening_bytes_times_out() {
        let limit = ConnectionLimit::new("grpc", 1, Duration::from_secs(10));
        let (a, mut peer) = tokio::io::duplex(64);
        let mut conn = limit.admit(a).unwrap();
        // A slow loris: the preface's first bytes, then nothing.
        peer.write_all(b"PRI * ").await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 6);
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(limit.refused(Refusal::HandshakeTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn after_its_opening_bytes_a_connection_may_stay_idle() {
        let limit = ConnectionLimit::new("grpc", 1, Duration::from_secs(10));
        let (a, mut peer) = tokio::io::duplex(64);
        let mut conn = limit.admit(a).unwrap();
        // The opening bytes in two pieces.
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(preface.len(), OPENING_BYTES);
        let mut buf = [0; 64];
        peer.write_all(&preface[..10]).await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 10);
        tokio::time::sleep(Duration::from_secs(5)).await;
        peer.write_all(&preface[10..]).await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 14);
        // An hour of silence later, the connection still reads what comes.
        let read = tokio::spawn(async move { conn.read(&mut [0; 8]).await.map(|_| conn) });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        peer.write_all(b"x").await.unwrap();
        assert!(read.await.unwrap().is_ok());
        assert_eq!(limit.refused(Refusal::HandshakeTimeout), 0);
    }

    #[tokio::test]
    async fn over_the_limit_a_connection_is_refused_until_one_closes() {
        let limit = ConnectionLimit::new("admin", 2, Duration::from_secs(10));
        let (a, _) = tokio::io::duplex(8);
        let (b, _) = tokio::io::duplex(8);
        let (c, _) = tokio::io::duplex(8);
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(b).unwrap();
        assert!(limit.admit(c).is_none());
        assert_eq!(limit.refused(Refusal::Limit), 1);
        assert_eq!(limit.open(), 2);
        drop(first);
        let (d, _) = tokio::io::duplex(8);
        assert!(limit.admit(d).is_some());
    }
}
