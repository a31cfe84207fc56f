//! Memory per live RESERVED session, in process (`cargo bench --bench memory`): a store with
//! journal disabled, 1,000-seat game sessions, 64-byte player data (a fresh allocation per
//! session, as a gRPC request gives), RSS growth per session at 100,000 and 1,000,000.
//! `SB_BENCH_BATCH=25` reserves 25 players per call (as the daemon's `growth` preload does with
//! `CreatePlayerSessions`: the players of a call share one creation time). Complements the
//! `growth` scenario of `session-broker bench`, which measures the daemon.

use std::time::Duration;

use session_broker::{domain::PlayerStrings, store::Reserve};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::{game, store_with_games, SEATS};

async fn run(total: u64, batch: u64) {
    let store = store_with_games(total, Duration::from_secs(3600)).await;
    let before = common::rss();
    let mut done = 0;
    for step in [100_000u64, total] {
        while done < step {
            // A call stays within one game session.
            let n = batch.min(SEATS - done % SEATS).min(step - done);
            store
                .reserve(Reserve {
                    game_session_id: game(done / SEATS),
                    players: (done..done + n)
                        .map(|i| {
                            PlayerStrings::parse(
                                "p",
                                &format!("player-{i}"),
                                Some(&format!("{i:064}")),
                            )
                            .expect("valid")
                        })
                        .collect(),
                    idempotency_key: None,
                })
                .await
                .expect("reserve");
            done += n;
        }
        let grown = common::rss().saturating_sub(before);
        println!(
            "memory: {done} live sessions ({batch} per call): RSS +{} MB, {} bytes per session",
            grown / 1_000_000,
            grown / done
        );
    }
}

fn main() {
    let total = common::env_u64("SB_BENCH_SESSIONS", 1_000_000);
    let max = session_broker::domain::limits::MAX_BATCH_PLAYERS as u64;
    let batch = common::env_u64("SB_BENCH_BATCH", 1).clamp(1, max);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(total, batch));
}
