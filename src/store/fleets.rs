//! Per-fleet counts, maintained on every transition (never computed by a scan): game sessions
//! and player sessions by status, seats of ACTIVE game sessions, and transition totals.

use crate::domain::{FleetId, GameSessionStatus, PlayerSessionStatus};

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
}

impl FleetCounts {
    /// RESERVED + ACTIVE.
    pub fn current_player_session_count(&self) -> u64 {
        self.player_sessions[0] + self.player_sessions[1]
    }
    /// Free seats over ACTIVE game sessions (ended game sessions hold no players).
    pub fn available_player_session_count(&self) -> u64 {
        self.maximum_player_session_count
            .saturating_sub(self.current_player_session_count())
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
    pub(super) fn fleet(&self, fleet: &FleetId, f: impl FnOnce(&mut FleetCounts)) {
        f(&mut self.fleets.entry(fleet.clone()).or_default());
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

    /// Counts `n` transitions made by a live call (not by replay).
    pub(super) fn count_transition(&self, fleet: &FleetId, t: Transition, n: u64) {
        self.fleet(fleet, |c| c.transitions[t as usize] += n);
    }

    /// Counts of one fleet (zeros for an unknown fleet).
    pub fn fleet_counts(&self, fleet: &FleetId) -> FleetCounts {
        self.fleets.get(fleet).map(|c| *c).unwrap_or_default()
    }

    /// Counts of every fleet that has had a game session, sorted by fleet id.
    pub fn all_fleet_counts(&self) -> Vec<(FleetId, FleetCounts)> {
        let mut v: Vec<_> = self
            .fleets
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
