//! The Sentry sink: session health updates sent to a Sentry (or Relay) as envelopes.
//!
//! - `aggregate` mode (default): terminal updates are counted per release, environment and
//!   start minute and sent as `sessions` items (at most 100 buckets each) every
//!   `--sentry-flush-interval` (60 s) and at shutdown.
//! - `individual` mode: every update is sent as a `session` item, at most 100 per envelope,
//!   at least once a second.
//!
//! Nothing Relay would drop silently is sent: updates older than 5 days or more than 60 s in the
//! future are discarded and counted. 429, `Retry-After` and `X-Sentry-Rate-Limits` (category
//! `session`) are honoured by discarding while limited. Memory is bounded (`--sentry-queue`
//! updates in individual mode; one bucket per release, environment and minute in aggregate
//! mode). Every loss is counted in `session_broker_sentry_dropped_total{reason}`.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{HealthStatus, HealthUpdate, Timestamp},
    metrics::Metrics,
    store::Store,
};

/// Session items per envelope and buckets per `sessions` item (Sentry's limits).
const MAX_ITEMS: usize = 100;
/// Relay drops sessions older than this...
const MAX_AGE: Duration = Duration::from_secs(5 * 24 * 3600);
/// ... or further in the future than this.
const MAX_FUTURE: Duration = Duration::from_secs(60);
/// Attempts per envelope on network errors and 5xx before it is dropped.
const ATTEMPTS: u32 = 3;

/// How updates are sent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SentryMode {
    /// Per-minute `sessions` aggregates every flush interval (Sentry's request mode).
    Aggregate,
    /// One `session` item per update.
    Individual,
}

/// A parsed DSN: `http[s]://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The DSN without any secret key (what the envelope header carries).
    pub public: String,
    pub public_key: String,
    /// `scheme://host[:port]`
    pub origin: String,
    pub project_id: String,
}

impl Dsn {
    pub fn parse(s: &str) -> Result<Dsn, String> {
        let bad = |why: &str| {
            format!("{s:?} is not a DSN (http[s]://PUBLIC_KEY@HOST[:PORT]/PROJECT_ID): {why}")
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let (key, rest) = rest.split_once('@').ok_or_else(|| bad("no public key"))?;
        let public_key = key.split(':').next().unwrap_or_default();
        if public_key.is_empty() {
            return Err(bad("empty public key"));
        }
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no project id"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let (prefix, project) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((p, id)) => (format!("/{p}"), id),
            None => (String::new(), path.trim_end_matches('/')),
        };
        if project.is_empty() || !project.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad("the project id must be a number"));
        }
        Ok(Dsn {
            public: format!("{scheme}://{public_key}@{rest}"),
            public_key: public_key.to_string(),
            origin: format!("{scheme}://{host}{prefix}"),
            project_id: project.to_string(),
        })
    }

    /// Where envelopes go.
    pub fn envelope_url(&self) -> String {
        format!("{}/api/{}/envelope/", self.origin, self.project_id)
    }

    /// The `X-Sentry-Auth` header.
    pub fn auth_header(&self) -> String {
        format!(
            "Sentry sentry_version=7, sentry_client=session-broker/{}, sentry_key={}",
            env!("CARGO_PKG_VERSION"),
            self.public_key
        )
    }
}

/// Sink settings.
#[derive(Debug, Clone)]
pub struct SentryConfig {
    pub dsn: Dsn,
    pub mode: SentryMode,
    /// Aggregate mode: how often aggregates are sent.
    pub flush_interval: Duration,
    /// Individual mode: updates held while waiting to be sent; beyond it the oldest are dropped.
    pub queue: usize,
    /// How long the final flush at shutdown may take.
    pub shutdown_timeout: Duration,
}

fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(t.to_system_time()).to_string()
}

/// Why an update or envelope was not delivered (the metric's `reason` label).
pub const DROP_REASONS: [&str; 7] = [
    "too_old",
    "in_future",
    "rate_limited",
    "queue_full",
    "lagged",
    "send_failed",
    "shutdown",
];

/// The `session` item payload of one update (Sentry's wire keys).
pub fn session_item(u: &HealthUpdate) -> Value {
    let mut v = json!({
        "sid": u.session_id.to_string(),
        "did": u.distinct_id.to_string(),
        "seq": u.sequence,
        "init": u.init,
        "timestamp": rfc3339(u.timestamp),
        "started": rfc3339(u.started),
        "status": u.status.as_str(),
        "errors": u.errors,
        "attrs": {"release": &*u.release, "environment": &*u.environment},
    });
    if let Some(d) = u.duration {
        v["duration"] = json!(d.as_secs_f64());
    }
    v
}

/// Builds an envelope: the header line with `sent_at`, then each item with its header.
pub fn envelope(dsn: &Dsn, sent_at: Timestamp, items: &[(&str, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    let header = json!({"sent_at": rfc3339(sent_at), "dsn": dsn.public});
    out.extend_from_slice(header.to_string().as_bytes());
    out.push(b'\n');
    for (ty, payload) in items {
        let body = payload.to_string();
        let h = json!({"type": ty, "length": body.len()});
        out.extend_from_slice(h.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(body.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Counts of one aggregate bucket (Sentry's keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    exited: u64,
    errored: u64,
    abnormal: u64,
    crashed: u64,
}

/// Terminal updates not yet sent: (release, environment) -> start minute -> counts.
#[derive(Default)]
struct Aggregates(BTreeMap<(Arc<str>, Arc<str>), BTreeMap<i64, Bucket>>);

impl Aggregates {
    fn add(&mut self, u: &HealthUpdate) {
        let b = self
            .0
            .entry((u.release.clone(), u.environment.clone()))
            .or_default()
            .entry(u.started.as_micros().div_euclid(60_000_000) * 60)
            .or_default();
        match u.status {
            HealthStatus::Ok => {}
            HealthStatus::Exited if u.errors > 0 => b.errored += 1,
            HealthStatus::Exited => b.exited += 1,
            HealthStatus::Abnormal => b.abnormal += 1,
            HealthStatus::Crashed => b.crashed += 1,
        }
    }

    /// `sessions` items, at most [`MAX_ITEMS`] buckets each, and the number of sessions they
    /// count; empties the aggregates.
    fn take_items(&mut self) -> (Vec<Value>, u64) {
        let mut items = Vec::new();
        let mut sessions = 0;
        for ((release, environment), buckets) in std::mem::take(&mut self.0) {
            let all: Vec<Value> = buckets
                .into_iter()
                .map(|(minute, b)| {
                    sessions += b.exited + b.errored + b.abnormal + b.crashed;
                    let mut v =
                        json!({"started": rfc3339(Timestamp::from_micros(minute * 1_000_000))});
                    for (k, n) in [
                        ("exited", b.exited),
                        ("errored", b.errored),
                        ("abnormal", b.abnormal),
                        ("crashed", b.crashed),
                    ] {
                        if n > 0 {
                            v[k] = json!(n);
                        }
                    }
                    v
                })
                .collect();
            for chunk in all.chunks(MAX_ITEMS) {
                items.push(json!({
                    "aggregates": chunk,
                    "attrs": {"release": &*release, "environment": &*environment},
                }));
            }
        }
        (items, sessions)
    }
}

/// Rate limits from 429 / Retry-After / X-Sentry-Rate-Limits, as "limited until" instants.
#[derive(Default)]
struct Limits {
    until: Option<tokio::time::Instant>,
}

impl Limits {
    fn limited(&self) -> bool {
        self.until.is_some_and(|u| tokio::time::Instant::now() < u)
    }

    fn limit_for(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// Applies a response's rate-limit headers.
    fn update(&mut self, status: u16, headers: &reqwest::header::HeaderMap) {
        if let Some(v) = headers
            .get("x-sentry-rate-limits")
            .and_then(|v| v.to_str().ok())
        {
            for limit in v.split(',') {
                let mut parts = limit.trim().split(':');
                let secs = parts.next().and_then(|s| s.trim().parse::<f64>().ok());
                let categories = parts.next().unwrap_or("");
                let applies = categories.is_empty()
                    || categories
                        .split(';')
                        .any(|c| c == "session" || c == "sessions");
                if let (Some(secs), true) = (secs, applies) {
                    self.limit_for(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)));
                }
            }
        } else if status == 429 {
            let secs = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
                .unwrap_or(60.0);
            self.limit_for(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)));
        }
    }
}

/// Why Relay would silently drop `u` if it were sent at `now` (`None`: it would be counted).
pub fn relay_would_drop(u: &HealthUpdate, now: Timestamp) -> Option<&'static str> {
    let max_age = MAX_AGE.as_micros() as i64;
    if u.timestamp.as_micros() + max_age < now.as_micros()
        || u.started.as_micros() + max_age < now.as_micros()
    {
        return Some("too_old");
    }
    if u.timestamp.as_micros() > now.as_micros() + MAX_FUTURE.as_micros() as i64 {
        return Some("in_future");
    }
    None
}

/// The sink's state between sends.
struct Sink {
    config: SentryConfig,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    limits: Limits,
    pending: VecDeque<Arc<HealthUpdate>>,
    aggregates: Aggregates,
    /// Items whose send a shutdown interrupted.
    carry: Option<(Vec<(&'static str, Value)>, u64)>,
    /// Items of the envelope being sent (counted as lost if the final flush runs out of time).
    in_flight: u64,
    shutdown: CancellationToken,
}

impl Sink {
    fn dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.metrics
                .sentry_dropped
                .get_or_create(&crate::metrics::ReasonLabels { reason })
                .inc_by(n);
            tracing::debug!(reason, n, "session updates not sent to Sentry");
        }
    }

    /// Takes one update: discards what Relay would drop, then queues or aggregates it.
    fn accept(&mut self, u: Arc<HealthUpdate>) {
        if let Some(reason) = relay_would_drop(&u, self.store.clock().now()) {
            return self.dropped(reason, 1);
        }
        match self.config.mode {
            SentryMode::Aggregate => {
                if u.status.is_terminal() {
                    self.aggregates.add(&u);
                }
            }
            SentryMode::Individual => {
                if self.pending.len() >= self.config.queue {
                    self.pending.pop_front();
                    self.dropped("queue_full", 1);
                }
                self.pending.push_back(u);
            }
        }
    }

    /// Sends what is pending: every envelope of the aggregates, or up to 100 session items.
    /// `last`: the final flush at shutdown (not interrupted by it).
    async fn flush(&mut self, all: bool, last: bool) {
        // An envelope a shutdown interrupted goes first.
        if let Some((items, count)) = self.carry.take() {
            self.in_flight = count;
            let sent = self.send(&items, count, last).await;
            self.in_flight = 0;
            if !sent {
                self.carry = Some((items, count));
                return;
            }
        }
        loop {
            let (items, count): (Vec<(&'static str, Value)>, u64) = match self.config.mode {
                SentryMode::Aggregate => {
                    let (items, sessions) = self.aggregates.take_items();
                    (
                        items.into_iter().map(|v| ("sessions", v)).collect(),
                        sessions,
                    )
                }
                SentryMode::Individual => {
                    let n = self.pending.len().min(MAX_ITEMS);
                    let items = self
                        .pending
                        .drain(..n)
                        .map(|u| ("session", session_item(&u)))
                        .collect();
                    (items, n as u64)
                }
            };
            if items.is_empty() {
                return;
            }
            if self.limits.limited() {
                self.dropped("rate_limited", count);
            } else {
                self.in_flight = count;
                let sent = self.send(&items, count, last).await;
                self.in_flight = 0;
                if !sent {
                    // Shutdown interrupted the send: the final flush sends these first.
                    self.carry = Some((items, count));
                    return;
                }
            }
            if !all && self.pending.len() < MAX_ITEMS {
                return;
            }
        }
    }

    /// Sends one envelope (with retries). Returns false if shutdown interrupted it between two
    /// attempts (only when not `last`): the items are then neither delivered nor counted as lost.
    async fn send(&mut self, items: &[(&'static str, Value)], count: u64, last: bool) -> bool {
        let url = self.config.dsn.envelope_url();
        let mut delay = Duration::from_millis(500);
        let shutdown = self.shutdown.clone();
        let interrupted = || async {
            if last {
                std::future::pending::<()>().await
            } else {
                shutdown.cancelled().await
            }
        };
        for attempt in 1..=ATTEMPTS {
            let body = envelope(&self.config.dsn, self.store.clock().now(), items);
            let request = self
                .http
                .post(&url)
                .header("X-Sentry-Auth", self.config.dsn.auth_header())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-sentry-envelope",
                )
                .body(body)
                .send();
            // A request in flight is never abandoned (it may already have been delivered, and a
            // resend would double-count); its timeout is at most the final flush's budget.
            let result = request.await;
            match result {
                Ok(r) => {
                    let status = r.status().as_u16();
                    self.limits.update(status, r.headers());
                    if r.status().is_success() {
                        self.metrics.sentry_envelopes.inc();
                        return true;
                    }
                    if status == 429 {
                        tracing::warn!(
                            "Sentry rate-limits session updates; discarding while limited"
                        );
                        self.dropped("rate_limited", count);
                        return true;
                    }
                    if !r.status().is_server_error() {
                        tracing::warn!(status, "Sentry refused an envelope");
                        self.dropped("send_failed", count);
                        return true;
                    }
                    tracing::warn!(status, attempt, "Sentry answered with an error");
                }
                Err(e) => tracing::warn!(error = %e, attempt, "cannot reach Sentry"),
            }
            if attempt < ATTEMPTS {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = interrupted() => return false,
                }
                delay *= 2;
            }
        }
        self.dropped("send_failed", count);
        true
    }
}

/// Runs the sink until shutdown, then flushes what is pending (within the shutdown timeout).
/// `updates` is subscribed by the caller before anything can change, so nothing is missed.
pub async fn run(
    config: SentryConfig,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    mut updates: tokio::sync::broadcast::Receiver<Arc<HealthUpdate>>,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(
            Duration::from_secs(10).min(config.shutdown_timeout.max(Duration::from_millis(100))),
        )
        .user_agent(concat!("session-broker/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Sentry HTTP client; session health is not sent");
            return;
        }
    };
    let tick = match config.mode {
        SentryMode::Aggregate => config.flush_interval,
        SentryMode::Individual => config.flush_interval.min(Duration::from_secs(1)),
    };
    let shutdown_timeout = config.shutdown_timeout;
    let mut sink = Sink {
        config,
        http,
        metrics,
        store,
        limits: Limits::default(),
        pending: VecDeque::new(),
        aggregates: Aggregates::default(),
        carry: None,
        in_flight: 0,
        shutdown: shutdown.clone(),
    };
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    loop {
        tokio::select! {
            u = updates.recv() => match u {
                Ok(u) => {
                    sink.accept(u);
                    if sink.config.mode == SentryMode::Individual && sink.pending.len() >= MAX_ITEMS {
                        sink.flush(false, false).await;
                    }
                }
                Err(RecvError::Lagged(n)) => sink.dropped("lagged", n),
                Err(RecvError::Closed) => break,
            },
            _ = interval.tick() => sink.flush(true, false).await,
            _ = shutdown.cancelled() => break,
        }
    }
    // Whatever arrived before shutdown, then one last flush.
    while let Ok(u) = updates.try_recv() {
        sink.accept(u);
    }
    if tokio::time::timeout(shutdown_timeout, sink.flush(true, true))
        .await
        .is_err()
    {
        let lost = sink.in_flight
            + sink.carry.as_ref().map_or(0, |c| c.1)
            + sink.pending.len() as u64
            + sink.aggregates.take_items().1;
        tracing::warn!(
            lost,
            "the final Sentry flush did not finish within the shutdown grace"
        );
        sink.dropped("shutdown", lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns_parse_and_reject() {
        let d = Dsn::parse("https://abc123@o1.ingest.sentry.io/4505").unwrap();
        assert_eq!(
            d.envelope_url(),
            "https://o1.ingest.sentry.io/api/4505/envelope/"
        );
        assert!(d.auth_header().contains("sentry_key=abc123"));
        assert!(d
            .auth_header()
            .starts_with("Sentry sentry_version=7, sentry_client=session-broker/"));
        let local = Dsn::parse("http://key:secret@127.0.0.1:9000/sentry/42").unwrap();
        assert_eq!(
            local.public, "http://key@127.0.0.1:9000/sentry/42",
            "no secret in envelopes"
        );
        assert_eq!(
            local.envelope_url(),
            "http://127.0.0.1:9000/sentry/api/42/envelope/"
        );
        assert_eq!(local.public_key, "key");
        for bad in [
            "",
            "sentry.io/1",
            "ftp://k@h/1",
            "https://h/1",
            "https://k@/1",
            "https://k@h",
            "https://k@h/abc",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad}");
        }
    }

    fn update(started: i64, at: i64, status: HealthStatus, errors: u32) -> HealthUpdate {
        use crate::domain::{FleetId, GameSessionId, PlayerSessionId};
        let id = PlayerSessionId::generate();
        HealthUpdate {
            session_id: id.uuid(),
            distinct_id: "player".into(),
            sequence: 1,
            timestamp: Timestamp::from_micros(at),
            started: Timestamp::from_micros(started),
            init: false,
            duration: status
                .is_terminal()
                .then(|| Duration::from_micros((at - started) as u64)),
            status,
            errors,
            release: "1.0".into(),
            environment: "prod".into(),
            player_session_id: id,
            game_session_id: GameSessionId::parse("g", "g").unwrap(),
            fleet_id: FleetId::parse("f", "f").unwrap(),
        }
    }

    #[test]
    fn what_relay_would_drop_is_not_sent() {
        let day = 86_400_000_000i64;
        let now = Timestamp::from_micros(100 * day);
        assert_eq!(
            relay_would_drop(
                &update(now.as_micros() - 1000, now.as_micros(), HealthStatus::Ok, 0),
                now
            ),
            None
        );
        assert_eq!(
            relay_would_drop(
                &update(
                    now.as_micros() - 6 * day,
                    now.as_micros(),
                    HealthStatus::Exited,
                    0
                ),
                now
            ),
            Some("too_old"),
            "started more than 5 days ago"
        );
        assert_eq!(
            relay_would_drop(
                &update(
                    now.as_micros() - 6 * day,
                    now.as_micros() - 6 * day,
                    HealthStatus::Ok,
                    0
                ),
                now
            ),
            Some("too_old")
        );
        assert_eq!(
            relay_would_drop(
                &update(
                    now.as_micros(),
                    now.as_micros() + 61_000_000,
                    HealthStatus::Ok,
                    0
                ),
                now
            ),
            Some("in_future")
        );
        assert_eq!(
            relay_would_drop(
                &update(
                    now.as_micros(),
                    now.as_micros() + 59_000_000,
                    HealthStatus::Ok,
                    0
                ),
                now
            ),
            None
        );
    }

    #[test]
    fn aggregates_bucket_by_start_minute_and_split_at_100() {
        let mut a = Aggregates::default();
        let minute = 60_000_000i64;
        for m in 0..150 {
            a.add(&update(
                m * minute + 5,
                m * minute + 10,
                HealthStatus::Exited,
                0,
            ));
        }
        a.add(&update(5, 20, HealthStatus::Exited, 2));
        a.add(&update(7, 20, HealthStatus::Crashed, 1));
        a.add(&update(9, 20, HealthStatus::Abnormal, 0));
        a.add(&update(9, 20, HealthStatus::Ok, 0));
        let (items, sessions) = a.take_items();
        assert_eq!(sessions, 153, "every terminal session once");
        assert_eq!(items.len(), 2, "150 buckets: two items of at most 100");
        assert_eq!(items[0]["aggregates"].as_array().unwrap().len(), 100);
        assert_eq!(items[1]["aggregates"].as_array().unwrap().len(), 50);
        let first = &items[0]["aggregates"][0];
        assert_eq!(first["started"], "1970-01-01T00:00:00.000Z");
        assert_eq!(
            (first["exited"].as_u64(), first["errored"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(
            (first["crashed"].as_u64(), first["abnormal"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(items[0]["attrs"]["release"], "1.0");
        assert!(a.take_items().0.is_empty(), "taken");
    }

    #[test]
    fn rate_limit_headers() {
        let mut l = Limits::default();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "x-sentry-rate-limits",
            "60:transaction:key".parse().unwrap(),
        );
        l.update(200, &h);
        assert!(!l.limited(), "other categories do not limit sessions");
        h.insert(
            "x-sentry-rate-limits",
            "60:error;session:organization".parse().unwrap(),
        );
        l.update(200, &h);
        assert!(l.limited());
        let mut l = Limits::default();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "30".parse().unwrap());
        l.update(429, &h);
        assert!(l.limited());
        let mut l = Limits::default();
        h.insert("x-sentry-rate-limits", "10::organization".parse().unwrap());
        l.update(429, &h);
        assert!(l.limited(), "no categories means every category");
    }
}
