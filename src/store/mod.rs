//! The in-memory state: game sessions and player sessions in DashMaps, with secondary indexes
//! (player sessions by game session and by player) kept consistent under the game session's lock.
//!
//! Locking rules (so nothing deadlocks and capacity holds under any concurrency):
//! - Every change to a player session happens while holding its game session's entry
//!   (`game_sessions.get_mut`): the seat count, the live-player map and the player session change
//!   together, so N racing reservers for the last seat see exactly one winner.
//! - Lock order: `game_sessions` -> `idempotency` -> `player_sessions` -> `by_player` -> timer heap.
//!   Code that needs a player session's game session first reads the id and drops the guard.
//! - Nothing here is async: no lock is ever held across an `.await`.

mod page_token;

use std::{
    collections::{hash_map, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use dashmap::{mapref::entry::Entry, DashMap};

pub use page_token::{Fingerprint, PageToken};

use crate::{
    domain::{
        limits, Clock, CreationPolicy, Error, GameSession, GameSessionId, GameSessionInfo,
        GameSessionStatus, IdempotencyKey, PlayerId, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, RegisterGameSession, Result, Step, Timestamp,
    },
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            reservation_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(600),
        }
    }
}

/// A game session with its indexes.
struct GameSessionEntry {
    session: GameSession,
    /// Every retained player session of this game session, in listing order.
    players: BTreeSet<(Timestamp, PlayerSessionId)>,
    /// The RESERVED or ACTIVE player session of each player holding a seat.
    live: HashMap<PlayerId, PlayerSessionId>,
}

impl GameSessionEntry {
    fn snapshot(&self) -> GameSession {
        self.session.clone()
    }
    fn sync_count(&mut self) {
        self.session.current_player_session_count = self.live.len() as u32;
    }
}

struct IdempotencyRecord {
    fingerprint: u64,
    player_session_ids: Vec<PlayerSessionId>,
}

/// A validated reservation request (CreatePlayerSession or CreatePlayerSessions).
#[derive(Debug, Clone)]
pub struct Reserve {
    pub game_session_id: GameSessionId,
    /// 1-25 distinct players with optional player data.
    pub players: Vec<(PlayerId, Option<Arc<str>>)>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Reserve {
    fn validate(&self) -> Result<()> {
        if self.players.is_empty() || self.players.len() > limits::MAX_BATCH_PLAYERS {
            return Err(Error::invalid(
                "player_ids",
                format!(
                    "must hold 1 to {} player ids, got {}",
                    limits::MAX_BATCH_PLAYERS,
                    self.players.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.players.len());
        for (p, _) in &self.players {
            if !seen.insert(p) {
                return Err(Error::invalid(
                    "player_ids",
                    format!("player id {p} appears more than once"),
                ));
            }
        }
        Ok(())
    }

    /// A stable fingerprint of the request, to tell a retry from a different request.
    fn fingerprint(&self) -> u64 {
        let mut f = Fingerprint::default().str(self.game_session_id.as_str());
        for (p, data) in &self.players {
            f = f.str(p.as_str()).str(data.as_deref().unwrap_or(""));
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
    game_sessions: DashMap<GameSessionId, GameSessionEntry>,
    player_sessions: DashMap<PlayerSessionId, PlayerSession>,
    /// Player sessions of each player, in listing order.
    by_player: DashMap<PlayerId, Vec<(Timestamp, PlayerSessionId)>>,
    idempotency: DashMap<IdempotencyKey, IdempotencyRecord>,
    timers: Timers,
}

impl Store {
    pub fn new(clock: Clock, config: StoreConfig) -> Self {
        Store {
            clock,
            config,
            game_sessions: DashMap::new(),
            player_sessions: DashMap::new(),
            by_player: DashMap::new(),
            idempotency: DashMap::new(),
            timers: Timers::default(),
        }
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

    /// Number of retained game sessions and player sessions.
    pub fn len(&self) -> (usize, usize) {
        (self.game_sessions.len(), self.player_sessions.len())
    }

    // ----- game sessions -------------------------------------------------------------------

    /// Registers a new ACTIVE game session with policy ACCEPT_ALL.
    pub fn register_game_session(&self, req: RegisterGameSession) -> Result<GameSession> {
        req.validate()?;
        let now = self.clock.now();
        let id = req
            .game_session_id
            .clone()
            .unwrap_or_else(GameSessionId::generate);
        let heartbeat_deadline = req.heartbeat_timeout.map(|t| now.saturating_add(t));
        let session = GameSession {
            info: Arc::new(GameSessionInfo {
                id: id.clone(),
                fleet_id: req.fleet_id,
                ip_address: req.ip_address.into(),
                port: req.port,
            }),
            name: req.name.into(),
            maximum_player_session_count: req.maximum_player_session_count,
            current_player_session_count: 0,
            creation_policy: CreationPolicy::AcceptAll,
            status: GameSessionStatus::Active,
            labels: Arc::new(req.labels),
            release: req.release.into(),
            environment: req.environment.into(),
            reservation_timeout: req
                .reservation_timeout
                .unwrap_or(self.config.reservation_timeout),
            heartbeat_timeout: req.heartbeat_timeout,
            heartbeat_deadline,
            creation_time: now,
            termination_time: None,
            termination_reason: None,
        };
        match self.game_sessions.entry(id.clone()) {
            Entry::Occupied(_) => return Err(Error::GameSessionIdTaken(id)),
            Entry::Vacant(v) => {
                v.insert(GameSessionEntry {
                    session: session.clone(),
                    players: BTreeSet::new(),
                    live: HashMap::new(),
                });
            }
        }
        if let Some(d) = heartbeat_deadline {
            self.timers.schedule(d, Timer::Heartbeat(id.clone()));
        }
        tracing::debug!(game_session_id = %id, fleet_id = %session.fleet_id(), "game session registered");
        Ok(session)
    }

    pub fn get_game_session(&self, id: &GameSessionId) -> Result<GameSession> {
        self.game_sessions
            .get(id)
            .map(|e| e.snapshot())
            .ok_or_else(|| Error::GameSessionNotFound(id.clone()))
    }

    /// Extends the heartbeat deadline of an ACTIVE game session.
    pub fn heartbeat(&self, id: &GameSessionId) -> Result<GameSession> {
        let now = self.clock.now();
        let mut e = self.entry_mut(id)?;
        e.session.check_active()?;
        if let Some(t) = e.session.heartbeat_timeout {
            // The pending heartbeat timer finds the moved deadline and re-arms itself.
            e.session.heartbeat_deadline = Some(now.saturating_add(t));
        }
        Ok(e.snapshot())
    }

    /// Changes capacity and/or creation policy of an ACTIVE game session; all or nothing.
    pub fn update_game_session(
        &self,
        id: &GameSessionId,
        maximum_player_session_count: Option<u32>,
        policy: Option<CreationPolicy>,
    ) -> Result<GameSession> {
        let mut e = self.entry_mut(id)?;
        e.session.check_active()?;
        if let Some(max) = maximum_player_session_count {
            e.session.check_resize(max)?;
        }
        if let Some(max) = maximum_player_session_count {
            e.session.maximum_player_session_count = max;
        }
        if let Some(p) = policy {
            e.session.creation_policy = p;
        }
        tracing::debug!(game_session_id = %id, ?maximum_player_session_count, ?policy, "game session updated");
        Ok(e.snapshot())
    }

    /// Ends a game session and completes its RESERVED and ACTIVE player sessions. Idempotent.
    pub fn end_game_session(
        &self,
        id: &GameSessionId,
        crashed: bool,
        reason: &str,
    ) -> Result<GameSession> {
        let now = self.clock.now();
        let mut e = self.entry_mut(id)?;
        self.end_locked(&mut e, now, crashed, reason);
        Ok(e.snapshot())
    }

    fn end_locked(&self, e: &mut GameSessionEntry, at: Timestamp, crashed: bool, reason: &str) {
        if !e.session.end(at, crashed, reason.into()) {
            return;
        }
        let live: Vec<PlayerSessionId> = e.live.drain().map(|(_, ps)| ps).collect();
        for psid in live {
            if let Some(mut ps) = self.player_sessions.get_mut(&psid) {
                ps.complete(at);
            }
            self.schedule_purge(at, Timer::PurgePlayerSession(psid));
        }
        e.sync_count();
        self.schedule_purge(at, Timer::PurgeGameSession(e.session.id().clone()));
        tracing::debug!(
            game_session_id = %e.session.id(),
            status = %e.session.status,
            reason,
            "game session ended"
        );
    }

    // ----- player sessions -----------------------------------------------------------------

    /// Reserves seats for 1-25 players: all of them or none.
    pub fn reserve(&self, req: Reserve) -> Result<Vec<PlayerSession>> {
        req.validate()?;
        let fingerprint = req.idempotency_key.as_ref().map(|_| req.fingerprint());
        let now = self.clock.now();
        let mut e = self.entry_mut(&req.game_session_id)?;

        let idem_slot = match &req.idempotency_key {
            None => None,
            Some(key) => match self.idempotency.entry(key.clone()) {
                Entry::Occupied(o) => {
                    let rec = o.get();
                    if Some(rec.fingerprint) != fingerprint {
                        return Err(Error::IdempotencyKeyReused);
                    }
                    // A retry: the original reservation, as it is now.
                    return rec
                        .player_session_ids
                        .iter()
                        .map(|id| {
                            self.player_sessions
                                .get(id)
                                .map(|ps| ps.clone())
                                .ok_or(Error::PlayerSessionNotFound(*id))
                        })
                        .collect();
                }
                Entry::Vacant(v) => Some(v),
            },
        };

        e.session.check_active()?;
        if e.session.creation_policy == CreationPolicy::DenyAll {
            return Err(Error::CreationDenied(req.game_session_id.clone()));
        }
        if let Some((p, _)) = req.players.iter().find(|(p, _)| e.live.contains_key(p)) {
            return Err(Error::PlayerAlreadyInGameSession {
                player_id: p.to_string(),
                game_session_id: req.game_session_id.clone(),
            });
        }
        let requested = req.players.len() as u32;
        if e.session.free_seats() < requested {
            return Err(Error::GameSessionFull {
                id: req.game_session_id.clone(),
                free: e.session.free_seats(),
                requested,
            });
        }

        // Every check passed: nothing below can fail.
        let deadline = now.saturating_add(e.session.reservation_timeout);
        let mut created = Vec::with_capacity(req.players.len());
        for (player_id, player_data) in req.players {
            let ps = PlayerSession {
                id: PlayerSessionId::generate(),
                player_id,
                game: e.session.info.clone(),
                status: PlayerSessionStatus::Reserved,
                creation_time: now,
                termination_time: None,
                reservation_deadline: deadline,
                player_data,
            };
            e.live.insert(ps.player_id.clone(), ps.id);
            e.players.insert((now, ps.id));
            self.player_sessions.insert(ps.id, ps.clone());
            insert_sorted(
                &mut self.by_player.entry(ps.player_id.clone()).or_default(),
                (now, ps.id),
            );
            created.push(ps);
        }
        e.sync_count();
        if let (Some(slot), Some(fingerprint)) = (idem_slot, fingerprint) {
            let key = slot.key().clone();
            slot.insert(IdempotencyRecord {
                fingerprint,
                player_session_ids: created.iter().map(|p| p.id).collect(),
            });
            let ttl = self
                .config
                .idempotency_ttl
                .max(e.session.reservation_timeout);
            self.timers
                .schedule(now.saturating_add(ttl), Timer::IdempotencyExpiry(key));
        }
        drop(e);
        for ps in &created {
            self.timers.schedule(deadline, Timer::Reservation(ps.id));
            tracing::debug!(
                player_session_id = %ps.id,
                player_id = %ps.player_id,
                game_session_id = %ps.game.id,
                "player session reserved"
            );
        }
        Ok(created)
    }

    /// RESERVED -> ACTIVE; an ACTIVE session is returned unchanged.
    pub fn accept(&self, gsid: &GameSessionId, psid: PlayerSessionId) -> Result<PlayerSession> {
        let _e = self.entry_mut(gsid)?;
        let mut ps = self.player_in(gsid, psid)?;
        ps.accept()?;
        tracing::debug!(player_session_id = %psid, game_session_id = %gsid, "player session accepted");
        Ok(ps.clone())
    }

    /// RESERVED or ACTIVE -> COMPLETED, freeing the seat; a terminal session is returned unchanged.
    pub fn remove(&self, gsid: &GameSessionId, psid: PlayerSessionId) -> Result<PlayerSession> {
        let now = self.clock.now();
        let mut e = self.entry_mut(gsid)?;
        let mut ps = self.player_in(gsid, psid)?;
        if ps.complete(now) == Step::Changed {
            release_seat(&mut e, &ps);
            self.schedule_purge(now, Timer::PurgePlayerSession(psid));
            tracing::debug!(player_session_id = %psid, game_session_id = %gsid, "player session completed");
        }
        Ok(ps.clone())
    }

    /// Lists player sessions, ordered by creation time then id.
    pub fn describe(&self, q: &Describe) -> Result<Page> {
        let limit = q.limit.clamp(1, limits::DESCRIBE_LIMIT_MAX) as usize;
        let matches = |ps: &PlayerSession| q.status.is_none_or(|s| ps.status == s);
        let mut out = Vec::with_capacity(limit.min(64));
        let mut next = None;
        let mut take = |pos: (Timestamp, PlayerSessionId), out: &mut Vec<PlayerSession>| -> bool {
            if let Some(ps) = self.player_sessions.get(&pos.1) {
                if matches(&ps) {
                    if out.len() == limit {
                        next = out.last().map(|p: &PlayerSession| (p.creation_time, p.id));
                        return false;
                    }
                    out.push(ps.clone());
                }
            }
            true
        };
        match &q.by {
            DescribeBy::PlayerSession(id) => {
                if let Some(ps) = self.player_sessions.get(id) {
                    let pos = (ps.creation_time, ps.id);
                    let after_ok = q.after.is_none_or(|a| pos > a);
                    if matches(&ps) && after_ok {
                        out.push(ps.clone());
                    }
                }
            }
            DescribeBy::GameSession(gsid) => {
                let e = self
                    .game_sessions
                    .get(gsid)
                    .ok_or_else(|| Error::GameSessionNotFound(gsid.clone()))?;
                let range = match q.after {
                    Some(a) => e
                        .players
                        .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
                    None => e.players.range(..),
                };
                for pos in range {
                    if !take(*pos, &mut out) {
                        break;
                    }
                }
            }
            DescribeBy::Player(pid) => {
                // Copy the positions so no by_player guard is held while reading sessions.
                let positions: Vec<_> = match self.by_player.get(pid) {
                    Some(v) => {
                        let start = q.after.map_or(0, |a| v.partition_point(|p| *p <= a));
                        v[start..].to_vec()
                    }
                    None => Vec::new(),
                };
                for pos in positions {
                    if !take(pos, &mut out) {
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

    pub fn get_player_session(&self, id: PlayerSessionId) -> Result<PlayerSession> {
        self.player_sessions
            .get(&id)
            .map(|p| p.clone())
            .ok_or(Error::PlayerSessionNotFound(id))
    }

    // ----- timers --------------------------------------------------------------------------

    /// Fires one timer that was due at `at`, re-checking the current state at `now`.
    pub fn fire(&self, at: Timestamp, timer: Timer, now: Timestamp) {
        match timer {
            Timer::Reservation(psid) => self.time_out(psid, now),
            Timer::Heartbeat(gsid) => self.check_heartbeat(&gsid, now),
            Timer::PurgePlayerSession(psid) => self.purge_player_session(psid, now),
            Timer::PurgeGameSession(gsid) => self.purge_game_session(&gsid, now),
            Timer::IdempotencyExpiry(key) => {
                let _ = at;
                self.idempotency.remove(&key);
            }
        }
    }

    fn time_out(&self, psid: PlayerSessionId, now: Timestamp) {
        let Some(gsid) = self.player_sessions.get(&psid).map(|p| p.game.id.clone()) else {
            return;
        };
        let Some(mut e) = self.game_sessions.get_mut(&gsid) else {
            return;
        };
        let Some(mut ps) = self.player_sessions.get_mut(&psid) else {
            return;
        };
        if ps.time_out(now) == Step::Changed {
            release_seat(&mut e, &ps);
            let at = ps.termination_time.unwrap_or(now);
            self.schedule_purge(at, Timer::PurgePlayerSession(psid));
            tracing::debug!(player_session_id = %psid, game_session_id = %gsid, "player session timed out");
        }
    }

    fn check_heartbeat(&self, gsid: &GameSessionId, now: Timestamp) {
        let Some(mut e) = self.game_sessions.get_mut(gsid) else {
            return;
        };
        let Some(deadline) = e
            .session
            .heartbeat_deadline
            .filter(|_| e.session.is_active())
        else {
            return;
        };
        if deadline <= now {
            tracing::info!(game_session_id = %gsid, "game session missed its heartbeat deadline");
            self.end_locked(&mut e, deadline, true, "heartbeat timeout");
        } else {
            drop(e);
            self.timers
                .schedule(deadline, Timer::Heartbeat(gsid.clone()));
        }
    }

    fn purge_player_session(&self, psid: PlayerSessionId, now: Timestamp) {
        let Some((gsid, due)) = self.player_sessions.get(&psid).and_then(|p| {
            p.termination_time
                .map(|t| (p.game.id.clone(), t.saturating_add(self.config.retention)))
        }) else {
            return;
        };
        if due > now {
            return;
        }
        let e = self.game_sessions.get_mut(&gsid);
        if let Some((_, ps)) = self.player_sessions.remove(&psid) {
            if let Some(mut e) = e {
                e.players.remove(&(ps.creation_time, psid));
            }
            self.unindex_player(&ps);
        }
    }

    fn purge_game_session(&self, gsid: &GameSessionId, now: Timestamp) {
        let due = self.game_sessions.get(gsid).and_then(|e| {
            e.session
                .termination_time
                .map(|t| t.saturating_add(self.config.retention))
        });
        if due.is_none_or(|d| d > now) {
            return;
        }
        if let Some((_, e)) = self.game_sessions.remove(gsid) {
            for (_, psid) in e.players {
                if let Some((_, ps)) = self.player_sessions.remove(&psid) {
                    self.unindex_player(&ps);
                }
            }
            tracing::debug!(game_session_id = %gsid, "game session purged");
        }
    }

    /// Checks every cross-structure invariant; returns the first violation. For tests and
    /// debugging: it locks each game session in turn, so call it when the store is quiet.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        for e in self.game_sessions.iter() {
            let g = &e.session;
            let live_sessions: Vec<PlayerSession> = e
                .players
                .iter()
                .filter_map(|(_, id)| self.player_sessions.get(id).map(|p| p.clone()))
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
                if e.live.get(&p.player_id) != Some(&p.id) {
                    return Err(format!("{}: live map misses {}", g.id(), p.id));
                }
            }
            for (t, id) in &e.players {
                match self.player_sessions.get(id) {
                    Some(p) if p.creation_time == *t && &p.game.id == g.id() => {}
                    _ => return Err(format!("{}: index entry {id} is stale", g.id())),
                }
            }
        }
        for p in self.player_sessions.iter() {
            let indexed = self
                .by_player
                .get(&p.player_id)
                .is_some_and(|v| v.contains(&(p.creation_time, p.id)));
            if !indexed {
                return Err(format!("{} missing from the player index", p.id));
            }
            let in_game = self
                .game_sessions
                .get(&p.game.id)
                .is_some_and(|e| e.players.contains(&(p.creation_time, p.id)));
            if !in_game {
                return Err(format!("{} missing from its game session's index", p.id));
            }
            if p.status.is_terminal() != p.termination_time.is_some() {
                return Err(format!("{}: termination time does not match status", p.id));
            }
        }
        let indexed: usize = self.by_player.iter().map(|v| v.len()).sum();
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
    ) -> Result<dashmap::mapref::one::RefMut<'_, PlayerSessionId, PlayerSession>> {
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

    fn schedule_purge(&self, terminated_at: Timestamp, timer: Timer) {
        self.timers
            .schedule(terminated_at.saturating_add(self.config.retention), timer);
    }

    fn unindex_player(&self, ps: &PlayerSession) {
        if let dashmap::mapref::entry::Entry::Occupied(mut o) =
            self.by_player.entry(ps.player_id.clone())
        {
            o.get_mut().retain(|(_, id)| *id != ps.id);
            if o.get().is_empty() {
                o.remove();
            }
        }
    }
}

/// Frees the seat of a player session that just became terminal.
fn release_seat(e: &mut GameSessionEntry, ps: &PlayerSession) {
    if let hash_map::Entry::Occupied(o) = e.live.entry(ps.player_id.clone()) {
        if *o.get() == ps.id {
            o.remove();
        }
    }
    e.sync_count();
}

fn insert_sorted<T: Ord>(v: &mut Vec<T>, item: T) {
    let at = v.partition_point(|x| *x < item);
    v.insert(at, item);
}

#[cfg(test)]
mod tests;
