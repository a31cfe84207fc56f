//! kill -9 under load: start the real binary, drive concurrent reserve/accept/remove, SIGKILL it
//! at a random moment, restart on the same data directory, and check that every acknowledged
//! change is there with the right status and that capacity counts are right. Repeated.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use session_broker::proto::{
    game_session_service_client::GameSessionServiceClient,
    player_session_service_client::PlayerSessionServiceClient, AcceptPlayerSessionRequest,
    CreatePlayerSessionRequest, DescribePlayerSessionsRequest, GetGameSessionRequest,
    PlayerSessionStatus, RegisterGameSessionRequest, RemovePlayerSessionRequest,
};
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_session-broker");
const GAMES: usize = 6;
const SEATS: u32 = 25;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the daemon when dropped, so a failing assertion never leaves it running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, port: u16) -> Daemon {
    spawn_with(dir, port, &[])
}

fn spawn_with(dir: &Path, port: u16, extra: &[&str]) -> Daemon {
    Daemon(
        Command::new(BIN)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn connect(port: u16) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers the game sessions `crash-0..GAMES` of `fleet`.
async fn register_games(channel: &Channel, fleet: &str) -> GameSessionServiceClient<Channel> {
    let mut games = GameSessionServiceClient::new(channel.clone());
    for g in 0..GAMES {
        games
            .register_game_session(RegisterGameSessionRequest {
                fleet_id: fleet.into(),
                game_session_id: format!("crash-{g}"),
                maximum_player_session_count: SEATS,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    games
}

/// Rank in the state machine, to compare acknowledged and recovered statuses.
fn rank(s: i32) -> i32 {
    match PlayerSessionStatus::try_from(s).unwrap() {
        PlayerSessionStatus::Reserved => 0,
        PlayerSessionStatus::Active => 1,
        _ => 2,
    }
}

#[derive(Default)]
struct Acks {
    /// Last acknowledged status and the status an unanswered call was moving it to.
    sessions: HashMap<String, (String, i32, Option<i32>)>,
}

async fn load(channel: Channel, worker: usize, acks: Arc<Mutex<Acks>>) {
    let mut players = PlayerSessionServiceClient::new(channel);
    for i in 0.. {
        let gs = format!("crash-{}", (worker + i) % GAMES);
        let reserve = players
            .create_player_session(CreatePlayerSessionRequest {
                game_session_id: gs.clone(),
                player_id: format!("w{worker}-p{i}"),
                player_data: String::new(),
                idempotency_key: String::new(),
            })
            .await;
        let ps = match reserve {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == tonic::Code::ResourceExhausted => continue,
            Err(_) => return, // the daemon died
        };
        let id = ps.player_session_id.clone();
        acks.lock()
            .unwrap()
            .sessions
            .insert(id.clone(), (gs.clone(), ps.status, None));
        let step = |target: i32| {
            let acks = acks.clone();
            let id = id.clone();
            move || acks.lock().unwrap().sessions.get_mut(&id).unwrap().2 = Some(target)
        };
        if i % 3 != 0 {
            step(PlayerSessionStatus::Active as i32)();
            match players
                .accept_player_session(AcceptPlayerSessionRequest {
                    game_session_id: gs.clone(),
                    player_session_id: id.clone(),
                })
                .await
            {
                Ok(r) => {
                    acks.lock()
                        .unwrap()
                        .sessions
                        .insert(id.clone(), (gs.clone(), r.into_inner().status, None));
                }
                Err(_) => return,
            }
        }
        if i % 2 == 0 {
            step(PlayerSessionStatus::Completed as i32)();
            match players
                .remove_player_session(RemovePlayerSessionRequest {
                    game_session_id: gs.clone(),
                    player_session_id: id.clone(),
                })
                .await
            {
                Ok(r) => {
                    acks.lock()
                        .unwrap()
                        .sessions
                        .insert(id.clone(), (gs.clone(), r.into_inner().status, None));
                }
                Err(_) => return,
            }
        }
    }
}

/// Checks the recovered state against the acknowledgements; returns each session's status.
async fn verify(channel: Channel, acks: &Acks) -> HashMap<String, i32> {
    let mut recovered = HashMap::new();
    let mut players = PlayerSessionServiceClient::new(channel.clone());
    let mut games = GameSessionServiceClient::new(channel);
    for (id, (_, acked, in_flight)) in &acks.sessions {
        let found = players
            .describe_player_sessions(DescribePlayerSessionsRequest {
                player_session_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .player_sessions;
        assert_eq!(found.len(), 1, "acknowledged reservation {id} lost");
        let status = found[0].status;
        let ok = status == *acked || Some(status) == *in_flight;
        assert!(
            ok,
            "{id}: acknowledged {acked}, in flight {in_flight:?}, recovered {status}"
        );
        assert!(rank(status) >= rank(*acked), "{id} went backwards");
        recovered.insert(id.clone(), status);
    }
    for g in 0..GAMES {
        let gs = format!("crash-{g}");
        let mut live = 0;
        let mut token = String::new();
        loop {
            let page = players
                .describe_player_sessions(DescribePlayerSessionsRequest {
                    game_session_id: gs.clone(),
                    limit: 1024,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            live += page
                .player_sessions
                .iter()
                .filter(|p| rank(p.status) < 2)
                .count() as u32;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let game = games
            .get_game_session(GetGameSessionRequest {
                game_session_id: gs.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(game.current_player_session_count, live, "{gs} count");
        assert!(live <= SEATS);
    }
    recovered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let channel = connect(port).await;
    let mut games = register_games(&channel, "fleet-crash").await;
    // A reservation that must time out at its original deadline after the restarts.
    games
        .register_game_session(RegisterGameSessionRequest {
            fleet_id: "fleet-crash".into(),
            game_session_id: "deadline".into(),
            maximum_player_session_count: 1,
            reservation_timeout_seconds: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let waiting = PlayerSessionServiceClient::new(channel.clone())
        .create_player_session(CreatePlayerSessionRequest {
            game_session_id: "deadline".into(),
            player_id: "late-player".into(),
            player_data: String::new(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for round in 0..3 {
        let channel = connect(port).await;
        let workers: Vec<_> = (0..16)
            .map(|w| tokio::spawn(load(channel.clone(), w + round * 16, acks.clone())))
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(250 + (seed >> 33) % 500);
        tokio::time::sleep(run_for).await;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        for w in workers {
            let _ = w.await;
        }
        // Every other daemon writes with direct I/O: kills land under both write paths, and
        // each replays what the other wrote.
        let direct = if round.is_multiple_of(2) {
            "true"
        } else {
            "false"
        };
        child = spawn_with(dir.path(), port, &["--journal-direct-io", direct]);
        let channel = connect(port).await;
        let snapshot = {
            let a = acks.lock().unwrap();
            Acks {
                sessions: a.sessions.clone(),
            }
        };
        assert!(
            !snapshot.sessions.is_empty(),
            "round {round}: the load made progress"
        );
        let recovered = verify(channel, &snapshot).await;
        // Unanswered calls are resolved now: what the daemon has is the new baseline.
        for (id, v) in acks.lock().unwrap().sessions.iter_mut() {
            if let Some(status) = recovered.get(id) {
                *v = (v.0.clone(), *status, None);
            }
        }
    }

    // The reservation made before the first kill times out at its original deadline.
    let deadline = waiting.reservation_deadline.unwrap();
    let mut players = PlayerSessionServiceClient::new(connect(port).await);
    let give_up = Instant::now() + Duration::from_secs(15);
    loop {
        let p = players
            .describe_player_sessions(DescribePlayerSessionsRequest {
                player_session_id: waiting.player_session_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .player_sessions
            .remove(0);
        if p.status == PlayerSessionStatus::Timedout as i32 {
            assert_eq!(
                p.termination_time,
                Some(deadline),
                "terminated at the original deadline"
            );
            break;
        }
        assert!(Instant::now() < give_up, "reservation never timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_exits_zero_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let channel = connect(port).await;
    register_games(&channel, "fleet-term").await;
    let acks = Arc::new(Mutex::new(Acks::default()));
    let workers: Vec<_> = (0..16)
        .map(|w| tokio::spawn(load(channel.clone(), w, acks.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "no exit within the grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    for w in workers {
        let _ = w.await;
    }
    let snapshot = {
        let a = acks.lock().unwrap();
        Acks {
            sessions: a.sessions.clone(),
        }
    };
    assert!(!snapshot.sessions.is_empty());
    child = spawn(dir.path(), port);
    verify(connect(port).await, &snapshot).await;
    drop(child);
}
