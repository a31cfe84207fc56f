//! The journal through the running daemon: history of a player session, restart of an
//! in-process daemon on the same data directory.

mod common;

use common::TestDaemon;
use session_broker::proto::{
    AcceptPlayerSessionRequest, CreatePlayerSessionRequest, GetGameSessionRequest,
    GetPlayerSessionHistoryRequest, OperationAction, OperationType, RemovePlayerSessionRequest,
};
use tonic::Code;

#[tokio::test]
async fn history_shows_every_update_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start_durable(dir.path()).await;
    d.register("gs-h", 4).await;
    let ps = d
        .players
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "gs-h".into(),
            player_id: "alice".into(),
            player_data: "lvl 10".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    d.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "gs-h".into(),
            player_session_id: ps.player_session_id.clone(),
        })
        .await
        .unwrap();
    d.players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "gs-h".into(),
            player_session_id: ps.player_session_id.clone(),
        })
        .await
        .unwrap();
    let req = GetPlayerSessionHistoryRequest {
        player_session_id: ps.player_session_id.clone(),
    };
    let history = d
        .players
        .get_player_session_history(req.clone())
        .await
        .unwrap()
        .into_inner();
    let steps: Vec<_> = history
        .records
        .iter()
        .map(|r| (r.operation_type, r.action, r.sub_type.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (
                OperationType::Callback as i32,
                OperationAction::Start as i32,
                "player_session"
            ),
            (
                OperationType::Callback as i32,
                OperationAction::Succeed as i32,
                "player_session"
            ),
            (
                OperationType::Callback as i32,
                OperationAction::Cancel as i32,
                "removed"
            ),
        ]
    );
    let start = &history.records[0];
    assert_eq!(start.parent_id, "gs-h");
    assert_eq!(start.name, "alice");
    assert_eq!(start.callback_options.as_ref().unwrap().timeout_seconds, 60);
    assert_eq!(start.deadline, ps.reservation_deadline);
    assert!(
        history.records.windows(2).all(|w| w[0].lsn < w[1].lsn),
        "LSNs increase"
    );

    d.stop().await;
    let mut d = TestDaemon::start_durable(dir.path()).await;
    let again = d
        .players
        .get_player_session_history(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, history, "identical after a restart");
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "gs-h".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 0);

    let e = d
        .players
        .get_player_session_history(GetPlayerSessionHistoryRequest {
            player_session_id: format!("psess-{}", uuid::Uuid::new_v4()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = d
        .players
        .get_player_session_history(GetPlayerSessionHistoryRequest {
            player_session_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    d.stop().await;
}
