//! Authentication, authorization, load shedding and TLS, in front of both ports.
//!
//! - [`auth`]: the tokens file (SHA-256 hashes, roles, fleet scopes, rate limits), reloaded on
//!   SIGHUP.
//! - [`Guard`]: a tower layer on the gRPC server that authenticates every call (health stays
//!   open), checks the role against [`required_roles`], takes a rate-limit token and an
//!   in-flight slot, and hands the [`Principal`] to the handlers, which check the fleet scope
//!   ([`Caller`]).
//! - [`tls`]: rustls server configs from PEM files (TLS, and mTLS with a client CA).
//! - [`connections`]: open connections per port and the handshake deadline of new ones.
//!
//! Every refusal is a domain [`Error`] (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED
//! for a rate limit, UNAVAILABLE for overload), mapped to a status in `grpc::status` like every
//! other error, and counted in `session_broker_requests_rejected_total`.

pub mod auth;
pub mod connections;
pub mod tls;

use std::{
    collections::BTreeSet,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll},
};

pub use auth::{hash_token, Auth, Principal, Role};

use tonic::codegen::http;

use crate::{domain::Error, domain::FleetId, metrics::Metrics};

/// Limits applied in front of the handlers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request message (bytes).
    pub max_request_bytes: usize,
    /// HTTP/2 streams one connection may have open.
    pub max_concurrent_streams: u32,
    /// Calls being handled at once, across connections (beyond: UNAVAILABLE at once).
    pub max_in_flight: usize,
    /// Open watch streams per token.
    pub max_watch_streams_per_token: usize,
    /// Largest request header list (bytes).
    pub max_header_bytes: u32,
    /// Open connections on the gRPC port.
    pub max_connections: usize,
    /// Open connections on the admin port.
    pub max_admin_connections: usize,
    /// Open connections on the gRPC port from one client address (0: no such limit).
    pub max_connections_per_address: usize,
    /// Open connections on the admin port from one client address (0: no such limit).
    pub max_admin_connections_per_address: usize,
    /// How long a new connection may take to send its opening bytes and finish its TLS
    /// handshake.
    pub handshake_timeout: std::time::Duration,
    /// How often open connections are checked for a live peer (`None`: never).
    pub keepalive_interval: Option<std::time::Duration>,
    /// How long a keepalive check may go unanswered.
    pub keepalive_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1 << 20,
            max_concurrent_streams: 256,
            max_in_flight: 4096,
            max_watch_streams_per_token: 16,
            max_header_bytes: 16 << 10,
            max_connections: 10_000,
            max_admin_connections: 1024,
            max_connections_per_address: 1000,
            max_admin_connections_per_address: 128,
            handshake_timeout: std::time::Duration::from_secs(10),
            keepalive_interval: Some(std::time::Duration::from_secs(60)),
            keepalive_timeout: std::time::Duration::from_secs(20),
        }
    }
}

/// The security state of one daemon.
#[derive(Debug)]
pub struct Security {
    /// `None`: authentication is off (every caller may do everything).
    pub auth: Option<Auth>,
    pub limits: Limits,
    /// `/metrics` needs a token too.
    pub metrics_require_auth: bool,
    in_flight: AtomicUsize,
    metrics: OnceLock<Arc<Metrics>>,
    /// The gRPC port's connections.
    pub grpc_connections: Arc<connections::ConnectionLimit>,
    /// The admin port's connections.
    pub admin_connections: Arc<connections::ConnectionLimit>,
}

impl Security {
    pub fn new(auth: Option<Auth>, limits: Limits, metrics_require_auth: bool) -> Arc<Self> {
        let connections = |port, max, per_address| {
            connections::ConnectionLimit::new(port, max, per_address, limits.handshake_timeout)
        };
        Arc::new(Security {
            grpc_connections: connections(
                "grpc",
                limits.max_connections,
                limits.max_connections_per_address,
            ),
            admin_connections: connections(
                "admin",
                limits.max_admin_connections,
                limits.max_admin_connections_per_address,
            ),
            auth,
            limits,
            metrics_require_auth,
            in_flight: AtomicUsize::new(0),
            metrics: OnceLock::new(),
        })
    }

    /// No authentication, default limits.
    pub fn open() -> Arc<Self> {
        Self::new(None, Limits::default(), false)
    }

    pub fn set_metrics(&self, m: Arc<Metrics>) {
        m.watch_connections([
            self.grpc_connections.clone(),
            self.admin_connections.clone(),
        ]);
        let _ = self.metrics.set(m);
    }

    /// Counts a refusal of [`Self::admit`] or [`Self::enter`] (other errors are not refusals).
    pub fn rejected(&self, e: &Error) {
        self.count(match e {
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::RateLimited(_) => "rate_limited",
            Error::Overloaded(_) => "overloaded",
            _ => return,
        });
    }

    /// Counts a refusal for `reason` (one of [`crate::metrics::REJECT_REASONS`]).
    pub fn count(&self, reason: &'static str) {
        if let Some(m) = self.metrics.get() {
            m.requests_rejected
                .get_or_create(&crate::metrics::ReasonLabels { reason })
                .inc();
        }
    }

    /// Authenticates `authorization` and checks `roles` (`None`: open) and the rate limit.
    /// `Ok(None)`: authentication is off or the call is open.
    pub fn admit(
        &self,
        authorization: Option<&[u8]>,
        roles: Option<&[Role]>,
    ) -> Result<Option<Arc<Principal>>, Error> {
        let (Some(auth), Some(roles)) = (&self.auth, roles) else {
            return Ok(None);
        };
        let p = auth.authenticate(authorization)?;
        if !roles.contains(&p.role) {
            return Err(Error::PermissionDenied(format!(
                "token {:?} (role {}) may not make this call",
                p.name,
                p.role.as_str()
            )));
        }
        if let Some(b) = &p.bucket {
            if !b.try_take() {
                return Err(Error::RateLimited(format!(
                    "token {:?} is over its rate limit; retry later",
                    p.name
                )));
            }
        }
        Ok(Some(p))
    }

    /// Takes a watch-stream slot of `caller`'s token (released when the slot drops), or fails
    /// with RESOURCE_EXHAUSTED (counted) at `--max-watch-streams-per-token`. Without
    /// authentication there is no token to count against: `None`.
    pub fn watch_slot(&self, caller: &Caller) -> Result<Option<WatchSlot>, Error> {
        let Some(p) = caller.principal() else {
            return Ok(None);
        };
        let limit = self.limits.max_watch_streams_per_token;
        let n = p.watch_streams.fetch_add(1, Ordering::AcqRel);
        let slot = WatchSlot(p.watch_streams.clone());
        if n >= limit {
            self.count("watch_limit");
            return Err(Error::RateLimited(format!(
                "token {:?} already has {limit} watch streams open",
                p.name
            )));
        }
        Ok(Some(slot))
    }

    /// Calls admitted and not yet answered (health checks are not counted).
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes an in-flight slot, or fails with UNAVAILABLE at the limit.
    pub fn enter(self: &Arc<Self>) -> Result<InFlight, Error> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(self.clone());
        if n >= self.limits.max_in_flight {
            return Err(Error::Overloaded(format!(
                "{} calls in flight (the limit); retry with backoff",
                self.limits.max_in_flight
            )));
        }
        Ok(slot)
    }
}

/// The page-token key of a data directory: `page-token.key` (32 random bytes, mode 0600),
/// made on first use, so page tokens survive restarts.
pub fn page_key(dir: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let key = crate::journal::segment::read_or_make(
        dir,
        "page-token.key",
        "32 bytes",
        |b| b.len() == 32,
        || {
            let mut k = uuid::Uuid::new_v4().as_bytes().to_vec();
            k.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            k
        },
    )?;
    Ok(key.try_into().expect("checked: 32 bytes"))
}

/// An in-flight slot, given back on drop.
pub struct InFlight(Arc<Security>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every role.
pub const ALL: &[Role] = &[
    Role::GameServer,
    Role::Matchmaker,
    Role::Admin,
    Role::Viewer,
];
/// The roles of read-only calls.
pub const READ: &[Role] = &[Role::Matchmaker, Role::Admin, Role::Viewer];
const GAME_SERVER: &[Role] = &[Role::GameServer, Role::Admin];
const MATCHMAKER: &[Role] = &[Role::Matchmaker, Role::Admin];
/// Admin only.
pub const ADMIN: &[Role] = &[Role::Admin];

/// The roles that may call the gRPC method at `path` (`/package.Service/Method`); `None`: open
/// to everyone, authenticated or not (health checks).
pub fn required_roles(path: &str) -> Option<&'static [Role]> {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    Some(match (service, method) {
        ("grpc.health.v1.Health", _) => return None,
        (s, _) if s.starts_with("grpc.reflection.") => ALL,
        ("session_broker.v1.GameSessionService", "GetGameSession") => ALL,
        ("session_broker.v1.GameSessionService", _) => GAME_SERVER,
        (
            "session_broker.v1.PlayerSessionService",
            "CreatePlayerSession" | "CreatePlayerSessions",
        ) => MATCHMAKER,
        (
            "session_broker.v1.PlayerSessionService",
            "AcceptPlayerSession" | "RemovePlayerSession",
        ) => GAME_SERVER,
        (
            "session_broker.v1.PlayerSessionService",
            "DescribePlayerSessions" | "GetPlayerSessionHistory",
        ) => READ,
        ("session_broker.v1.FleetService", "PlacePlayerSessions") => MATCHMAKER,
        (
            "session_broker.v1.FleetService",
            "SearchGameSessions" | "DescribeFleetUtilization" | "WatchFleet",
        ) => READ,
        ("session_broker.v1.SessionHealthService", "ReportPlayerSessionError") => GAME_SERVER,
        ("session_broker.v1.SessionHealthService", "WatchSessionUpdates" | "GetReleaseHealth") => {
            READ
        }
        _ => ADMIN,
    })
}

/// The caller of one gRPC call, as the handlers see it: checks fleet scopes. Without
/// authentication every check passes.
#[derive(Clone, Default)]
pub struct Caller(Option<Arc<Principal>>);

impl Caller {
    /// The caller of `req` (set by [`Guard`]).
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        Caller(req.extensions().get::<Arc<Principal>>().cloned())
    }

    pub fn principal(&self) -> Option<&Arc<Principal>> {
        self.0.as_ref()
    }

    fn denied(&self) -> Error {
        Error::PermissionDenied(format!(
            "token {:?} is not scoped to this fleet or game session",
            self.0.as_ref().map_or("", |p| &*p.name)
        ))
    }

    /// The caller's fleets (`None`: every fleet).
    pub fn fleets(&self) -> Option<&BTreeSet<FleetId>> {
        self.0.as_ref().and_then(|p| p.fleets.as_ref())
    }

    /// Is the caller limited to some fleets?
    pub fn is_scoped(&self) -> bool {
        self.fleets().is_some()
    }

    /// PERMISSION_DENIED unless the caller may act on `fleet`.
    pub fn fleet(&self, fleet: &FleetId) -> Result<(), Error> {
        match &self.0 {
            Some(p) if !p.covers(fleet) => Err(self.denied()),
            _ => Ok(()),
        }
    }

    /// PERMISSION_DENIED unless the target's fleet (looked up by `find` only for a scoped
    /// caller) is in scope; a target that does not exist is denied the same way, so a scoped
    /// caller learns nothing about other fleets.
    pub fn target(&self, find: impl FnOnce() -> Option<FleetId>) -> Result<(), Error> {
        if !self.is_scoped() {
            return Ok(());
        }
        match find() {
            Some(f) => self.fleet(&f),
            None => Err(self.denied()),
        }
    }

    /// [`Self::target`] for game session `id`.
    pub fn game_session(
        &self,
        store: &crate::store::Store,
        id: &crate::domain::GameSessionId,
    ) -> Result<(), Error> {
        self.target(|| store.game_session_fleet(id))
    }

    /// [`Self::target`] for player session `id`.
    pub fn player_session(
        &self,
        store: &crate::store::Store,
        id: crate::domain::PlayerSessionId,
    ) -> Result<(), Error> {
        self.target(|| store.player_session_fleet(id))
    }

    /// The bytes page tokens are bound to.
    pub fn scope_bytes(&self) -> Vec<u8> {
        self.0.as_ref().map(|p| p.scope_bytes()).unwrap_or_default()
    }
}

/// An open watch stream of a token.
pub struct WatchSlot(Arc<AtomicUsize>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tower layer of the gRPC server (see the module docs).
#[derive(Clone)]
pub struct GuardLayer(pub Arc<Security>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            security: self.0.clone(),
        }
    }
}

/// See [`GuardLayer`].
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    security: Arc<Security>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Guard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let roles = required_roles(req.uri().path());
        let admitted = self
            .security
            .admit(
                req.headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                roles,
            )
            .and_then(|p| {
                // Health checks are never shed: an orchestrator must see the daemon alive.
                let slot = match roles {
                    None => None,
                    Some(_) => Some(self.security.enter()?),
                };
                Ok((p, slot))
            });
        match admitted {
            Err(e) => {
                self.security.rejected(&e);
                let status = tonic::Status::from(e);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
            Ok((principal, slot)) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let call = inner.call(req);
                Box::pin(async move {
                    let r = call.await;
                    drop(slot);
                    r
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_table() {
        let p = |s: &str| format!("/session_broker.v1.{s}");
        assert_eq!(required_roles("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            required_roles(&p("PlayerSessionService/CreatePlayerSession")),
            Some(MATCHMAKER)
        );
        assert_eq!(
            required_roles(&p("PlayerSessionService/AcceptPlayerSession")),
            Some(GAME_SERVER)
        );
        assert_eq!(
            required_roles(&p("GameSessionService/Heartbeat")),
            Some(GAME_SERVER)
        );
        assert_eq!(required_roles(&p("Unknown/Method")), Some(ADMIN));
        assert_eq!(required_roles("garbage"), Some(ADMIN));
    }

    #[test]
    fn the_in_flight_limit_sheds_and_gives_back() {
        let s = Security::new(
            None,
            Limits {
                max_in_flight: 2,
                ..Limits::default()
            },
            false,
        );
        let a = s.enter().unwrap();
        let _b = s.enter().unwrap();
        assert!(matches!(s.enter(), Err(Error::Overloaded(_))));
        drop(a);
        assert!(s.enter().is_ok());
    }
}
