//! Reservation timeouts, heartbeat loss and retention through the real gRPC server, with tokio's
//! clock paused and moved by `advance` (no real sleeps).

mod common;

use std::time::Duration;

use common::{register_request, HoldClock, TestDaemon};
use session_broker::proto::{
    AcceptPlayerSessionRequest, CreatePlayerSessionRequest, DescribePlayerSessionsRequest,
    GameSessionStatus, GetGameSessionRequest, HeartbeatRequest, PlayerSessionStatus,
};
use tonic::Code;

fn reserve_req(gs: &str, player: &str) -> CreatePlayerSessionRequest {
    CreatePlayerSessionRequest {
        game_session_id: gs.into(),
        player_id: player.into(),
        player_data: String::new(),
        idempotency_key: String::new(),
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn status_of(d: &mut TestDaemon, player_session_id: &str) -> i32 {
    d.players
        .describe_player_sessions(DescribePlayerSessionsRequest {
            player_session_id: player_session_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions[0]
        .status
}

#[tokio::test(start_paused = true)]
async fn reservations_time_out_within_100ms_of_their_deadline() {
    let _hold = HoldClock::new();
    let mut d = TestDaemon::start().await;
    let mut req = register_request("gs-t", 2);
    req.reservation_timeout_seconds = 30;
    d.games.register_game_session(req).await.unwrap();
    let a = d
        .players
        .create_player_session(reserve_req("gs-t", "a"))
        .await
        .unwrap()
        .into_inner();
    let b = d
        .players
        .create_player_session(reserve_req("gs-t", "b"))
        .await
        .unwrap()
        .into_inner();
    d.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "gs-t".into(),
            player_session_id: b.player_session_id.clone(),
        })
        .await
        .unwrap();

    tokio::time::advance(Duration::from_millis(29_990)).await;
    settle().await;
    assert_eq!(
        status_of(&mut d, &a.player_session_id).await,
        PlayerSessionStatus::Reserved as i32
    );

    tokio::time::advance(Duration::from_millis(110)).await;
    settle().await;
    let page = d
        .players
        .describe_player_sessions(DescribePlayerSessionsRequest {
            player_session_id: a.player_session_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let timed_out = &page.player_sessions[0];
    assert_eq!(timed_out.status, PlayerSessionStatus::Timedout as i32);
    assert_eq!(
        timed_out.termination_time, a.reservation_deadline,
        "terminated at the deadline"
    );
    assert_eq!(
        status_of(&mut d, &b.player_session_id).await,
        PlayerSessionStatus::Active as i32
    );

    // The seat is free again and the late accept names the status.
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-t".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 1);
    let e = d
        .players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "gs-t".into(),
            player_session_id: a.player_session_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("TIMEDOUT"), "{}", e.message());
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn daemon_default_reservation_timeout_applies() {
    let _hold = HoldClock::new();
    let mut d =
        TestDaemon::start_with(|c| c.store.reservation_timeout = Duration::from_secs(5)).await;
    d.register("gs-d", 2).await;
    let a = d
        .players
        .create_player_session(reserve_req("gs-d", "a"))
        .await
        .unwrap()
        .into_inner();
    tokio::time::advance(Duration::from_millis(5_050)).await;
    settle().await;
    assert_eq!(
        status_of(&mut d, &a.player_session_id).await,
        PlayerSessionStatus::Timedout as i32
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeat_loss_ends_the_game_session_and_completes_players() {
    let _hold = HoldClock::new();
    let mut d = TestDaemon::start().await;
    let mut req = register_request("gs-h", 4);
    req.heartbeat_timeout_seconds = 15;
    d.games.register_game_session(req).await.unwrap();
    let a = d
        .players
        .create_player_session(reserve_req("gs-h", "a"))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(10)).await;
        d.games
            .heartbeat(HeartbeatRequest {
                game_session_id: "gs-h".into(),
            })
            .await
            .unwrap();
    }
    d.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "gs-h".into(),
            player_session_id: a.player_session_id.clone(),
        })
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(15_050)).await;
    settle().await;
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-h".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.status, GameSessionStatus::Error as i32);
    assert_eq!(g.termination_reason, "heartbeat timeout");
    assert_eq!(g.current_player_session_count, 0);
    assert_eq!(
        status_of(&mut d, &a.player_session_id).await,
        PlayerSessionStatus::Completed as i32
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn history_is_purged_after_retention() {
    let _hold = HoldClock::new();
    let mut d =
        TestDaemon::start_with(|c| c.store.retention = Duration::from_secs(24 * 3600)).await;
    let mut req = register_request("gs-r", 2);
    req.reservation_timeout_seconds = 10;
    d.games.register_game_session(req).await.unwrap();
    let a = d
        .players
        .create_player_session(reserve_req("gs-r", "a"))
        .await
        .unwrap()
        .into_inner();
    tokio::time::advance(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(
        status_of(&mut d, &a.player_session_id).await,
        PlayerSessionStatus::Timedout as i32
    );
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    settle().await;
    let page = d
        .players
        .describe_player_sessions(DescribePlayerSessionsRequest {
            player_session_id: a.player_session_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.player_sessions.is_empty(), "purged after retention");
    // The game session is still ACTIVE: only history is purged.
    d.games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-r".into(),
        })
        .await
        .unwrap();
    d.stop().await;
}
