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

/// The largest LSN: records keep LSNs in 48 bits ([`super::SessionLsns`]). 281 trillion
/// records, nine years of a million a second; the journal refuses appends beyond it and
/// recovery treats a larger LSN as corruption.
pub const LSN_MAX: Lsn = (1 << 48) - 1;

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

/// Where an import job stands: cumulative counts and the next record (see `import::jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportProgress {
    /// Byte offset and 1-based line of the next record of the file.
    pub offset: u64,
    pub line: u64,
    pub total: u64,
    pub imported: u64,
    pub skipped: u64,
    /// Error messages beyond the ones kept.
    pub more_errors: u64,
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
    /// An import job started on an uploaded file (`format`: jsonl or csv).
    ImportStarted {
        job: Arc<str>,
        format: Arc<str>,
        file: Arc<str>,
        at: Timestamp,
    },
    /// An import job finished a chunk: its cumulative progress and the chunk's error messages.
    ImportChunk {
        job: Arc<str>,
        progress: ImportProgress,
        errors: Vec<Arc<str>>,
        at: Timestamp,
    },
    /// A row an import job imported from `line` of its file (journaled with the row's own
    /// changes).
    ImportedRow {
        job: Arc<str>,
        id: Arc<str>,
        line: u64,
        at: Timestamp,
    },
    /// An import job ended: completed, or failed with a reason (cancelled, unreadable file).
    ImportFinished {
        job: Arc<str>,
        failed: Option<Arc<str>>,
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
