//! The admin HTTP port (axum): `/metrics`, `/healthz`, `/readyz`, `/v1/fleets`,
//! `/v1/fleets/{fleet_id}`, `/v1/export`, `/v1/import...`.

mod export;
mod import;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::FleetId,
    import::jobs::Imports,
    metrics::Metrics,
    security::{
        self,
        connections::{self, ConnectionLimit},
        Security,
    },
    store::{FleetCounts, Store},
};

/// Whether the daemon is ready for traffic: set once recovery finished and listeners are bound,
/// cleared as soon as shutdown starts.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether the process is healthy: cleared when a background task panicked or the journal
/// failed (the daemon is then shutting down); `/healthz` answers 503.
#[derive(Clone, Debug)]
pub struct Liveness(Arc<AtomicBool>);

impl Default for Liveness {
    fn default() -> Self {
        Liveness(Arc::new(AtomicBool::new(true)))
    }
}

impl Liveness {
    pub fn fail(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    pub fn is_alive(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the admin port serves once recovery is done (it is bound before, to answer probes).
#[derive(Clone, Default)]
pub struct Serving(
    Arc<std::sync::OnceLock<(Arc<Store>, Arc<Metrics>)>>,
    Arc<std::sync::OnceLock<Arc<Imports>>>,
);

impl Serving {
    pub fn set(&self, store: Arc<Store>, metrics: Arc<Metrics>) {
        let _ = self.0.set((store, metrics));
    }
    /// Import jobs (only with a data directory).
    pub fn set_imports(&self, imports: Arc<Imports>) {
        let _ = self.1.set(imports);
    }
    fn get(&self) -> Option<&(Arc<Store>, Arc<Metrics>)> {
        self.0.get()
    }
    fn imports(&self) -> Option<&Arc<Imports>> {
        self.1.get()
    }
}

#[derive(Clone)]
struct AdminState {
    serving: Serving,
    ready: Readiness,
    alive: Liveness,
    security: Arc<Security>,
}

/// Authenticates admin HTTP requests: the probes are open, `/metrics` too unless
/// `--metrics-require-auth`, `GET /v1/fleets...` needs a read role, the rest (import, export)
/// an admin token. Fleet-scoped tokens are refused here (the admin API spans fleets).
async fn guard(
    State(s): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let roles = match path {
        "/healthz" | "/readyz" => None,
        "/metrics" if !s.security.metrics_require_auth => None,
        "/metrics" => Some(security::ALL),
        p if p.starts_with("/v1/fleets") && req.method() == axum::http::Method::GET => {
            Some(security::READ)
        }
        _ => Some(security::ADMIN),
    };
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let admitted = s.security.admit(auth, roles).and_then(|p| match p {
        Some(p) if p.fleets.is_some() => Err(crate::domain::Error::PermissionDenied(format!(
            "token {:?} is scoped to fleets; the admin HTTP API needs an unscoped token",
            p.name
        ))),
        _ => Ok(()),
    });
    match admitted {
        Ok(()) => next.run(req).await,
        Err(e) => {
            s.security.rejected(&e);
            let code = match e {
                crate::domain::Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                crate::domain::Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::FORBIDDEN,
            };
            let mut r = (code, Json(json!({ "error": e.to_string() }))).into_response();
            if code == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            r
        }
    }
}

fn recovering() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "recovering\n").into_response()
}

/// A bound admin listener.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    limit: Arc<ConnectionLimit>,
    /// TCP keepalive of accepted connections (`None`: off).
    keepalive: Option<socket2::TcpKeepalive>,
}

impl AdminServer {
    /// Binds the admin port. Until `serving` is set (after recovery) `/readyz`, `/metrics` and
    /// `/v1/fleets` answer 503 while `/healthz` answers 200.
    pub async fn bind(
        addr: SocketAddr,
        serving: Serving,
        ready: Readiness,
        alive: Liveness,
        security: Arc<Security>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let limit = security.admin_connections.clone();
        let keepalive = security
            .limits
            .keepalive_interval
            .map(|every| keepalive(every, security.limits.keepalive_timeout));
        let state = AdminState {
            serving,
            ready,
            alive,
            security,
        };
        let router = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/v1/fleets", get(fleets))
            .route("/v1/fleets/{fleet_id}", get(fleet))
            .route("/v1/export", get(export::export))
            .route("/v1/import", get(import::list).post(import::upload))
            .route("/v1/import/{job_id}/status", get(import::status))
            .route("/v1/import/{job_id}", axum::routing::delete(import::cancel))
            .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
            .with_state(state);
        Ok(AdminServer {
            listener,
            router,
            tls,
            limit,
            keepalive,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled, then lets open requests finish (connections get a
    /// graceful shutdown). HTTP/1.1 and HTTP/2, over TLS when configured; request headers are
    /// limited to [`MAX_HEADER_BYTES`].
    pub async fn serve(self, stop: CancellationToken) -> std::io::Result<()> {
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            if let Some(k) = &self.keepalive {
                let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(k);
            }
            // Over --max-admin-connections or --max-admin-connections-per-address the
            // connection is dropped (closed) here.
            let Some(tcp) = self.limit.admit(tcp, Some(peer.ip())) else {
                continue;
            };
            let (acceptor, router, stop) = (acceptor.clone(), self.router.clone(), stop.clone());
            let limit = self.limit.clone();
            connections.spawn(async move {
                match acceptor {
                    None => serve_connection(tcp, router, stop).await,
                    Some(a) => {
                        if let Some(tls) =
                            connections::tls_accept(&limit, &a, tcp, |tcp| tcp.heard_from()).await
                        {
                            serve_connection(tls, router, stop).await
                        }
                    }
                }
            });
            // Reap finished connections as we go.
            while connections.try_join_next().is_some() {}
        }
        // Connections that never said hello (or are still in their TLS handshake's first
        // bytes) have no requests to finish.
        self.limit.close_openings();
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// TCP keepalive probing a connection idle for `every`, three probes spread over `timeout`
/// (whole seconds, at least one: the kernel counts in seconds).
fn keepalive(every: std::time::Duration, timeout: std::time::Duration) -> socket2::TcpKeepalive {
    let secs = |d: std::time::Duration| std::time::Duration::from_secs(d.as_secs().max(1));
    let k = socket2::TcpKeepalive::new()
        .with_time(secs(every))
        .with_interval(secs(timeout / 3));
    #[cfg(target_os = "linux")]
    let k = k.with_retries(3);
    k
}

/// Largest request header block the admin port reads (bytes).
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// Serves one admin connection until it closes, or gracefully once `stop` is cancelled.
async fn serve_connection<S>(stream: S, router: Router, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30));
    builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let conn =
        builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    let Some((_, metrics)) = s.serving.get() else {
        return recovering();
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    if s.alive.is_alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n").into_response()
    }
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Utilization of one fleet as JSON.
pub fn fleet_json(fleet: &FleetId, c: &FleetCounts) -> Value {
    json!({
        "fleet_id": fleet.as_str(),
        "game_sessions": {
            "active": c.game_sessions[0],
            "terminated": c.game_sessions[1],
            "error": c.game_sessions[2],
        },
        "player_sessions": {
            "reserved": c.player_sessions[0],
            "active": c.player_sessions[1],
            "completed": c.player_sessions[2],
            "timedout": c.player_sessions[3],
        },
        "maximum_player_session_count": c.maximum_player_session_count,
        "current_player_session_count": c.current_player_session_count(),
        "available_player_session_count": c.available_player_session_count(),
    })
}

async fn fleets(State(s): State<AdminState>) -> Response {
    let Some((store, _)) = s.serving.get() else {
        return recovering();
    };
    let fleets: Vec<Value> = store
        .all_fleet_counts()
        .iter()
        .map(|(f, c)| fleet_json(f, c))
        .collect();
    Json(json!({ "fleets": fleets })).into_response()
}

async fn fleet(State(s): State<AdminState>, Path(fleet_id): Path<String>) -> Response {
    let Some((store, _)) = s.serving.get() else {
        return recovering();
    };
    let id = match FleetId::parse("fleet_id", &fleet_id) {
        Ok(id) => id,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            )
                .into_response()
        }
    };
    match store.all_fleet_counts().into_iter().find(|(f, _)| *f == id) {
        Some((f, c)) => Json(fleet_json(&f, &c)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("fleet {fleet_id} not found") })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn accepted_connections_get_the_keepalive_asked_for_in_whole_seconds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        for (every, timeout, time, interval) in [
            (Duration::from_secs(60), Duration::from_secs(20), 60, 6),
            // Below a second: the kernel's unit, at least one.
            (Duration::from_millis(200), Duration::from_millis(200), 1, 1),
        ] {
            sock.set_tcp_keepalive(&super::keepalive(every, timeout))
                .unwrap();
            assert!(sock.keepalive().unwrap());
            assert_eq!(
                sock.tcp_keepalive_time().unwrap(),
                Duration::from_secs(time)
            );
            assert_eq!(
                sock.tcp_keepalive_interval().unwrap(),
                Duration::from_secs(interval)
            );
            #[cfg(target_os = "linux")]
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        }
    }
}
