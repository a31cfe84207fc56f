//! Configuration: file < environment < flags layering, rejection of bad files, per-fleet
//! settings applied to registrations.

mod common;

use std::{process::Command, time::Duration};

use common::{register_request, TestDaemon};
use session_broker::{config::FleetSettings, domain::FleetId};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_session-broker");

fn print(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["config", "print"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn value<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing from\n{toml}"))
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sb.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:6001\"\nreservation_timeout = \"45s\"\nretention = \"7d\"\n\
         log_format = \"json\"\n\n[fleets.fleet-eu]\nmax_players = 16\nenvironment = \"production\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err) = print(&["--config", f], &[]);
    assert!(ok, "{err}");
    assert_eq!(
        value(&out, "listen"),
        "\"127.0.0.1:6001\"",
        "file over default"
    );
    assert_eq!(value(&out, "reservation_timeout"), "\"45s\"");
    assert_eq!(value(&out, "log_format"), "\"json\"");
    assert_eq!(
        value(&out, "admin_listen"),
        "\"127.0.0.1:8080\"",
        "default kept"
    );
    assert!(
        out.contains("[fleets.fleet-eu]") && out.contains("max_players = 16"),
        "{out}"
    );

    let (ok, out, _) = print(
        &["--config", f, "--listen", "127.0.0.1:6003"],
        &[
            ("SESSION_BROKER_RESERVATION_TIMEOUT", "20s"),
            ("SESSION_BROKER_LISTEN", "127.0.0.1:6002"),
        ],
    );
    assert!(ok);
    assert_eq!(
        value(&out, "reservation_timeout"),
        "\"20s\"",
        "environment over file"
    );
    assert_eq!(
        value(&out, "listen"),
        "\"127.0.0.1:6003\"",
        "flag over environment"
    );
    assert_eq!(value(&out, "retention"), "\"7days\"", "file value kept");
    assert_eq!(value(&out, "journal_commit_delay"), "\"200us\"", "default");
    assert_eq!(value(&out, "max_connections"), "10000", "default");
    assert_eq!(value(&out, "max_admin_connections"), "1024", "default");
    assert_eq!(
        value(&out, "max_connections_per_address"),
        "1000",
        "default"
    );
    assert_eq!(
        value(&out, "max_admin_connections_per_address"),
        "128",
        "default"
    );
    assert_eq!(value(&out, "handshake_timeout"), "\"10s\"", "default");
    assert_eq!(value(&out, "keepalive_interval"), "\"1m\"", "default");
    assert_eq!(value(&out, "keepalive_timeout"), "\"20s\"", "default");

    // A boolean setting layers the same way.
    let bools = dir.path().join("bools.toml");
    std::fs::write(&bools, "grpc_batch_writes = false\n").unwrap();
    let b = bools.to_str().unwrap();
    let (ok, out, _) = print(&[], &[]);
    assert!(ok);
    assert_eq!(value(&out, "grpc_batch_writes"), "true", "default");
    let (ok, out, _) = print(&["--config", b], &[]);
    assert!(ok);
    assert_eq!(
        value(&out, "grpc_batch_writes"),
        "false",
        "file over default"
    );
    let env = [("SESSION_BROKER_GRPC_BATCH_WRITES", "true")];
    let (ok, out, _) = print(&["--config", b], &env);
    assert!(ok);
    assert_eq!(
        value(&out, "grpc_batch_writes"),
        "true",
        "environment over file"
    );
    let (ok, out, _) = print(&["--config", b, "--grpc-batch-writes=false"], &env);
    assert!(ok);
    assert_eq!(
        value(&out, "grpc_batch_writes"),
        "false",
        "flag over environment"
    );

    // A per-address limit of 0 (none) is a valid setting, in a file or the environment.
    let open = dir.path().join("open.toml");
    std::fs::write(&open, "max_connections_per_address = 0\n").unwrap();
    let (ok, out, err) = print(
        &["--config", open.to_str().unwrap()],
        &[("SESSION_BROKER_MAX_ADMIN_CONNECTIONS_PER_ADDRESS", "0")],
    );
    assert!(ok, "{err}");
    assert_eq!(value(&out, "max_connections_per_address"), "0");
    assert_eq!(value(&out, "max_admin_connections_per_address"), "0");

    // The config file itself can come from the environment.
    let (ok, out, _) = print(&[], &[("SESSION_BROKER_CONFIG", f)]);
    assert!(ok);
    assert_eq!(value(&out, "listen"), "\"127.0.0.1:6001\"");
}

#[test]
fn bad_files_and_values_are_rejected_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (content, expect) in [
        ("bogus = 1\n", "unknown field `bogus`"),
        ("retention = \"forever\"\n", "--retention"),
        ("durability = \"sometimes\"\n", "--durability"),
        ("listen = \"nowhere\"\n", "--listen"),
        ("[fleets.fleet-eu]\nmax_players = 5000\n", "max_players"),
        (
            "[fleets.fleet-eu]\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
        ("reservation_timeout = \"0s\"\n", "--reservation-timeout"),
        ("max_in_flight = 0\n", "--max-in-flight"),
        ("max_connections = 0\n", "--max-connections"),
        ("max_admin_connections = 0\n", "--max-admin-connections"),
        (
            "keepalive_interval = \"1ms\"\n",
            "--keepalive-interval: must be 0s (off) or at least 10ms",
        ),
        (
            "handshake_timeout = \"1h\"\n",
            "--handshake-timeout: must be between 10ms and 10m",
        ),
        (
            "journal_commit_delay = \"20ms\"\n",
            "--journal-commit-delay: must be at most 10ms",
        ),
        (
            "max_watch_streams_per_token = 0\n",
            "--max-watch-streams-per-token",
        ),
        ("max_request_bytes = \"10\"\n", "--max-request-bytes"),
        (
            "tls_cert = \"/tmp/cert.pem\"\n",
            "--tls-cert: needs --tls-key",
        ),
        ("tls_client_ca = \"/tmp/ca.pem\"\n", "--tls-client-ca"),
        (
            "auth_file = \"/nonexistent/auth.toml\"\n",
            "/nonexistent/auth.toml",
        ),
        (
            "listen = \"0.0.0.0:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
            "--allow-unauthenticated",
        ),
        ("listen = [\n", "TOML parse error"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, content).unwrap();
        let out = Command::new(BIN)
            .args(["--config", file.to_str().unwrap(), "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{content:?} accepted");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expect), "{content:?}: {err}");
    }
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/sb.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn fleet_settings_apply_to_registrations() {
    let mut d = TestDaemon::start_with(|c| {
        c.store.fleets.insert(
            FleetId::parse("f", "fleet-eu").unwrap(),
            FleetSettings {
                reservation_timeout: Some(Duration::from_secs(30)),
                heartbeat_timeout: Some(Duration::from_secs(20)),
                max_players: Some(16),
                environment: Some("production".into()),
            },
        );
    })
    .await;
    let mut req = register_request("eu-1", 0);
    req.fleet_id = "fleet-eu".into();
    req.environment = String::new();
    let g = d
        .games
        .register_game_session(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            g.maximum_player_session_count,
            g.reservation_timeout_seconds,
            g.heartbeat_timeout_seconds
        ),
        (16, 30, 20)
    );
    assert_eq!(g.environment, "production");
    req.game_session_id = "eu-2".into();
    req.maximum_player_session_count = 17;
    let e = d
        .games
        .register_game_session(req.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("maximum_player_session_count"));
    // Explicit values within the limit win over the fleet defaults.
    req.maximum_player_session_count = 8;
    req.reservation_timeout_seconds = 90;
    let g = d
        .games
        .register_game_session(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            g.maximum_player_session_count,
            g.reservation_timeout_seconds
        ),
        (8, 90)
    );
    // Other fleets keep the daemon defaults.
    let g = d.register("other-1", 0).await;
    assert_eq!(g.reservation_timeout_seconds, 60);
    d.stop().await;
}

#[test]
fn the_segment_write_key_is_required_and_never_printed() {
    let (ok, _, err) = print(&["--analytics-sink", "segment"], &[]);
    assert!(!ok);
    assert!(err.contains("--segment-write-key"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "wk_from_file\n").unwrap();
    let (ok, out, err) = print(
        &[
            "--analytics-sink",
            "segment",
            "--segment-write-key-file",
            key_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(!out.contains("wk_from_file"));
    assert_eq!(value(&out, "analytics_sink"), "\"segment\"");
    let (ok, out, err) = print(
        &["--analytics-sink", "segment"],
        &[("SESSION_BROKER_SEGMENT_WRITE_KEY", "wk_secret_env")],
    );
    assert!(ok, "{err}");
    assert!(
        !out.contains("wk_secret_env"),
        "the key is never printed:\n{out}"
    );
    assert_eq!(value(&out, "analytics_batch_size"), "250");
    assert_eq!(value(&out, "analytics_flush_interval"), "\"1s\"");
}
