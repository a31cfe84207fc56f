//! Daemon settings: the `serve` flags (each also from a `SESSION_BROKER_*` environment variable)
//! and the validated [`Config`] they produce.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::store::StoreConfig;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `session-broker serve` (the default command).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "SESSION_BROKER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Admin HTTP listen address (metrics, probes).
    #[arg(
        long,
        env = "SESSION_BROKER_ADMIN_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub admin_listen: SocketAddr,

    /// Directory for the durable journal.
    #[arg(long, env = "SESSION_BROKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Default time a reservation waits for AcceptPlayerSession before it times out
    /// (game sessions may set their own).
    #[arg(long, env = "SESSION_BROKER_RESERVATION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub reservation_timeout: Duration,

    /// How long terminal player sessions and ended game sessions are kept before purging.
    #[arg(long, env = "SESSION_BROKER_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,

    /// How long an idempotency key is remembered (never less than the reservation timeout).
    #[arg(long, env = "SESSION_BROKER_IDEMPOTENCY_TTL", default_value = "10m", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// How long SIGTERM waits for in-flight calls before exiting.
    #[arg(long, env = "SESSION_BROKER_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log format.
    #[arg(long, env = "SESSION_BROKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `session_broker=debug`).
    #[arg(long, env = "SESSION_BROKER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Parses a human duration such as `60s`, `5m`, `30d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 60s, 5m, 30d)"))
}

/// The validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// A setting that is out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl Config {
    /// Validates the flags.
    pub fn from_args(a: ServeArgs) -> Result<Self, ConfigError> {
        let secs = a.reservation_timeout.as_secs_f64();
        if !(1.0..=86_400.0).contains(&secs) {
            return Err(ConfigError {
                flag: "reservation-timeout",
                reason: "must be between 1s and 1d".into(),
            });
        }
        if a.retention < Duration::from_secs(1) {
            return Err(ConfigError {
                flag: "retention",
                reason: "must be at least 1s".into(),
            });
        }
        Ok(Config {
            listen: a.listen,
            admin_listen: a.admin_listen,
            data_dir: a.data_dir,
            store: StoreConfig {
                reservation_timeout: a.reservation_timeout,
                retention: a.retention,
                idempotency_ttl: a.idempotency_ttl,
            },
            shutdown_grace: a.shutdown_grace,
            log_format: a.log_format,
            log_level: a.log_level,
        })
    }

    /// Defaults with both listeners on ephemeral loopback ports: for tests and embedding.
    pub fn ephemeral() -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("literal"),
            admin_listen: "127.0.0.1:0".parse().expect("literal"),
            data_dir: PathBuf::from("./data"),
            store: StoreConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}
