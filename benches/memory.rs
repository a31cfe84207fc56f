//! Memory per live RESERVED session, in process (`cargo bench --bench memory`): a store with
//! journal disabled, 1,000-seat game sessions, 64-byte player data (a fresh allocation per
//! session, as a gRPC request gives), RSS growth per session at 100,000 and 1,000,000.
//! Complements the `growth` scenario of `session-broker bench`, which measures the daemon.

use std::{sync::Arc, time::Duration};

use session_broker::{
    domain::{Clock, FleetId, GameSessionId, PlayerStrings, RegisterGameSession},
    journal::Journal,
    store::{Reserve, Store, StoreConfig},
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEATS: u64 = 1000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("rss");
    pages * 4096
}

fn game(i: u64) -> GameSessionId {
    GameSessionId::parse("g", &format!("g{i}")).expect("valid id")
}

async fn run(total: u64) {
    let store = Arc::new(Store::new(
        Clock::system(),
        StoreConfig::default(),
        Journal::disabled(),
    ));
    for g in 0..total.div_ceil(SEATS) {
        store
            .register_game_session(RegisterGameSession {
                fleet_id: FleetId::parse("f", "bench").expect("valid"),
                game_session_id: Some(game(g)),
                name: String::new(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
                maximum_player_session_count: SEATS as u32,
                labels: Default::default(),
                release: "1.0".into(),
                environment: "bench".into(),
                reservation_timeout: Some(Duration::from_secs(3600)),
                heartbeat_timeout: None,
            })
            .await
            .expect("register");
    }
    let before = rss_bytes();
    let mut done = 0;
    for step in [100_000u64, total] {
        while done < step {
            store
                .reserve(Reserve {
                    game_session_id: game(done / SEATS),
                    players: vec![PlayerStrings::parse(
                        "p",
                        &format!("player-{done}"),
                        Some(&format!("{done:064}")),
                    )
                    .expect("valid")],
                    idempotency_key: None,
                })
                .await
                .expect("reserve");
            done += 1;
        }
        let grown = rss_bytes() - before;
        println!(
            "memory: {done} live sessions: RSS +{} MB, {} bytes per session",
            grown / 1_000_000,
            grown / done
        );
    }
}

fn main() {
    let total = std::env::var("SB_BENCH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(total));
}
