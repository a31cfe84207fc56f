//! Shared by the bench binaries: RPC throughput against an in-process daemon.
#![allow(dead_code)]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use session_broker::{
    config::Config,
    proto::{
        game_session_service_client::GameSessionServiceClient,
        player_session_service_client::PlayerSessionServiceClient, CreatePlayerSessionRequest,
        RegisterGameSessionRequest,
    },
};
use tokio_util::sync::CancellationToken;

/// A numeric setting from the environment, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's resident set size in bytes (0 where /proc is missing).
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A registration of `id` in fleet `bench` with `max` seats and day-long reservations.
pub fn registration(id: &str, max: u32) -> session_broker::domain::RegisterGameSession {
    use session_broker::domain::{FleetId, GameSessionId};
    session_broker::domain::RegisterGameSession {
        fleet_id: FleetId::parse("f", "bench").unwrap(),
        game_session_id: Some(GameSessionId::parse("g", id).unwrap()),
        name: String::new(),
        ip_address: "10.0.0.1".into(),
        port: 7777,
        maximum_player_session_count: max,
        labels: Default::default(),
        release: "1.0".into(),
        environment: "bench".into(),
        reservation_timeout: Some(Duration::from_secs(86_400)),
        heartbeat_timeout: None,
    }
}

/// A store recovered from `dir` (empty: a fresh one) with its journal writer started, as the
/// daemon opens it; and how long recovery took.
pub fn open_store(
    dir: &std::path::Path,
    durability: session_broker::journal::Durability,
) -> (Arc<session_broker::store::Store>, Duration) {
    use session_broker::{
        domain::Clock,
        journal::{recovery, Journal, JournalConfig},
        store::{Store, StoreConfig},
    };
    let jc = JournalConfig {
        durability,
        ..JournalConfig::new(dir)
    };
    let journal = Journal::new(durability);
    let store = Arc::new(Store::new(
        Clock::system(),
        StoreConfig::default(),
        journal.clone(),
    ));
    let started = Instant::now();
    let rec = recovery::recover(&jc, &store).unwrap();
    journal
        .start(&jc, &rec, Arc::new(|m| panic!("{m}")))
        .unwrap();
    let rebuild = Instant::now();
    store.finish_recovery();
    if std::env::var_os("SB_BENCH_PHASES").is_some() {
        // Recovery's two phases: reading and applying, then rebuilding indexes and timers.
        println!(
            "  recovery {:.3}s, then rebuilding indexes and timers {:.3}s",
            (rebuild - started).as_secs_f64(),
            rebuild.elapsed().as_secs_f64()
        );
    }
    (store, started.elapsed())
}

/// A daemon config with state in memory only, or with a journal in `dir`.
pub fn config(journal: Option<session_broker::journal::JournalConfig>) -> Config {
    let mut c = Config::ephemeral();
    c.journal = journal;
    c
}

/// Closed-loop CreatePlayerSession callers on a daemon started in this process; they call
/// while `gate` holds `me` (or [`ALL`]) and stop when `stop` is set.
struct Loaded {
    shutdown: CancellationToken,
    daemon: session_broker::Daemon,
    done: Arc<AtomicU64>,
    /// Calls that failed: a figure with any is not a throughput figure.
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Game sessions of 1,000 seats each that [`load`] registers: seats for ~50 s at 40,000
/// reservations a second (a run that fills them would measure failures).
const GAMES: u64 = 2048;

/// A [`Loaded`] gate value: every daemon's callers call (also how they are released to stop).
const ALL: usize = usize::MAX;

async fn load(
    mut config: Config,
    clients: usize,
    me: usize,
    gate: &tokio::sync::watch::Receiver<usize>,
    stop: &Arc<AtomicBool>,
) -> Loaded {
    config.store.reservation_timeout = Duration::from_secs(86_400);
    let shutdown = CancellationToken::new();
    let daemon = session_broker::start(config, shutdown.clone())
        .await
        .unwrap();
    let url = format!("http://{}", daemon.grpc_addr());
    let channels: Vec<_> = futures_connect(&url, 4).await;
    let mut games = GameSessionServiceClient::new(channels[0].clone());
    for g in 0..GAMES {
        games
            .register_game_session(RegisterGameSessionRequest {
                fleet_id: "bench".into(),
                game_session_id: format!("g{g}"),
                maximum_player_session_count: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = PlayerSessionServiceClient::new(channels[c % channels.len()].clone());
        let (done, failed) = (done.clone(), failed.clone());
        let (stop, mut gate) = (stop.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if gate.wait_for(|g| *g == me || *g == ALL).await.is_err() {
                    break;
                }
                let game = format!("g{}", (c as u64 * 7 + i) % GAMES);
                i += 1;
                let r = client
                    .create_player_session(CreatePlayerSessionRequest {
                        game_session_id: game,
                        player_id: format!("c{c}-{i}"),
                        player_data: String::new(),
                        idempotency_key: String::new(),
                    })
                    .await;
                match r {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    Loaded {
        shutdown,
        daemon,
        done,
        failed,
        tasks,
    }
}

impl Loaded {
    async fn finish(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.load(Ordering::Relaxed);
        assert_eq!(
            failed, 0,
            "{failed} calls failed: the figures would count only the rest"
        );
        self.shutdown.cancel();
        self.daemon.wait().await.unwrap();
    }
}

/// CreatePlayerSession calls per second from `clients` closed-loop gRPC callers (4
/// connections) against a daemon started in this process, over `secs` after 500 ms of warm-up.
pub async fn rpc_throughput(config: Config, clients: usize, secs: u64) -> f64 {
    let (_gate_tx, gate) = tokio::sync::watch::channel(ALL);
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = load(config, clients, 0, &gate, &stop).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // warm-up
    let start_count = loaded.done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = loaded.done.load(Ordering::Relaxed) - start_count;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    loaded.finish().await;
    rate
}

/// Like [`rpc_throughput`] for several daemons at once, loaded in turns of `turn`: only the
/// callers of the daemon whose turn it is call, in the order 0, 1, 1, 0, 0, 1, ... (for two),
/// so the machine's drift over seconds falls on all alike. Each daemon gets 500 ms of warm-up
/// turns, then `secs` of turns in all; returns each one's calls per second during its turns.
pub async fn rpc_throughput_in_turns(
    configs: Vec<Config>,
    clients: usize,
    secs: u64,
    turn: Duration,
) -> Vec<f64> {
    let n = configs.len();
    let (gate_tx, gate) = tokio::sync::watch::channel(n); // nobody's turn yet
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaded = Vec::new();
    for (me, config) in configs.into_iter().enumerate() {
        loaded.push(load(config, clients, me, &gate, &stop).await);
    }
    for me in 0..n {
        gate_tx.send_replace(me);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut calls = vec![0u64; n];
    let mut spent = vec![Duration::ZERO; n];
    let mut round = 0usize;
    while spent.iter().any(|s| s.as_secs_f64() < secs as f64) {
        // Forward, then backward: 0 1 | 1 0 | 0 1 ...
        let order: Vec<usize> = if round.is_multiple_of(2) {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        round += 1;
        for me in order {
            let before = loaded[me].done.load(Ordering::Relaxed);
            let started = Instant::now();
            gate_tx.send_replace(me);
            tokio::time::sleep(turn).await;
            spent[me] += started.elapsed();
            calls[me] += loaded[me].done.load(Ordering::Relaxed) - before;
        }
    }
    stop.store(true, Ordering::Relaxed);
    gate_tx.send_replace(ALL);
    for l in loaded {
        l.finish().await;
    }
    calls
        .iter()
        .zip(&spent)
        .map(|(c, s)| *c as f64 / s.as_secs_f64())
        .collect()
}

pub async fn futures_connect(url: &str, n: usize) -> Vec<tonic::transport::Channel> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            tonic::transport::Channel::from_shared(url.to_string())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    out
}

/// Seats per game session of [`store_with_games`].
pub const SEATS: u64 = 1000;

/// The id of game session `i` of [`store_with_games`]: `g<i>`.
pub fn game(i: u64) -> session_broker::domain::GameSessionId {
    session_broker::domain::GameSessionId::parse("g", &format!("g{i}")).expect("valid id")
}

/// A store in memory only (the in-process costs, no journal) with enough [`SEATS`]-seat game
/// sessions ([`game`]) for `seats` reservations whose timeout is `timeout`.
pub async fn store_with_games(seats: u64, timeout: Duration) -> Arc<session_broker::store::Store> {
    use session_broker::{
        domain::Clock,
        journal::Journal,
        store::{Store, StoreConfig},
    };
    let store = Arc::new(Store::new(
        Clock::system(),
        StoreConfig::default(),
        Journal::disabled(),
    ));
    for g in 0..seats.div_ceil(SEATS).max(1) {
        store
            .register_game_session(session_broker::domain::RegisterGameSession {
                reservation_timeout: Some(timeout),
                ..registration(&format!("g{g}"), SEATS as u32)
            })
            .await
            .expect("register");
    }
    store
}
