//! FleetService over real gRPC: search with filters, sorts and paging; utilization counts;
//! party placement (PACKED vs DISTRIBUTED, racing parties); the live fleet feed.

mod common;

use std::{collections::HashMap, time::Duration};

use common::TestDaemon;
use session_broker::proto::{
    fleet_service_client::FleetServiceClient, CreatePlayerSessionsRequest,
    DescribeFleetUtilizationRequest, EndGameSessionRequest, FleetEvent, FleetEventType,
    FleetUtilization, GameSession, PlacePlayerSessionsRequest, PlacementStrategy,
    RegisterGameSessionRequest, RemovePlayerSessionRequest, SearchGameSessionsRequest,
    UpdateGameSessionRequest, WatchFleetRequest,
};
use tonic::{transport::Channel, Code};
use tonic_types::StatusExt;

fn fleets(td: &TestDaemon) -> FleetServiceClient<Channel> {
    FleetServiceClient::new(td.channel.clone())
}

struct Game<'a> {
    fleet: &'a str,
    id: &'a str,
    name: &'a str,
    max: u32,
    labels: &'a [(&'a str, &'a str)],
}

async fn register(td: &mut TestDaemon, g: Game<'_>) -> GameSession {
    td.games
        .register_game_session(RegisterGameSessionRequest {
            fleet_id: g.fleet.into(),
            game_session_id: g.id.into(),
            name: g.name.into(),
            ip_address: "10.0.0.1".into(),
            port: 7777,
            maximum_player_session_count: g.max,
            labels: g
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            release: "2.0".into(),
            environment: "production".into(),
            reservation_timeout_seconds: 0,
            heartbeat_timeout_seconds: 0,
        })
        .await
        .expect("register")
        .into_inner()
}

/// Reserves `n` seats in `gs` for fresh players; returns their player session ids.
async fn fill(td: &mut TestDaemon, gs: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let players: Vec<String> = chunk
            .iter()
            .map(|i| format!("{gs}-p{i}-{}", uuid::Uuid::new_v4()))
            .collect();
        let r = td
            .players
            .create_player_sessions(CreatePlayerSessionsRequest {
                game_session_id: gs.into(),
                player_ids: players,
                player_data: HashMap::new(),
                idempotency_key: String::new(),
            })
            .await
            .expect("reserve")
            .into_inner();
        ids.extend(r.player_sessions.into_iter().map(|p| p.player_session_id));
    }
    ids
}

fn search(fleet: &str, filter: &str, sort: &str) -> SearchGameSessionsRequest {
    SearchGameSessionsRequest {
        fleet_id: fleet.into(),
        filter_expression: filter.into(),
        sort_expression: sort.into(),
        label_selector: HashMap::new(),
        limit: 100,
        page_token: String::new(),
    }
}

async fn ids(
    client: &mut FleetServiceClient<Channel>,
    req: SearchGameSessionsRequest,
) -> Vec<String> {
    let r = client
        .search_game_sessions(req.clone())
        .await
        .unwrap_or_else(|e| panic!("{req:?}: {e}"))
        .into_inner();
    r.game_sessions
        .into_iter()
        .map(|g| g.game_session_id)
        .collect()
}

/// Every page of a search, following next_page_token.
async fn all_pages(
    client: &mut FleetServiceClient<Channel>,
    mut req: SearchGameSessionsRequest,
) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let r = client
            .search_game_sessions(req.clone())
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(r.game_sessions.len() <= req.limit as usize);
        out.extend(r.game_sessions.into_iter().map(|g| g.game_session_id));
        if r.next_page_token.is_empty() {
            return (out, pages);
        }
        req.page_token = r.next_page_token;
    }
}

fn assert_invalid(status: &tonic::Status, field: &str, text: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(text),
        "{:?} lacks {text:?}",
        status.message()
    );
    let br = status
        .get_details_bad_request()
        .expect("bad request details");
    assert_eq!(br.field_violations[0].field, field);
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The search fixture: fleet "arena" with seven ACTIVE game sessions, one ended, one DENY_ALL,
/// and a second fleet that must never show up.
async fn arena(td: &mut TestDaemon) -> Vec<GameSession> {
    type Spec<'a> = (&'a str, &'a str, u32, &'a [(&'a str, &'a str)], usize);
    let specs: [Spec; 7] = [
        ("a1", "Alpha", 10, &[("mode", "ctf"), ("level", "5")], 10),
        ("a2", "Bravo", 10, &[("mode", "ctf"), ("level", "12")], 4),
        ("a3", "Charlie", 20, &[("mode", "dm"), ("level", "12")], 0),
        ("a4", "Delta", 8, &[("mode", "dm")], 7),
        ("a5", "Echo's", 16, &[("mode", "ctf"), ("level", "pro")], 1),
        ("a6", "Foxtrot", 4, &[("mode", "duel"), ("level", "30")], 2),
        ("a7", "Golf", 12, &[("mode", "ctf")], 0),
    ];
    let mut games = Vec::new();
    for (id, name, max, labels, players) in specs {
        register(
            td,
            Game {
                fleet: "arena",
                id,
                name,
                max,
                labels,
            },
        )
        .await;
        fill(td, id, players).await;
    }
    // a7 refuses new players: no available seats although it is empty.
    td.games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "a7".into(),
            maximum_player_session_count: None,
            player_session_creation_policy: Some(2),
        })
        .await
        .unwrap();
    register(
        td,
        Game {
            fleet: "arena",
            id: "a8",
            name: "Ended",
            max: 10,
            labels: &[("mode", "ctf")],
        },
    )
    .await;
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "a8".into(),
            crashed: false,
            reason: "over".into(),
        })
        .await
        .unwrap();
    register(
        td,
        Game {
            fleet: "other",
            id: "o1",
            name: "Alpha",
            max: 10,
            labels: &[("mode", "ctf")],
        },
    )
    .await;
    for id in ["a1", "a2", "a3", "a4", "a5", "a6", "a7"] {
        let g = td
            .games
            .get_game_session(session_broker::proto::GetGameSessionRequest {
                game_session_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        games.push(g);
    }
    games
}

fn millis(g: &GameSession) -> i64 {
    let t = g.creation_time.unwrap();
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn search_with_each_filter_sort_and_paging() {
    let mut td = TestDaemon::start().await;
    let games = arena(&mut td).await;
    let mut c = fleets(&td);
    let all = ["a1", "a2", "a3", "a4", "a5", "a6", "a7"];

    // Default: every ACTIVE game session of the fleet, oldest first; not a8 (ended), not o1.
    assert_eq!(ids(&mut c, search("arena", "", "")).await, all);

    // creationTimeMillis: expected sets computed from the creation times the daemon reported
    // (several game sessions may share a millisecond).
    let t3 = millis(&games[2]);
    let by_time = |keep: &dyn Fn(i64) -> bool| -> Vec<String> {
        games
            .iter()
            .filter(|g| keep(millis(g)))
            .map(|g| g.game_session_id.clone())
            .collect()
    };
    for (filter, want) in [
        (format!("creationTimeMillis = {t3}"), by_time(&|t| t == t3)),
        (format!("creationTimeMillis > {t3}"), by_time(&|t| t > t3)),
        (format!("creationTimeMillis <= {t3}"), by_time(&|t| t <= t3)),
        (format!("creationTimeMillis <> {t3}"), by_time(&|t| t != t3)),
    ] {
        assert!(!want.is_empty() || filter.contains('>'));
        assert_eq!(
            ids(&mut c, search("arena", &filter, "")).await,
            want,
            "{filter}"
        );
    }
    for (filter, want) in [
        ("gameSessionName = 'Bravo'", vec!["a2"]),
        ("gameSessionName <> 'Bravo'", vec!["a1", "a3", "a4", "a5", "a6", "a7"]),
        ("gameSessionName = 'Echo''s'", vec!["a5"]),
        ("gameSessionId = 'a4'", vec!["a4"]),
        ("gameSessionProperties.mode = 'ctf'", vec!["a1", "a2", "a5", "a7"]),
        ("gameSessionProperties.mode <> 'ctf'", vec!["a3", "a4", "a6"]),
        ("gameSessionProperties.level >= 12", vec!["a2", "a3", "a6"]),
        ("gameSessionProperties.level < 12", vec!["a1"]),
        ("maximumSessions >= 12", vec!["a3", "a5", "a7"]),
        ("maximumSessions < 8", vec!["a6"]),
        ("maximumSessions <= 8", vec!["a4", "a6"]),
        ("maximumSessions > 16", vec!["a3"]),
        ("maximumSessions = 10", vec!["a1", "a2"]),
        ("playerSessionCount = 0", vec!["a3", "a7"]),
        ("playerSessionCount >= 4", vec!["a1", "a2", "a4"]),
        ("hasAvailablePlayerSessions = true", vec!["a2", "a3", "a4", "a5", "a6"]),
        ("hasAvailablePlayerSessions = false", vec!["a1", "a7"]),
        ("availablePlayerSessions >= 6", vec!["a2", "a3", "a5"]),
        ("availablePlayerSessions = 1", vec!["a4"]),
        // GameLift's documented example.
        ("maximumSessions>=10 AND hasAvailablePlayerSessions=true", vec!["a2", "a3", "a5"]),
        (
            "gameSessionProperties.mode = 'ctf' AND NOT (playerSessionCount > 5 OR hasAvailablePlayerSessions = false)",
            vec!["a2", "a5"],
        ),
        ("gameSessionProperties.mode = 'duel' OR gameSessionProperties.mode = 'dm' AND maximumSessions = 20", vec!["a3", "a6"]),
    ] {
        assert_eq!(ids(&mut c, search("arena", filter, "")).await, want, "{filter}");
    }

    // Sorts: indexed (available seats, player count, creation) and computed ones.
    for (sort, want) in [
        // DESC reverses the whole order: among equal values, the newest first.
        (
            "availablePlayerSessions DESC",
            vec!["a3", "a5", "a2", "a6", "a4", "a7", "a1"],
        ),
        (
            "availablePlayerSessions ASC",
            vec!["a1", "a7", "a4", "a6", "a2", "a5", "a3"],
        ),
        (
            "playerSessionCount DESC",
            vec!["a1", "a4", "a2", "a6", "a5", "a7", "a3"],
        ),
        (
            "creationTimeMillis DESC",
            vec!["a7", "a6", "a5", "a4", "a3", "a2", "a1"],
        ),
        (
            "maximumSessions DESC",
            vec!["a3", "a5", "a7", "a2", "a1", "a4", "a6"],
        ),
        (
            "gameSessionName ASC",
            vec!["a1", "a2", "a3", "a4", "a5", "a6", "a7"],
        ),
        (
            "gameSessionName DESC",
            vec!["a7", "a6", "a5", "a4", "a3", "a2", "a1"],
        ),
        (
            "gameSessionId DESC",
            vec!["a7", "a6", "a5", "a4", "a3", "a2", "a1"],
        ),
        (
            "maximumSessions ASC",
            vec!["a6", "a4", "a1", "a2", "a7", "a5", "a3"],
        ),
        // Numbers before strings before missing; DESC reverses the whole order.
        (
            "gameSessionProperties.level ASC",
            vec!["a1", "a2", "a3", "a6", "a5", "a4", "a7"],
        ),
        (
            "hasAvailablePlayerSessions DESC",
            vec!["a6", "a5", "a4", "a3", "a2", "a7", "a1"],
        ),
    ] {
        assert_eq!(ids(&mut c, search("arena", "", sort)).await, want, "{sort}");
        // Paging one by one and by three gives the same order, ending with an empty token.
        for limit in [1, 3] {
            let mut req = search("arena", "", sort);
            req.limit = limit;
            let (paged, pages) = all_pages(&mut c, req).await;
            assert_eq!(paged, want, "{sort} by {limit}");
            assert_eq!(
                pages,
                want.len().div_ceil(limit as usize),
                "{sort} by {limit}"
            );
        }
    }
    // Filter, sort and paging together.
    let mut req = search(
        "arena",
        "hasAvailablePlayerSessions = true",
        "availablePlayerSessions DESC",
    );
    req.limit = 2;
    assert_eq!(
        all_pages(&mut c, req).await.0,
        ["a3", "a5", "a2", "a6", "a4"]
    );

    // Label selector (with and without a filter).
    let mut req = search("arena", "", "");
    req.label_selector = [("mode".to_string(), "dm".to_string())].into();
    assert_eq!(ids(&mut c, req.clone()).await, ["a3", "a4"]);
    req.filter_expression = "availablePlayerSessions > 5".into();
    assert_eq!(ids(&mut c, req).await, ["a3"]);

    // limit 0 means 20; an unknown fleet is an empty page.
    let mut req = search("arena", "", "");
    req.limit = 0;
    assert_eq!(ids(&mut c, req).await.len(), 7);
    assert!(ids(&mut c, search("nobody", "", "")).await.is_empty());

    // Errors: position of the problem, field named; nothing else changes.
    let e = c
        .search_game_sessions(search("arena", "maximumSessions >= 'ten'", ""))
        .await
        .unwrap_err();
    assert_invalid(&e, "filter_expression", "at position 20");
    let e = c
        .search_game_sessions(search("arena", "gameSessionName > 'x'", ""))
        .await
        .unwrap_err();
    assert_invalid(
        &e,
        "filter_expression",
        "at position 17: gameSessionName can only be compared with = or <>",
    );
    let e = c
        .search_game_sessions(search("arena", "(maximumSessions = 1", ""))
        .await
        .unwrap_err();
    assert_invalid(&e, "filter_expression", "at position 21");
    let e = c
        .search_game_sessions(search("arena", "", "colour DESC"))
        .await
        .unwrap_err();
    assert_invalid(
        &e,
        "sort_expression",
        "at position 1: unknown operand 'colour'",
    );
    let mut req = search("arena", "", "");
    req.limit = 101;
    assert_invalid(
        &c.search_game_sessions(req).await.unwrap_err(),
        "limit",
        "at most 100",
    );
    assert_invalid(
        &c.search_game_sessions(search("", "", ""))
            .await
            .unwrap_err(),
        "fleet_id",
        "empty",
    );
    // A page token only continues the query that issued it.
    let mut req = search("arena", "", "");
    req.limit = 2;
    let token = c
        .search_game_sessions(req.clone())
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    let mut other = search("arena", "maximumSessions > 1", "");
    other.page_token = token;
    assert_invalid(
        &c.search_game_sessions(other).await.unwrap_err(),
        "page_token",
        "page token",
    );

    td.daemon.store().check_invariants().unwrap();
    td.stop().await;
}

#[tokio::test]
async fn utilization_counts_after_a_scripted_workload() {
    let mut td = TestDaemon::start().await;
    let mut c = fleets(&td);
    register(
        &mut td,
        Game {
            fleet: "eu",
            id: "e1",
            name: "e1",
            max: 10,
            labels: &[],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "eu",
            id: "e2",
            name: "e2",
            max: 6,
            labels: &[],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "eu",
            id: "e3",
            name: "e3",
            max: 4,
            labels: &[],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "us",
            id: "u1",
            name: "u1",
            max: 8,
            labels: &[],
        },
    )
    .await;
    let e1 = fill(&mut td, "e1", 5).await;
    fill(&mut td, "e2", 3).await;
    fill(&mut td, "e3", 2).await;
    fill(&mut td, "u1", 1).await;
    for ps in &e1[..2] {
        td.players
            .accept_player_session(session_broker::proto::AcceptPlayerSessionRequest {
                game_session_id: "e1".into(),
                player_session_id: ps.clone(),
            })
            .await
            .unwrap();
    }
    td.players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "e1".into(),
            player_session_id: e1[4].clone(),
        })
        .await
        .unwrap();
    // e2 stops taking players (its free seats are no longer available); e3 ends.
    td.games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "e2".into(),
            maximum_player_session_count: Some(5),
            player_session_creation_policy: Some(2),
        })
        .await
        .unwrap();
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "e3".into(),
            crashed: true,
            reason: "segfault".into(),
        })
        .await
        .unwrap();

    let u = |fleet_ids: &[&str]| DescribeFleetUtilizationRequest {
        fleet_ids: fleet_ids.iter().map(|s| s.to_string()).collect(),
    };
    let got = c
        .describe_fleet_utilization(u(&["eu", "nowhere", "us"]))
        .await
        .unwrap()
        .into_inner();
    let want = vec![
        FleetUtilization {
            fleet_id: "eu".into(),
            active_game_session_count: 2,
            // e1: 2 ACTIVE + 2 RESERVED; e2: 3 RESERVED; e3 ended (its players COMPLETED).
            current_player_session_count: 7,
            reserved_player_session_count: 5,
            active_player_session_count: 2,
            maximum_player_session_count: 15,
            // e1 has 6 free seats; e2's 2 free seats refuse new players.
            available_player_session_count: 6,
        },
        FleetUtilization {
            fleet_id: "nowhere".into(),
            ..Default::default()
        },
        FleetUtilization {
            fleet_id: "us".into(),
            active_game_session_count: 1,
            current_player_session_count: 1,
            reserved_player_session_count: 1,
            active_player_session_count: 0,
            maximum_player_session_count: 8,
            available_player_session_count: 7,
        },
    ];
    assert_eq!(got.fleet_utilization, want);
    // Empty = every fleet, sorted by id.
    let every = c
        .describe_fleet_utilization(u(&[]))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = every
        .fleet_utilization
        .iter()
        .map(|f| f.fleet_id.as_str())
        .collect();
    assert_eq!(names, ["eu", "us"]);
    assert_eq!(every.fleet_utilization[0], want[0]);
    let e = c
        .describe_fleet_utilization(u(&["eu", "bad fleet"]))
        .await
        .unwrap_err();
    assert_invalid(&e, "fleet_ids[1]", "not allowed");
    td.daemon.store().check_invariants().unwrap();
    td.stop().await;
}

fn place(fleet: &str, players: &[&str], strategy: PlacementStrategy) -> PlacePlayerSessionsRequest {
    PlacePlayerSessionsRequest {
        fleet_id: fleet.into(),
        player_ids: players.iter().map(|s| s.to_string()).collect(),
        player_data: HashMap::new(),
        label_selector: HashMap::new(),
        filter_expression: String::new(),
        strategy: strategy as i32,
        idempotency_key: String::new(),
    }
}

#[tokio::test]
async fn placement_packed_versus_distributed() {
    let mut td = TestDaemon::start().await;
    let mut c = fleets(&td);
    // Free seats: p1 3, p2 7, p3 10, p4 10 (DENY_ALL), p5 6 (mode=ranked).
    for (id, max, players, labels) in [
        ("p1", 10, 7, &[("mode", "casual")][..]),
        ("p2", 10, 3, &[("mode", "casual")][..]),
        ("p3", 10, 0, &[("mode", "casual")][..]),
        ("p4", 10, 0, &[("mode", "casual")][..]),
        ("p5", 6, 0, &[("mode", "ranked")][..]),
    ] {
        register(
            &mut td,
            Game {
                fleet: "party",
                id,
                name: id,
                max,
                labels,
            },
        )
        .await;
        fill(&mut td, id, players).await;
    }
    td.games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "p4".into(),
            maximum_player_session_count: None,
            player_session_creation_policy: Some(2),
        })
        .await
        .unwrap();

    let placed = |r: &session_broker::proto::PlacePlayerSessionsResponse| {
        let g = r.game_session.as_ref().unwrap();
        for p in &r.player_sessions {
            assert_eq!(
                p.game_session_id, g.game_session_id,
                "one party, one game session"
            );
            assert_eq!(p.status, 1, "RESERVED");
        }
        (g.game_session_id.clone(), g.current_player_session_count)
    };
    // PACKED: the fullest game session the party fits in.
    let r = c
        .place_player_sessions(place("party", &["a", "b", "c"], PlacementStrategy::Packed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed(&r), ("p1".to_string(), 10));
    assert_eq!(
        r.player_sessions
            .iter()
            .map(|p| p.player_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    // Unspecified means PACKED; 4 players no longer fit p1 (full): p5 has 6 free, p2 7.
    let r = c
        .place_player_sessions(place(
            "party",
            &["d", "e", "f", "g"],
            PlacementStrategy::Unspecified,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed(&r), ("p5".to_string(), 4));
    // DISTRIBUTED: the emptiest (p3: 10 free), never the DENY_ALL one.
    let r = c
        .place_player_sessions(place("party", &["h", "i"], PlacementStrategy::Distributed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed(&r), ("p3".to_string(), 2));
    // Selector and filter narrow the candidates.
    let mut req = place("party", &["j"], PlacementStrategy::Distributed);
    req.label_selector = [("mode".to_string(), "ranked".to_string())].into();
    let r = c.place_player_sessions(req).await.unwrap().into_inner();
    assert_eq!(placed(&r).0, "p5");
    let mut req = place("party", &["k", "l"], PlacementStrategy::Packed);
    req.filter_expression = "maximumSessions = 10 AND playerSessionCount < 3".into();
    let r = c.place_player_sessions(req).await.unwrap().into_inner();
    assert_eq!(placed(&r), ("p3".to_string(), 4));
    // Player data travels with the party.
    let mut req = place("party", &["m", "n"], PlacementStrategy::Packed);
    req.player_data = [("m".to_string(), "{\"role\":\"tank\"}".to_string())].into();
    let r = c.place_player_sessions(req).await.unwrap().into_inner();
    assert_eq!(r.player_sessions[0].player_data, "{\"role\":\"tank\"}");
    assert_eq!(r.player_sessions[1].player_data, "");

    // No fit anywhere: RESOURCE_EXHAUSTED, nothing reserved.
    let before = c
        .describe_fleet_utilization(DescribeFleetUtilizationRequest {
            fleet_ids: vec!["party".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let big: Vec<String> = (0..11).map(|i| format!("big{i}")).collect();
    let big: Vec<&str> = big.iter().map(|s| s.as_str()).collect();
    let e = c
        .place_player_sessions(place("party", &big, PlacementStrategy::Packed))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(reason(&e), "NO_GAME_SESSION_AVAILABLE");
    let mut req = place("party", &["x"], PlacementStrategy::Packed);
    req.filter_expression = "gameSessionProperties.mode = 'nope'".into();
    assert_eq!(
        c.place_player_sessions(req).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    let e = c
        .place_player_sessions(place("empty-fleet", &["x"], PlacementStrategy::Packed))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let after = c
        .describe_fleet_utilization(DescribeFleetUtilizationRequest {
            fleet_ids: vec!["party".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before, after);

    // Idempotency: a retry returns the original placement; another request with the key fails.
    let mut req = place("party", &["q1", "q2"], PlacementStrategy::Packed);
    req.idempotency_key = "match-77".into();
    let first = c
        .place_player_sessions(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = c
        .place_player_sessions(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first
            .player_sessions
            .iter()
            .map(|p| &p.player_session_id)
            .collect::<Vec<_>>(),
        again
            .player_sessions
            .iter()
            .map(|p| &p.player_session_id)
            .collect::<Vec<_>>()
    );
    req.player_ids.push("q3".into());
    let e = c.place_player_sessions(req).await.unwrap_err();
    assert_eq!(reason(&e), "IDEMPOTENCY_KEY_REUSED");

    // Bad requests name the field.
    let e = c
        .place_player_sessions(place("party", &[], PlacementStrategy::Packed))
        .await
        .unwrap_err();
    assert_invalid(&e, "player_ids", "1 to 100");
    let many: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
    let e = c
        .place_player_sessions(place("party", &many, PlacementStrategy::Packed))
        .await
        .unwrap_err();
    assert_invalid(&e, "player_ids", "got 101");
    let e = c
        .place_player_sessions(place("party", &["z", "z"], PlacementStrategy::Packed))
        .await
        .unwrap_err();
    assert_invalid(&e, "player_ids", "more than once");
    let mut req = place("party", &["z"], PlacementStrategy::Packed);
    req.strategy = 9;
    assert_invalid(
        &c.place_player_sessions(req).await.unwrap_err(),
        "strategy",
        "PACKED",
    );
    let mut req = place("party", &["z"], PlacementStrategy::Packed);
    req.filter_expression = "NOT".into();
    assert_invalid(
        &c.place_player_sessions(req).await.unwrap_err(),
        "filter_expression",
        "at position 4",
    );
    let mut req = place("party", &["z"], PlacementStrategy::Packed);
    req.player_data = [("y".to_string(), "d".to_string())].into();
    assert_invalid(
        &c.place_player_sessions(req).await.unwrap_err(),
        "player_data",
        "not one of player_ids",
    );

    td.daemon.store().check_invariants().unwrap();
    td.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_parties_never_overfill_or_split() {
    let mut td = TestDaemon::start().await;
    // 4 game sessions x 10 seats = 40 seats for 32 parties of 2-5 players (112 players).
    for i in 0..4 {
        let id = format!("r{i}");
        register(
            &mut td,
            Game {
                fleet: "race",
                id: &id,
                name: &id,
                max: 10,
                labels: &[],
            },
        )
        .await;
    }
    let mut tasks = Vec::new();
    for party in 0..32usize {
        let mut c = fleets(&td);
        let size = 2 + party % 4;
        let strategy = if party % 2 == 0 {
            PlacementStrategy::Packed
        } else {
            PlacementStrategy::Distributed
        };
        tasks.push(tokio::spawn(async move {
            let players: Vec<String> = (0..size).map(|i| format!("party{party}-{i}")).collect();
            let players: Vec<&str> = players.iter().map(|s| s.as_str()).collect();
            (
                size,
                c.place_player_sessions(place("race", &players, strategy))
                    .await,
            )
        }));
    }
    let mut seated: HashMap<String, u32> = HashMap::new();
    let mut failed_sizes = Vec::new();
    for t in tasks {
        let (size, r) = t.await.unwrap();
        match r {
            Ok(r) => {
                let r = r.into_inner();
                let gs = r.game_session.unwrap().game_session_id;
                assert_eq!(r.player_sessions.len(), size);
                assert!(
                    r.player_sessions.iter().all(|p| p.game_session_id == gs),
                    "party split"
                );
                *seated.entry(gs).or_default() += size as u32;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                failed_sizes.push(size as u32);
            }
        }
    }
    let mut c = fleets(&td);
    let mut req = search("race", "", "");
    req.limit = 10;
    let games = c
        .search_game_sessions(req)
        .await
        .unwrap()
        .into_inner()
        .game_sessions;
    for g in &games {
        assert!(g.current_player_session_count <= 10, "over-filled: {g:?}");
        assert_eq!(
            g.current_player_session_count,
            seated.get(&g.game_session_id).copied().unwrap_or(0)
        );
    }
    // A party was refused only when no game session had room for it (seats only went down).
    let most_free = games
        .iter()
        .map(|g| 10 - g.current_player_session_count)
        .max()
        .unwrap();
    for s in &failed_sizes {
        assert!(
            *s > most_free,
            "a party of {s} was refused while {most_free} seats were free"
        );
    }
    assert!(!failed_sizes.is_empty() && seated.values().sum::<u32>() > 30);
    td.daemon.store().check_invariants().unwrap();
    td.stop().await;
}

async fn next_event(stream: &mut tonic::Streaming<FleetEvent>) -> FleetEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event in time")
        .expect("stream ok")
        .expect("stream open")
}

fn kind(e: &FleetEvent) -> FleetEventType {
    FleetEventType::try_from(e.r#type).unwrap()
}

#[tokio::test]
async fn watcher_sees_the_snapshot_then_every_change_in_order() {
    let mut td = TestDaemon::start().await;
    let mut c = fleets(&td);
    register(
        &mut td,
        Game {
            fleet: "live",
            id: "w1",
            name: "w1",
            max: 4,
            labels: &[("region", "eu")],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "live",
            id: "w2",
            name: "w2",
            max: 4,
            labels: &[("region", "us")],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "live",
            id: "w0",
            name: "ended",
            max: 4,
            labels: &[],
        },
    )
    .await;
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "w0".into(),
            crashed: false,
            reason: String::new(),
        })
        .await
        .unwrap();

    let mut all = c
        .watch_fleet(WatchFleetRequest {
            fleet_id: "live".into(),
            label_selector: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut eu = c
        .watch_fleet(WatchFleetRequest {
            fleet_id: "live".into(),
            label_selector: [("region".to_string(), "eu".to_string())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Snapshot: the ACTIVE game sessions, then the marker, all at one sequence number.
    let s1 = next_event(&mut all).await;
    let s2 = next_event(&mut all).await;
    let done = next_event(&mut all).await;
    assert_eq!(
        (kind(&s1), kind(&s2), kind(&done)),
        (
            FleetEventType::Snapshot,
            FleetEventType::Snapshot,
            FleetEventType::SnapshotComplete
        )
    );
    assert_eq!(s1.game_session.as_ref().unwrap().game_session_id, "w1");
    assert_eq!(s2.game_session.as_ref().unwrap().game_session_id, "w2");
    assert!(done.game_session.is_none());
    assert!(s1.sequence == done.sequence && s2.sequence == done.sequence);
    assert_eq!(kind(&next_event(&mut eu).await), FleetEventType::Snapshot);
    assert_eq!(
        kind(&next_event(&mut eu).await),
        FleetEventType::SnapshotComplete
    );

    // Every change, in order, with increasing sequence numbers.
    let mut last = done.sequence;
    let mut expect = |e: FleetEvent, want: FleetEventType, id: &str, count: u32, max: u32| {
        assert_eq!(kind(&e), want, "{e:?}");
        let g = e.game_session.unwrap();
        assert_eq!(
            (
                g.game_session_id.as_str(),
                g.current_player_session_count,
                g.maximum_player_session_count
            ),
            (id, count, max)
        );
        assert!(e.sequence > last, "sequence {} after {last}", e.sequence);
        last = e.sequence;
    };
    // The selector feed sees only the eu game sessions' changes.
    let eu_next = |e: FleetEvent| (kind(&e), e.game_session.unwrap().game_session_id);
    register(
        &mut td,
        Game {
            fleet: "live",
            id: "w3",
            name: "w3",
            max: 6,
            labels: &[("region", "eu")],
        },
    )
    .await;
    expect(
        next_event(&mut all).await,
        FleetEventType::Created,
        "w3",
        0,
        6,
    );
    assert_eq!(
        eu_next(next_event(&mut eu).await),
        (FleetEventType::Created, "w3".into())
    );
    let ps = fill(&mut td, "w1", 2).await;
    expect(
        next_event(&mut all).await,
        FleetEventType::Updated,
        "w1",
        2,
        4,
    );
    assert_eq!(
        eu_next(next_event(&mut eu).await),
        (FleetEventType::Updated, "w1".into())
    );
    td.players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "w1".into(),
            player_session_id: ps[0].clone(),
        })
        .await
        .unwrap();
    expect(
        next_event(&mut all).await,
        FleetEventType::Updated,
        "w1",
        1,
        4,
    );
    assert_eq!(
        eu_next(next_event(&mut eu).await),
        (FleetEventType::Updated, "w1".into())
    );
    td.games
        .update_game_session(UpdateGameSessionRequest {
            game_session_id: "w2".into(),
            maximum_player_session_count: Some(8),
            player_session_creation_policy: None,
        })
        .await
        .unwrap();
    expect(
        next_event(&mut all).await,
        FleetEventType::Updated,
        "w2",
        0,
        8,
    );
    let r = c
        .place_player_sessions(place("live", &["x", "y"], PlacementStrategy::Distributed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.game_session.unwrap().game_session_id, "w2");
    expect(
        next_event(&mut all).await,
        FleetEventType::Updated,
        "w2",
        2,
        8,
    );
    // Another fleet's changes are not in this feed.
    register(
        &mut td,
        Game {
            fleet: "elsewhere",
            id: "x1",
            name: "x1",
            max: 4,
            labels: &[],
        },
    )
    .await;
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "w1".into(),
            crashed: true,
            reason: "boom".into(),
        })
        .await
        .unwrap();
    let ended = next_event(&mut all).await;
    assert_eq!(kind(&ended), FleetEventType::Ended);
    assert!(ended.sequence > last);
    let g = ended.game_session.unwrap();
    assert_eq!(
        (
            g.game_session_id.as_str(),
            g.status,
            g.current_player_session_count
        ),
        ("w1", 3, 0)
    );
    assert_eq!(
        eu_next(next_event(&mut eu).await),
        (FleetEventType::Ended, "w1".into())
    );
    assert_eq!(td.daemon.metrics().fleet_watchers.get(), 2);
    // Ending the streams frees the watchers.
    drop(all);
    drop(eu);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while td.daemon.metrics().fleet_watchers.get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "watchers not freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = c
        .watch_fleet(WatchFleetRequest {
            fleet_id: "bad fleet".into(),
            label_selector: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_invalid(&e, "fleet_id", "not allowed");
    td.stop().await;
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_with_a_clear_error_and_can_resubscribe() {
    let mut td = TestDaemon::start_with(|c| c.store.watch_buffer = 8).await;
    for i in 0..40 {
        let id = format!("s{i}");
        register(
            &mut td,
            Game {
                fleet: "slow",
                id: &id,
                name: &id,
                max: 1000,
                labels: &[],
            },
        )
        .await;
    }
    // A client that reads nothing, with a small HTTP/2 window so buffers fill quickly.
    let channel = Channel::from_shared(format!("http://{}", td.daemon.grpc_addr()))
        .unwrap()
        .initial_stream_window_size(Some(4096))
        .connect()
        .await
        .unwrap();
    let mut slow_client = FleetServiceClient::new(channel);
    let mut slow = slow_client
        .watch_fleet(WatchFleetRequest {
            fleet_id: "slow".into(),
            label_selector: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // Keep changing many game sessions until the watcher falls behind; every call still works.
    let mut calls = 0;
    while td.daemon.metrics().fleet_watchers_lagged.get() == 0 {
        assert!(calls < 20_000, "the watcher was never cut off");
        let gs = format!("s{}", calls % 40);
        let r = td
            .players
            .create_player_sessions(CreatePlayerSessionsRequest {
                game_session_id: gs.clone(),
                player_ids: vec![format!("{gs}-{calls}")],
                player_data: HashMap::new(),
                idempotency_key: String::new(),
            })
            .await
            .expect("reservations never wait for watchers")
            .into_inner();
        td.players
            .remove_player_session(RemovePlayerSessionRequest {
                game_session_id: gs,
                player_session_id: r.player_sessions[0].player_session_id.clone(),
            })
            .await
            .unwrap();
        calls += 1;
    }
    // Draining what was buffered ends in ABORTED naming the way out.
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.message())
            .await
            .expect("stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "WATCH_LAGGED");
    assert!(
        status.message().contains("resubscribe"),
        "{}",
        status.message()
    );
    // Resubscribing gives a fresh, complete snapshot.
    let mut again = fleets(&td)
        .watch_fleet(WatchFleetRequest {
            fleet_id: "slow".into(),
            label_selector: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = 0;
    loop {
        let e = next_event(&mut again).await;
        if kind(&e) == FleetEventType::SnapshotComplete {
            break;
        }
        snapshot += 1;
    }
    assert_eq!(snapshot, 40);
    drop(again);
    td.stop().await;
}

#[tokio::test]
async fn watch_streams_end_with_unavailable_at_shutdown() {
    let mut td = TestDaemon::start().await;
    register(
        &mut td,
        Game {
            fleet: "bye",
            id: "b1",
            name: "b1",
            max: 2,
            labels: &[],
        },
    )
    .await;
    let mut c = fleets(&td);
    let mut w = c
        .watch_fleet(WatchFleetRequest {
            fleet_id: "bye".into(),
            label_selector: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kind(&next_event(&mut w).await), FleetEventType::Snapshot);
    assert_eq!(
        kind(&next_event(&mut w).await),
        FleetEventType::SnapshotComplete
    );
    // Shutdown does not wait for the open stream: it ends it with UNAVAILABLE.
    td.shutdown.cancel();
    let status = tokio::time::timeout(Duration::from_secs(10), w.message())
        .await
        .expect("ends")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    tokio::time::timeout(Duration::from_secs(10), td.daemon.wait())
        .await
        .expect("drains")
        .unwrap();
}

#[tokio::test]
async fn the_index_is_rebuilt_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut td = TestDaemon::start_durable(dir.path()).await;
    register(
        &mut td,
        Game {
            fleet: "dur",
            id: "d1",
            name: "d1",
            max: 10,
            labels: &[("mode", "ctf")],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "dur",
            id: "d2",
            name: "d2",
            max: 10,
            labels: &[("mode", "ctf")],
        },
    )
    .await;
    register(
        &mut td,
        Game {
            fleet: "dur",
            id: "d3",
            name: "d3",
            max: 10,
            labels: &[],
        },
    )
    .await;
    fill(&mut td, "d1", 6).await;
    fill(&mut td, "d2", 2).await;
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "d3".into(),
            crashed: false,
            reason: String::new(),
        })
        .await
        .unwrap();
    let mut c = fleets(&td);
    let before_search = ids(&mut c, search("dur", "", "availablePlayerSessions ASC")).await;
    let util = DescribeFleetUtilizationRequest {
        fleet_ids: vec!["dur".into()],
    };
    let before_util = c
        .describe_fleet_utilization(util.clone())
        .await
        .unwrap()
        .into_inner();
    td.stop().await;

    let td = TestDaemon::start_durable(dir.path()).await;
    td.daemon.store().check_invariants().unwrap();
    let mut c = fleets(&td);
    assert_eq!(
        ids(&mut c, search("dur", "", "availablePlayerSessions ASC")).await,
        before_search
    );
    assert_eq!(before_search, ["d1", "d2"]);
    let after_util = c
        .describe_fleet_utilization(util)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after_util, before_util);
    assert_eq!(
        after_util.fleet_utilization[0].available_player_session_count,
        12
    );
    // Placement uses the rebuilt index: PACKED picks d1 (4 free) for a party of 4.
    let r = c
        .place_player_sessions(place(
            "dur",
            &["a", "b", "c", "d"],
            PlacementStrategy::Packed,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.game_session.unwrap().game_session_id, "d1");
    let mut w = c
        .watch_fleet(WatchFleetRequest {
            fleet_id: "dur".into(),
            label_selector: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_event(&mut w).await;
    assert_eq!(first.game_session.unwrap().current_player_session_count, 10);
    drop(w);
    td.stop().await;
}
