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

/// CreatePlayerSession over gRPC from `clients` concurrent callers for `secs`; returns calls/s.
pub async fn rpc_throughput(mut config: Config, clients: usize, secs: u64) -> f64 {
    config.store.reservation_timeout = Duration::from_secs(86_400);
    let shutdown = CancellationToken::new();
    let daemon = session_broker::start(config, shutdown.clone())
        .await
        .unwrap();
    let url = format!("http://{}", daemon.grpc_addr());
    let channels: Vec<_> = futures_connect(&url, 4).await;
    let mut games = GameSessionServiceClient::new(channels[0].clone());
    for g in 0..256 {
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
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = PlayerSessionServiceClient::new(channels[c % channels.len()].clone());
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let game = format!("g{}", (c as u64 * 7 + i) % 256);
                i += 1;
                let r = client
                    .create_player_session(CreatePlayerSessionRequest {
                        game_session_id: game,
                        player_id: format!("c{c}-{i}"),
                        player_data: String::new(),
                        idempotency_key: String::new(),
                    })
                    .await;
                if r.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // warm-up
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = done.load(Ordering::Relaxed) - start_count;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    shutdown.cancel();
    daemon.wait().await.unwrap();
    rate
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
