//! The command line: `serve` (the default), a small gRPC client for humans
//! (`game-sessions ...`, `player-sessions ...`, `fleets ...`) that prints tables or JSON,
//! `import` / `export` against the admin port, and the load generator (`bench`,
//! `bench-echo-server`).

mod client;
mod fleets;
mod health;
mod output;
mod transfer;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

pub use client::{Bearer, ClientArgs, Conn, Credentials, GameSessionsCmd, PlayerSessionsCmd};
pub use fleets::FleetsCmd;
pub use health::HealthCmd;
pub use transfer::{AdminArgs, ExportArgs, ImportArgs};

use crate::config::{Config, ServeArgs};

/// session-broker: player-session broker for game-server fleets.
///
/// With no subcommand it serves with the flags below (same as `serve`).
#[derive(Debug, Parser)]
#[command(
    name = "session-broker",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve(ServeArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Register, inspect, heartbeat, update and end game sessions.
    #[command(name = "game-sessions")]
    GameSessions {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: GameSessionsCmd,
    },
    /// Reserve, accept, remove and list player sessions.
    #[command(name = "player-sessions")]
    PlayerSessions {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: PlayerSessionsCmd,
    },
    /// Matchmaker calls: search game sessions, fleet utilization, place a party, watch a fleet.
    Fleets {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: FleetsCmd,
    },
    /// Session health: report player errors, release health of a build, the live update feed.
    Health {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: HealthCmd,
    },
    /// Import a file (JSONL, GameLift JSON lines, CSV) as a job on the admin port.
    Import(ImportArgs),
    /// Export every retained session (JSONL or CSV) from the admin port.
    Export(ExportArgs),
    /// Load generator: closed-loop scenarios over gRPC, compared with a tonic echo baseline.
    Bench(crate::bench::BenchArgs),
    /// Tokens for the auth file.
    Auth {
        #[command(subcommand)]
        cmd: AuthCmd,
    },
    /// The echo baseline service `bench` compares with.
    #[command(name = "bench-echo-server")]
    BenchEchoServer(crate::bench::echo::EchoArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Print the hex SHA-256 of a token, for `sha256 = "..."` in the auth file. Reads the token
    /// from standard input when it is not given (keeps it out of the shell history).
    #[command(name = "hash-token")]
    HashToken {
        /// The token (default: the first line of standard input).
        token: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective configuration (defaults < config file < environment < flags) as TOML.
    Print(ServeArgs),
}

/// Layers the config file under the flags and validates the result.
fn resolve(
    mut args: ServeArgs,
    matches: &clap::ArgMatches,
) -> anyhow::Result<(
    ServeArgs,
    std::collections::BTreeMap<crate::domain::FleetId, crate::config::FleetSettings>,
)> {
    let fleets = crate::config::layer_file(&mut args, matches)?;
    Ok((args, fleets))
}

/// Runs a parsed command line (`matches` tells which settings were given explicitly).
pub async fn main(cli: Cli, matches: clap::ArgMatches) -> anyhow::Result<()> {
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .cloned()
            .unwrap_or_else(|| matches.clone())
    };
    match cli.command {
        None => serve(cli.serve, &matches).await,
        Some(Command::Serve(args)) => serve(args, &sub("serve")).await,
        Some(Command::Config {
            cmd: ConfigCmd::Print(args),
        }) => {
            let m = sub("config");
            let m = m.subcommand_matches("print").cloned().unwrap_or(m);
            let (args, fleets) = resolve(args, &m)?;
            Config::from_args(args.clone(), fleets.clone())?;
            print!(
                "{}",
                toml::to_string(&crate::config::effective_file(&args, &fleets))?
            );
            Ok(())
        }
        Some(Command::GameSessions { client, cmd }) => client::game_sessions(client, cmd).await,
        Some(Command::PlayerSessions { client, cmd }) => client::player_sessions(client, cmd).await,
        Some(Command::Fleets { client, cmd }) => fleets::fleets(client, cmd).await,
        Some(Command::Health { client, cmd }) => health::health(client, cmd).await,
        Some(Command::Import(args)) => transfer::import(args).await,
        Some(Command::Export(args)) => transfer::export(args).await,
        Some(Command::Bench(args)) => crate::bench::main(args).await,
        Some(Command::BenchEchoServer(args)) => crate::bench::echo::main(args).await,
        Some(Command::Auth {
            cmd: AuthCmd::HashToken { token },
        }) => {
            let token = match token {
                Some(t) => t,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("cannot read the token from standard input")?;
                    line
                }
            };
            let token = token.trim();
            if token.is_empty() {
                anyhow::bail!("the token is empty");
            }
            println!("{}", crate::security::hash_token(token));
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let (args, fleets) = resolve(args, matches)?;
    let config = Config::from_args(args, fleets)?;
    crate::telemetry::init(config.log_format, &config.log_level)?;
    let shutdown = CancellationToken::new();
    let daemon = crate::start(config.clone(), shutdown.clone()).await?;
    let grace = config.shutdown_grace;
    tokio::spawn(watch_signals(shutdown.clone()));
    shutdown.cancelled().await;
    tracing::info!(grace = ?grace, "shutting down: draining in-flight calls");
    match tokio::time::timeout(grace, daemon.wait()).await {
        Ok(result) => {
            result?;
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => {
            anyhow::bail!("shutdown grace of {grace:?} exceeded; exiting with calls in flight")
        }
    }
}

/// First SIGTERM/SIGINT: cancel `shutdown` (drain). Second: exit at once.
async fn watch_signals(shutdown: CancellationToken) {
    let mut signals = 0;
    loop {
        if let Err(e) = next_signal().await {
            tracing::error!(error = %e, "cannot listen for signals");
            return;
        }
        signals += 1;
        if signals == 1 {
            shutdown.cancel();
        } else {
            eprintln!("second signal: exiting immediately");
            std::process::exit(130);
        }
    }
}

#[cfg(unix)]
async fn next_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("SIGINT handler")?,
    }
    Ok(())
}

#[cfg(not(unix))]
async fn next_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("ctrl-c handler")
}

/// Default client timeout for one call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
