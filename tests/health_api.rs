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

async fn next_update(
    s: &mut tonic::Streaming<session_broker::proto::SessionUpdate>,
) -> session_broker::proto::SessionUpdate {
    tokio::time::timeout(std::time::Duration::from_secs(10), s.message())
        .await
        .expect("an update in time")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn the_stream_shows_each_session_from_init_to_its_one_terminal_update() {
    use session_broker::proto::{
        EndGameSessionRequest, RemovePlayerSessionRequest, SessionStatus,
        WatchSessionUpdatesRequest,
    };
    use std::collections::HashMap;
    let mut td = TestDaemon::start().await;
    let mut health = SessionHealthServiceClient::new(td.channel.clone());
    let mut all = health
        .watch_session_updates(WatchSessionUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut only_fleet_2 = health
        .watch_session_updates(WatchSessionUpdatesRequest {
            fleet_id: "fleet-2".into(),
            release: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    td.register("s1", 4).await;
    let ps = td
        .players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "s1".into(),
            player_ids: vec!["a".into(), "b".into(), "c".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    let id = |i: usize| ps[i].player_session_id.clone();
    td.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "s1".into(),
            player_session_id: id(0),
        })
        .await
        .unwrap();
    health
        .report_player_session_error(report("s1", &id(0), false, "lag"))
        .await
        .unwrap();
    td.players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "s1".into(),
            player_session_id: id(0),
        })
        .await
        .unwrap();
    health
        .report_player_session_error(report("s1", &id(1), true, "client crash"))
        .await
        .unwrap();
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "s1".into(),
            crashed: true,
            reason: "segfault".into(),
        })
        .await
        .unwrap();

    // a: init, accept, error, exited; b: init, crashed (its own crash); c: init, crashed (server).
    let mut by_session: HashMap<String, Vec<session_broker::proto::SessionUpdate>> = HashMap::new();
    for _ in 0..8 {
        let u = next_update(&mut all).await;
        by_session
            .entry(u.player_session_id.clone())
            .or_default()
            .push(u);
    }
    let statuses = |i: usize| -> Vec<(bool, i32, u32)> {
        by_session[&id(i)]
            .iter()
            .map(|u| (u.init, u.status, u.errors))
            .collect()
    };
    let (ok, exited, crashed) = (
        SessionStatus::Ok as i32,
        SessionStatus::Exited as i32,
        SessionStatus::Crashed as i32,
    );
    assert_eq!(
        statuses(0),
        [
            (true, ok, 0),
            (false, ok, 0),
            (false, ok, 1),
            (false, exited, 1)
        ]
    );
    assert_eq!(statuses(1), [(true, ok, 0), (false, crashed, 1)]);
    assert_eq!(
        statuses(2),
        [(true, ok, 0), (false, crashed, 1)],
        "crashed implies an error"
    );
    for (i, p) in ps.iter().enumerate() {
        let updates = &by_session[&p.player_session_id];
        let uuid = p.player_session_id.strip_prefix("psess-").unwrap();
        for w in updates.windows(2) {
            assert!(w[1].sequence > w[0].sequence, "sequence increases");
        }
        for u in updates {
            assert_eq!(
                (u.session_id.as_str(), u.distinct_id.as_str()),
                (uuid, p.player_id.as_str())
            );
            assert_eq!(u.started, p.creation_time);
            let a = u.attributes.as_ref().unwrap();
            assert_eq!(
                (a.release.as_str(), a.environment.as_str()),
                ("1.4.2", "production")
            );
            assert_eq!(
                (u.fleet_id.as_str(), u.game_session_id.as_str()),
                ("fleet-1", "s1")
            );
        }
        let last = updates.last().unwrap();
        assert!(
            last.duration_seconds.unwrap() >= 0.0,
            "{i}: terminal carries the duration"
        );
        assert!(updates[..updates.len() - 1]
            .iter()
            .all(|u| u.duration_seconds.is_none()));
    }

    // The filtered watcher saw none of that: its first update is fleet-2's.
    let mut r = common::register_request("f2", 2);
    r.fleet_id = "fleet-2".into();
    td.games.register_game_session(r).await.unwrap();
    td.players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "f2".into(),
            player_ids: vec!["z".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let u = next_update(&mut only_fleet_2).await;
    assert_eq!(
        (u.fleet_id.as_str(), u.distinct_id.as_str(), u.init),
        ("fleet-2", "z", true)
    );
    let e = health
        .watch_session_updates(WatchSessionUpdatesRequest {
            fleet_id: "bad fleet".into(),
            release: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    drop((all, only_fleet_2));
    td.stop().await;
}

#[tokio::test]
async fn a_slow_health_watcher_is_cut_off_and_the_daemon_does_not_wait() {
    use session_broker::proto::WatchSessionUpdatesRequest;
    let mut td = TestDaemon::start_with(|c| c.store.watch_buffer = 4).await;
    td.register("busy", 1000).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", td.daemon.grpc_addr()))
            .unwrap()
            .initial_stream_window_size(Some(4096))
            .connect()
            .await
            .unwrap();
    let mut slow = SessionHealthServiceClient::new(channel)
        .watch_session_updates(WatchSessionUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    // 1,000 reservations while the watcher reads nothing: every call answers.
    for batch in 0..40 {
        td.players
            .create_player_sessions(CreatePlayerSessionsRequest {
                game_session_id: "busy".into(),
                player_ids: (0..25).map(|i| format!("p{batch}-{i}")).collect(),
                ..Default::default()
            })
            .await
            .expect("reservations never wait for watchers");
    }
    let status = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), slow.message())
            .await
            .expect("ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended without an error"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "WATCH_LAGGED"
    );
    assert!(status.message().contains("resubscribe"));
    assert_eq!(td.daemon.metrics().health_watchers_lagged.get(), 1);
    td.stop().await;
}

#[tokio::test]
async fn release_health_after_a_scripted_mix_of_outcomes_survives_a_restart() {
    use session_broker::proto::{
        EndGameSessionRequest, GetReleaseHealthRequest, RemovePlayerSessionRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut td = TestDaemon::start_durable(dir.path()).await;
    let mut r = common::register_request("rh", 10);
    r.release = "2.0.0".into();
    td.games.register_game_session(r).await.unwrap();
    let ps = td
        .players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "rh".into(),
            player_ids: (0..10).map(|i| format!("p{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    let id = |i: usize| ps[i].player_session_id.clone();
    let mut health = SessionHealthServiceClient::new(td.channel.clone());
    // p0-p3 play and leave (p0 had an error): exited 4, errored 1.
    health
        .report_player_session_error(report("rh", &id(0), false, "stutter"))
        .await
        .unwrap();
    for i in 0..4 {
        td.players
            .accept_player_session(AcceptPlayerSessionRequest {
                game_session_id: "rh".into(),
                player_session_id: id(i),
            })
            .await
            .unwrap();
        td.players
            .remove_player_session(RemovePlayerSessionRequest {
                game_session_id: "rh".into(),
                player_session_id: id(i),
            })
            .await
            .unwrap();
    }
    // p4, p5: their clients crash.
    for i in 4..6 {
        health
            .report_player_session_error(report("rh", &id(i), true, "crash"))
            .await
            .unwrap();
    }
    // The match ends normally: p6-p9 exit.
    td.games
        .end_game_session(EndGameSessionRequest {
            game_session_id: "rh".into(),
            crashed: false,
            reason: String::new(),
        })
        .await
        .unwrap();

    let q = |environment: &str, fleet_id: &str, window_seconds: u32| GetReleaseHealthRequest {
        release: "2.0.0".into(),
        environment: environment.into(),
        fleet_id: fleet_id.into(),
        window_seconds,
    };
    let check = |h: &session_broker::proto::ReleaseHealth| {
        assert_eq!(
            (h.total, h.exited, h.errored, h.abnormal, h.crashed),
            (10, 8, 1, 0, 2),
            "{h:?}"
        );
        assert!((h.crash_free_rate - 0.8).abs() < 1e-9);
        assert!(!h.buckets.is_empty());
        let sum: u64 = h.buckets.iter().map(|b| b.total).sum();
        let crashed: u64 = h.buckets.iter().map(|b| b.crashed).sum();
        assert_eq!((sum, crashed), (10, 2));
        assert!(
            h.buckets
                .iter()
                .all(|b| b.started.unwrap().seconds % 60 == 0),
            "minute buckets"
        );
    };
    let all = health
        .get_release_health(q("", "", 0))
        .await
        .unwrap()
        .into_inner();
    check(&all);
    check(
        &health
            .get_release_health(q("production", "fleet-1", 3600))
            .await
            .unwrap()
            .into_inner(),
    );
    let none = health
        .get_release_health(q("staging", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (none.total, none.crash_free_rate, none.buckets.len()),
        (0, 1.0, 0)
    );
    assert_eq!(
        health
            .get_release_health(q("", "other-fleet", 0))
            .await
            .unwrap()
            .into_inner()
            .total,
        0
    );
    let e = health
        .get_release_health(GetReleaseHealthRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "release"
    );

    // The same figures as metrics.
    let (_, metrics) = common::http_get(td.daemon.admin_addr(), "/metrics").await;
    for line in [
        r#"session_broker_health_sessions_total{release="2.0.0",environment="production",status="ok"} 10"#,
        r#"session_broker_health_sessions_total{release="2.0.0",environment="production",status="exited"} 8"#,
        r#"session_broker_health_sessions_total{release="2.0.0",environment="production",status="errored"} 1"#,
        r#"session_broker_health_sessions_total{release="2.0.0",environment="production",status="crashed"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    td.stop().await;

    // Rebuilt from the journal after a restart.
    let td = TestDaemon::start_durable(dir.path()).await;
    let mut health = SessionHealthServiceClient::new(td.channel.clone());
    let again = health
        .get_release_health(q("", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, all);
    td.daemon.store().check_invariants().unwrap();
    td.stop().await;
}

#[tokio::test]
async fn a_session_open_at_a_restart_is_not_initialised_again() {
    use session_broker::proto::{
        RemovePlayerSessionRequest, SessionStatus, WatchSessionUpdatesRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut td = TestDaemon::start_durable(dir.path()).await;
    let mut w = SessionHealthServiceClient::new(td.channel.clone())
        .watch_session_updates(WatchSessionUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    td.register("rs", 2).await;
    let ps = td
        .players
        .create_player_sessions(CreatePlayerSessionsRequest {
            game_session_id: "rs".into(),
            player_ids: vec!["kim".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_sessions;
    let init = next_update(&mut w).await;
    assert!(init.init);
    drop(w);
    td.stop().await;

    let td = TestDaemon::start_durable(dir.path()).await;
    let mut w = SessionHealthServiceClient::new(td.channel.clone())
        .watch_session_updates(WatchSessionUpdatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut players = td.players.clone();
    players
        .remove_player_session(RemovePlayerSessionRequest {
            game_session_id: "rs".into(),
            player_session_id: ps[0].player_session_id.clone(),
        })
        .await
        .unwrap();
    // The first update after the restart is the terminal one: no second init, sequence goes on.
    let end = next_update(&mut w).await;
    assert_eq!(end.player_session_id, ps[0].player_session_id);
    assert!(!end.init);
    assert_eq!(end.status, SessionStatus::Exited as i32);
    assert!(end.sequence > init.sequence);
    assert_eq!(end.started, init.started);
    drop(w);

    td.stop().await;
}
