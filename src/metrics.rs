//! Prometheus metrics (prometheus-client, one registry per daemon, prefix `session_broker_`).
//!
//! Event metrics (gRPC calls, sweeper, journal) are recorded where they happen; the state
//! gauges and transition counters per fleet are read from the store's counters at scrape time
//! (a collector), so they can never drift from the state.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use crate::security::connections::{ConnectionLimit, Refusal};

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use crate::store::{Store, Transition};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Every metric of one daemon.
pub struct Metrics {
    registry: Registry,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_duration: Family<MethodLabels, Histogram>,
    pub sweeper_lag: Histogram,
    pub sweeper_expired: Counter,
    pub journal_append: Histogram,
    pub journal_fsync: Histogram,
    pub journal_bytes: Counter,
    /// Journal segments started by rotation, by how their space was made ready: `zeros`
    /// (written ahead, so syncs only flush data) or `preallocated` (the spare was not ready).
    pub journal_segments: Family<SpaceLabels, Counter>,
    pub snapshot_duration: Histogram,
    pub recovery_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Open WatchFleet streams.
    pub fleet_watchers: Gauge,
    /// WatchFleet streams cut off for falling behind.
    pub fleet_watchers_lagged: Counter,
    /// WatchSessionUpdates streams cut off for falling behind.
    pub health_watchers_lagged: Counter,
    /// Envelopes Sentry accepted.
    pub sentry_envelopes: Counter,
    /// Session updates (or aggregate items) not delivered to Sentry, by reason.
    pub sentry_dropped: Family<ReasonLabels, Counter>,
    /// Calls refused before reaching a handler, by reason (see [`REJECT_REASONS`]).
    pub requests_rejected: Family<ReasonLabels, Counter>,
    /// Analytics events by outcome (sent, dropped_too_large, dropped_rejected, dropped_backlog).
    pub analytics_events: Family<OutcomeLabels, Counter>,
    /// Analytics batch attempts by result (delivered, retried, rejected).
    pub analytics_batches: Family<ResultLabels, Counter>,
    /// Analytics batch attempts that will be retried.
    pub analytics_retries: Counter,
    /// Age of the oldest analytics event not yet delivered (0 when caught up).
    pub analytics_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Request body bytes of each analytics batch sent.
    pub analytics_batch_bytes: Histogram,
    /// The listeners' connection counts, read at scrape time (set once they exist).
    connections: Arc<std::sync::OnceLock<[Arc<ConnectionLimit>; 2]>>,
}

/// Labels of the analytics event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Labels of the analytics batch counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The `reason` label values of `session_broker_requests_rejected_total`.
pub const REJECT_REASONS: [&str; 5] = [
    "unauthenticated",
    "permission_denied",
    "rate_limited",
    "overloaded",
    "watch_limit",
];

/// Labels of the journal segment counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpaceLabels {
    pub space: &'static str,
}

/// Labels of a loss counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A registry with every metric; `store` feeds the per-fleet gauges and counters.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        let mut registry = Registry::with_prefix("session_broker");
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            grpc_requests.clone(),
        );
        let grpc_duration = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency by method",
            grpc_duration.clone(),
        );
        let sweeper_lag = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "sweeper_lag_seconds",
            "How late each reservation timeout fired after its deadline",
            sweeper_lag.clone(),
        );
        let sweeper_expired = Counter::default();
        registry.register(
            "sweeper_expired",
            "Reservations timed out by the sweeper",
            sweeper_expired.clone(),
        );
        let journal_append = latency_histogram();
        registry.register(
            "journal_append_duration_seconds",
            "Time from a call's append to its records being durable",
            journal_append.clone(),
        );
        let journal_fsync = latency_histogram();
        registry.register(
            "journal_fsync_duration_seconds",
            "Duration of each journal fdatasync (with direct I/O, of each durable write)",
            journal_fsync.clone(),
        );
        let journal_bytes = Counter::default();
        registry.register(
            "journal_bytes",
            "Bytes written to the journal",
            journal_bytes.clone(),
        );
        let journal_segments = Family::<SpaceLabels, Counter>::default();
        registry.register(
            "journal_segments",
            "Journal segments started by rotation, by how their space was made ready",
            journal_segments.clone(),
        );
        for space in ["zeros", "preallocated"] {
            let _ = journal_segments.get_or_create(&SpaceLabels { space });
        }
        let snapshot_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "snapshot_duration_seconds",
            "Duration of each snapshot",
            snapshot_duration.clone(),
        );
        let recovery_duration = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "recovery_duration_seconds",
            "Duration of the start-up recovery",
            recovery_duration.clone(),
        );
        let fleet_watchers = Gauge::default();
        registry.register(
            "fleet_watchers",
            "Open WatchFleet streams",
            fleet_watchers.clone(),
        );
        let fleet_watchers_lagged = Counter::default();
        registry.register(
            "fleet_watchers_lagged",
            "WatchFleet streams cut off because they fell too far behind",
            fleet_watchers_lagged.clone(),
        );
        let health_watchers_lagged = Counter::default();
        registry.register(
            "health_watchers_lagged",
            "WatchSessionUpdates streams cut off because they fell too far behind",
            health_watchers_lagged.clone(),
        );
        let sentry_envelopes = Counter::default();
        registry.register(
            "sentry_envelopes",
            "Envelopes of session health the Sentry sink delivered",
            sentry_envelopes.clone(),
        );
        let requests_rejected = Family::<ReasonLabels, Counter>::default();
        for reason in REJECT_REASONS {
            let _ = requests_rejected.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "requests_rejected",
            "Calls (gRPC and admin HTTP) refused before any work: unauthenticated, permission_denied, rate_limited, overloaded, watch_limit",
            requests_rejected.clone(),
        );
        let sentry_dropped = Family::<ReasonLabels, Counter>::default();
        for reason in crate::health::sentry::DROP_REASONS {
            let _ = sentry_dropped.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "sentry_dropped",
            "Session updates (aggregate mode: sessions items) not delivered to Sentry, by reason",
            sentry_dropped.clone(),
        );
        let analytics_events = Family::<OutcomeLabels, Counter>::default();
        for outcome in crate::analytics::EVENT_OUTCOMES {
            let _ = analytics_events.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "analytics_events",
            "Analytics events by outcome (sent, dropped_too_large, dropped_rejected, dropped_backlog)",
            analytics_events.clone(),
        );
        let analytics_batches = Family::<ResultLabels, Counter>::default();
        for result in crate::analytics::BATCH_RESULTS {
            let _ = analytics_batches.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "analytics_batches",
            "Analytics batch attempts by result (delivered, retried, rejected)",
            analytics_batches.clone(),
        );
        let analytics_retries = Counter::default();
        registry.register(
            "analytics_retries",
            "Analytics batch attempts that failed and are retried",
            analytics_retries.clone(),
        );
        let analytics_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "analytics_lag_seconds",
            "Age of the oldest analytics event not yet delivered (0 when caught up)",
            analytics_lag.clone(),
        );
        let analytics_batch_bytes = Histogram::new(exponential_buckets(1024.0, 2.0, 10));
        registry.register(
            "analytics_batch_bytes",
            "Request body bytes of each analytics batch sent",
            analytics_batch_bytes.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Build information", build_info);
        registry.register_collector(Box::new(StoreCollector {
            store: Arc::downgrade(&store),
        }));
        let connections = Arc::<std::sync::OnceLock<_>>::default();
        registry.register_collector(Box::new(ConnectionsCollector(connections.clone())));
        Arc::new(Metrics {
            connections,
            registry,
            grpc_requests,
            grpc_duration,
            sweeper_lag,
            sweeper_expired,
            journal_append,
            journal_fsync,
            journal_bytes,
            journal_segments,
            snapshot_duration,
            recovery_duration,
            fleet_watchers,
            fleet_watchers_lagged,
            health_watchers_lagged,
            sentry_envelopes,
            sentry_dropped,
            requests_rejected,
            analytics_events,
            analytics_batches,
            analytics_retries,
            analytics_lag,
            analytics_batch_bytes,
        })
    }

    /// Records one gRPC call.
    pub fn observe_grpc(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.grpc_duration
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// Reports the open and refused connections of `ports` (the first call wins).
    pub fn watch_connections(&self, ports: [Arc<ConnectionLimit>; 2]) {
        let _ = self.connections.set(ports);
    }

    /// The Prometheus text exposition format (0.0.4), plus process metrics.
    pub fn render(&self) -> String {
        let mut open_metrics = String::new();
        let _ = encode(&mut open_metrics, &self.registry);
        let mut out = to_prometheus_text(&open_metrics);
        process_metrics(&mut out);
        out
    }
}

/// Converts OpenMetrics text to the Prometheus text format: counter families are named with
/// their `_total` suffix in `# HELP`/`# TYPE`, and the `# EOF` trailer is dropped. Every
/// Prometheus version and `promtool check metrics` accept the result.
fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Canonical upper-case names of gRPC codes (bounded label values).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Open and refused connections of the listeners, read at scrape time.
#[derive(Debug)]
struct ConnectionsCollector(Arc<std::sync::OnceLock<[Arc<ConnectionLimit>; 2]>>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Port {
    port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortReason {
    port: &'static str,
    reason: &'static str,
}

impl Collector for ConnectionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(ports) = self.0.get() else {
            return Ok(());
        };
        {
            let mut e = encoder.encode_descriptor(
                "connections",
                "Open connections by port (grpc, admin)",
                None,
                MetricType::Gauge,
            )?;
            for p in ports {
                ConstGauge::new(p.open() as i64)
                    .encode(e.encode_family(&Port { port: p.port })?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "connections_refused",
            "Connections closed before use, by port and reason (limit: the port's connection limit; address_limit: the per-address connection limit of the client's address; handshake_timeout: not the first 24 bytes, or no finished TLS handshake, within --handshake-timeout; tls_error: a failed TLS handshake, such as a client without a trusted certificate under mTLS)",
            None,
            MetricType::Counter,
        )?;
        for p in ports {
            for why in Refusal::ALL {
                let labels = PortReason {
                    port: p.port,
                    reason: why.as_str(),
                };
                ConstCounter::new(p.refused(why)).encode(e.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Per-fleet gauges and counters read from the store at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: std::sync::Weak<Store>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Fleet {
    fleet_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetStatus {
    fleet_id: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetTo {
    fleet_id: String,
    to: &'static str,
}

const PS_STATUS: [&str; 4] = ["reserved", "active", "completed", "timedout"];
const GS_STATUS: [&str; 3] = ["active", "terminated", "error"];

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(store) = self.store.upgrade() else {
            return Ok(());
        };
        let fleets = store.all_fleet_counts();
        {
            let mut e = encoder.encode_descriptor(
                "player_sessions",
                "Retained player sessions by fleet and status",
                None,
                MetricType::Gauge,
            )?;
            for (fleet, c) in &fleets {
                for (i, status) in PS_STATUS.iter().enumerate() {
                    let labels = FleetStatus {
                        fleet_id: fleet.to_string(),
                        status,
                    };
                    ConstGauge::new(c.player_sessions[i] as i64)
                        .encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "game_sessions",
                "Retained game sessions by fleet and status",
                None,
                MetricType::Gauge,
            )?;
            for (fleet, c) in &fleets {
                for (i, status) in GS_STATUS.iter().enumerate() {
                    let labels = FleetStatus {
                        fleet_id: fleet.to_string(),
                        status,
                    };
                    ConstGauge::new(c.game_sessions[i] as i64).encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "available_player_sessions",
                "Seats a new player could take (free seats of ACTIVE, ACCEPT_ALL game sessions) by fleet",
                None,
                MetricType::Gauge,
            )?;
            for (fleet, c) in &fleets {
                let labels = Fleet {
                    fleet_id: fleet.to_string(),
                };
                ConstGauge::new(c.available_player_session_count() as i64)
                    .encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "player_session_transitions",
            "Player session transitions made by this process, by fleet and target state",
            None,
            MetricType::Counter,
        )?;
        for (fleet, c) in &fleets {
            for (t, to) in Transition::ALL {
                let labels = FleetTo {
                    fleet_id: fleet.to_string(),
                    to,
                };
                ConstCounter::new(c.transitions[t as usize]).encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "health_sessions",
            "Session health updates made by this process, by release, environment and status \
             (ok: sessions started; errored: exited with errors, a subset of exited)",
            None,
            MetricType::Counter,
        )?;
        for ((release, environment), c) in store.health_totals() {
            for (status, n) in [
                ("ok", c.total),
                ("exited", c.exited),
                ("errored", c.errored),
                ("abnormal", c.abnormal),
                ("crashed", c.crashed),
            ] {
                let labels = ReleaseStatus {
                    release: release.to_string(),
                    environment: environment.to_string(),
                    status,
                };
                ConstCounter::new(n).encode(e.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseStatus {
    release: String,
    environment: String,
    status: &'static str,
}

/// process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds (Linux /proc).
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let rss_pages = fields
        .get(21)
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
    );
    let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
    let _ = writeln!(out, "process_cpu_seconds_total {}", cpu / ticks);
    let _ = writeln!(
        out,
        "# HELP process_resident_memory_bytes Resident memory size in bytes."
    );
    let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
    let _ = writeln!(out, "process_resident_memory_bytes {}", rss_pages * 4096);
    let _ = writeln!(
        out,
        "# HELP process_open_fds Number of open file descriptors."
    );
    let _ = writeln!(out, "# TYPE process_open_fds gauge");
    let _ = writeln!(out, "process_open_fds {fds}");
}
