//! Criterion suite for the hot in-process paths (`cargo bench --bench core`): reserve, accept,
//! one sweeper step, search and placement over a 10,000-game-session fleet, and journal
//! encoding. Each figure is per operation, on a store holding
//! the state the operation needs (set up outside the timed part).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use session_broker::{
    domain::{
        Change, Clock, Filter, FleetId, GameSessionId, PlayerSessionId, PlayerStrings,
        RegisterGameSession, Sort,
    },
    journal::{encode, frame, records, Journal},
    store::{Place, PlacementStrategy, Reserve, Search, Store, StoreConfig},
    sweeper,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::{game, store_with_games, SEATS};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn reservation(i: u64, data: &Arc<str>) -> Reserve {
    Reserve {
        game_session_id: game(i / SEATS),
        players: vec![
            PlayerStrings::parse("p", &format!("player-{i}"), Some(data)).expect("valid"),
        ],
        idempotency_key: None,
    }
}

/// Reserves `n` sessions; returns their (game, player session) ids.
async fn fill(store: &Store, n: u64, data: &Arc<str>) -> Vec<(GameSessionId, PlayerSessionId)> {
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let ps = store.reserve(reservation(i, data)).await.expect("reserve");
        ids.push((game(i / SEATS), ps[0].id));
    }
    ids
}

/// An in-memory store with one fleet `mm` of `n` game sessions.
async fn matchmaking_fleet(n: u64) -> Arc<Store> {
    let store = Arc::new(Store::new(
        Clock::system(),
        StoreConfig::default(),
        Journal::disabled(),
    ));
    for i in 0..n {
        store
            .register_game_session(RegisterGameSession {
                fleet_id: FleetId::parse("f", "mm").expect("valid"),
                game_session_id: Some(GameSessionId::parse("g", &format!("mm{i}")).expect("valid")),
                name: String::new(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
                maximum_player_session_count: 200 + (i * 37 % 801) as u32,
                labels: [(
                    "mode".to_string(),
                    ["ctf", "dm", "duel", "koth"][i as usize % 4].to_string(),
                )]
                .into(),
                release: "1.0".into(),
                environment: "bench".into(),
                reservation_timeout: Some(Duration::from_secs(3600)),
                heartbeat_timeout: None,
            })
            .await
            .expect("register");
    }
    store
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let data: Arc<str> = "x".repeat(64).into();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));

    group.bench_function("reserve", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let store = store_with_games(iters, Duration::from_secs(60)).await;
                let requests: Vec<_> = (0..iters).map(|i| reservation(i, &data)).collect();
                let started = Instant::now();
                for r in requests {
                    store.reserve(r).await.expect("reserve");
                }
                started.elapsed()
            })
        })
    });

    group.bench_function("accept", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let store = store_with_games(iters, Duration::from_secs(60)).await;
                let ids = fill(&store, iters, &data).await;
                let started = Instant::now();
                for (g, ps) in &ids {
                    store.accept(g, *ps).await.expect("accept");
                }
                started.elapsed()
            })
        })
    });

    // One reservation timing out, as the sweeper does it: pop the due timer, mark the session
    // TIMEDOUT, free its seat, journal the change.
    group.bench_function("sweep_step_per_timeout", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let store = store_with_games(iters, Duration::from_secs(1)).await;
                fill(&store, iters, &data).await;
                tokio::time::advance(Duration::from_secs(2)).await;
                let started = Instant::now();
                let fired = sweeper::fire_due(&store);
                let took = started.elapsed();
                assert_eq!(fired as u64, iters);
                took
            })
        })
    });
    group.finish();

    // The matchmaker's calls over one fleet of 10,000 game sessions (200-1000 seats, a `mode`
    // label in turn), as in the `place` and `search` scenarios of `session-broker bench`.
    let mut group = c.benchmark_group("fleet_10k");
    group.throughput(Throughput::Elements(1));
    let fleet = rt.block_on(matchmaking_fleet(10_000));
    let filter = "hasAvailablePlayerSessions=true AND gameSessionProperties.mode='ctf' AND maximumSessions>=400";
    for (name, sort) in [
        ("search_filtered_by_creation", ""),
        (
            "search_filtered_by_available_desc",
            "availablePlayerSessions DESC",
        ),
    ] {
        let q = Search {
            fleet_id: FleetId::parse("f", "mm").expect("valid"),
            filter: Filter::parse("filter_expression", filter).expect("valid"),
            sort: Sort::parse("sort_expression", sort).expect("valid"),
            selector: Default::default(),
            limit: 20,
            after: None,
        };
        group.bench_function(name, |b| b.iter(|| std::hint::black_box(fleet.search(&q))));
    }
    for (name, strategy) in [
        ("place_party_of_5_packed", PlacementStrategy::Packed),
        (
            "place_party_of_5_distributed",
            PlacementStrategy::Distributed,
        ),
    ] {
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    // A fresh fleet per sample, so the figure does not drift as seats fill.
                    let fleet = matchmaking_fleet(10_000).await;
                    let requests: Vec<Place> = (0..iters)
                        .map(|_| {
                            n += 1;
                            Place {
                                fleet_id: FleetId::parse("f", "mm").expect("valid"),
                                players: (0..5)
                                    .map(|k| {
                                        let p = format!("{name}-{n}-{k}");
                                        PlayerStrings::parse("p", &p, Some(&data)).expect("valid")
                                    })
                                    .collect(),
                                selector: Default::default(),
                                filter: Filter::default(),
                                filter_text: String::new(),
                                strategy,
                                idempotency_key: None,
                            }
                        })
                        .collect();
                    let started = Instant::now();
                    for r in requests {
                        fleet.place(r).await.expect("a seat for the party");
                    }
                    started.elapsed()
                })
            })
        });
    }
    drop(fleet);
    group.finish();

    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    let (store, ps) = rt.block_on(async {
        let store = store_with_games(1, Duration::from_secs(60)).await;
        let ps = store.reserve(reservation(0, &data)).await.expect("reserve");
        (store, ps)
    });
    let change = Change::Reserved(ps[0].clone());
    // What an append does: the record into its own buffer, then the framed checkpoint.
    group.bench_function("encode_reservation_record", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            let changes = std::slice::from_ref(&change);
            let mut recs = Vec::with_capacity(256);
            encode::records(changes, &mut recs);
            frame::put_with(&mut out, |buf| encode::checkpoint(1, &recs, buf));
            std::hint::black_box(&out);
        })
    });
    // The same checkpoint through an `OperationRecord` and prost (how every other change is
    // encoded, and how a reservation was until 2026-12-07).
    group.bench_function("encode_reservation_record_prost", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            out.clear();
            let checkpoint = session_broker::storage::Checkpoint {
                first_lsn: 1,
                records: vec![records::encode(&change, 0)],
            };
            frame::put_with(&mut out, |buf| {
                prost::Message::encode(&checkpoint, buf).expect("Vec grows")
            });
            std::hint::black_box(&out);
        })
    });
    drop(store);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
