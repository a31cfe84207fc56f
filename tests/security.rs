//! Authentication, authorization, TLS and load shedding against the real daemon.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use common::{register_request, TestDaemon};
use session_broker::{
    proto::{
        fleet_service_client::FleetServiceClient,
        game_session_service_client::GameSessionServiceClient,
        player_session_service_client::PlayerSessionServiceClient,
        session_health_service_client::SessionHealthServiceClient, *,
    },
    security::hash_token,
};
use tonic::{transport::Channel, Code, Request};

/// Tokens: one per role, scoped to fleet-1 (admin and viewer unscoped), and a game server of
/// another fleet.
fn auth_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let mut text = String::new();
    for (name, role, fleets) in [
        ("gs", "game_server", Some("fleet-1")),
        ("gs-other", "game_server", Some("fleet-2")),
        ("mm", "matchmaker", Some("fleet-1")),
        ("admin", "admin", None),
        ("viewer", "viewer", None),
    ] {
        text.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
            hash_token(&format!("tok-{name}"))
        ));
        if let Some(f) = fleets {
            text.push_str(&format!("fleets = [\"{f}\"]\n"));
        }
    }
    text.push_str(extra);
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer tok-{t}").parse().unwrap());
    }
    r
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map_or_else(|s| s.code(), |_| Code::Ok)
}

const RPCS: [&str; 18] = [
    "RegisterGameSession",
    "Heartbeat",
    "UpdateGameSession",
    "GetGameSession",
    "CreatePlayerSession",
    "CreatePlayerSessions",
    "AcceptPlayerSession",
    "RemovePlayerSession",
    "DescribePlayerSessions",
    "GetPlayerSessionHistory",
    "SearchGameSessions",
    "DescribeFleetUtilization",
    "PlacePlayerSessions",
    "WatchFleet",
    "ReportPlayerSessionError",
    "WatchSessionUpdates",
    "GetReleaseHealth",
    "EndGameSession",
];

/// Makes one call of `rpc` as `token` against game session `g` (fleet-1) and player session
/// `p`; returns its code.
async fn call(ch: &Channel, rpc: &str, token: Option<&str>, g: &str, p: &str) -> Code {
    let mut games = GameSessionServiceClient::new(ch.clone());
    let mut players = PlayerSessionServiceClient::new(ch.clone());
    let mut fleets = FleetServiceClient::new(ch.clone());
    let mut health = SessionHealthServiceClient::new(ch.clone());
    let gs = || g.to_string();
    let ps = || p.to_string();
    let t = token;
    match rpc {
        "RegisterGameSession" => {
            let mut r = register_request("", 4);
            r.game_session_id = String::new();
            code(games.register_game_session(req(r, t)).await)
        }
        "Heartbeat" => code(
            games
                .heartbeat(req(
                    HeartbeatRequest {
                        game_session_id: gs(),
                    },
                    t,
                ))
                .await,
        ),
        "UpdateGameSession" => code(
            games
                .update_game_session(req(
                    UpdateGameSessionRequest {
                        game_session_id: gs(),
                        maximum_player_session_count: Some(8),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "GetGameSession" => code(
            games
                .get_game_session(req(
                    GetGameSessionRequest {
                        game_session_id: gs(),
                    },
                    t,
                ))
                .await,
        ),
        "EndGameSession" => code(
            games
                .end_game_session(req(
                    EndGameSessionRequest {
                        game_session_id: gs(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "CreatePlayerSession" => code(
            players
                .create_player_session(req(
                    CreatePlayerSessionRequest {
                        game_session_id: gs(),
                        player_id: format!("p-{}", t.unwrap_or("none")),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "CreatePlayerSessions" => code(
            players
                .create_player_sessions(req(
                    CreatePlayerSessionsRequest {
                        game_session_id: gs(),
                        player_ids: vec![format!("q-{}", t.unwrap_or("none"))],
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "AcceptPlayerSession" => code(
            players
                .accept_player_session(req(
                    AcceptPlayerSessionRequest {
                        game_session_id: gs(),
                        player_session_id: ps(),
                    },
                    t,
                ))
                .await,
        ),
        "RemovePlayerSession" => code(
            players
                .remove_player_session(req(
                    RemovePlayerSessionRequest {
                        game_session_id: gs(),
                        player_session_id: ps(),
                    },
                    t,
                ))
                .await,
        ),
        "DescribePlayerSessions" => code(
            players
                .describe_player_sessions(req(
                    DescribePlayerSessionsRequest {
                        game_session_id: gs(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "GetPlayerSessionHistory" => code(
            players
                .get_player_session_history(req(
                    GetPlayerSessionHistoryRequest {
                        player_session_id: ps(),
                    },
                    t,
                ))
                .await,
        ),
        "SearchGameSessions" => code(
            fleets
                .search_game_sessions(req(
                    SearchGameSessionsRequest {
                        fleet_id: "fleet-1".into(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "DescribeFleetUtilization" => code(
            fleets
                .describe_fleet_utilization(req(
                    DescribeFleetUtilizationRequest {
                        fleet_ids: vec!["fleet-1".into()],
                    },
                    t,
                ))
                .await,
        ),
        "PlacePlayerSessions" => code(
            fleets
                .place_player_sessions(req(
                    PlacePlayerSessionsRequest {
                        fleet_id: "fleet-1".into(),
                        player_ids: vec![format!("r-{}", t.unwrap_or("none"))],
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "WatchFleet" => code(
            fleets
                .watch_fleet(req(
                    WatchFleetRequest {
                        fleet_id: "fleet-1".into(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "ReportPlayerSessionError" => code(
            health
                .report_player_session_error(req(
                    ReportPlayerSessionErrorRequest {
                        game_session_id: gs(),
                        player_session_id: ps(),
                        message: "x".into(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "WatchSessionUpdates" => code(
            health
                .watch_session_updates(req(
                    WatchSessionUpdatesRequest {
                        fleet_id: "fleet-1".into(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        "GetReleaseHealth" => code(
            health
                .get_release_health(req(
                    GetReleaseHealthRequest {
                        release: "1.4.2".into(),
                        fleet_id: "fleet-1".into(),
                        ..Default::default()
                    },
                    t,
                ))
                .await,
        ),
        other => panic!("unknown rpc {other}"),
    }
}

/// Which roles may make each call (the documented table).
fn allowed(rpc: &str, role: &str) -> bool {
    let game_server = [
        "RegisterGameSession",
        "Heartbeat",
        "UpdateGameSession",
        "GetGameSession",
        "EndGameSession",
        "AcceptPlayerSession",
        "RemovePlayerSession",
        "ReportPlayerSessionError",
    ];
    let read = [
        "GetGameSession",
        "DescribePlayerSessions",
        "GetPlayerSessionHistory",
        "SearchGameSessions",
        "DescribeFleetUtilization",
        "WatchFleet",
        "WatchSessionUpdates",
        "GetReleaseHealth",
    ];
    match role {
        "admin" => true,
        "gs" => game_server.contains(&rpc),
        "mm" => {
            read.contains(&rpc)
                || [
                    "CreatePlayerSession",
                    "CreatePlayerSessions",
                    "PlacePlayerSessions",
                ]
                .contains(&rpc)
        }
        "viewer" => read.contains(&rpc),
        _ => false,
    }
}

async fn secured(dir: &Path, extra: &str) -> TestDaemon {
    let path = auth_file(dir, extra);
    let d = TestDaemon::start_with(move |c| c.auth_file = Some(path)).await;
    d
}

/// A fresh game session of fleet-1 with one reservation, made with the admin token.
async fn target(ch: &Channel, id: &str) -> (String, String) {
    let mut games = GameSessionServiceClient::new(ch.clone());
    let mut players = PlayerSessionServiceClient::new(ch.clone());
    games
        .register_game_session(req(register_request(id, 50), Some("admin")))
        .await
        .unwrap();
    let ps = players
        .create_player_session(req(
            CreatePlayerSessionRequest {
                game_session_id: id.into(),
                player_id: "target-player".into(),
                ..Default::default()
            },
            Some("admin"),
        ))
        .await
        .unwrap()
        .into_inner();
    (id.to_string(), ps.player_session_id)
}

#[tokio::test]
async fn every_role_and_rpc_cell_is_allowed_or_denied_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let d = secured(dir.path(), "").await;
    let mut cells = 0;
    for role in ["gs", "mm", "admin", "viewer", "gs-other"] {
        // A game session per role, so one role's EndGameSession does not change the next's.
        let (g, p) = target(&d.channel, &format!("g-{role}")).await;
        for rpc in RPCS {
            let got = call(&d.channel, rpc, Some(role), &g, &p).await;
            let denied = matches!(got, Code::PermissionDenied | Code::Unauthenticated);
            let want = allowed(rpc, role) && role != "gs-other";
            // gs-other is a game server of fleet-2: denied everything about fleet-1, except
            // registering its own game session (the request names fleet-1 here: denied too).
            assert_eq!(!denied, want, "{role} {rpc}: {got:?}");
            if denied {
                assert_eq!(got, Code::PermissionDenied, "{role} {rpc}");
            }
            cells += 1;
        }
        // No token, and an unknown one: UNAUTHENTICATED for every call.
        for rpc in RPCS {
            assert_eq!(
                call(&d.channel, rpc, None, &g, &p).await,
                Code::Unauthenticated,
                "{rpc}"
            );
            assert_eq!(
                call(&d.channel, rpc, Some("forged"), &g, &p).await,
                Code::Unauthenticated,
                "{rpc}"
            );
        }
    }
    assert_eq!(cells, 5 * 18);
    // Health stays open.
    let mut h = tonic_health::pb::health_client::HealthClient::new(d.channel.clone());
    let s = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(s.into_inner().status, 1);
    d.stop().await;
}

#[tokio::test]
async fn a_scoped_token_learns_nothing_about_other_fleets() {
    let dir = tempfile::tempdir().unwrap();
    let d = secured(dir.path(), "").await;
    let (g, p) = target(&d.channel, "g-1").await;
    // An existing game session of another fleet and a missing one look the same to gs-other.
    for id in [g.as_str(), "no-such-game"] {
        let got = call(&d.channel, "Heartbeat", Some("gs-other"), id, &p).await;
        assert_eq!(got, Code::PermissionDenied, "{id}");
    }
    // Registering an id taken in another fleet: denied, not "already exists".
    let mut games = GameSessionServiceClient::new(d.channel.clone());
    let mut taken = register_request(&g, 4);
    taken.fleet_id = "fleet-2".into();
    let got = games
        .register_game_session(req(taken, Some("gs-other")))
        .await
        .unwrap_err();
    assert_eq!(got.code(), Code::PermissionDenied);
    // An unscoped admin sees the truth.
    assert_eq!(
        call(&d.channel, "Heartbeat", Some("admin"), "no-such-game", &p).await,
        Code::NotFound
    );
    // The scoped game server of fleet-1 may validate its own players.
    assert_eq!(
        call(&d.channel, "AcceptPlayerSession", Some("gs"), &g, &p).await,
        Code::Ok
    );
    // Utilization of every fleet, for a scoped matchmaker: only its own.
    let mut fleets = FleetServiceClient::new(d.channel.clone());
    let mut other = register_request("g-2", 4);
    other.fleet_id = "fleet-2".into();
    games
        .register_game_session(req(other, Some("admin")))
        .await
        .unwrap();
    let u = fleets
        .describe_fleet_utilization(req(
            DescribeFleetUtilizationRequest { fleet_ids: vec![] },
            Some("mm"),
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = u
        .fleet_utilization
        .iter()
        .map(|f| f.fleet_id.as_str())
        .collect();
    assert_eq!(ids, ["fleet-1"]);
    d.stop().await;
}

#[tokio::test]
async fn page_tokens_are_bound_to_the_caller_and_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let d = secured(dir.path(), "").await;
    let (g, _) = target(&d.channel, "g-1").await;
    let mut players = PlayerSessionServiceClient::new(d.channel.clone());
    players
        .create_player_session(req(
            CreatePlayerSessionRequest {
                game_session_id: g.clone(),
                player_id: "second".into(),
                ..Default::default()
            },
            Some("admin"),
        ))
        .await
        .unwrap();
    let describe = |token: &str| DescribePlayerSessionsRequest {
        game_session_id: g.clone(),
        limit: 1,
        page_token: token.into(),
        ..Default::default()
    };
    let first = players
        .describe_player_sessions(req(describe(""), Some("viewer")))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    // The same caller can follow it.
    players
        .describe_player_sessions(req(describe(&first.next_page_token), Some("viewer")))
        .await
        .unwrap();
    // Another caller, a hand-made token, a flipped byte: INVALID_ARGUMENT.
    let mut flipped = first.next_page_token.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    for (token, who) in [
        (first.next_page_token.clone(), "admin"),
        (
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            "viewer",
        ),
        (String::from_utf8(flipped).unwrap(), "viewer"),
    ] {
        let got = players
            .describe_player_sessions(req(describe(&token), Some(who)))
            .await
            .unwrap_err();
        assert_eq!(got.code(), Code::InvalidArgument, "{who} {token}");
    }
    d.stop().await;
}

#[tokio::test]
async fn the_admin_port_needs_tokens_except_for_probes() {
    let dir = tempfile::tempdir().unwrap();
    let d = secured(dir.path(), "").await;
    let admin = d.daemon.admin_addr();
    let get = |path: &str, token: Option<&str>| {
        let url = format!("http://{admin}{path}");
        let token = token.map(|t| format!("Bearer tok-{t}"));
        async move {
            let mut r = reqwest::Client::new().get(url);
            if let Some(t) = token {
                r = r.header("authorization", t);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get("/healthz", None).await, 200);
    assert_eq!(get("/readyz", None).await, 200);
    assert_eq!(get("/metrics", None).await, 200);
    assert_eq!(get("/v1/fleets", None).await, 401);
    assert_eq!(get("/v1/fleets", Some("forged")).await, 401);
    assert_eq!(get("/v1/fleets", Some("viewer")).await, 200);
    assert_eq!(
        get("/v1/fleets", Some("mm")).await,
        403,
        "scoped tokens: not here"
    );
    assert_eq!(get("/v1/export", Some("viewer")).await, 403);
    assert_eq!(get("/v1/import", Some("gs")).await, 403);
    assert_eq!(get("/v1/import", Some("admin")).await, 200);
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unauthenticated = metrics
        .lines()
        .find(|l| {
            l.starts_with("session_broker_requests_rejected_total{reason=\"unauthenticated\"}")
        })
        .unwrap();
    assert!(!unauthenticated.ends_with(" 0"), "{unauthenticated}");
    d.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = auth_file(dir.path(), "");
    let d = TestDaemon::start_with(move |c| {
        c.auth_file = Some(path);
        c.metrics_require_auth = true;
    })
    .await;
    let (code, _) = common::http_get(d.daemon.admin_addr(), "/metrics").await;
    assert_eq!(code, 401);
    let (code, _) = common::http_get(d.daemon.admin_addr(), "/healthz").await;
    assert_eq!(code, 200);
    d.stop().await;
}

#[tokio::test]
async fn an_exposed_address_without_auth_is_refused_unless_allowed() {
    let mut config = session_broker::config::Config::ephemeral();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let e = match session_broker::start(config.clone(), Default::default()).await {
        Ok(_) => panic!("started without auth on 0.0.0.0"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("--auth-file") && e.contains("0.0.0.0"), "{e}");
    config.allow_unauthenticated = true;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let d = session_broker::start(config, shutdown.clone())
        .await
        .unwrap();
    shutdown.cancel();
    d.wait().await.unwrap();
}

#[tokio::test]
async fn rate_limits_and_watch_limits_fail_fast_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = {
        let path = auth_file(
            dir.path(),
            "[rate_limits.viewer]\nrequests_per_second = 0.001\nburst = 3\n",
        );
        TestDaemon::start_with(move |c| {
            c.auth_file = Some(path);
            c.limits.max_watch_streams_per_token = 1;
        })
        .await
    };
    let (g, p) = target(&d.channel, "g-1").await;
    let codes: Vec<Code> = futures::future::join_all(
        (0..5).map(|_| call(&d.channel, "GetGameSession", Some("viewer"), &g, &p)),
    )
    .await;
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        3,
        "{codes:?}"
    );
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Code::ResourceExhausted)
            .count(),
        2,
        "{codes:?}"
    );
    // One watch stream per token: a second is refused until the first is dropped.
    let mut fleets = FleetServiceClient::new(d.channel.clone());
    let watch = || {
        req(
            WatchFleetRequest {
                fleet_id: "fleet-1".into(),
                ..Default::default()
            },
            Some("mm"),
        )
    };
    let first = fleets.watch_fleet(watch()).await.unwrap();
    let second = fleets.watch_fleet(watch()).await.unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match fleets.watch_fleet(watch()).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
        assert!(std::time::Instant::now() < deadline, "the slot came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = common::http_get(d.daemon.admin_addr(), "/metrics").await;
    for reason in ["rate_limited", "watch_limit"] {
        let line = metrics
            .lines()
            .find(|l| l.contains(&format!("requests_rejected_total{{reason=\"{reason}\"}}")))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_in_flight_limit_is_shed_and_nothing_is_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = TestDaemon::start_with(move |c| {
        c.journal = Some(session_broker::journal::JournalConfig::new(data));
        c.limits.max_in_flight = 4;
    })
    .await;
    let mut games = GameSessionServiceClient::new(d.channel.clone());
    games
        .register_game_session(register_request("flood", 1000))
        .await
        .unwrap();
    let calls = (0..400).map(|i| {
        let mut players = PlayerSessionServiceClient::new(d.channel.clone());
        async move {
            let started = std::time::Instant::now();
            let r = players
                .create_player_session(CreatePlayerSessionRequest {
                    game_session_id: "flood".into(),
                    player_id: format!("p{i}"),
                    ..Default::default()
                })
                .await;
            (code(r), started.elapsed())
        }
    });
    let results: Vec<(Code, Duration)> = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|(c, _)| *c == Code::Ok).count();
    let shed: Vec<_> = results
        .iter()
        .filter(|(c, _)| *c == Code::Unavailable)
        .collect();
    assert_eq!(ok + shed.len(), results.len(), "only OK or UNAVAILABLE");
    assert!(ok > 0 && !shed.is_empty(), "ok {ok}, shed {}", shed.len());
    // Nothing corrupted: the game session counts exactly the accepted reservations, and the
    // daemon still serves.
    let g = games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "flood".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count as usize, ok);
    d.stop().await;
}

// TLS: certificates made here with rcgen.

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["game-server-1".into()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

async fn tls_daemon(
    dir: &Path,
    pki: &Pki,
    mtls: bool,
) -> (session_broker::Daemon, tokio_util::sync::CancellationToken) {
    tls_daemon_with(dir, pki, mtls, |_| {}).await
}

/// [`tls_daemon`] with `configure` applied to its config.
async fn tls_daemon_with(
    dir: &Path,
    pki: &Pki,
    mtls: bool,
    configure: impl FnOnce(&mut session_broker::config::Config),
) -> (session_broker::Daemon, tokio_util::sync::CancellationToken) {
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let tls = session_broker::security::tls::TlsConfig {
        cert: w("server.pem", &pki.server_cert),
        key: w("server.key", &pki.server_key),
        client_ca: mtls.then(|| w("ca.pem", &pki.ca_pem)),
    };
    let mut config = session_broker::config::Config::ephemeral();
    config.tls = Some(tls);
    configure(&mut config);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let d = session_broker::start(config, shutdown.clone())
        .await
        .unwrap();
    (d, shutdown)
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    identity: bool,
) -> Result<Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn get_game(ch: Channel) -> Code {
    code(
        GameSessionServiceClient::new(ch)
            .get_game_session(GetGameSessionRequest {
                game_session_id: "none".into(),
            })
            .await,
    )
}

#[tokio::test]
async fn tls_on_both_ports() {
    let _ = rustls_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (d, shutdown) = tls_daemon(dir.path(), &pki, false).await;
    let ch = tls_channel(d.grpc_addr(), &pki, false).await.unwrap();
    assert_eq!(get_game(ch).await, Code::NotFound, "a real call over TLS");
    // Plain HTTP/2 against the TLS port fails.
    let plain = Channel::from_shared(format!("http://{}", d.grpc_addr()))
        .unwrap()
        .connect()
        .await;
    match plain {
        Err(_) => {}
        Ok(ch) => assert_ne!(get_game(ch).await, Code::NotFound),
    }
    // The admin port speaks HTTPS with the same certificate.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = http
        .get(format!(
            "https://localhost:{}/healthz",
            d.admin_addr().port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    shutdown.cancel();
    d.wait().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let _ = rustls_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (d, shutdown) = tls_daemon(dir.path(), &pki, true).await;
    let with = tls_channel(d.grpc_addr(), &pki, true).await.unwrap();
    assert_eq!(get_game(with).await, Code::NotFound);
    match tls_channel(d.grpc_addr(), &pki, false).await {
        Err(_) => {}
        Ok(ch) => {
            let got = get_game(ch).await;
            assert!(
                matches!(got, Code::Unavailable | Code::Unknown),
                "handshake refused: {got:?}"
            );
        }
    }
    shutdown.cancel();
    d.wait().await.unwrap();
}

/// rustls needs one process-wide crypto provider when several are compiled in.
fn rustls_ring() -> Arc<()> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    Arc::new(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tokens_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = auth_file(dir.path(), "");
    let (port, admin_port) = (common::free_port(), common::free_port());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let process = common::spawn_daemon(
        &dir.path().join("data"),
        port,
        admin_port,
        &["--auth-file", path.to_str().unwrap()],
        &[],
    );
    common::wait_ready(admin).await;
    let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        call(&ch, "GetGameSession", Some("viewer"), "x", "x").await,
        Code::NotFound
    );
    // Replace the file: viewer's token goes, a new one comes.
    std::fs::write(
        &path,
        format!(
            "[[tokens]]\nname = \"new\"\nsha256 = \"{}\"\nrole = \"viewer\"\n",
            hash_token("tok-new")
        ),
    )
    .unwrap();
    let pid = process.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&ch, "GetGameSession", Some("viewer"), "x", "x").await != Code::Unauthenticated {
        assert!(std::time::Instant::now() < deadline, "reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Same connection, the new token works.
    assert_eq!(
        call(&ch, "GetGameSession", Some("new"), "x", "x").await,
        Code::NotFound
    );
    // A broken file is refused and the tokens in force stay.
    std::fs::write(&path, "[[tokens]]\nname = 7\n").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(&ch, "GetGameSession", Some("new"), "x", "x").await,
        Code::NotFound
    );
    drop(process);
}

/// A call whose deadline passes while it waits (here for its fsync) is answered at once with
/// the deadline error (tonic answers CANCELLED "Timeout expired"), and the daemon goes on.
///
/// tonic polls the call before its deadline timer, and tokio's timers tick in milliseconds,
/// so a call whose fsync finishes before the next tick succeeds despite a 1 µs deadline. The
/// test repeats the call until one is caught waiting (a fsync takes a good part of a
/// millisecond, so that happens within a few tries) and checks no call fails any other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_deadlines_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_durable(dir.path()).await;
    let mut games = GameSessionServiceClient::new(d.channel.clone());
    games
        .register_game_session(register_request("deadline", 1000))
        .await
        .unwrap();
    let mut players = PlayerSessionServiceClient::new(d.channel.clone());
    let mut caught = false;
    for i in 0..900 {
        let mut r = Request::new(CreatePlayerSessionRequest {
            game_session_id: "deadline".into(),
            player_id: format!("late-{i}"),
            ..Default::default()
        });
        r.set_timeout(Duration::from_micros(1));
        let started = std::time::Instant::now();
        match players.create_player_session(r).await {
            Ok(_) => continue,
            Err(got) => {
                assert!(
                    matches!(got.code(), Code::Cancelled | Code::DeadlineExceeded),
                    "{got:?}"
                );
                assert!(started.elapsed() < Duration::from_secs(1));
                caught = true;
                break;
            }
        }
    }
    assert!(
        caught,
        "no call out of 900 was still waiting at its deadline"
    );
    // The daemon serves on.
    let ok = players
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "deadline".into(),
            player_id: "on-time".into(),
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    d.stop().await;
}

/// Reads `s` until the daemon closes it (EOF or reset); fails after 10 s.
async fn closed_by_daemon(mut s: tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                // The HTTP/2 server's SETTINGS come first on a plaintext gRPC connection.
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the daemon left the connection open");
}

/// `session_broker_connections{port}` or, with a `reason`, the port's
/// `session_broker_connections_refused_total` for it, from the metrics text.
fn connection_metric(metrics: &str, port: &str, reason: Option<&str>) -> u64 {
    let prefix = match reason {
        None => format!("session_broker_connections{{port=\"{port}\"}} "),
        Some(r) => {
            format!("session_broker_connections_refused_total{{port=\"{port}\",reason=\"{r}\"}} ")
        }
    };
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
}

/// `(open, refused by limit, refused by handshake timeout)` of `port` in the metrics text.
fn connection_figures(metrics: &str, port: &str) -> (u64, u64, u64) {
    (
        connection_metric(metrics, port, None),
        connection_metric(metrics, port, Some("limit")),
        connection_metric(metrics, port, Some("handshake_timeout")),
    )
}

#[tokio::test]
async fn silent_connections_time_out_and_connections_beyond_the_limit_are_closed() {
    let mut d = TestDaemon::start_with(|c| {
        c.limits.max_connections = 2;
        c.limits.max_admin_connections = 1;
        // Long enough that the excess connection is accepted before the silent one times out.
        c.limits.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let grpc = d.daemon.grpc_addr();
    let admin = d.daemon.admin_addr();
    // The test's own channel holds one slot; a silent connection takes the second.
    let silent = tokio::net::TcpStream::connect(grpc).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let excess = tokio::net::TcpStream::connect(grpc).await.unwrap();
    closed_by_daemon(excess).await;
    closed_by_daemon(silent).await;
    // The silent connection's slot is free again: a new client connects and calls.
    let ch = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(get_game(ch.clone()).await, Code::NotFound);
    // The established connections stay (idle gRPC connections are legitimate).
    d.register("after-the-flood", 2).await;

    // The admin port, with its own limit: the same.
    let silent = tokio::net::TcpStream::connect(admin).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    closed_by_daemon(tokio::net::TcpStream::connect(admin).await.unwrap()).await;
    closed_by_daemon(silent).await;
    let (status, metrics) = common::http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(connection_figures(&metrics, "grpc"), (2, 1, 1));
    // Open: the scrape's own connection.
    assert_eq!(connection_figures(&metrics, "admin"), (1, 1, 1));
    d.stop().await;
}

/// A TCP connection to `to` from the loopback address `from` (all of 127/8 is local on Linux).
async fn connect_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_cannot_take_a_ports_whole_connection_limit() {
    let mut d = TestDaemon::start_with(|c| {
        c.limits.max_connections = 10;
        c.limits.max_connections_per_address = 2;
        c.limits.max_admin_connections = 10;
        c.limits.max_admin_connections_per_address = 2;
        // Longer than the test: a connection closed in it was closed by a limit.
        c.limits.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let grpc = d.daemon.grpc_addr();
    let admin = d.daemon.admin_addr();
    // The test's own channel (from 127.0.0.1) holds one gRPC slot of its address; a silent
    // connection takes the second; a third from the same address is closed at once.
    let _silent = connect_from("127.0.0.1", grpc).await;
    closed_by_daemon(connect_from("127.0.0.1", grpc).await).await;
    // Another host is not held back: it connects and calls, twice over.
    let other = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    assert_eq!(get_game(other.clone()).await, Code::NotFound);
    let _other_silent = connect_from("127.0.0.2", grpc).await;
    closed_by_daemon(connect_from("127.0.0.2", grpc).await).await;
    assert_eq!(get_game(other.clone()).await, Code::NotFound);
    // The established client of the first address keeps working.
    d.register("per-address", 2).await;

    // The admin port: two silent connections from 127.0.0.3 fill its share, a third is
    // closed, and a scrape from 127.0.0.1 (the orchestrator's probes) still gets through.
    let _a = connect_from("127.0.0.3", admin).await;
    let _b = connect_from("127.0.0.3", admin).await;
    closed_by_daemon(connect_from("127.0.0.3", admin).await).await;
    let (status, metrics) = common::http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        connection_metric(&metrics, "grpc", Some("address_limit")),
        2
    );
    assert_eq!(
        connection_metric(&metrics, "admin", Some("address_limit")),
        1
    );
    // None reached the ports' limits, none timed out: (open, limit, handshake_timeout).
    assert_eq!(connection_figures(&metrics, "grpc"), (4, 0, 0));
    assert_eq!(connection_figures(&metrics, "admin"), (3, 0, 0));
    // Closing a connection gives its address's slot back: once the daemon has seen it close,
    // the address may connect again.
    drop(_silent);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connection_figures(&common::http_get(admin, "/metrics").await.1, "grpc").0 != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came free"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _again = connect_from("127.0.0.1", grpc).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, metrics) = common::http_get(admin, "/metrics").await;
    assert_eq!(
        connection_metric(&metrics, "grpc", Some("address_limit")),
        2,
        "{metrics}"
    );
    assert_eq!(connection_figures(&metrics, "grpc").0, 4, "{metrics}");
    drop(other);
    d.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_on_both_ports() {
    use tokio::io::AsyncWriteExt;
    let _ = rustls_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (d, shutdown) = tls_daemon_with(dir.path(), &pki, false, |c| {
        c.limits.handshake_timeout = Duration::from_millis(400);
    })
    .await;
    for addr in [d.grpc_addr(), d.admin_addr()] {
        // A ClientHello record header announcing 512 bytes and 40 of them, then nothing:
        // past the opening bytes, so the TLS handshake's own deadline closes it.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        hello.resize(45, 0);
        s.write_all(&hello).await.unwrap();
        closed_by_daemon(s).await;
        // A silent one.
        closed_by_daemon(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    }
    // A real client still gets through.
    let ch = tls_channel(d.grpc_addr(), &pki, false).await.unwrap();
    assert_eq!(get_game(ch).await, Code::NotFound);
    // Both kinds counted on both ports: (open, limit, handshake_timeout).
    let metrics = d.metrics().render();
    assert_eq!(connection_figures(&metrics, "grpc"), (1, 0, 2), "{metrics}");
    assert_eq!(
        connection_figures(&metrics, "admin"),
        (0, 0, 2),
        "{metrics}"
    );
    shutdown.cancel();
    d.wait().await.unwrap();
}

#[tokio::test]
async fn failed_tls_handshakes_are_counted_but_bare_tcp_probes_are_not() {
    use tokio::io::AsyncWriteExt;
    let _ = rustls_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (d, shutdown) = tls_daemon(dir.path(), &pki, true).await;
    for addr in [d.grpc_addr(), d.admin_addr()] {
        // Plaintext HTTP/2 on a TLS port.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        closed_by_daemon(s).await;
        // A load balancer's TCP check: connect, then close without a byte.
        drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // mTLS: a client without a certificate fails its handshake (counted); one with works.
    if let Ok(ch) = tls_channel(d.grpc_addr(), &pki, false).await {
        assert_ne!(
            get_game(ch).await,
            Code::NotFound,
            "served without a certificate"
        );
    }
    let ch = tls_channel(d.grpc_addr(), &pki, true).await.unwrap();
    assert_eq!(get_game(ch).await, Code::NotFound);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = d.metrics().render();
        if connection_metric(&m, "grpc", Some("tls_error")) >= 2
            || tokio::time::Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        connection_metric(&metrics, "grpc", Some("tls_error")),
        2,
        "{metrics}"
    );
    assert_eq!(
        connection_metric(&metrics, "admin", Some("tls_error")),
        1,
        "{metrics}"
    );
    // Nothing else was refused or timed out.
    assert_eq!(connection_figures(&metrics, "grpc"), (1, 0, 0), "{metrics}");
    shutdown.cancel();
    d.wait().await.unwrap();
}

#[tokio::test]
async fn a_peer_that_stops_answering_keepalive_pings_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let mut d = TestDaemon::start_with(|c| {
        c.limits.keepalive_interval = Some(Duration::from_millis(200));
        c.limits.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    // An HTTP/2 client that says hello and then never answers (a host gone without a FIN).
    let mut s = tokio::net::TcpStream::connect(d.daemon.grpc_addr())
        .await
        .unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    closed_by_daemon(s).await;
    // A real client answers the PINGs and keeps working across idle spells.
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.register("still-here", 2).await;
    let (_, metrics) = common::http_get(d.daemon.admin_addr(), "/metrics").await;
    assert_eq!(connection_figures(&metrics, "grpc").0, 1, "{metrics}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_shed_while_established_clients_keep_working() {
    let mut d = TestDaemon::start_with(|c| {
        c.limits.max_connections = 20;
        c.limits.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let grpc = d.daemon.grpc_addr();
    // 200 connections that never speak: 19 take the free slots, the rest are closed at once.
    let flood: Vec<_> =
        futures::future::join_all((0..200).map(|_| tokio::net::TcpStream::connect(grpc)))
            .await
            .into_iter()
            .map(|c| c.unwrap())
            .collect();
    // The established client is served throughout.
    for i in 0..20 {
        d.register(&format!("during-flood-{i}"), 2).await;
    }
    futures::future::join_all(flood.into_iter().map(closed_by_daemon)).await;
    let (_, metrics) = common::http_get(d.daemon.admin_addr(), "/metrics").await;
    let (open, over_limit, timed_out) = connection_figures(&metrics, "grpc");
    assert_eq!(open, 1, "only the test's own client is left");
    // Every flood connection was refused or timed out; which, depends on how far the accept
    // loop had got when the first slots came free again (a connect the kernel's backlog did
    // not take retries its SYN a second later).
    assert_eq!(over_limit + timed_out, 200);
    assert!(
        timed_out >= 19,
        "the connections with a slot time out: {timed_out}"
    );
    assert!(over_limit >= 1, "{over_limit}");
    d.register("after-flood", 2).await;
    d.stop().await;
}
