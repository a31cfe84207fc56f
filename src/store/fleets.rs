//! Per-fleet state: counts maintained on every transition (never computed by a scan): game
//! sessions and player sessions by status, seats of ACTIVE game sessions, transition totals;
//! the search index of the fleet's ACTIVE game sessions; and its live watchers.

use std::sync::Arc;

use super::{
    release_health::{HealthCounts, ReleaseHealth},
    search::{FleetIndex, Search, SearchPage},
    watch::{FleetEventKind, Watcher},
};
use crate::domain::{FleetId, GameSession, GameSessionStatus, PlayerSessionStatus};

/// Everything the store keeps per fleet, under one lock (the fleet map's entry).
#[derive(Default)]
pub(super) struct Fleet {
    pub(super) counts: FleetCounts,
    pub(super) index: FleetIndex,
    pub(super) watchers: Vec<Arc<Watcher>>,
    /// Sequence number of the fleet's last published change.
    pub(super) sequence: u64,
    /// Health sessions by release, environment and start minute.
    pub(super) health: ReleaseHealth,
}

/// Counts of one fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Retained game sessions by status: ACTIVE, TERMINATED, ERROR.
    pub game_sessions: [u64; 3],
    /// Retained player sessions by status: RESERVED, ACTIVE, COMPLETED, TIMEDOUT.
    pub player_sessions: [u64; 4],
    /// Sum of maximum_player_session_count over ACTIVE game sessions.
    pub maximum_player_session_count: u64,
    /// Transitions made by this process (not replayed): reserved, activated, completed, timed out.
    pub transitions: [u64; 4],
    /// Seats a player could take now: free seats of ACTIVE, ACCEPT_ALL game sessions (from the
    /// fleet's index; filled in when the counts are read).
    pub available: u64,
}

impl FleetCounts {
    /// RESERVED + ACTIVE.
    pub fn current_player_session_count(&self) -> u64 {
        self.player_sessions[0] + self.player_sessions[1]
    }
    /// Seats a player could take now (ACTIVE, ACCEPT_ALL game sessions' free seats).
    pub fn available_player_session_count(&self) -> u64 {
        self.available
    }
}

pub(super) fn gs_index(s: GameSessionStatus) -> usize {
    match s {
        GameSessionStatus::Active => 0,
        GameSessionStatus::Terminated => 1,
        GameSessionStatus::Error => 2,
    }
}

pub(super) fn ps_index(s: PlayerSessionStatus) -> usize {
    match s {
        PlayerSessionStatus::Reserved => 0,
        PlayerSessionStatus::Active => 1,
        PlayerSessionStatus::Completed => 2,
        PlayerSessionStatus::TimedOut => 3,
    }
}

/// Index into [`FleetCounts::transitions`].
#[derive(Debug, Clone, Copy)]
pub enum Transition {
    Reserved = 0,
    Activated = 1,
    Completed = 2,
    TimedOut = 3,
}

impl Transition {
    pub const ALL: [(Transition, &'static str); 4] = [
        (Transition::Reserved, "reserved"),
        (Transition::Activated, "activated"),
        (Transition::Completed, "completed"),
        (Transition::TimedOut, "timed_out"),
    ];
}

impl super::Store {
    /// Runs `f` on the fleet's state under its lock (creating it on first use).
    pub(super) fn with_fleet<T>(&self, fleet: &FleetId, f: impl FnOnce(&mut Fleet) -> T) -> T {
        match self.fleets.get_mut(fleet) {
            Some(mut e) => f(&mut e),
            None => f(&mut self.fleets.entry(fleet.clone()).or_default()),
        }
    }

    pub(super) fn fleet(&self, fleet: &FleetId, f: impl FnOnce(&mut FleetCounts)) {
        self.with_fleet(fleet, |e| f(&mut e.counts));
    }

    /// A live call changed `g` (call with its game session's entry locked, after the change):
    /// updates the fleet's search index and tells its watchers, in one step under the fleet's
    /// lock so watchers see changes in the order they were applied.
    /// `also` updates the fleet's counts and release health in the same step.
    pub(super) fn fleet_changed(
        &self,
        g: &GameSession,
        kind: FleetEventKind,
        also: impl FnOnce(&mut Fleet),
    ) {
        let lagged = self.with_fleet(g.fleet_id(), |f| {
            also(f);
            f.index.upsert(g);
            f.sequence += 1;
            f.watchers
                .iter()
                .filter(|w| w.push(f.sequence, kind, g))
                .count()
        });
        if lagged > 0 {
            tracing::warn!(fleet_id = %g.fleet_id(), lagged, "fleet watchers fell behind and are cut off");
            if let Some(m) = self.metrics.get() {
                m.fleet_watchers_lagged.inc_by(lagged as u64);
            }
        }
    }

    /// Adds `g` to its fleet's search index and its players to the release health, without
    /// telling watchers (after recovery).
    /// `players` are the contributions of its retained player sessions
    /// ([`super::release_health::retained`]).
    pub(super) fn index_game_session(&self, g: &GameSession, players: &[(i64, HealthCounts)]) {
        // Players in listing order mostly share their start minute: one bucket update per
        // minute instead of one per player, under the fleet's lock.
        let mut minutes: Vec<(i64, HealthCounts)> = Vec::new();
        for (minute, c) in players {
            match minutes.last_mut() {
                Some((m, sum)) if m == minute => sum.add(c),
                _ => minutes.push((*minute, *c)),
            }
        }
        self.with_fleet(g.fleet_id(), |f| {
            f.index.upsert(g);
            for c in minutes {
                f.health.restore(g, c);
            }
        });
    }

    /// Runs `read` on `fleet`'s search index, brought up to date first
    /// ([`FleetIndex::refresh`], under the fleet's lock, which is then downgraded so searches
    /// of the fleet run side by side). `None` for an unknown fleet.
    pub(super) fn with_index<T>(
        &self,
        fleet: &FleetId,
        read: impl FnOnce(&FleetIndex) -> T,
    ) -> Option<T> {
        let f = self.fleets.get(fleet)?;
        if !f.index.needs_refresh() {
            return Some(read(&f.index));
        }
        drop(f);
        let mut f = self.fleets.get_mut(fleet)?;
        f.index.refresh();
        Some(read(&f.downgrade().index))
    }

    /// One page of ACTIVE game sessions of a fleet (empty for an unknown fleet).
    pub fn search(&self, q: &Search) -> SearchPage {
        self.with_index(&q.fleet_id, |index| index.search(q))
            .unwrap_or(SearchPage {
                game_sessions: Vec::new(),
                next: None,
            })
    }

    /// A player session of `fleet` moved from `from` to `to` (None: created / purged).
    pub(super) fn count_player(
        &self,
        fleet: &FleetId,
        from: Option<PlayerSessionStatus>,
        to: Option<PlayerSessionStatus>,
    ) {
        self.fleet(fleet, |c| {
            if let Some(s) = from {
                c.player_sessions[ps_index(s)] = c.player_sessions[ps_index(s)].saturating_sub(1);
            }
            if let Some(s) = to {
                c.player_sessions[ps_index(s)] += 1;
            }
        });
    }

    /// A game session appeared (registered, replayed or restored).
    pub(super) fn count_game_added(&self, g: &crate::domain::GameSession) {
        self.fleet(g.fleet_id(), |c| {
            c.game_sessions[gs_index(g.status)] += 1;
            if g.is_active() {
                c.maximum_player_session_count += u64::from(g.maximum_player_session_count);
            }
        });
    }

    /// A game session was purged.
    pub(super) fn count_game_removed(&self, g: &crate::domain::GameSession) {
        self.fleet(g.fleet_id(), |c| {
            let i = gs_index(g.status);
            c.game_sessions[i] = c.game_sessions[i].saturating_sub(1);
            if g.is_active() {
                c.maximum_player_session_count = c
                    .maximum_player_session_count
                    .saturating_sub(u64::from(g.maximum_player_session_count));
            }
        });
    }

    /// Counts of one fleet (zeros for an unknown fleet).
    pub fn fleet_counts(&self, fleet: &FleetId) -> FleetCounts {
        self.fleets
            .get(fleet)
            .map(|f| f.counts_now())
            .unwrap_or_default()
    }

    /// Counts of every fleet that has had a game session, sorted by fleet id.
    pub fn all_fleet_counts(&self) -> Vec<(FleetId, FleetCounts)> {
        let mut v: Vec<_> = self
            .fleets
            .iter()
            .filter(|e| !e.value().is_unused())
            .map(|e| (e.key().clone(), e.value().counts_now()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Fleet {
    /// No game session has ever been counted here (the entry exists only for a watcher).
    pub(super) fn is_unused(&self) -> bool {
        self.counts == FleetCounts::default() && self.index.is_empty()
    }

    fn counts_now(&self) -> FleetCounts {
        FleetCounts {
            available: self.index.available_seats(),
            ..self.counts
        }
    }
}
