//! Shared helpers: start the real daemon on ephemeral ports and connect generated clients.
#![allow(dead_code)]

use session_broker::{
    config::Config,
    proto::{
        game_session_service_client::GameSessionServiceClient,
        player_session_service_client::PlayerSessionServiceClient, GameSession,
        RegisterGameSessionRequest,
    },
    Daemon,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct TestDaemon {
    pub daemon: Daemon,
    pub shutdown: CancellationToken,
    pub games: GameSessionServiceClient<Channel>,
    pub players: PlayerSessionServiceClient<Channel>,
    pub channel: Channel,
}

impl TestDaemon {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::ephemeral();
        f(&mut config);
        let shutdown = CancellationToken::new();
        let daemon = session_broker::start(config, shutdown.clone())
            .await
            .expect("daemon starts");
        let channel = Channel::from_shared(format!("http://{}", daemon.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .expect("client connects");
        TestDaemon {
            daemon,
            shutdown,
            games: GameSessionServiceClient::new(channel.clone()),
            players: PlayerSessionServiceClient::new(channel.clone()),
            channel,
        }
    }

    /// A daemon with a sync journal in `dir`.
    pub async fn start_durable(dir: &std::path::Path) -> Self {
        let dir = dir.to_path_buf();
        Self::start_with(move |c| {
            c.journal = Some(session_broker::journal::JournalConfig::new(dir));
        })
        .await
    }

    pub async fn register(&mut self, id: &str, max: u32) -> GameSession {
        let max = if max == 0 { 2 } else { max };
        self.games
            .register_game_session(register_request(id, max))
            .await
            .expect("register")
            .into_inner()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.daemon.wait().await.expect("clean stop");
    }
}

pub fn register_request(id: &str, max: u32) -> RegisterGameSessionRequest {
    RegisterGameSessionRequest {
        fleet_id: "fleet-1".into(),
        game_session_id: id.into(),
        name: format!("match {id}"),
        ip_address: "10.1.2.3".into(),
        port: 7777,
        maximum_player_session_count: max,
        labels: [("map".to_string(), "dust".to_string())].into(),
        release: "1.4.2".into(),
        environment: "production".into(),
        reservation_timeout_seconds: 0,
        heartbeat_timeout_seconds: 0,
    }
}

/// Keeps tokio's paused clock from auto-advancing while the test waits on real network I/O:
/// a running blocking task inhibits auto-advance, so only `tokio::time::advance` moves time.
pub struct HoldClock(Option<std::sync::mpsc::Sender<()>>);

impl HoldClock {
    pub fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        HoldClock(Some(tx))
    }
}

impl Drop for HoldClock {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// A plain HTTP/1.1 GET against the admin port: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_session-broker");

/// A daemon process of the built binary; killed (like `kill -9`) when dropped, so a failing
/// assertion never leaves it running.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: the kernel may hand a just-released
    // port out again, and a daemon given one port for both listeners cannot start.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Starts the built binary on `data_dir` with gRPC on `port`, the admin port on `admin`, quiet
/// logs, and `extra` flags and environment.
pub fn spawn_daemon(
    data_dir: &std::path::Path,
    port: u16,
    admin: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log-level", "error"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Process(cmd.spawn().unwrap())
}

/// Waits until the admin port at `admin` answers `/readyz` with 200 (recovery done).
pub async fn wait_ready(admin: std::net::SocketAddr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not come up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
