//! The one error type of the library. `grpc::status` maps it to gRPC codes in one place.

use super::{FleetId, GameSessionId, GameSessionStatus, PlayerSessionId, PlayerSessionStatus};

/// Result alias for domain operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with. A failed operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials the daemon does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// The caller's role or fleet scope does not cover the call (no hint whether the target
    /// exists).
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The caller's token is over its rate limit.
    #[error("rate limited: {0}")]
    RateLimited(String),

    /// The daemon is at its in-flight limit; retry with backoff (or on another instance).
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// A request field is missing or malformed; `field` is the request field's name.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },

    #[error("game session {0} not found")]
    GameSessionNotFound(GameSessionId),

    #[error("player session {0} not found")]
    PlayerSessionNotFound(PlayerSessionId),

    /// The player session exists but belongs to another game session.
    #[error("player session {player_session_id} not found in game session {game_session_id}")]
    PlayerSessionNotInGameSession {
        player_session_id: PlayerSessionId,
        game_session_id: GameSessionId,
    },

    #[error("game session {id} is {status}, not ACTIVE")]
    GameSessionNotActive {
        id: GameSessionId,
        status: GameSessionStatus,
    },

    #[error("game session {0} does not accept new player sessions (policy DENY_ALL)")]
    CreationDenied(GameSessionId),

    /// Accept of a player session that is COMPLETED or TIMEDOUT.
    #[error("player session {id} is {status} and cannot be accepted")]
    PlayerSessionNotReserved {
        id: PlayerSessionId,
        status: PlayerSessionStatus,
    },

    /// An error report for a COMPLETED or TIMEDOUT player session.
    #[error("player session {id} is {status}: nothing can be reported after it ended")]
    PlayerSessionEnded {
        id: PlayerSessionId,
        status: PlayerSessionStatus,
    },

    #[error(
        "cannot set maximum_player_session_count of game session {id} to {requested}: \
         {current} player sessions are RESERVED or ACTIVE"
    )]
    CapacityBelowCurrent {
        id: GameSessionId,
        requested: u32,
        current: u32,
    },

    /// Fewer free seats than requested; retry immediately or after a waiting period.
    #[error("game session {id} is full: {free} free seats, {requested} requested")]
    GameSessionFull {
        id: GameSessionId,
        free: u32,
        requested: u32,
    },

    #[error("player {player_id} already has a RESERVED or ACTIVE player session in game session {game_session_id}")]
    PlayerAlreadyInGameSession {
        player_id: String,
        game_session_id: GameSessionId,
    },

    /// PlacePlayerSessions found no ACTIVE, ACCEPT_ALL game session in the fleet that matches
    /// and has enough available seats for the whole party.
    #[error("no game session in fleet {fleet_id} matches with {requested} available seats")]
    NoGameSessionAvailable { fleet_id: FleetId, requested: u32 },

    /// PlacePlayerSessions lost every race for its candidates; retrying is safe.
    #[error("placement in fleet {0} kept losing races for seats; retry")]
    PlacementContention(FleetId),

    /// A WatchFleet subscriber fell too far behind; it must resubscribe for a fresh snapshot.
    #[error(
        "watcher of fleet {fleet_id} fell behind by more than {buffer} game sessions with \
         undelivered changes; resubscribe for a fresh snapshot"
    )]
    WatchLagged { fleet_id: FleetId, buffer: usize },

    /// A WatchSessionUpdates subscriber fell too far behind.
    #[error("session update watcher fell more than {buffer} updates behind; resubscribe")]
    HealthWatchLagged { buffer: usize },

    #[error("game session id {0} is already taken")]
    GameSessionIdTaken(GameSessionId),

    #[error("idempotency_key was already used with a different request")]
    IdempotencyKeyReused,

    /// The daemon cannot serve the request right now (shutting down, journal failed).
    #[error("unavailable: {0}")]
    Unavailable(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
