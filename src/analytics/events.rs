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
//! The messageId is `<operation id>-<LSN>.<journal id>` of the journal record ([`message_id`]): a retry or
//! a replay after a restart sends the same id, so Segment's deduplication removes duplicates.
//! The timestamp is when the transition happened, not when it is sent.

use std::{fmt::Write as _, sync::Arc};

use crate::domain::{Change, EndCause, Lsn, Timestamp};

/// What the events of a game session say about it: its properties, rendered once.
#[derive(Debug, Clone)]
pub struct GameContext {
    pub creation_time: Timestamp,
    /// `"game_session_id":...,"fleet_id":...,"release":...,"environment":...` (escaped).
    properties: String,
}

impl GameContext {
    pub fn new(
        game_session_id: &str,
        fleet_id: &str,
        release: &str,
        environment: &str,
        creation_time: Timestamp,
    ) -> Self {
        let mut p = String::with_capacity(
            80 + game_session_id.len() + fleet_id.len() + release.len() + environment.len(),
        );
        for (i, (k, v)) in [
            ("game_session_id", game_session_id),
            ("fleet_id", fleet_id),
            ("release", release),
            ("environment", environment),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                p.push(',');
            }
            key(&mut p, k);
            string(&mut p, v);
        }
        GameContext {
            creation_time,
            properties: p,
        }
    }
}

/// What the events of a player session need beyond the change itself.
#[derive(Debug, Clone)]
pub struct PlayerContext {
    /// The player's id, as the store keeps it (already validated).
    pub player_id: String,
    pub creation_time: Timestamp,
}

/// What [`write_event`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The message was appended.
    Event,
    /// Not a lifecycle transition: no event.
    NotLifecycle,
    /// A transition whose game or player session is no longer known (purged): no event.
    UnknownSession,
}

/// Appends `s` as a JSON string (quoted and escaped).
fn string(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(s);
    } else {
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

fn key(out: &mut String, k: &str) {
    out.push('"');
    out.push_str(k);
    out.push_str("\":");
}

/// Days since 1970-01-01 -> (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Writes `n` in decimal, zero-padded to `width` digits, into the end of `buf`; returns where
/// the digits start.
fn digits_into(buf: &mut [u8], mut n: u64, width: usize) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    while buf.len() - i < width && i > 0 {
        i -= 1;
        buf[i] = b'0';
    }
    i
}

/// Appends `n` in decimal, zero-padded to `width` digits.
fn digits(out: &mut String, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    let start = digits_into(&mut buf, n, width);
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or_default());
}

/// Appends `t` as a quoted RFC 3339 UTC time with milliseconds (24 characters).
pub fn write_rfc3339_millis(out: &mut String, t: Timestamp) {
    let micros = t.as_micros();
    let secs = micros.div_euclid(1_000_000);
    let millis = micros.rem_euclid(1_000_000) as u64 / 1000;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    // Each value fits its width (the year is clamped to 0..=9999).
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(1, 4, y.clamp(0, 9999) as u64);
    put(6, 2, u64::from(mo));
    put(9, 2, u64::from(d));
    put(12, 2, sod / 3600);
    put(15, 2, sod % 3600 / 60);
    put(18, 2, sod % 60);
    put(21, 3, millis);
    out.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// Where an event comes from: the journal (its id, [`journal_id`]) and the record's LSN.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub journal: &'a str,
    pub lsn: Lsn,
}

/// The stable messageId of the event of a journal record about `operation_id`:
/// `<operation_id>-<lsn>.<journal id>`. Each record has at most one event and LSNs never repeat
/// within a journal; the journal id (random, made with the data directory) keeps two data
/// directories (say, a staging daemon reset with the same custom game session ids) apart, so
/// Segment's deduplication never drops a different event. A retry or a resend after a restart
/// gives the same id. At most 48 + 1 + 20 + 1 + 12 characters.
pub fn message_id(operation_id: &str, src: Source<'_>) -> String {
    let mut out = String::with_capacity(operation_id.len() + 40);
    push_message_id(&mut out, operation_id, src);
    out
}

fn push_message_id(out: &mut String, operation_id: &str, src: Source<'_>) {
    out.push_str(operation_id);
    out.push('-');
    digits(out, src.lsn, 1);
    out.push('.');
    out.push_str(src.journal);
}

/// The journal id of `data_dir` (the file `analytics-id`: 12 hex digits made at the first
/// start with analytics on, fsynced; the same for the life of the directory).
pub fn journal_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let id = crate::journal::segment::read_or_make(
        data_dir,
        "analytics-id",
        "12 hex digits",
        |b| {
            let t = b.trim_ascii();
            t.len() == 12 && t.iter().all(u8::is_ascii_hexdigit)
        },
        || uuid::Uuid::new_v4().simple().to_string().as_bytes()[..12].to_vec(),
    )?;
    Ok(String::from_utf8_lossy(id.trim_ascii()).into_owned())
}

/// The start of a track message, up to and including `"properties":{`.
fn open(
    out: &mut String,
    event: &str,
    who: (&str, &str),
    operation_id: &str,
    src: Source<'_>,
    at: Timestamp,
) {
    out.push_str("{\"type\":\"track\",\"event\":\"");
    out.push_str(event);
    out.push_str("\",");
    key(out, who.0);
    string(out, who.1);
    out.push_str(",\"messageId\":\"");
    push_message_id(out, operation_id, src);
    out.push_str("\",\"timestamp\":");
    write_rfc3339_millis(out, at);
    out.push_str(",\"properties\":{");
}

/// Closes the properties and adds the context.
fn close(out: &mut String) {
    out.push_str(concat!(
        "},\"context\":{\"library\":{\"name\":\"session-broker\",\"version\":\"",
        env!("CARGO_PKG_VERSION"),
        "\"}}}"
    ));
}

fn status(out: &mut String, status: &str) {
    out.push_str(",\"status\":\"");
    out.push_str(status);
    out.push('"');
}

fn duration(out: &mut String, from: Timestamp, to: Timestamp) {
    let ms = to.duration_since(from).as_millis() as u64;
    out.push_str(",\"duration_seconds\":");
    digits(out, ms / 1000, 1);
    out.push('.');
    digits(out, ms % 1000, 3);
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
        | Change::AnalyticsRetry { at, .. }
        | Change::ImportStarted { at, .. }
        | Change::ImportChunk { at, .. }
        | Change::ImportedRow { at, .. }
        | Change::ImportFinished { at, .. } => *at,
    }
}

/// The game context of a game session that starts with `change` (for caches).
pub fn started_context(change: &Change) -> Option<GameContext> {
    let Change::GameSessionStarted(g) = change else {
        return None;
    };
    Some(GameContext::new(
        g.id().as_str(),
        g.fleet_id().as_str(),
        &g.release,
        &g.environment,
        g.creation_time,
    ))
}

/// Appends the track message of one journaled change to `out` (JSON, one object). `game`
/// and `player` look up the context of the sessions it is about.
pub fn write_event(
    out: &mut String,
    change: &Change,
    src: Source<'_>,
    game: impl FnOnce(&str) -> Option<Arc<GameContext>>,
    player: impl FnOnce(&str) -> Option<PlayerContext>,
) -> Written {
    match change {
        Change::GameSessionStarted(g) => {
            let id = g.id().as_str();
            let ctx = started_context(change).expect("a start");
            open(
                out,
                "Game Session Started",
                ("anonymousId", id),
                id,
                src,
                g.creation_time,
            );
            out.push_str(&ctx.properties);
            status(out, "ACTIVE");
            out.push_str(",\"name\":");
            string(out, &g.name);
            let _ = write!(
                out,
                ",\"maximum_player_session_count\":{},\"labels\":{{",
                g.maximum_player_session_count
            );
            for (i, (k, v)) in g.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(out, k);
                out.push(':');
                string(out, v);
            }
            out.push('}');
            close(out);
            Written::Event
        }
        Change::GameSessionEnded { id, cause, at, .. } => {
            let id = id.as_str();
            let Some(g) = game(id) else {
                return Written::UnknownSession;
            };
            open(out, "Game Session Ended", ("anonymousId", id), id, src, *at);
            out.push_str(&g.properties);
            status(
                out,
                match cause {
                    EndCause::Ended => "TERMINATED",
                    EndCause::Crashed | EndCause::HeartbeatLost => "ERROR",
                },
            );
            duration(out, g.creation_time, *at);
            close(out);
            Written::Event
        }
        Change::Reserved(ps) => {
            let Some(g) = game(ps.game.id.as_str()) else {
                return Written::UnknownSession;
            };
            let psid = ps.id.to_string();
            open(
                out,
                "Player Session Reserved",
                ("userId", ps.player_id()),
                &psid,
                src,
                ps.creation_time,
            );
            out.push_str(&g.properties);
            status(out, "RESERVED");
            out.push_str(",\"player_session_id\":");
            string(out, &psid);
            close(out);
            Written::Event
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
            let psid = id.to_string();
            let (Some(g), Some(pl)) = (game(game_session_id.as_str()), player(&psid)) else {
                return Written::UnknownSession;
            };
            let (name, st, ended) = match change {
                Change::Accepted { .. } => ("Player Session Activated", "ACTIVE", false),
                Change::Completed { .. } => ("Player Session Completed", "COMPLETED", true),
                _ => ("Player Session Timed Out", "TIMEDOUT", true),
            };
            open(
                out,
                name,
                ("userId", pl.player_id.as_str()),
                &psid,
                src,
                *at,
            );
            out.push_str(&g.properties);
            status(out, st);
            out.push_str(",\"player_session_id\":");
            string(out, &psid);
            if let Change::Completed { reason, .. } = change {
                out.push_str(",\"reason\":\"");
                out.push_str(reason.as_str());
                out.push('"');
            }
            if ended {
                duration(out, pl.creation_time, *at);
            }
            close(out);
            Written::Event
        }
        Change::GameSessionUpdated { .. }
        | Change::IdempotencyKey { .. }
        | Change::ErrorReported { .. }
        | Change::AnalyticsDelivered { .. }
        | Change::AnalyticsRetry { .. }
        | Change::ImportStarted { .. }
        | Change::ImportChunk { .. }
        | Change::ImportedRow { .. }
        | Change::ImportFinished { .. } => Written::NotLifecycle,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use crate::domain::PlayerStrings;

    use super::*;
    use crate::domain::{
        EndReason, FleetId, GameSessionId, GameSessionInfo, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, SessionLsns,
    };

    fn ctx() -> Arc<GameContext> {
        Arc::new(GameContext::new(
            "match-1",
            "fleet-eu",
            "1.4.2",
            "production",
            Timestamp::from_micros(1_700_000_000_000_000),
        ))
    }

    /// The track message of one change as JSON (`None` if it has none): [`write_event`] into a
    /// fresh string.
    fn event(
        change: &Change,
        lsn: Lsn,
        game: impl FnOnce(&str) -> Option<Arc<GameContext>>,
        player: impl FnOnce(&str) -> Option<PlayerContext>,
    ) -> Option<String> {
        let mut out = String::with_capacity(512);
        let src = Source {
            journal: "0123456789ab",
            lsn,
        };
        (write_event(&mut out, change, src, game, player) == Written::Event).then_some(out)
    }

    fn parse(s: Option<String>) -> Value {
        serde_json::from_str(&s.expect("an event")).expect("valid JSON")
    }

    fn player() -> PlayerContext {
        PlayerContext {
            player_id: "alice".into(),
            creation_time: Timestamp::from_micros(1_700_000_010_000_000),
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
            player: PlayerStrings::parse("p", "alice", None).unwrap(),
            game: Arc::new(GameSessionInfo {
                id: gs.clone(),
                fleet_id: FleetId::parse("f", "fleet-eu").unwrap(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
            }),
            status: PlayerSessionStatus::Reserved,
            creation_time: Timestamp::from_micros(1_700_000_010_000_000),
            termination_time: None,
            reservation_deadline: Timestamp::from_micros(1_700_000_070_000_000),
            accepted_at: None,
            end_reason: None,
            lsns: SessionLsns::default(),
            error_count: 0,
        };
        let r = parse(event(&Change::Reserved(ps), 7, game, pl));
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
            at: Timestamp::from_micros(1_700_000_100_000_000),
        };
        let c = parse(event(&done, 9, game, pl));
        assert_eq!(c["event"], "Player Session Completed");
        assert_eq!(c["properties"]["duration_seconds"], 90.0);
        assert_eq!(c["properties"]["reason"], "removed");

        let t = parse(event(
            &Change::TimedOut {
                id: psid,
                game_session_id: gs.clone(),
                at: Timestamp::from_micros(1_700_000_070_000_000),
            },
            8,
            game,
            pl,
        ));
        assert_eq!(
            (t["event"].as_str(), t["properties"]["status"].as_str()),
            (Some("Player Session Timed Out"), Some("TIMEDOUT"))
        );

        let e = parse(event(
            &Change::GameSessionEnded {
                id: gs.clone(),
                cause: EndCause::Crashed,
                reason: "segfault".into(),
                at: Timestamp::from_micros(1_700_000_600_000_000),
            },
            10,
            game,
            pl,
        ));
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
        let at = |journal, lsn| Source { journal, lsn };
        let a = message_id("psess-1", at("0123456789ab", 7));
        assert_eq!(a, "psess-1-7.0123456789ab");
        assert_eq!(
            a,
            message_id("psess-1", at("0123456789ab", 7)),
            "a retry resends it"
        );
        assert_ne!(a, message_id("psess-1", at("0123456789ab", 8)));
        assert_ne!(a, message_id("psess-2", at("0123456789ab", 7)));
        assert_ne!(
            message_id("match-1", at("0123456789ab", 23)),
            message_id("match-1-2", at("0123456789ab", 3))
        );
        assert_ne!(
            message_id("match-1", at("0123456789ab", 1)),
            message_id("match-1", at("ba9876543210", 1)),
            "another data directory's journal"
        );
        let longest = message_id(&"g".repeat(48), at("0123456789ab", u64::MAX));
        assert!(longest.len() < 100, "{longest}");
    }

    #[test]
    fn the_journal_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = journal_id(dir.path()).unwrap();
        assert_eq!(id.len(), 12);
        assert_eq!(journal_id(dir.path()).unwrap(), id);
        std::fs::write(dir.path().join("analytics-id"), "junk").unwrap();
        assert!(
            journal_id(dir.path()).is_err(),
            "a damaged id is an error, not a new id"
        );
    }

    #[test]
    fn timestamps_match_humantime_and_strings_are_escaped() {
        for micros in [
            0i64,
            1_700_000_010_123_456,
            951_782_400_000_000, // 2000-02-29
            4_102_444_799_999_999,
            1_709_164_800_000_000, // 2024-02-29
        ] {
            let mut out = String::new();
            write_rfc3339_millis(&mut out, Timestamp::from_micros(micros));
            let want =
                humantime::format_rfc3339_millis(Timestamp::from_micros(micros).to_system_time());
            assert_eq!(out, format!("\"{want}\""), "{micros}");
        }
        for s in [
            "plain",
            "quo\"te",
            "back\\slash",
            "tab\tnew\nline\u{1}",
            "🎮 ünï",
        ] {
            let mut out = String::new();
            string(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
    }

    #[test]
    fn a_game_session_start_carries_its_labels() {
        use crate::domain::{CreationPolicy, GameSession, GameSessionStatus};
        let labels: std::collections::BTreeMap<String, String> =
            [("map".to_string(), "dust \"2\"".to_string())].into();
        let g = GameSession {
            info: Arc::new(GameSessionInfo {
                id: GameSessionId::parse("g", "match-1").unwrap(),
                fleet_id: FleetId::parse("f", "fleet-eu").unwrap(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
            }),
            name: "final".into(),
            maximum_player_session_count: 10,
            current_player_session_count: 0,
            creation_policy: CreationPolicy::AcceptAll,
            status: GameSessionStatus::Active,
            labels: Arc::new(labels),
            release: "1.4.2".into(),
            environment: "production".into(),
            reservation_timeout: std::time::Duration::from_secs(60),
            heartbeat_timeout: None,
            heartbeat_deadline: None,
            creation_time: Timestamp::from_micros(1_700_000_000_000_000),
            termination_time: None,
            termination_reason: None,
            end_cause: None,
        };
        let v = parse(event(
            &Change::GameSessionStarted(g),
            1,
            |_: &str| None,
            |_: &str| None,
        ));
        assert_eq!(v["event"], "Game Session Started");
        assert_eq!(v["properties"]["labels"]["map"], "dust \"2\"");
        assert_eq!(v["properties"]["maximum_player_session_count"], 10);
        assert_eq!(v["properties"]["fleet_id"], "fleet-eu");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000Z");
    }
}
