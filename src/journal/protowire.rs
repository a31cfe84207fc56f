//! Borrowed reading of the protobuf wire format for replay's hot path.
//!
//! Recovery's reader thread splits each checkpoint into its records without decoding them
//! ([`split_checkpoint`]), so the work of decoding moves to the replay workers, and a worker
//! reads a player session's update (a CALLBACK record, almost every record of a journal)
//! straight from the segment's bytes ([`callback_view`]), without the half-dozen strings a
//! prost decode allocates. Every other record goes through prost and
//! [`super::records::decode`].
//!
//! These readers agree with prost on everything prost accepts. They may accept more in fields
//! a record's meaning does not depend on (a record's `name`, its options), and
//! [`callback_view`] gives up with `None` on anything unusual (a repeated field, a wrong wire
//! type, invalid UTF-8, another payload), which sends that record to prost, so an error is
//! always reported the one way.

use std::ops::Range;

use crate::domain::Timestamp;

use super::records::CallbackView;

/// The bytes are not protobuf: a truncated varint or length, an impossible key or wire type,
/// an unmatched group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// One field's value, borrowed from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    /// A length-delimited field: bytes, a string or a message.
    Bytes(&'a [u8]),
    /// A fixed-width or group field (skipped; no record uses them).
    Other,
}

/// Groups nest at most this deep (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

#[inline(always)]
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    // Most varints of a record (keys, lengths, enums) are one byte.
    if let Some(&byte) = buf.get(*pos) {
        if byte < 0x80 {
            *pos += 1;
            return Ok(u64::from(byte));
        }
    }
    let mut value = 0u64;
    for i in 0..10 {
        let byte = *buf.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        // The tenth byte holds the 64th bit only.
        if i == 9 && byte > 1 {
            return Err(Malformed);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

#[inline(always)]
fn key(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), Malformed> {
    let key = u32::try_from(varint(buf, pos)?).map_err(|_| Malformed)?;
    let tag = key >> 3;
    if tag == 0 {
        return Err(Malformed);
    }
    Ok((tag, (key & 7) as u8))
}

#[inline]
fn take<'a>(buf: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], Malformed> {
    let end = pos.checked_add(len).ok_or(Malformed)?;
    let bytes = buf.get(*pos..end).ok_or(Malformed)?;
    *pos = end;
    Ok(bytes)
}

/// Reads the value of a field of wire type `wire` (after its key).
#[inline(always)]
fn value<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    tag: u32,
    wire: u8,
    depth: u32,
) -> Result<Value<'a>, Malformed> {
    Ok(match wire {
        0 => Value::Varint(varint(buf, pos)?),
        1 => {
            take(buf, pos, 8)?;
            Value::Other
        }
        2 => {
            let len = usize::try_from(varint(buf, pos)?).map_err(|_| Malformed)?;
            Value::Bytes(take(buf, pos, len)?)
        }
        3 => {
            skip_group(buf, pos, tag, depth)?;
            Value::Other
        }
        5 => {
            take(buf, pos, 4)?;
            Value::Other
        }
        _ => return Err(Malformed),
    })
}

/// Skips a group's fields through its end-group key (records never hold groups).
#[cold]
fn skip_group(buf: &[u8], pos: &mut usize, tag: u32, depth: u32) -> Result<(), Malformed> {
    if depth >= MAX_DEPTH {
        return Err(Malformed);
    }
    loop {
        let (inner, wire) = key(buf, pos)?;
        if wire == 4 {
            return if inner == tag { Ok(()) } else { Err(Malformed) };
        }
        value(buf, pos, inner, wire, depth + 1)?;
    }
}

/// The fields of one message, in the order they were written.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Malformed>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let field = key(self.buf, &mut self.pos)
            .and_then(|(tag, wire)| Ok((tag, value(self.buf, &mut self.pos, tag, wire, 0)?)));
        if field.is_err() {
            self.pos = self.buf.len();
        }
        Some(field)
    }
}

/// One record of a checkpoint: where its bytes are, and the key it is routed by (its parent's
/// id, or its own operation id when it has no parent), both as ranges of the checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    pub bytes: Range<usize>,
    pub key: Range<usize>,
}

/// Splits a checkpoint body (`storage.v1.Checkpoint`) into its records, appended to `records`
/// in order; returns its `first_lsn`. The records' contents are not decoded, only their top
/// level walked for the routing key.
pub fn split_checkpoint(body: &[u8], records: &mut Vec<RecordSpan>) -> Result<u64, Malformed> {
    let base = body.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let mut first_lsn = 0;
    for field in Fields::new(body) {
        match field? {
            (1, Value::Varint(v)) => first_lsn = v,
            (1, _) => return Err(Malformed),
            (2, Value::Bytes(record)) => {
                let (mut operation_id, mut parent_id): (&[u8], &[u8]) = (&[], &[]);
                for f in Fields::new(record) {
                    match f? {
                        (2, Value::Bytes(b)) => operation_id = b,
                        (7, Value::Bytes(b)) => parent_id = b,
                        _ => {}
                    }
                }
                let key = if parent_id.is_empty() {
                    operation_id
                } else {
                    parent_id
                };
                let start = offset(record);
                let key_start = if key.is_empty() { start } else { offset(key) };
                records.push(RecordSpan {
                    bytes: start..start + record.len(),
                    key: key_start..key_start + key.len(),
                });
            }
            (2, _) => return Err(Malformed),
            _ => {}
        }
    }
    Ok(first_lsn)
}

/// Sets `slot` once: a field seen twice (which prost would merge) gives up.
fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

fn text(v: Value<'_>) -> Option<&str> {
    match v {
        Value::Bytes(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn message(v: Value<'_>) -> Option<Fields<'_>> {
    match v {
        Value::Bytes(b) => Some(Fields::new(b)),
        _ => None,
    }
}

/// A `google.protobuf.Timestamp`.
fn timestamp(v: Value<'_>) -> Option<Timestamp> {
    let (mut seconds, mut nanos) = (None, None);
    for f in message(v)? {
        match f.ok()? {
            // int64 and int32 are varints, negative numbers sign-extended to 64 bits.
            (1, Value::Varint(s)) => once(&mut seconds, s as i64)?,
            (2, Value::Varint(n)) => once(&mut nanos, n as i32)?,
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    Some(crate::wire::from_timestamp(&prost_types::Timestamp {
        seconds: seconds.unwrap_or(0),
        nanos: nanos.unwrap_or(0),
    }))
}

/// `OperationPayload` holding a reservation: `Some(None)` for no payload at all, `None` for
/// another payload.
fn reservation(v: Value<'_>) -> Option<Option<(&str, &str)>> {
    let mut found = None;
    for f in message(v)? {
        match f.ok()? {
            (2, r) => {
                let (mut player_id, mut player_data) = (None, None);
                for f in message(r)? {
                    match f.ok()? {
                        (1, s) => once(&mut player_id, text(s)?)?,
                        (2, s) => once(&mut player_data, text(s)?)?,
                        _ => {}
                    }
                }
                once(
                    &mut found,
                    (player_id.unwrap_or(""), player_data.unwrap_or("")),
                )?;
            }
            (1..=7, _) => return None,
            _ => {}
        }
    }
    Some(found)
}

/// `ErrorObject`'s message.
fn error_message(v: Value<'_>) -> Option<&str> {
    let mut msg = None;
    for f in message(v)? {
        if let (2, s) = f.ok()? {
            once(&mut msg, text(s)?)?;
        }
    }
    Some(msg.unwrap_or(""))
}

/// The fields of a CALLBACK record (`session_broker.v1.OperationRecord` with operation_type
/// CALLBACK and a timestamp), borrowed; `None` for any other record or anything unusual.
pub fn callback_view(bytes: &[u8]) -> Option<CallbackView<'_>> {
    let (mut operation_id, mut action, mut ty, mut sub_type, mut parent_id) =
        (None, None, None, None, None);
    let (mut result, mut error, mut at, mut deadline) = (None, None, None, None);
    for f in Fields::new(bytes) {
        match f.ok()? {
            (2, v) => once(&mut operation_id, text(v)?)?,
            (3, Value::Varint(v)) => once(&mut action, v as i32)?,
            (4, Value::Varint(v)) => once(&mut ty, v as i32)?,
            (5, v) => once(&mut sub_type, text(v)?)?,
            (7, v) => once(&mut parent_id, text(v)?)?,
            (8, v) => once(&mut result, reservation(v)?)?,
            (9, v) => once(&mut error, error_message(v)?)?,
            (13, v) => once(&mut at, timestamp(v)?)?,
            (14, v) => once(&mut deadline, timestamp(v)?)?,
            (3 | 4, _) => return None,
            _ => {}
        }
    }
    if ty != Some(crate::proto::OperationType::Callback as i32) {
        return None;
    }
    Some(CallbackView {
        operation_id: operation_id.unwrap_or(""),
        action: action.unwrap_or(0),
        sub_type: sub_type.unwrap_or(""),
        parent_id: parent_id.unwrap_or(""),
        reservation: result.flatten(),
        error_message: error,
        at: at?,
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::{proto::OperationRecord, storage::Checkpoint};

    #[test]
    fn varints_match_prost() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX.into(), u64::MAX] {
            let mut buf = Vec::new();
            prost::encoding::encode_varint(v, &mut buf);
            let mut pos = 0;
            assert_eq!(varint(&buf, &mut pos), Ok(v));
            assert_eq!(pos, buf.len());
            assert_eq!(varint(&buf[..buf.len() - 1], &mut 0), Err(Malformed));
        }
        // An eleventh byte, or a tenth above 1, overflows.
        assert_eq!(varint(&[0xff; 10], &mut 0), Err(Malformed));
        let mut over = vec![0xff; 9];
        over.push(2);
        assert_eq!(varint(&over, &mut 0), Err(Malformed));
    }

    #[test]
    fn groups_are_skipped_and_must_match() {
        // Field 15 as a group holding a varint field 1, then field 2 (a string).
        let ok = [0x7b, 0x08, 0x05, 0x7c, 0x12, 0x01, b'x'];
        let fields: Vec<_> = Fields::new(&ok).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields, [(15, Value::Other), (2, Value::Bytes(b"x"))]);
        // An end-group of another field.
        let bad = [0x7b, 0x08, 0x05, 0x74];
        assert!(Fields::new(&bad).any(|f| f.is_err()));
        assert!(Fields::new(&[0x7c]).any(|f| f.is_err()));
    }

    fn record() -> impl Strategy<Value = OperationRecord> {
        let text = prop_oneof!["[a-z0-9-]{0,12}", Just(String::new())];
        (
            (text.clone(), text.clone(), text.clone(), text.clone()),
            (
                0..7i32,
                -1..7i32,
                any::<bool>(),
                any::<bool>(),
                any::<i64>(),
            ),
            (any::<bool>(), text.clone(), text),
        )
            .prop_map(
                |((op, parent, sub, name), (ty, action, ts, dl, secs), (res, pid, pdata))| {
                    use crate::proto::{operation_payload::Payload, *};
                    OperationRecord {
                        lsn: secs as u64,
                        operation_id: op,
                        action,
                        operation_type: ty,
                        sub_type: sub,
                        name,
                        parent_id: parent,
                        result: res.then_some(OperationPayload {
                            payload: Some(Payload::Reservation(ReservationPayload {
                                player_id: pid,
                                player_data: pdata,
                            })),
                        }),
                        error: dl.then(|| ErrorObject {
                            error_type: "t".into(),
                            error_message: "m".into(),
                        }),
                        timestamp: ts.then_some(prost_types::Timestamp {
                            seconds: secs % 1_000_000_000_000,
                            nanos: (secs % 1_000_000_000) as i32,
                        }),
                        deadline: dl.then_some(prost_types::Timestamp {
                            seconds: -secs % 1_000_000_000_000,
                            nanos: -7,
                        }),
                        ..Default::default()
                    }
                },
            )
    }

    proptest! {
        /// Whatever the view reads, it reads as prost does.
        #[test]
        fn the_view_agrees_with_prost(r in record()) {
            let bytes = r.encode_to_vec();
            let decoded = OperationRecord::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(callback_view(&bytes), CallbackView::of(&decoded));
        }

        /// A checkpoint splits into exactly the records prost decodes, with their routing key.
        #[test]
        fn checkpoints_split_as_prost_decodes_them(
            rs in proptest::collection::vec(record(), 0..6),
            first in any::<u64>(),
        ) {
            let body = Checkpoint { first_lsn: first, records: rs.clone() }.encode_to_vec();
            let mut spans = Vec::new();
            prop_assert_eq!(split_checkpoint(&body, &mut spans), Ok(first));
            prop_assert_eq!(spans.len(), rs.len());
            for (span, r) in spans.iter().zip(&rs) {
                prop_assert_eq!(&OperationRecord::decode(&body[span.bytes.clone()]).unwrap(), r);
                let key = if r.parent_id.is_empty() { &r.operation_id } else { &r.parent_id };
                prop_assert_eq!(&body[span.key.clone()], key.as_bytes());
            }
        }

        /// Random bytes never panic, and what prost accepts as a checkpoint splits.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = callback_view(&bytes);
            let mut spans = Vec::new();
            let split = split_checkpoint(&bytes, &mut spans);
            if let Ok(cp) = Checkpoint::decode(bytes.as_slice()) {
                prop_assert_eq!(split, Ok(cp.first_lsn));
                prop_assert_eq!(spans.len(), cp.records.len());
            }
        }
    }
}
