//! Where batches go, behind one trait (a Kafka sink later must not change the dispatcher):
//! Segment's HTTP API, a local JSON-lines file, or nowhere.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use base64::{engine::general_purpose::STANDARD, Engine};

use super::batcher;

/// What became of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink acknowledged it: the dispatcher may move its cursor past it.
    Delivered,
    /// Try again later (network error, timeout, 408, 429, 5xx except 501/505); `after` is the
    /// sink's Retry-After when it gave one; `rate_limited` is a 429 (every batch pauses); `why`
    /// says what failed (for logs and the journal).
    Retry {
        after: Option<Duration>,
        rate_limited: bool,
        why: String,
    },
    /// Refused for good (400, 401, 403, 413, 501, 505...): do not resend as is (the dispatcher
    /// splits the batch or drops its messages, counting the reason).
    Rejected { status: u16 },
}

/// A destination of batches of serialized track messages.
#[tonic::async_trait]
pub trait Sink: Send + Sync {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Sends one batch (messages already serialized, within the batcher's limits).
    async fn send(&self, batch: &[String]) -> Outcome;
}

/// Discards everything (the default: analytics off).
pub struct NoSink;

#[tonic::async_trait]
impl Sink for NoSink {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn send(&self, _batch: &[String]) -> Outcome {
        Outcome::Delivered
    }
}

/// How an HTTP status is handled (Segment's documented semantics).
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500 | 502..=504 | 506..=599 => Outcome::Retry {
            after: retry_after,
            rate_limited: status == 429,
            why: format!("HTTP {status}"),
        },
        _ => Outcome::Rejected { status },
    }
}

/// Parses a Retry-After header: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let at = httpdate_parse(v)?;
    Some(
        at.duration_since(now)
            .unwrap_or_default()
            .min(Duration::from_secs(3600)),
    )
}

fn httpdate_parse(s: &str) -> Option<SystemTime> {
    // "Sun, 06 Nov 1994 08:49:37 GMT" -> RFC 3339 for humantime.
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])?
        + 1;
    let rfc = format!("{}-{month:02}-{:0>2}T{}Z", parts[3], parts[1], parts[4]);
    humantime::parse_rfc3339(&rfc).ok()
}

/// Full-jitter exponential backoff: a random delay up to 0.5 s doubling per attempt, capped at
/// 60 s; at least the sink's Retry-After when it gave one.
pub fn backoff(attempt: u32, retry_after: Option<Duration>, random: f64) -> Duration {
    let cap = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.min(7))
        .min(Duration::from_secs(60));
    let jittered = cap.mul_f64(random.clamp(0.0, 1.0));
    retry_after.map_or(jittered, |r| r.max(jittered))
}

/// Segment's HTTP tracking API: `POST {endpoint}/v1/batch` with HTTP Basic auth (the write key
/// as user, empty password).
pub struct SegmentSink {
    http: reqwest::Client,
    url: String,
    authorization: String,
    gzip: bool,
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(body)?;
    e.finish()
}

impl SegmentSink {
    /// `endpoint` like `https://api.segment.io`; the write key is never logged. `gzip`
    /// compresses request bodies (`Content-Encoding: gzip`).
    pub fn new(
        endpoint: &str,
        write_key: &str,
        timeout: Duration,
        gzip: bool,
    ) -> reqwest::Result<Self> {
        Ok(SegmentSink {
            gzip,
            http: reqwest::Client::builder()
                .timeout(timeout)
                .user_agent(concat!("session-broker/", env!("CARGO_PKG_VERSION")))
                .build()?,
            url: format!("{}/v1/batch", endpoint.trim_end_matches('/')),
            authorization: format!("Basic {}", STANDARD.encode(format!("{write_key}:"))),
        })
    }
}

impl std::fmt::Debug for SegmentSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentSink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Sink for SegmentSink {
    fn name(&self) -> &'static str {
        "segment"
    }

    async fn send(&self, batch: &[String]) -> Outcome {
        // sentAt is stamped per attempt.
        let sent_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let body = batcher::body(batch, &sent_at);
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        request = if self.gzip {
            match gzip(body.as_bytes()) {
                Ok(z) => request
                    .header(reqwest::header::CONTENT_ENCODING, "gzip")
                    .body(z),
                Err(_) => request.body(body),
            }
        } else {
            request.body(body)
        };
        let result = request.send().await;
        match result {
            Ok(r) => {
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now()));
                classify(r.status().as_u16(), after)
            }
            Err(e) => {
                tracing::debug!(error = %e, "analytics sink unreachable");
                Outcome::Retry {
                    after: None,
                    rate_limited: false,
                    why: if e.is_timeout() {
                        "request timed out".into()
                    } else {
                        format!("unreachable: {e}")
                    },
                }
            }
        }
    }
}

/// JSON lines in a local file, rotated by size (for local use and debugging): one message per
/// line; `path` is renamed to `path.1` (replacing it) when it grows past `max_bytes`.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    lock: tokio::sync::Mutex<()>,
}

impl FileSink {
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        FileSink {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn write(&self, batch: &[String]) -> std::io::Result<()> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size >= self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, rotated)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut out = Vec::with_capacity(batch.iter().map(|m| m.len() + 1).sum());
        for m in batch {
            out.extend_from_slice(m.as_bytes());
            out.push(b'\n');
        }
        f.write_all(&out)?;
        f.sync_data()
    }
}

#[tonic::async_trait]
impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, batch: &[String]) -> Outcome {
        let _one_writer = self.lock.lock().await;
        let result = tokio::task::block_in_place(|| self.write(batch));
        match result {
            Ok(()) => Outcome::Delivered,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write analytics file");
                Outcome::Retry {
                    after: None,
                    rate_limited: false,
                    why: format!("{}: {e}", self.path.display()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_segments_rules() {
        assert_eq!(classify(200, None), Outcome::Delivered);
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify(s, None), Outcome::Retry { .. }), "{s}");
        }
        for s in [400, 401, 403, 413, 501, 505] {
            assert_eq!(classify(s, None), Outcome::Rejected { status: s }, "{s}");
        }
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            classify(429, after),
            Outcome::Retry {
                after,
                rate_limited: true,
                why: "HTTP 429".into()
            }
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = humantime::parse_rfc3339("2026-11-23T03:00:00Z").unwrap();
        assert_eq!(retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(
            retry_after("Mon, 23 Nov 2026 03:00:45 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("999999", now), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn backoff_is_jittered_capped_and_honours_retry_after() {
        assert_eq!(backoff(0, None, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, None, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(20, None, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(3, None, 0.25), Duration::from_secs(1));
        assert_eq!(
            backoff(0, Some(Duration::from_secs(10)), 1.0),
            Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn the_segment_sink_posts_batches_with_basic_auth() {
        use std::sync::{Arc, Mutex};
        type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route(
                "/v1/batch",
                axum::routing::post(
                    |axum::extract::State(seen): axum::extract::State<Seen>,
                     headers: axum::http::HeaderMap,
                     body: String| async move {
                        let auth = headers["authorization"].to_str().unwrap().to_string();
                        let mut seen = seen.lock().unwrap();
                        seen.push((auth, serde_json::from_str(&body).unwrap()));
                        if seen.len() == 1 {
                            (
                                axum::http::StatusCode::TOO_MANY_REQUESTS,
                                [("retry-after", "3")],
                            )
                        } else {
                            (axum::http::StatusCode::OK, [("x-ok", "1")])
                        }
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let sink = SegmentSink::new(
            &format!("http://{addr}/"),
            "wk_secret",
            Duration::from_secs(5),
            false,
        )
        .unwrap();
        assert!(
            !format!("{sink:?}").contains("wk_secret"),
            "the key is never printed"
        );
        let batch = vec![r#"{"type":"track","event":"x","messageId":"m1"}"#.to_string()];
        assert_eq!(
            sink.send(&batch).await,
            Outcome::Retry {
                after: Some(Duration::from_secs(3)),
                rate_limited: true,
                why: "HTTP 429".into()
            }
        );
        assert_eq!(sink.send(&batch).await, Outcome::Delivered);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        // base64("wk_secret:")
        assert_eq!(seen[0].0, "Basic d2tfc2VjcmV0Og==");
        assert_eq!(seen[1].1["batch"][0]["messageId"], "m1");
        assert_eq!(
            seen[1].1["sentAt"].as_str().unwrap().len(),
            batcher::SENT_AT_LEN
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_sink_appends_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = FileSink::new(&path, 64);
        let batch = vec![
            r#"{"event":"a"}"#.to_string(),
            r#"{"event":"b"}"#.to_string(),
        ];
        assert_eq!(sink.send(&batch).await, Outcome::Delivered);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        for _ in 0..3 {
            sink.send(&batch).await;
        }
        let rotated = dir.path().join("events.jsonl.1");
        assert!(rotated.exists(), "rotated past 64 bytes");
        let total = std::fs::read_to_string(&path).unwrap().lines().count()
            + std::fs::read_to_string(&rotated).unwrap().lines().count();
        assert!(total >= 4);
    }
}
