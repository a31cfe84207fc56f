//! Analytics: every lifecycle transition as a Segment `track` event, delivered to an upstream
//! sink at least once, without a side queue and without ever slowing an RPC.
//!
//! - [`events`]: the track message of each journaled transition, with a stable messageId.
//! - [`batcher`]: batches within Segment's byte and count limits.
//! - [`sink`]: where batches go, behind one trait: Segment's HTTP API, a JSON-lines file, none;
//!   status classification, Retry-After, full-jitter backoff.
//! - [`dispatcher`]: the task that reads committed journal records after its cursor
//!   ([`crate::journal::reader`]), builds and sends batches, and journals its cursor once the
//!   sink acknowledged them. See `docs/analytics.md`.

pub mod batcher;
pub mod dispatcher;
pub mod events;
pub mod sink;

use std::{path::PathBuf, sync::Arc, time::Duration};

/// Outcomes of `session_broker_analytics_events_total`.
pub const EVENT_OUTCOMES: [&str; 4] = [
    "sent",
    "dropped_too_large",
    "dropped_rejected",
    "dropped_backlog",
];

/// Results of `session_broker_analytics_batches_total`.
pub const BATCH_RESULTS: [&str; 3] = ["delivered", "retried", "rejected"];

/// `--analytics-sink`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// No analytics (the default).
    None,
    /// Segment's HTTP tracking API (`--segment-endpoint`, `--segment-write-key`).
    Segment,
    /// JSON lines in a local file (`--analytics-file`), rotated by size.
    File,
}

/// Where analytics events go.
#[derive(Clone)]
pub enum SinkConfig {
    /// `POST {endpoint}/v1/batch` with HTTP Basic auth.
    Segment {
        endpoint: String,
        write_key: String,
        timeout: Duration,
        gzip: bool,
    },
    /// JSON lines, `path` renamed to `path.1` past `max_bytes`.
    File { path: PathBuf, max_bytes: u64 },
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The write key is a secret: never printed.
            SinkConfig::Segment {
                endpoint,
                timeout,
                gzip,
                ..
            } => f
                .debug_struct("Segment")
                .field("endpoint", endpoint)
                .field("timeout", timeout)
                .field("gzip", gzip)
                .finish_non_exhaustive(),
            SinkConfig::File { path, max_bytes } => f
                .debug_struct("File")
                .field("path", path)
                .field("max_bytes", max_bytes)
                .finish(),
        }
    }
}

/// Settings of the analytics dispatcher (`--analytics-*`).
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    pub sink: SinkConfig,
    /// Send as soon as this many messages are ready.
    pub batch_size: usize,
    /// Send what is ready at least this often.
    pub flush_interval: Duration,
    /// Batches being sent at once.
    pub max_in_flight: usize,
    /// Journal bytes kept for undelivered events beyond what recovery needs; past it the
    /// oldest are deleted (their events counted as `dropped_backlog`).
    pub max_backlog: u64,
    /// How long the final flush at shutdown may take.
    pub shutdown_timeout: Duration,
    pub limits: batcher::BatchLimits,
}

impl AnalyticsConfig {
    /// Defaults around `sink`: batches of 250, flushed every second, 4 in flight, 1 GiB of
    /// backlog.
    pub fn new(sink: SinkConfig) -> Self {
        AnalyticsConfig {
            sink,
            batch_size: 250,
            flush_interval: Duration::from_secs(1),
            max_in_flight: 4,
            max_backlog: 1 << 30,
            shutdown_timeout: Duration::from_secs(5),
            limits: batcher::BatchLimits::default(),
        }
    }

    /// Builds the sink.
    pub fn build_sink(&self) -> Result<Arc<dyn sink::Sink>, String> {
        Ok(match &self.sink {
            SinkConfig::Segment {
                endpoint,
                write_key,
                timeout,
                gzip,
            } => Arc::new(
                sink::SegmentSink::new(endpoint, write_key, *timeout, *gzip)
                    .map_err(|e| format!("cannot build the Segment HTTP client: {e}"))?,
            ),
            SinkConfig::File { path, max_bytes } => {
                Arc::new(sink::FileSink::new(path.clone(), *max_bytes))
            }
        })
    }
}
