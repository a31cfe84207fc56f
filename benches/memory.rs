//! Memory per live RESERVED session, in process (`cargo bench --bench memory`): a store with
//! journal disabled, 1,000-seat game sessions, 64-byte player data (a fresh allocation per
//! session, as a gRPC request gives), RSS growth per session at 100,000 and 1,000,000.
//! Complements the `growth` scenario of `session-broker bench`, which measures the daemon.

use std::time::Duration;

use session_broker::{domain::PlayerStrings, store::Reserve};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::{game, store_with_games, SEATS};

async fn run(total: u64) {
    let store = store_with_games(total, Duration::from_secs(3600)).await;
    let before = common::rss();
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
        let grown = common::rss().saturating_sub(before);
        println!(
            "memory: {done} live sessions: RSS +{} MB, {} bytes per session",
            grown / 1_000_000,
            grown / done
        );
    }
}

fn main() {
    let total = common::env_u64("SB_BENCH_SESSIONS", 1_000_000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(total));
}
