//! Import jobs on the admin port: exact counts for a file of every kind of row, CSV quoting,
//! GameLift's PascalCase lines, refused uploads, export -> import round trip, and a kill -9
//! in the middle of a job (the restarted daemon finishes it with the right counts and no
//! duplicate).

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::TestDaemon;
use serde_json::Value;
use session_broker::{
    journal::JournalConfig,
    proto::{
        AcceptPlayerSessionRequest, CreatePlayerSessionRequest, DescribePlayerSessionsRequest,
        GetGameSessionRequest, PlayerSessionStatus,
    },
};

async fn durable() -> (TestDaemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_durable(dir.path()).await;
    (d, dir)
}

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn upload(
    addr: std::net::SocketAddr,
    format: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url(addr, &format!("/v1/import?format={format}")))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

async fn job_status(addr: std::net::SocketAddr, job: &str) -> (u16, Value) {
    let r = reqwest::get(url(addr, &format!("/v1/import/{job}/status")))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// (total, imported, skipped) of a job status.
fn counts(s: &Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    (n("total"), n("imported"), n("skipped"))
}

/// The player sessions a DescribePlayerSessions request lists (one page of up to 100).
async fn describe(
    d: &mut TestDaemon,
    req: DescribePlayerSessionsRequest,
) -> Vec<session_broker::proto::PlayerSession> {
    d.players
        .describe_player_sessions(DescribePlayerSessionsRequest { limit: 100, ..req })
        .await
        .unwrap()
        .into_inner()
        .player_sessions
}

/// Polls until the job is no longer running.
async fn finished(addr: std::net::SocketAddr, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, s) = job_status(addr, job).await;
        assert_eq!(code, 200, "{s}");
        if s["status"] != "running" {
            return s;
        }
        assert!(Instant::now() < deadline, "job still running: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_every_kind_of_row_gives_exact_counts() {
    let (mut d, _dir) = durable().await;
    let admin = d.daemon.admin_addr();
    d.register("imp-1", 3).await;
    let existing = d
        .players
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "imp-1".into(),
            player_id: "zoe".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .player_session_id;
    let p2 = "psess-0f6b6f7e-2a55-4c1e-8a51-3f9e6d1c2b3a";
    let long = "x".repeat(2049);
    let lines = [
        // 1: RESERVED, id generated
        r#"{"kind":"player_session","player_id":"p1","game_session_id":"imp-1"}"#.to_string(),
        // 2: ACTIVE with its own id
        format!(r#"{{"kind":"player_session","player_session_id":"{p2}","player_id":"p2","game_session_id":"imp-1","status":"ACTIVE","player_data":"lvl=2"}}"#),
        // 3: duplicate of a session the daemon has
        format!(r#"{{"kind":"player_session","player_session_id":"{existing}","player_id":"zoe","game_session_id":"imp-1"}}"#),
        // 4: invalid JSON
        r#"{"kind":"player_session","#.to_string(),
        // 5: missing field
        r#"{"kind":"player_session","game_session_id":"imp-1"}"#.to_string(),
        // 6: oversize player_data
        format!(r#"{{"kind":"player_session","player_id":"p6","game_session_id":"imp-1","player_data":"{long}"}}"#),
        // 7: unknown game session
        r#"{"kind":"player_session","player_id":"p7","game_session_id":"nowhere"}"#.to_string(),
        // 8: capacity overflow (zoe, p1, p2 hold the 3 seats)
        r#"{"kind":"player_session","player_id":"p8","game_session_id":"imp-1"}"#.to_string(),
        // 9: terminal: keeps its times, needs no seat
        r#"{"kind":"player_session","player_id":"p9","game_session_id":"imp-1","status":"COMPLETED","creation_time":"2026-11-30T10:00:00Z","termination_time":"2026-11-30T10:20:00Z"}"#.to_string(),
        // 10: GameLift's own JSON
        r#"{"PlayerSessionId":"psess-7d1b2c3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d","PlayerId":"p10","GameSessionId":"arn:aws:gamelift:us-east-1::gamesession/fleet-1/imp-1","FleetId":"fleet-1","Status":"TIMEDOUT","CreationTime":"2026-11-30T09:00:00.000+00:00","TerminationTime":"2026-11-30T09:01:00.000+00:00"}"#.to_string(),
        // blank lines are not records
        String::new(),
        // 11: a new game session
        r#"{"kind":"game_session","game_session_id":"imp-2","fleet_id":"fleet-1","maximum_player_session_count":4,"labels":{"map":"dust"}}"#.to_string(),
        // 12: and a player in it
        r#"{"kind":"player_session","player_id":"p12","game_session_id":"imp-2"}"#.to_string(),
    ];
    let (code, body) = upload(admin, "jsonl", lines.join("\n") + "\n").await;
    assert_eq!(code, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    let s = finished(admin, &job).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["format"], "jsonl");
    assert_eq!(counts(&s), (12, 6, 6), "{s}");
    let errors: Vec<&str> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 6, "{errors:?}");
    for (i, want) in [
        (0, "line 3: player session"),
        (1, "line 4: invalid JSON"),
        (2, "line 5: player_id: missing"),
        (3, "line 6: player_data longer than 2048 characters"),
        (4, "line 7: game session nowhere not found"),
        (5, "line 8: game session imp-1 is full"),
    ] {
        assert!(
            errors[i].starts_with(want),
            "{errors:?}[{i}] should start with {want}"
        );
    }
    assert!(s["started_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(s["finished_at"].as_i64().unwrap() >= s["started_at"].as_i64().unwrap());

    // The state is what the file said.
    let g = d
        .games
        .get_game_session(GetGameSessionRequest {
            game_session_id: "imp-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.current_player_session_count, 3, "capacity held");
    let list = describe(
        &mut d,
        DescribePlayerSessionsRequest {
            game_session_id: "imp-1".into(),
            ..Default::default()
        },
    )
    .await;
    let by = |p: &str| list.iter().find(|s| s.player_id == p).unwrap().clone();
    assert_eq!(by("p1").status, PlayerSessionStatus::Reserved as i32);
    assert_eq!(by("p2").status, PlayerSessionStatus::Active as i32);
    assert_eq!(by("p2").player_session_id, p2);
    assert_eq!(by("p2").player_data, "lvl=2");
    assert_eq!(by("p9").status, PlayerSessionStatus::Completed as i32);
    assert_eq!(by("p10").status, PlayerSessionStatus::Timedout as i32);
    assert_eq!(list.len(), 5);
    // An imported reservation is a real one: it can be accepted.
    d.players
        .accept_player_session(AcceptPlayerSessionRequest {
            game_session_id: "imp-1".into(),
            player_session_id: by("p1").player_session_id,
        })
        .await
        .unwrap();

    let jobs: Value = reqwest::get(url(admin, "/v1/import"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse::<Value>()
        .unwrap();
    assert_eq!(jobs["jobs"][0]["job_id"], job.as_str());
    assert_eq!(job_status(admin, "import-nope").await.0, 404);
    let r = reqwest::Client::new()
        .delete(url(admin, &format!("/v1/import/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        409,
        "a finished job cannot be cancelled"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_imports_with_quoting_and_refused_uploads_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().to_path_buf();
    let mut d = TestDaemon::start_with(move |c| {
        c.journal = Some(JournalConfig::new(jdir));
        c.import_max_bytes = 4096;
    })
    .await;
    let admin = d.daemon.admin_addr();
    d.register("csv-1", 10).await;
    let file = "player_id,game_session_id,player_data,status\n\
                alice,csv-1,\"level=3, \"\"gold\"\"\nsecond line\",\n\
                bob,csv-1,,ACTIVE\n\
                carol,csv-1,,LOST\n";
    let (code, body) = upload(admin, "csv", file).await;
    assert_eq!(code, 202, "{body}");
    let s = finished(admin, body["job_id"].as_str().unwrap()).await;
    assert_eq!(counts(&s), (3, 2, 1), "{s}");
    assert!(
        s["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("line 5: status"),
        "{s}"
    );
    let list = describe(
        &mut d,
        DescribePlayerSessionsRequest {
            player_id: "alice".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(list[0].player_data, "level=3, \"gold\"\nsecond line");

    let before = reqwest::get(url(admin, "/v1/import"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (format, body, want) in [
        ("xml", "a".to_string(), 400),
        ("jsonl", String::new(), 400),
        ("jsonl", "x".repeat(5000), 413),
    ] {
        let (code, v) = upload(admin, format, body).await;
        assert_eq!(code, want, "{format}: {v}");
        assert!(v["error"].is_string());
    }
    let after = reqwest::get(url(admin, "/v1/import"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(before, after, "a refused upload starts no job");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_an_empty_daemon_gives_the_same_state() {
    let (mut a, _da) = durable().await;
    for g in 0..3 {
        let id = format!("rt-{g}");
        let mut req = common::register_request(&id, 5);
        req.labels.insert("mode".into(), format!("m{g}"));
        a.games.register_game_session(req).await.unwrap();
        for p in 0..4 {
            let ps = a
                .players
                .create_player_session(CreatePlayerSessionRequest {
                    game_session_id: id.clone(),
                    player_id: format!("rt{g}-{p}"),
                    player_data: format!("data {p}, \"q\""),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            if p % 2 == 0 {
                a.players
                    .accept_player_session(AcceptPlayerSessionRequest {
                        game_session_id: id.clone(),
                        player_session_id: ps.player_session_id,
                    })
                    .await
                    .unwrap();
            }
        }
    }
    a.games
        .end_game_session(session_broker::proto::EndGameSessionRequest {
            game_session_id: "rt-2".into(),
            reason: "over".into(),
            crashed: false,
        })
        .await
        .unwrap();
    let export = |addr| async move {
        reqwest::get(url(addr, "/v1/export?format=jsonl"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let dump = export(a.daemon.admin_addr()).await;
    // The importing daemon snapshots every few records, so its restart below goes through a
    // snapshot (jobs included) and a replay of imported records.
    let db = tempfile::tempdir().unwrap();
    let start_b = |dir: std::path::PathBuf| {
        TestDaemon::start_with(move |c| {
            let mut jc = JournalConfig::new(dir);
            jc.snapshot_every_records = 7;
            c.journal = Some(jc);
        })
    };
    let b = start_b(db.path().to_path_buf()).await;
    let (code, body) = upload(b.daemon.admin_addr(), "jsonl", dump.clone()).await;
    assert_eq!(code, 202);
    let job = body["job_id"].as_str().unwrap().to_string();
    let s = finished(b.daemon.admin_addr(), &job).await;
    assert_eq!(counts(&s), (15, 15, 0), "{s}");
    assert_eq!(export(b.daemon.admin_addr()).await, dump, "identical state");
    a.stop().await;
    b.stop().await;
    let snapshots = std::fs::read_dir(db.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot-")
        })
        .count();
    assert!(snapshots > 0, "a snapshot was taken");
    let b = start_b(db.path().to_path_buf()).await;
    assert_eq!(
        export(b.daemon.admin_addr()).await,
        dump,
        "the same after a restart"
    );
    let (_, again) = job_status(b.daemon.admin_addr(), &job).await;
    assert_eq!(again, s, "the job's status survives the restart");
    b.stop().await;
}

// kill -9 in the middle of a job.

fn spawn(dir: &Path, port: u16, admin: u16) -> common::Process {
    common::spawn_daemon(dir, port, admin, &[], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_midway_finishes_after_the_restart_with_exact_counts() {
    const ROWS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (common::free_port(), common::free_port());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let mut process = spawn(dir.path(), port, admin_port);
    common::wait_ready(admin).await;
    let mut file = String::from(
        r#"{"kind":"game_session","game_session_id":"big-1","fleet_id":"fleet-k","maximum_player_session_count":10}"#,
    );
    file.push('\n');
    for i in 0..ROWS {
        // Ids generated from the job and line: a resumed chunk must recognise its own rows.
        file.push_str(&format!(
            r#"{{"kind":"player_session","player_id":"k{i}","game_session_id":"big-1","status":"COMPLETED","creation_time":"2026-11-30T10:00:00Z"}}"#
        ));
        file.push('\n');
    }
    let (code, body) = upload(admin, "jsonl", file).await;
    assert_eq!(code, 202, "{body}");
    let job = body["job_id"].as_str().unwrap().to_string();
    // Kill it once some chunks are checkpointed, mid-job.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = job_status(admin, &job).await;
        assert_eq!(
            s["status"], "running",
            "finished before the kill: make the file larger ({s})"
        );
        if s["total"].as_u64().unwrap() >= 3000 {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    process.0.kill().unwrap();
    process.0.wait().unwrap();

    let _process = spawn(dir.path(), port, admin_port);
    common::wait_ready(admin).await;
    let s = finished(admin, &job).await;
    assert_eq!(s["status"], "completed", "{s}");
    let n = ROWS as u64 + 1;
    assert_eq!(counts(&s), (n, n, 0), "{s}");
    let fleet: Value = reqwest::get(url(admin, "/v1/fleets/fleet-k"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse::<Value>()
        .unwrap();
    assert_eq!(
        fleet["player_sessions"]["completed"].as_u64(),
        Some(ROWS as u64),
        "no row imported twice: {fleet}"
    );
    // The job reads as completed once its end is journaled; the upload goes right after.
    let leftover = || {
        std::fs::read_dir(dir.path().join("imports"))
            .unwrap()
            .count()
    };
    for _ in 0..100 {
        if leftover() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leftover(), 0, "the upload is deleted once the job finished");
}

async fn rss(admin: std::net::SocketAddr) -> u64 {
    let text = reqwest::get(url(admin, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_file_streams_through_the_cli_without_memory_growing() {
    use std::io::Write;
    const ROWS: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (common::free_port(), common::free_port());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let _process = spawn(&dir.path().join("data"), port, admin_port);
    common::wait_ready(admin).await;
    // One game session and one player session, then a million rows naming that same player
    // session: every one is a duplicate, so the state stays the same size and any memory
    // growth would be the import holding the file.
    let path = dir.path().join("big.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, r#"{{"kind":"game_session","game_session_id":"mem-1","fleet_id":"fleet-m","maximum_player_session_count":10}}"#).unwrap();
    let row = r#"{"kind":"player_session","player_session_id":"psess-2b1f6c1e-7d3a-4f5e-9a8b-0c1d2e3f4a5b","player_id":"m","game_session_id":"mem-1","player_data":"padding padding padding padding padding padding padding"}"#;
    for _ in 0..ROWS {
        writeln!(f, "{row}").unwrap();
    }
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();
    let before = rss(admin).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::BIN)
            .args(["import", "--wait", "--admin", &format!("http://{admin}")])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = ROWS as u64 + 1;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(counts(&s), (n, 2, n - 2), "status {}", s["status"]);
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1001, "1,000 kept and '... N more'");
    assert_eq!(errors[1000], format!("... {} more", n - 2 - 1000));
    let growth = rss(admin).await.saturating_sub(before);
    assert!(
        growth < size / 4,
        "RSS grew by {growth} bytes for a {size}-byte file"
    );

    // export through the CLI streams too.
    let out_path = dir.path().join("out.csv");
    let out = Command::new(common::BIN)
        .args([
            "export",
            "--format",
            "csv",
            "--admin",
            &admin.to_string(),
            "--output",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(
        csv.lines().count(),
        2,
        "header and the one player session: {csv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_can_be_cancelled_and_keeps_what_it_imported() {
    let (d, _dir) = durable().await;
    let admin = d.daemon.admin_addr();
    let mut file = String::from(
        r#"{"kind":"game_session","game_session_id":"can-1","fleet_id":"fleet-c","maximum_player_session_count":10}"#,
    );
    file.push('\n');
    for i in 0..100_000 {
        file.push_str(&format!(
            r#"{{"kind":"player_session","player_id":"c{i}","game_session_id":"can-1","status":"COMPLETED"}}"#
        ));
        file.push('\n');
    }
    let (_, body) = upload(admin, "jsonl", file).await;
    let job = body["job_id"].as_str().unwrap().to_string();
    loop {
        let (_, s) = job_status(admin, &job).await;
        assert_eq!(s["status"], "running", "finished before the cancel");
        assert!(s["finished_at"].is_null(), "null while running");
        if s["total"].as_u64().unwrap() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = reqwest::Client::new()
        .delete(url(admin, &format!("/v1/import/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let s = finished(admin, &job).await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "job failed: cancelled"),
        "{}",
        s["errors"]
    );
    let imported = s["imported"].as_u64().unwrap();
    assert!(imported > 0 && imported < 100_001, "{imported}");
    let fleet: Value = reqwest::get(url(admin, "/v1/fleets/fleet-c"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        fleet["player_sessions"]["completed"].as_u64(),
        Some(imported - 1),
        "what it imported stays"
    );
    d.stop().await;
}
