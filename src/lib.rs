//! # session-broker
//!
//! A self-hosted player-session broker for game-server fleets: game servers register game
//! sessions and validate connecting players over gRPC; matchmakers reserve seats; reservations
//! that are never accepted time out.
//!
//! ## Layout
//! - [`domain`]: ids, time, game and player sessions, the state machine, capacity rules and the
//!   one [`domain::Error`] type. Knows nothing about gRPC.
//! - [`store`]: the in-memory state (DashMaps plus indexes by game session and by player) and
//!   every state transition, under short, non-async locks.
//! - [`sweeper`]: the single deadline-ordered task that times out reservations, ends game
//!   sessions that stopped heartbeating, and purges history after the retention period.
//! - [`grpc`]: tonic services (one file per service), proto <-> domain conversion, and the one
//!   `impl From<domain::Error> for tonic::Status`.
//! - [`config`]: the `serve` flags and the validated [`config::Config`].
//! - [`cli`]: the command line: `serve` and a small client for humans.
//! - [`proto`]: code generated from `proto/session_broker/v1/*.proto`.
//!
//! [`run`] is what `main` calls; tests call [`start`] on ephemeral ports and drive the daemon
//! with the generated tonic clients.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod store;
pub mod sweeper;
pub mod telemetry;

/// Code generated from `proto/` (package `session_broker.v1`): messages, clients and servers.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("session_broker.v1");
}

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, domain::Clock, grpc::GrpcServer, store::Store};

/// A started daemon: listeners bound, tasks running.
pub struct Daemon {
    grpc_addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    sweeper: JoinHandle<()>,
}

impl Daemon {
    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The in-memory state (for embedding and tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Asks the daemon to stop (same as cancelling the token given to [`start`]).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the daemon has stopped: the server drained in-flight calls and every
    /// background task ended.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await.context("gRPC server task panicked")?;
        self.shutdown.cancel();
        self.sweeper.await.context("sweeper task panicked")?;
        served
    }
}

/// Binds the listeners and starts every task of the daemon. Returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Daemon> {
    let store = Arc::new(Store::new(Clock::system(), config.store.clone()));
    let server = GrpcServer::bind(config.listen, store.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let grpc_addr = server.local_addr()?;
    let sweeper = tokio::spawn(sweeper::run(store.clone(), shutdown.clone()));
    let server = tokio::spawn(server.serve(shutdown.clone()));
    tracing::info!(%grpc_addr, "session-broker serving");
    Ok(Daemon {
        grpc_addr,
        store,
        shutdown,
        server,
        sweeper,
    })
}

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}
