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
}

impl Server {
    fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sb-bin-{port}"));
        let child = Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, url }
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
    let g = s.json(&[
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
        "--label",
        "map=dust2",
    ]);
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

    let end = s.json(&["game-sessions", "end", "match-1", "--reason", "match over"]);
    assert_eq!(end["status"], "TERMINATED");

    let status = s.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}

#[test]
fn invalid_flags_exit_non_zero_with_a_reason() {
    for args in [
        vec!["--reservation-timeout", "forever"],
        vec!["--listen", "not-an-address"],
        vec!["--reservation-timeout", "0s"],
        vec!["--log-format", "xml"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.trim().is_empty(), "{args:?}: a reason is printed");
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
