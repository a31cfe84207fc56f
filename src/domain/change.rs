//! Changes: every state transition the store makes, as a value. The journal encodes them as
//! operation updates (and decodes them on replay); later consumers (health, analytics, watchers)
//! derive their events from the same values.

use std::{sync::Arc, time::Duration};

use super::{
    CreationPolicy, GameSession, GameSessionId, GameSessionStatus, IdempotencyKey, PlayerSession,
    PlayerSessionId, Timestamp,
};

/// Log sequence number of a journal record: strictly increasing, 1-based (0 = none).
pub type Lsn = u64;

/// Why a game session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// EndGameSession (TERMINATED).
    Ended,
    /// EndGameSession with crashed = true (ERROR).
    Crashed,
    /// No heartbeat within its heartbeat timeout (ERROR).
    HeartbeatLost,
}

impl EndCause {
    pub fn status(self) -> GameSessionStatus {
        match self {
            EndCause::Ended => GameSessionStatus::Terminated,
            EndCause::Crashed | EndCause::HeartbeatLost => GameSessionStatus::Error,
        }
    }
}

/// Why a player session was completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// RemovePlayerSession.
    Removed,
    /// Its game session ended normally.
    GameSessionEnded,
    /// Its game session crashed.
    GameSessionCrashed,
    /// Its game session stopped heartbeating.
    HeartbeatLost,
    /// ReportPlayerSessionError with crashed = true (the player's client crashed).
    PlayerCrashed,
}

impl EndReason {
    /// The completion reason of the players of a game session that ended with `cause`.
    pub fn from_game_end(cause: EndCause) -> Self {
        match cause {
            EndCause::Ended => EndReason::GameSessionEnded,
            EndCause::Crashed => EndReason::GameSessionCrashed,
            EndCause::HeartbeatLost => EndReason::HeartbeatLost,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Removed => "removed",
            EndReason::GameSessionEnded => "game_session_ended",
            EndReason::GameSessionCrashed => "game_session_crashed",
            EndReason::HeartbeatLost => "heartbeat_lost",
            EndReason::PlayerCrashed => "player_crashed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EndReason::Removed,
            EndReason::GameSessionEnded,
            EndReason::GameSessionCrashed,
            EndReason::HeartbeatLost,
            EndReason::PlayerCrashed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One state transition. A group of changes made by one call is journaled atomically.
#[derive(Debug, Clone)]
pub enum Change {
    GameSessionStarted(GameSession),
    GameSessionUpdated {
        id: GameSessionId,
        maximum_player_session_count: Option<u32>,
        policy: Option<CreationPolicy>,
        at: Timestamp,
    },
    GameSessionEnded {
        id: GameSessionId,
        cause: EndCause,
        reason: Arc<str>,
        at: Timestamp,
    },
    Reserved(PlayerSession),
    /// An idempotency key and the reservation it produced.
    IdempotencyKey {
        key: IdempotencyKey,
        fingerprint: u64,
        player_session_ids: Vec<PlayerSessionId>,
        at: Timestamp,
    },
    Accepted {
        id: PlayerSessionId,
        game_session_id: GameSessionId,
        at: Timestamp,
    },
    TimedOut {
        id: PlayerSessionId,
        game_session_id: GameSessionId,
        /// The reservation deadline.
        at: Timestamp,
    },
    Completed {
        id: PlayerSessionId,
        game_session_id: GameSessionId,
        reason: EndReason,
        at: Timestamp,
    },
    /// ReportPlayerSessionError: one more error for a live player session.
    ErrorReported {
        id: PlayerSessionId,
        game_session_id: GameSessionId,
        message: Arc<str>,
        at: Timestamp,
    },
    /// The analytics dispatcher's cursor: every record up to `through` was delivered to the
    /// sink (or dropped and counted); after a restart it resumes after it.
    AnalyticsDelivered {
        through: Lsn,
        sink: Arc<str>,
        at: Timestamp,
    },
    /// An analytics batch covering records `first..=last` failed and is retried after `delay`
    /// (an audit record: replay changes nothing).
    AnalyticsRetry {
        first: Lsn,
        last: Lsn,
        sink: Arc<str>,
        delay: Duration,
        error: Arc<str>,
        at: Timestamp,
    },
}
