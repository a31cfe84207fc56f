use proptest::prelude::*;

use super::*;
use crate::{
    domain::Clock,
    store::{
        tests::{registration, reservation},
        Store, StoreConfig,
    },
};

fn player(r: Result<ImportRecord, RecordError>) -> PlayerSessionRecord {
    match r {
        Ok(ImportRecord::PlayerSession(p)) => p,
        other => panic!("not a player session: {other:?}"),
    }
}

fn time(s: &str) -> Timestamp {
    parse_time_str("t", s).unwrap()
}

#[tokio::test(start_paused = true)]
async fn exported_sessions_parse_back_to_themselves() {
    let s = Store::in_memory(
        Clock::starting_at(Timestamp::from_micros(1_700_000_000_123_456)),
        StoreConfig::default(),
    );
    let mut reg = registration("match-1", 8);
    reg.labels = [("map".into(), "dust \"2\", night".into())].into();
    s.register_game_session(reg).await.unwrap();
    let mut party = reservation("match-1", &["alice", "bob", "carol"]);
    party.players[0] =
        crate::domain::PlayerStrings::parse("p", "alice", Some("lvl=10, \"vip\"\nline two"))
            .unwrap();
    let ps = s.reserve(party).await.unwrap();
    let gid = GameSessionId::parse("g", "match-1").unwrap();
    s.accept(&gid, ps[0].id).await.unwrap();
    s.remove(&gid, ps[1].id).await.unwrap();
    s.end_game_session(&gid, false, "over").await.unwrap();

    let (g, players) = s.export_game_session(&gid).unwrap();
    let line = game_session_json(&g).to_string();
    let ImportRecord::GameSession(back) = parse_jsonl(&line).unwrap() else {
        panic!("not a game session")
    };
    assert_eq!(back.game_session_id, gid);
    assert_eq!(back.status, GameSessionStatus::Terminated);
    assert_eq!(back.labels, *g.labels);
    assert_eq!(back.creation_time, Some(g.creation_time));
    assert_eq!(back.termination_time, g.termination_time);
    assert_eq!(back.termination_reason.as_deref(), Some("over"));
    assert_eq!(back.maximum_player_session_count, 8);

    assert_eq!(players.len(), 3);
    let mut csv_out = csv::Writer::from_writer(Vec::new());
    csv_out.write_record(CSV_HEADER).unwrap();
    for p in &players {
        let want = PlayerSessionRecord {
            player_session_id: Some(p.id),
            player_id: PlayerId::parse("p", p.player_id()).unwrap(),
            game_session_id: gid.clone(),
            fleet_id: Some(p.game.fleet_id.clone()),
            status: p.status,
            player_data: p.player_data().map(Into::into),
            creation_time: Some(p.creation_time),
            termination_time: p.termination_time,
        };
        let json_line = player_session_json(p).to_string();
        assert_eq!(player(parse_jsonl(&json_line)), want, "{json_line}");
        csv_out.write_record(player_session_csv(p)).unwrap();
        // CSV round trip of the same session, quoting included.
        let bytes = {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(CSV_HEADER).unwrap();
            w.write_record(player_session_csv(p)).unwrap();
            w.into_inner().unwrap()
        };
        let mut r = csv::Reader::from_reader(bytes.as_slice());
        let cols = CsvColumns::from_header(r.headers().unwrap()).unwrap();
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(cols.parse(&row).unwrap(), want);
    }
}

#[test]
fn gamelift_player_session_json_is_accepted() {
    let line = r#"{"PlayerSessionId":"psess-6e4d3f14-3f4c-4a1e-9c59-6b1d4d2f0b9a","PlayerId":"player-1",
        "GameSessionId":"arn:aws:gamelift:us-west-2::gamesession/fleet-2ec15/gsess-abc","FleetId":"fleet-2ec15",
        "FleetArn":"arn:aws:gamelift:us-west-2:123:fleet/fleet-2ec15","CreationTime":"2024-05-01T10:00:00.123000+02:00",
        "TerminationTime":1714557700.5,"Status":"COMPLETED","IpAddress":"192.0.2.1","Port":7777,"PlayerData":"team=red"}"#
        .replace('\n', " ");
    let p = player(parse_jsonl(&line));
    assert_eq!(p.game_session_id.as_str(), "gsess-abc");
    assert_eq!(p.player_id.as_str(), "player-1");
    assert_eq!(p.status, PlayerSessionStatus::Completed);
    assert_eq!(p.fleet_id.unwrap().as_str(), "fleet-2ec15");
    assert_eq!(p.player_data.as_deref(), Some("team=red"));
    assert_eq!(p.creation_time, Some(time("2024-05-01T08:00:00.123Z")));
    assert_eq!(
        p.termination_time,
        Some(Timestamp::from_micros(1_714_557_700_500_000))
    );
}

#[test]
fn bad_records_name_the_field() {
    let long = "x".repeat(2049);
    let cases = [
        ("{not json", "invalid JSON"),
        ("[1,2]", "expected a JSON object"),
        (r#"{"kind":"thing"}"#, "kind"),
        (r#"{"hello":1}"#, "kind: missing"),
        (
            r#"{"kind":"player_session","game_session_id":"g1"}"#,
            "player_id: missing",
        ),
        (
            r#"{"kind":"player_session","player_id":"p"}"#,
            "game_session_id: missing",
        ),
        (
            &format!(
                r#"{{"kind":"player_session","player_id":"p","game_session_id":"g1","player_data":"{long}"}}"#
            ),
            "player_data longer than 2048 characters",
        ),
        (
            r#"{"kind":"player_session","player_id":"p","game_session_id":"g1","status":"LOST"}"#,
            "status",
        ),
        (
            r#"{"kind":"player_session","player_id":"p","game_session_id":"g1","termination_time":"2026-01-01T00:00:00Z"}"#,
            "termination_time: given for a RESERVED session",
        ),
        (
            r#"{"kind":"player_session","player_id":"p","game_session_id":"g1","creation_time":"yesterday"}"#,
            "creation_time",
        ),
        (
            r#"{"kind":"player_session","player_session_id":"nope","player_id":"p","game_session_id":"g1"}"#,
            "player_session_id",
        ),
        (
            r#"{"kind":"player_session","player_id":"p","game_session_id":"bad id!"}"#,
            "game_session_id",
        ),
        (
            r#"{"kind":"game_session","fleet_id":"f"}"#,
            "game_session_id: missing",
        ),
        (
            r#"{"kind":"game_session","game_session_id":"g1","fleet_id":"f","maximum_player_session_count":0}"#,
            "maximum_player_session_count",
        ),
        (
            r#"{"kind":"game_session","game_session_id":"g1","fleet_id":"f","maximum_player_session_count":4,"port":70000}"#,
            "port",
        ),
    ];
    for (line, want) in cases {
        let e = parse_jsonl(line).expect_err(line);
        assert!(e.contains(want), "{line}: {e:?} lacks {want:?}");
    }
    let ok = r#"{"kind":"player_session","player_id":"p","game_session_id":"g1"}"#;
    let p = player(parse_jsonl(ok));
    assert_eq!(
        (p.status, p.player_session_id, p.creation_time),
        (PlayerSessionStatus::Reserved, None, None)
    );
}

#[test]
fn csv_headers_quoting_and_defaults() {
    let file = "player_id,game_session_id,player_data,status\n\
                alice,g1,\"a, b \"\"quoted\"\"\nand a newline\",\n\
                bob,g1,,completed\n";
    let mut r = csv::Reader::from_reader(file.as_bytes());
    let cols = CsvColumns::from_header(r.headers().unwrap()).unwrap();
    let rows: Vec<_> = r.records().map(|row| cols.parse(&row.unwrap())).collect();
    let alice = rows[0].as_ref().unwrap();
    assert_eq!(
        alice.player_data.as_deref(),
        Some("a, b \"quoted\"\nand a newline")
    );
    assert_eq!(alice.status, PlayerSessionStatus::Reserved);
    assert_eq!(alice.player_session_id, None, "generated on import");
    assert_eq!(
        rows[1].as_ref().unwrap().status,
        PlayerSessionStatus::Completed
    );
    for (header, want) in [
        (
            "player_id,game_session_id,colour",
            "unknown column \"colour\"",
        ),
        ("player_id,player_id,game_session_id", "appears twice"),
        ("player_id,status", "no game_session_id column"),
    ] {
        let mut r = csv::Reader::from_reader(header.as_bytes());
        let e = CsvColumns::from_header(r.headers().unwrap()).unwrap_err();
        assert!(e.contains(want), "{header}: {e}");
    }
    // Times in CSV: RFC 3339 or Unix seconds.
    let mut r = csv::Reader::from_reader(
        "player_id,game_session_id,status,creation_time,termination_time\n\
         p,g1,TIMEDOUT,2026-12-01T10:00:00Z,1764583260\n"
            .as_bytes(),
    );
    let cols = CsvColumns::from_header(r.headers().unwrap()).unwrap();
    let p = cols.parse(&r.records().next().unwrap().unwrap()).unwrap();
    assert_eq!(p.creation_time, Some(time("2026-12-01T10:00:00Z")));
    assert_eq!(
        p.termination_time,
        Some(Timestamp::from_micros(1_764_583_260_000_000))
    );
}

#[test]
fn times_with_offsets_and_fractions() {
    assert_eq!(
        time("2026-12-01T10:00:00+01:30"),
        time("2026-12-01T08:30:00Z")
    );
    assert_eq!(
        time("2026-12-01T10:00:00-05:00"),
        time("2026-12-01T15:00:00Z")
    );
    assert_eq!(
        time("2026-12-01T10:00:00.000123Z").as_micros() % 1_000_000,
        123
    );
    for bad in ["2026-12-01", "10:00", "2026-13-01T00:00:00Z", "", "+01:00"] {
        assert!(parse_time_str("t", bad).is_err(), "{bad}");
    }
    let t = time("2026-12-01T10:00:00.654321Z");
    assert_eq!(time(&format_time(t)), t, "export keeps microseconds");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes never panic the parsers: they give a record or an error.
    #[test]
    fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_jsonl(&text);
        let _ = parse_time_str("t", &text);
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes.as_slice());
        let header = csv::StringRecord::from(vec!["player_id", "game_session_id", "status", "creation_time"]);
        let cols = CsvColumns::from_header(&header).unwrap();
        for row in r.records().flatten() {
            let _ = cols.parse(&row);
        }
    }

    /// Mutated valid lines never panic either.
    #[test]
    fn mutated_lines_never_panic(cut in 0usize..200, byte in any::<u8>()) {
        let line = r#"{"kind":"game_session","game_session_id":"g1","fleet_id":"f","maximum_player_session_count":4,"labels":{"a":"b"},"creation_time":"2026-12-01T10:00:00.5+01:00","status":"TERMINATED","termination_time":1764583260}"#;
        let mut bytes = line.as_bytes().to_vec();
        let at = cut.min(bytes.len() - 1);
        bytes[at] = byte;
        let _ = parse_jsonl(&String::from_utf8_lossy(&bytes));
        let _ = parse_jsonl(&line[..at]);
    }

    /// The borrowed fast path of player session lines and the general path agree on every
    /// line, valid or not: same record, or the same message.
    #[test]
    fn fast_and_general_paths_agree(
        fields in proptest::collection::vec((0usize..10, 0usize..9), 0..12),
    ) {
        const KEYS: [&str; 10] = [
            "kind", "player_session_id", "player_id", "game_session_id", "fleet_id", "status",
            "player_data", "creation_time", "termination_time", "extra",
        ];
        const VALUES: [&str; 9] = [
            r#""player_session""#, r#""psess-6f1c2a8e-93d3-4b8e-b1c2-0d3e4f5a6b7c""#,
            r#""p\u00e9-1""#, "null", "7", r#""""#, r#""COMPLETED""#,
            r#""2026-12-01T10:00:00Z""#, "1764583260",
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{}\":{}", KEYS[*k], VALUES[*v]))
            .collect();
        let line = format!("{{{}}}", body.join(","));
        let general = parse_general(&line);
        if let Some(fast) = parse_player_line(&line) {
            prop_assert_eq!(fast, general, "{}", line);
        }
    }
}
