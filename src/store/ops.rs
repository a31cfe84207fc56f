//! Mutations. Each validates, appends its changes to the journal under the game session's
//! lock, applies them, releases every lock, then waits until the records are durable.

use std::sync::Arc;

use dashmap::mapref::entry::Entry;

use super::{
    fleets::ps_index, FleetEventKind, GameSessionEntry, IdempotencyRecord, Reserve, Store,
    Transition,
};
use crate::{
    domain::{
        limits, Change, CreationPolicy, EndCause, EndReason, Error, GameSession, GameSessionId,
        GameSessionInfo, GameSessionStatus, Lsn, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, RegisterGameSession, Result, Step, Timestamp,
    },
    sweeper::Timer,
};

/// The outcome of [`Store::reserve_now`].
pub(super) struct Reserved {
    pub(super) player_sessions: Vec<PlayerSession>,
    /// The LSN to wait for before replying.
    pub(super) lsn: Lsn,
    /// The game session right after the reservation; `None` for an idempotent retry.
    pub(super) game_session: Option<GameSession>,
}

impl Store {
    /// Registers a new ACTIVE game session with policy ACCEPT_ALL.
    pub async fn register_game_session(&self, mut req: RegisterGameSession) -> Result<GameSession> {
        if let Some(f) = self.config.fleets.get(&req.fleet_id) {
            req.reservation_timeout = req.reservation_timeout.or(f.reservation_timeout);
            req.heartbeat_timeout = req.heartbeat_timeout.or(f.heartbeat_timeout);
            if req.environment.is_empty() {
                req.environment = f.environment.clone().unwrap_or_default();
            }
            if let Some(max) = f.max_players {
                if req.maximum_player_session_count == 0 {
                    req.maximum_player_session_count = max;
                } else if req.maximum_player_session_count > max {
                    return Err(Error::invalid(
                        "maximum_player_session_count",
                        format!(
                            "fleet {} allows at most {max} seats per game session",
                            req.fleet_id
                        ),
                    ));
                }
            }
        }
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
            end_cause: None,
        };
        let lsn = match self.game_sessions.entry(id.clone()) {
            Entry::Occupied(_) => return Err(Error::GameSessionIdTaken(id)),
            Entry::Vacant(v) => {
                let lsn = self
                    .journal
                    .append(&[Change::GameSessionStarted(session.clone())])?;
                let e = v.insert(GameSessionEntry::new(session.clone()));
                self.count_game_added(&session);
                self.fleet_changed(&e.session, FleetEventKind::Created, |_| {});
                lsn
            }
        };
        if let Some(d) = heartbeat_deadline {
            self.timers.schedule(d, Timer::Heartbeat(id.clone()));
        }
        tracing::debug!(game_session_id = %id, fleet_id = %session.fleet_id(), "game session registered");
        self.journal.wait_durable(lsn).await?;
        Ok(session)
    }

    /// Extends the heartbeat deadline of an ACTIVE game session. Not journaled: after a restart
    /// every game session gets a full heartbeat period of grace anyway.
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
    pub async fn update_game_session(
        &self,
        id: &GameSessionId,
        maximum_player_session_count: Option<u32>,
        policy: Option<CreationPolicy>,
    ) -> Result<GameSession> {
        let (snapshot, lsn) = {
            let mut e = self.entry_mut(id)?;
            e.session.check_active()?;
            if let Some(max) = maximum_player_session_count {
                e.session.check_resize(max)?;
            }
            let lsn = self.journal.append(&[Change::GameSessionUpdated {
                id: id.clone(),
                maximum_player_session_count,
                policy,
                at: self.clock.now(),
            }])?;
            self.apply_update(&mut e, maximum_player_session_count, policy);
            self.fleet_changed(&e.session, FleetEventKind::Updated, |_| {});
            (e.snapshot(), lsn)
        };
        tracing::debug!(game_session_id = %id, ?maximum_player_session_count, ?policy, "game session updated");
        self.journal.wait_durable(lsn).await?;
        Ok(snapshot)
    }

    /// Ends a game session and completes its RESERVED and ACTIVE player sessions. Idempotent.
    pub async fn end_game_session(
        &self,
        id: &GameSessionId,
        crashed: bool,
        reason: &str,
    ) -> Result<GameSession> {
        let cause = if crashed {
            EndCause::Crashed
        } else {
            EndCause::Ended
        };
        let (snapshot, lsn) = {
            let mut e = self.entry_mut(id)?;
            let lsn = self.end_locked(&mut e, self.clock.now(), cause, reason)?;
            (e.snapshot(), lsn)
        };
        self.journal.wait_durable(lsn).await?;
        Ok(snapshot)
    }

    /// Ends `e` (if ACTIVE) and completes its live players, as one journal checkpoint. Returns
    /// the LSN to wait for (the current one if it had already ended).
    pub(super) fn end_locked(
        &self,
        e: &mut GameSessionEntry,
        at: Timestamp,
        cause: EndCause,
        reason: &str,
    ) -> Result<Lsn> {
        if !e.session.is_active() {
            return Ok(self.journal.last_lsn());
        }
        let gsid = e.session.id().clone();
        let reason: Arc<str> = reason.into();
        let ended = EndReason::from_game_end(cause);
        let live = self.live_players(e);
        let mut changes = Vec::with_capacity(1 + live.len());
        changes.push(Change::GameSessionEnded {
            id: gsid.clone(),
            cause,
            reason: reason.clone(),
            at,
        });
        changes.extend(live.iter().map(|ps| Change::Completed {
            id: *ps,
            game_session_id: gsid.clone(),
            reason: ended,
            at,
        }));
        let first = self.journal.append(&changes)?;
        let completed: Vec<(PlayerSessionId, Lsn)> = live
            .iter()
            .enumerate()
            .map(|(i, ps)| (*ps, first + 1 + i as Lsn))
            .collect();
        self.end_game_locked(e, at, cause, reason, &completed);
        let ended: Vec<(PlayerSession, Lsn)> = completed
            .iter()
            .filter_map(|(id, lsn)| Some((self.player_session(id)?, *lsn)))
            .collect();
        self.fleet_changed(&e.session, FleetEventKind::Ended, |f| {
            f.counts.transitions[Transition::Completed as usize] += live.len() as u64;
            for (ps, _) in &ended {
                f.health.ended(&e.session, ps);
            }
        });
        for (ps, lsn) in &ended {
            self.emit_health(&e.session, ps, *lsn, at);
        }
        tracing::debug!(game_session_id = %gsid, status = %e.session.status, ?cause, "game session ended");
        Ok(first + live.len() as Lsn)
    }

    /// Applies the end of a game session and the completion of `completed` players (with the
    /// LSNs of their records).
    pub(super) fn end_game_locked(
        &self,
        e: &mut GameSessionEntry,
        at: Timestamp,
        cause: EndCause,
        reason: Arc<str>,
        completed: &[(PlayerSessionId, Lsn)],
    ) {
        let (fleet, max) = (
            e.session.fleet_id().clone(),
            e.session.maximum_player_session_count,
        );
        if !e.session.end(at, cause, reason) {
            return;
        }
        let status = e.session.status;
        self.fleet(&fleet, |c| {
            c.game_sessions[0] = c.game_sessions[0].saturating_sub(1);
            c.game_sessions[super::fleets::gs_index(status)] += 1;
            c.maximum_player_session_count = c
                .maximum_player_session_count
                .saturating_sub(u64::from(max));
        });
        let ended = EndReason::from_game_end(cause);
        for (psid, lsn) in completed {
            self.complete_locked(e, *psid, at, ended, *lsn);
        }
        self.schedule_purge(at, Timer::PurgeGameSession(e.session.id().clone()));
    }

    /// Completes one live player session of `e` (journaled at `lsn`), freeing its seat.
    pub(super) fn complete_locked(
        &self,
        e: &mut GameSessionEntry,
        psid: PlayerSessionId,
        at: Timestamp,
        reason: EndReason,
        lsn: Lsn,
    ) {
        let Some(mut ps) = self.player_sessions.get_mut(&psid) else {
            return;
        };
        let before = ps.status;
        if ps.complete(at, reason) == Step::Changed {
            ps.lsns.set_ended(lsn);
            self.release_seat(e, &ps);
            self.count_player(&ps.game.fleet_id, Some(before), Some(ps.status));
            self.schedule_purge(at, self.purge_timer(&psid));
        }
    }

    /// Reserves seats for 1-25 players: all of them or none.
    pub async fn reserve(&self, req: Reserve) -> Result<Vec<PlayerSession>> {
        req.validate(limits::MAX_BATCH_PLAYERS)?;
        let fingerprint = req.idempotency_key.as_ref().map(|_| req.fingerprint());
        let done = self.reserve_now(req, fingerprint, None)?;
        self.journal.wait_durable(done.lsn).await?;
        Ok(done.player_sessions)
    }

    /// Reserves under the game session's lock. `fingerprint` identifies the request for its
    /// idempotency key; `precheck` (placement) must hold for the game session as it is under
    /// the lock, else [`Error::NoGameSessionAvailable`].
    pub(super) fn reserve_now(
        &self,
        req: Reserve,
        fingerprint: Option<u64>,
        precheck: Option<&dyn Fn(&GameSession) -> bool>,
    ) -> Result<Reserved> {
        let mut e = self.entry_mut(&req.game_session_id)?;
        let now = self.clock.now();

        let idem_slot = match &req.idempotency_key {
            None => None,
            Some(key) => match self.idempotency.entry(key.clone()) {
                Entry::Occupied(o) => {
                    let rec = o.get();
                    if Some(rec.fingerprint) != fingerprint {
                        return Err(Error::IdempotencyKeyReused);
                    }
                    // A retry: the original reservation, as it is now.
                    let player_sessions = rec
                        .player_session_ids
                        .iter()
                        .map(|id| self.get_player_session(*id))
                        .collect::<Result<Vec<_>>>()?;
                    return Ok(Reserved {
                        player_sessions,
                        lsn: self.journal.last_lsn(),
                        game_session: None,
                    });
                }
                Entry::Vacant(v) => Some(v),
            },
        };

        e.session.check_active()?;
        if e.session.creation_policy == CreationPolicy::DenyAll {
            return Err(Error::CreationDenied(req.game_session_id.clone()));
        }
        if let Some(p) = req
            .players
            .iter()
            .find(|p| self.seat_of(&e, p.player_id()).is_some())
        {
            return Err(Error::PlayerAlreadyInGameSession {
                player_id: p.player_id().to_string(),
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
        if precheck.is_some_and(|ok| !ok(&e.session)) {
            return Err(Error::NoGameSessionAvailable {
                fleet_id: e.session.fleet_id().clone(),
                requested,
            });
        }

        let deadline = now.saturating_add(e.session.reservation_timeout);
        let mut created: Vec<PlayerSession> = req
            .players
            .into_iter()
            .map(|player| {
                let id = PlayerSessionId::generate();
                PlayerSession::reserved(id, player, e.session.info.clone(), now, deadline)
            })
            .collect();
        let mut changes: Vec<Change> = created.iter().cloned().map(Change::Reserved).collect();
        let idem = idem_slot.zip(fingerprint);
        if let Some((slot, fingerprint)) = &idem {
            changes.push(Change::IdempotencyKey {
                key: slot.key().clone(),
                fingerprint: *fingerprint,
                player_session_ids: created.iter().map(|p| p.id).collect(),
                at: now,
            });
        }
        // Every check passed; from here on nothing fails once the journal took the changes.
        let first = self.journal.append(&changes)?;
        for (i, ps) in created.iter_mut().enumerate() {
            ps.lsns.set_reserved(first + i as Lsn);
            self.index_player(&mut e, ps.clone());
        }
        e.sync_count();
        for ps in &created {
            self.emit_health(&e.session, ps, ps.lsns.reserved(), now);
        }
        let n = created.len() as u64;
        self.fleet_changed(&e.session, FleetEventKind::Updated, |f| {
            f.counts.player_sessions[ps_index(PlayerSessionStatus::Reserved)] += n;
            f.counts.transitions[Transition::Reserved as usize] += n;
            for ps in &created {
                f.health.started(&e.session, ps);
            }
        });
        let game_session = e.snapshot();
        if let Some((slot, fingerprint)) = idem {
            let ttl = self
                .config
                .idempotency_ttl
                .max(e.session.reservation_timeout);
            let expires = now.saturating_add(ttl);
            let key = slot.key().clone();
            slot.insert(IdempotencyRecord {
                fingerprint,
                player_session_ids: created.iter().map(|p| p.id).collect(),
                expires,
            });
            self.timers.schedule(expires, Timer::IdempotencyExpiry(key));
        }
        drop(e);
        for ps in &created {
            self.timers
                .schedule(deadline, self.reservation_timer(&ps.id));
            tracing::debug!(
                player_session_id = %ps.id,
                player_id = %ps.player_id(),
                game_session_id = %ps.game.id,
                "player session reserved"
            );
        }
        Ok(Reserved {
            player_sessions: created,
            lsn: first + changes.len() as Lsn - 1,
            game_session: Some(game_session),
        })
    }

    /// RESERVED -> ACTIVE; an ACTIVE session is returned unchanged.
    pub async fn accept(
        &self,
        gsid: &GameSessionId,
        psid: PlayerSessionId,
    ) -> Result<PlayerSession> {
        let (ps, lsn) = {
            let e = self.entry_mut(gsid)?;
            let mut ps = self.player_in(gsid, psid)?;
            let at = self.clock.now();
            let mut next = PlayerSession::clone(&ps);
            match next.accept(at)? {
                Step::Unchanged => (next, self.journal.last_lsn()),
                Step::Changed => {
                    let lsn = self.journal.append(&[Change::Accepted {
                        id: psid,
                        game_session_id: gsid.clone(),
                        at,
                    }])?;
                    next.lsns.set_accepted(lsn);
                    *ps = next.clone();
                    drop(ps);
                    self.emit_health(&e.session, &next, lsn, at);
                    self.fleet(&next.game.fleet_id, |c| {
                        let r = &mut c.player_sessions[ps_index(PlayerSessionStatus::Reserved)];
                        *r = r.saturating_sub(1);
                        c.player_sessions[ps_index(PlayerSessionStatus::Active)] += 1;
                        c.transitions[Transition::Activated as usize] += 1;
                    });
                    tracing::debug!(player_session_id = %psid, game_session_id = %gsid, "player session accepted");
                    (next, lsn)
                }
            }
        };
        self.journal.wait_durable(lsn).await?;
        Ok(ps)
    }

    /// RESERVED or ACTIVE -> COMPLETED, freeing the seat; a terminal session is returned unchanged.
    pub async fn remove(
        &self,
        gsid: &GameSessionId,
        psid: PlayerSessionId,
    ) -> Result<PlayerSession> {
        let (ps, lsn) = {
            let mut e = self.entry_mut(gsid)?;
            let ps = self.player_in(gsid, psid)?;
            let at = self.clock.now();
            let mut next = PlayerSession::clone(&ps);
            match next.complete(at, EndReason::Removed) {
                Step::Unchanged => (next, self.journal.last_lsn()),
                Step::Changed => {
                    let lsn = self.journal.append(&[Change::Completed {
                        id: psid,
                        game_session_id: gsid.clone(),
                        reason: EndReason::Removed,
                        at,
                    }])?;
                    drop(ps);
                    self.complete_locked(&mut e, psid, at, EndReason::Removed, lsn);
                    next.lsns.set_ended(lsn);
                    self.fleet_changed(&e.session, FleetEventKind::Updated, |f| {
                        f.counts.transitions[Transition::Completed as usize] += 1;
                        f.health.ended(&e.session, &next);
                    });
                    self.emit_health(&e.session, &next, lsn, at);
                    tracing::debug!(player_session_id = %psid, game_session_id = %gsid, "player session completed");
                    (next, lsn)
                }
            }
        };
        self.journal.wait_durable(lsn).await?;
        Ok(ps)
    }

    /// ReportPlayerSessionError: one more error for a RESERVED or ACTIVE player session; with
    /// `crashed` the session also ends (COMPLETED, reason `player_crashed`), atomically.
    pub async fn report_error(
        &self,
        gsid: &GameSessionId,
        psid: PlayerSessionId,
        crashed: bool,
        message: &str,
    ) -> Result<PlayerSession> {
        let (ps, lsn) = {
            let mut e = self.entry_mut(gsid)?;
            let ps = self.player_in(gsid, psid)?;
            ps.check_can_report_error()?;
            let at = self.clock.now();
            let message: Arc<str> = message.into();
            let mut changes = vec![Change::ErrorReported {
                id: psid,
                game_session_id: gsid.clone(),
                message: message.clone(),
                at,
            }];
            if crashed {
                changes.push(Change::Completed {
                    id: psid,
                    game_session_id: gsid.clone(),
                    reason: EndReason::PlayerCrashed,
                    at,
                });
            }
            let first = self.journal.append(&changes)?;
            drop(ps);
            self.record_error(&psid, first, at, message);
            if crashed {
                self.complete_locked(&mut e, psid, at, EndReason::PlayerCrashed, first + 1);
            }
            let ps = self.get_player_session(psid)?;
            if crashed {
                self.fleet_changed(&e.session, FleetEventKind::Updated, |f| {
                    f.counts.transitions[Transition::Completed as usize] += 1;
                    f.health.ended(&e.session, &ps);
                });
            }
            tracing::debug!(player_session_id = %psid, game_session_id = %gsid, crashed, "player session error reported");
            self.emit_health(&e.session, &ps, first + changes.len() as Lsn - 1, at);
            (ps, first + changes.len() as Lsn - 1)
        };
        self.journal.wait_durable(lsn).await?;
        Ok(ps)
    }

    // ----- timers --------------------------------------------------------------------------

    /// Fires one timer, re-checking the current state at `now`.
    pub fn fire(&self, timer: Timer, now: Timestamp) {
        match timer {
            // A handle may be shared (a collision): each session re-checks its own state.
            Timer::Reservation(h) => {
                for psid in self.player_sessions.ids_at(h) {
                    self.time_out(psid, now);
                }
            }
            Timer::Heartbeat(gsid) => self.check_heartbeat(&gsid, now),
            Timer::PurgePlayerSession(h) => {
                for psid in self.player_sessions.ids_at(h) {
                    self.purge_player_session(psid, now);
                }
            }
            Timer::PurgeGameSession(gsid) => self.purge_game_session(&gsid, now),
            Timer::IdempotencyExpiry(key) => {
                self.idempotency.remove_if(&key, |_, r| r.expires <= now);
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
        let mut next = PlayerSession::clone(&ps);
        if next.time_out(now) == Step::Unchanged {
            return;
        }
        let at = next.reservation_deadline;
        match self.journal.append(&[Change::TimedOut {
            id: psid,
            game_session_id: gsid.clone(),
            at,
        }]) {
            Ok(lsn) => next.lsns.set_ended(lsn),
            Err(e) => {
                tracing::warn!(player_session_id = %psid, error = %e, "cannot time out");
                return;
            }
        }
        *ps = next.clone();
        self.release_seat(&mut e, &next);
        drop(ps);
        self.emit_health(&e.session, &next, next.lsns.ended(), at);
        self.fleet_changed(&e.session, FleetEventKind::Updated, |f| {
            let c = &mut f.counts;
            let r = &mut c.player_sessions[ps_index(PlayerSessionStatus::Reserved)];
            *r = r.saturating_sub(1);
            c.player_sessions[ps_index(PlayerSessionStatus::TimedOut)] += 1;
            c.transitions[Transition::TimedOut as usize] += 1;
            f.health.ended(&e.session, &next);
        });
        if let Some(m) = self.metrics.get() {
            m.sweeper_expired.inc();
            m.sweeper_lag.observe(now.duration_since(at).as_secs_f64());
        }
        self.schedule_purge(at, self.purge_timer(&psid));
        tracing::debug!(player_session_id = %psid, game_session_id = %gsid, "player session timed out");
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
            if let Err(err) = self.end_locked(
                &mut e,
                deadline,
                EndCause::HeartbeatLost,
                "heartbeat timeout",
            ) {
                tracing::warn!(game_session_id = %gsid, error = %err, "cannot end game session");
            }
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
        if let Some(ps) = self.player_sessions.remove(&psid) {
            let release = e
                .as_ref()
                .map(|e| (e.session.release.clone(), e.session.environment.clone()));
            if let Some(mut e) = e {
                e.players.remove(
                    (ps.creation_time, psid),
                    self.player_sessions.handle(&psid),
                    self.listed(&gsid, &super::all_listed),
                );
            }
            self.forget_player(&ps, release);
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
            self.count_game_removed(&e.session);
            let release = (e.session.release.clone(), e.session.environment.clone());
            let listed: Vec<_> = self.listing(&e, None).collect();
            for psid in listed {
                if let Some(ps) = self.player_sessions.remove(&psid) {
                    self.forget_player(&ps, Some(release.clone()));
                    self.unindex_player(&ps);
                }
            }
            tracing::debug!(game_session_id = %gsid, "game session purged");
        }
    }
}

impl Store {
    /// A purged player session leaves its fleet's counts and release health.
    fn forget_player(&self, ps: &PlayerSession, release: Option<(Arc<str>, Arc<str>)>) {
        self.with_fleet(&ps.game.fleet_id, |f| {
            let i = super::fleets::ps_index(ps.status);
            f.counts.player_sessions[i] = f.counts.player_sessions[i].saturating_sub(1);
            if let Some((r, env)) = &release {
                f.health.forget(r, env, ps);
            }
        });
    }

    /// Applies an UpdateGameSession to an entry (validated beforehand, or replayed).
    pub(super) fn apply_update(
        &self,
        e: &mut GameSessionEntry,
        maximum_player_session_count: Option<u32>,
        policy: Option<CreationPolicy>,
    ) {
        if let Some(max) = maximum_player_session_count {
            let old = e.session.maximum_player_session_count;
            e.session.maximum_player_session_count = max;
            if e.session.is_active() {
                self.fleet(e.session.fleet_id(), |c| {
                    c.maximum_player_session_count = (c.maximum_player_session_count
                        + u64::from(max))
                    .saturating_sub(u64::from(old));
                });
            }
        }
        if let Some(p) = policy {
            e.session.creation_policy = p;
        }
    }
}
