//! Connection limits of a listener: at most `--max-connections` open connections on the gRPC
//! port and `--max-admin-connections` on the admin port, at most
//! `--max-connections-per-address` / `--max-admin-connections-per-address` of them from one
//! client address, and a handshake deadline (`--handshake-timeout`) for new ones.
//!
//! Without them a client could open connections and send nothing: each holds a socket and a
//! task for ever, and enough of them exhaust the daemon's file descriptors, which the journal
//! needs for its segments and snapshots. The per-address limit keeps one host (one IPv4
//! address, or one IPv6 /64, which a single host is commonly given) from taking the whole
//! port's limit, so a flood from it cannot lock out the rest of the fleet, nor the
//! orchestrator's probes on the admin port. A connection over a limit is closed at once; one
//! that has not sent its first [`OPENING_BYTES`] within the deadline is closed then (its read
//! fails with `TimedOut`, which ends the HTTP/2 or TLS handshake). The TLS handshake as a whole
//! has the same deadline ([`tls_accept`], which both listeners use). At shutdown the
//! connections still in their opening are closed at once ([`ConnectionLimit::close_openings`]).
//! An established
//! connection may stay idle: gRPC clients keep theirs open, and the limit bounds how many there
//! are.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, Ipv6Addr},
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
    /// The client's address had its most connections open on the port
    /// (`--max-connections-per-address`, `--max-admin-connections-per-address`).
    AddressLimit,
    /// The TLS handshake failed after the client had sent something: not TLS, no common
    /// protocol version or cipher suite, or under mTLS a missing or untrusted client
    /// certificate. (A connection closed before sending anything, as TCP health checks do, is
    /// not counted.)
    TlsError,
}

impl Refusal {
    /// Every refusal, for the metric's label values.
    pub const ALL: [Refusal; 4] = [
        Refusal::Limit,
        Refusal::HandshakeTimeout,
        Refusal::AddressLimit,
        Refusal::TlsError,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::AddressLimit => "address_limit",
            Refusal::TlsError => "tls_error",
        }
    }
}

/// The client address a per-address limit counts by: an IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 address), or an IPv6 address's /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    /// The address `ip` counts as.
    pub fn of(ip: IpAddr) -> Self {
        ClientAddress(match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
            v4 => v4,
        })
    }
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The open connections of one port and their limits.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// `grpc` or `admin`: the `port` label of the metrics.
    pub port: &'static str,
    max: usize,
    /// Most open connections from one [`ClientAddress`] (0: no such limit).
    per_address: usize,
    handshake_timeout: Duration,
    open: AtomicUsize,
    refused: [AtomicU64; 4],
    /// Open connections by client address, with the per-address limit (no entry at 0).
    by_address: parking_lot::Mutex<HashMap<ClientAddress, usize, ahash::RandomState>>,
    /// Cancelled when the daemon shuts down: connections still in their opening are closed.
    closing: tokio_util::sync::CancellationToken,
}

impl ConnectionLimit {
    /// `port`'s limit of `max` open connections, at most `per_address` of them (0: any number)
    /// from one [`ClientAddress`], new ones given `handshake_timeout`.
    pub fn new(
        port: &'static str,
        max: usize,
        per_address: usize,
        handshake_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            port,
            max,
            per_address,
            handshake_timeout,
            open: AtomicUsize::new(0),
            refused: Default::default(),
            by_address: Default::default(),
            closing: Default::default(),
        })
    }

    /// Closes the connections that have not sent their opening bytes yet, now and from now
    /// on, for a shutdown: they have made no call to drain, and the graceful shutdown of the
    /// servers would otherwise wait for their handshake deadline.
    pub fn close_openings(&self) {
        self.closing.cancel();
    }

    /// Connections open now from `ip`'s [`ClientAddress`] (0 without a per-address limit).
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let key = ClientAddress::of(ip);
        self.by_address.lock().get(&key).copied().unwrap_or(0)
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

    /// Takes a slot for `stream` from `peer` (`None`: an address the socket could not tell,
    /// not counted by address), or `None` (counted; dropping `stream` closes it) at the port's
    /// limit or its per-address limit. The slot is given back when the returned stream drops.
    pub fn admit<S>(self: &Arc<Self>, stream: S, peer: Option<IpAddr>) -> Option<Limited<S>> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        let mut slot = Slot {
            limit: self.clone(),
            address: None,
        };
        if n >= self.max {
            self.refuse(Refusal::Limit);
            tracing::debug!(
                port = self.port,
                open = n,
                "connection refused: at the port's connection limit"
            );
            return None;
        }
        if let Some(ip) = peer.filter(|_| self.per_address > 0) {
            let address = ClientAddress::of(ip);
            let mut by_address = self.by_address.lock();
            let open = by_address.entry(address).or_insert(0);
            if *open >= self.per_address {
                let open = *open;
                drop(by_address);
                self.refuse(Refusal::AddressLimit);
                tracing::debug!(
                    port = self.port,
                    %address,
                    open,
                    "connection refused: at the per-address connection limit"
                );
                return None;
            }
            *open += 1;
            slot.address = Some(address);
        }
        Some(Limited {
            slot,
            inner: stream,
            opening: Some(Opening {
                deadline: Box::pin(tokio::time::sleep(self.handshake_timeout)),
                closing: Box::pin(self.closing.clone().cancelled_owned()),
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
struct Slot {
    limit: Arc<ConnectionLimit>,
    /// The address it was counted under, if any.
    address: Option<ClientAddress>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut by_address = self.limit.by_address.lock();
            if let std::collections::hash_map::Entry::Occupied(mut e) = by_address.entry(address) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The handshake deadline of a new connection.
#[derive(Debug)]
struct Opening {
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The daemon is shutting down ([`ConnectionLimit::close_openings`]).
    closing: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Opening bytes not received yet.
    missing: usize,
}

/// A connection holding a slot of its port; a read fails with `TimedOut` when the opening bytes
/// have not all arrived within the handshake timeout, and with `ConnectionAborted` before them
/// once the daemon shuts down.
#[derive(Debug)]
pub struct Limited<S> {
    /// Declared first, so it is dropped first: the slot is free before the peer sees the close.
    slot: Slot,
    inner: S,
    /// Until the opening bytes have arrived.
    opening: Option<Opening>,
}

impl<S> Limited<S> {
    /// Whether the peer has sent anything yet.
    pub fn heard_from(&self) -> bool {
        self.opening
            .as_ref()
            .is_none_or(|o| o.missing < OPENING_BYTES)
    }
}

/// The TLS handshake of `io`, a new connection of `limit`'s port, within its handshake
/// timeout: `None` when it timed out (counted as [`Refusal::HandshakeTimeout`]) or failed
/// (counted as [`Refusal::TlsError`] when `heard_from` says the peer had sent something; a
/// bare TCP probe is not counted). The one handshake path of both listeners.
pub async fn tls_accept<S>(
    limit: &ConnectionLimit,
    acceptor: &tokio_rustls::TlsAcceptor,
    io: S,
    heard_from: impl FnOnce(&S) -> bool,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = acceptor.accept(io).into_fallible();
    match tokio::time::timeout(limit.handshake_timeout, handshake).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err((error, io))) => {
            let heard_from = heard_from(&io);
            if heard_from {
                limit.refuse(Refusal::TlsError);
            }
            tracing::debug!(port = limit.port, heard_from, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            limit.refuse(Refusal::HandshakeTimeout);
            tracing::debug!(
                port = limit.port,
                "TLS handshake not finished within --handshake-timeout"
            );
            None
        }
    }
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
                    if opening.closing.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the daemon is shutting down",
                        )));
                    }
                    if opening.deadline.as_mut().poll(cx).is_ready() {
                        this.slot.limit.refuse(Refusal::HandshakeTimeout);
                        tracing::debug!(
                            port = this.slot.limit.port,
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
        let limit = ConnectionLimit::new("grpc", 1, 0, Duration::from_secs(10));
        let (a, _peer) = tokio::io::duplex(64);
        let mut conn = limit.admit(a, None).expect("a slot");
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
        let limit = ConnectionLimit::new("grpc", 1, 0, Duration::from_secs(10));
        let (a, mut peer) = tokio::io::duplex(64);
        let mut conn = limit.admit(a, None).unwrap();
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
        let limit = ConnectionLimit::new("grpc", 1, 0, Duration::from_secs(10));
        let (a, mut peer) = tokio::io::duplex(64);
        let mut conn = limit.admit(a, None).unwrap();
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
        let limit = ConnectionLimit::new("admin", 2, 0, Duration::from_secs(10));
        let (a, _) = tokio::io::duplex(8);
        let (b, _) = tokio::io::duplex(8);
        let (c, _) = tokio::io::duplex(8);
        let first = limit.admit(a, None).unwrap();
        let _second = limit.admit(b, None).unwrap();
        assert!(limit.admit(c, None).is_none());
        assert_eq!(limit.refused(Refusal::Limit), 1);
        assert_eq!(limit.open(), 2);
        drop(first);
        let (d, _) = tokio::io::duplex(8);
        assert!(limit.admit(d, None).is_some());
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn addresses_count_as_ipv4_or_an_ipv6_slash_64() {
        let key = |s: &str| ClientAddress::of(s.parse().unwrap());
        assert_eq!(key("::ffff:10.1.2.3"), key("10.1.2.3"));
        assert_ne!(key("10.1.2.3"), key("10.1.2.4"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:10.1.2.3").to_string(), "10.1.2.3");
    }

    #[tokio::test]
    async fn one_address_is_limited_while_others_still_connect() {
        let limit = ConnectionLimit::new("grpc", 10, 2, Duration::from_secs(10));
        let conn = |peer| limit.admit(tokio::io::duplex(8).0, peer);
        let a1 = conn(ip("10.0.0.1")).unwrap();
        let _a2 = conn(ip("::ffff:10.0.0.1")).unwrap();
        assert!(conn(ip("10.0.0.1")).is_none());
        assert_eq!(limit.refused(Refusal::AddressLimit), 1);
        assert_eq!(limit.refused(Refusal::Limit), 0);
        assert_eq!(limit.open(), 2);
        assert_eq!(limit.open_from("10.0.0.1".parse().unwrap()), 2);
        // Other hosts, and connections whose address is unknown, are not held back.
        let _b = conn(ip("10.0.0.2")).unwrap();
        let _v6 = conn(ip("2001:db8::1")).unwrap();
        let _v6_same_host = conn(ip("2001:db8::2")).unwrap();
        assert!(conn(ip("2001:db8::3")).is_none());
        let _unknown = conn(None).unwrap();
        assert_eq!(limit.refused(Refusal::AddressLimit), 2);
        // A closed connection gives its address's slot back, and an address with none open
        // leaves no entry behind.
        drop(a1);
        assert_eq!(limit.open_from("10.0.0.1".parse().unwrap()), 1);
        let _a3 = conn(ip("10.0.0.1")).unwrap();
        drop(_b);
        assert!(!limit
            .by_address
            .lock()
            .contains_key(&ClientAddress::of("10.0.0.2".parse().unwrap())));
        assert_eq!(limit.open(), 5);
    }

    #[tokio::test]
    async fn the_port_limit_applies_before_the_per_address_one() {
        let limit = ConnectionLimit::new("admin", 2, 5, Duration::from_secs(10));
        let conn = |peer| limit.admit(tokio::io::duplex(8).0, peer);
        let _a = conn(ip("10.0.0.1")).unwrap();
        let _b = conn(ip("10.0.0.2")).unwrap();
        assert!(conn(ip("10.0.0.3")).is_none());
        assert_eq!(limit.refused(Refusal::Limit), 1);
        assert_eq!(limit.refused(Refusal::AddressLimit), 0);
        // The refused connection left no count for its address.
        assert_eq!(limit.open_from("10.0.0.3".parse().unwrap()), 0);
        assert_eq!(limit.open(), 2);
    }

    #[tokio::test]
    async fn without_a_per_address_limit_addresses_are_not_tracked() {
        let limit = ConnectionLimit::new("grpc", 10, 0, Duration::from_secs(10));
        let conns: Vec<_> = (0..10)
            .map(|_| limit.admit(tokio::io::duplex(8).0, ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(limit.open_from("10.0.0.1".parse().unwrap()), 0);
        assert_eq!(conns.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_connections_in_their_opening_are_closed_at_once() {
        let limit = ConnectionLimit::new("grpc", 4, 0, Duration::from_secs(10));
        let (a, _peer_a) = tokio::io::duplex(64);
        let (b, mut peer_b) = tokio::io::duplex(64);
        let mut silent = limit.admit(a, None).unwrap();
        let mut open = limit.admit(b, None).unwrap();
        peer_b
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(open.read(&mut [0; 64]).await.unwrap(), OPENING_BYTES);
        let started = tokio::time::Instant::now();
        let read = tokio::spawn(async move { silent.read(&mut [0; 8]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        limit.close_openings();
        let err = read.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // Not a refusal; and an established connection is left to the servers' own drain.
        assert_eq!(limit.refused(Refusal::HandshakeTimeout), 0);
        peer_b.write_all(b"x").await.unwrap();
        assert_eq!(open.read(&mut [0; 8]).await.unwrap(), 1);
        // A connection accepted after it is closed at its first wait.
        let (c, _peer_c) = tokio::io::duplex(64);
        let mut late = limit.admit(c, None).unwrap();
        let err = late.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
