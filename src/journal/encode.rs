//! Writing checkpoints straight into bytes, for the append path.
//!
//! [`super::records::encode`] builds an `OperationRecord` (half a dozen `String`s, a formatted
//! id) that prost then encodes and that is dropped at once. A player session's update (a
//! CALLBACK record: reserved, accepted, timed out, completed, error reported; almost every
//! record a daemon appends) is written here field by field instead, from the change's own
//! strings, with no allocation. Every other change goes through prost. The bytes are the ones
//! prost writes for the same record (fields in tag order, defaults left out); the tests below
//! compare the two for random changes, and replay reads either with the same decoder.

use prost::{
    encoding::{encode_key, encode_varint, encoded_len_varint, WireType},
    Message,
};

use super::records;
use crate::{
    domain::{Change, Lsn, PlayerSessionId, Timestamp},
    proto::{OperationAction as A, OperationType},
};

/// `Checkpoint.first_lsn`.
const CHECKPOINT_FIRST_LSN: u32 = 1;
/// `Checkpoint.records`.
const CHECKPOINT_RECORDS: u32 = 2;

/// Appends `changes` to `out` as the `records` field of a checkpoint (one length-delimited
/// `OperationRecord` each, LSN 0: the checkpoint carries the first LSN).
pub fn records(changes: &[Change], out: &mut Vec<u8>) {
    for change in changes {
        encode_key(CHECKPOINT_RECORDS, WireType::LengthDelimited, out);
        if !callback(change, out) {
            records::encode(change, 0)
                .encode_length_delimited(out)
                .expect("a Vec grows");
        }
    }
}

/// Appends a checkpoint's body: `first_lsn`, then `records` as [`records`] wrote them.
pub fn checkpoint(first_lsn: Lsn, records: &[u8], out: &mut Vec<u8>) {
    if first_lsn != 0 {
        encode_key(CHECKPOINT_FIRST_LSN, WireType::Varint, out);
        encode_varint(first_lsn, out);
    }
    out.extend_from_slice(records);
}

/// Writes a player session's update as a length-delimited `OperationRecord`; `false` (and
/// nothing written) for any other change. The fields are those of
/// [`records::CallbackUpdate::record`], in tag order.
fn callback(change: &Change, out: &mut Vec<u8>) -> bool {
    let Some(u) = records::callback_update(change) else {
        return false;
    };
    message(out, |out| {
        header(out, &u.id, u.action, u.sub_type);
        if let Some(start) = &u.reservation {
            string(out, record::NAME, start.player_id);
        }
        string(out, record::PARENT_ID, u.parent_id);
        if let Some(start) = &u.reservation {
            field_message(out, record::RESULT, |out| {
                field_message(out, payload::RESERVATION, |out| {
                    string(out, reservation::PLAYER_ID, start.player_id);
                    string(out, reservation::PLAYER_DATA, start.player_data);
                })
            });
        }
        if let Some((error_type, error_message)) = u.error {
            field_message(out, record::ERROR, |out| {
                string(out, error_object::ERROR_TYPE, error_type);
                string(out, error_object::ERROR_MESSAGE, error_message);
            });
        }
        if let Some(start) = &u.reservation {
            field_message(out, record::CALLBACK_OPTIONS, |out| {
                let seconds = u64::from(start.timeout_seconds);
                varint(out, callback_options::TIMEOUT_SECONDS, seconds);
            });
        }
        time(out, record::TIMESTAMP, u.at);
        if let Some(start) = &u.reservation {
            time(out, record::DEADLINE, start.deadline);
        }
    });
    true
}

/// The fields every CALLBACK record starts with: operation id, action, type, sub-type.
fn header(out: &mut Vec<u8>, id: &PlayerSessionId, action: A, sub_type: &str) {
    let prefix = PlayerSessionId::PREFIX.len();
    let mut text = [0u8; 6 + uuid::fmt::Hyphenated::LENGTH];
    text[..prefix].copy_from_slice(PlayerSessionId::PREFIX.as_bytes());
    id.uuid().as_hyphenated().encode_lower(&mut text[prefix..]);
    bytes(out, record::OPERATION_ID, &text);
    varint(out, record::ACTION, action as u64);
    varint(out, record::OPERATION_TYPE, OperationType::Callback as u64);
    string(out, record::SUB_TYPE, sub_type);
}

/// A `google.protobuf.Timestamp` field.
fn time(out: &mut Vec<u8>, tag: u32, t: Timestamp) {
    let (seconds, nanos) = t.to_seconds_nanos();
    field_message(out, tag, |out| {
        // int64 and int32 are written as their two's complement, sign-extended to 64 bits.
        varint(out, 1, seconds as u64);
        varint(out, 2, i64::from(nanos) as u64);
    });
}

/// A varint field, left out when zero (proto3's default).
fn varint(out: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

/// A string field, left out when empty.
fn string(out: &mut Vec<u8>, tag: u32, s: &str) {
    bytes(out, tag, s.as_bytes());
}

fn bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
}

/// A message field (written even when empty, as prost writes a set message field).
fn field_message(out: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, out);
    message(out, body);
}

/// `body` preceded by its length as a varint. The length is not known until `body` is
/// written, so one byte is set aside for it and the body moves up in the rare case it needs
/// more (128 bytes or longer: a reservation with long player data).
fn message(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    let width = encoded_len_varint(len as u64);
    if width > 1 {
        out.resize(out.len() + width - 1, 0);
        out.copy_within(at + 1..at + 1 + len, at + width);
    }
    let mut slot = &mut out[at..at + width];
    encode_varint(len as u64, &mut slot);
}

/// Field numbers of `OperationRecord` (`proto/session_broker/v1/journal.proto`).
mod record {
    pub const OPERATION_ID: u32 = 2;
    pub const ACTION: u32 = 3;
    pub const OPERATION_TYPE: u32 = 4;
    pub const SUB_TYPE: u32 = 5;
    pub const NAME: u32 = 6;
    pub const PARENT_ID: u32 = 7;
    pub const RESULT: u32 = 8;
    pub const ERROR: u32 = 9;
    pub const CALLBACK_OPTIONS: u32 = 10;
    pub const TIMESTAMP: u32 = 13;
    pub const DEADLINE: u32 = 14;
}

/// `OperationPayload`'s `reservation`.
mod payload {
    pub const RESERVATION: u32 = 2;
}

mod reservation {
    pub const PLAYER_ID: u32 = 1;
    pub const PLAYER_DATA: u32 = 2;
}

mod callback_options {
    pub const TIMEOUT_SECONDS: u32 = 1;
}

mod error_object {
    pub const ERROR_TYPE: u32 = 1;
    pub const ERROR_MESSAGE: u32 = 2;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        domain::{EndReason, GameSessionId, GameSessionInfo, PlayerSession, PlayerStrings},
        storage::Checkpoint,
    };

    fn player_session(
        uuid: u128,
        game: &str,
        player: &str,
        data: Option<&str>,
        created: i64,
        timeout_us: i64,
    ) -> PlayerSession {
        let info = Arc::new(GameSessionInfo {
            id: GameSessionId::parse("g", game).unwrap(),
            fleet_id: crate::domain::FleetId::parse("f", "fleet-1").unwrap(),
            ip_address: "10.0.0.1".into(),
            port: 7777,
        });
        PlayerSession::reserved(
            PlayerSessionId::from_uuid(uuid::Uuid::from_u128(uuid)),
            PlayerStrings::parse("player_id", player, data).unwrap(),
            info,
            Timestamp::from_micros(created),
            Timestamp::from_micros(created.saturating_add(timeout_us)),
        )
    }

    fn change() -> impl Strategy<Value = Change> {
        let id = any::<u128>().prop_map(|u| PlayerSessionId::from_uuid(uuid::Uuid::from_u128(u)));
        let game = "[a-z0-9-]{1,48}".prop_map(|g| GameSessionId::parse("g", &g).unwrap());
        // Times before 1970 too: negative seconds take ten bytes.
        let at =
            (-4_000_000_000_000_000i64..4_000_000_000_000_000).prop_map(Timestamp::from_micros);
        let text = "\\PC{0,200}";
        prop_oneof![
            (
                any::<u128>(),
                "[a-z0-9-]{1,48}",
                "[a-zA-Z0-9 ]{1,40}",
                proptest::option::of("\\PC{0,300}"),
                -4_000_000_000_000_000i64..4_000_000_000_000_000,
                prop_oneof![Just(0i64), 0i64..10_000_000_000_000]
            )
                .prop_map(|(u, g, p, d, c, t)| Change::Reserved(player_session(
                    u,
                    &g,
                    &p,
                    d.as_deref(),
                    c,
                    t
                ))),
            (id.clone(), game.clone(), at.clone()).prop_map(|(id, game_session_id, at)| {
                Change::Accepted {
                    id,
                    game_session_id,
                    at,
                }
            }),
            (id.clone(), game.clone(), at.clone()).prop_map(|(id, game_session_id, at)| {
                Change::TimedOut {
                    id,
                    game_session_id,
                    at,
                }
            }),
            (
                id.clone(),
                game.clone(),
                prop_oneof![
                    Just(EndReason::Removed),
                    Just(EndReason::GameSessionEnded),
                    Just(EndReason::GameSessionCrashed),
                    Just(EndReason::HeartbeatLost),
                    Just(EndReason::PlayerCrashed),
                ],
                at.clone()
            )
                .prop_map(|(id, game_session_id, reason, at)| Change::Completed {
                    id,
                    game_session_id,
                    reason,
                    at,
                }),
            (id, game, text, at).prop_map(|(id, game_session_id, m, at)| {
                Change::ErrorReported {
                    id,
                    game_session_id,
                    message: m.into(),
                    at,
                }
            }),
        ]
    }

    proptest! {
        /// A checkpoint of player session updates is byte for byte what prost writes for the
        /// records `records::encode` builds.
        #[test]
        fn checkpoints_are_the_bytes_prost_writes(
            changes in proptest::collection::vec(change(), 1..8),
            first in 1u64..(1 << 48),
        ) {
            let mut recs = Vec::new();
            records(&changes, &mut recs);
            let mut body = Vec::new();
            checkpoint(first, &recs, &mut body);
            let expected = Checkpoint {
                first_lsn: first,
                records: changes.iter().map(|c| records::encode(c, 0)).collect(),
            }
            .encode_to_vec();
            prop_assert_eq!(body, expected);
        }
    }

    /// Every other change (here: a game session's update and an idempotency key) goes through
    /// prost, in the same checkpoint as the direct ones.
    #[test]
    fn other_changes_are_encoded_by_prost_beside_the_direct_ones() {
        let ps = player_session(
            7,
            "gs-1",
            "p1",
            Some("{\"k\":1}"),
            1_700_000_000_000_000,
            60_000_000,
        );
        let changes = vec![
            Change::GameSessionUpdated {
                id: GameSessionId::parse("g", "gs-1").unwrap(),
                maximum_player_session_count: Some(12),
                policy: None,
                at: Timestamp::from_micros(1_700_000_000_000_001),
            },
            Change::Reserved(ps.clone()),
            Change::IdempotencyKey {
                key: crate::domain::IdempotencyKey::parse_optional("k", "key-1")
                    .unwrap()
                    .unwrap(),
                fingerprint: 42,
                player_session_ids: vec![ps.id],
                at: Timestamp::from_micros(1_700_000_000_000_002),
            },
        ];
        let mut recs = Vec::new();
        records(&changes, &mut recs);
        let mut body = Vec::new();
        checkpoint(9, &recs, &mut body);
        let expected = Checkpoint {
            first_lsn: 9,
            records: changes.iter().map(|c| records::encode(c, 0)).collect(),
        };
        assert_eq!(body, expected.encode_to_vec());
        let decoded = Checkpoint::decode(body.as_slice()).unwrap();
        assert_eq!(decoded, expected);
        // The reservation as docs/journal.md maps it: a CALLBACK START child of its game
        // session, named after the player, with the timeout and the absolute deadline.
        let r = &decoded.records[1];
        assert_eq!(
            (r.operation_type(), r.action(), r.sub_type.as_str()),
            (OperationType::Callback, A::Start, "player_session")
        );
        assert_eq!(r.operation_id, ps.id.to_string());
        assert_eq!((r.name.as_str(), r.parent_id.as_str()), ("p1", "gs-1"));
        assert_eq!(r.callback_options.unwrap().timeout_seconds, 60);
        assert_eq!(
            crate::wire::from_timestamp(&r.deadline.unwrap()),
            ps.reservation_deadline
        );
    }
}
