//! The domain core: identifiers, time, game and player sessions, their state machine, capacity
//! rules and the error type. Nothing here knows about gRPC or HTTP; `grpc/` and the CLI translate.

mod change;
mod error;
pub mod filter;
mod game_session;
pub mod health;
mod ids;
pub mod limits;
mod player_session;
mod time;

pub use change::{Change, EndCause, EndReason, ImportProgress, Lsn, LSN_MAX};
pub use error::{Error, Result};
pub use filter::{available_seats, Filter, Operand, Sort, SortValue};
pub use game_session::{
    check_capacity_value, CreationPolicy, GameSession, GameSessionInfo, GameSessionStatus,
    RegisterGameSession,
};
pub use health::{HealthStatus, HealthUpdate};
pub use ids::{check_text, FleetId, GameSessionId, IdempotencyKey, PlayerId, PlayerSessionId};
pub use player_session::{
    check_player_data, parse_player_data, ErrorLog, ErrorReport, PlayerSession,
    PlayerSessionStatus, PlayerStrings, SessionLsns, Step,
};
pub use time::{Clock, Timestamp};
