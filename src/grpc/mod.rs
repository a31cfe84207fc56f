//! The gRPC front: one file per service, `convert` for message <-> domain, `status` for the one
//! error mapping. Also serves `grpc.health.v1.Health` and server reflection (v1 and v1alpha).

mod batched_io;
mod convert;
mod fleets;
mod game_sessions;
mod health;
mod player_sessions;
pub mod status;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{server::TcpIncoming, Server};
use tonic_health::server::HealthReporter;

pub use crate::wire::{from_timestamp, timestamp};
pub use fleets::Fleets;
pub use game_sessions::GameSessions;
pub use health::SessionHealth;
pub use player_sessions::PlayerSessions;

use crate::{
    metrics::Metrics,
    proto::{
        fleet_service_server::FleetServiceServer,
        game_session_service_server::GameSessionServiceServer,
        player_session_service_server::PlayerSessionServiceServer,
        session_health_service_server::SessionHealthServiceServer,
    },
    security::{
        connections::{self, ConnectionLimit, Limited},
        Security,
    },
    store::Store,
};

/// The encoded descriptor set of `proto/`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/session_broker_descriptor.bin"));

/// The ids a request is about, for its log span.
pub(crate) trait RequestIds {
    fn game_session_id(&self) -> &str {
        ""
    }
    fn player_session_id(&self) -> &str {
        ""
    }
}

macro_rules! request_ids {
    ($($t:ty: $($f:ident),*;)*) => {$(
        impl RequestIds for $t {
            $(fn $f(&self) -> &str { &self.$f })*
        }
    )*};
}

request_ids! {
    crate::proto::RegisterGameSessionRequest: game_session_id;
    crate::proto::HeartbeatRequest: game_session_id;
    crate::proto::UpdateGameSessionRequest: game_session_id;
    crate::proto::EndGameSessionRequest: game_session_id;
    crate::proto::GetGameSessionRequest: game_session_id;
    crate::proto::CreatePlayerSessionRequest: game_session_id;
    crate::proto::CreatePlayerSessionsRequest: game_session_id;
    crate::proto::AcceptPlayerSessionRequest: game_session_id, player_session_id;
    crate::proto::RemovePlayerSessionRequest: game_session_id, player_session_id;
    crate::proto::DescribePlayerSessionsRequest: game_session_id, player_session_id;
    crate::proto::GetPlayerSessionHistoryRequest: player_session_id;
    crate::proto::ReportPlayerSessionErrorRequest: game_session_id, player_session_id;
}

/// The `rpc` span of one call: the method and the ids the request names.
pub(crate) fn rpc_span(method: &'static str, req: &impl RequestIds) -> tracing::Span {
    tracing::debug_span!(
        "rpc",
        method,
        game_session_id = req.game_session_id(),
        player_session_id = req.player_session_id()
    )
}

/// Runs one call inside `span` and records its method, status code and latency.
pub(crate) async fn observed<T>(
    metrics: &Metrics,
    method: &'static str,
    span: tracing::Span,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = call.instrument(span).await;
    let code = result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    metrics.observe_grpc(method, code, started.elapsed());
    result
}

/// Events buffered between a server stream's source and its HTTP/2 stream.
const STREAM_CHANNEL: usize = 16;

/// Serves `events` as a server-streaming response: a small task moves them to tonic. The
/// stream ends after the first error, when the client goes away (dropping `events`, which
/// unsubscribes its source), or at shutdown with UNAVAILABLE.
pub(crate) fn forward<T, S>(
    events: S,
    shutdown: CancellationToken,
    what: &'static str,
) -> tokio_stream::wrappers::ReceiverStream<Result<T, tonic::Status>>
where
    T: Send + 'static,
    S: futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHANNEL);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(tonic::Status::unavailable(
                    "the daemon is shutting down; resubscribe to another instance or after restart",
                )),
                _ = tx.closed() => break,
                e = events.next() => match e {
                    Some(e) => e,
                    None => break,
                },
            };
            let last = next.is_err();
            if shutdown.is_cancelled() {
                // Best effort: a consumer with a full buffer just sees the stream end.
                let _ = tx.try_send(next);
                break;
            }
            let sent = tokio::select! {
                biased;
                _ = shutdown.cancelled() => false,
                r = tx.send(next) => r.is_ok(),
            };
            if last || !sent {
                break;
            }
        }
        tracing::debug!(stream = what, "stream ended");
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A bound gRPC listener, ready to serve.
pub struct GrpcServer {
    listener: TcpListener,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    security: Arc<Security>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    batch_writes: bool,
    health: HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl GrpcServer {
    /// Binds the listener (so the caller learns the port before serving).
    pub async fn bind(
        addr: SocketAddr,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        security: Arc<Security>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let health = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        Ok(GrpcServer {
            listener,
            store,
            metrics,
            security,
            tls,
            batch_writes: true,
            health,
            health_service,
        })
    }

    /// Whether replies of concurrent calls share writes (see [`batched_io`]); on by default.
    pub fn batch_writes(mut self, on: bool) -> Self {
        self.batch_writes = on;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The reporter behind `grpc.health.v1.Health`.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets in-flight calls finish.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let max = self.security.limits.max_request_bytes;
        let game_sessions = GameSessionServiceServer::new(GameSessions::new(
            self.store.clone(),
            self.metrics.clone(),
        ))
        .max_decoding_message_size(max);
        let player_sessions = PlayerSessionServiceServer::new(PlayerSessions::new(
            self.store.clone(),
            self.metrics.clone(),
        ))
        .max_decoding_message_size(max);
        let fleets = FleetServiceServer::new(Fleets::new(
            self.store.clone(),
            self.metrics.clone(),
            shutdown.clone(),
            self.security.clone(),
        ))
        .max_decoding_message_size(max);
        self.health
            .set_serving::<GameSessionServiceServer<GameSessions>>()
            .await;
        let session_health = SessionHealthServiceServer::new(SessionHealth::new(
            self.store.clone(),
            self.metrics.clone(),
            shutdown.clone(),
            self.security.clone(),
        ))
        .max_decoding_message_size(max);
        self.health
            .set_serving::<FleetServiceServer<Fleets>>()
            .await;
        self.health
            .set_serving::<SessionHealthServiceServer<SessionHealth>>()
            .await;
        self.health
            .set_serving::<PlayerSessionServiceServer<PlayerSessions>>()
            .await;

        use futures::StreamExt;
        let in_flight = self.batch_writes.then(|| self.security.clone());
        // A connection over --max-connections or --max-connections-per-address is dropped
        // (closed) here; the others hold a slot until they close, and must send their opening
        // bytes within --handshake-timeout.
        let connections = self.security.grpc_connections.clone();
        let incoming = TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .filter_map(move |r| {
                futures::future::ready(match r {
                    Ok(s) => {
                        let peer = s.peer_addr().ok().map(|a| a.ip());
                        connections
                            .admit(s, peer)
                            .map(|s| Ok(batched_io::BatchedIo::new(s, in_flight.clone())))
                    }
                    Err(e) => Some(Err(e)),
                })
            });
        let health = self.health.clone();
        let stop = shutdown.clone();
        let grpc_connections = self.security.grpc_connections.clone();
        let limits = &self.security.limits;
        let router = Server::builder()
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            // Dead peers (a game server's host gone without a FIN) give their slot back.
            .http2_keepalive_interval(limits.keepalive_interval)
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .http2_max_header_list_size(Some(limits.max_header_bytes))
            .layer(crate::security::GuardLayer(self.security.clone()))
            .add_service(self.health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(game_sessions)
            .add_service(player_sessions)
            .add_service(fleets)
            .add_service(session_health);
        let signal = async move {
            stop.cancelled().await;
            // Connections that never said hello have no calls to drain.
            grpc_connections.close_openings();
            health
                .set_not_serving::<GameSessionServiceServer<GameSessions>>()
                .await;
            health
                .set_not_serving::<PlayerSessionServiceServer<PlayerSessions>>()
                .await;
            health.set_not_serving::<FleetServiceServer<Fleets>>().await;
            health
                .set_not_serving::<SessionHealthServiceServer<SessionHealth>>()
                .await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        match self.tls {
            None => {
                router
                    .serve_with_incoming_shutdown(incoming, signal)
                    .await?
            }
            Some(tls) => {
                let incoming = tls_handshakes(
                    incoming,
                    tls,
                    self.security.grpc_connections.clone(),
                    limits.max_connections,
                );
                router
                    .serve_with_incoming_shutdown(incoming, signal)
                    .await?
            }
        }
        Ok(())
    }
}

/// The TLS handshakes of the accepted connections ([`connections::tls_accept`]), `at_most` at
/// once; yields the connections whose handshake finished, in the order they did.
fn tls_handshakes<S>(
    accepted: impl futures::Stream<Item = std::io::Result<batched_io::BatchedIo<Limited<S>>>>,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    limit: Arc<ConnectionLimit>,
    at_most: usize,
) -> impl futures::Stream<
    Item = std::io::Result<tokio_rustls::server::TlsStream<batched_io::BatchedIo<Limited<S>>>>,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accepted
        .map(move |r| {
            let (acceptor, limit) = (acceptor.clone(), limit.clone());
            async move {
                let io = match r {
                    Ok(io) => io,
                    Err(e) => return Some(Err(e)),
                };
                connections::tls_accept(&limit, &acceptor, io, |io| io.get_ref().heard_from())
                    .await
                    .map(Ok)
            }
        })
        .buffer_unordered(at_most.max(1))
        .filter_map(futures::future::ready)
}
