//! Every RPC and every error row of the API, through a real server and the generated clients.

mod common;

use std::collections::HashMap;

use common::{register_request, TestDaemon};
use session_broker::proto::{
    AcceptPlayerSessionRequest, CreatePlayerSessionRequest, CreatePlayerSessionsRequest,
    DescribePlayerSessionsRequest, EndGameSessionRequest, GameSessionStatus, GetGameSessionRequest,
    HeartbeatRequest, PlayerSessionCreationPolicy, PlayerSessionStatus, RemovePlayerSessionRequest,
    UpdateGameSessionRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

fn reserve_req(gs: &str, player: &str) -> CreatePlayerSessionRequest {
    CreatePlayerSessionRequest {
        game_session_id: gs.into(),
        player_id: player.into(),
        player_data: String::new(),
        idempotency_key: String::new(),
    }
}

fn batch_req(gs: &str, players: &[&str]) -> CreatePlayerSessionsRequest {
    CreatePlayerSessionsRequest {
        game_session_id: gs.into(),
        player_ids: players.iter().map(|p| p.to_string()).collect(),
        player_data: HashMap::new(),
        idempotency_key: String::new(),
    }
}

fn describe_gs(gs: &str, limit: u32, page_token: &str) -> DescribePlayerSessionsRequest {
    DescribePlayerSessionsRequest {
        game_session_id: gs.into(),
        limit,
        page_token: page_token.into(),
        ..Default::default()
    }
}

/// Asserts the code and that the message (and BadRequest details) name `field`.
fn assert_invalid(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "{field} not in {:?}",
        status.message()
    );
    let br = status
        .get_details_bad_request()
        .expect("BadRequest details");
    assert!(br.field_violations[0].field.starts_with(field));
}

#[tokio::test]
async fn game_session_lifecycle() {
    let mut d = TestDaemon::start().await;
    let g = d.register("match-1", 4).await;
    assert_eq!(g.game_session_id, "match-1");
    assert_eq!(g.status, GameSessionStatus::Active as i32);
    assert_eq!(
        g.player_session_creation_policy,
        PlayerSessionCreationPolicy::AcceptAll as i32
    );
    assert_eq!(g.reservation_timeout_seconds, 60, "daemon default");
    assert_eq!(g.labels["map"], "dust");
    assert!(g.creation_time.is_some() && g.termination_time.is_none());

    // Generated id.
    let gen = d
        .games
        .register_game_session(register_request("", 2))
        .await
        .unwrap()
        .into_inner();
    assert!(gen.game_session_id.starts_with("gsess-"));

    let got = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "match-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, g);

    let hb = d
        .games
        .heartbeat(HeartbeatRequest {
            game_session_id: "match-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.status, GameSessionStatus::Active as i32);

    let upd = d
        .games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "match-1".into(),
            maximum_player_session_count: Some(6),
            player_session_creation_policy: Some(PlayerSessionCreationPolicy::DenyAll as i32),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upd.maximum_player_session_count, 6);
    assert_eq!(
        upd.player_session_creation_policy,
        PlayerSessionCreationPolicy::DenyAll as i32
    );
    let e = d
        .players
        .create_player_session(reserve_req("match-1", "a"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "DENY_ALL");
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "PLAYER_SESSION_CREATION_DENIED"
    );

    d.games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "match-1".into(),
            maximum_player_session_count: None,
            player_session_creation_policy: Some(PlayerSessionCreationPolicy::AcceptAll as i32),
        })
        .await
        .unwrap();
    let ps = d
        .players
        .create_player_sessions(batch_req("match-1", &["a", "b"]))
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    d.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "match-1".into(),
            player_session_id: ps[0].player_session_id.clone(),
        })
        .await
        .unwrap();

    let ended = d
        .games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "match-1".into(),
            crashed: true,
            reason: "out of memory".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.status, GameSessionStatus::Error as i32);
    assert_eq!(ended.current_player_session_count, 0);
    assert_eq!(ended.termination_reason, "out of memory");
    let listed = d
        .players
        .describe_player_sessions(describe_gs("match-1", 0, ""))
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|p| p.status == PlayerSessionStatus::Completed as i32
            && p.termination_time == ended.termination_time));

    // Idempotent end.
    let again = d
        .games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "match-1".into(),
            crashed: false,
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, ended);
    // Heartbeat and update of an ended game session.
    let e = d
        .games
        .heartbeat(HeartbeatRequest {
            game_session_id: "match-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("ERROR"), "{}", e.message());
    d.stop().await;
}

#[tokio::test]
async fn player_session_lifecycle() {
    let mut d = TestDaemon::start().await;
    d.register("gs-a", 3).await;
    let mut req = reserve_req("gs-a", "alice");
    req.player_data = "{\"skill\": 1200}".into();
    let ps = d
        .players
        .create_player_session(req)
        .await
        .unwrap()
        .into_inner();
    assert!(ps.player_session_id.starts_with("psess-"));
    assert_eq!(ps.status, PlayerSessionStatus::Reserved as i32);
    assert_eq!(ps.fleet_id, "fleet-1");
    assert_eq!((ps.ip_address.as_str(), ps.port), ("10.1.2.3", 7777));
    assert_eq!(ps.player_data, "{\"skill\": 1200}");
    assert!(ps.reservation_deadline.is_some());
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 1);

    let accept = AcceptPlayerSessionRequest {
        game_session_id: "gs-a".into(),
        player_session_id: ps.player_session_id.clone(),
    };
    let active = d
        .players
        .accept_player_session(accept.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.status, PlayerSessionStatus::Active as i32);
    assert!(active.reservation_deadline.is_none());
    let again = d
        .players
        .accept_player_session(accept.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again, active,
        "accepting an ACTIVE session returns it unchanged"
    );

    let remove = RemovePlayerSessionRequest {
        game_session_id: "gs-a".into(),
        player_session_id: ps.player_session_id.clone(),
    };
    let done = d
        .players
        .remove_player_session(remove.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, PlayerSessionStatus::Completed as i32);
    assert!(done.termination_time.is_some());
    let done_again = d
        .players
        .remove_player_session(remove)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done_again, done,
        "removing a terminal session returns it unchanged"
    );

    let e = d.players.accept_player_session(accept).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("COMPLETED"), "{}", e.message());

    // Describe by each of the three ids.
    for req in [
        DescribePlayerSessionsRequest {
            player_session_id: ps.player_session_id.clone(),
            ..Default::default()
        },
        DescribePlayerSessionsRequest {
            player_id: "alice".into(),
            ..Default::default()
        },
        describe_gs("gs-a", 0, ""),
    ] {
        let page = d
            .players
            .describe_player_sessions(req)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.player_sessions, vec![done.clone()]);
        assert!(page.next_page_token.is_empty());
    }
    // Status filter.
    let none = d
        .players
        .describe_player_sessions(DescribePlayerSessionsRequest {
            player_id: "alice".into(),
            status_filter: PlayerSessionStatus::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.player_sessions.is_empty());
    d.stop().await;
}

#[tokio::test]
async fn batch_reservations_are_all_or_nothing() {
    let mut d = TestDaemon::start().await;
    d.register("gs-b", 4).await;
    let mut req = batch_req("gs-b", &["p1", "p2", "p3"]);
    req.player_data.insert("p2".into(), "two".into());
    let ps = d
        .players
        .create_player_sessions(req)
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    assert_eq!(
        ps.iter().map(|p| p.player_id.as_str()).collect::<Vec<_>>(),
        ["p1", "p2", "p3"],
        "request order"
    );
    assert_eq!(ps[1].player_data, "two");
    let e = d
        .players
        .create_player_sessions(batch_req("gs-b", &["p4", "p5"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let e = d
        .players
        .create_player_sessions(batch_req("gs-b", &["p4", "p1"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let page = d
        .players
        .describe_player_sessions(describe_gs("gs-b", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.player_sessions.len(),
        3,
        "failed batches reserved nothing"
    );
    d.stop().await;
}

#[tokio::test]
async fn every_error_row_maps_to_its_code() {
    let mut d = TestDaemon::start().await;
    d.register("gs-e", 2).await;
    let ps = d
        .players
        .create_player_session(reserve_req("gs-e", "x"))
        .await
        .unwrap()
        .into_inner();

    // INVALID_ARGUMENT, naming the field.
    let mut bad = register_request("bad_id!", 2);
    assert_invalid(
        d.games
            .register_game_session(bad.clone())
            .await
            .unwrap_err(),
        "game_session_id",
    );
    bad.game_session_id = "a".repeat(49);
    assert_invalid(
        d.games.register_game_session(bad).await.unwrap_err(),
        "game_session_id",
    );
    let mut bad = register_request("", 2);
    bad.fleet_id = String::new();
    assert_invalid(
        d.games.register_game_session(bad).await.unwrap_err(),
        "fleet_id",
    );
    for max in [0, 1001] {
        assert_invalid(
            d.games
                .register_game_session(register_request("", max))
                .await
                .unwrap_err(),
            "maximum_player_session_count",
        );
    }
    let mut bad = register_request("", 2);
    bad.port = 70_000;
    assert_invalid(
        d.games.register_game_session(bad).await.unwrap_err(),
        "port",
    );
    assert_invalid(
        d.players
            .create_player_session(reserve_req("", "p"))
            .await
            .unwrap_err(),
        "game_session_id",
    );
    assert_invalid(
        d.players
            .create_player_session(reserve_req("gs-e", ""))
            .await
            .unwrap_err(),
        "player_id",
    );
    let mut long = reserve_req("gs-e", "p");
    long.player_data = "d".repeat(2049);
    assert_invalid(
        d.players.create_player_session(long).await.unwrap_err(),
        "player_data",
    );
    let mut key = reserve_req("gs-e", "p");
    key.idempotency_key = "k".repeat(129);
    assert_invalid(
        d.players.create_player_session(key).await.unwrap_err(),
        "idempotency_key",
    );
    assert_invalid(
        d.players
            .create_player_sessions(batch_req("gs-e", &[]))
            .await
            .unwrap_err(),
        "player_ids",
    );
    let many: Vec<String> = (0..26).map(|i| format!("p{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_invalid(
        d.players
            .create_player_sessions(batch_req("gs-e", &many))
            .await
            .unwrap_err(),
        "player_ids",
    );
    assert_invalid(
        d.players
            .create_player_sessions(batch_req("gs-e", &["a", "a"]))
            .await
            .unwrap_err(),
        "player_ids",
    );
    assert_invalid(
        d.players
            .accept_player_session(AcceptPlayerSessionRequest {
                game_session_id: "gs-e".into(),
                player_session_id: "not-a-session".into(),
            })
            .await
            .unwrap_err(),
        "player_session_id",
    );
    assert_invalid(
        d.players
            .describe_player_sessions(describe_gs("gs-e", 1025, ""))
            .await
            .unwrap_err(),
        "limit",
    );
    assert_invalid(
        d.players
            .describe_player_sessions(describe_gs("gs-e", 0, "garbage"))
            .await
            .unwrap_err(),
        "page_token",
    );
    assert_invalid(
        d.players
            .describe_player_sessions(DescribePlayerSessionsRequest::default())
            .await
            .unwrap_err(),
        "player_session_id",
    );
    assert_invalid(
        d.players
            .describe_player_sessions(DescribePlayerSessionsRequest {
                game_session_id: "gs-e".into(),
                player_id: "x".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        "player_session_id",
    );

    // NOT_FOUND.
    let e = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = d
        .players
        .create_player_session(reserve_req("nope", "p"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = d
        .players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "gs-e".into(),
            player_session_id: format!("psess-{}", uuid::Uuid::new_v4()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    d.register("gs-other", 2).await;
    let e = d
        .players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "gs-other".into(),
            player_session_id: ps.player_session_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "player session not in the named game session"
    );

    // ALREADY_EXISTS.
    let e = d
        .games
        .register_game_session(register_request("gs-e", 2))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = d
        .players
        .create_player_session(reserve_req("gs-e", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);

    // RESOURCE_EXHAUSTED.
    d.players
        .create_player_session(reserve_req("gs-e", "y"))
        .await
        .unwrap();
    let e = d
        .players
        .create_player_session(reserve_req("gs-e", "z"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);

    // FAILED_PRECONDITION: shrink below current, idempotency key reuse, ended game session.
    let e = d
        .games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "gs-e".into(),
            maximum_player_session_count: Some(1),
            player_session_creation_policy: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let mut k1 = reserve_req("gs-other", "k");
    k1.idempotency_key = "key-1".into();
    d.players.create_player_session(k1).await.unwrap();
    let mut k2 = reserve_req("gs-other", "other-player");
    k2.idempotency_key = "key-1".into();
    let e = d.players.create_player_session(k2).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    d.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "gs-other".into(),
            crashed: false,
            reason: String::new(),
        })
        .await
        .unwrap();
    let e = d
        .players
        .create_player_session(reserve_req("gs-other", "late"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("TERMINATED"));

    // Nothing above changed the state.
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-e".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            g.current_player_session_count,
            g.maximum_player_session_count
        ),
        (2, 2)
    );
    d.daemon.store().check_invariants().unwrap();
    d.stop().await;
}

#[tokio::test]
async fn idempotent_retries_return_the_original_result() {
    let mut d = TestDaemon::start().await;
    d.register("gs-i", 10).await;
    let mut req = batch_req("gs-i", &["a", "b"]);
    req.idempotency_key = "match-42-party-1".into();
    let first = d
        .players
        .create_player_sessions(req.clone())
        .await
        .unwrap()
        .into_inner();
    let retry = d
        .players
        .create_player_sessions(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, retry);
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-i".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 2);
    req.player_ids.push("c".into());
    let e = d.players.create_player_sessions(req).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    d.stop().await;
}

#[tokio::test]
async fn pagination_is_stable_across_concurrent_inserts() {
    let mut d = TestDaemon::start().await;
    d.register("gs-p", 1000).await;
    for i in 0..10 {
        let ids: Vec<String> = (0..25).map(|j| format!("p{i}-{j}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        d.players
            .create_player_sessions(batch_req("gs-p", &ids))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = d
            .players
            .describe_player_sessions(describe_gs("gs-p", 40, &token))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.player_sessions.len() <= 40);
        seen.extend(page.player_sessions);
        // Inserts between pages land after every existing position.
        d.players
            .create_player_session(reserve_req("gs-p", &format!("late-{pages}")))
            .await
            .unwrap();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let ids: Vec<&str> = seen.iter().map(|p| p.player_session_id.as_str()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no session twice");
    assert!(
        seen.len() >= 250,
        "every session present before paging: {}",
        seen.len()
    );
    let order: Vec<_> = seen
        .iter()
        .map(|p| {
            let t = p.creation_time.unwrap();
            (t.seconds, t.nanos, p.player_session_id.clone())
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "creation time, then id");
    // A token is bound to its query.
    let other = d
        .players
        .describe_player_sessions(DescribePlayerSessionsRequest {
            player_id: "p0-0".into(),
            page_token: token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reservers_for_the_last_seats() {
    let mut d = TestDaemon::start().await;
    d.register("gs-race", 10).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut players = d.players.clone();
        tasks.push(tokio::spawn(async move {
            players
                .create_player_session(reserve_req("gs-race", &format!("racer-{i}")))
                .await
        }));
    }
    // Interleave accepts and removes of the winners while the race goes on.
    let mut ok = 0;
    let mut exhausted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::ResourceExhausted => exhausted += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, exhausted), (10, 54));
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-race".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 10);

    // Second round: free seats with removes while 64 more race; the count never exceeds max.
    let listed = d
        .players
        .describe_player_sessions(describe_gs("gs-race", 0, ""))
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    let mut tasks = Vec::new();
    for (i, p) in listed.iter().enumerate().take(5) {
        let mut players = d.players.clone();
        let id = p.player_session_id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                players
                    .accept_player_session(AcceptPlayerSessionRequest {
                        game_session_id: "gs-race".into(),
                        player_session_id: id.clone(),
                    })
                    .await?;
            }
            players
                .remove_player_session(RemovePlayerSessionRequest {
                    game_session_id: "gs-race".into(),
                    player_session_id: id,
                })
                .await
        }));
    }
    for i in 0..64 {
        let mut players = d.players.clone();
        tasks.push(tokio::spawn(async move {
            players
                .create_player_session(reserve_req("gs-race", &format!("second-{i}")))
                .await
        }));
    }
    let mut won = 0;
    for t in tasks.split_off(5) {
        if t.await.unwrap().is_ok() {
            won += 1;
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(
        won <= 5,
        "at most the 5 freed seats were re-sold, got {won}"
    );
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-race".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 5 + won);
    d.daemon.store().check_invariants().unwrap();
    d.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };

    let d = TestDaemon::start().await;
    let mut health = HealthClient::new(d.channel.clone());
    for service in [
        "",
        "session_broker.v1.GameSessionService",
        "session_broker.v1.PlayerSessionService",
        "session_broker.v1.FleetService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "{service} SERVING");
    }

    let mut refl = ServerReflectionClient::new(d.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "session_broker.v1.GameSessionService",
        "session_broker.v1.PlayerSessionService",
        "session_broker.v1.FleetService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    d.stop().await;
}
