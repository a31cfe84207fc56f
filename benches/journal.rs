//! Journal figures (`cargo bench --bench journal`): prints, does not assert.
//!
//! 1. RPC throughput at 64 concurrent gRPC clients (CreatePlayerSession), state in memory vs a
//!    `sync` journal (group commit), and the ratio: both daemons run at once and are loaded
//!    in turns of `SB_BENCH_TURN_MS` (500), `SB_BENCH_SECS` of turns each.
//! 2. Records appended per second by 64 concurrent writers straight into the store (sync).
//! 3. Replay rate: recovery of a journal of 1,000,000 reservations, no snapshot.
//! 4. Start-up time with 1,000,000 live sessions from a snapshot.
//!
//! `SB_BENCH_SESSIONS` overrides the 1,000,000; `SB_BENCH_SECS` the seconds per throughput run;
//! `SB_BENCH_REPLAYS` replays the same journal that many times; `SB_BENCH_DIR` keeps the
//! journal there (a later run replays it in a fresh process, like a daemon start).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use session_broker::{
    domain::{GameSessionId, PlayerStrings},
    journal::{snapshot, Durability, JournalConfig},
    store::{Reserve, Store},
};

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{env_u64, open_store as open, registration};

/// Recovers a store from `dir` on a blocking thread; returns it and how long recovery took.
async fn reopen(dir: &std::path::Path) -> (Arc<Store>, Duration) {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || open(&d, Durability::Sync))
        .await
        .unwrap()
}

/// Fills a store with `n` RESERVED sessions (64-byte player data) in game sessions of 1000 seats.
async fn fill(store: &Store, n: u64) {
    let data: Arc<str> = "x".repeat(64).into();
    let games = n.div_ceil(1000);
    for g in 0..games {
        store
            .register_game_session(registration(&format!("fill-{g}"), 1000))
            .await
            .unwrap();
    }
    for i in 0..n {
        let gs = GameSessionId::parse("g", &format!("fill-{}", i / 1000)).unwrap();
        store
            .reserve(Reserve {
                game_session_id: gs,
                players: vec![
                    PlayerStrings::parse("p", &format!("player-{i}"), Some(&data)).unwrap(),
                ],
                idempotency_key: None,
            })
            .await
            .unwrap();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sessions = env_u64("SB_BENCH_SESSIONS", 1_000_000);
    let secs = env_u64("SB_BENCH_SECS", 5);
    // SB_BENCH_ONLY=rpc|rpc-memory|rpc-sync|append|replay runs one section (for profiling).
    let only = std::env::var("SB_BENCH_ONLY").unwrap_or_default();
    let run = move |section: &str| only.is_empty() || only == section;
    rt.block_on(async move {
        println!("journal benchmark ({} cores)", std::thread::available_parallelism().map_or(1, |n| n.get()));

        if run("rpc") {
            // Both daemons at once, loaded in turns (memory, sync, sync, memory, ...), so the
            // machine's drift over seconds falls on both alike.
            let dir = tempfile::tempdir().unwrap();
            let turn = Duration::from_millis(env_u64("SB_BENCH_TURN_MS", 500));
            let configs = vec![
                common::config(None),
                common::config(Some(JournalConfig::new(dir.path()))),
            ];
            let rates = common::rpc_throughput_in_turns(configs, 64, secs, turn).await;
            println!(
                "rpc CreatePlayerSession, 64 clients, in turns of {turn:?}: memory {:.0}/s, sync journal {:.0}/s, ratio {:.2}",
                rates[0], rates[1], rates[1] / rates[0]
            );
        }
        if run("rpc-memory") {
            let mem = common::rpc_throughput(common::config(None), 64, secs).await;
            println!("rpc CreatePlayerSession, 64 clients, in memory {mem:.0}/s");
        }
        if run("rpc-sync") {
            let dir = match std::env::var("SB_BENCH_DIR") {
                Ok(d) => tempfile::tempdir_in(d).unwrap(),
                Err(_) => tempfile::tempdir().unwrap(),
            };
            let mut jc = JournalConfig::new(dir.path());
            // SB_BENCH_COMMIT_DELAY_US: the writer's commit delay (default: the daemon's).
            if let Ok(us) = std::env::var("SB_BENCH_COMMIT_DELAY_US") {
                jc.commit_delay = Duration::from_micros(us.parse().unwrap());
            }
            let sync = common::rpc_throughput(common::config(Some(jc)), 64, secs).await;
            println!("rpc CreatePlayerSession, 64 clients, sync journal {sync:.0}/s");
        }
        if run("append") {

        // Appends straight into the store from 64 writers (sync, group commit).
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), Durability::Sync);
        for g in 0..64 {
            store.register_game_session(registration(&format!("w{g}"), 1000)).await.unwrap();
        }
        let count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let (store, count) = (store.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let gs = GameSessionId::parse("g", &format!("w{w}")).unwrap();
                let mut i = 0;
                while Instant::now() < until && i < 1000 {
                    store
                        .reserve(Reserve {
                            game_session_id: gs.clone(),
                            players: vec![PlayerStrings::parse("p", &format!("p{i}"), None).unwrap()],
                            idempotency_key: None,
                        })
                        .await
                        .unwrap();
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = count.load(Ordering::Relaxed);
        println!("sync appends, 64 writers: {:.0} records/s ({n} records)", n as f64 / started.elapsed().as_secs_f64());
        store.journal().close();
        }
        if !run("replay") {
            return;
        }

        // Replay rate and start-up with `sessions` live reservations.
        // SB_BENCH_DIR keeps the journal in that directory: a later run replays it in a fresh
        // process, as the daemon starts, and leaves it as it is (no snapshot section).
        let kept = std::env::var_os("SB_BENCH_DIR").map(std::path::PathBuf::from);
        let temp = tempfile::tempdir().unwrap();
        let dir = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
        let filled = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        if !filled {
            let (store, _) = open(&dir, Durability::Async);
            let t = Instant::now();
            fill(&store, sessions).await;
            println!("filled {sessions} reservations in {:.1}s", t.elapsed().as_secs_f64());
            store.journal().close();
            drop(store);
            // A guard: the fill wrote in `async` mode, so its dirty pages are flushed here
            // rather than by the kernel's writeback during the timed replay.
            let t = Instant::now();
            for f in std::fs::read_dir(&dir).unwrap() {
                std::fs::File::open(f.unwrap().path()).unwrap().sync_all().unwrap();
            }
            println!("synced the fill's segments in {:.1}s", t.elapsed().as_secs_f64());
        }
        // SB_BENCH_REPLAYS=n replays the same journal n times (to compare or profile replay alone).
        let mut store: Option<Arc<Store>> = None;
        for _ in 0..env_u64("SB_BENCH_REPLAYS", 1).max(1) {
            if let Some(s) = store.take() {
                s.journal().close();
                drop(s);
            }
            let (s, took) = reopen(&dir).await;
            let records = s.journal().last_lsn();
            println!(
                "replay without snapshot: {records} records in {:.2}s = {:.0} records/s",
                took.as_secs_f64(),
                records as f64 / took.as_secs_f64()
            );
            store = Some(s);
        }
        let store = store.expect("replayed at least once");
        if kept.is_some() {
            store.journal().close();
            return;
        }
        let d = dir.clone();
        let s2 = store.clone();
        let t = Instant::now();
        let stats = tokio::task::spawn_blocking(move || snapshot::take(&s2, s2.journal(), &d))
            .await
            .unwrap()
            .unwrap();
        println!("snapshot of {} live sessions taken in {:.2}s", store.len().1, t.elapsed().as_secs_f64());
        store.journal().close();
        drop(store);
        let (store, took) = reopen(&dir).await;
        println!(
            "start-up from snapshot ({} MiB) with {} live sessions: {:.2}s",
            stats.bytes >> 20,
            store.len().1,
            took.as_secs_f64()
        );
        store.journal().close();
    });
}
