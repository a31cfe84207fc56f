//! The mapping of domain changes onto operation updates (documented in `docs/journal.md`), both
//! ways, in one place:
//!
//! | change | operation_type | action | sub_type |
//! |---|---|---|---|
//! | game session registered | CONTEXT | START | `game_session` |
//! | game session updated | STEP | SUCCEED | `update_game_session` |
//! | game session ended | CONTEXT | SUCCEED (TERMINATED) / FAIL (ERROR) | `game_session` |
//! | player session reserved | CALLBACK | START | `player_session` |
//! | player session accepted | CALLBACK | SUCCEED | `player_session` |
//! | player session timed out | CALLBACK | FAIL (`CallbackTimeout`) | `player_session` |
//! | player session completed | CALLBACK | CANCEL | the reason, e.g. `removed` |
//! | error reported for a player session | CALLBACK | RETRY (`PlayerSessionError`) | `player_session` |
//! | idempotency key used | STEP | SUCCEED | `idempotency_key` |
//! | analytics delivered through an LSN (the dispatcher's cursor) | STEP | SUCCEED | `analytics_delivery` |
//! | analytics batch failed, retried after a delay | STEP | RETRY (`AnalyticsSinkError`) | `analytics_delivery` |
//! | import job started | CONTEXT | START | `import_job` |
//! | import chunk done (cumulative counts) | STEP | SUCCEED | `import_chunk` |
//! | row imported (child of the job) | STEP | START | `import_row` |
//! | import job completed / failed | CONTEXT | SUCCEED / FAIL (`ImportFailed`) | `import_job` |

use std::{sync::Arc, time::Duration};

use crate::{
    domain::{
        Change, CreationPolicy, EndCause, EndReason, ErrorLog, FleetId, GameSession, GameSessionId,
        GameSessionInfo, GameSessionStatus, IdempotencyKey, ImportProgress, Lsn, PlayerSession,
        PlayerSessionId, PlayerSessionStatus, PlayerStrings, SessionLsns, Timestamp,
    },
    proto::{
        operation_payload::Payload, AnalyticsDeliveryPayload, CallbackOptions, EndPayload,
        ErrorObject, GameSessionDefinition, GameSessionUpdatePayload, IdempotencyPayload,
        ImportJobPayload, OperationAction, OperationPayload, OperationRecord, OperationType,
        PlayerSessionCreationPolicy, ReservationPayload, StepOptions,
    },
    wire::{from_timestamp, timestamp},
};

pub const SUB_GAME_SESSION: &str = "game_session";
pub const SUB_UPDATE: &str = "update_game_session";
pub const SUB_PLAYER_SESSION: &str = "player_session";
pub const SUB_IDEMPOTENCY: &str = "idempotency_key";
pub const SUB_ANALYTICS: &str = "analytics_delivery";
pub const SUB_IMPORT_JOB: &str = "import_job";
pub const SUB_IMPORT_CHUNK: &str = "import_chunk";
pub const SUB_IMPORT_ROW: &str = "import_row";
pub const ERR_IMPORT: &str = "ImportFailed";
/// The operation id of every analytics delivery record.
pub const ANALYTICS_OPERATION: &str = "analytics-delivery";
pub const ERR_CRASHED: &str = "GameSessionCrashed";
pub const ERR_HEARTBEAT: &str = "HeartbeatTimeout";
pub const ERR_TIMEOUT: &str = "CallbackTimeout";
/// The error message of a reservation's timeout.
pub const TIMEOUT_MESSAGE: &str = "not accepted before the reservation deadline";
pub const ERR_PLAYER: &str = "PlayerSessionError";
pub const ERR_ANALYTICS: &str = "AnalyticsSinkError";

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn payload(p: Payload) -> Option<OperationPayload> {
    Some(OperationPayload { payload: Some(p) })
}

fn base(
    lsn: Lsn,
    id: String,
    ty: OperationType,
    action: OperationAction,
    sub_type: &str,
    at: Timestamp,
) -> OperationRecord {
    OperationRecord {
        lsn,
        operation_id: id,
        action: action as i32,
        operation_type: ty as i32,
        sub_type: sub_type.to_string(),
        timestamp: Some(timestamp(at)),
        ..Default::default()
    }
}

/// The game session's definition (what a CONTEXT START carries).
pub fn definition(g: &GameSession) -> GameSessionDefinition {
    GameSessionDefinition {
        fleet_id: g.fleet_id().to_string(),
        name: g.name.to_string(),
        ip_address: g.info.ip_address.to_string(),
        port: u32::from(g.info.port),
        maximum_player_session_count: g.maximum_player_session_count,
        labels: g
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        release: g.release.to_string(),
        environment: g.environment.to_string(),
        reservation_timeout_seconds: secs(g.reservation_timeout),
        heartbeat_timeout_seconds: g.heartbeat_timeout.map_or(0, secs),
    }
}

/// A player session's update (a CALLBACK record, almost every record a daemon appends) as the
/// operation update journaled for it, borrowed from its change. [`encode`] builds an
/// `OperationRecord` from it; [`super::encode`] writes the same record straight into bytes.
#[derive(Debug)]
pub struct CallbackUpdate<'a> {
    pub id: PlayerSessionId,
    pub action: OperationAction,
    pub sub_type: &'a str,
    /// The game session (the CONTEXT this CALLBACK belongs to).
    pub parent_id: &'a str,
    /// A reservation (CALLBACK START) only.
    pub reservation: Option<CallbackStart<'a>>,
    /// `(error_type, error_message)` of a timeout or a reported error.
    pub error: Option<(&'a str, &'a str)>,
    pub at: Timestamp,
}

/// What a reservation's record adds: the player (also the record's `name`), the callback
/// timeout and the absolute deadline.
#[derive(Debug)]
pub struct CallbackStart<'a> {
    pub player_id: &'a str,
    pub player_data: &'a str,
    pub timeout_seconds: u32,
    pub deadline: Timestamp,
}

/// The player session update `change` journals as, or `None` for any other change.
pub fn callback_update(change: &Change) -> Option<CallbackUpdate<'_>> {
    use OperationAction as A;
    /// An update after the reservation: the player session's id under its game session.
    fn later<'a>(
        id: &PlayerSessionId,
        game: &'a GameSessionId,
        action: OperationAction,
        at: &Timestamp,
    ) -> CallbackUpdate<'a> {
        CallbackUpdate {
            id: *id,
            action,
            sub_type: SUB_PLAYER_SESSION,
            parent_id: game.as_str(),
            reservation: None,
            error: None,
            at: *at,
        }
    }
    Some(match change {
        Change::Reserved(ps) => CallbackUpdate {
            id: ps.id,
            action: A::Start,
            sub_type: SUB_PLAYER_SESSION,
            parent_id: ps.game.id.as_str(),
            reservation: Some(CallbackStart {
                player_id: ps.player_id(),
                player_data: ps.player_data().unwrap_or_default(),
                timeout_seconds: secs(ps.reservation_deadline.duration_since(ps.creation_time)),
                deadline: ps.reservation_deadline,
            }),
            error: None,
            at: ps.creation_time,
        },
        Change::Accepted {
            id,
            game_session_id,
            at,
        } => later(id, game_session_id, A::Succeed, at),
        Change::TimedOut {
            id,
            game_session_id,
            at,
        } => CallbackUpdate {
            error: Some((ERR_TIMEOUT, TIMEOUT_MESSAGE)),
            ..later(id, game_session_id, A::Fail, at)
        },
        Change::Completed {
            id,
            game_session_id,
            reason,
            at,
        } => CallbackUpdate {
            sub_type: reason.as_str(),
            ..later(id, game_session_id, A::Cancel, at)
        },
        Change::ErrorReported {
            id,
            game_session_id,
            message,
            at,
        } => CallbackUpdate {
            error: Some((ERR_PLAYER, message)),
            ..later(id, game_session_id, A::Retry, at)
        },
        _ => return None,
    })
}

impl CallbackUpdate<'_> {
    /// As an `OperationRecord` (what prost encodes; what the history API returns).
    pub fn record(&self, lsn: Lsn) -> OperationRecord {
        let mut r = base(
            lsn,
            self.id.to_string(),
            OperationType::Callback,
            self.action,
            self.sub_type,
            self.at,
        );
        r.parent_id = self.parent_id.to_string();
        if let Some(start) = &self.reservation {
            r.name = start.player_id.to_string();
            r.result = payload(Payload::Reservation(ReservationPayload {
                player_id: start.player_id.to_string(),
                player_data: start.player_data.to_string(),
            }));
            r.callback_options = Some(CallbackOptions {
                timeout_seconds: start.timeout_seconds,
                heartbeat_timeout_seconds: 0,
            });
            r.deadline = Some(timestamp(start.deadline));
        }
        if let Some((error_type, error_message)) = self.error {
            r.error = Some(ErrorObject {
                error_type: error_type.into(),
                error_message: error_message.into(),
            });
        }
        r
    }
}

/// Encodes one change as the operation update journaled for it.
pub fn encode(change: &Change, lsn: Lsn) -> OperationRecord {
    use OperationAction as A;
    use OperationType as T;
    match change {
        Change::GameSessionStarted(g) => {
            let mut r = base(
                lsn,
                g.id().to_string(),
                T::Context,
                A::Start,
                SUB_GAME_SESSION,
                g.creation_time,
            );
            r.name = g.name.to_string();
            r.result = payload(Payload::GameSession(definition(g)));
            if let Some(hb) = g.heartbeat_timeout {
                r.callback_options = Some(CallbackOptions {
                    timeout_seconds: 0,
                    heartbeat_timeout_seconds: secs(hb),
                });
            }
            r
        }
        Change::GameSessionUpdated {
            id,
            maximum_player_session_count,
            policy,
            at,
        } => {
            let mut r = base(lsn, id.to_string(), T::Step, A::Succeed, SUB_UPDATE, *at);
            r.parent_id = id.to_string();
            r.result = payload(Payload::GameSessionUpdate(GameSessionUpdatePayload {
                maximum_player_session_count: *maximum_player_session_count,
                player_session_creation_policy: policy
                    .map(|p| crate::wire::creation_policy(p) as i32),
            }));
            r
        }
        Change::GameSessionEnded {
            id,
            cause,
            reason,
            at,
        } => {
            let action = if *cause == EndCause::Ended {
                A::Succeed
            } else {
                A::Fail
            };
            let mut r = base(
                lsn,
                id.to_string(),
                T::Context,
                action,
                SUB_GAME_SESSION,
                *at,
            );
            match cause {
                EndCause::Ended => {
                    r.result = payload(Payload::End(EndPayload {
                        reason: reason.to_string(),
                    }))
                }
                EndCause::Crashed | EndCause::HeartbeatLost => {
                    r.error = Some(ErrorObject {
                        error_type: if *cause == EndCause::Crashed {
                            ERR_CRASHED
                        } else {
                            ERR_HEARTBEAT
                        }
                        .into(),
                        error_message: reason.to_string(),
                    })
                }
            }
            r
        }
        Change::IdempotencyKey {
            key,
            fingerprint,
            player_session_ids,
            at,
        } => {
            let mut r = base(
                lsn,
                key.to_string(),
                T::Step,
                A::Succeed,
                SUB_IDEMPOTENCY,
                *at,
            );
            r.result = payload(Payload::Idempotency(IdempotencyPayload {
                fingerprint: *fingerprint,
                player_session_ids: player_session_ids.iter().map(|p| p.to_string()).collect(),
            }));
            r
        }
        Change::Reserved(_)
        | Change::Accepted { .. }
        | Change::TimedOut { .. }
        | Change::Completed { .. }
        | Change::ErrorReported { .. } => callback_update(change)
            .expect("a player session's update")
            .record(lsn),
        Change::AnalyticsDelivered { through, sink, at } => {
            let mut r = analytics(lsn, A::Succeed, *at);
            r.result = payload(Payload::AnalyticsDelivery(AnalyticsDeliveryPayload {
                delivered_through_lsn: *through,
                sink: sink.to_string(),
                ..Default::default()
            }));
            r
        }
        Change::AnalyticsRetry {
            first,
            last,
            sink,
            delay,
            error,
            at,
        } => {
            let mut r = analytics(lsn, A::Retry, *at);
            r.result = payload(Payload::AnalyticsDelivery(AnalyticsDeliveryPayload {
                batch_first_lsn: *first,
                batch_last_lsn: *last,
                sink: sink.to_string(),
                ..Default::default()
            }));
            r.step_options = Some(StepOptions {
                next_attempt_delay_seconds: u32::try_from(delay.as_secs_f64().ceil() as u64)
                    .unwrap_or(u32::MAX),
            });
            r.error = Some(ErrorObject {
                error_type: ERR_ANALYTICS.into(),
                error_message: error.to_string(),
            });
            r
        }
        Change::ImportStarted {
            job,
            format,
            file,
            at,
        } => {
            let mut r = base(
                lsn,
                job.to_string(),
                OperationType::Context,
                A::Start,
                SUB_IMPORT_JOB,
                *at,
            );
            r.result = payload(Payload::ImportJob(ImportJobPayload {
                format: format.to_string(),
                file: file.to_string(),
                line: 1,
                ..Default::default()
            }));
            r
        }
        Change::ImportChunk {
            job,
            progress: p,
            errors,
            at,
        } => {
            let mut r = base(
                lsn,
                job.to_string(),
                OperationType::Step,
                A::Succeed,
                SUB_IMPORT_CHUNK,
                *at,
            );
            r.parent_id = job.to_string();
            r.result = payload(Payload::ImportJob(ImportJobPayload {
                offset: p.offset,
                line: p.line,
                total: p.total,
                imported: p.imported,
                skipped: p.skipped,
                more_errors: p.more_errors,
                errors: errors.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            }));
            r
        }
        Change::ImportedRow { job, id, line, at } => {
            let mut r = base(
                lsn,
                id.to_string(),
                OperationType::Step,
                A::Start,
                SUB_IMPORT_ROW,
                *at,
            );
            r.parent_id = job.to_string();
            r.result = payload(Payload::ImportJob(ImportJobPayload {
                line: *line,
                ..Default::default()
            }));
            r
        }
        Change::ImportFinished { job, failed, at } => {
            let action = if failed.is_some() {
                A::Fail
            } else {
                A::Succeed
            };
            let mut r = base(
                lsn,
                job.to_string(),
                OperationType::Context,
                action,
                SUB_IMPORT_JOB,
                *at,
            );
            if let Some(reason) = failed {
                r.error = Some(ErrorObject {
                    error_type: ERR_IMPORT.into(),
                    error_message: reason.to_string(),
                });
            }
            r
        }
    }
}

/// An update of the analytics delivery (a STEP of its own operation).
fn analytics(lsn: Lsn, action: OperationAction, at: Timestamp) -> OperationRecord {
    base(
        lsn,
        ANALYTICS_OPERATION.to_string(),
        OperationType::Step,
        action,
        SUB_ANALYTICS,
        at,
    )
}

/// A record that cannot be decoded: names the record so recovery can report it.
#[derive(Debug, thiserror::Error)]
#[error("journal record {lsn} ({operation_id:?}): {reason}")]
pub struct DecodeError {
    pub lsn: Lsn,
    pub operation_id: String,
    pub reason: String,
}

/// Decodes an operation update back into the change it records. `game` looks up the fixed part
/// of a game session (for reservations). `Ok(None)`: a record that refers to something no longer
/// retained (skipped on replay).
pub fn decode(
    r: &OperationRecord,
    lookup_game: impl Fn(&str) -> Option<Arc<GameSessionInfo>>,
) -> Result<Option<Change>, DecodeError> {
    let err = |reason: &str| DecodeError {
        lsn: r.lsn,
        operation_id: r.operation_id.clone(),
        reason: reason.to_string(),
    };
    let at = r
        .timestamp
        .as_ref()
        .map(from_timestamp)
        .ok_or_else(|| err("no timestamp"))?;
    let ty =
        OperationType::try_from(r.operation_type).map_err(|_| err("unknown operation type"))?;
    let action = OperationAction::try_from(r.action).map_err(|_| err("unknown action"))?;
    let data = r.result.as_ref().and_then(|p| p.payload.as_ref());
    let gsid = |s: &str| GameSessionId::parse("operation_id", s).map_err(|e| err(&e.to_string()));
    let psid = |s: &str| PlayerSessionId::parse("operation_id", s).map_err(|e| err(&e.to_string()));
    if ty == OperationType::Callback {
        let view = CallbackView::of(r).ok_or_else(|| err("no timestamp"))?;
        return decode_callback(&view, r.lsn, lookup_game);
    }
    use OperationAction as A;
    use OperationType as T;
    Ok(Some(match (ty, action) {
        (T::Context, A::Start) if r.sub_type == SUB_IMPORT_JOB => {
            let Some(Payload::ImportJob(p)) = data else {
                return Err(err("missing import job payload"));
            };
            Change::ImportStarted {
                job: r.operation_id.as_str().into(),
                format: p.format.as_str().into(),
                file: p.file.as_str().into(),
                at,
            }
        }
        (T::Context, A::Start) => {
            let Some(Payload::GameSession(d)) = data else {
                return Err(err("missing definition"));
            };
            Change::GameSessionStarted(
                game_session_from(gsid(&r.operation_id)?, d, at).map_err(|e| err(&e))?,
            )
        }
        (T::Step, A::Succeed) if r.sub_type == SUB_UPDATE => {
            let Some(Payload::GameSessionUpdate(u)) = data else {
                return Err(err("missing update"));
            };
            Change::GameSessionUpdated {
                id: gsid(&r.operation_id)?,
                maximum_player_session_count: u.maximum_player_session_count,
                policy: u.player_session_creation_policy.map(policy_from),
                at,
            }
        }
        (T::Step, A::Succeed) if r.sub_type == SUB_IDEMPOTENCY => {
            let Some(Payload::Idempotency(i)) = data else {
                return Err(err("missing idempotency payload"));
            };
            Change::IdempotencyKey {
                key: IdempotencyKey::parse_optional("operation_id", &r.operation_id)
                    .map_err(|e| err(&e.to_string()))?
                    .ok_or_else(|| err("empty idempotency key"))?,
                fingerprint: i.fingerprint,
                player_session_ids: i
                    .player_session_ids
                    .iter()
                    .map(|s| psid(s))
                    .collect::<Result<_, _>>()?,
                at,
            }
        }
        (T::Step, A::Succeed | A::Retry) if r.sub_type == SUB_ANALYTICS => {
            let Some(Payload::AnalyticsDelivery(d)) = data else {
                return Err(err("missing analytics delivery payload"));
            };
            if action == A::Succeed {
                Change::AnalyticsDelivered {
                    through: d.delivered_through_lsn,
                    sink: d.sink.as_str().into(),
                    at,
                }
            } else {
                Change::AnalyticsRetry {
                    first: d.batch_first_lsn,
                    last: d.batch_last_lsn,
                    sink: d.sink.as_str().into(),
                    delay: Duration::from_secs(u64::from(
                        r.step_options
                            .as_ref()
                            .map_or(0, |o| o.next_attempt_delay_seconds),
                    )),
                    error: r
                        .error
                        .as_ref()
                        .map_or("", |e| e.error_message.as_str())
                        .into(),
                    at,
                }
            }
        }
        (T::Context, A::Succeed | A::Fail) if r.sub_type == SUB_IMPORT_JOB => {
            Change::ImportFinished {
                job: r.operation_id.as_str().into(),
                failed: (action == A::Fail).then(|| {
                    r.error
                        .as_ref()
                        .map_or("failed", |e| e.error_message.as_str())
                        .into()
                }),
                at,
            }
        }
        (T::Step, A::Succeed) if r.sub_type == SUB_IMPORT_CHUNK => {
            let Some(Payload::ImportJob(p)) = data else {
                return Err(err("missing import chunk payload"));
            };
            Change::ImportChunk {
                job: r.operation_id.as_str().into(),
                progress: ImportProgress {
                    offset: p.offset,
                    line: p.line,
                    total: p.total,
                    imported: p.imported,
                    skipped: p.skipped,
                    more_errors: p.more_errors,
                },
                errors: p.errors.iter().map(|e| e.as_str().into()).collect(),
                at,
            }
        }
        (T::Step, A::Start) if r.sub_type == SUB_IMPORT_ROW => Change::ImportedRow {
            job: r.parent_id.as_str().into(),
            id: r.operation_id.as_str().into(),
            line: match data {
                Some(Payload::ImportJob(p)) => p.line,
                _ => 0,
            },
            at,
        },
        (T::Context, A::Succeed | A::Fail) => {
            let (cause, reason) = match (&r.error, data) {
                (None, Some(Payload::End(e))) => (EndCause::Ended, e.reason.clone()),
                (None, _) => (EndCause::Ended, String::new()),
                (Some(e), _) if e.error_type == ERR_HEARTBEAT => {
                    (EndCause::HeartbeatLost, e.error_message.clone())
                }
                (Some(e), _) => (EndCause::Crashed, e.error_message.clone()),
            };
            Change::GameSessionEnded {
                id: gsid(&r.operation_id)?,
                cause,
                reason: reason.into(),
                at,
            }
        }
        _ => return Err(err("unknown operation update")),
    }))
}

/// The fields of a CALLBACK record (a player session's update) that [`decode`] reads:
/// borrowed from an [`OperationRecord`] ([`CallbackView::of`]) or, on replay, straight from
/// the record's bytes ([`super::protowire::callback_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackView<'a> {
    pub operation_id: &'a str,
    pub action: i32,
    pub sub_type: &'a str,
    pub parent_id: &'a str,
    /// A reservation's payload (player id, player data).
    pub reservation: Option<(&'a str, &'a str)>,
    pub error_message: Option<&'a str>,
    pub at: Timestamp,
    pub deadline: Option<Timestamp>,
}

impl<'a> CallbackView<'a> {
    /// `None` unless `r` is a CALLBACK record with a timestamp.
    pub fn of(r: &'a OperationRecord) -> Option<Self> {
        if r.operation_type != OperationType::Callback as i32 {
            return None;
        }
        Some(CallbackView {
            operation_id: &r.operation_id,
            action: r.action,
            sub_type: &r.sub_type,
            parent_id: &r.parent_id,
            reservation: match r.result.as_ref().and_then(|p| p.payload.as_ref()) {
                Some(Payload::Reservation(res)) => Some((&res.player_id, &res.player_data)),
                _ => None,
            },
            error_message: r.error.as_ref().map(|e| e.error_message.as_str()),
            at: from_timestamp(r.timestamp.as_ref()?),
            deadline: r.deadline.as_ref().map(from_timestamp),
        })
    }
}

/// Decodes one record from its journaled bytes, as replay reads them: a player session's
/// update in place (its strings are not copied out first), anything else through prost and
/// [`decode`]. `lsn` is the record's position (checkpoints do not repeat it per record).
pub fn decode_bytes(
    bytes: &[u8],
    lsn: Lsn,
    lookup_game: impl Fn(&str) -> Option<Arc<GameSessionInfo>>,
) -> Result<Option<Change>, DecodeError> {
    if let Some(view) = super::protowire::callback_view(bytes) {
        return decode_callback(&view, lsn, lookup_game);
    }
    let mut r = <OperationRecord as prost::Message>::decode(bytes).map_err(|e| DecodeError {
        lsn,
        operation_id: String::new(),
        reason: format!("undecodable record: {e}"),
    })?;
    r.lsn = lsn;
    decode(&r, lookup_game)
}

/// A player session's update (see the table at the top).
fn decode_callback(
    v: &CallbackView<'_>,
    lsn: Lsn,
    lookup_game: impl Fn(&str) -> Option<Arc<GameSessionInfo>>,
) -> Result<Option<Change>, DecodeError> {
    let err = |reason: &str| DecodeError {
        lsn,
        operation_id: v.operation_id.to_string(),
        reason: reason.to_string(),
    };
    let action = OperationAction::try_from(v.action).map_err(|_| err("unknown action"))?;
    let psid =
        || PlayerSessionId::parse("operation_id", v.operation_id).map_err(|e| err(&e.to_string()));
    let gsid =
        || GameSessionId::parse("operation_id", v.parent_id).map_err(|e| err(&e.to_string()));
    let at = v.at;
    use OperationAction as A;
    Ok(Some(match action {
        A::Start => {
            let Some((player_id, player_data)) = v.reservation else {
                return Err(err("missing reservation"));
            };
            // A game session found has a valid id: only an unknown one needs checking.
            let Some(game) = lookup_game(v.parent_id) else {
                GameSessionId::validate("parent_id", v.parent_id)
                    .map_err(|e| err(&e.to_string()))?;
                return Ok(None);
            };
            let deadline = v.deadline.ok_or_else(|| err("no deadline"))?;
            let player = PlayerStrings::parse("player_id", player_id, Some(player_data))
                .map_err(|e| err(&e.to_string()))?;
            let mut ps = PlayerSession::reserved(psid()?, player, game, at, deadline);
            ps.lsns = SessionLsns::new(lsn, 0, 0);
            Change::Reserved(ps)
        }
        A::Succeed => Change::Accepted {
            id: psid()?,
            game_session_id: gsid()?,
            at,
        },
        A::Fail => Change::TimedOut {
            id: psid()?,
            game_session_id: gsid()?,
            at,
        },
        A::Retry => Change::ErrorReported {
            id: psid()?,
            game_session_id: gsid()?,
            message: v.error_message.unwrap_or("").into(),
            at,
        },
        A::Cancel => Change::Completed {
            id: psid()?,
            game_session_id: gsid()?,
            reason: EndReason::parse(v.sub_type).ok_or_else(|| err("unknown completion reason"))?,
            at,
        },
        A::Unspecified => return Err(err("unknown operation update")),
    }))
}

fn policy_from(v: i32) -> CreationPolicy {
    match PlayerSessionCreationPolicy::try_from(v) {
        Ok(PlayerSessionCreationPolicy::DenyAll) => CreationPolicy::DenyAll,
        _ => CreationPolicy::AcceptAll,
    }
}

/// Builds a fresh ACTIVE game session from its definition.
pub fn game_session_from(
    id: GameSessionId,
    d: &GameSessionDefinition,
    created: Timestamp,
) -> Result<GameSession, String> {
    let port = u16::try_from(d.port).map_err(|_| format!("port {} out of range", d.port))?;
    Ok(GameSession {
        info: Arc::new(GameSessionInfo {
            id,
            fleet_id: FleetId::parse("fleet_id", &d.fleet_id).map_err(|e| e.to_string())?,
            ip_address: d.ip_address.as_str().into(),
            port,
        }),
        name: d.name.as_str().into(),
        maximum_player_session_count: d.maximum_player_session_count,
        current_player_session_count: 0,
        creation_policy: CreationPolicy::AcceptAll,
        status: GameSessionStatus::Active,
        labels: Arc::new(
            d.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        release: d.release.as_str().into(),
        environment: d.environment.as_str().into(),
        reservation_timeout: Duration::from_secs(u64::from(d.reservation_timeout_seconds)),
        heartbeat_timeout: (d.heartbeat_timeout_seconds > 0)
            .then(|| Duration::from_secs(u64::from(d.heartbeat_timeout_seconds))),
        heartbeat_deadline: None,
        creation_time: created,
        termination_time: None,
        termination_reason: None,
        end_cause: None,
    })
}

/// The operation updates journaled for one player session, reconstructed from the fields each
/// of them set (every record is a function of the session's state and its error log; see
/// `docs/journal.md`).
pub fn history(ps: &PlayerSession, errors: Option<&ErrorLog>) -> Vec<OperationRecord> {
    let mut reserved = ps.clone();
    reserved.status = PlayerSessionStatus::Reserved;
    let mut out = vec![encode(&Change::Reserved(reserved), ps.lsns.reserved())];
    let gs = ps.game.id.clone();
    if let Some(at) = ps.accepted_at {
        out.push(encode(
            &Change::Accepted {
                id: ps.id,
                game_session_id: gs.clone(),
                at,
            },
            ps.lsns.accepted(),
        ));
    }
    for e in errors.iter().flat_map(|log| &log.recent) {
        out.push(encode(
            &Change::ErrorReported {
                id: ps.id,
                game_session_id: gs.clone(),
                message: e.message.clone(),
                at: e.at,
            },
            e.lsn,
        ));
    }
    out.sort_by_key(|r| r.lsn);
    match (ps.status, ps.termination_time) {
        (PlayerSessionStatus::TimedOut, Some(at)) => {
            out.push(encode(
                &Change::TimedOut {
                    id: ps.id,
                    game_session_id: gs,
                    at,
                },
                ps.lsns.ended(),
            ));
        }
        (PlayerSessionStatus::Completed, Some(at)) => out.push(encode(
            &Change::Completed {
                id: ps.id,
                game_session_id: gs,
                reason: ps.end_reason.unwrap_or(EndReason::Removed),
                at,
            },
            ps.lsns.ended(),
        )),
        _ => {}
    }
    out
}
