//! Store unit tests: transitions, capacity, indexes, idempotency, the sweeper under paused time,
//! and a property test over random operation sequences.

use std::{collections::HashMap, sync::Arc, time::Duration};

use proptest::prelude::*;

use super::*;
use crate::{
    domain::{Change, CreationPolicy, FleetId, GameSessionStatus, Lsn, RegisterGameSession},
    sweeper,
};

fn store_with(config: StoreConfig) -> Store {
    Store::in_memory(
        Clock::starting_at(Timestamp::from_micros(1_700_000_000_000_000)),
        config,
    )
}

fn store() -> Store {
    store_with(StoreConfig::default())
}

pub(crate) fn registration(id: &str, max: u32) -> RegisterGameSession {
    RegisterGameSession {
        fleet_id: FleetId::parse("fleet_id", "fleet-1").unwrap(),
        game_session_id: Some(GameSessionId::parse("game_session_id", id).unwrap()),
        name: "match".into(),
        ip_address: "10.0.0.1".into(),
        port: 7777,
        maximum_player_session_count: max,
        labels: Default::default(),
        release: "1.0.0".into(),
        environment: "prod".into(),
        reservation_timeout: None,
        heartbeat_timeout: None,
    }
}

async fn register(s: &Store, id: &str, max: u32) -> GameSession {
    s.register_game_session(registration(id, max))
        .await
        .unwrap()
}

fn gs(id: &str) -> GameSessionId {
    GameSessionId::parse("game_session_id", id).unwrap()
}

fn party(players: &[impl AsRef<str>]) -> Vec<PlayerStrings> {
    players
        .iter()
        .map(|p| PlayerStrings::parse("player_id", p.as_ref(), None).unwrap())
        .collect()
}

/// A placement of `players` in `fleet-1`, no key, filtered by `filter` (may be empty).
fn placement(players: &[impl AsRef<str>], strategy: PlacementStrategy, filter: &str) -> Place {
    Place {
        fleet_id: FleetId::parse("fleet_id", "fleet-1").unwrap(),
        players: party(players),
        selector: Default::default(),
        filter: crate::domain::Filter::parse("filter_expression", filter).unwrap(),
        filter_text: filter.into(),
        strategy,
        idempotency_key: None,
    }
}

pub(crate) fn reservation(g: &str, players: &[&str]) -> Reserve {
    Reserve {
        game_session_id: gs(g),
        players: party(players),
        idempotency_key: None,
    }
}

async fn reserve(s: &Store, g: &str, players: &[&str]) -> Result<Vec<PlayerSession>> {
    s.reserve(reservation(g, players)).await
}

fn describe_all(s: &Store, by: DescribeBy, limit: u32) -> Vec<PlayerSession> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .describe(&Describe {
                by: by.clone(),
                status: None,
                limit,
                after,
            })
            .unwrap();
        out.extend(page.player_sessions);
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn reserve_accept_remove_keeps_counts() {
    let s = store();
    register(&s, "gs-1", 3).await;
    let created = reserve(&s, "gs-1", &["a", "b"]).await.unwrap();
    let count = |s: &Store| {
        s.get_game_session(&gs("gs-1"))
            .unwrap()
            .current_player_session_count
    };
    assert_eq!(count(&s), 2);
    let a = created[0].id;
    assert_eq!(
        s.accept(&gs("gs-1"), a).await.unwrap().status,
        PlayerSessionStatus::Active
    );
    assert_eq!(
        s.accept(&gs("gs-1"), a).await.unwrap().status,
        PlayerSessionStatus::Active,
        "idempotent"
    );
    let removed = s.remove(&gs("gs-1"), a).await.unwrap();
    assert_eq!(removed.status, PlayerSessionStatus::Completed);
    assert_eq!(
        s.remove(&gs("gs-1"), a).await.unwrap().termination_time,
        removed.termination_time
    );
    assert_eq!(count(&s), 1);
    // The player may come back once the old session is terminal.
    reserve(&s, "gs-1", &["a"]).await.unwrap();
    assert!(matches!(
        reserve(&s, "gs-1", &["a"]).await,
        Err(Error::PlayerAlreadyInGameSession { .. })
    ));
    s.check_invariants().unwrap();
}

/// Players whose index keys collide, or sessions whose handles do (here: all of them), still
/// have their own seats, and DescribePlayerSessions by player lists only that player's
/// sessions, each once.
#[tokio::test(start_paused = true)]
async fn players_with_colliding_keys_or_handles_stay_apart() {
    for (key_mask, hash_mask) in [(0, u32::MAX), (u32::MAX, 0), (0, 0)] {
        colliding_players(key_mask, hash_mask).await;
    }
}

async fn colliding_players(key_mask: u32, hash_mask: u32) {
    let mut s = store();
    s.key_mask = key_mask;
    s.player_sessions.hash_mask = hash_mask;
    register(&s, "gs-1", 4).await;
    register(&s, "gs-2", 4).await;
    let a = reserve(&s, "gs-1", &["a"]).await.unwrap();
    let b = reserve(&s, "gs-1", &["b"]).await.unwrap();
    reserve(&s, "gs-2", &["b"]).await.unwrap();
    assert!(matches!(
        reserve(&s, "gs-1", &["a"]).await,
        Err(Error::PlayerAlreadyInGameSession { .. })
    ));
    s.remove(&gs("gs-1"), b[0].id).await.unwrap();
    assert!(
        matches!(
            reserve(&s, "gs-1", &["a"]).await,
            Err(Error::PlayerAlreadyInGameSession { .. })
        ),
        "b's seat went, a's stays"
    );
    reserve(&s, "gs-1", &["b"]).await.unwrap();
    let by = |p: &str| {
        describe_all(
            &s,
            DescribeBy::Player(PlayerId::parse("player_id", p).unwrap()),
            1,
        )
    };
    assert_eq!(
        by("a").iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![a[0].id]
    );
    let bs = by("b");
    assert_eq!(bs.len(), 3);
    assert!(bs.iter().all(|p| p.player_id() == "b"));
    assert_eq!(
        s.get_game_session(&gs("gs-1"))
            .unwrap()
            .current_player_session_count,
        2
    );
    s.check_invariants().unwrap();
}

/// Sessions of one game session created in one microsecond (a batch) whose handles all
/// collide list in (creation time, id) order, page by page, before and after removals.
#[tokio::test(start_paused = true)]
async fn ties_in_time_and_handle_list_in_id_order() {
    // Ids are random: a few rounds meet the orders that matter (a session of a new handle
    // replayed between two that share one).
    for hash_mask in [[0, 1, u32::MAX], [3; 3], [7; 3]]
        .into_iter()
        .flatten()
        .cycle()
        .take(40)
    {
        let mut s = store_with(StoreConfig {
            retention: Duration::from_secs(600),
            ..StoreConfig::default()
        });
        s.player_sessions.hash_mask = hash_mask;
        let game = register(&s, "gs-1", 10).await;
        let mut made = reserve(&s, "gs-1", &["a", "b", "c", "d", "e"])
            .await
            .unwrap();
        made.extend(reserve(&s, "gs-1", &["f", "g", "h"]).await.unwrap());
        let listed = |s: &Store| {
            describe_all(s, DescribeBy::GameSession(gs("gs-1")), 2)
                .into_iter()
                .map(|p| (p.creation_time, p.id))
                .collect::<Vec<_>>()
        };
        let mut want: Vec<_> = made.iter().map(|p| (p.creation_time, p.id)).collect();
        want.sort_unstable();
        assert_eq!(listed(&s), want, "hash mask {hash_mask:#x}");
        s.check_invariants().unwrap();
        // A snapshot's copy of the game session lists its sessions in the same order.
        let exported = |s: &Store| {
            let (_, players) = s.export_game_session(&gs("gs-1")).unwrap();
            players
                .iter()
                .map(|p| (p.creation_time, p.id))
                .collect::<Vec<_>>()
        };
        assert_eq!(exported(&s), want, "exported, hash mask {hash_mask:#x}");
        // Replayed in two batches (sessions in the map before they are listed, ties across
        // batches): the same listing.
        let mut replayed = store();
        replayed.player_sessions.hash_mask = hash_mask;
        replayed.apply(Change::GameSessionStarted(game), 1);
        let mut batch = ReplayBatch::default();
        for (i, ps) in made.iter().enumerate() {
            replayed.apply_batched(&mut batch, Change::Reserved(ps.clone()), i as Lsn + 2);
            if i == 0 || i == 4 {
                replayed.flush_replay(&mut batch);
            }
        }
        replayed.flush_replay(&mut batch);
        assert_eq!(
            listed(&replayed),
            want,
            "replayed, hash mask {hash_mask:#x}"
        );
        replayed.check_invariants().unwrap();
        // Rebuilding after recovery visits each listed session once, by handle, however
        // they share handles: one reservation timer each, counts and health as a scan finds.
        replayed.finish_recovery();
        assert_eq!(
            replayed.timers.len(),
            made.len(),
            "hash mask {hash_mask:#x}"
        );
        replayed.check_invariants().unwrap();
        assert_eq!(
            exported(&replayed),
            want,
            "exported after replay, hash mask {hash_mask:#x}"
        );
        for gone in [made[0].id, made[6].id, made[3].id] {
            s.remove(&gs("gs-1"), gone).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(601)).await;
        sweeper::fire_due(&s);
        want.retain(|(_, id)| ![made[0].id, made[6].id, made[3].id].contains(id));
        assert_eq!(
            listed(&s),
            want,
            "hash mask {hash_mask:#x}, after purging three"
        );
        s.check_invariants().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn batch_is_all_or_nothing() {
    let s = store();
    register(&s, "gs-1", 3).await;
    reserve(&s, "gs-1", &["a"]).await.unwrap();
    assert!(matches!(
        reserve(&s, "gs-1", &["b", "c", "d"]).await,
        Err(Error::GameSessionFull {
            free: 2,
            requested: 3,
            ..
        })
    ));
    assert!(matches!(
        reserve(&s, "gs-1", &["b", "a"]).await,
        Err(Error::PlayerAlreadyInGameSession { .. })
    ));
    assert!(matches!(
        reserve(&s, "gs-1", &["b", "b"]).await,
        Err(Error::InvalidArgument { .. })
    ));
    let g = s.get_game_session(&gs("gs-1")).unwrap();
    assert_eq!(
        g.current_player_session_count, 1,
        "failed batches changed nothing"
    );
    assert_eq!(s.len().1, 1);
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn accept_checks_the_game_session() {
    let s = store();
    register(&s, "gs-1", 3).await;
    register(&s, "gs-2", 3).await;
    let p = reserve(&s, "gs-1", &["a"]).await.unwrap()[0].id;
    assert!(matches!(
        s.accept(&gs("gs-2"), p).await,
        Err(Error::PlayerSessionNotInGameSession { .. })
    ));
    assert!(matches!(
        s.accept(&gs("gs-9"), p).await,
        Err(Error::GameSessionNotFound(_))
    ));
    assert!(matches!(
        s.accept(&gs("gs-1"), PlayerSessionId::generate()).await,
        Err(Error::PlayerSessionNotFound(_))
    ));
    assert_eq!(
        s.get_player_session(p).unwrap().status,
        PlayerSessionStatus::Reserved
    );
}

#[tokio::test(start_paused = true)]
async fn update_and_end() {
    let s = store();
    register(&s, "gs-1", 3).await;
    let ps = reserve(&s, "gs-1", &["a", "b"]).await.unwrap();
    s.accept(&gs("gs-1"), ps[0].id).await.unwrap();
    assert!(matches!(
        s.update_game_session(&gs("gs-1"), Some(1), Some(CreationPolicy::DenyAll))
            .await,
        Err(Error::CapacityBelowCurrent { .. })
    ));
    assert_eq!(
        s.get_game_session(&gs("gs-1")).unwrap().creation_policy,
        CreationPolicy::AcceptAll,
        "a failed update changes nothing"
    );
    s.update_game_session(&gs("gs-1"), Some(2), Some(CreationPolicy::DenyAll))
        .await
        .unwrap();
    assert!(matches!(
        reserve(&s, "gs-1", &["c"]).await,
        Err(Error::CreationDenied(_))
    ));
    let ended = s
        .end_game_session(&gs("gs-1"), true, "segfault")
        .await
        .unwrap();
    assert_eq!(ended.status, GameSessionStatus::Error);
    assert_eq!(ended.current_player_session_count, 0);
    for p in &ps {
        let p = s.get_player_session(p.id).unwrap();
        assert_eq!(p.status, PlayerSessionStatus::Completed);
        assert_eq!(p.termination_time, ended.termination_time);
        assert_eq!(
            p.end_reason,
            Some(crate::domain::EndReason::GameSessionCrashed)
        );
    }
    let again = s
        .end_game_session(&gs("gs-1"), false, "other")
        .await
        .unwrap();
    assert_eq!(
        again.status,
        GameSessionStatus::Error,
        "ending is idempotent"
    );
    assert_eq!(again.termination_reason.as_deref(), Some("segfault"));
    assert!(matches!(
        reserve(&s, "gs-1", &["z"]).await,
        Err(Error::GameSessionNotActive { .. })
    ));
    assert!(matches!(
        s.heartbeat(&gs("gs-1")),
        Err(Error::GameSessionNotActive { .. })
    ));
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn idempotency_keys() {
    let s = store();
    register(&s, "gs-1", 2).await;
    let req = |players: &[&str], key: &str| {
        let mut r = reservation("gs-1", players);
        r.idempotency_key = IdempotencyKey::parse_optional("k", key).unwrap();
        r
    };
    let first = s.reserve(req(&["a"], "k1")).await.unwrap();
    let again = s.reserve(req(&["a"], "k1")).await.unwrap();
    assert_eq!(
        first[0].id, again[0].id,
        "a retry returns the original reservation"
    );
    assert_eq!(
        s.get_game_session(&gs("gs-1"))
            .unwrap()
            .current_player_session_count,
        1
    );
    assert_eq!(
        s.reserve(req(&["b"], "k1")).await.unwrap_err(),
        Error::IdempotencyKeyReused
    );
    // The key outlives the reservation timeout, then expires.
    tokio::time::advance(Duration::from_secs(61)).await;
    sweeper::fire_due(&s);
    let retried = s.reserve(req(&["a"], "k1")).await.unwrap();
    assert_eq!(retried[0].status, PlayerSessionStatus::TimedOut);
    tokio::time::advance(Duration::from_secs(600)).await;
    sweeper::fire_due(&s);
    let fresh = s.reserve(req(&["a"], "k1")).await.unwrap();
    assert_ne!(
        fresh[0].id, first[0].id,
        "expired key starts a new reservation"
    );
}

#[tokio::test(start_paused = true)]
async fn reservations_time_out_at_their_deadline() {
    let s = Arc::new(store());
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(sweeper::run(s.clone(), cancel.clone()));
    register(&s, "gs-1", 2).await;
    let ps = reserve(&s, "gs-1", &["a", "b"]).await.unwrap();
    s.accept(&gs("gs-1"), ps[1].id).await.unwrap();
    tokio::time::advance(Duration::from_millis(59_999)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        s.get_player_session(ps[0].id).unwrap().status,
        PlayerSessionStatus::Reserved
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    let timed_out = s.get_player_session(ps[0].id).unwrap();
    assert_eq!(timed_out.status, PlayerSessionStatus::TimedOut);
    assert_eq!(timed_out.termination_time, Some(ps[0].reservation_deadline));
    assert_eq!(
        s.get_player_session(ps[1].id).unwrap().status,
        PlayerSessionStatus::Active
    );
    assert_eq!(
        s.get_game_session(&gs("gs-1"))
            .unwrap()
            .current_player_session_count,
        1
    );
    s.check_invariants().unwrap();
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn heartbeat_loss_ends_the_game_session() {
    let s = Arc::new(store());
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(sweeper::run(s.clone(), cancel.clone()));
    let mut r = registration("hb", 4);
    r.reservation_timeout = Some(Duration::from_secs(600));
    r.heartbeat_timeout = Some(Duration::from_secs(10));
    s.register_game_session(r).await.unwrap();
    let ps = reserve(&s, "hb", &["a"]).await.unwrap();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(8)).await;
        s.heartbeat(&gs("hb")).unwrap();
    }
    tokio::task::yield_now().await;
    assert_eq!(
        s.get_game_session(&gs("hb")).unwrap().status,
        GameSessionStatus::Active
    );
    tokio::time::advance(Duration::from_millis(10_050)).await;
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    let g = s.get_game_session(&gs("hb")).unwrap();
    assert_eq!(g.status, GameSessionStatus::Error);
    assert_eq!(g.termination_reason.as_deref(), Some("heartbeat timeout"));
    let p = s.get_player_session(ps[0].id).unwrap();
    assert_eq!(p.status, PlayerSessionStatus::Completed);
    assert_eq!(p.end_reason, Some(crate::domain::EndReason::HeartbeatLost));
    cancel.cancel();
    task.await.unwrap();
}

/// Sessions sharing one handle (here: all of them) share their timers' heap entries' handle:
/// a fired timer times out or purges only the sessions that are due.
#[tokio::test(start_paused = true)]
async fn timers_behind_a_shared_handle_fire_only_what_is_due() {
    let mut s = store_with(StoreConfig {
        retention: Duration::from_secs(600),
        ..StoreConfig::default()
    });
    s.player_sessions.hash_mask = 0;
    register(&s, "gs-1", 4).await;
    let a = reserve(&s, "gs-1", &["a"]).await.unwrap()[0].id;
    tokio::time::advance(Duration::from_secs(30)).await;
    let b = reserve(&s, "gs-1", &["b"]).await.unwrap()[0].id;
    let status = |id| s.get_player_session(id).map(|p| p.status);
    tokio::time::advance(Duration::from_secs(31)).await;
    sweeper::fire_due(&s);
    assert_eq!(status(a), Ok(PlayerSessionStatus::TimedOut));
    assert_eq!(
        status(b),
        Ok(PlayerSessionStatus::Reserved),
        "b is due 30 s later"
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    sweeper::fire_due(&s);
    assert_eq!(status(b), Ok(PlayerSessionStatus::TimedOut));
    // a is purged 600 s after its deadline, b 30 s after that.
    tokio::time::advance(Duration::from_secs(570)).await;
    sweeper::fire_due(&s);
    assert!(status(a).is_err(), "a purged");
    assert_eq!(status(b), Ok(PlayerSessionStatus::TimedOut), "b kept");
    tokio::time::advance(Duration::from_secs(30)).await;
    sweeper::fire_due(&s);
    assert!(status(b).is_err(), "b purged");
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn retention_purges_history() {
    let s = store_with(StoreConfig {
        retention: Duration::from_secs(3600),
        ..StoreConfig::default()
    });
    register(&s, "gs-1", 4).await;
    let ps = reserve(&s, "gs-1", &["a", "b"]).await.unwrap();
    s.remove(&gs("gs-1"), ps[0].id).await.unwrap();
    tokio::time::advance(Duration::from_secs(3599)).await;
    sweeper::fire_due(&s);
    assert!(
        s.get_player_session(ps[0].id).is_ok(),
        "kept during retention"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    sweeper::fire_due(&s);
    assert!(
        s.get_player_session(ps[0].id).is_err(),
        "purged after retention"
    );
    // b timed out at 60 s, so it is purged at 3660 s; the game session is still active.
    tokio::time::advance(Duration::from_secs(60)).await;
    sweeper::fire_due(&s);
    assert!(s.get_player_session(ps[1].id).is_err());
    assert!(s.get_game_session(&gs("gs-1")).is_ok());
    s.end_game_session(&gs("gs-1"), false, "").await.unwrap();
    tokio::time::advance(Duration::from_secs(3601)).await;
    sweeper::fire_due(&s);
    assert!(s.get_game_session(&gs("gs-1")).is_err());
    assert_eq!(s.len(), (0, 0));
    s.check_invariants().unwrap();
}

#[tokio::test(start_paused = true)]
async fn describe_pages_in_order() {
    let s = store();
    register(&s, "gs-1", 1000).await;
    for i in 0..40 {
        reserve(&s, "gs-1", &[&format!("p{i}")]).await.unwrap();
        reserve(&s, "gs-1", &[&format!("q{i}"), &format!("r{i}")])
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let all = describe_all(&s, DescribeBy::GameSession(gs("gs-1")), 7);
    assert_eq!(all.len(), 120);
    let keys: Vec<_> = all.iter().map(|p| (p.creation_time, p.id)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        keys, sorted,
        "ordered by creation time then id, no duplicates"
    );
    let one = describe_all(
        &s,
        DescribeBy::Player(PlayerId::parse("p", "q3").unwrap()),
        1,
    );
    assert_eq!(one.len(), 1);
    let none = describe_all(
        &s,
        DescribeBy::Player(PlayerId::parse("p", "nobody").unwrap()),
        5,
    );
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reservers_never_overfill() {
    let s = Arc::new(store());
    register(&s, "race", 10).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { reserve(&s, "race", &[&format!("player-{i}")]).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(Error::GameSessionFull { .. })))
        .count();
    assert_eq!((ok, full), (10, 54));
    assert_eq!(
        s.get_game_session(&gs("race"))
            .unwrap()
            .current_player_session_count,
        10
    );
    s.check_invariants().unwrap();
}

/// One operation of the model tests.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Reserve(usize, Vec<usize>),
    Accept(usize, usize),
    Remove(usize, usize),
    Advance(u64),
    End(usize, bool),
    Resize(usize, u32),
    Heartbeat(usize),
    Deny(usize, bool),
    /// PlacePlayerSessions of these players; true = DISTRIBUTED.
    Place(Vec<usize>, bool),
    /// ReportPlayerSessionError; true = crashed.
    ReportError(usize, usize, bool),
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, prop::collection::vec(0..8usize, 1..4)).prop_map(|(g, p)| Op::Reserve(g, p)),
        3 => (0..3usize, any::<prop::sample::Index>()).prop_map(|(g, i)| Op::Accept(g, i.index(1 << 16))),
        2 => (0..3usize, any::<prop::sample::Index>()).prop_map(|(g, i)| Op::Remove(g, i.index(1 << 16))),
        2 => (0..90u64).prop_map(Op::Advance),
        1 => (0..3usize, any::<bool>()).prop_map(|(g, c)| Op::End(g, c)),
        1 => (0..3usize, 1..6u32).prop_map(|(g, m)| Op::Resize(g, m)),
        1 => (0..3usize).prop_map(Op::Heartbeat),
        1 => (0..3usize, any::<bool>()).prop_map(|(g, d)| Op::Deny(g, d)),
        2 => (prop::collection::vec(0..8usize, 1..4), any::<bool>()).prop_map(|(p, d)| Op::Place(p, d)),
        2 => (0..3usize, any::<prop::sample::Index>(), prop::bool::weighted(0.3))
            .prop_map(|(g, i, c)| Op::ReportError(g, i.index(1 << 16), c)),
    ]
}

pub(crate) const GAMES: [&str; 3] = ["g0", "g1", "g2"];

/// Registers the three game sessions the model tests use.
pub(crate) async fn register_model_games(s: &Store) {
    for (i, n) in GAMES.iter().enumerate() {
        let mut r = registration(n, 3);
        r.reservation_timeout = Some(Duration::from_secs(30 + 10 * i as u64));
        r.heartbeat_timeout = (i == 2).then(|| Duration::from_secs(45));
        s.register_game_session(r).await.unwrap();
    }
}

/// Runs one model operation; `created` collects every reserved session id.
pub(crate) async fn run_op(s: &Store, op: &Op, created: &mut Vec<PlayerSessionId>) {
    match op {
        Op::Reserve(g, players) => {
            let mut players: Vec<String> = players.iter().map(|p| format!("p{p}")).collect();
            players.sort();
            players.dedup();
            let refs: Vec<&str> = players.iter().map(String::as_str).collect();
            if let Ok(ps) = reserve(s, GAMES[*g], &refs).await {
                created.extend(ps.iter().map(|p| p.id));
            }
        }
        Op::Accept(g, i) if !created.is_empty() => {
            let _ = s.accept(&gs(GAMES[*g]), created[i % created.len()]).await;
        }
        Op::Remove(g, i) if !created.is_empty() => {
            let _ = s.remove(&gs(GAMES[*g]), created[i % created.len()]).await;
        }
        Op::Advance(secs) => {
            tokio::time::advance(Duration::from_secs(*secs)).await;
            sweeper::fire_due(s);
        }
        Op::End(g, crashed) => {
            let _ = s.end_game_session(&gs(GAMES[*g]), *crashed, "").await;
        }
        Op::Resize(g, max) => {
            let _ = s
                .update_game_session(&gs(GAMES[*g]), Some(*max), None)
                .await;
        }
        Op::Heartbeat(g) => {
            let _ = s.heartbeat(&gs(GAMES[*g]));
        }
        Op::Deny(g, deny) => {
            let p = if *deny {
                CreationPolicy::DenyAll
            } else {
                CreationPolicy::AcceptAll
            };
            let _ = s.update_game_session(&gs(GAMES[*g]), None, Some(p)).await;
        }
        Op::ReportError(g, i, crashed) if !created.is_empty() => {
            let _ = s
                .report_error(&gs(GAMES[*g]), created[i % created.len()], *crashed, "boom")
                .await;
        }
        Op::Place(players, distributed) => {
            let mut players: Vec<String> = players.iter().map(|p| format!("q{p}")).collect();
            players.sort();
            players.dedup();
            let strategy = if *distributed {
                PlacementStrategy::Distributed
            } else {
                PlacementStrategy::Packed
            };
            let place = placement(&players, strategy, "");
            if let Ok((_, ps)) = s.place(place).await {
                created.extend(ps.iter().map(|p| p.id));
            }
        }
        _ => {}
    }
}

/// What a watcher believes: game session id -> (count, max, policy).
type View = std::collections::BTreeMap<String, (u32, u32, CreationPolicy)>;

/// Applies every event the watch has ready (without waiting) to `view`.
fn drain_watch(w: &mut FleetWatch, view: &mut View) {
    use futures::FutureExt;
    while let Some(e) = w.next().now_or_never() {
        let e = e.expect("no lag in the model");
        let Some(g) = e.game_session else { continue };
        let key = g.id().to_string();
        match e.kind {
            FleetEventKind::Ended => {
                view.remove(&key);
            }
            _ => {
                view.insert(
                    key,
                    (
                        g.current_player_session_count,
                        g.maximum_player_session_count,
                        g.creation_policy,
                    ),
                );
            }
        }
    }
}

/// Searches of fleet-1 sorted by each order the index keeps (whose keys catch up lazily, see
/// `FleetIndex::refresh`) list its ACTIVE game sessions as sorting a scan of them does.
fn check_sorted_searches(s: &Store) -> Result<(), String> {
    let fleet = FleetId::parse("fleet_id", "fleet-1").unwrap();
    let search = |sort: &str| {
        s.search(&Search {
            fleet_id: fleet.clone(),
            filter: Default::default(),
            sort: crate::domain::Sort::parse("sort_expression", sort).unwrap(),
            selector: Default::default(),
            limit: 100,
            after: None,
        })
        .game_sessions
    };
    // Creation order never lags (creation times do not change): the scan.
    let all = search("");
    for operand in [
        "availablePlayerSessions",
        "playerSessionCount",
        "maximumSessions",
        "hasAvailablePlayerSessions",
    ] {
        for desc in [false, true] {
            let got: Vec<String> =
                search(&format!("{operand} {}", if desc { "DESC" } else { "ASC" }))
                    .iter()
                    .map(|g| g.id().to_string())
                    .collect();
            let op = crate::domain::Sort::parse("sort_expression", operand)
                .unwrap()
                .operand;
            let mut want: Vec<&GameSession> = all.iter().collect();
            want.sort_by(|a, b| {
                let order = (op.sort_value(a), a.creation_time, a.id()).cmp(&(
                    op.sort_value(b),
                    b.creation_time,
                    b.id(),
                ));
                if desc {
                    order.reverse()
                } else {
                    order
                }
            });
            let want: Vec<String> = want.iter().map(|g| g.id().to_string()).collect();
            if got != want {
                return Err(format!(
                    "{operand} desc={desc}: {got:?}, a sorted scan: {want:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The fleet's ACTIVE game sessions as a watcher should see them.
fn active_view(s: &Store) -> View {
    let page = s.search(&Search {
        fleet_id: FleetId::parse("fleet_id", "fleet-1").unwrap(),
        filter: Default::default(),
        sort: Default::default(),
        selector: Default::default(),
        limit: 100,
        after: None,
    });
    page.game_sessions
        .iter()
        .map(|g| {
            (
                g.id().to_string(),
                (
                    g.current_player_session_count,
                    g.maximum_player_session_count,
                    g.creation_policy,
                ),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of operations keeps count == RESERVED + ACTIVE <= max, keeps the indexes
    /// consistent, and never changes a terminal session again.
    #[test]
    fn invariants_hold_for_any_sequence(
        ops in prop::collection::vec(op(), 1..80),
        key_mask in prop_oneof![Just(u32::MAX), Just(1u32), Just(0u32)],
        // Half the cases with whole hashes, the rest with sessions sharing handles.
        hash_mask in prop_oneof![2 => Just(u32::MAX), 1 => Just(3u32), 1 => Just(0u32)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut s = store_with(StoreConfig {
                retention: Duration::from_secs(120),
                ..StoreConfig::default()
            });
            // Narrowed player keys: players share index entries and seat keys.
            s.key_mask = key_mask;
            // Narrowed session hashes: sessions share handles in the indexes.
            s.player_sessions.hash_mask = hash_mask;
            let s = Arc::new(s);
            register_model_games(&s).await;
            // A watcher kept up to date after every step must always match the fleet.
            let mut watch = s.watch_fleet(FleetId::parse("fleet_id", "fleet-1").unwrap(), Default::default());
            let mut view = View::new();
            let mut health = s.health().subscribe();
            let mut updates: Vec<Arc<crate::domain::HealthUpdate>> = Vec::new();
            let mut created: Vec<PlayerSessionId> = Vec::new();
            let mut terminal: HashMap<PlayerSessionId, (PlayerSessionStatus, Option<Timestamp>)> =
                HashMap::new();
            for op in &ops {
                run_op(&s, op, &mut created).await;
                s.check_invariants().map_err(TestCaseError::fail)?;
                check_sorted_searches(&s).map_err(TestCaseError::fail)?;
                drain_watch(&mut watch, &mut view);
                prop_assert_eq!(&view, &active_view(&s), "watcher view after {:?}", op);
                while let Ok(u) = health.try_recv() {
                    updates.push(u);
                }
                for id in &created {
                    let Ok(p) = s.get_player_session(*id) else { continue }; // purged
                    if let Some(prev) = terminal.get(id) {
                        prop_assert_eq!(*prev, (p.status, p.termination_time), "terminal session changed");
                    } else if p.status.is_terminal() {
                        terminal.insert(*id, (p.status, p.termination_time));
                    }
                }
            }
            // Listings, paged two at a time, hold exactly the retained sessions of that player
            // or game session in (creation time, id) order, whatever the player keys collide.
            let all: Vec<PlayerSession> =
                created.iter().filter_map(|id| s.get_player_session(*id).ok()).collect();
            let order = |mut v: Vec<&PlayerSession>| {
                v.sort_by_key(|p| (p.creation_time, p.id));
                v.into_iter().map(|p| p.id).collect::<Vec<_>>()
            };
            let players: std::collections::BTreeSet<&str> = all.iter().map(|p| p.player_id()).collect();
            for player in players {
                let want = order(all.iter().filter(|p| p.player_id() == player).collect());
                let by = DescribeBy::Player(PlayerId::parse("player_id", player).unwrap());
                let got: Vec<_> = describe_all(&s, by, 2).iter().map(|p| p.id).collect();
                prop_assert_eq!(got, want, "sessions of {}", player);
            }
            let games: std::collections::BTreeSet<&GameSessionId> = all.iter().map(|p| &p.game.id).collect();
            for g in games {
                let want = order(all.iter().filter(|p| &p.game.id == g).collect());
                let got: Vec<_> = describe_all(&s, DescribeBy::GameSession(g.clone()), 2)
                    .iter()
                    .map(|p| p.id)
                    .collect();
                prop_assert_eq!(got, want, "sessions of {}", g);
            }
            // Health: per session exactly one init (the first update), sequence increasing, at
            // most one terminal update and nothing after it; it matches the final state.
            let mut per: HashMap<PlayerSessionId, Vec<&crate::domain::HealthUpdate>> = HashMap::new();
            for u in &updates {
                per.entry(u.player_session_id).or_default().push(u);
            }
            for id in &created {
                let us = per.get(id).cloned().unwrap_or_default();
                prop_assert!(!us.is_empty(), "{} has no health update", id);
                prop_assert!(us[0].init && us[1..].iter().all(|u| !u.init), "one init first: {:?}", us);
                prop_assert!(us.windows(2).all(|w| w[0].sequence < w[1].sequence));
                let terminals = us.iter().filter(|u| u.status.is_terminal()).count();
                prop_assert!(terminals <= 1, "{} terminal updates", terminals);
                if terminals == 1 {
                    prop_assert!(us.last().unwrap().status.is_terminal(), "nothing after the terminal update");
                }
                if let Ok(p) = s.get_player_session(*id) {
                    prop_assert_eq!(terminals == 1, p.status.is_terminal(), "{:?}", p.status);
                    prop_assert_eq!(us.last().unwrap().status, crate::domain::HealthStatus::of(&p));
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_slow_watcher_gets_coalesced_changes_then_is_cut_off() {
    let s = Arc::new(store_with(StoreConfig {
        watch_buffer: 3,
        ..StoreConfig::default()
    }));
    register(&s, "w1", 10).await;
    let fleet = FleetId::parse("fleet_id", "fleet-1").unwrap();
    let mut w = s.watch_fleet(fleet.clone(), Default::default());
    let first = w.next().await.unwrap();
    assert_eq!(first.kind, FleetEventKind::Snapshot);
    let done = w.next().await.unwrap();
    assert_eq!(done.kind, FleetEventKind::SnapshotComplete);
    // Five changes to w1 and a new w2 (created, then filled) while the consumer is away.
    for i in 0..5 {
        reserve(&s, "w1", &[&format!("p{i}")]).await.unwrap();
    }
    register(&s, "w2", 10).await;
    reserve(&s, "w2", &["x"]).await.unwrap();
    let a = w.next().await.unwrap();
    assert_eq!(a.kind, FleetEventKind::Updated);
    let g = a.game_session.unwrap();
    assert_eq!((g.id().as_str(), g.current_player_session_count), ("w1", 5));
    assert_eq!(
        a.sequence,
        done.sequence + 5,
        "the latest change's sequence number"
    );
    let b = w.next().await.unwrap();
    assert_eq!(
        b.kind,
        FleetEventKind::Created,
        "never seen: still reported as created"
    );
    assert_eq!(b.game_session.unwrap().current_player_session_count, 1);
    assert!(b.sequence > a.sequence);
    // Changes to more game sessions than the buffer holds: cut off, for good.
    for id in ["w3", "w4", "w5", "w6"] {
        register(&s, id, 10).await;
    }
    for _ in 0..2 {
        match w.next().await {
            Err(Error::WatchLagged { buffer: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    // Dropping the watch unsubscribes.
    drop(w);
    assert!(s.fleets.get(&fleet).unwrap().watchers.is_empty());
}

#[tokio::test]
async fn placement_skips_full_denied_and_filtered_game_sessions() {
    let s = store();
    for (id, max) in [("a", 4), ("b", 6), ("c", 8)] {
        register(&s, id, max).await;
    }
    s.update_game_session(&gs("c"), None, Some(CreationPolicy::DenyAll))
        .await
        .unwrap();
    let place = |players: &[&str], strategy, filter: &str| placement(players, strategy, filter);
    let (g, _) = s
        .place(place(&["1", "2", "3"], PlacementStrategy::Packed, ""))
        .await
        .unwrap();
    assert_eq!(g.id().as_str(), "a");
    let (g, _) = s
        .place(place(&["4", "5"], PlacementStrategy::Packed, ""))
        .await
        .unwrap();
    assert_eq!(g.id().as_str(), "b", "a has 1 seat left");
    let (g, _) = s
        .place(place(&["6"], PlacementStrategy::Distributed, ""))
        .await
        .unwrap();
    assert_eq!(g.id().as_str(), "b", "4 free in b, 1 in a, c denies");
    let (g, _) = s
        .place(place(
            &["7"],
            PlacementStrategy::Packed,
            "maximumSessions > 4",
        ))
        .await
        .unwrap();
    assert_eq!(g.id().as_str(), "b");
    match s
        .place(place(
            &["8", "9", "10", "11"],
            PlacementStrategy::Packed,
            "",
        ))
        .await
    {
        Err(Error::NoGameSessionAvailable { requested: 4, .. }) => {}
        other => panic!("{other:?}"),
    }
    s.check_invariants().unwrap();
}

/// A placement tries at most 64 candidates: one whose player already sits in every game
/// session of the fleet ends with PlacementContention after 64 of them, not after all; with
/// fewer such game sessions it runs out of candidates instead. Neither leaves anything behind.
#[tokio::test]
async fn placement_gives_up_after_64_candidates() {
    let s = store();
    let place = |players: &[&str]| placement(players, PlacementStrategy::Packed, "");
    for i in 0..10 {
        let id = format!("g{i}");
        register(&s, &id, 4).await;
        reserve(&s, &id, &["everywhere"]).await.unwrap();
    }
    let sessions = |s: &Store| s.all_fleet_counts();
    let before = sessions(&s);
    match s.place(place(&["everywhere", "friend"])).await {
        Err(Error::NoGameSessionAvailable { requested: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    for i in 10..70 {
        let id = format!("g{i}");
        register(&s, &id, 4).await;
        reserve(&s, &id, &["everywhere"]).await.unwrap();
    }
    let before_70 = sessions(&s);
    assert_ne!(before, before_70);
    match s.place(place(&["everywhere", "friend"])).await {
        Err(Error::PlacementContention(fleet)) => assert_eq!(fleet.as_str(), "fleet-1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sessions(&s), before_70, "nothing reserved");
    let friend = DescribeBy::Player(PlayerId::parse("player_id", "friend").unwrap());
    assert!(describe_all(&s, friend, 10).is_empty());
    s.check_invariants().unwrap();
    // The bound is per call: a party without that player is placed at once.
    let (g, created) = s.place(place(&["friend"])).await.unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(g.current_player_session_count, 2);
}

#[tokio::test]
async fn watching_an_unknown_fleet_leaves_no_trace() {
    let s = Arc::new(store());
    let ghost = FleetId::parse("fleet_id", "ghost").unwrap();
    let w = s.watch_fleet(ghost.clone(), Default::default());
    assert!(
        s.all_fleet_counts().is_empty(),
        "a watched fleet is not a fleet"
    );
    drop(w);
    assert!(s.fleets.get(&ghost).is_none());
    // A real fleet stays after its watcher leaves.
    register(&s, "g1", 2).await;
    let fleet = FleetId::parse("fleet_id", "fleet-1").unwrap();
    drop(s.watch_fleet(fleet.clone(), Default::default()));
    assert_eq!(s.all_fleet_counts().len(), 1);
}

/// Replay's batched reservations leave the store as applying them one by one does: a session
/// already there (or twice in one batch) changes nothing, a reservation of a game session that
/// is not there is dropped, and a later change of the same worker sees the batch applied.
#[tokio::test(start_paused = true)]
async fn batched_replay_matches_one_by_one() {
    let live = store();
    let ga = register(&live, "gs-a", 10).await;
    let gb = register(&live, "gs-b", 10).await;
    register(&live, "gs-x", 10).await;
    let a = reserve(&live, "gs-a", &["p1", "p2"]).await.unwrap();
    let b = reserve(&live, "gs-b", &["p1"]).await.unwrap();
    let x = reserve(&live, "gs-x", &["p3"]).await.unwrap();
    let at = a[1].creation_time;
    let changes = vec![
        Change::GameSessionStarted(ga),
        Change::GameSessionStarted(gb),
        Change::Reserved(a[0].clone()),
        Change::Reserved(b[0].clone()),
        Change::Reserved(a[0].clone()),
        Change::Reserved(x[0].clone()),
        Change::Reserved(a[1].clone()),
        Change::Accepted {
            id: a[1].id,
            game_session_id: gs("gs-a"),
            at,
        },
        Change::Reserved(b[0].clone()),
    ];
    let (one, batched) = (store(), store());
    let mut batch = ReplayBatch::default();
    for (i, c) in changes.into_iter().enumerate() {
        let lsn = i as Lsn + 1;
        one.apply(c.clone(), lsn);
        batched.apply_batched(&mut batch, c, lsn);
    }
    batched.flush_replay(&mut batch);
    let view = |s: &Store| {
        let mut out: Vec<String> = ["gs-a", "gs-b"]
            .iter()
            .map(|g| {
                let game = s.get_game_session(&gs(g)).unwrap();
                let players = describe_all(s, DescribeBy::GameSession(gs(g)), 10);
                format!("{g} {} {:?}", game.current_player_session_count, players)
            })
            .collect();
        let p1 = PlayerId::parse("player_id", "p1").unwrap();
        out.push(format!("{:?}", describe_all(s, DescribeBy::Player(p1), 10)));
        out.push(format!("{}", s.player_sessions.len()));
        out
    };
    assert_eq!(view(&batched), view(&one));
    assert_eq!(
        batched.player_sessions.len(),
        3,
        "no duplicate, nothing of gs-x"
    );
    assert!(batched.get_player_session(x[0].id).is_err());
    assert_eq!(
        batched.get_player_session(a[1].id).unwrap().status,
        PlayerSessionStatus::Active
    );
}

/// A player named twice is refused, naming the field and the player, whether the party is
/// small enough to compare pairs or large enough to hash; distinct players pass either way.
#[test]
fn a_party_with_a_repeated_player_is_refused_at_any_size() {
    for size in [2, super::SMALL_PARTY, super::SMALL_PARTY + 1, 100] {
        let mut names: Vec<String> = (0..size).map(|i| format!("p{i}")).collect();
        super::validate_party(&party(&names), 100).unwrap();
        names[size - 1] = "p0".into();
        let e = super::validate_party(&party(&names), 100).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("player_ids") && text.contains("p0 appears"),
            "{size}: {text}"
        );
    }
    let one = party(&["solo"]);
    super::validate_party(&one, 1).unwrap();
}

/// The index's numeric orders catch up lazily: reservations only mark a game session stale,
/// several changes to one game session are applied in one step by the next search or
/// placement, a game session that ends while stale leaves no trace, and a placement picks by
/// the seats as they are now.
#[tokio::test(start_paused = true)]
async fn lazily_refreshed_orders_match_the_game_sessions() {
    let s = store();
    for (g, max) in [("gs-a", 10), ("gs-b", 10), ("gs-c", 10)] {
        register(&s, g, max).await;
    }
    reserve(&s, "gs-a", &["a1", "a2"]).await.unwrap();
    reserve(&s, "gs-a", &["a3"]).await.unwrap();
    reserve(&s, "gs-b", &["b1"]).await.unwrap();
    reserve(&s, "gs-c", &["c1", "c2", "c3", "c4"])
        .await
        .unwrap();
    // Three game sessions changed, each once in the stale list, none refreshed yet.
    s.check_invariants().unwrap();
    s.end_game_session(&gs("gs-c"), false, "").await.unwrap();
    s.check_invariants().unwrap();
    check_sorted_searches(&s).unwrap();
    // PACKED: the fullest that fits (gs-a, 7 free) over gs-b (9 free), as of now.
    let (g, _) = s
        .place(placement(
            &["p1", "p2", "p3"],
            PlacementStrategy::Packed,
            "",
        ))
        .await
        .unwrap();
    assert_eq!(g.id(), &gs("gs-a"));
    // gs-a now has 4 free seats and is stale again: DISTRIBUTED picks gs-b (9 free).
    let (g, _) = s
        .place(placement(&["p4"], PlacementStrategy::Distributed, ""))
        .await
        .unwrap();
    assert_eq!(g.id(), &gs("gs-b"));
    s.check_invariants().unwrap();
    check_sorted_searches(&s).unwrap();
}
