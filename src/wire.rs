//! Conversions between domain values and protobuf wire types that both the gRPC API (`grpc/`)
//! and the journal's records (`journal/records.rs`) use, so neither depends on the other.

use crate::{
    domain::{CreationPolicy, Timestamp},
    proto,
};

/// A domain timestamp (microseconds) as a protobuf `Timestamp`.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.to_seconds_nanos();
    prost_types::Timestamp { seconds, nanos }
}

/// A protobuf `Timestamp` as a domain timestamp (truncated to microseconds, saturating).
pub fn from_timestamp(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_micros(
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos) / 1_000),
    )
}

/// A creation policy as its API enum.
pub fn creation_policy(p: CreationPolicy) -> proto::PlayerSessionCreationPolicy {
    match p {
        CreationPolicy::AcceptAll => proto::PlayerSessionCreationPolicy::AcceptAll,
        CreationPolicy::DenyAll => proto::PlayerSessionCreationPolicy::DenyAll,
    }
}
