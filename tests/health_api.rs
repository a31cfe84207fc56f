//! SessionHealthService over real gRPC: error reports (journaled, in the history, kept across a
//! restart).

mod common;

use common::TestDaemon;
use session_broker::proto::{
    session_health_service_client::SessionHealthServiceClient, AcceptPlayerSessionRequest,
    CreatePlayerSessionsRequest, GetPlayerSessionHistoryRequest, OperationAction,
    ReportPlayerSessionErrorRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

fn report(gs: &str, ps: &str, crashed: bool, message: &str) -> ReportPlayerSessionErrorRequest {
    ReportPlayerSessionErrorRequest {
        game_session_id: gs.into(),
        player_session_id: ps.into(),
        crashed,
        message: message.into(),
    }
}

#[tokio::test]
async fn errors_are_counted_journaled_and_a_crash_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut td = TestDaemon::start_durable(dir.path()).await;
    td.register("h1", 4).await;
    let ps = td
        .players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "h1".into(),
            player_ids: vec!["ann".into(), "ben".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    let (ann, ben) = (
        ps[0].player_session_id.clone(),
        ps[1].player_session_id.clone(),
    );
    td.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "h1".into(),
            player_session_id: ann.clone(),
        })
        .await
        .unwrap();
    let mut health = SessionHealthServiceClient::new(td.channel.clone());

    let r = health
        .report_player_session_error(report("h1", &ann, false, "desync"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.status, r.errors), (2, 1), "still ACTIVE, one error");
    let r = health
        .report_player_session_error(report("h1", &ann, false, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.errors, 2);
    // A RESERVED player's client crashes: COMPLETED, seat freed, the error counted.
    let r = health
        .report_player_session_error(report("h1", &ben, true, "segfault in client"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.status, r.errors), (3, 1));
    assert!(r.termination_time.is_some());
    let g = td
        .games
        .get_game_session(session_broker::proto::GetGameSessionRequest {
            game_session_id: "h1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 1);

    // Nothing after the end; bad input changes nothing.
    let e = health
        .report_player_session_error(report("h1", &ben, false, "late"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "INVALID_PLAYER_SESSION_STATUS"
    );
    let e = health
        .report_player_session_error(report("h1", &ann, false, &"x".repeat(1025)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "message"
    );
    let e = health
        .report_player_session_error(report("nope", &ann, false, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // The history shows each report (RETRY with the message) and the crash (CANCEL).
    let history = |td: &TestDaemon, id: String| {
        let mut c = td.players.clone();
        async move {
            c.get_player_session_history(GetPlayerSessionHistoryRequest {
                player_session_id: id,
            })
            .await
            .unwrap()
            .into_inner()
            .records
        }
    };
    let h = history(&td, ben.clone()).await;
    let tail: Vec<_> = h.iter().map(|u| (u.action, u.sub_type.clone())).collect();
    assert_eq!(
        tail[1..],
        [
            (OperationAction::Retry as i32, "player_session".to_string()),
            (OperationAction::Cancel as i32, "player_crashed".to_string()),
        ]
    );
    assert_eq!(
        h[1].error.as_ref().unwrap().error_message,
        "segfault in client"
    );
    let before_ann = history(&td, ann.clone()).await;
    td.stop().await;

    // Everything survives a restart.
    let td = TestDaemon::start_durable(dir.path()).await;
    let mut health = SessionHealthServiceClient::new(td.channel.clone());
    assert_eq!(history(&td, ann.clone()).await, before_ann);
    let r = health
        .report_player_session_error(report("h1", &ann, false, "again"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.errors, 3);
    td.daemon.store().check_invariants().unwrap();
    td.stop().await;
}
