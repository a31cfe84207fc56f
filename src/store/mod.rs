//! The in-memory state: game sessions in a DashMap, player sessions in sharded hash tables
//! (`store/tables.rs`), with secondary indexes (player sessions by game session and by player) kept
//! consistent under the game session's lock.
//!
//! Locking rules (so nothing deadlocks and capacity holds under any concurrency):
//! - Every change to a player session happens while holding its game session's entry
//!   (`game_sessions.get_mut`): the seat count, the seats taken and the player session change
//!   together, so N racing reservers for the last seat see exactly one winner.
//! - Lock order: `game_sessions` -> `idempotency` -> journal append -> `player_sessions` ->
//!   `error_logs` -> `by_player` -> timer heap. Code that needs a player session's game
//!   session first reads the id and drops the guard.
//! - Every mutation validates first, then appends its changes to the journal (still under the
//!   game session's lock, so LSN order is the order of application), then applies them; after
//!   releasing every lock the caller waits until the records are durable. A failed call changes
//!   nothing. No lock is ever held across an `.await`.

mod fleets;
mod import;
mod ops;
pub mod page_token;
mod placement;
mod positions;
mod release_health;
mod replay;
mod search;
mod tables;
mod watch;

use std::{collections::HashMap, sync::Arc, time::Duration};

use dashmap::DashMap;

pub use fleets::{FleetCounts, Transition};
pub use import::{ImportJob, JobStatus, RowError, RowOutcome, MAX_JOB_ERRORS};
pub use page_token::{Fingerprint, PageToken, SearchPageToken};
pub use placement::Place;
pub use release_health::{HealthCounts, ReleaseHealthQuery, ReleaseHealthReport};
pub use replay::ReplayBatch;
pub use search::{LabelSelector, PlacementStrategy, Search, SearchPage, SearchPosition};
pub use tables::SessionHandle;
pub use watch::{FleetEvent, FleetEventKind, FleetWatch};

use crate::{
    domain::{
        limits, Clock, Error, ErrorLog, GameSession, GameSessionId, GameSessionInfo,
        IdempotencyKey, Lsn, PlayerId, PlayerSession, PlayerSessionId, PlayerSessionStatus,
        PlayerStrings, Result, Timestamp,
    },
    journal::Journal,
    sweeper::{Timer, Timers},
};

/// Store-wide settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Reservation timeout of game sessions that do not set their own.
    pub reservation_timeout: Duration,
    /// How long terminal player sessions and ended game sessions are kept.
    pub retention: Duration,
    /// How long an idempotency key is remembered (at least the reservation timeout).
    pub idempotency_ttl: Duration,
    /// WatchFleet: game sessions with undelivered changes a watcher may fall behind by.
    pub watch_buffer: usize,
    /// Per-fleet defaults and limits (config file `[fleets.<id>]`).
    pub fleets: HashMap<crate::domain::FleetId, crate::config::FleetSettings>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            reservation_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(600),
            watch_buffer: 4096,
            fleets: HashMap::new(),
        }
    }
}

/// Hasher of every map: much faster than SipHash, still seeded per process (DoS-resistant).
type Hasher = ahash::RandomState;
type Map<K, V> = DashMap<K, V, Hasher>;

/// Shards per map: many more than cores, so concurrent calls rarely share a shard lock.
const SHARDS: usize = 128;

fn map<K: Eq + std::hash::Hash + Clone, V>() -> Map<K, V> {
    DashMap::with_hasher_and_shard_amount(Hasher::new(), SHARDS)
}

/// A game session with its indexes.
struct GameSessionEntry {
    session: GameSession,
    /// Every retained player session of this game session, in listing order.
    players: positions::Positions,
    /// The RESERVED or ACTIVE player session of each player holding a seat.
    live: Seats,
}

impl GameSessionEntry {
    fn new(session: GameSession) -> Self {
        GameSessionEntry {
            session,
            players: Default::default(),
            live: Seats::default(),
        }
    }
    fn snapshot(&self) -> GameSession {
        self.session.clone()
    }
    fn sync_count(&mut self) {
        self.session.current_player_session_count = self.live.len() as u32;
    }
}

/// Whether a session is one of the game session `gsid` created at `t`: what a listing entry
/// of that time finds behind its handle (see [`positions`]).
fn created_at(gsid: &GameSessionId, t: Timestamp) -> impl Fn(&PlayerSession) -> bool + '_ {
    move |p| p.creation_time == t && &p.game.id == gsid
}

/// Which sessions of the session map a game session's listing does not hold yet
/// ([`Store::listed`]).
type Unlisted<'a> = &'a dyn Fn(&PlayerSessionId) -> bool;

/// [`Unlisted`] when every session in the map is listed.
fn all_listed(_: &PlayerSessionId) -> bool {
    false
}

/// What the indexes keep of a player session being added ([`Store::index_player`] and
/// replay's batches), taken before the session moves into the session map.
#[derive(Clone, Copy)]
struct NewPlayer {
    key: u32,
    id: PlayerSessionId,
    handle: SessionHandle,
    live: bool,
    created: Timestamp,
}

/// The seats taken in one game session: the live player session of each player, as the
/// player's key ([`Store::player_key`]) and the session's handle ([`SessionHandle`]). Both
/// collide, so a seat is confirmed against the sessions it leads to (their player id, game
/// session and status): a 32-bit collision can never pass for the same player.
///
/// Two flat vectors instead of a map keyed by player id: 8 bytes a seat instead of a map slot
/// with its own copy of the key (about 68 bytes a seat in a full 1,000-seat game session). A
/// lookup scans at most `maximum_player_session_count` (<= 1,000) contiguous keys.
#[derive(Default)]
struct Seats {
    keys: Vec<u32>,
    handles: Vec<SessionHandle>,
}

impl Seats {
    fn len(&self) -> usize {
        self.handles.len()
    }
    fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
    /// The first session `confirm` finds behind a seat under `key` (it is only asked when the
    /// key matches).
    fn of(
        &self,
        key: u32,
        confirm: impl Fn(SessionHandle) -> Option<PlayerSessionId>,
    ) -> Option<PlayerSessionId> {
        self.keys
            .iter()
            .zip(&self.handles)
            .filter(|(k, _)| **k == key)
            .find_map(|(_, h)| confirm(*h))
    }
    fn insert(&mut self, key: u32, handle: SessionHandle) {
        self.keys.push(key);
        self.handles.push(handle);
    }
    /// Frees one seat under `key` and `handle` (nothing if there is none; two seats with both
    /// equal are interchangeable).
    fn remove(&mut self, key: u32, handle: SessionHandle) {
        if let Some(i) = self
            .keys
            .iter()
            .zip(&self.handles)
            .position(|(k, h)| *k == key && *h == handle)
        {
            self.keys.swap_remove(i);
            self.handles.swap_remove(i);
        }
    }
    fn handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.handles.iter().copied()
    }
}

struct IdempotencyRecord {
    fingerprint: u64,
    player_session_ids: Vec<PlayerSessionId>,
    expires: Timestamp,
}

/// A validated reservation request (CreatePlayerSession or CreatePlayerSessions).
#[derive(Debug, Clone)]
pub struct Reserve {
    pub game_session_id: GameSessionId,
    /// 1-25 distinct players with optional player data.
    pub players: Vec<PlayerStrings>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Up to this many players, [`validate_party`] compares pairs instead of hashing.
const SMALL_PARTY: usize = 32;

/// Checks a party holds 1 to `max` distinct players.
fn validate_party(players: &[PlayerStrings], max: usize) -> Result<()> {
    if players.is_empty() || players.len() > max {
        return Err(Error::invalid(
            "player_ids",
            format!("must hold 1 to {max} player ids, got {}", players.len()),
        ));
    }
    let repeated = |p: &str| {
        Error::invalid(
            "player_ids",
            format!("player id {p} appears more than once"),
        )
    };
    // Parties are small (one player, most often): comparing each pair is cheaper than a hash
    // set, and allocates nothing on the reservation path.
    if players.len() <= SMALL_PARTY {
        for (i, a) in players.iter().enumerate() {
            if let Some(b) = players[i + 1..]
                .iter()
                .find(|b| b.player_id() == a.player_id())
            {
                return Err(repeated(b.player_id()));
            }
        }
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(players.len());
    for p in players.iter().map(PlayerStrings::player_id) {
        if !seen.insert(p) {
            return Err(repeated(p));
        }
    }
    Ok(())
}

impl Reserve {
    /// Checks there are 1 to `max` distinct players.
    fn validate(&self, max: usize) -> Result<()> {
        validate_party(&self.players, max)
    }

    /// A stable fingerprint of the request, to tell a retry from a different request.
    fn fingerprint(&self) -> u64 {
        let mut f = Fingerprint::default().str(self.game_session_id.as_str());
        for p in &self.players {
            f = f.str(p.player_id()).str(p.player_data().unwrap_or(""));
        }
        f.finish()
    }
}

/// Which player sessions DescribePlayerSessions lists.
#[derive(Debug, Clone)]
pub enum DescribeBy {
    PlayerSession(PlayerSessionId),
    GameSession(GameSessionId),
    Player(PlayerId),
}

/// A validated DescribePlayerSessions request.
#[derive(Debug, Clone)]
pub struct Describe {
    pub by: DescribeBy,
    pub status: Option<PlayerSessionStatus>,
    /// 1..=1024.
    pub limit: u32,
    /// Continue after this position (from a page token).
    pub after: Option<(Timestamp, PlayerSessionId)>,
}

impl Describe {
    /// Fingerprint of the query (not the position), bound into page tokens.
    pub fn query_fingerprint(by: &DescribeBy, status: Option<PlayerSessionStatus>) -> u64 {
        let f = match by {
            DescribeBy::PlayerSession(id) => Fingerprint::default().str("ps").str(&id.to_string()),
            DescribeBy::GameSession(id) => Fingerprint::default().str("gs").str(id.as_str()),
            DescribeBy::Player(id) => Fingerprint::default().str("p").str(id.as_str()),
        };
        f.str(status.map_or("", |s| s.as_str())).finish()
    }
}

/// One page of player sessions.
#[derive(Debug, Clone)]
pub struct Page {
    pub player_sessions: Vec<PlayerSession>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<(Timestamp, PlayerSessionId)>,
}

/// The whole in-memory state.
pub struct Store {
    clock: Clock,
    config: StoreConfig,
    journal: Journal,
    game_sessions: Map<GameSessionId, GameSessionEntry>,
    /// Records in per-shard slabs and 4-byte slot numbers in the tables (hashed by the id
    /// inside the record), so a table, half empty after each doubling, costs little.
    player_sessions: tables::SessionMap,
    /// Player sessions of each player, by the player's key ([`Store::player_key`]): a
    /// 4-byte key instead of a copy of the id. Two players whose keys collide share a key;
    /// readers filter by player id.
    by_player: tables::PlayerIndex,
    /// Seeds [`Store::player_key`] (random per process, so keys cannot be aimed at).
    player_keys: Hasher,
    /// Tests narrow the keys to force collisions.
    #[cfg(test)]
    key_mask: u32,
    /// The error logs of the player sessions that reported errors (most never do, so the
    /// records keep only a count).
    error_logs: Map<PlayerSessionId, ErrorLog>,
    idempotency: Map<IdempotencyKey, IdempotencyRecord>,
    fleets: Map<crate::domain::FleetId, fleets::Fleet>,
    timers: Timers,
    health: crate::health::HealthHub,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// The analytics dispatcher's cursor (journaled, in snapshots): the next LSN to deliver,
    /// 0 if it never ran.
    analytics_next: std::sync::atomic::AtomicU64,
    /// Import jobs by id (journaled, in snapshots).
    jobs: parking_lot::Mutex<std::collections::BTreeMap<Arc<str>, ImportJob>>,
}

impl Store {
    /// A store whose changes go to `journal` (use [`Journal::disabled`] for memory only).
    pub fn new(clock: Clock, config: StoreConfig, journal: Journal) -> Self {
        let health = crate::health::HealthHub::new(config.watch_buffer);
        Store {
            clock,
            config,
            journal,
            game_sessions: map(),
            player_sessions: Default::default(),
            by_player: Default::default(),
            player_keys: Hasher::new(),
            #[cfg(test)]
            key_mask: u32::MAX,
            error_logs: map(),
            idempotency: map(),
            fleets: map(),
            timers: Timers::default(),
            health,
            metrics: std::sync::OnceLock::new(),
            analytics_next: std::sync::atomic::AtomicU64::new(0),
            jobs: parking_lot::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// A store without a journal (state lives in memory only).
    pub fn in_memory(clock: Clock, config: StoreConfig) -> Self {
        Self::new(clock, config, Journal::disabled())
    }

    /// The 32-bit key of a player in the player indexes (players' keys collide: whoever finds
    /// a session under a key checks its player id).
    fn player_key(&self, player: &str) -> u32 {
        let key = self.player_keys.hash_one(player) as u32;
        #[cfg(test)]
        let key = key & self.key_mask;
        key
    }

    /// What finds the player sessions behind listing positions of the game session `gsid`
    /// (see [`positions`]): its sessions created at a time with a handle, but for those
    /// `unlisted` (in the session map, not yet in the listing: a replay batch's later ones).
    fn listed<'a>(
        &'a self,
        gsid: &'a GameSessionId,
        unlisted: Unlisted<'a>,
    ) -> impl positions::Resolve + 'a {
        move |t, h| {
            let mut ids = self.player_sessions.ids_at_where(h, created_at(gsid, t));
            if ids.len() > 1 {
                // A 32-bit handle collision: only then can an unlisted session be among them.
                ids.retain(|id| !unlisted(id));
            }
            ids
        }
    }

    /// The player sessions of the game session `e` in listing order, after `after` (all for
    /// `None`). Call with `e` locked and no player session guard held.
    fn listing<'a>(
        &'a self,
        e: &'a GameSessionEntry,
        after: Option<(Timestamp, PlayerSessionId)>,
    ) -> impl Iterator<Item = PlayerSessionId> + 'a {
        e.players
            .after(after, self.listed(e.session.id(), &all_listed))
            .map(|(_, id)| id)
    }

    /// Calls `f` with each player session of the game session `e`, in listing order: each
    /// entry's record read by its handle in one probe of the session map, or, when some
    /// positions are kept whole, through the resolving listing (a handle to its id, then the
    /// id to its record). Call with `e` locked and no player session guard held; `f` runs
    /// under a session map shard's read lock.
    fn for_each_listed(&self, e: &GameSessionEntry, mut f: impl FnMut(&PlayerSession)) {
        match e.players.in_order_unresolved() {
            Some(entries) => {
                for (t, h) in entries {
                    self.player_sessions
                        .for_each_at(h, created_at(e.session.id(), t), &mut f);
                }
            }
            None => {
                for psid in self.listing(e, None) {
                    if let Some(ps) = self.player_sessions.get(&psid) {
                        f(&ps);
                    }
                }
            }
        }
    }

    /// Adds a player session new to the store (and already in the session map) to the
    /// indexes of its game session `e`; `unlisted` are the sessions in the map that will be
    /// added after it.
    fn add_player(&self, e: &mut GameSessionEntry, p: &NewPlayer, unlisted: Unlisted<'_>) {
        if p.live {
            e.live.insert(p.key, p.handle);
        }
        let resolve = self.listed(e.session.id(), unlisted);
        e.players.insert((p.created, p.id), p.handle, resolve);
    }

    /// The live player session of `player` in the game session `e` (call with `e` locked and no
    /// player session guard held).
    fn seat_of(&self, e: &GameSessionEntry, player: &str) -> Option<PlayerSessionId> {
        e.live.of(self.player_key(player), |h| {
            self.seated(e, h, |p| p.player.is(player)).next()
        })
    }

    /// The live player sessions of the game session `e` behind the seat handle `h` that also
    /// pass `also` (one; more only on a collision). Call with `e` locked and no player session
    /// guard held.
    fn seated<'a>(
        &'a self,
        e: &'a GameSessionEntry,
        h: SessionHandle,
        also: impl Fn(&PlayerSession) -> bool + 'a,
    ) -> impl Iterator<Item = PlayerSessionId> + 'a {
        self.player_sessions
            .ids_at(h)
            .into_iter()
            .filter(move |id| {
                self.player_sessions
                    .get(id)
                    .is_some_and(|p| p.status.is_live() && &p.game.id == e.session.id() && also(&p))
            })
    }

    /// The live player sessions of the game session `e`, each once (in id order). Call with
    /// `e` locked and no player session guard held.
    fn live_players(&self, e: &GameSessionEntry) -> Vec<PlayerSessionId> {
        let mut ids: Vec<_> = e
            .live
            .handles()
            .flat_map(|h| self.seated(e, h, |_| true))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Where session health updates are published.
    pub fn health(&self) -> &crate::health::HealthHub {
        &self.health
    }

    /// Publishes the health update of `ps` (of game session `g`) after the change journaled at
    /// `lsn`. Call from live transitions only, under the game session's lock (so updates of one
    /// session are published in LSN order).
    fn emit_health(
        &self,
        g: &GameSession,
        ps: &PlayerSession,
        lsn: crate::domain::Lsn,
        at: Timestamp,
    ) {
        if self.health.wanted() {
            self.health
                .publish(crate::domain::HealthUpdate::of(ps, g, lsn, at));
        }
    }

    /// Attaches the daemon's metrics (sweeper lag and expiries are recorded here).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Where the analytics dispatcher resumes: the LSN after the last one it delivered, or
    /// `None` if it never ran on this journal.
    pub fn analytics_resume_lsn(&self) -> Option<crate::domain::Lsn> {
        let next = self
            .analytics_next
            .load(std::sync::atomic::Ordering::SeqCst);
        (next > 0).then_some(next)
    }

    /// Moves the analytics cursor forward: every record up to `through` was delivered (never
    /// moves back). The dispatcher calls it before journaling the cursor, replay and snapshot
    /// loading after.
    pub fn note_analytics_delivered(&self, through: crate::domain::Lsn) {
        self.analytics_next
            .fetch_max(through + 1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Number of retained game sessions and player sessions.
    pub fn len(&self) -> (usize, usize) {
        (self.game_sessions.len(), self.player_sessions.len())
    }

    pub fn get_game_session(&self, id: &GameSessionId) -> Result<GameSession> {
        self.game_sessions
            .get(id)
            .map(|e| e.snapshot())
            .ok_or_else(|| Error::GameSessionNotFound(id.clone()))
    }

    /// The fleet of a game session (authorization checks; no copy of the session).
    pub fn game_session_fleet(&self, id: &GameSessionId) -> Option<crate::domain::FleetId> {
        self.game_sessions
            .get(id)
            .map(|e| e.session.fleet_id().clone())
    }

    /// The fleet of a player session's game session.
    pub fn player_session_fleet(&self, id: PlayerSessionId) -> Option<crate::domain::FleetId> {
        self.player_sessions
            .get(&id)
            .map(|p| p.game.fleet_id.clone())
    }

    pub fn get_player_session(&self, id: PlayerSessionId) -> Result<PlayerSession> {
        self.player_session(&id)
            .ok_or(Error::PlayerSessionNotFound(id))
    }

    /// A copy of player session `id` (the map holds it in its slab).
    fn player_session(&self, id: &PlayerSessionId) -> Option<PlayerSession> {
        self.player_sessions
            .get(id)
            .map(|p| PlayerSession::clone(&p))
    }

    /// The player and creation time of a player session (no copy of the rest).
    pub fn player_identity(&self, id: PlayerSessionId) -> Option<(String, Timestamp)> {
        self.player_sessions
            .get(&id)
            .map(|p| (p.player_id().to_string(), p.creation_time))
    }

    /// The fixed part of game session `id` (a `GameSessionId` or a `&str`).
    pub fn game_info<Q>(&self, id: &Q) -> Option<Arc<GameSessionInfo>>
    where
        Q: std::hash::Hash + Eq + ?Sized,
        GameSessionId: std::borrow::Borrow<Q>,
    {
        self.game_sessions.get(id).map(|e| e.session.info.clone())
    }

    /// Lists player sessions, ordered by creation time then id.
    pub fn describe(&self, q: &Describe) -> Result<Page> {
        let limit = q.limit.clamp(1, limits::DESCRIBE_LIMIT_MAX) as usize;
        // By player: the index entry may hold another player's sessions (a key collision).
        let player = match &q.by {
            DescribeBy::Player(p) => Some(p),
            _ => None,
        };
        let matches = |ps: &PlayerSession| {
            q.status.is_none_or(|s| ps.status == s)
                && player.is_none_or(|p| ps.player.is(p.as_str()))
        };
        let mut out = Vec::with_capacity(limit.min(64));
        let mut next = None;
        let mut take = |id: PlayerSessionId, out: &mut Vec<PlayerSession>| -> bool {
            if let Some(ps) = self.player_sessions.get(&id) {
                if matches(&ps) {
                    if out.len() == limit {
                        next = out.last().map(|p: &PlayerSession| (p.creation_time, p.id));
                        return false;
                    }
                    out.push(PlayerSession::clone(&ps));
                }
            }
            true
        };
        match &q.by {
            DescribeBy::PlayerSession(id) => {
                if let Some(ps) = self.player_sessions.get(id) {
                    let after_ok = q.after.is_none_or(|a| (ps.creation_time, ps.id) > a);
                    if matches(&ps) && after_ok {
                        out.push(PlayerSession::clone(&ps));
                    }
                }
            }
            DescribeBy::GameSession(gsid) => {
                let e = self
                    .game_sessions
                    .get(gsid)
                    .ok_or_else(|| Error::GameSessionNotFound(gsid.clone()))?;
                for id in self.listing(&e, q.after) {
                    if !take(id, &mut out) {
                        break;
                    }
                }
            }
            DescribeBy::Player(pid) => {
                // The index is unordered (and copied, so no index lock is held while reading
                // sessions): sort this player's positions after the cursor.
                let mut positions: Vec<(Timestamp, PlayerSessionId)> = self
                    .by_player
                    .get(self.player_key(pid.as_str()))
                    .into_iter()
                    .flat_map(|h| self.player_sessions.ids_at(h))
                    .filter_map(|id| {
                        let ps = self.player_sessions.get(&id)?;
                        let pos = (ps.creation_time, ps.id);
                        (ps.player.is(pid.as_str()) && q.after.is_none_or(|a| pos > a))
                            .then_some(pos)
                    })
                    .collect();
                positions.sort_unstable();
                for (_, id) in positions {
                    if !take(id, &mut out) {
                        break;
                    }
                }
            }
        }
        Ok(Page {
            player_sessions: out,
            next,
        })
    }

    /// Checks every cross-structure invariant; returns the first violation. For tests and
    /// debugging: it locks each game session in turn, so call it when the store is quiet.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let mut retained: HashMap<GameSessionId, usize> = HashMap::new();
        for id in self.player_sessions.ids() {
            if let Some(p) = self.player_session(&id) {
                *retained.entry(p.game.id.clone()).or_default() += 1;
            }
        }
        for e in self.game_sessions.iter() {
            let g = &e.session;
            e.players
                .check(self.listed(g.id(), &all_listed))
                .map_err(|err| format!("{}: listing: {err}", g.id()))?;
            let listed: Vec<PlayerSessionId> = self.listing(&e, None).collect();
            let live_sessions: Vec<PlayerSession> = listed
                .iter()
                .filter_map(|id| self.player_session(id))
                .filter(|p| p.status.is_live())
                .collect();
            if g.current_player_session_count as usize != e.live.len()
                || e.live.len() != live_sessions.len()
            {
                return Err(format!(
                    "{}: count {} live-map {} live sessions {}",
                    g.id(),
                    g.current_player_session_count,
                    e.live.len(),
                    live_sessions.len()
                ));
            }
            if g.current_player_session_count > g.maximum_player_session_count {
                return Err(format!("{}: over capacity", g.id()));
            }
            if !g.is_active() && !e.live.is_empty() {
                return Err(format!("{}: ended with live players", g.id()));
            }
            for p in &live_sessions {
                if self.seat_of(&e, p.player_id()) != Some(p.id) {
                    return Err(format!("{}: live map misses {}", g.id(), p.id));
                }
            }
            let retained = retained.get(g.id()).copied().unwrap_or(0);
            if listed.len() != retained {
                return Err(format!(
                    "{}: {} listed, {retained} player sessions",
                    g.id(),
                    listed.len()
                ));
            }
        }
        for id in self.player_sessions.ids() {
            let Some(p) = self.player_session(&id) else {
                continue;
            };
            // One entry per session: as many (key, handle) entries as sessions with that handle
            // and player key (more than one only on a collision).
            let (key, h) = (
                self.player_key(p.player_id()),
                self.player_sessions.handle(&p.id),
            );
            let indexed = self.by_player.count(key, h);
            let expected = self
                .player_sessions
                .ids_at(h)
                .iter()
                .filter(|id| {
                    self.player_sessions
                        .get(id)
                        .is_some_and(|q| self.player_key(q.player_id()) == key)
                })
                .count();
            if indexed != expected {
                return Err(format!(
                    "{} in the player index {indexed} times, {expected} expected",
                    p.id
                ));
            }
            let in_game = self.game_sessions.get(&p.game.id).is_some_and(|e| {
                let resolve = self.listed(&p.game.id, &all_listed);
                e.players.contains(&(p.creation_time, p.id), h, resolve)
            });
            if !in_game {
                return Err(format!("{} missing from its game session's index", p.id));
            }
            if p.status.is_terminal() != p.termination_time.is_some() {
                return Err(format!("{}: termination time does not match status", p.id));
            }
            if (p.error_count > 0) != self.error_logs.contains_key(&p.id) {
                return Err(format!("{}: error count and error log disagree", p.id));
            }
        }
        // Copied first: the lock order puts player_sessions before error_logs.
        let logged: Vec<PlayerSessionId> = self.error_logs.iter().map(|l| *l.key()).collect();
        if let Some(orphan) = logged
            .iter()
            .find(|id| !self.player_sessions.contains_key(id))
        {
            return Err(format!("error log of {orphan}, which is gone"));
        }
        let mut scanned: HashMap<crate::domain::FleetId, FleetCounts> = HashMap::new();
        for e in self.game_sessions.iter() {
            let c = scanned.entry(e.session.fleet_id().clone()).or_default();
            c.game_sessions[fleets::gs_index(e.session.status)] += 1;
            if e.session.is_active() {
                c.maximum_player_session_count += u64::from(e.session.maximum_player_session_count);
            }
        }
        for id in self.player_sessions.ids() {
            let Some(p) = self.player_session(&id) else {
                continue;
            };
            let c = scanned.entry(p.game.fleet_id.clone()).or_default();
            c.player_sessions[fleets::ps_index(p.status)] += 1;
        }
        let mut active: HashMap<crate::domain::FleetId, Vec<GameSession>> = HashMap::new();
        for e in self.game_sessions.iter().filter(|e| e.session.is_active()) {
            active
                .entry(e.session.fleet_id().clone())
                .or_default()
                .push(e.snapshot());
        }
        let mut health: HashMap<crate::domain::FleetId, release_health::ReleaseHealth> =
            HashMap::new();
        for e in self.game_sessions.iter() {
            let h = health.entry(e.session.fleet_id().clone()).or_default();
            for id in self.listing(&e, None) {
                if let Some(p) = self.player_sessions.get(&id) {
                    h.restore(&e.session, release_health::retained(&p));
                }
            }
        }
        for f in self.fleets.iter() {
            f.index
                .check(f.key(), active.get(f.key()).map_or(&[][..], |v| &v[..]))?;
            if !health.get(f.key()).map_or_else(
                || f.health.same_buckets(&Default::default()),
                |h| f.health.same_buckets(h),
            ) {
                return Err(format!(
                    "fleet {}: release health differs from a scan",
                    f.key()
                ));
            }
            let want = scanned.get(f.key()).copied().unwrap_or_default();
            let have = f.value().counts;
            if (
                have.game_sessions,
                have.player_sessions,
                have.maximum_player_session_count,
            ) != (
                want.game_sessions,
                want.player_sessions,
                want.maximum_player_session_count,
            ) {
                return Err(format!("fleet {} counts {have:?}, scan {want:?}", f.key()));
            }
        }
        let indexed = self.by_player.len();
        if indexed != self.player_sessions.len() {
            return Err(format!(
                "player index holds {indexed} entries for {} sessions",
                self.player_sessions.len()
            ));
        }
        Ok(())
    }

    // ----- helpers -------------------------------------------------------------------------

    fn entry_mut(
        &self,
        id: &GameSessionId,
    ) -> Result<dashmap::mapref::one::RefMut<'_, GameSessionId, GameSessionEntry>> {
        self.game_sessions
            .get_mut(id)
            .ok_or_else(|| Error::GameSessionNotFound(id.clone()))
    }

    /// The player session `psid`, checked to belong to `gsid`. Call with `gsid`'s entry locked.
    fn player_in(
        &self,
        gsid: &GameSessionId,
        psid: PlayerSessionId,
    ) -> Result<parking_lot::MappedRwLockWriteGuard<'_, PlayerSession>> {
        let ps = self
            .player_sessions
            .get_mut(&psid)
            .ok_or(Error::PlayerSessionNotFound(psid))?;
        if &ps.game.id != gsid {
            return Err(Error::PlayerSessionNotInGameSession {
                player_session_id: psid,
                game_session_id: gsid.clone(),
            });
        }
        Ok(ps)
    }

    /// The timeout timer of the RESERVED player session `id`.
    fn reservation_timer(&self, id: &PlayerSessionId) -> Timer {
        Timer::Reservation(self.player_sessions.handle(id))
    }

    /// The retention purge timer of the terminal player session `id`.
    fn purge_timer(&self, id: &PlayerSessionId) -> Timer {
        Timer::PurgePlayerSession(self.player_sessions.handle(id))
    }

    fn schedule_purge(&self, terminated_at: Timestamp, timer: Timer) {
        self.timers
            .schedule(terminated_at.saturating_add(self.config.retention), timer);
    }

    /// Adds a new player session to every index (not to the fleet counts: the caller counts).
    /// Call with its game session's entry locked. A session whose id is already there changes
    /// nothing (replay over a snapshot that has it); returns whether it was added.
    fn index_player(&self, e: &mut GameSessionEntry, ps: PlayerSession) -> bool {
        let new = self.new_player(&ps);
        if !self.player_sessions.insert_new(ps) {
            return false;
        }
        self.add_player(e, &new, &all_listed);
        self.by_player.insert(new.key, new.handle);
        true
    }

    fn new_player(&self, ps: &PlayerSession) -> NewPlayer {
        NewPlayer {
            key: self.player_key(ps.player_id()),
            id: ps.id,
            handle: self.player_sessions.handle(&ps.id),
            live: ps.status.is_live(),
            created: ps.creation_time,
        }
    }

    /// Frees the seat of a player session that just became terminal.
    fn release_seat(&self, e: &mut GameSessionEntry, ps: &PlayerSession) {
        e.live.remove(
            self.player_key(ps.player_id()),
            self.player_sessions.handle(&ps.id),
        );
        e.sync_count();
    }

    fn unindex_player(&self, ps: &PlayerSession) {
        self.by_player.remove(
            self.player_key(ps.player_id()),
            self.player_sessions.handle(&ps.id),
        );
        if ps.error_count > 0 {
            self.error_logs.remove(&ps.id);
        }
    }

    /// The errors reported for the player session `id` (`None`: it reported none).
    pub fn error_log(&self, id: &PlayerSessionId) -> Option<ErrorLog> {
        self.error_logs.get(id).map(|l| l.clone())
    }

    /// Records an error of the player session `id` journaled at `lsn` (call with its game
    /// session locked: reports of one session are applied in order, and snapshots read the
    /// logs under that lock).
    fn record_error(&self, id: &PlayerSessionId, lsn: Lsn, at: Timestamp, message: Arc<str>) {
        if let Some(mut ps) = self.player_sessions.get_mut(id) {
            ps.record_error(
                &mut self.error_logs.entry(*id).or_default(),
                lsn,
                at,
                message,
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
