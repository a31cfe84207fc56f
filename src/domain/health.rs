//! Session health in the shape of Sentry's release health (`SessionUpdate`): every player
//! session is a health session.
//!
//! | player session | health update |
//! |---|---|
//! | reserved | `init = true`, status ok |
//! | accepted; error reported (not crashed) | status ok (errors counts the reports) |
//! | COMPLETED: removed, or its game session ended normally | exited (terminal) |
//! | COMPLETED: its game session crashed, or the player's client crashed | crashed (terminal, errors >= 1) |
//! | COMPLETED: its game session lost its heartbeat | abnormal (terminal) |
//! | TIMEDOUT | abnormal (terminal) |
//!
//! The sequence number is the LSN of the journal record of the change, so it increases strictly
//! per session and survives restarts; updates are emitted by live calls only (never by replay),
//! so a session gets exactly one init and one terminal update, and none after it.

use std::{fmt, sync::Arc, time::Duration};

use super::{
    EndReason, FleetId, GameSession, GameSessionId, Lsn, PlayerSession, PlayerSessionId,
    PlayerSessionStatus, Timestamp,
};

/// Sentry's session statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HealthStatus {
    Ok,
    Exited,
    Crashed,
    Abnormal,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Exited => "exited",
            HealthStatus::Crashed => "crashed",
            HealthStatus::Abnormal => "abnormal",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != HealthStatus::Ok
    }

    /// The health status of a player session as it is now.
    pub fn of(ps: &PlayerSession) -> HealthStatus {
        match (ps.status, ps.end_reason) {
            (PlayerSessionStatus::Reserved | PlayerSessionStatus::Active, _) => HealthStatus::Ok,
            (PlayerSessionStatus::TimedOut, _) => HealthStatus::Abnormal,
            (
                PlayerSessionStatus::Completed,
                Some(EndReason::GameSessionCrashed | EndReason::PlayerCrashed),
            ) => HealthStatus::Crashed,
            (PlayerSessionStatus::Completed, Some(EndReason::HeartbeatLost)) => {
                HealthStatus::Abnormal
            }
            (PlayerSessionStatus::Completed, _) => HealthStatus::Exited,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One session health update.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthUpdate {
    /// The UUID of the player session id (Sentry's `sid`).
    pub session_id: uuid::Uuid,
    /// The player id (Sentry's `did`).
    pub distinct_id: String,
    /// LSN of the change: strictly increasing per session.
    pub sequence: Lsn,
    /// When the change happened.
    pub timestamp: Timestamp,
    /// When the session started (its creation time).
    pub started: Timestamp,
    /// True exactly on the first update of the session.
    pub init: bool,
    /// From `started` to the end; terminal updates only.
    pub duration: Option<Duration>,
    pub status: HealthStatus,
    pub errors: u32,
    pub release: Arc<str>,
    pub environment: Arc<str>,
    pub player_session_id: PlayerSessionId,
    pub game_session_id: GameSessionId,
    pub fleet_id: FleetId,
}

impl HealthUpdate {
    /// The update for `ps` (as it is after the change journaled at `sequence`) of game session
    /// `game`.
    pub fn of(ps: &PlayerSession, game: &GameSession, sequence: Lsn, at: Timestamp) -> Self {
        let status = HealthStatus::of(ps);
        let errors = if status == HealthStatus::Crashed {
            // Sentry: a crashed session has at least one error.
            ps.error_count().max(1)
        } else {
            ps.error_count()
        };
        HealthUpdate {
            session_id: ps.id.uuid(),
            distinct_id: ps.player_id().to_string(),
            sequence,
            timestamp: at,
            started: ps.creation_time,
            init: sequence == ps.lsns.reserved(),
            duration: status
                .is_terminal()
                .then(|| at.duration_since(ps.creation_time)),
            status,
            errors,
            release: game.release.clone(),
            environment: game.environment.clone(),
            player_session_id: ps.id,
            game_session_id: ps.game.id.clone(),
            fleet_id: ps.game.fleet_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CreationPolicy, GameSessionInfo, GameSessionStatus, PlayerStrings, SessionLsns, Step,
    };

    fn game() -> GameSession {
        GameSession {
            info: Arc::new(GameSessionInfo {
                id: GameSessionId::parse("g", "gs-1").unwrap(),
                fleet_id: FleetId::parse("f", "fleet-1").unwrap(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
            }),
            name: "m".into(),
            maximum_player_session_count: 4,
            current_player_session_count: 0,
            creation_policy: CreationPolicy::AcceptAll,
            status: GameSessionStatus::Active,
            labels: Default::default(),
            release: "game@1.2.3".into(),
            environment: "production".into(),
            reservation_timeout: Duration::from_secs(60),
            heartbeat_timeout: None,
            heartbeat_deadline: None,
            creation_time: Timestamp::from_micros(0),
            termination_time: None,
            termination_reason: None,
            end_cause: None,
        }
    }

    fn session(g: &GameSession) -> PlayerSession {
        PlayerSession {
            id: PlayerSessionId::generate(),
            player: PlayerStrings::parse("p", "player-1", None).unwrap(),
            game: g.info.clone(),
            status: PlayerSessionStatus::Reserved,
            creation_time: Timestamp::from_micros(1_000_000),
            termination_time: None,
            reservation_deadline: Timestamp::from_micros(61_000_000),
            accepted_at: None,
            end_reason: None,
            lsns: SessionLsns::new(10, 0, 0),
            error_count: 0,
        }
    }

    #[test]
    fn every_path_maps_to_its_status() {
        let g = game();
        let init = HealthUpdate::of(&session(&g), &g, 10, Timestamp::from_micros(1_000_000));
        assert!(init.init);
        assert_eq!(
            (init.status, init.errors, init.duration),
            (HealthStatus::Ok, 0, None)
        );
        assert_eq!(&*init.release, "game@1.2.3");
        assert_eq!(init.distinct_id.as_str(), "player-1");

        let mut accepted = session(&g);
        assert_eq!(
            accepted.accept(Timestamp::from_micros(2_000_000)).unwrap(),
            Step::Changed
        );
        let u = HealthUpdate::of(&accepted, &g, 11, Timestamp::from_micros(2_000_000));
        assert!(!u.init);
        assert_eq!(u.status, HealthStatus::Ok);

        let ended = |reason: EndReason, errors: u32| {
            let (mut ps, mut log) = (accepted.clone(), super::super::ErrorLog::default());
            for i in 0..errors {
                ps.record_error(
                    &mut log,
                    20 + u64::from(i),
                    Timestamp::from_micros(3_000_000),
                    "e".into(),
                );
            }
            ps.complete(Timestamp::from_micros(4_500_000), reason);
            HealthUpdate::of(&ps, &g, 30, Timestamp::from_micros(4_500_000))
        };
        for (reason, status, errors, want_errors) in [
            (EndReason::Removed, HealthStatus::Exited, 0, 0),
            (EndReason::Removed, HealthStatus::Exited, 2, 2),
            (EndReason::GameSessionEnded, HealthStatus::Exited, 0, 0),
            (EndReason::GameSessionCrashed, HealthStatus::Crashed, 0, 1),
            (EndReason::PlayerCrashed, HealthStatus::Crashed, 3, 3),
            (EndReason::HeartbeatLost, HealthStatus::Abnormal, 0, 0),
        ] {
            let u = ended(reason, errors);
            assert_eq!((u.status, u.errors), (status, want_errors), "{reason:?}");
            assert!(!u.init);
            assert_eq!(u.duration, Some(Duration::from_millis(3_500)));
        }

        let mut timed_out = session(&g);
        timed_out.time_out(Timestamp::from_micros(61_000_000));
        let u = HealthUpdate::of(&timed_out, &g, 12, Timestamp::from_micros(61_000_000));
        assert_eq!(u.status, HealthStatus::Abnormal);
        assert_eq!(u.duration, Some(Duration::from_secs(60)));
    }
}
