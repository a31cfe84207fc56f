//! # session-broker
//!
//! A self-hosted player-session broker for game-server fleets: game servers register game
//! sessions and validate connecting players over gRPC; matchmakers reserve seats; reservations
//! that are never accepted time out.
//!
//! ## Layout
//! - [`domain`]: ids, time, game and player sessions, the state machine, capacity rules and the
//!   one [`domain::Error`] type. Knows nothing about gRPC.
//! - [`store`]: the in-memory state (sharded hash tables plus indexes by game session and by
//!   player) and every state transition, under short, non-async locks.
//! - [`sweeper`]: the single deadline-ordered task that times out reservations, ends game
//!   sessions that stopped heartbeating, and purges history after the retention period.
//! - [`grpc`]: tonic services (one file per service), proto <-> domain conversion, the one
//!   `impl From<domain::Error> for tonic::Status`, and the listener's write batching (the
//!   replies of concurrent calls share one write per connection).
//! - [`health`]: session health updates (Sentry release-health semantics): the hub the store
//!   publishes to and its readers.
//! - [`journal`]: the durable journal (operation-update records, group commit, snapshots,
//!   recovery); see `docs/journal.md`.
//! - [`security`]: the auth file (SHA-256 tokens, roles, fleet scopes, rate limits), the tower
//!   guard in front of the gRPC services (authentication, roles, shedding), TLS configs, the
//!   connection limits and handshake deadline of both ports; see `docs/security.md`.
//! - [`metrics`]: Prometheus metrics; per-fleet values come from counters the store maintains.
//! - [`analytics`]: Segment track events of every lifecycle transition, derived from the
//!   journal by a dispatcher with its own journaled cursor, batched to a sink (Segment, file).
//! - [`import`]: bulk import (resumable jobs, JSONL/CSV/GameLift records) and export.
//! - [`admin`]: the admin HTTP port (metrics, health and readiness probes, fleet utilization,
//!   import jobs, export).
//! - [`config`]: the `serve` flags and the validated [`config::Config`].
//! - [`cli`]: the command line: `serve` and a small client for humans.
//! - [`bench`]: `session-broker bench`, the closed-loop load generator, and its echo baseline.
//! - [`wire`]: domain <-> protobuf conversions shared by `grpc` and the journal.
//! - [`proto`]: code generated from `proto/session_broker/v1/*.proto`.
//!
//! [`run`] is what `main` calls; tests call [`start`] on ephemeral ports and drive the daemon
//! with the generated tonic clients.

#![forbid(unsafe_code)]

pub mod admin;
pub mod analytics;
pub mod bench;
pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod health;
pub mod import;
pub mod journal;
pub mod metrics;
pub mod security;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod wire;

#[allow(clippy::all, missing_docs)]
mod pb {
    pub mod session_broker {
        pub mod v1 {
            tonic::include_proto!("session_broker.v1");
        }
        pub mod bench {
            pub mod v1 {
                tonic::include_proto!("session_broker.bench.v1");
            }
        }
        pub mod storage {
            pub mod v1 {
                tonic::include_proto!("session_broker.storage.v1");
            }
        }
    }
}

/// The echo baseline service of `session-broker bench` (package `session_broker.bench.v1`).
pub use pb::session_broker::bench::v1 as bench_proto;
/// On-disk formats of the journal and snapshots (package `session_broker.storage.v1`).
pub use pb::session_broker::storage::v1 as storage;
/// Code generated from `proto/` (package `session_broker.v1`): messages, clients and servers.
pub use pb::session_broker::v1 as proto;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    domain::Clock,
    grpc::GrpcServer,
    journal::{recovery, snapshot, Journal, JournalConfig},
    store::Store,
};

/// A started daemon: state recovered, listeners bound, tasks running.
pub struct Daemon {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Arc<Store>,
    metrics: Arc<metrics::Metrics>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    admin: JoinHandle<std::io::Result<()>>,
    admin_stop: CancellationToken,
    background: Vec<JoinHandle<()>>,
    fatal: Arc<Mutex<Option<String>>>,
    _dir_lock: Option<std::fs::File>,
}

impl Daemon {
    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// The in-memory state (for embedding and tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Asks the daemon to stop (same as cancelling the token given to [`start`]).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the daemon has stopped: the server drained in-flight calls, every background
    /// task ended and the journal is flushed and synced. Fails if the journal failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("gRPC server task panicked");
        self.shutdown.cancel();
        for task in self.background {
            task.await.context("background task panicked")?;
        }
        let journal = self.store.journal().clone();
        tokio::task::spawn_blocking(move || journal.close())
            .await
            .context("journal close panicked")?;
        // The admin port answers (readyz 503) until everything above has drained.
        self.admin_stop.cancel();
        let _ = self.admin.await;
        if let Some(msg) = self.fatal.lock().take() {
            anyhow::bail!(msg);
        }
        served?
    }
}

/// Opens the journal in `config.dir`: locks the directory, recovers the state and starts the
/// writer. Returns the store and the directory lock (keep it for the daemon's lifetime).
async fn open_journal(
    jc: &JournalConfig,
    store_config: crate::store::StoreConfig,
    on_fatal: Arc<dyn Fn(String) + Send + Sync>,
) -> anyhow::Result<(Arc<Store>, std::fs::File)> {
    let lock = journal::lock_dir(&jc.dir)?;
    let journal = Journal::new(jc.durability);
    let store = Arc::new(Store::new(Clock::system(), store_config, journal.clone()));
    let started = Instant::now();
    // Recovery and the writer's start (which may zero-fill its segment) block: off the
    // runtime's workers.
    let recovered = {
        let (jc, store, journal) = (jc.clone(), store.clone(), journal.clone());
        tokio::task::spawn_blocking(move || {
            let recovered = recovery::recover(&jc, &store)?;
            journal.start(&jc, &recovered, on_fatal)?;
            Ok::<_, journal::JournalError>(recovered)
        })
        .await
        .context("recovery panicked")??
    };
    store.finish_recovery();
    let (game_sessions, player_sessions) = store.len();
    tracing::info!(
        data_dir = %jc.dir.display(),
        snapshot = ?recovered.snapshot,
        records_replayed = recovered.records_replayed,
        next_lsn = recovered.next_lsn,
        game_sessions,
        player_sessions,
        took_ms = started.elapsed().as_millis() as u64,
        "journal recovered"
    );
    Ok((store, lock))
}

/// Takes a snapshot whenever the journal asks for one, until shutdown.
async fn snapshotter(
    store: Arc<Store>,
    metrics: Arc<metrics::Metrics>,
    dir: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = store.journal().snapshot_due() => {}
            _ = shutdown.cancelled() => return,
        }
        let (store, dir) = (store.clone(), dir.clone());
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            snapshot::take(&store, &store.journal().clone(), &dir)
        })
        .await;
        match result {
            Ok(Ok(_)) => metrics
                .snapshot_duration
                .observe(started.elapsed().as_secs_f64()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "snapshot failed; the journal keeps growing until one succeeds")
            }
            Err(e) => tracing::error!(error = %e, "snapshot task panicked"),
        }
    }
}

/// Spawns a background task; if it panics, the daemon is marked unhealthy and shut down
/// (never left half-alive).
fn supervise(
    name: &'static str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
    on_fatal: Arc<dyn Fn(String) + Send + Sync>,
) -> JoinHandle<()> {
    use futures::FutureExt;
    tokio::spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let msg = format!("background task {name} panicked: {what}; shutting down");
            tracing::error!("{msg}");
            on_fatal(msg);
        }
    })
}

/// The daemon's security state: loads the auth file (reloaded on SIGHUP) and refuses to serve
/// a non-loopback address without authentication unless explicitly allowed.
fn security_of(config: &Config) -> anyhow::Result<Arc<security::Security>> {
    let auth = config
        .auth_file
        .as_deref()
        .map(security::Auth::load)
        .transpose()?;
    if auth.is_none() {
        let exposed: Vec<_> = [config.listen, config.admin_listen]
            .into_iter()
            .filter(|a| !a.ip().is_loopback())
            .collect();
        if let Some(addr) = exposed.first() {
            if !config.allow_unauthenticated {
                anyhow::bail!(
                    "refusing to serve {addr} without authentication: anyone who can reach it could accept or end any session. Pass --auth-file (see deploy/auth.example.toml), bind a loopback address, or pass --allow-unauthenticated"
                );
            }
            tracing::warn!(%addr, "serving WITHOUT authentication on a non-loopback address (--allow-unauthenticated)");
        }
    }
    security::connections::raise_open_files_limit(
        config
            .limits
            .max_connections
            .saturating_add(config.limits.max_admin_connections),
    );
    let security =
        security::Security::new(auth, config.limits.clone(), config.metrics_require_auth);
    if security.auth.is_some() {
        spawn_reload_on_sighup(security.clone());
    }
    Ok(security)
}

/// Reloads the auth file on every SIGHUP (a file that does not parse keeps the old tokens).
fn spawn_reload_on_sighup(security: Arc<security::Security>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the auth file will not be reloaded");
            return;
        };
        let weak = Arc::downgrade(&security);
        drop(security);
        while hup.recv().await.is_some() {
            let Some(s) = weak.upgrade() else { return };
            if let Some(auth) = &s.auth {
                match auth.reload() {
                    Ok(n) => tracing::info!(tokens = n, "auth file reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "auth file NOT reloaded; the previous tokens stay in force")
                    }
                }
            }
        }
    });
}

/// Binds the listeners and starts every task of the daemon. Returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Daemon> {
    let fatal: Arc<Mutex<Option<String>>> = Arc::default();
    let alive = admin::Liveness::default();
    let on_fatal: Arc<dyn Fn(String) + Send + Sync> = {
        let (fatal, shutdown, alive) = (fatal.clone(), shutdown.clone(), alive.clone());
        Arc::new(move |msg| {
            alive.fail();
            fatal.lock().get_or_insert(msg);
            shutdown.cancel();
        })
    };
    // The admin port comes up first, so probes see /healthz 200 and /readyz 503 while the
    // journal is being recovered.
    let security = security_of(&config)?;
    let admin_tls = config.tls.as_ref().map(|t| t.admin()).transpose()?;
    let grpc_tls = config.tls.as_ref().map(|t| t.grpc()).transpose()?;
    let ready = admin::Readiness::default();
    let serving = admin::Serving::default();
    let admin_server = admin::AdminServer::bind(
        config.admin_listen,
        serving.clone(),
        ready.clone(),
        alive.clone(),
        security.clone(),
        admin_tls,
    )
    .await
    .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let admin_addr = admin_server.local_addr()?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin_server.serve(admin_stop.clone()));

    let recovery_started = Instant::now();
    let (store, dir_lock) = match &config.journal {
        Some(jc) => {
            let (store, lock) = open_journal(jc, config.store.clone(), on_fatal.clone()).await?;
            (store, Some(lock))
        }
        None => (
            Arc::new(Store::in_memory(Clock::system(), config.store.clone())),
            None,
        ),
    };
    let metrics = metrics::Metrics::new(store.clone());
    metrics
        .recovery_duration
        .set(recovery_started.elapsed().as_secs_f64());
    store.set_metrics(metrics.clone());
    store.journal().set_metrics(metrics.clone());
    serving.set(store.clone(), metrics.clone());

    security.set_metrics(metrics.clone());
    if let Some(jc) = &config.journal {
        store::page_token::set_key(
            security::page_key(&jc.dir).with_context(|| {
                format!("cannot read or make {}/page-token.key", jc.dir.display())
            })?,
        );
    }
    let server = GrpcServer::bind(
        config.listen,
        store.clone(),
        metrics.clone(),
        security.clone(),
        grpc_tls,
    )
    .await
    .with_context(|| format!("cannot listen on {}", config.listen))?
    .batch_writes(config.grpc_batch_writes);
    let grpc_addr = server.local_addr()?;

    let mut background = Vec::new();
    // Analytics first: it tells the journal which segments to keep before a snapshot can
    // prune them (and journals its starting cursor before the sweeper changes anything).
    if let Some(ac) = config.analytics.clone() {
        let Some(jc) = &config.journal else {
            anyhow::bail!("analytics needs the journal (a data directory)");
        };
        let sink = ac.build_sink().map_err(anyhow::Error::msg)?;
        let start = analytics::dispatcher::prepare(&store, &ac, sink.name(), &jc.dir)
            .with_context(|| {
                format!(
                    "cannot read or make the analytics id in {}",
                    jc.dir.display()
                )
            })?;
        tracing::info!(sink = sink.name(), sink_config = ?ac.sink, from_lsn = start.from, journal_id = %start.journal_id, "sending analytics events");
        background.push(supervise(
            "analytics",
            analytics::dispatcher::run(
                ac,
                sink,
                store.clone(),
                metrics.clone(),
                jc.dir.clone(),
                start,
                shutdown.clone(),
            ),
            on_fatal.clone(),
        ));
    }
    background.push(supervise(
        "sweeper",
        sweeper::run(store.clone(), shutdown.clone()),
        on_fatal.clone(),
    ));
    if let Some(jc) = &config.journal {
        background.push(supervise(
            "snapshotter",
            snapshotter(
                store.clone(),
                metrics.clone(),
                jc.dir.clone(),
                shutdown.clone(),
            ),
            on_fatal.clone(),
        ));
    }
    if let Some(sc) = config.sentry.clone() {
        // Subscribed now, before the first call can change anything.
        let updates = store.health().subscribe();
        tracing::info!(endpoint = %sc.dsn.envelope_url(), mode = ?sc.mode, "sending session health to Sentry");
        background.push(supervise(
            "sentry",
            health::sentry::run(
                sc,
                store.clone(),
                metrics.clone(),
                updates,
                shutdown.clone(),
            ),
            on_fatal.clone(),
        ));
    }
    if let Some(jc) = &config.journal {
        let imports = import::jobs::Imports::new(
            store.clone(),
            &jc.dir,
            config.import_max_bytes,
            shutdown.clone(),
        )
        .with_context(|| format!("cannot use {}/imports", jc.dir.display()))?;
        serving.set_imports(imports.clone());
        imports.resume_all();
        background.push(tokio::spawn(imports.wait_all(shutdown.clone())));
    }
    // Readiness drops the moment shutdown starts, before the drain.
    background.push(tokio::spawn({
        let (ready, shutdown) = (ready.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            ready.set(false);
        }
    }));
    let server = tokio::spawn(server.serve(shutdown.clone()));
    ready.set(true);
    tracing::info!(%grpc_addr, %admin_addr, "session-broker serving");
    Ok(Daemon {
        grpc_addr,
        admin_addr,
        store,
        metrics,
        shutdown,
        server,
        admin,
        admin_stop,
        background,
        fatal,
        _dir_lock: dir_lock,
    })
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_background_task_is_reported_as_fatal() {
        let reported: Arc<Mutex<Vec<String>>> = Arc::default();
        let on_fatal: Arc<dyn Fn(String) + Send + Sync> = {
            let reported = reported.clone();
            Arc::new(move |m| reported.lock().push(m))
        };
        supervise("sweeper", async { panic!("boom") }, on_fatal.clone())
            .await
            .unwrap();
        supervise("quiet", async {}, on_fatal).await.unwrap();
        let got = reported.lock().clone();
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("sweeper") && got[0].contains("boom"),
            "{got:?}"
        );
    }
}
