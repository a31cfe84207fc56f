//! The built binary as a user runs it: the README tour through the CLI, SIGTERM, bad flags.

use std::{
    net::TcpListener,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_session-broker");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
    admin_port: u16,
    /// A fresh data dir per server, deleted afterwards (a reused port must not find old state).
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Started with `extra` flags.
    fn start_with(extra: &[&str]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(BIN)
            .args(extra)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            url,
            admin_port,
            _dir: dir,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--server", &self.url])
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `game-sessions register` of `match-1` (4 seats, fleet `fleet-eu`) with `extra` flags.
    fn register_match_1(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "game-sessions",
            "register",
            "--fleet-id",
            "fleet-eu",
            "--game-session-id",
            "match-1",
            "--max-players",
            "4",
            "--ip-address",
            "10.0.0.5",
            "--port",
            "7777",
        ];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// GET on the admin port; the JSON body.
    fn admin_get(&self, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap()
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn readme_tour_through_the_cli_then_sigterm() {
    let s = Server::start();
    let g = s.register_match_1(&["--label", "map=dust2", "--release", "1.4.2"]);
    assert_eq!(g["status"], "ACTIVE");
    assert_eq!(g["labels"]["map"], "dust2");

    let r = s.json(&[
        "player-sessions",
        "reserve",
        "--game-session-id",
        "match-1",
        "alice",
        "bob",
        "--player-data",
        "alice=lvl10",
    ]);
    let sessions = r["player_sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["player_data"], "lvl10");
    let alice = sessions[0]["player_session_id"]
        .as_str()
        .unwrap()
        .to_string();

    let a = s.json(&[
        "player-sessions",
        "accept",
        "--game-session-id",
        "match-1",
        &alice,
    ]);
    assert_eq!(a["player_sessions"][0]["status"], "ACTIVE");
    let rm = s.json(&[
        "player-sessions",
        "remove",
        "--game-session-id",
        "match-1",
        &alice,
    ]);
    assert_eq!(rm["player_sessions"][0]["status"], "COMPLETED");
    let h = s.json(&["health", "release", "1.4.2"]);
    assert_eq!(
        (h["total"].as_u64(), h["exited"].as_u64()),
        (Some(2), Some(1)),
        "{h}"
    );
    assert_eq!(h["crash_free_rate"], 1.0);

    let list = s.json(&[
        "player-sessions",
        "list",
        "--game-session-id",
        "match-1",
        "--limit",
        "1",
        "--all",
    ]);
    assert_eq!(list["player_sessions"].as_array().unwrap().len(), 2);

    // Tables for humans.
    let out = s.cli(&["player-sessions", "list", "--player-id", "bob"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("PLAYER_SESSION_ID"), "{text}");
    assert!(text.contains("RESERVED"));

    // Errors exit non-zero with the code and message.
    let out = s.cli(&[
        "player-sessions",
        "accept",
        "--game-session-id",
        "match-1",
        &alice,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("FailedPrecondition") && err.contains("COMPLETED"),
        "{err}"
    );

    // The matchmaker's calls.
    let found = s.json(&[
        "fleets",
        "search",
        "--fleet-id",
        "fleet-eu",
        "--filter",
        "hasAvailablePlayerSessions=true AND gameSessionProperties.map='dust2'",
        "--sort",
        "playerSessionCount DESC",
    ]);
    assert_eq!(found["game_sessions"][0]["game_session_id"], "match-1");
    let u = s.json(&["fleets", "utilization", "fleet-eu"]);
    assert_eq!(u["fleet_utilization"][0]["current_player_session_count"], 1);
    assert_eq!(
        u["fleet_utilization"][0]["available_player_session_count"],
        3
    );
    let out = s.cli(&[
        "fleets",
        "search",
        "--fleet-id",
        "fleet-eu",
        "--filter",
        "maximumSessions > 'x'",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("InvalidArgument") && err.contains("at position 19"),
        "{err}"
    );
    // A watch prints the snapshot, then each change, one JSON line each.
    let mut watch = Command::new(BIN)
        .args([
            "fleets",
            "watch",
            "--fleet-id",
            "fleet-eu",
            "--json",
            "--server",
            &s.url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["type"], "SNAPSHOT");
    assert_eq!(next()["type"], "SNAPSHOT_COMPLETE");
    let placed = s.json(&[
        "fleets",
        "place",
        "--fleet-id",
        "fleet-eu",
        "carol",
        "dave",
        "--strategy",
        "distributed",
    ]);
    assert_eq!(placed["player_sessions"].as_array().unwrap().len(), 2);
    let changed = next();
    assert_eq!(changed["type"], "UPDATED");
    assert_eq!(changed["game_session"]["current_player_session_count"], 3);
    watch.kill().unwrap();
    watch.wait().unwrap();

    let end = s.json(&["game-sessions", "end", "match-1", "--reason", "match over"]);
    assert_eq!(end["status"], "TERMINATED");

    let status = s.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}

#[test]
fn sigterm_does_not_wait_for_connections_that_never_said_hello() {
    use std::io::Write;
    // Handshake deadlines far beyond the test: only closing such connections at shutdown lets
    // the daemon stop in time.
    let s = Server::start_with(&["--handshake-timeout", "5m", "--shutdown-grace", "1m"]);
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut held = Vec::new();
    for p in [port, s.admin_port] {
        held.push(std::net::TcpStream::connect(("127.0.0.1", p)).unwrap());
        let mut partial = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        partial.write_all(b"PRI * HTTP").unwrap();
        held.push(partial);
    }
    // A real client's work is not cut short.
    let g = s.register_match_1(&[]);
    assert_eq!(g["status"], "ACTIVE");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = s.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain waited {:?} for connections with no calls",
        started.elapsed()
    );
    drop(held);
}

#[test]
fn invalid_flags_exit_non_zero_with_a_reason() {
    for args in [
        vec!["--reservation-timeout", "forever"],
        vec!["--listen", "not-an-address"],
        vec!["--reservation-timeout", "0s"],
        vec!["--log-format", "xml"],
        vec!["--sentry-dsn", "https://sentry.example.com/1"],
        vec!["--sentry-mode", "sometimes"],
        vec!["--watch-buffer", "0"],
        vec!["--analytics-batch-size", "0"],
        vec!["--analytics-max-in-flight", "100"],
        vec![
            "--segment-write-key",
            "k",
            "--analytics-sink",
            "segment",
            "--segment-endpoint",
            "ftp://x",
        ],
        vec!["--analytics-sink", "kafka"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.trim().is_empty(), "{args:?}: a reason is printed");
        if args[0] != "--listen" && args[0] != "--reservation-timeout" {
            let named = if args[0] == "--segment-write-key" {
                "--segment-endpoint"
            } else {
                args[0]
            };
            let flag = named.trim_start_matches("--").replace('-', "_");
            assert!(
                err.contains(named) || err.contains(&flag),
                "{args:?}: the reason names the flag: {err}"
            );
        }
    }
}

#[test]
fn help_documents_defaults_and_env() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "127.0.0.1:50051",
        "SESSION_BROKER_LISTEN",
        "60s",
        "30d",
        "SESSION_BROKER_DATA_DIR",
    ] {
        assert!(help.contains(want), "--help lacks {want}:\n{help}");
    }
}

/// Runs `session-broker bench ... --json` and returns its report.
fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args([
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--game-sessions",
            "20",
            "--json",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

/// The CI smoke run of the load generator: every scenario against its own daemons, figures
/// printed. Asserts that it works and reports, never how fast.
#[test]
fn bench_runs_every_scenario_and_reports_ratios_to_echo() {
    let report = bench(&[
        "--scenario",
        "all,sweep,growth",
        "--sweep-sessions",
        "2000",
        "--sweep-timeout",
        "3s",
        "--growth-steps",
        "1000,3000",
        "--fleet-game-sessions",
        "200",
    ]);
    assert_eq!(report["durability"], "sync");
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "echo", "reserve", "cycle", "batch", "describe", "mixed", "place", "search", "sweep",
            "growth"
        ]
    );
    for s in scenarios {
        let name = &s["scenario"];
        assert!(s["calls"].as_u64().unwrap() > 0, "{name}: no calls: {s}");
        assert_eq!(s["errors"], 0, "{name}: {s}");
        assert!(s["throughput_vs_echo"].as_f64().unwrap() > 0.0, "{name}");
        for q in ["p50", "p90", "p99", "p99_9"] {
            assert!(s["latency_us"][q].as_f64().unwrap() > 0.0, "{name} {q}");
        }
    }
    assert_eq!(scenarios[0]["throughput_vs_echo"], 1.0);
    for s in &scenarios[6..8] {
        assert!(s["p50_vs_reserve"].as_f64().unwrap() > 0.0, "{s}");
    }
    let sweep = &scenarios[8];
    assert_eq!(sweep["sweep_sessions"], 2000);
    assert!(sweep["all_timed_out_after_first_deadline_secs"].is_number());
    assert!(sweep["cycle_p99_burst_ratio"].as_f64().unwrap() > 0.0);
    let steps = scenarios[9]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1]["live_sessions"], 3000);
    assert!(steps[1]["rss_growth_per_session_bytes"].is_number());
}

/// `--security both`: each scenario on a plain and on a TLS + auth daemon side by side, loaded
/// in turns, the secure run reported as a ratio to the plain one (no timing asserted).
#[test]
fn bench_compares_a_secure_daemon_with_a_plain_one() {
    let report = bench(&[
        "--scenario",
        "reserve,cycle",
        "--security",
        "both",
        "--turn",
        "100ms",
    ]);
    assert_eq!(report["security"], "both");
    assert_eq!(report["turn_secs"], 0.1);
    let names: Vec<&str> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["echo", "reserve", "reserve+secure", "cycle", "cycle+secure"]
    );
    for s in report["scenarios"].as_array().unwrap() {
        assert_eq!(s["errors"], 0, "{s}");
        if s["secure"] == true {
            assert!(s["throughput_vs_plain"].as_f64().unwrap() > 0.0, "{s}");
        }
    }
}

/// The rows of an A/B run of `reserve`: echo, the first daemon, the versus daemon (returned),
/// which made no errors and has its throughput as a ratio to the first's.
fn assert_reserve_ab_run(report: &serde_json::Value) -> &serde_json::Value {
    let scenarios = report["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "reserve", "reserve+versus"]);
    let versus = &scenarios[2];
    assert_eq!(versus["errors"], 0);
    assert!(versus["throughput_vs_plain"].as_f64().unwrap() > 0.0);
    versus
}

/// `--versus-arg`: an A/B run of two daemons whose flags differ, loaded in turns, the second
/// reported as ratios to the first; `--daemon-arg` reaches both (a bad flag stops the run).
#[test]
fn bench_compares_two_daemon_configurations() {
    let report = bench(&[
        "--scenario",
        "reserve",
        "--turn",
        "100ms",
        "--daemon-arg=--journal-commit-siblings=2",
        "--versus-arg=--journal-commit-delay=0s",
    ]);
    assert_eq!(report["turn_secs"], 0.1);
    assert_eq!(
        report["daemon_args"],
        serde_json::json!(["--journal-commit-siblings=2"])
    );
    assert_eq!(
        report["versus_args"],
        serde_json::json!(["--journal-commit-delay=0s"])
    );
    let versus = assert_reserve_ab_run(&report);
    assert!(versus["p99_vs_plain"].as_f64().unwrap() > 0.0);

    for flag in [
        "--versus-arg=--journal-commit-delay=1s",
        "--daemon-arg=--no-such-flag",
        "--versus-binary=/no/such/session-broker",
    ] {
        let out = Command::new(BIN)
            .args([
                "bench",
                "--scenario",
                "reserve",
                "--duration",
                "1s",
                "--json",
                flag,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} accepted");
    }
}

/// `--versus-binary`: an A/B run of two builds; the second daemon is the given binary (here a
/// script that notes how it was started, then runs this build).
#[test]
fn bench_compares_two_builds() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (other, started) = (dir.path().join("other-build"), dir.path().join("started"));
    std::fs::write(
        &other,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{BIN}' \"$@\"\n",
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = bench(&[
        "--scenario",
        "reserve",
        "--turn",
        "100ms",
        "--versus-binary",
        other.to_str().unwrap(),
    ]);
    assert_eq!(report["versus_binary"], other.to_str().unwrap());
    assert_eq!(report["turn_secs"], 0.1);
    assert_reserve_ab_run(&report);
    // Only the versus daemon ran the other build.
    let runs = std::fs::read_to_string(&started).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");
    assert!(runs.starts_with("serve "), "{runs}");
}

/// `--target` loads a daemon someone else started, and ends the game sessions it registered.
#[test]
fn bench_loads_a_running_daemon_with_target() {
    let s = Server::start();
    let report = bench(&["--target", &s.url, "--scenario", "reserve"]);
    let reserve = &report["scenarios"][1];
    assert_eq!(reserve["scenario"], "reserve");
    assert!(reserve["calls"].as_u64().unwrap() > 0);
    // Everything the bench registered was ended afterwards.
    let fleets = s.admin_get("/v1/fleets");
    let fleets = fleets["fleets"].as_array().unwrap();
    let bench_fleet = fleets
        .iter()
        .find(|f| f["fleet_id"].as_str().unwrap().ends_with("-reserve"))
        .expect("the bench's fleet");
    assert_eq!(bench_fleet["game_sessions"]["active"], 0, "{bench_fleet}");
    assert_eq!(
        bench_fleet["game_sessions"]["terminated"], 20,
        "{bench_fleet}"
    );
    assert_eq!(
        bench_fleet["player_sessions"]["reserved"], 0,
        "{bench_fleet}"
    );
    let status = s.terminate();
    assert!(status.success());
}
