//! Rebuilding the store: applying journaled changes on replay, loading and exporting snapshots,
//! and re-arming every timer after recovery.
//!
//! Replay is idempotent and only moves things forward (a START for a session that exists, an
//! accept of a session that is no longer RESERVED, ... change nothing), because a fuzzy snapshot
//! may already reflect some of the records replayed on top of it.

use std::{collections::HashMap, sync::Arc};

use super::{
    fleets::{gs_index, ps_index},
    FleetCounts, GameSessionEntry, IdempotencyRecord, Store,
};
use crate::{
    domain::{
        Change, ErrorLog, FleetId, GameSession, GameSessionId, IdempotencyKey, Lsn, PlayerSession,
        PlayerSessionId, PlayerSessionStatus, Step, Timestamp,
    },
    sweeper::Timer,
};

/// Reservations a replay worker has decoded and not yet applied ([`Store::apply_batched`]).
#[derive(Default)]
pub struct ReplayBatch {
    pending: Vec<PlayerSession>,
}

impl ReplayBatch {
    /// Reservations applied together: 8 per shard of the big tables on average.
    const SIZE: usize = 1024;
}

/// What one thread of [`Store::finish_recovery`] found in its game sessions.
struct Rearmed {
    timers: Vec<(Timestamp, Timer)>,
    counts: HashMap<FleetId, FleetCounts>,
}

impl Store {
    /// Applies one journaled change (recovery). Timers are re-armed and the fleets' counts
    /// recounted from the recovered state afterwards by [`Store::finish_recovery`]: replay
    /// does not keep the counts (every worker would queue on the same fleet's lock for each
    /// record), and what the helpers it shares with live calls count is reset there.
    pub fn apply(&self, change: Change, lsn: Lsn) {
        // A reservation (most records) moves into the store without a copy.
        let change = match change {
            Change::Reserved(ps) => return self.apply_reserved(ps, lsn),
            other => other,
        };
        match &change {
            Change::GameSessionStarted(g) => {
                if let dashmap::mapref::entry::Entry::Vacant(v) =
                    self.game_sessions.entry(g.id().clone())
                {
                    v.insert(GameSessionEntry::new(g.clone()));
                }
            }
            Change::GameSessionUpdated {
                id,
                maximum_player_session_count,
                policy,
                ..
            } => {
                if let Some(mut e) = self.game_sessions.get_mut(id) {
                    self.apply_update(&mut e, *maximum_player_session_count, *policy);
                }
            }
            Change::GameSessionEnded {
                id,
                cause,
                reason,
                at,
            } => {
                if let Some(mut e) = self.game_sessions.get_mut(id) {
                    // Its players' completions follow as their own records.
                    self.end_game_locked(&mut e, *at, *cause, reason.clone(), &[]);
                }
            }
            Change::Reserved(_) => {} // above
            Change::IdempotencyKey {
                key,
                fingerprint,
                player_session_ids,
                at,
            } => {
                let ttl = self
                    .config
                    .idempotency_ttl
                    .max(self.config.reservation_timeout);
                self.idempotency
                    .entry(key.clone())
                    .or_insert_with(|| IdempotencyRecord {
                        fingerprint: *fingerprint,
                        player_session_ids: player_session_ids.clone(),
                        expires: at.saturating_add(ttl),
                    });
            }
            Change::Accepted {
                id,
                game_session_id,
                at,
            } => {
                let Some(_e) = self.game_sessions.get_mut(game_session_id) else {
                    return;
                };
                if let Some(mut ps) = self.player_sessions.get_mut(id) {
                    if ps.accept(*at) == Ok(Step::Changed) {
                        ps.lsns.set_accepted(lsn);
                    }
                }
            }
            Change::TimedOut {
                id,
                game_session_id,
                at,
            } => {
                let Some(mut e) = self.game_sessions.get_mut(game_session_id) else {
                    return;
                };
                let Some(mut ps) = self.player_sessions.get_mut(id) else {
                    return;
                };
                if ps.status == PlayerSessionStatus::Reserved && ps.time_out(*at) == Step::Changed {
                    ps.lsns.set_ended(lsn);
                    self.release_seat(&mut e, &ps);
                }
            }
            Change::Completed {
                id,
                game_session_id,
                reason,
                at,
            } => {
                if let Some(mut e) = self.game_sessions.get_mut(game_session_id) {
                    self.complete_locked(&mut e, *id, *at, *reason, lsn);
                }
            }
            Change::ErrorReported {
                id,
                game_session_id,
                message,
                at,
            } => {
                let Some(_e) = self.game_sessions.get_mut(game_session_id) else {
                    return;
                };
                self.record_error(id, lsn, *at, message.clone());
            }
            Change::AnalyticsDelivered { through, .. } => self.note_analytics_delivered(*through),
            Change::AnalyticsRetry { .. } => {}
            Change::ImportStarted { .. }
            | Change::ImportChunk { .. }
            | Change::ImportedRow { .. }
            | Change::ImportFinished { .. } => self.apply_import(&change),
        }
    }

    /// Makes room for about `additional` more player sessions before a replay adds them.
    pub fn reserve_player_sessions(&self, additional: usize) {
        self.player_sessions.reserve(additional);
        self.by_player.reserve(additional);
    }

    /// [`Store::apply`] for a replay worker: reservations (most records) wait in `batch` and
    /// are added to the big tables together ([`Store::flush_replay`]); any other change
    /// applies the batch first, so the worker's order is kept. Call `flush_replay` at the end.
    pub fn apply_batched(&self, batch: &mut ReplayBatch, change: Change, lsn: Lsn) {
        match change {
            Change::Reserved(mut ps) => {
                ps.lsns.set_reserved(lsn);
                batch.pending.push(ps);
                if batch.pending.len() >= ReplayBatch::SIZE {
                    self.flush_replay(batch);
                }
            }
            other => {
                self.flush_replay(batch);
                self.apply(other, lsn);
            }
        }
    }

    /// Applies the reservations waiting in `batch`, as [`Store::apply`] would one by one: the
    /// session map and the by-player index lock each shard once for the batch, and each game
    /// session once per run of its reservations.
    pub fn flush_replay(&self, batch: &mut ReplayBatch) {
        if batch.pending.is_empty() {
            return;
        }
        let sessions = std::mem::take(&mut batch.pending);
        let games: Vec<_> = sessions.iter().map(|ps| ps.game.clone()).collect();
        let new: Vec<_> = sessions.iter().map(|ps| self.new_player(ps)).collect();
        // Already there (a snapshot has it): nothing changes for that one.
        let mut added = self.player_sessions.insert_new_batch(sessions);
        let mut i = 0;
        while i < games.len() {
            let game = &games[i];
            let run = games[i..]
                .iter()
                .take_while(|g| Arc::ptr_eq(g, game))
                .count();
            let range = i..i + run;
            i += run;
            match self.game_sessions.get_mut(&game.id) {
                Some(mut e) => {
                    let end = range.end;
                    for j in range.filter(|&j| added[j]) {
                        // Later ones of the run are in the map already, not yet listed.
                        let later = |id: &PlayerSessionId| {
                            (j + 1..end).any(|k| added[k] && new[k].id == *id)
                        };
                        self.add_player(&mut e, &new[j], &later);
                    }
                    e.sync_count();
                }
                // Gone since the record was decoded (never on replay): undo.
                None => {
                    for j in range {
                        if std::mem::take(&mut added[j]) {
                            self.player_sessions.remove(&new[j].id);
                        }
                    }
                }
            }
        }
        self.by_player.insert_batch(
            new.iter()
                .zip(&added)
                .filter(|(_, added)| **added)
                .map(|(p, _)| (p.key, p.handle))
                .collect(),
        );
    }

    fn apply_reserved(&self, mut ps: PlayerSession, lsn: Lsn) {
        if let Some(mut e) = self.game_sessions.get_mut(&ps.game.id) {
            ps.game = e.session.info.clone();
            ps.lsns.set_reserved(lsn);
            // Already there (the snapshot has it): nothing changes.
            if self.index_player(&mut e, ps) {
                e.sync_count();
            }
        }
    }

    /// Inserts a game session and its player sessions from a snapshot.
    pub fn restore_game_session(
        &self,
        game: GameSession,
        players: Vec<PlayerSession>,
        error_logs: Vec<(PlayerSessionId, ErrorLog)>,
    ) {
        let id = game.id().clone();
        let mut entry = GameSessionEntry::new(game);
        for ps in players {
            self.index_player(&mut entry, ps);
        }
        for (psid, log) in error_logs {
            self.error_logs.insert(psid, log);
        }
        entry.sync_count();
        self.game_sessions.insert(id, entry);
    }

    /// Inserts an idempotency key from a snapshot.
    pub fn restore_idempotency(
        &self,
        key: IdempotencyKey,
        fingerprint: u64,
        player_session_ids: Vec<PlayerSessionId>,
        expires: Timestamp,
    ) {
        self.idempotency.insert(
            key,
            IdempotencyRecord {
                fingerprint,
                player_session_ids,
                expires,
            },
        );
    }

    /// Ids of every retained game session (a snapshot copies them one by one).
    pub fn game_session_ids(&self) -> Vec<GameSessionId> {
        self.game_sessions.iter().map(|e| e.key().clone()).collect()
    }

    /// A game session with all its retained player sessions, copied atomically.
    pub fn export_game_session(
        &self,
        id: &GameSessionId,
    ) -> Option<(GameSession, Vec<PlayerSession>)> {
        self.export_game_session_with_errors(id)
            .map(|(g, players, _)| (g, players))
    }

    /// [`Store::export_game_session`] with the error logs of its player sessions that
    /// reported errors, read under the game session's lock as reports are applied (so a
    /// snapshot's counts and logs agree).
    pub fn export_game_session_with_errors(
        &self,
        id: &GameSessionId,
    ) -> Option<(
        GameSession,
        Vec<PlayerSession>,
        HashMap<PlayerSessionId, ErrorLog>,
    )> {
        let e = self.game_sessions.get(id)?;
        let mut players = Vec::new();
        self.for_each_listed(&e, |p| players.push(p.clone()));
        let logs = players
            .iter()
            .filter(|p| p.error_count > 0)
            .filter_map(|p| Some((p.id, self.error_log(&p.id)?)))
            .collect();
        Some((e.snapshot(), players, logs))
    }

    /// Every remembered idempotency key: (key, fingerprint, sessions, expiry).
    pub fn export_idempotency(
        &self,
    ) -> Vec<(IdempotencyKey, u64, Vec<PlayerSessionId>, Timestamp)> {
        self.idempotency
            .iter()
            .map(|r| {
                (
                    r.key().clone(),
                    r.fingerprint,
                    r.player_session_ids.clone(),
                    r.expires,
                )
            })
            .collect()
    }

    /// After recovery: builds the fleets' search indexes (replay does not maintain them),
    /// schedules every deadline, purge and expiry, and gives each ACTIVE game session that
    /// expects heartbeats a full heartbeat period from now (the broker being down is not the
    /// game server's fault). RESERVED sessions whose deadline passed while the daemon was down
    /// time out at once, with their deadline as termination time.
    pub fn finish_recovery(&self) {
        // Game sessions are split over one thread per core; each visits its game sessions'
        // player sessions (every player session is in its game session's list) for their
        // timers and release health, so nothing walks the whole session map twice.
        let ids: Vec<GameSessionId> = self.game_sessions.iter().map(|e| e.key().clone()).collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, ids.len().div_ceil(64).max(1));
        let parts: Vec<Rearmed> = std::thread::scope(|scope| {
            let handles: Vec<_> = ids
                .chunks(ids.len().div_ceil(threads).max(1))
                .map(|chunk| scope.spawn(move || self.rearm_game_sessions(chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut timers = Vec::with_capacity(
            parts.iter().map(|p| p.timers.len()).sum::<usize>() + self.idempotency.len(),
        );
        for mut f in self.fleets.iter_mut() {
            let c = &mut f.counts;
            (
                c.game_sessions,
                c.player_sessions,
                c.maximum_player_session_count,
            ) = Default::default();
        }
        for mut part in parts {
            timers.append(&mut part.timers);
            for (fleet, n) in part.counts {
                self.fleet(&fleet, |c| {
                    for (have, add) in c.game_sessions.iter_mut().zip(n.game_sessions) {
                        *have += add;
                    }
                    for (have, add) in c.player_sessions.iter_mut().zip(n.player_sessions) {
                        *have += add;
                    }
                    c.maximum_player_session_count += n.maximum_player_session_count;
                });
            }
        }
        for r in self.idempotency.iter() {
            timers.push((r.expires, Timer::IdempotencyExpiry(r.key().clone())));
        }
        self.timers.schedule_all(timers);
    }

    /// Re-arms the timers and rebuilds the search index and release health of the game
    /// sessions `ids` and their player sessions (after recovery); returns the timers.
    fn rearm_game_sessions(&self, ids: &[GameSessionId]) -> Rearmed {
        let now = self.clock.now();
        let retention = self.config.retention;
        let mut timers = Vec::new();
        let mut counts: HashMap<FleetId, FleetCounts> = HashMap::new();
        for id in ids {
            let Some(mut e) = self.game_sessions.get_mut(id) else {
                continue;
            };
            let n = counts.entry(e.session.fleet_id().clone()).or_default();
            n.game_sessions[gs_index(e.session.status)] += 1;
            if e.session.is_active() {
                n.maximum_player_session_count += u64::from(e.session.maximum_player_session_count);
            }
            let mut health = Vec::new();
            self.for_each_listed(&e, |ps| {
                health.push(super::release_health::retained(ps));
                n.player_sessions[ps_index(ps.status)] += 1;
                match (ps.status, ps.termination_time) {
                    (PlayerSessionStatus::Reserved, _) => {
                        timers.push((ps.reservation_deadline, self.reservation_timer(&ps.id)))
                    }
                    (PlayerSessionStatus::Active, _) | (_, None) => {}
                    (_, Some(t)) => {
                        timers.push((t.saturating_add(retention), self.purge_timer(&ps.id)))
                    }
                }
            });
            self.index_game_session(&e.session, &health);
            match (e.session.is_active(), e.session.heartbeat_timeout) {
                (true, Some(t)) => {
                    let d = now.saturating_add(t);
                    e.session.heartbeat_deadline = Some(d);
                    timers.push((d, Timer::Heartbeat(id.clone())));
                }
                (false, _) => {
                    if let Some(t) = e.session.termination_time {
                        timers.push((
                            t.saturating_add(retention),
                            Timer::PurgeGameSession(id.clone()),
                        ));
                    }
                }
                _ => {}
            }
        }
        Rearmed { timers, counts }
    }
}
