//! Analytics figures (`cargo bench --bench analytics`): prints, does not assert.
//!
//! 1. Dispatcher rate: lifecycle events per second read back from the journal, turned into
//!    Segment track messages and batched for a local sink (one that counts and acknowledges).
//! 2. RPC throughput (CreatePlayerSession, 64 gRPC clients, `sync` journal) with the Segment
//!    sink on (a local Segment stand-in answering 200) and off, and the ratio.
//!
//! `SB_BENCH_EVENTS` overrides the 500,000 events of (1); `SB_BENCH_SECS` the seconds per
//! throughput run of (2); `SB_BENCH_ONLY=dispatch|rpc` runs one section.

mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use session_broker::{
    analytics::{
        dispatcher,
        sink::{Outcome, Sink},
        AnalyticsConfig, SinkConfig,
    },
    domain::{GameSessionId, PlayerStrings},
    journal::{Durability, JournalConfig},
    metrics::Metrics,
    store::{Reserve, Store},
};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Acknowledges every batch and counts its messages.
#[derive(Default)]
struct CountingSink {
    messages: AtomicU64,
    bytes: AtomicU64,
}

#[tonic::async_trait]
impl Sink for CountingSink {
    fn name(&self) -> &'static str {
        "bench"
    }
    async fn send(&self, batch: &[String]) -> Outcome {
        let bytes: usize = batch.iter().map(String::len).sum();
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Outcome::Delivered
    }
}

/// A game session of 1000 seats, named and labelled like a real one.
fn registration(id: &str) -> session_broker::domain::RegisterGameSession {
    let mut r = common::registration(id, 1000);
    r.name = format!("match {id}");
    r.labels = [("map".to_string(), "dust2".to_string())].into();
    r.release = "1.4.2".into();
    r.environment = "production".into();
    r
}

/// A store on a fresh journal in `dir` holding `events` lifecycle transitions: game sessions
/// of 1000 seats, parties of 25 reserved, half of the players accepted.
async fn journal_of(dir: &std::path::Path, events: u64) -> Arc<Store> {
    let (store, _) = common::open_store(dir, Durability::Async);
    let mut made = 0u64;
    let mut game = 0u64;
    while made < events {
        let gs = format!("g{game}");
        game += 1;
        store
            .register_game_session(registration(&gs))
            .await
            .unwrap();
        made += 1;
        let gid = GameSessionId::parse("g", &gs).unwrap();
        for party in 0..40 {
            if made >= events {
                break;
            }
            let players = (0..25)
                .map(|i| {
                    PlayerStrings::parse("p", &format!("player-{game}-{party}-{i}"), None).unwrap()
                })
                .collect();
            let sessions = store
                .reserve(Reserve {
                    game_session_id: gid.clone(),
                    players,
                    idempotency_key: None,
                })
                .await
                .unwrap();
            made += 25;
            for ps in sessions.iter().step_by(2) {
                store.accept(&gid, ps.id).await.unwrap();
                made += 1;
            }
        }
    }
    store.journal().wait_all_durable().await.unwrap();
    store
}

async fn dispatch_rate(events: u64) {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let store = journal_of(dir.path(), events).await;
    let records = store.journal().last_lsn();
    println!(
        "journal of {records} records ({events} lifecycle events) written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let sink = Arc::new(CountingSink::default());
    let mut config = AnalyticsConfig::new(SinkConfig::File {
        path: dir.path().join("unused"),
        max_bytes: 1,
    });
    config.batch_size = 2500;
    config.flush_interval = Duration::from_millis(10);
    let metrics = Metrics::new(store.clone());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(dispatcher::run(
        config,
        sink.clone(),
        store.clone(),
        metrics,
        dir.path().to_path_buf(),
        dispatcher::Start {
            from: 1,
            journal_id: "0123456789ab".into(),
        },
        shutdown.clone(),
    ));
    while sink.messages.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    task.await.unwrap();
    let n = sink.messages.load(Ordering::Relaxed);
    println!(
        "dispatcher: {n} events read back, built and batched in {:.2}s = {:.0} events/s ({:.0} bytes/event)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        sink.bytes.load(Ordering::Relaxed) as f64 / n as f64
    );
    store.journal().close();
}

/// A local stand-in for Segment: answers every batch with 200.
async fn segment_stand_in() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/v1/batch",
        axum::routing::post(|_body: axum::body::Bytes| async { "{}" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn rpc_with_and_without(secs: u64) {
    let segment = segment_stand_in().await;
    let run = |analytics: bool| async move {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config(Some(JournalConfig::new(dir.path())));
        if analytics {
            config.analytics = Some(AnalyticsConfig::new(SinkConfig::Segment {
                endpoint: format!("http://{segment}"),
                write_key: "bench".into(),
                timeout: Duration::from_secs(10),
                gzip: false,
            }));
        }
        common::rpc_throughput(config, 64, secs).await
    };
    // Alternated, twice, so drift on a shared machine hits both alike.
    let (mut off, mut on) = (0.0, 0.0);
    for _ in 0..2 {
        off += run(false).await / 2.0;
        on += run(true).await / 2.0;
    }
    println!(
        "rpc CreatePlayerSession, 64 clients, sync journal: analytics off {off:.0}/s, Segment sink on {on:.0}/s, ratio {:.3}",
        on / off
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = common::env_u64("SB_BENCH_EVENTS", 500_000);
    let secs = common::env_u64("SB_BENCH_SECS", 5);
    let only = std::env::var("SB_BENCH_ONLY").unwrap_or_default();
    let run = move |section: &str| only.is_empty() || only == section;
    rt.block_on(async move {
        println!(
            "analytics benchmark ({} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        if run("dispatch") {
            dispatch_rate(events).await;
        }
        if run("rpc") {
            rpc_with_and_without(secs).await;
        }
    });
}
