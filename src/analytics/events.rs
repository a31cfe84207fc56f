//! Segment `track` messages for lifecycle transitions, derived from journaled changes.
//!
//! | change | event | userId / anonymousId |
//! |---|---|---|
//! | game session registered | `Game Session Started` | anonymousId = game_session_id |
//! | game session ended | `Game Session Ended` | anonymousId = game_session_id |
//! | reserved | `Player Session Reserved` | userId = player_id |
//! | accepted | `Player Session Activated` | userId = player_id |
//! | completed | `Player Session Completed` | userId = player_id |
//! | timed out | `Player Session Timed Out` | userId = player_id |
//!
//! The messageId is a UUIDv5 of the journal record (operation id, event and LSN): a retry or a
//! replay after a restart sends the same id, so Segment's deduplication removes duplicates.
//! The timestamp is when the transition happened, not when it is sent.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::domain::{Change, EndCause, FleetId, Lsn, PlayerId, Timestamp};

/// Namespace of every messageId (a fixed, random UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x5a4e_7c2e_91d3_4f7b_b1c6_0e2d_9f84_a3c1);

/// What the events of a game session say about it.
#[derive(Debug, Clone)]
pub struct GameContext {
    pub fleet_id: FleetId,
    pub release: String,
    pub environment: String,
    pub creation_time: Timestamp,
}

/// What the events of a player session need beyond the change itself.
#[derive(Debug, Clone)]
pub struct PlayerContext {
    pub player_id: PlayerId,
    pub creation_time: Timestamp,
}

fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(t.to_system_time()).to_string()
}

/// The stable messageId of the event `event` of the record `lsn` about `operation_id`.
pub fn message_id(operation_id: &str, event: &str, lsn: Lsn) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{operation_id}/{event}/{lsn}").as_bytes(),
    )
    .to_string()
}

fn track(
    event: &str,
    who: (&str, &str),
    operation_id: &str,
    lsn: Lsn,
    at: Timestamp,
    properties: Map<String, Value>,
) -> Value {
    json!({
        "type": "track",
        "event": event,
        who.0: who.1,
        "messageId": message_id(operation_id, event, lsn),
        "timestamp": rfc3339(at),
        "properties": properties,
        "context": {"library": {"name": "session-broker", "version": env!("CARGO_PKG_VERSION")}},
    })
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// Is `change` a lifecycle transition (one that has an event)?
pub fn is_lifecycle(change: &Change) -> bool {
    matches!(
        change,
        Change::GameSessionStarted(_)
            | Change::GameSessionEnded { .. }
            | Change::Reserved(_)
            | Change::Accepted { .. }
            | Change::Completed { .. }
            | Change::TimedOut { .. }
    )
}

/// When a change happened.
pub fn timestamp_of(change: &Change) -> Timestamp {
    match change {
        Change::GameSessionStarted(g) => g.creation_time,
        Change::Reserved(ps) => ps.creation_time,
        Change::GameSessionUpdated { at, .. }
        | Change::GameSessionEnded { at, .. }
        | Change::IdempotencyKey { at, .. }
        | Change::Accepted { at, .. }
        | Change::TimedOut { at, .. }
        | Change::Completed { at, .. }
        | Change::ErrorReported { at, .. }
        | Change::AnalyticsDelivered { at, .. }
        | Change::AnalyticsRetry { at, .. } => *at,
    }
}

/// The track message of one journaled change (`None` for changes that are not lifecycle
/// transitions, or whose game or player session is no longer known).
pub fn event(
    change: &Change,
    lsn: Lsn,
    game: impl Fn(&str) -> Option<GameContext>,
    player: impl Fn(&str) -> Option<PlayerContext>,
) -> Option<Value> {
    let props = |gsid: &str, g: &GameContext, status: &str| {
        let mut p = Map::new();
        p.insert("game_session_id".into(), json!(gsid));
        p.insert("fleet_id".into(), json!(g.fleet_id.as_str()));
        p.insert("release".into(), json!(g.release));
        p.insert("environment".into(), json!(g.environment));
        p.insert("status".into(), json!(status));
        p
    };
    match change {
        Change::GameSessionStarted(g) => {
            let id = g.id().as_str();
            let ctx = GameContext {
                fleet_id: g.fleet_id().clone(),
                release: g.release.to_string(),
                environment: g.environment.to_string(),
                creation_time: g.creation_time,
            };
            let mut p = props(id, &ctx, "ACTIVE");
            p.insert("name".into(), json!(g.name.as_ref()));
            p.insert(
                "maximum_player_session_count".into(),
                json!(g.maximum_player_session_count),
            );
            p.insert("labels".into(), json!(g.labels.as_ref()));
            Some(track(
                "Game Session Started",
                ("anonymousId", id),
                id,
                lsn,
                g.creation_time,
                p,
            ))
        }
        Change::GameSessionEnded { id, cause, at, .. } => {
            let id = id.as_str();
            let g = game(id)?;
            let status = match cause {
                EndCause::Ended => "TERMINATED",
                EndCause::Crashed | EndCause::HeartbeatLost => "ERROR",
            };
            let mut p = props(id, &g, status);
            p.insert(
                "duration_seconds".into(),
                json!(seconds(g.creation_time, *at)),
            );
            Some(track(
                "Game Session Ended",
                ("anonymousId", id),
                id,
                lsn,
                *at,
                p,
            ))
        }
        Change::Reserved(ps) => {
            let gsid = ps.game.id.as_str();
            let g = game(gsid)?;
            let psid = ps.id.to_string();
            let mut p = props(gsid, &g, "RESERVED");
            p.insert("player_session_id".into(), json!(psid));
            let who = ("userId", ps.player_id.as_str());
            Some(track(
                "Player Session Reserved",
                who,
                &psid,
                lsn,
                ps.creation_time,
                p,
            ))
        }
        Change::Accepted {
            id,
            game_session_id,
            at,
        }
        | Change::Completed {
            id,
            game_session_id,
            at,
            ..
        }
        | Change::TimedOut {
            id,
            game_session_id,
            at,
        } => {
            let gsid = game_session_id.as_str();
            let psid = id.to_string();
            let (g, pl) = (game(gsid)?, player(&psid)?);
            let (name, status, ended) = match change {
                Change::Accepted { .. } => ("Player Session Activated", "ACTIVE", false),
                Change::Completed { .. } => ("Player Session Completed", "COMPLETED", true),
                _ => ("Player Session Timed Out", "TIMEDOUT", true),
            };
            let mut p = props(gsid, &g, status);
            p.insert("player_session_id".into(), json!(psid));
            if let Change::Completed { reason, .. } = change {
                p.insert("reason".into(), json!(reason.as_str()));
            }
            if ended {
                p.insert(
                    "duration_seconds".into(),
                    json!(seconds(pl.creation_time, *at)),
                );
            }
            Some(track(
                name,
                ("userId", pl.player_id.as_str()),
                &psid,
                lsn,
                *at,
                p,
            ))
        }
        Change::GameSessionUpdated { .. }
        | Change::IdempotencyKey { .. }
        | Change::ErrorReported { .. }
        | Change::AnalyticsDelivered { .. }
        | Change::AnalyticsRetry { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{
        EndReason, GameSessionId, GameSessionInfo, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, SessionLsns,
    };

    fn ctx() -> GameContext {
        GameContext {
            fleet_id: FleetId::parse("f", "fleet-eu").unwrap(),
            release: "1.4.2".into(),
            environment: "production".into(),
            creation_time: Timestamp(1_700_000_000_000_000),
        }
    }

    fn player() -> PlayerContext {
        PlayerContext {
            player_id: PlayerId::parse("p", "alice").unwrap(),
            creation_time: Timestamp(1_700_000_010_000_000),
        }
    }

    #[test]
    fn every_transition_maps_to_its_track_message() {
        let gs = GameSessionId::parse("g", "match-1").unwrap();
        let psid = PlayerSessionId::generate();
        let game = |_: &str| Some(ctx());
        let pl = |_: &str| Some(player());
        let ps = PlayerSession {
            id: psid,
            player_id: PlayerId::parse("p", "alice").unwrap(),
            game: Arc::new(GameSessionInfo {
                id: gs.clone(),
                fleet_id: FleetId::parse("f", "fleet-eu").unwrap(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
            }),
            status: PlayerSessionStatus::Reserved,
            creation_time: Timestamp(1_700_000_010_000_000),
            termination_time: None,
            reservation_deadline: Timestamp(1_700_000_070_000_000),
            player_data: None,
            accepted_at: None,
            end_reason: None,
            lsns: SessionLsns::default(),
            errors: None,
        };
        let r = event(&Change::Reserved(ps), 7, game, pl).unwrap();
        assert_eq!(r["event"], "Player Session Reserved");
        assert_eq!(r["userId"], "alice");
        assert_eq!(r["properties"]["player_session_id"], psid.to_string());
        assert_eq!(r["properties"]["release"], "1.4.2");
        assert_eq!(r["properties"]["status"], "RESERVED");
        assert_eq!(r["context"]["library"]["name"], "session-broker");
        assert!(r["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:13:30"));

        let done = Change::Completed {
            id: psid,
            game_session_id: gs.clone(),
            reason: EndReason::Removed,
            at: Timestamp(1_700_000_100_000_000),
        };
        let c = event(&done, 9, game, pl).unwrap();
        assert_eq!(c["event"], "Player Session Completed");
        assert_eq!(c["properties"]["duration_seconds"], 90.0);
        assert_eq!(c["properties"]["reason"], "removed");

        let t = event(
            &Change::TimedOut {
                id: psid,
                game_session_id: gs.clone(),
                at: Timestamp(1_700_000_070_000_000),
            },
            8,
            game,
            pl,
        )
        .unwrap();
        assert_eq!(
            (t["event"].as_str(), t["properties"]["status"].as_str()),
            (Some("Player Session Timed Out"), Some("TIMEDOUT"))
        );

        let e = event(
            &Change::GameSessionEnded {
                id: gs.clone(),
                cause: EndCause::Crashed,
                reason: "segfault".into(),
                at: Timestamp(1_700_000_600_000_000),
            },
            10,
            game,
            pl,
        )
        .unwrap();
        assert_eq!(e["event"], "Game Session Ended");
        assert_eq!(e["anonymousId"], "match-1");
        assert!(e.get("userId").is_none());
        assert_eq!(e["properties"]["status"], "ERROR");
        assert_eq!(e["properties"]["duration_seconds"], 600.0);

        // Unknown context: no event rather than a wrong one.
        assert!(event(&done, 9, |_: &str| None, pl).is_none());
    }

    #[test]
    fn message_ids_are_stable_unique_and_short() {
        let a = message_id("psess-1", "Player Session Reserved", 7);
        assert_eq!(
            a,
            message_id("psess-1", "Player Session Reserved", 7),
            "a retry resends it"
        );
        assert_ne!(a, message_id("psess-1", "Player Session Activated", 8));
        assert_ne!(a, message_id("psess-2", "Player Session Reserved", 7));
        assert!(a.len() < 100);
    }
}
