//! The analytics dispatcher against a local HTTP server playing Segment's tracking API: it
//! checks basic auth, the JSON shape and every limit, fails attempts on request (500, 429 with
//! Retry-After, 400 for a poisoned message), or hangs; the tests check that every lifecycle
//! event arrives with a stable, unique messageId, through failures and a kill -9.

mod common;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use common::TestDaemon;
use serde_json::Value;
use session_broker::{
    analytics::{AnalyticsConfig, SinkConfig},
    journal::JournalConfig,
    proto::{
        AcceptPlayerSessionRequest, CreatePlayerSessionRequest, CreatePlayerSessionsRequest,
        EndGameSessionRequest, RemovePlayerSessionRequest,
    },
};

const WRITE_KEY: &str = "wk_test_key";

/// One request the fake received.
#[derive(Clone, Debug)]
struct Request {
    status: u16,
    sent_at: String,
    messages: Vec<Value>,
}

#[derive(Default)]
struct FakeState {
    /// Statuses (and Retry-After) for the next requests, then 200.
    script: VecDeque<(u16, Option<&'static str>)>,
    requests: Vec<Request>,
    /// Anything that breaks Segment's rules.
    violations: Vec<String>,
    /// 400 for a batch holding an event of this userId.
    poison_user: Option<String>,
    /// Never answer (until the test ends).
    hang: bool,
    /// Requests being held by `hang`.
    hanging: usize,
    /// 503 to everything.
    down: bool,
}

#[derive(Clone, Default)]
struct FakeSegment(Arc<Mutex<FakeState>>);

impl FakeSegment {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// Messages of the batches answered 200.
    fn delivered(&self) -> Vec<Value> {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.status == 200)
                .flat_map(|r| r.messages.clone())
                .collect()
        })
    }

    fn delivered_events(&self, event: &str) -> Vec<Value> {
        self.delivered()
            .into_iter()
            .filter(|m| m["event"] == event)
            .collect()
    }
}

fn check_batch(body: &[u8], violations: &mut Vec<String>) -> Option<(String, Vec<Value>)> {
    if body.len() > 500_000 {
        violations.push(format!("body of {} bytes", body.len()));
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            violations.push(format!("invalid JSON: {e}"));
            return None;
        }
    };
    let batch = v["batch"].as_array().cloned().unwrap_or_default();
    if batch.is_empty() {
        violations.push("empty batch".into());
    }
    if batch.len() > 2500 {
        violations.push(format!("{} messages", batch.len()));
    }
    let sent_at = v["sentAt"].as_str().unwrap_or_default().to_string();
    if humantime::parse_rfc3339(&sent_at).is_err() {
        violations.push(format!("sentAt {sent_at:?}"));
    }
    for m in &batch {
        let len = serde_json::to_string(m).unwrap().len();
        if len > 32_000 {
            violations.push(format!("message of {len} bytes"));
        }
        let id = m["messageId"].as_str().unwrap_or_default();
        if id.is_empty() || id.len() >= 100 {
            violations.push(format!("messageId {id:?}"));
        }
        if m["type"] != "track" || !m["event"].is_string() || !m["properties"].is_object() {
            violations.push(format!("not a track message: {m}"));
        }
        if m["userId"].as_str().is_none() && m["anonymousId"].as_str().is_none() {
            violations.push(format!("neither userId nor anonymousId: {m}"));
        }
        if m["timestamp"]
            .as_str()
            .is_none_or(|t| humantime::parse_rfc3339(t).is_err())
        {
            violations.push(format!("timestamp of {m}"));
        }
        if m["context"]["library"]["name"] != "session-broker" {
            violations.push(format!("context.library of {m}"));
        }
    }
    Some((sent_at, batch))
}

async fn batch(
    State(fake): State<FakeSegment>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    );
    let auth_ok = headers
        .get("authorization")
        .is_some_and(|v| v.to_str().ok() == Some(expected.as_str()));
    let body = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        Bytes::from(out)
    } else {
        body
    };
    let hang = fake.with(|s| {
        if s.hang {
            s.hanging += 1;
        }
        s.hang
    });
    if hang {
        std::future::pending::<()>().await;
    }
    let mut h = HeaderMap::new();
    let status = fake.with(|s| {
        let Some((sent_at, messages)) = check_batch(&body, &mut s.violations) else {
            return 400;
        };
        let poisoned = s
            .poison_user
            .as_ref()
            .is_some_and(|p| messages.iter().any(|m| m["userId"] == p.as_str()));
        let status = if !auth_ok {
            401
        } else if s.down {
            503
        } else if poisoned {
            400
        } else if let Some((status, after)) = s.script.pop_front() {
            if let Some(a) = after {
                h.insert("retry-after", a.parse().unwrap());
            }
            status
        } else {
            200
        };
        s.requests.push(Request {
            status,
            sent_at,
            messages,
        });
        status
    });
    (StatusCode::from_u16(status).unwrap(), h)
}

async fn fake_segment() -> (FakeSegment, SocketAddr) {
    let fake = FakeSegment::default();
    let app = Router::new()
        .route("/v1/batch", post(batch))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, addr)
}

fn analytics(addr: SocketAddr, gzip: bool) -> AnalyticsConfig {
    let mut c = AnalyticsConfig::new(SinkConfig::Segment {
        endpoint: format!("http://{addr}"),
        write_key: WRITE_KEY.into(),
        timeout: Duration::from_secs(10),
        gzip,
    });
    c.flush_interval = Duration::from_millis(50);
    c.shutdown_timeout = Duration::from_secs(2);
    c
}

async fn start(dir: &Path, analytics: AnalyticsConfig) -> TestDaemon {
    let dir = dir.to_path_buf();
    TestDaemon::start_with(move |c| {
        c.journal = Some(JournalConfig::new(dir));
        c.analytics = Some(analytics);
    })
    .await
}

/// Waits (real time) until `f` holds.
async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one sample line of the exposition.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_arrives_once_through_500s_and_429s() {
    let (fake, addr) = fake_segment().await;
    // The first attempt fails with 500, the second with 429 and Retry-After: 1.
    fake.with(|s| {
        s.script.push_back((500, None));
        s.script.push_back((429, Some("1")));
    });
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), analytics(addr, true)).await;
    let mut req = common::register_request("match-a", 4);
    req.reservation_timeout_seconds = 1;
    d.games.register_game_session(req).await.unwrap();
    let reserved = d
        .players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "match-a".into(),
            player_ids: vec!["alice".into(), "bob".into(), "carol".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    let id = |p: &str| {
        reserved
            .iter()
            .find(|s| s.player_id == p)
            .unwrap()
            .player_session_id
            .clone()
    };
    d.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "match-a".into(),
            player_session_id: id("alice"),
        })
        .await
        .unwrap();
    d.players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "match-a".into(),
            player_session_id: id("bob"),
        })
        .await
        .unwrap();
    // carol never connects: TIMEDOUT after 1 s.
    eventually("carol's timeout", Duration::from_secs(10), || {
        !fake.delivered_events("Player Session Timed Out").is_empty()
    })
    .await;
    d.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "match-a".into(),
            reason: "match over".into(),
            crashed: false,
        })
        .await
        .unwrap();
    // Batches complete in any order (several are in flight): wait for all nine events.
    eventually("every event", Duration::from_secs(20), || {
        let ids: HashSet<String> = fake
            .delivered()
            .iter()
            .map(|m| m["messageId"].as_str().unwrap().to_string())
            .collect();
        ids.len() >= 9
    })
    .await;

    // At least once: a batch whose answer was lost may arrive twice, with the same ids.
    let mut delivered = fake.delivered();
    let mut seen = HashSet::new();
    delivered.retain(|m| seen.insert(m["messageId"].as_str().unwrap().to_string()));
    let count = |e: &str| delivered.iter().filter(|m| m["event"] == e).count();
    assert_eq!(count("Game Session Started"), 1);
    assert_eq!(count("Player Session Reserved"), 3);
    assert_eq!(count("Player Session Activated"), 1);
    assert_eq!(
        count("Player Session Completed"),
        2,
        "bob removed, alice at the end"
    );
    assert_eq!(count("Player Session Timed Out"), 1);
    assert_eq!(count("Game Session Ended"), 1);
    assert_eq!(delivered.len(), 9);

    // messageIds: unique per event, and a retried batch resent the same ids.
    let ids: HashSet<&str> = delivered
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    // One messageId per event: a copy with the same id is the same event.
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for m in fake.delivered() {
        let id = m["messageId"].as_str().unwrap().to_string();
        if let Some(first) = by_id.insert(id, m.clone()) {
            assert_eq!(first, m, "two events share a messageId");
        }
    }
    assert_eq!(ids.len(), 9);
    let requests = fake.with(|s| s.requests.clone());
    assert_eq!(requests[0].status, 500);
    assert_eq!(requests[1].status, 429);
    for failed in &requests[..2] {
        for m in &failed.messages {
            assert!(
                ids.contains(m["messageId"].as_str().unwrap()),
                "retried with the same id"
            );
        }
    }
    // sentAt is stamped per attempt: the delivery came at least Retry-After (1 s) after the 429.
    let retried = requests[1].messages[0]["messageId"].clone();
    let delivery = requests
        .iter()
        .find(|r| r.status == 200 && r.messages.iter().any(|m| m["messageId"] == retried))
        .unwrap();
    let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
    assert!(
        at(&delivery.sent_at)
            .duration_since(at(&requests[1].sent_at))
            .unwrap_or_default()
            >= Duration::from_millis(900),
        "{} then {}",
        requests[1].sent_at,
        delivery.sent_at
    );
    assert!(
        fake.with(|s| s.violations.is_empty()),
        "{:?}",
        fake.with(|s| s.violations.clone())
    );

    // The shape of one event.
    let act = &fake.delivered_events("Player Session Activated")[0];
    assert_eq!(act["userId"], "alice");
    assert_eq!(act["properties"]["player_session_id"], id("alice"));
    assert_eq!(act["properties"]["game_session_id"], "match-a");
    assert_eq!(act["properties"]["fleet_id"], "fleet-1");
    assert_eq!(act["properties"]["release"], "1.4.2");
    assert_eq!(act["properties"]["environment"], "production");
    assert_eq!(act["properties"]["status"], "ACTIVE");
    let ended = &fake.delivered_events("Game Session Ended")[0];
    assert_eq!(ended["anonymousId"], "match-a");
    assert!(ended["properties"]["duration_seconds"].as_f64().unwrap() >= 1.0);
    let timed_out = &fake.delivered_events("Player Session Timed Out")[0];
    assert_eq!(timed_out["userId"], "carol");
    assert!(
        timed_out["properties"]["duration_seconds"]
            .as_f64()
            .unwrap()
            >= 1.0
    );

    // The fake records a batch before the daemon has read its reply: wait for the counters.
    let sent = r#"session_broker_analytics_events_total{outcome="sent"}"#;
    eventually("the sent counter", Duration::from_secs(20), || {
        metric(&d.daemon.metrics().render(), sent) >= 9.0
    })
    .await;
    let text = d.daemon.metrics().render();
    assert_eq!(metric(&text, sent), 9.0);
    assert!(metric(&text, "session_broker_analytics_retries_total") >= 2.0);
    assert!(
        metric(
            &text,
            r#"session_broker_analytics_batches_total{result="retried"}"#
        ) >= 2.0
    );
    assert!(metric(&text, "session_broker_analytics_batch_bytes_count") >= 3.0);
    eventually("lag back to 0", Duration::from_secs(5), || {
        metric(
            &d.daemon.metrics().render(),
            "session_broker_analytics_lag_seconds",
        ) == 0.0
    })
    .await;
    d.stop().await;

    // A restart resends nothing: the cursor was journaled.
    let before = fake.with(|s| s.requests.len());
    let d = start(dir.path(), analytics(addr, false)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.stop().await;
    assert_eq!(
        fake.with(|s| s.requests.len()),
        before,
        "nothing resent after a clean restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_the_byte_limits_and_an_oversize_event_is_dropped_alone() {
    let (fake, addr) = fake_segment().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), analytics(addr, false)).await;
    // 30 game sessions whose start events are ~25 KB each: 750 KB cannot go in one request.
    let big_labels: HashMap<String, String> = (0..64)
        .map(|i| (format!("k{i:03}{}", "k".repeat(124)), "v".repeat(256)))
        .collect();
    for g in 0..30 {
        let mut req = common::register_request(&format!("big-{g}"), 2);
        req.labels = big_labels.clone();
        d.games.register_game_session(req).await.unwrap();
    }
    // One whose labels are 4-byte characters: its start event is ~98 KB, over Segment's 32 KB.
    let mut req = common::register_request("huge", 2);
    req.labels = (0..64)
        .map(|i| (format!("{i:03}{}", "🎮".repeat(125)), "🎮".repeat(256)))
        .collect();
    d.games.register_game_session(req).await.unwrap();
    d.players
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "huge".into(),
            player_id: "dave".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Batches complete in any order (several are in flight): wait for all of them.
    eventually("every event", Duration::from_secs(20), || {
        !fake.delivered_events("Player Session Reserved").is_empty()
            && fake.delivered_events("Game Session Started").len() == 30
    })
    .await;
    assert_eq!(fake.delivered_events("Game Session Started").len(), 30);
    let requests = fake.with(|s| s.requests.clone());
    assert!(
        requests.len() >= 2,
        "split by bytes, not sent as one request"
    );
    assert!(
        fake.with(|s| s.violations.is_empty()),
        "{:?}",
        fake.with(|s| s.violations.clone())
    );
    // The fake records a batch before the daemon has read its reply: wait for the counters.
    let sent = r#"session_broker_analytics_events_total{outcome="sent"}"#;
    eventually("the sent counter", Duration::from_secs(20), || {
        metric(&d.daemon.metrics().render(), sent) >= 31.0
    })
    .await;
    let text = d.daemon.metrics().render();
    assert_eq!(
        metric(
            &text,
            r#"session_broker_analytics_events_total{outcome="dropped_too_large"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"session_broker_analytics_events_total{outcome="sent"}"#
        ),
        31.0
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_split_out_and_dropped_the_rest_arrive() {
    let (fake, addr) = fake_segment().await;
    fake.with(|s| s.poison_user = Some("mallory".into()));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = analytics(addr, false);
    cfg.flush_interval = Duration::from_millis(300);
    let mut d = start(dir.path(), cfg).await;
    d.register("match-p", 10).await;
    for p in ["p1", "p2", "mallory", "p3", "p4", "p5"] {
        d.players
            .create_player_session(CreatePlayerSessionRequest {
                game_session_id: "match-p".into(),
                player_id: p.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let rejected = |d: &TestDaemon| {
        metric(
            &d.daemon.metrics().render(),
            r#"session_broker_analytics_events_total{outcome="dropped_rejected"}"#,
        )
    };
    eventually(
        "the five good reservations and the poisoned one dropped",
        Duration::from_secs(20),
        || fake.delivered_events("Player Session Reserved").len() == 5 && rejected(&d) == 1.0,
    )
    .await;
    let text = d.daemon.metrics().render();
    assert_eq!(
        metric(
            &text,
            r#"session_broker_analytics_events_total{outcome="dropped_rejected"}"#
        ),
        1.0
    );
    assert!(
        metric(
            &text,
            r#"session_broker_analytics_batches_total{result="rejected"}"#
        ) >= 2.0
    );
    assert!(!fake.delivered().iter().any(|m| m["userId"] == "mallory"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sink_never_slows_the_rpcs() {
    let (fake, addr) = fake_segment().await;
    fake.with(|s| s.hang = true);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = analytics(addr, false);
    cfg.sink = SinkConfig::Segment {
        endpoint: format!("http://{addr}"),
        write_key: WRITE_KEY.into(),
        timeout: Duration::from_secs(3600),
        gzip: false,
    };
    cfg.batch_size = 5;
    let mut d = start(dir.path(), cfg).await;
    d.register("match-h", 1000).await;
    // Every in-flight slot is stuck on the sink; the RPCs go on.
    for i in 0..300 {
        let call = d.players.create_player_session(CreatePlayerSessionRequest {
            game_session_id: "match-h".into(),
            player_id: format!("h{i}"),
            ..Default::default()
        });
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("an RPC stalled behind the sink")
            .unwrap();
    }
    eventually(
        "requests stuck in the sink",
        Duration::from_secs(10),
        || fake.with(|s| s.hanging) >= 4,
    )
    .await;
    assert_eq!(
        fake.with(|s| s.hanging),
        4,
        "in-flight requests are bounded"
    );
    let text = d.daemon.metrics().render();
    assert!(metric(&text, "session_broker_analytics_lag_seconds") >= 0.0);
    // Shutdown is not held hostage either (the final flush has a deadline).
    let stopping = Instant::now();
    d.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(30));
}

// kill -9 with events undelivered (the sink is down), then a restart with the sink back: every
// reservation acknowledged before the kill is delivered.

/// The binary with the Segment sink pointed at `sink`; returns it and its admin address.
fn spawn(dir: &Path, port: u16, sink: SocketAddr) -> (common::Process, SocketAddr) {
    let admin = common::free_port();
    let endpoint = format!("http://{sink}");
    let p = common::spawn_daemon(
        dir,
        port,
        admin,
        &[
            "--analytics-sink",
            "segment",
            "--segment-endpoint",
            &endpoint,
            "--analytics-flush-interval",
            "50ms",
        ],
        &[("SESSION_BROKER_SEGMENT_WRITE_KEY", WRITE_KEY)],
    );
    (p, format!("127.0.0.1:{admin}").parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_undelivered_at_a_kill_9_are_delivered_after_the_restart() {
    use session_broker::proto::{
        game_session_service_client::GameSessionServiceClient,
        player_session_service_client::PlayerSessionServiceClient,
    };
    let (fake, addr) = fake_segment().await;
    fake.with(|s| s.down = true);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (mut process, admin) = spawn(dir.path(), port, addr);
    common::wait_ready(admin).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut games = GameSessionServiceClient::new(channel.clone());
    games
        .register_game_session(common::register_request("match-k", 100))
        .await
        .unwrap();
    let mut players = PlayerSessionServiceClient::new(channel);
    let mut acknowledged = Vec::new();
    for i in 0..60 {
        let r = players
            .create_player_session(CreatePlayerSessionRequest {
                game_session_id: "match-k".into(),
                player_id: format!("k{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        acknowledged.push(r.player_session_id);
    }
    eventually(
        "attempts against the down sink",
        Duration::from_secs(10),
        || fake.with(|s| s.requests.len()) >= 1,
    )
    .await;
    process.0.kill().unwrap();
    process.0.wait().unwrap();
    assert!(fake.delivered().is_empty());

    fake.with(|s| s.down = false);
    let (_process, admin) = spawn(dir.path(), port, addr);
    common::wait_ready(admin).await;
    eventually(
        "every acknowledged reservation's event",
        Duration::from_secs(30),
        || {
            let got: HashSet<String> = fake
                .delivered_events("Player Session Reserved")
                .iter()
                .map(|m| {
                    m["properties"]["player_session_id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            acknowledged.iter().all(|id| got.contains(id))
        },
    )
    .await;
    let starts: HashSet<String> = fake
        .delivered_events("Game Session Started")
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(starts.len(), 1);
    // The 503 attempts carried the same messageIds as the delivery after the restart.
    let delivered: HashSet<String> = fake
        .delivered()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect();
    let failed: HashSet<String> = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.status == 503)
            .flat_map(|r| {
                r.messages
                    .iter()
                    .map(|m| m["messageId"].as_str().unwrap().to_string())
            })
            .collect()
    });
    assert!(
        failed.is_subset(&delivered),
        "a resent event keeps its messageId"
    );
    assert!(fake.with(|s| s.violations.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_the_bound_is_dropped_and_counted_then_delivery_goes_on() {
    let (fake, addr) = fake_segment().await;
    fake.with(|s| s.down = true);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = analytics(addr, false);
    cfg.max_backlog = 8192;
    cfg.max_in_flight = 1;
    cfg.batch_size = 10;
    let jdir = dir.path().to_path_buf();
    let mut d = TestDaemon::start_with(move |c| {
        let mut jc = JournalConfig::new(jdir);
        jc.segment_bytes = 4096;
        jc.snapshot_every_records = 100;
        c.journal = Some(jc);
        c.analytics = Some(cfg);
    })
    .await;
    d.register("match-b", 1000).await;
    for i in 0..400 {
        d.players
            .create_player_session(CreatePlayerSessionRequest {
                game_session_id: "match-b".into(),
                player_id: format!("b{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Snapshots ran meanwhile and deleted what exceeded 8 KiB of backlog.
    fake.with(|s| s.down = false);
    d.players
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "match-b".into(),
            player_id: "last".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually("the newest event", Duration::from_secs(30), || {
        fake.delivered_events("Player Session Reserved")
            .iter()
            .any(|m| m["userId"] == "last")
    })
    .await;
    let text = d.daemon.metrics().render();
    let dropped = metric(
        &text,
        r#"session_broker_analytics_events_total{outcome="dropped_backlog"}"#,
    );
    let sent = metric(
        &text,
        r#"session_broker_analytics_events_total{outcome="sent"}"#,
    );
    assert!(dropped > 0.0, "the loss is counted");
    assert!((2.0..402.0).contains(&sent), "sent {sent}");
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("journal-")
        })
        .count();
    assert!(segments < 30, "disk use stays bounded: {segments} segments");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_writes_one_json_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut cfg = AnalyticsConfig::new(SinkConfig::File {
        path: path.clone(),
        max_bytes: 1 << 20,
    });
    cfg.flush_interval = Duration::from_millis(50);
    let mut d = start(&dir.path().join("data"), cfg).await;
    d.register("match-f", 4).await;
    d.players
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "match-f".into(),
            player_id: "erin".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually("two lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "Game Session Started");
    assert_eq!(lines[0]["properties"]["labels"]["map"], "dust");
    assert_eq!(lines[1]["event"], "Player Session Reserved");
    assert_eq!(lines[1]["userId"], "erin");
    d.stop().await;
}
