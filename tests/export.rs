//! `GET /v1/export` on the admin port: a streamed JSONL or CSV dump that the import parsers
//! accept, with fleet and status filters.

mod common;

use common::TestDaemon;
use session_broker::{
    import::records::{parse_jsonl, CsvColumns, ImportRecord},
    proto::{AcceptPlayerSessionRequest, CreatePlayerSessionsRequest, RemovePlayerSessionRequest},
};

async fn get(d: &TestDaemon, query: &str) -> (u16, String, String) {
    let r = reqwest::get(format!("http://{}/v1/export{query}", d.daemon.admin_addr()))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_stream_every_session_in_the_import_format() {
    let mut d = TestDaemon::start().await;
    // 40 game sessions x 25 players: over the 64 KiB chunk size, so the body streams.
    for g in 0..40 {
        let id = format!("exp-{g:02}");
        let mut req = common::register_request(&id, 30);
        if g % 2 == 1 {
            req.fleet_id = "fleet-2".into();
        }
        d.games.register_game_session(req).await.unwrap();
        let ps = d
            .players
            .create_player_sessions(CreatePlayerSessionsRequest {
                game_session_id: id.clone(),
                player_ids: (0..25).map(|p| format!("p{g}-{p}")).collect(),
                player_data: [(format!("p{g}-0"), "level=3, \"gold\"".to_string())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .player_sessions;
        d.players
            .accept_player_session(AcceptPlayerSessionRequest {
                game_session_id: id.clone(),
                player_session_id: ps[0].player_session_id.clone(),
            })
            .await
            .unwrap();
        d.players
            .remove_player_session(RemovePlayerSessionRequest {
                game_session_id: id.clone(),
                player_session_id: ps[1].player_session_id.clone(),
            })
            .await
            .unwrap();
    }

    let (status, ct, body) = get(&d, "?format=jsonl").await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/x-ndjson");
    assert!(body.len() > 64 << 10);
    let mut games = 0;
    let mut players = 0;
    let mut current_game = None;
    for line in body.lines() {
        match parse_jsonl(line).unwrap_or_else(|e| panic!("{e}: {line}")) {
            ImportRecord::GameSession(g) => {
                games += 1;
                current_game = Some(g.game_session_id);
            }
            ImportRecord::PlayerSession(p) => {
                players += 1;
                assert_eq!(
                    Some(&p.game_session_id),
                    current_game.as_ref(),
                    "game session first"
                );
            }
        }
    }
    assert_eq!((games, players), (40, 1000));

    let (status, ct, body) = get(&d, "?format=csv&fleet_id=fleet-2&status=active").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/csv"));
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let cols = CsvColumns::from_header(r.headers().unwrap()).unwrap();
    let rows: Vec<_> = r
        .records()
        .map(|row| cols.parse(&row.unwrap()).unwrap())
        .collect();
    assert_eq!(
        rows.len(),
        20,
        "one ACTIVE player in each of fleet-2's 20 game sessions"
    );
    assert!(rows
        .iter()
        .all(|p| p.fleet_id.as_ref().unwrap().as_str() == "fleet-2"));
    assert!(rows.iter().all(|p| p.status.as_str() == "ACTIVE"));
    assert_eq!(
        rows[0].player_data.as_deref(),
        Some("level=3, \"gold\""),
        "CSV quoting"
    );

    for (query, want) in [
        ("", "format"),
        ("?format=xml", "format"),
        ("?format=csv&status=LOST", "status"),
        ("?format=jsonl&fleet_id=bad%20fleet", "fleet_id"),
    ] {
        let (status, _, body) = get(&d, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(body.contains(want), "{query}: {body}");
    }
    d.stop().await;
}
