//! The admin port: exact metric values after a scripted workload, probes before and during
//! shutdown, fleet utilization JSON.

mod common;

use std::{collections::HashMap, time::Duration};

use common::{http_get, register_request, HoldClock, TestDaemon};
use session_broker::proto::{
    AcceptPlayerSessionRequest, CreatePlayerSessionRequest, CreatePlayerSessionsRequest,
    RemovePlayerSessionRequest,
};

/// Parses the text exposition into `name{labels} -> value` (labels as written).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Validates the exposition with `promtool check metrics` when promtool is installed
/// (Debian package `prometheus`; `.ci/run` installs it when it can).
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: exposition checked by the parser above only");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reserve(gs: &str, player: &str) -> CreatePlayerSessionRequest {
    CreatePlayerSessionRequest {
        game_session_id: gs.into(),
        player_id: player.into(),
        player_data: String::new(),
        idempotency_key: String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_count_a_scripted_workload_exactly() {
    let _hold = HoldClock::new();
    let mut d = TestDaemon::start().await;
    let mut a1 = register_request("a1", 4);
    a1.fleet_id = "fleet-a".into();
    a1.reservation_timeout_seconds = 30;
    d.games.register_game_session(a1).await.unwrap();
    let mut a2 = register_request("a2", 2);
    a2.fleet_id = "fleet-a".into();
    d.games.register_game_session(a2).await.unwrap();
    let mut b1 = register_request("b1", 10);
    b1.fleet_id = "fleet-b".into();
    d.games.register_game_session(b1).await.unwrap();

    // fleet-a: 3 reserved in a1, 2 accepted, 1 of those removed, the third times out.
    let ps = d
        .players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "a1".into(),
            player_ids: vec!["p1".into(), "p2".into(), "p3".into()],
            player_data: HashMap::new(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    for p in &ps[..2] {
        d.players
            .accept_player_session(AcceptPlayerSessionRequest {
                game_session_id: "a1".into(),
                player_session_id: p.player_session_id.clone(),
            })
            .await
            .unwrap();
    }
    d.players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "a1".into(),
            player_session_id: ps[0].player_session_id.clone(),
        })
        .await
        .unwrap();
    // a2 fills up: 2 OK, 1 RESOURCE_EXHAUSTED.
    for p in ["q1", "q2", "q3"] {
        let _ = d.players.create_player_session(reserve("a2", p)).await;
    }
    // fleet-b: one reservation, NOT_FOUND for a missing game session.
    d.players
        .create_player_session(reserve("b1", "r1"))
        .await
        .unwrap();
    let _ = d
        .players
        .create_player_session(reserve("missing", "r2"))
        .await;

    tokio::time::advance(Duration::from_millis(30_100)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }

    let (status, text) = http_get(d.daemon.admin_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("{k} missing from\n{text}"))
    };
    let ps = |fleet: &str, status: &str| {
        get(&format!(
            "session_broker_player_sessions{{fleet_id=\"{fleet}\",status=\"{status}\"}}"
        ))
    };
    // p3 timed out (30 s); q1 and q2 in a2 are still RESERVED (60 s default timeout).
    assert_eq!(ps("fleet-a", "reserved"), 2.0);
    assert_eq!(
        (
            ps("fleet-a", "active"),
            ps("fleet-a", "completed"),
            ps("fleet-a", "timedout")
        ),
        (1.0, 1.0, 1.0)
    );
    let t = |fleet: &str, to: &str| {
        get(&format!(
            "session_broker_player_session_transitions_total{{fleet_id=\"{fleet}\",to=\"{to}\"}}"
        ))
    };
    assert_eq!(
        (
            t("fleet-a", "reserved"),
            t("fleet-a", "activated"),
            t("fleet-a", "completed"),
            t("fleet-a", "timed_out")
        ),
        (5.0, 2.0, 1.0, 1.0)
    );
    assert_eq!(t("fleet-b", "reserved"), 1.0);
    let g = |fleet: &str, status: &str| {
        get(&format!(
            "session_broker_game_sessions{{fleet_id=\"{fleet}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(
        (
            g("fleet-a", "active"),
            g("fleet-b", "active"),
            g("fleet-a", "error")
        ),
        (2.0, 1.0, 0.0)
    );
    let calls = |method: &str, code: &str| {
        get(&format!(
            "session_broker_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}}"
        ))
    };
    assert_eq!(calls("CreatePlayerSession", "OK"), 3.0);
    assert_eq!(calls("CreatePlayerSession", "RESOURCE_EXHAUSTED"), 1.0);
    assert_eq!(calls("CreatePlayerSession", "NOT_FOUND"), 1.0);
    assert_eq!(calls("AcceptPlayerSession", "OK"), 2.0);
    assert_eq!(calls("RegisterGameSession", "OK"), 3.0);
    assert_eq!(
        get("session_broker_grpc_request_duration_seconds_count{method=\"AcceptPlayerSession\"}"),
        2.0
    );
    assert_eq!(get("session_broker_sweeper_expired_total"), 1.0);
    assert_eq!(get("session_broker_sweeper_lag_seconds_count"), 1.0);
    assert_eq!(get("session_broker_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(get("process_resident_memory_bytes") > 0.0);
    assert!(text.contains("# TYPE session_broker_grpc_requests_total counter"));
    promtool_check(&text);

    // Fleet utilization as JSON.
    let (status, body) = http_get(d.daemon.admin_addr(), "/v1/fleets/fleet-a").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["maximum_player_session_count"], 6);
    assert_eq!(v["player_sessions"]["reserved"], 2, "q1 and q2 in a2");
    assert_eq!(v["current_player_session_count"], 3);
    assert_eq!(v["available_player_session_count"], 3);
    let (_, body) = http_get(d.daemon.admin_addr(), "/v1/fleets").await;
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<_> = all["fleets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fleet_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["fleet-a", "fleet-b"]);
    assert_eq!(
        http_get(d.daemon.admin_addr(), "/v1/fleets/nope").await.0,
        404
    );
    assert_eq!(
        http_get(d.daemon.admin_addr(), "/v1/fleets/bad%20id")
            .await
            .0,
        400
    );
    d.daemon.store().check_invariants().unwrap();
    d.stop().await;
}

#[tokio::test]
async fn probes_before_and_during_shutdown() {
    let mut d = TestDaemon::start().await;
    assert_eq!(
        http_get(d.daemon.admin_addr(), "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(http_get(d.daemon.admin_addr(), "/readyz").await.0, 200);
    d.register("gs-s", 2).await;
    d.daemon.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        http_get(d.daemon.admin_addr(), "/readyz").await.0,
        503,
        "not ready while draining"
    );
    assert_eq!(
        http_get(d.daemon.admin_addr(), "/healthz").await.0,
        200,
        "still alive"
    );
    let late = d
        .players
        .create_player_session(reserve("gs-s", "late"))
        .await;
    assert_eq!(
        late.unwrap_err().code(),
        tonic::Code::Unavailable,
        "no new calls once shutdown started"
    );
    d.daemon.wait().await.unwrap();
}

#[tokio::test]
async fn admin_port_answers_probes_while_recovering() {
    use session_broker::{
        admin::{AdminServer, Liveness, Readiness, Serving},
        domain::Clock,
        metrics::Metrics,
        store::{Store, StoreConfig},
    };
    let (serving, ready) = (Serving::default(), Readiness::default());
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        serving.clone(),
        ready.clone(),
        Liveness::default(),
        session_broker::security::Security::open(),
        None,
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.serve(stop.clone()));
    assert_eq!(
        http_get(addr, "/healthz").await.0,
        200,
        "alive while recovering"
    );
    assert_eq!(
        http_get(addr, "/readyz").await.0,
        503,
        "not ready before recovery"
    );
    assert_eq!(http_get(addr, "/metrics").await.0, 503);
    assert_eq!(http_get(addr, "/v1/fleets").await.0, 503);
    // Recovery done.
    let store = std::sync::Arc::new(Store::in_memory(Clock::system(), StoreConfig::default()));
    serving.set(store.clone(), Metrics::new(store));
    ready.set(true);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/metrics").await.0, 200);
    stop.cancel();
    task.await.unwrap().unwrap();
}
