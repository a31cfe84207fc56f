//! Daemon settings: the `serve` flags (each also from a `SESSION_BROKER_*` environment variable)
//! and the validated [`Config`] they produce.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::{
    journal::{Durability, JournalConfig},
    store::StoreConfig,
};

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

    /// Directory for the durable journal and snapshots (created if missing).
    #[arg(long, env = "SESSION_BROKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// sync: reply after the change is fdatasync'ed (group commit); async: reply at once and
    /// sync at least every 100 ms (a crash may lose the last 100 ms of acknowledged changes).
    #[arg(long, env = "SESSION_BROKER_DURABILITY", value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,

    /// Start a new journal segment file past this size.
    #[arg(long, env = "SESSION_BROKER_SEGMENT_SIZE", default_value = "64MiB", value_parser = parse_bytes)]
    pub segment_size: u64,

    /// Take a snapshot after this many journal bytes (bounds disk use and restart time).
    #[arg(long, env = "SESSION_BROKER_SNAPSHOT_EVERY_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub snapshot_every_bytes: u64,

    /// Take a snapshot after this many journal records.
    #[arg(
        long,
        env = "SESSION_BROKER_SNAPSHOT_EVERY_RECORDS",
        default_value_t = 1_000_000
    )]
    pub snapshot_every_records: u64,

    /// On a corrupt journal record before the tail, truncate there (losing what follows)
    /// instead of refusing to start.
    #[arg(long, env = "SESSION_BROKER_JOURNAL_TRUNCATE_CORRUPT")]
    pub journal_truncate_corrupt: bool,

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

/// Parses a size such as `4096`, `64KiB`, `64MiB`, `1GiB` (also `KB`, `MB`, `GB`, `K`, `M`, `G`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `None`: keep state in memory only (tests, embedding). The daemon always has a journal.
    pub journal: Option<JournalConfig>,
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
        if a.segment_size < 4096 {
            return Err(ConfigError {
                flag: "segment-size",
                reason: "must be at least 4KiB".into(),
            });
        }
        Ok(Config {
            listen: a.listen,
            admin_listen: a.admin_listen,
            journal: Some(JournalConfig {
                dir: a.data_dir,
                durability: a.durability,
                segment_bytes: a.segment_size,
                snapshot_every_bytes: a.snapshot_every_bytes.max(1),
                snapshot_every_records: a.snapshot_every_records.max(1),
                truncate_corrupt: a.journal_truncate_corrupt,
            }),
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

    /// Defaults with both listeners on ephemeral loopback ports and state in memory only:
    /// for tests and embedding. Set `journal` for durability.
    pub fn ephemeral() -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("literal"),
            admin_listen: "127.0.0.1:0".parse().expect("literal"),
            journal: None,
            store: StoreConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}
