//! Rebuilding the store: applying journaled changes on replay, loading and exporting snapshots,
//! and re-arming every timer after recovery.
//!
//! Replay is idempotent and only moves things forward (a START for a session that exists, an
//! accept of a session that is no longer RESERVED, ... change nothing), because a fuzzy snapshot
//! may already reflect some of the records replayed on top of it.

use super::{GameSessionEntry, IdempotencyRecord, Store};
use crate::{
    domain::{
        Change, GameSession, GameSessionId, IdempotencyKey, Lsn, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, Step, Timestamp,
    },
    sweeper::Timer,
};

impl Store {
    /// Applies one journaled change (recovery). Timers are re-armed afterwards by
    /// [`Store::finish_recovery`].
    pub fn apply(&self, change: &Change, lsn: Lsn) {
        match change {
            Change::GameSessionStarted(g) => {
                if let dashmap::mapref::entry::Entry::Vacant(v) =
                    self.game_sessions.entry(g.id().clone())
                {
                    v.insert(GameSessionEntry::new(g.clone()));
                    self.count_game_added(g);
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
            Change::Reserved(ps) => {
                if self.player_sessions.contains_key(&ps.id) {
                    return;
                }
                if let Some(mut e) = self.game_sessions.get_mut(&ps.game.id) {
                    let mut ps = ps.clone();
                    ps.game = e.session.info.clone();
                    ps.lsns.reserved = lsn;
                    self.count_player(&ps.game.fleet_id, None, Some(ps.status));
                    self.index_player(&mut e, ps);
                    e.sync_count();
                }
            }
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
                        ps.lsns.accepted = lsn;
                        self.count_player(
                            &ps.game.fleet_id,
                            Some(PlayerSessionStatus::Reserved),
                            Some(PlayerSessionStatus::Active),
                        );
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
                    ps.lsns.ended = lsn;
                    self.release_seat(&mut e, &ps);
                    self.count_player(
                        &ps.game.fleet_id,
                        Some(PlayerSessionStatus::Reserved),
                        Some(PlayerSessionStatus::TimedOut),
                    );
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
                if let Some(mut ps) = self.player_sessions.get_mut(id) {
                    ps.record_error(lsn, *at, message.clone());
                }
            }
            Change::AnalyticsDelivered { through, .. } => self.note_analytics_delivered(*through),
            Change::AnalyticsRetry { .. } => {}
            Change::ImportStarted { .. }
            | Change::ImportChunk { .. }
            | Change::ImportedRow { .. }
            | Change::ImportFinished { .. } => self.apply_import(change),
        }
    }

    /// Inserts a game session and its player sessions from a snapshot.
    pub fn restore_game_session(&self, game: GameSession, players: Vec<PlayerSession>) {
        let id = game.id().clone();
        self.count_game_added(&game);
        let mut entry = GameSessionEntry::new(game);
        for ps in players {
            self.count_player(&ps.game.fleet_id, None, Some(ps.status));
            self.index_player(&mut entry, ps);
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
        let e = self.game_sessions.get(id)?;
        let players = e
            .players
            .iter()
            .filter_map(|(_, p)| self.player_session(p))
            .collect();
        Some((e.snapshot(), players))
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
        let now = self.clock.now();
        let retention = self.config.retention;
        let mut timers = Vec::with_capacity(self.player_sessions.len() + self.game_sessions.len());
        for mut e in self.game_sessions.iter_mut() {
            let players: Vec<_> = e
                .players
                .iter()
                .filter_map(|(_, id)| {
                    self.player_sessions
                        .get(id)
                        .map(|p| super::release_health::retained(&p))
                })
                .collect();
            self.index_game_session(&e.session, &players);
            let id = e.key().clone();
            match (e.session.is_active(), e.session.heartbeat_timeout) {
                (true, Some(t)) => {
                    let d = now.saturating_add(t);
                    e.session.heartbeat_deadline = Some(d);
                    timers.push((d, Timer::Heartbeat(id)));
                }
                (false, _) => {
                    if let Some(t) = e.session.termination_time {
                        timers.push((t.saturating_add(retention), Timer::PurgeGameSession(id)));
                    }
                }
                _ => {}
            }
        }
        for ps in self.player_sessions.iter() {
            match (ps.status, ps.termination_time) {
                (PlayerSessionStatus::Reserved, _) => {
                    timers.push((ps.reservation_deadline, Timer::Reservation(ps.id)))
                }
                (PlayerSessionStatus::Active, _) | (_, None) => {}
                (_, Some(t)) => timers.push((
                    t.saturating_add(retention),
                    Timer::PurgePlayerSession(ps.id),
                )),
            }
        }
        for r in self.idempotency.iter() {
            timers.push((r.expires, Timer::IdempotencyExpiry(r.key().clone())));
        }
        self.timers.schedule_all(timers);
    }
}
