//! The one mapping from domain errors to gRPC status codes.
//!
//! Every status also carries `google.rpc` error details (tonic-types): `BadRequest` with the
//! offending field for INVALID_ARGUMENT, and `ErrorInfo` with a stable machine-readable reason
//! (e.g. `GAME_SESSION_FULL`) for the rest, so clients need not parse messages.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Error;

/// The `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "session-broker";

/// The gRPC code and stable reason of each domain error.
pub fn code_and_reason(e: &Error) -> (Code, &'static str) {
    match e {
        Error::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHENTICATED"),
        Error::PermissionDenied(_) => (Code::PermissionDenied, "PERMISSION_DENIED"),
        Error::RateLimited(_) => (Code::ResourceExhausted, "RATE_LIMITED"),
        Error::Overloaded(_) => (Code::Unavailable, "OVERLOADED"),
        Error::InvalidArgument { .. } => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        Error::GameSessionNotFound(_) => (Code::NotFound, "GAME_SESSION_NOT_FOUND"),
        Error::PlayerSessionNotFound(_) => (Code::NotFound, "PLAYER_SESSION_NOT_FOUND"),
        Error::PlayerSessionNotInGameSession { .. } => {
            (Code::NotFound, "PLAYER_SESSION_NOT_IN_GAME_SESSION")
        }
        Error::GameSessionNotActive { .. } => {
            (Code::FailedPrecondition, "INVALID_GAME_SESSION_STATUS")
        }
        Error::CreationDenied(_) => (Code::FailedPrecondition, "PLAYER_SESSION_CREATION_DENIED"),
        Error::PlayerSessionNotReserved { .. } => {
            (Code::FailedPrecondition, "INVALID_PLAYER_SESSION_STATUS")
        }
        Error::PlayerSessionEnded { .. } => {
            (Code::FailedPrecondition, "INVALID_PLAYER_SESSION_STATUS")
        }
        Error::CapacityBelowCurrent { .. } => (Code::FailedPrecondition, "CAPACITY_BELOW_CURRENT"),
        Error::IdempotencyKeyReused => (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED"),
        Error::GameSessionFull { .. } => (Code::ResourceExhausted, "GAME_SESSION_FULL"),
        Error::PlayerAlreadyInGameSession { .. } => {
            (Code::AlreadyExists, "PLAYER_ALREADY_IN_GAME_SESSION")
        }
        Error::NoGameSessionAvailable { .. } => {
            (Code::ResourceExhausted, "NO_GAME_SESSION_AVAILABLE")
        }
        Error::PlacementContention(_) => (Code::Aborted, "PLACEMENT_CONTENTION"),
        Error::WatchLagged { .. } | Error::HealthWatchLagged { .. } => {
            (Code::Aborted, "WATCH_LAGGED")
        }
        Error::GameSessionIdTaken(_) => (Code::AlreadyExists, "GAME_SESSION_ID_TAKEN"),
        Error::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE"),
        Error::Internal(_) => (Code::Internal, "INTERNAL"),
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, reason) = code_and_reason(&e);
        let details = match &e {
            Error::InvalidArgument { field, reason } => {
                ErrorDetails::with_bad_request_violation(field.clone(), reason.clone())
            }
            _ => ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::with_error_details(code, e.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GameSessionId;

    #[test]
    fn invalid_argument_names_the_field() {
        let s = Status::from(Error::invalid(
            "player_ids",
            "must hold 1 to 25 player ids, got 0",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("player_ids"));
        let br = s.get_details_bad_request().expect("bad request details");
        assert_eq!(br.field_violations[0].field, "player_ids");
    }

    #[test]
    fn full_is_resource_exhausted_with_reason() {
        let s = Status::from(Error::GameSessionFull {
            id: GameSessionId::parse("f", "gs").unwrap(),
            free: 0,
            requested: 1,
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "GAME_SESSION_FULL"
        );
    }
}
