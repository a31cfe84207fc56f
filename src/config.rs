//! Daemon settings: the `serve` flags (each also from a `SESSION_BROKER_*` environment variable)
//! and the validated [`Config`] they produce.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

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
    /// TOML config file; its keys are the flag names in snake_case, plus `[fleets.<fleet_id>]`
    /// tables. Environment variables and flags override it.
    #[arg(long, env = "SESSION_BROKER_CONFIG")]
    pub config: Option<PathBuf>,

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

    /// Sync durability under load: how long the journal writer lets a group of changes gather
    /// before it writes and syncs them (at most 10ms; 0 never waits). Only when at least
    /// --journal-commit-siblings changes arrived during the previous sync.
    #[arg(long, env = "SESSION_BROKER_JOURNAL_COMMIT_DELAY", default_value = "200us", value_parser = parse_duration)]
    pub journal_commit_delay: Duration,

    /// Changes that must have arrived during the previous sync for the writer to wait
    /// --journal-commit-delay (a lone caller never waits; 0 counts as 1).
    #[arg(long, env = "SESSION_BROKER_JOURNAL_COMMIT_SIBLINGS", default_value_t = crate::journal::DEFAULT_COMMIT_SIBLINGS)]
    pub journal_commit_siblings: u32,

    /// Sync durability: write the journal with `O_DIRECT | O_DSYNC`, one system call per group
    /// that returns once it is durable, instead of a write and an fdatasync (falls back by
    /// itself where the file system refuses direct I/O). Can help on disks with a write cache
    /// and FUA writes; measured neutral on the project's VM, hence off by default.
    #[arg(
        long,
        env = "SESSION_BROKER_JOURNAL_DIRECT_IO",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub journal_direct_io: bool,

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

    /// WatchFleet: how many game sessions with undelivered changes a watcher may fall behind
    /// by before it is cut off (ABORTED) and must resubscribe.
    #[arg(long, env = "SESSION_BROKER_WATCH_BUFFER", default_value_t = 4096)]
    pub watch_buffer: usize,

    /// Send session health to Sentry: `http[s]://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID` (off when
    /// unset).
    #[arg(long, env = "SESSION_BROKER_SENTRY_DSN")]
    pub sentry_dsn: Option<String>,

    /// `aggregate`: per-minute `sessions` items every flush interval; `individual`: one
    /// `session` item per update.
    #[arg(long, env = "SESSION_BROKER_SENTRY_MODE", value_enum, default_value_t = crate::health::sentry::SentryMode::Aggregate)]
    pub sentry_mode: crate::health::sentry::SentryMode,

    /// Aggregate mode: how often aggregates are sent (and once more at shutdown).
    #[arg(long, env = "SESSION_BROKER_SENTRY_FLUSH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sentry_flush_interval: Duration,

    /// Individual mode: updates held for sending; beyond it the oldest are dropped (counted).
    #[arg(long, env = "SESSION_BROKER_SENTRY_QUEUE", default_value_t = 10_000)]
    pub sentry_queue: usize,

    /// Where lifecycle events go: `none`, `segment` (Segment's HTTP API) or `file` (JSON lines).
    #[arg(long, env = "SESSION_BROKER_ANALYTICS_SINK", value_enum, default_value_t = crate::analytics::SinkKind::None)]
    pub analytics_sink: crate::analytics::SinkKind,

    /// Segment sink: the API endpoint (`{endpoint}/v1/batch` is posted to).
    #[arg(
        long,
        env = "SESSION_BROKER_SEGMENT_ENDPOINT",
        default_value = "https://api.segment.io"
    )]
    pub segment_endpoint: String,

    /// Segment sink: the source's write key (prefer the environment variable or
    /// --segment-write-key-file; it is never logged).
    #[arg(long, env = "SESSION_BROKER_SEGMENT_WRITE_KEY", hide_env_values = true)]
    pub segment_write_key: Option<String>,

    /// Segment sink: a file holding the write key (surrounding whitespace ignored).
    #[arg(long, env = "SESSION_BROKER_SEGMENT_WRITE_KEY_FILE")]
    pub segment_write_key_file: Option<PathBuf>,

    /// Segment sink: timeout of each request.
    #[arg(long, env = "SESSION_BROKER_SEGMENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub segment_timeout: Duration,

    /// Segment sink: gzip request bodies.
    #[arg(long, env = "SESSION_BROKER_SEGMENT_GZIP")]
    pub segment_gzip: bool,

    /// File sink: the JSON-lines file (default: analytics.jsonl in the data directory).
    #[arg(long, env = "SESSION_BROKER_ANALYTICS_FILE")]
    pub analytics_file: Option<PathBuf>,

    /// File sink: rotate the file (to FILE.1) past this size.
    #[arg(long, env = "SESSION_BROKER_ANALYTICS_FILE_MAX_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub analytics_file_max_bytes: u64,

    /// Send a batch as soon as this many events are ready (1-2500).
    #[arg(
        long,
        env = "SESSION_BROKER_ANALYTICS_BATCH_SIZE",
        default_value_t = 250
    )]
    pub analytics_batch_size: usize,

    /// Send the events that are ready at least this often.
    #[arg(long, env = "SESSION_BROKER_ANALYTICS_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub analytics_flush_interval: Duration,

    /// Batches being sent at once.
    #[arg(
        long,
        env = "SESSION_BROKER_ANALYTICS_MAX_IN_FLIGHT",
        default_value_t = 4
    )]
    pub analytics_max_in_flight: usize,

    /// Journal bytes kept for undelivered events beyond what recovery needs; past it the oldest
    /// are deleted and their events dropped (counted, logged).
    #[arg(long, env = "SESSION_BROKER_ANALYTICS_MAX_BACKLOG", default_value = "1GiB", value_parser = parse_bytes)]
    pub analytics_max_backlog: u64,

    /// Largest import file accepted by `POST /v1/import` (413 beyond).
    #[arg(long, env = "SESSION_BROKER_IMPORT_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub import_max_bytes: u64,

    /// Tokens (SHA-256 hashes), roles, fleet scopes and rate limits, TOML (see
    /// deploy/auth.example.toml); reloaded on SIGHUP. Without it every caller may do everything,
    /// which is refused on a non-loopback address unless --allow-unauthenticated is given.
    #[arg(long, env = "SESSION_BROKER_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Serve without authentication on a non-loopback address (logged as a warning at every
    /// start).
    #[arg(long, env = "SESSION_BROKER_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// With --auth-file, /metrics needs a token too (any role); otherwise it is open like the
    /// probes.
    #[arg(long, env = "SESSION_BROKER_METRICS_REQUIRE_AUTH")]
    pub metrics_require_auth: bool,

    /// TLS certificate chain (PEM) for both ports; needs --tls-key.
    #[arg(long, env = "SESSION_BROKER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for both ports.
    #[arg(long, env = "SESSION_BROKER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: clients must present a certificate signed by this CA (PEM).
    #[arg(long, env = "SESSION_BROKER_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Largest gRPC request message (larger: RESOURCE_EXHAUSTED).
    #[arg(long, env = "SESSION_BROKER_MAX_REQUEST_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_request_bytes: u64,

    /// HTTP/2 streams (concurrent calls) one gRPC connection may open.
    #[arg(
        long,
        env = "SESSION_BROKER_MAX_CONCURRENT_STREAMS",
        default_value_t = 256
    )]
    pub max_concurrent_streams: u32,

    /// Batch the replies of concurrent calls into one write per gRPC connection (a connection
    /// with calls in flight yields once before it writes); `false`: one write per reply.
    #[arg(
        long,
        env = "SESSION_BROKER_GRPC_BATCH_WRITES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub grpc_batch_writes: bool,

    /// Calls handled at once across all connections; beyond it calls fail at once with
    /// UNAVAILABLE (health checks are never shed).
    #[arg(long, env = "SESSION_BROKER_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Open WatchFleet/WatchSessionUpdates streams per token (beyond: RESOURCE_EXHAUSTED).
    #[arg(
        long,
        env = "SESSION_BROKER_MAX_WATCH_STREAMS_PER_TOKEN",
        default_value_t = 16
    )]
    pub max_watch_streams_per_token: usize,

    /// Open connections on the gRPC port; a connection beyond it is closed at once (counted
    /// in `session_broker_connections_refused_total`).
    #[arg(long, env = "SESSION_BROKER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Open connections on the admin port (probes, scrapes, operators), likewise.
    #[arg(
        long,
        env = "SESSION_BROKER_MAX_ADMIN_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_admin_connections: usize,

    /// Open connections on the gRPC port from one client address (an IPv4 address, or an IPv6
    /// /64), so that one host cannot take the whole `--max-connections`; beyond it a new
    /// connection from that address is closed at once (0: no per-address limit). Raise it when
    /// a large fleet reaches the daemon through one NAT address.
    #[arg(
        long,
        env = "SESSION_BROKER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1000
    )]
    pub max_connections_per_address: usize,

    /// Open connections on the admin port from one client address, likewise (0: no limit), so
    /// that one host cannot lock the orchestrator's probes and the scrapes out.
    #[arg(
        long,
        env = "SESSION_BROKER_MAX_ADMIN_CONNECTIONS_PER_ADDRESS",
        default_value_t = 128
    )]
    pub max_admin_connections_per_address: usize,

    /// A new connection on either port must send its first 24 bytes (the HTTP/2 preface's
    /// length) and, with TLS, finish its handshake within this; otherwise it is closed.
    #[arg(long, env = "SESSION_BROKER_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// How often an open connection is checked for a live peer: HTTP/2 PINGs on the gRPC port,
    /// TCP keepalive probes on the admin port (`0s`: never). A game server that vanished
    /// without closing its connection then gives its connection back.
    #[arg(long, env = "SESSION_BROKER_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// A peer that does not answer a keepalive check within this is disconnected.
    #[arg(long, env = "SESSION_BROKER_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,

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
    /// `None`: no Sentry sink.
    pub sentry: Option<crate::health::sentry::SentryConfig>,
    /// `None`: no analytics (needs the journal).
    pub analytics: Option<crate::analytics::AnalyticsConfig>,
    /// Largest import upload.
    pub import_max_bytes: u64,
    /// The tokens file (`None`: no authentication).
    pub auth_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// `/metrics` needs a token.
    pub metrics_require_auth: bool,
    /// Batch concurrent replies into one write per gRPC connection.
    pub grpc_batch_writes: bool,
    /// `None`: plain TCP.
    pub tls: Option<crate::security::tls::TlsConfig>,
    pub limits: crate::security::Limits,
}

/// A setting that is out of range, or a config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct ConfigError {
    pub flag: String,
    pub reason: String,
}

fn bad(flag: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        flag: flag.replace('_', "-"),
        reason: reason.to_string(),
    }
}

/// Settings of one fleet (from `[fleets.<fleet_id>]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSettings {
    /// Reservation timeout of its game sessions that do not set one.
    pub reservation_timeout: Option<Duration>,
    /// Heartbeat timeout of its game sessions that do not set one.
    pub heartbeat_timeout: Option<Duration>,
    /// Seats of its game sessions that do not set them, and the most any may ask for.
    pub max_players: Option<u32>,
    /// Environment of its game sessions that do not set one.
    pub environment: Option<String>,
}

/// The config file, as written (every key optional; unknown keys are rejected).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every_bytes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every_records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_truncate_corrupt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_commit_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_commit_siblings: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_direct_io: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_buffer: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentry_dsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentry_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentry_flush_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentry_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_sink: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_write_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_gzip: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_file_max_bytes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_flush_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_max_in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_max_backlog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_max_bytes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_require_auth: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_batch_writes: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watch_streams_per_token: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_admin_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_address: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_admin_connections_per_address: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fleets: BTreeMap<String, FleetFileConfig>,
}

/// `[fleets.<fleet_id>]` in the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

fn parse_enum<T: ValueEnum>(s: &str) -> Result<T, String> {
    T::from_str(s, true).map_err(|_| format!("{s:?} is not one of the allowed values"))
}

/// Layers the config file under the flags: a setting still at its default (not given as a flag
/// nor as a `SESSION_BROKER_*` variable) takes the file's value. Returns the fleet settings.
pub fn layer_file(
    args: &mut ServeArgs,
    matches: &clap::ArgMatches,
) -> Result<BTreeMap<crate::domain::FleetId, FleetSettings>, ConfigError> {
    let Some(path) = args.config.clone() else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad("config", format!("{}: {e}", path.display())))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| bad("config", format!("{}: {e}", path.display())))?;
    let from_default = |id: &str| {
        matches
            .value_source(id)
            .is_none_or(|s| s == ValueSource::DefaultValue)
    };
    macro_rules! layer {
        ($field:ident, $parse:expr) => {
            if let Some(v) = &file.$field {
                if from_default(stringify!($field)) {
                    args.$field = $parse(v).map_err(|e| {
                        bad(stringify!($field), format!("in {}: {e}", path.display()))
                    })?;
                }
            }
        };
    }
    layer!(listen, |v: &String| v.parse::<SocketAddr>());
    layer!(admin_listen, |v: &String| v.parse::<SocketAddr>());
    layer!(data_dir, |v: &String| Ok::<_, String>(PathBuf::from(v)));
    layer!(durability, |v: &String| parse_enum::<Durability>(v));
    layer!(segment_size, |v: &String| parse_bytes(v));
    layer!(snapshot_every_bytes, |v: &String| parse_bytes(v));
    layer!(snapshot_every_records, |v: &u64| Ok::<_, String>(*v));
    layer!(journal_truncate_corrupt, |v: &bool| Ok::<_, String>(*v));
    layer!(journal_commit_delay, |v: &String| parse_duration(v));
    layer!(journal_commit_siblings, |v: &u32| Ok::<_, String>(*v));
    layer!(journal_direct_io, |v: &bool| Ok::<_, String>(*v));
    layer!(reservation_timeout, |v: &String| parse_duration(v));
    layer!(retention, |v: &String| parse_duration(v));
    layer!(idempotency_ttl, |v: &String| parse_duration(v));
    layer!(watch_buffer, |v: &usize| Ok::<_, String>(*v));
    layer!(sentry_dsn, |v: &String| Ok::<_, String>(Some(v.clone())));
    layer!(sentry_mode, |v: &String| parse_enum::<
        crate::health::sentry::SentryMode,
    >(v));
    layer!(sentry_flush_interval, |v: &String| parse_duration(v));
    layer!(sentry_queue, |v: &usize| Ok::<_, String>(*v));
    layer!(analytics_sink, |v: &String| parse_enum::<
        crate::analytics::SinkKind,
    >(v));
    layer!(segment_endpoint, |v: &String| Ok::<_, String>(v.clone()));
    layer!(segment_write_key_file, |v: &String| Ok::<_, String>(Some(
        PathBuf::from(v)
    )));
    layer!(segment_timeout, |v: &String| parse_duration(v));
    layer!(segment_gzip, |v: &bool| Ok::<_, String>(*v));
    layer!(analytics_file, |v: &String| Ok::<_, String>(Some(
        PathBuf::from(v)
    )));
    layer!(analytics_file_max_bytes, |v: &String| parse_bytes(v));
    layer!(analytics_batch_size, |v: &usize| Ok::<_, String>(*v));
    layer!(analytics_flush_interval, |v: &String| parse_duration(v));
    layer!(analytics_max_in_flight, |v: &usize| Ok::<_, String>(*v));
    layer!(analytics_max_backlog, |v: &String| parse_bytes(v));
    layer!(import_max_bytes, |v: &String| parse_bytes(v));
    let path_of = |v: &String| Ok::<_, String>(Some(PathBuf::from(v)));
    layer!(auth_file, path_of);
    layer!(allow_unauthenticated, |v: &bool| Ok::<_, String>(*v));
    layer!(metrics_require_auth, |v: &bool| Ok::<_, String>(*v));
    layer!(tls_cert, path_of);
    layer!(tls_key, path_of);
    layer!(tls_client_ca, path_of);
    layer!(max_request_bytes, |v: &String| parse_bytes(v));
    layer!(max_concurrent_streams, |v: &u32| Ok::<_, String>(*v));
    layer!(grpc_batch_writes, |v: &bool| Ok::<_, String>(*v));
    layer!(max_in_flight, |v: &usize| Ok::<_, String>(*v));
    layer!(max_watch_streams_per_token, |v: &usize| Ok::<_, String>(*v));
    layer!(max_connections, |v: &usize| Ok::<_, String>(*v));
    layer!(max_admin_connections, |v: &usize| Ok::<_, String>(*v));
    layer!(max_connections_per_address, |v: &usize| Ok::<_, String>(*v));
    layer!(
        max_admin_connections_per_address,
        |v: &usize| Ok::<_, String>(*v)
    );
    layer!(handshake_timeout, |v: &String| parse_duration(v));
    layer!(keepalive_interval, |v: &String| parse_duration(v));
    layer!(keepalive_timeout, |v: &String| parse_duration(v));
    layer!(shutdown_grace, |v: &String| parse_duration(v));
    layer!(log_format, |v: &String| parse_enum::<LogFormat>(v));
    layer!(log_level, |v: &String| Ok::<_, String>(v.clone()));

    let mut fleets = BTreeMap::new();
    for (id, f) in file.fleets {
        let flag = format!("config [fleets.{id}]");
        let fleet = crate::domain::FleetId::parse("fleet_id", &id).map_err(|e| bad(&flag, e))?;
        let duration = |v: &Option<String>| v.as_deref().map(parse_duration).transpose();
        let settings = FleetSettings {
            reservation_timeout: duration(&f.reservation_timeout).map_err(|e| bad(&flag, e))?,
            heartbeat_timeout: duration(&f.heartbeat_timeout).map_err(|e| bad(&flag, e))?,
            max_players: f.max_players,
            environment: f.environment,
        };
        if let Some(m) = settings.max_players {
            crate::domain::check_capacity_value(m)
                .map_err(|e| bad(&flag, format!("max_players: {e}")))?;
        }
        fleets.insert(fleet, settings);
    }
    Ok(fleets)
}

impl Config {
    /// Validates the (layered) flags.
    pub fn from_args(
        a: ServeArgs,
        fleets: BTreeMap<crate::domain::FleetId, FleetSettings>,
    ) -> Result<Self, ConfigError> {
        let secs = a.reservation_timeout.as_secs_f64();
        if !(1.0..=86_400.0).contains(&secs) {
            return Err(bad("reservation_timeout", "must be between 1s and 1d"));
        }
        if a.retention < Duration::from_secs(1) {
            return Err(bad("retention", "must be at least 1s"));
        }
        let sentry = match &a.sentry_dsn {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(crate::health::sentry::SentryConfig {
                dsn: crate::health::sentry::Dsn::parse(s).map_err(|e| bad("sentry_dsn", e))?,
                mode: a.sentry_mode,
                flush_interval: a.sentry_flush_interval.max(Duration::from_secs(1)),
                queue: a.sentry_queue.max(1),
                shutdown_timeout: a.shutdown_grace / 2,
            }),
        };
        if a.watch_buffer == 0 {
            return Err(bad("watch_buffer", "must be at least 1"));
        }
        let analytics = analytics_config(&a)?;
        if a.segment_size < 4096 {
            return Err(bad("segment_size", "must be at least 4KiB"));
        }
        if a.journal_commit_delay > crate::journal::MAX_COMMIT_DELAY {
            return Err(bad("journal_commit_delay", "must be at most 10ms"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&a.log_level) {
            return Err(bad("log_level", e));
        }
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(crate::security::tls::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: a.tls_client_ca.clone(),
            }),
            (None, None) if a.tls_client_ca.is_some() => {
                return Err(bad("tls_client_ca", "needs --tls-cert and --tls-key"))
            }
            (None, None) => None,
            (Some(_), None) => return Err(bad("tls_cert", "needs --tls-key")),
            (None, Some(_)) => return Err(bad("tls_key", "needs --tls-cert")),
        };
        if !(Duration::from_millis(10)..=Duration::from_secs(600)).contains(&a.handshake_timeout) {
            return Err(bad("handshake_timeout", "must be between 10ms and 10m"));
        }
        if !a.keepalive_interval.is_zero() && a.keepalive_interval < Duration::from_millis(10) {
            return Err(bad(
                "keepalive_interval",
                "must be 0s (off) or at least 10ms",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(600)).contains(&a.keepalive_timeout) {
            return Err(bad("keepalive_timeout", "must be between 10ms and 10m"));
        }
        if !(1024..=(64 << 20)).contains(&a.max_request_bytes) {
            return Err(bad("max_request_bytes", "must be between 1KiB and 64MiB"));
        }
        for (flag, value) in [
            ("max_concurrent_streams", a.max_concurrent_streams as usize),
            ("max_in_flight", a.max_in_flight),
            ("max_watch_streams_per_token", a.max_watch_streams_per_token),
            ("max_connections", a.max_connections),
            ("max_admin_connections", a.max_admin_connections),
        ] {
            if value == 0 {
                return Err(bad(flag, "must be at least 1"));
            }
        }
        let limits = crate::security::Limits {
            max_request_bytes: a.max_request_bytes as usize,
            max_concurrent_streams: a.max_concurrent_streams,
            max_in_flight: a.max_in_flight,
            max_watch_streams_per_token: a.max_watch_streams_per_token,
            max_connections: a.max_connections,
            max_admin_connections: a.max_admin_connections,
            max_connections_per_address: a.max_connections_per_address,
            max_admin_connections_per_address: a.max_admin_connections_per_address,
            handshake_timeout: a.handshake_timeout,
            keepalive_interval: (!a.keepalive_interval.is_zero()).then_some(a.keepalive_interval),
            keepalive_timeout: a.keepalive_timeout,
            ..crate::security::Limits::default()
        };
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
                commit_delay: a.journal_commit_delay,
                commit_siblings: a.journal_commit_siblings,
                direct_io: a.journal_direct_io,
                ..JournalConfig::new(PathBuf::new())
            }),
            store: StoreConfig {
                reservation_timeout: a.reservation_timeout,
                retention: a.retention,
                idempotency_ttl: a.idempotency_ttl,
                watch_buffer: a.watch_buffer,
                fleets: fleets.into_iter().collect(),
            },
            shutdown_grace: a.shutdown_grace,
            log_format: a.log_format,
            log_level: a.log_level,
            sentry,
            analytics,
            import_max_bytes: a.import_max_bytes,
            auth_file: a.auth_file,
            allow_unauthenticated: a.allow_unauthenticated,
            metrics_require_auth: a.metrics_require_auth,
            grpc_batch_writes: a.grpc_batch_writes,
            tls,
            limits,
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
            sentry: None,
            analytics: None,
            import_max_bytes: 1 << 30,
            auth_file: None,
            allow_unauthenticated: false,
            metrics_require_auth: false,
            grpc_batch_writes: true,
            tls: None,
            limits: crate::security::Limits::default(),
        }
    }
}

/// The analytics settings of the flags (`None` for `--analytics-sink none`).
fn analytics_config(
    a: &ServeArgs,
) -> Result<Option<crate::analytics::AnalyticsConfig>, ConfigError> {
    use crate::analytics::{AnalyticsConfig, SinkConfig, SinkKind};
    if !(1..=2500).contains(&a.analytics_batch_size) {
        return Err(bad("analytics_batch_size", "must be between 1 and 2500"));
    }
    if a.analytics_flush_interval < Duration::from_millis(10) {
        return Err(bad("analytics_flush_interval", "must be at least 10ms"));
    }
    if !(1..=64).contains(&a.analytics_max_in_flight) {
        return Err(bad("analytics_max_in_flight", "must be between 1 and 64"));
    }
    let sink = match a.analytics_sink {
        SinkKind::None => return Ok(None),
        SinkKind::Segment => {
            let endpoint = a.segment_endpoint.trim().trim_end_matches('/').to_string();
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || endpoint.len() <= "https://".len()
            {
                return Err(bad(
                    "segment_endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
            let write_key = match (&a.segment_write_key, &a.segment_write_key_file) {
                (Some(k), _) if !k.trim().is_empty() => k.trim().to_string(),
                (_, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| bad("segment_write_key_file", format!("{}: {e}", path.display())))?
                    .trim()
                    .to_string(),
                _ => String::new(),
            };
            if write_key.is_empty() {
                return Err(bad(
                    "segment_write_key",
                    "the segment sink needs a write key (--segment-write-key, SESSION_BROKER_SEGMENT_WRITE_KEY or --segment-write-key-file)",
                ));
            }
            if a.segment_timeout < Duration::from_millis(100) {
                return Err(bad("segment_timeout", "must be at least 100ms"));
            }
            SinkConfig::Segment {
                endpoint,
                write_key,
                timeout: a.segment_timeout,
                gzip: a.segment_gzip,
            }
        }
        SinkKind::File => SinkConfig::File {
            path: a
                .analytics_file
                .clone()
                .unwrap_or_else(|| a.data_dir.join("analytics.jsonl")),
            max_bytes: a.analytics_file_max_bytes.max(1),
        },
    };
    let mut c = AnalyticsConfig::new(sink);
    c.batch_size = a.analytics_batch_size;
    c.flush_interval = a.analytics_flush_interval;
    c.max_in_flight = a.analytics_max_in_flight;
    c.max_backlog = a.analytics_max_backlog;
    c.shutdown_timeout = a.shutdown_grace / 2;
    Ok(Some(c))
}

/// The effective settings as a config file (for `session-broker config print`).
pub fn effective_file(
    a: &ServeArgs,
    fleets: &BTreeMap<crate::domain::FleetId, FleetSettings>,
) -> FileConfig {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    FileConfig {
        listen: Some(a.listen.to_string()),
        admin_listen: Some(a.admin_listen.to_string()),
        data_dir: Some(a.data_dir.display().to_string()),
        durability: Some(format!("{:?}", a.durability).to_lowercase()),
        segment_size: Some(a.segment_size.to_string()),
        snapshot_every_bytes: Some(a.snapshot_every_bytes.to_string()),
        snapshot_every_records: Some(a.snapshot_every_records),
        journal_truncate_corrupt: Some(a.journal_truncate_corrupt),
        journal_commit_delay: Some(d(a.journal_commit_delay)),
        journal_commit_siblings: Some(a.journal_commit_siblings),
        journal_direct_io: Some(a.journal_direct_io),
        reservation_timeout: Some(d(a.reservation_timeout)),
        retention: Some(d(a.retention)),
        idempotency_ttl: Some(d(a.idempotency_ttl)),
        watch_buffer: Some(a.watch_buffer),
        sentry_dsn: a.sentry_dsn.clone(),
        sentry_mode: Some(
            match a.sentry_mode {
                crate::health::sentry::SentryMode::Aggregate => "aggregate",
                crate::health::sentry::SentryMode::Individual => "individual",
            }
            .into(),
        ),
        sentry_flush_interval: Some(d(a.sentry_flush_interval)),
        sentry_queue: Some(a.sentry_queue),
        analytics_sink: Some(format!("{:?}", a.analytics_sink).to_lowercase()),
        segment_endpoint: Some(a.segment_endpoint.clone()),
        // The write key itself is a secret: never printed.
        segment_write_key_file: a
            .segment_write_key_file
            .as_ref()
            .map(|p| p.display().to_string()),
        segment_timeout: Some(d(a.segment_timeout)),
        segment_gzip: Some(a.segment_gzip),
        analytics_file: a.analytics_file.as_ref().map(|p| p.display().to_string()),
        analytics_file_max_bytes: Some(a.analytics_file_max_bytes.to_string()),
        analytics_batch_size: Some(a.analytics_batch_size),
        analytics_flush_interval: Some(d(a.analytics_flush_interval)),
        analytics_max_in_flight: Some(a.analytics_max_in_flight),
        analytics_max_backlog: Some(a.analytics_max_backlog.to_string()),
        import_max_bytes: Some(a.import_max_bytes.to_string()),
        auth_file: a.auth_file.as_ref().map(|p| p.display().to_string()),
        allow_unauthenticated: Some(a.allow_unauthenticated),
        metrics_require_auth: Some(a.metrics_require_auth),
        tls_cert: a.tls_cert.as_ref().map(|p| p.display().to_string()),
        tls_key: a.tls_key.as_ref().map(|p| p.display().to_string()),
        tls_client_ca: a.tls_client_ca.as_ref().map(|p| p.display().to_string()),
        max_request_bytes: Some(a.max_request_bytes.to_string()),
        max_concurrent_streams: Some(a.max_concurrent_streams),
        grpc_batch_writes: Some(a.grpc_batch_writes),
        max_in_flight: Some(a.max_in_flight),
        max_watch_streams_per_token: Some(a.max_watch_streams_per_token),
        max_connections: Some(a.max_connections),
        max_admin_connections: Some(a.max_admin_connections),
        max_connections_per_address: Some(a.max_connections_per_address),
        max_admin_connections_per_address: Some(a.max_admin_connections_per_address),
        handshake_timeout: Some(d(a.handshake_timeout)),
        keepalive_interval: Some(d(a.keepalive_interval)),
        keepalive_timeout: Some(d(a.keepalive_timeout)),
        shutdown_grace: Some(d(a.shutdown_grace)),
        log_format: Some(format!("{:?}", a.log_format).to_lowercase()),
        log_level: Some(a.log_level.clone()),
        fleets: fleets
            .iter()
            .map(|(id, f)| {
                (
                    id.to_string(),
                    FleetFileConfig {
                        reservation_timeout: f.reservation_timeout.map(d),
                        heartbeat_timeout: f.heartbeat_timeout.map(d),
                        max_players: f.max_players,
                        environment: f.environment.clone(),
                    },
                )
            })
            .collect(),
    }
}
