//! The Sentry sink against a local HTTP server standing in for Sentry: envelopes are parsed with
//! the `sentry-types` crate and checked against what Relay requires.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use common::TestDaemon;
use sentry_types::protocol::v7::{Envelope, EnvelopeItem, SessionStatus};
use session_broker::{
    health::sentry::{Dsn, SentryConfig, SentryMode},
    proto::{
        session_health_service_client::SessionHealthServiceClient, AcceptPlayerSessionRequest,
        CreatePlayerSessionsRequest, EndGameSessionRequest, RemovePlayerSessionRequest,
        ReportPlayerSessionErrorRequest,
    },
};

#[derive(Clone, Debug)]
struct Received {
    project: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A scripted response: status and extra headers.
type Reply = (StatusCode, Vec<(&'static str, &'static str)>);

#[derive(Clone, Default)]
struct FakeSentry {
    received: Arc<Mutex<Vec<Received>>>,
    /// Responses to give, in order (then 200).
    script: Arc<Mutex<Vec<Reply>>>,
}

async fn envelope(
    State(s): State<FakeSentry>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    s.received.lock().unwrap().push(Received {
        project,
        headers,
        body,
    });
    let next = {
        let mut script = s.script.lock().unwrap();
        (!script.is_empty()).then(|| script.remove(0))
    };
    let (status, extra) = next.unwrap_or((StatusCode::OK, vec![]));
    let mut h = HeaderMap::new();
    for (k, v) in extra {
        h.insert(k, v.parse().unwrap());
    }
    (status, h)
}

async fn fake_sentry() -> (FakeSentry, std::net::SocketAddr) {
    let fake = FakeSentry::default();
    let app = Router::new()
        .route("/api/{project}/envelope/", post(envelope))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, addr)
}

async fn daemon(addr: std::net::SocketAddr, mode: SentryMode) -> TestDaemon {
    TestDaemon::start_with(move |c| {
        c.sentry = Some(SentryConfig {
            dsn: Dsn::parse(&format!("http://publickey123@{addr}/42")).unwrap(),
            mode,
            flush_interval: Duration::from_secs(60),
            queue: 10_000,
            shutdown_timeout: Duration::from_secs(5),
        });
    })
    .await
}

/// Reserves `n` players in a fresh game session "g" (release 1.4.2, production).
async fn players(td: &mut TestDaemon, n: usize) -> Vec<String> {
    td.register("g", 200).await;
    let mut out = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let r = td
            .players
            .create_player_sessions(CreatePlayerSessionsRequest {
                game_session_id: "g".into(),
                player_ids: chunk.iter().map(|i| format!("player-{i}")).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(r.player_sessions.into_iter().map(|p| p.player_session_id));
    }
    out
}

/// A scripted mix: p0 accepted then removed (exited), p1 error then removed (exited with an
/// error), p2 client crash (crashed), the rest completed when the match ends (exited).
async fn mix(td: &mut TestDaemon, ids: &[String]) {
    for (i, id) in ids.iter().enumerate().take(2) {
        td.players
            .accept_player_session(AcceptPlayerSessionRequest {
                game_session_id: "g".into(),
                player_session_id: id.clone(),
            })
            .await
            .unwrap();
        if i == 1 {
            SessionHealthServiceClient::new(td.channel.clone())
                .report_player_session_error(ReportPlayerSessionErrorRequest {
                    game_session_id: "g".into(),
                    player_session_id: id.clone(),
                    crashed: false,
                    message: "stutter".into(),
                })
                .await
                .unwrap();
        }
        td.players
            .remove_player_session(RemovePlayerSessionRequest {
                game_session_id: "g".into(),
                player_session_id: id.clone(),
            })
            .await
            .unwrap();
    }
    SessionHealthServiceClient::new(td.channel.clone())
        .report_player_session_error(ReportPlayerSessionErrorRequest {
            game_session_id: "g".into(),
            player_session_id: ids[2].clone(),
            crashed: true,
            message: "client crash".into(),
        })
        .await
        .unwrap();
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "g".into(),
            crashed: false,
            reason: "over".into(),
        })
        .await
        .unwrap();
}

/// Checks what every envelope must satisfy for Relay, and parses it.
fn parse(r: &Received) -> Envelope {
    assert_eq!(r.project, "42");
    let auth = r.headers["x-sentry-auth"].to_str().unwrap();
    assert!(
        auth.starts_with("Sentry sentry_version=7, sentry_client=session-broker/"),
        "{auth}"
    );
    assert!(auth.contains("sentry_key=publickey123"), "{auth}");
    assert_eq!(r.headers["content-type"], "application/x-sentry-envelope");
    let header: serde_json::Value =
        serde_json::from_slice(r.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let sent_at = header["sent_at"].as_str().expect("sent_at");
    let sent = humantime::parse_rfc3339(sent_at).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(sent)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "sent_at {sent_at}");
    Envelope::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

#[tokio::test]
async fn individual_mode_sends_every_update_once_as_relay_expects() {
    let (fake, addr) = fake_sentry().await;
    let mut td = daemon(addr, SentryMode::Individual).await;
    let ids = players(&mut td, 130).await;
    mix(&mut td, &ids).await;
    td.stop().await; // the final flush happens within the shutdown grace

    let received = fake.received.lock().unwrap().clone();
    let mut updates: HashMap<String, Vec<(bool, SessionStatus, u64, u32)>> = HashMap::new();
    for r in &received {
        let env = parse(r);
        let items: Vec<_> = env.items().collect();
        assert!(
            !items.is_empty() && items.len() <= 100,
            "{} items",
            items.len()
        );
        for item in items {
            let EnvelopeItem::SessionUpdate(s) = item else {
                panic!("unexpected item {item:?}");
            };
            assert_eq!(s.attributes.release, "1.4.2");
            assert_eq!(s.attributes.environment.as_deref(), Some("production"));
            assert!(s
                .distinct_id
                .as_deref()
                .is_some_and(|d| d.starts_with("player-")));
            let now = std::time::SystemTime::now();
            assert!(
                now.duration_since(s.timestamp.unwrap()).unwrap_or_default()
                    < Duration::from_secs(60)
            );
            assert!(s.started <= s.timestamp.unwrap());
            if s.status != SessionStatus::Ok {
                assert!(s.duration.is_some(), "terminal updates carry the duration");
            }
            updates.entry(s.session_id.to_string()).or_default().push((
                s.init,
                s.status,
                s.sequence.unwrap(),
                s.errors as u32,
            ));
        }
    }
    assert_eq!(updates.len(), 130, "every session reached Sentry");
    let mut terminal = HashMap::new();
    for (sid, us) in &updates {
        assert!(
            us[0].0 && us[1..].iter().all(|u| !u.0),
            "{sid}: exactly one init, first: {us:?}"
        );
        assert!(
            us.windows(2).all(|w| w[0].2 < w[1].2),
            "{sid}: seq increases"
        );
        let last = us.last().unwrap();
        assert_ne!(last.1, SessionStatus::Ok, "{sid}: ends terminal");
        assert_eq!(us.iter().filter(|u| u.1 != SessionStatus::Ok).count(), 1);
        *terminal.entry((last.1, last.3 > 0)).or_insert(0) += 1;
    }
    assert_eq!(terminal[&(SessionStatus::Exited, false)], 128);
    assert_eq!(terminal[&(SessionStatus::Exited, true)], 1);
    assert_eq!(terminal[&(SessionStatus::Crashed, true)], 1);
}

#[tokio::test]
async fn aggregate_mode_sends_per_minute_buckets_at_shutdown() {
    let (fake, addr) = fake_sentry().await;
    let mut td = daemon(addr, SentryMode::Aggregate).await;
    let ids = players(&mut td, 10).await;
    mix(&mut td, &ids).await;
    td.stop().await;

    let received = fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "one flush at shutdown");
    let env = parse(&received[0]);
    let (mut exited, mut errored, mut crashed, mut abnormal) = (0, 0, 0, 0);
    for item in env.items() {
        let EnvelopeItem::SessionAggregates(a) = item else {
            panic!("unexpected item {item:?}");
        };
        assert_eq!(a.attributes.release, "1.4.2");
        assert!(a.aggregates.len() <= 100);
        for b in &a.aggregates {
            let secs = b
                .started
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(secs % 60, 0, "buckets start on a minute");
            exited += b.exited;
            errored += b.errored;
            crashed += b.crashed;
            abnormal += b.abnormal;
        }
    }
    assert_eq!((exited, errored, crashed, abnormal), (8, 1, 1, 0));
}

#[tokio::test]
async fn rate_limits_are_honoured_by_discarding_and_counting() {
    let (fake, addr) = fake_sentry().await;
    fake.script
        .lock()
        .unwrap()
        .push((StatusCode::TOO_MANY_REQUESTS, vec![("retry-after", "120")]));
    let mut td = daemon(addr, SentryMode::Individual).await;
    // 150 init updates: the first envelope (100) is refused with 429, the rest is discarded.
    players(&mut td, 150).await;
    let metrics = td.daemon.metrics().clone();
    td.stop().await;
    assert_eq!(
        fake.received.lock().unwrap().len(),
        1,
        "nothing sent while limited"
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"session_broker_sentry_dropped_total{reason="rate_limited"} 150"#),
        "{}",
        text.lines()
            .filter(|l| l.contains("sentry"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(text.contains("session_broker_sentry_envelopes_total 0"));
}

#[tokio::test]
async fn x_sentry_rate_limits_for_sessions_stop_sending() {
    let (fake, addr) = fake_sentry().await;
    fake.script.lock().unwrap().push((
        StatusCode::OK,
        vec![("x-sentry-rate-limits", "3600:session:organization")],
    ));
    let mut td = daemon(addr, SentryMode::Individual).await;
    players(&mut td, 150).await;
    let metrics = td.daemon.metrics().clone();
    td.stop().await;
    // The first envelope was accepted (and counted); the limit then applies to the rest.
    assert_eq!(fake.received.lock().unwrap().len(), 1);
    let text = metrics.render();
    assert!(text.contains("session_broker_sentry_envelopes_total 1"));
    assert!(text.contains(r#"session_broker_sentry_dropped_total{reason="rate_limited"} 50"#));
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_items() {
    let (fake, addr) = fake_sentry().await;
    {
        let mut script = fake.script.lock().unwrap();
        script.push((StatusCode::INTERNAL_SERVER_ERROR, vec![]));
        script.push((StatusCode::SERVICE_UNAVAILABLE, vec![]));
    }
    let mut td = daemon(addr, SentryMode::Individual).await;
    players(&mut td, 100).await; // exactly one envelope's worth
    let metrics = td.daemon.metrics().clone();
    td.stop().await;
    let received = fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3, "two failures, then delivered");
    let sids = |r: &Received| -> Vec<String> {
        parse(r)
            .items()
            .map(|i| match i {
                EnvelopeItem::SessionUpdate(s) => s.session_id.to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        sids(&received[0]),
        sids(&received[2]),
        "the same items on retry"
    );
    assert_eq!(sids(&received[0]).len(), 100);
    let text = metrics.render();
    assert!(text.contains("session_broker_sentry_envelopes_total 1"));
    assert!(text.contains(r#"session_broker_sentry_dropped_total{reason="send_failed"} 0"#));
}

#[tokio::test]
async fn a_hanging_sentry_never_slows_the_rpc_path() {
    // A "Sentry" that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut td = TestDaemon::start_with(move |c| {
        c.sentry = Some(SentryConfig {
            dsn: Dsn::parse(&format!("http://k@{addr}/1")).unwrap(),
            mode: SentryMode::Individual,
            flush_interval: Duration::from_secs(60),
            queue: 10_000,
            shutdown_timeout: Duration::from_millis(500),
        });
    })
    .await;
    // 200 reservations (two envelopes' worth) all answer while the sink is stuck on the first.
    let calls = tokio::time::timeout(Duration::from_secs(30), players(&mut td, 200)).await;
    assert_eq!(calls.expect("RPCs keep completing").len(), 200);
    // Shutdown gives the final flush its bounded time and exits; what it could not deliver is
    // counted.
    let metrics = td.daemon.metrics().clone();
    tokio::time::timeout(Duration::from_secs(15), td.stop())
        .await
        .expect("shutdown does not wait for a hanging sink");
    let text = metrics.render();
    assert!(
        text.contains(r#"session_broker_sentry_dropped_total{reason="shutdown"} 200"#),
        "{}",
        text.lines()
            .filter(|l| l.contains("sentry"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn aggregates_are_also_sent_every_flush_interval() {
    let (fake, addr) = fake_sentry().await;
    let mut td = TestDaemon::start_with(move |c| {
        c.sentry = Some(SentryConfig {
            dsn: Dsn::parse(&format!("http://publickey123@{addr}/42")).unwrap(),
            mode: SentryMode::Aggregate,
            flush_interval: Duration::from_secs(1),
            queue: 10_000,
            shutdown_timeout: Duration::from_secs(5),
        });
    })
    .await;
    let ids = players(&mut td, 10).await;
    mix(&mut td, &ids).await;
    // Without any shutdown, the periodic flush delivers them.
    let counted = |fake: &FakeSentry| -> u32 {
        let received = fake.received.lock().unwrap().clone();
        received
            .iter()
            .flat_map(|r| parse(r).items().cloned().collect::<Vec<_>>())
            .map(|i| match i {
                EnvelopeItem::SessionAggregates(a) => a
                    .aggregates
                    .iter()
                    .map(|b| b.exited + b.errored + b.abnormal + b.crashed)
                    .sum::<u32>(),
                other => panic!("{other:?}"),
            })
            .sum()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counted(&fake) < 10 {
        assert!(tokio::time::Instant::now() < deadline, "no periodic flush");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_stop = fake.received.lock().unwrap().len();
    td.stop().await;
    assert_eq!(counted(&fake), 10, "every ended session, once");
    assert_eq!(
        fake.received.lock().unwrap().len(),
        before_stop,
        "nothing left for the final flush"
    );
}
