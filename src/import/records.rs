//! The records of import and export files, both ways, in one place:
//!
//! - JSONL: one object per line, `{"kind":"game_session", ...}` or
//!   `{"kind":"player_session", ...}` with the API's snake_case field names and RFC 3339 times;
//!   also a line that is GameLift's own `PlayerSession` JSON (PascalCase: `PlayerSessionId`,
//!   `PlayerId`, `GameSessionId`, `FleetId`, `Status`, `CreationTime`, `TerminationTime`,
//!   `IpAddress`, `Port`, `PlayerData`), so a `describe-player-sessions` dump can be imported.
//! - CSV: a header row naming the columns (`player_id` and `game_session_id` required;
//!   `player_session_id` (generated when empty), `status` (RESERVED when empty), `player_data`,
//!   `creation_time`, `termination_time`, `fleet_id` optional), RFC 4180 quoting.
//!
//! Parsing validates every field with the API's own rules and returns a message naming the
//! field (the job prefixes the line number). Export writes what parsing accepts, so an export
//! imports into an identical state.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{json, Map, Value};

use crate::domain::{
    limits, CreationPolicy, FleetId, GameSession, GameSessionId, GameSessionStatus, PlayerId,
    PlayerSession, PlayerSessionId, PlayerSessionStatus, Timestamp,
};

/// The format of an import or export file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    /// `jsonl` or `csv`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// A game session to import (JSONL `"kind":"game_session"`).
#[derive(Debug, Clone, PartialEq)]
pub struct GameSessionRecord {
    pub game_session_id: GameSessionId,
    pub fleet_id: FleetId,
    pub name: String,
    pub ip_address: String,
    pub port: u16,
    pub maximum_player_session_count: u32,
    pub creation_policy: CreationPolicy,
    pub status: GameSessionStatus,
    pub labels: BTreeMap<String, String>,
    pub release: String,
    pub environment: String,
    /// 0: the daemon's default.
    pub reservation_timeout_seconds: u32,
    /// 0: no heartbeats expected.
    pub heartbeat_timeout_seconds: u32,
    pub creation_time: Option<Timestamp>,
    pub termination_time: Option<Timestamp>,
    pub termination_reason: Option<String>,
}

/// A player session to import.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayerSessionRecord {
    /// `None`: generate one.
    pub player_session_id: Option<PlayerSessionId>,
    pub player_id: PlayerId,
    pub game_session_id: GameSessionId,
    /// Checked against the game session's fleet when given.
    pub fleet_id: Option<FleetId>,
    pub status: PlayerSessionStatus,
    pub player_data: Option<Arc<str>>,
    /// `None`: now.
    pub creation_time: Option<Timestamp>,
    /// Terminal sessions only; `None`: the creation time.
    pub termination_time: Option<Timestamp>,
}

/// One record of an import file.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportRecord {
    GameSession(GameSessionRecord),
    PlayerSession(PlayerSessionRecord),
}

/// Why a record cannot be imported (the job adds `line N: `).
pub type RecordError = String;

fn err(field: &str, e: crate::domain::Error) -> RecordError {
    match e {
        crate::domain::Error::InvalidArgument { reason, .. } => format!("{field}: {reason}"),
        other => format!("{field}: {other}"),
    }
}

/// Parses a time: RFC 3339 (`Z` or a numeric offset, any fraction) or Unix seconds (a number,
/// as some GameLift tools print them).
pub fn parse_time(field: &str, v: &Value) -> Result<Timestamp, RecordError> {
    match v {
        Value::Number(n) => {
            let secs = n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
                .ok_or_else(|| format!("{field}: {n} is not a Unix time in seconds"))?;
            Ok(Timestamp::from_micros((secs * 1e6).round() as i64))
        }
        Value::String(s) => parse_time_str(field, s),
        _ => Err(format!(
            "{field}: expected an RFC 3339 time or Unix seconds"
        )),
    }
}

fn parse_time_str(field: &str, s: &str) -> Result<Timestamp, RecordError> {
    let bad = || format!("{field}: {s:?} is not an RFC 3339 time (e.g. 2026-12-01T21:40:03Z)");
    let t = s.trim();
    // Split a numeric offset off; humantime takes the rest with `Z`.
    let (base, offset_secs) = match t.len().checked_sub(6).map(|i| (i, t.as_bytes()[i])) {
        Some((i, sign @ (b'+' | b'-'))) if t.as_bytes().get(i + 3) == Some(&b':') => {
            let hh: i64 = t[i + 1..i + 3].parse().map_err(|_| bad())?;
            let mm: i64 = t[i + 4..].parse().map_err(|_| bad())?;
            let off = hh * 3600 + mm * 60;
            (&t[..i], if sign == b'+' { off } else { -off })
        }
        _ => (
            t.strip_suffix('Z')
                .or_else(|| t.strip_suffix('z'))
                .ok_or_else(bad)?,
            0,
        ),
    };
    if !base.contains('T') && !base.contains('t') && !base.contains(' ') {
        return Err(bad());
    }
    let st = humantime::parse_rfc3339_weak(base).map_err(|_| bad())?;
    let ts = Timestamp::from_system_time(st);
    Ok(Timestamp::from_micros(
        ts.as_micros() - offset_secs * 1_000_000,
    ))
}

/// The RFC 3339 form of `t` written by export (microseconds, UTC).
pub fn format_time(t: Timestamp) -> String {
    humantime::format_rfc3339_micros(t.to_system_time()).to_string()
}

/// The fields of one JSON object, read under either naming.
struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn str(&self, name: &str) -> Result<Option<&'a str>, RecordError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{name}: expected a string")),
        }
    }

    fn required(&self, name: &str) -> Result<&'a str, RecordError> {
        self.str(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{name}: missing"))
    }

    fn u32(&self, name: &str) -> Result<Option<u32>, RecordError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("{name}: expected a non-negative integer")),
        }
    }

    fn time(&self, name: &str) -> Result<Option<Timestamp>, RecordError> {
        self.get(name).map(|v| parse_time(name, v)).transpose()
    }
}

fn player_status(field: &str, s: &str) -> Result<PlayerSessionStatus, RecordError> {
    if s.is_empty() {
        return Ok(PlayerSessionStatus::Reserved);
    }
    PlayerSessionStatus::parse(s)
        .ok_or_else(|| format!("{field}: {s:?} is not RESERVED, ACTIVE, COMPLETED or TIMEDOUT"))
}

fn player_data(field: &str, s: Option<&str>) -> Result<Option<Arc<str>>, RecordError> {
    match s {
        None | Some("") => Ok(None),
        Some(d) => {
            let n = d.chars().count();
            if n > limits::PLAYER_DATA_MAX {
                return Err(format!(
                    "{field} longer than {} characters ({n})",
                    limits::PLAYER_DATA_MAX
                ));
            }
            Ok(Some(d.into()))
        }
    }
}

/// The player session fields common to every format, validated.
#[allow(clippy::too_many_arguments)]
fn player_record(
    names: [&str; 8],
    player_session_id: Option<&str>,
    player_id: Option<&str>,
    game_session_id: Option<&str>,
    fleet_id: Option<&str>,
    status: Option<&str>,
    data: Option<&str>,
    times: (Option<Timestamp>, Option<Timestamp>),
) -> Result<PlayerSessionRecord, RecordError> {
    let [n_psid, n_player, n_game, n_fleet, n_status, n_data, _, n_end] = names;
    fn present<'v>(name: &str, v: Option<&'v str>) -> Result<&'v str, RecordError> {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{name}: missing"))
    }
    let status = player_status(n_status, status.unwrap_or(""))?;
    if !status.is_terminal() && times.1.is_some() {
        return Err(format!("{n_end}: given for a {status} session"));
    }
    Ok(PlayerSessionRecord {
        player_session_id: player_session_id
            .filter(|s| !s.is_empty())
            .map(|s| PlayerSessionId::parse(n_psid, s).map_err(|e| err(n_psid, e)))
            .transpose()?,
        player_id: PlayerId::parse(n_player, present(n_player, player_id)?)
            .map_err(|e| err(n_player, e))?,
        game_session_id: GameSessionId::parse(n_game, present(n_game, game_session_id)?)
            .map_err(|e| err(n_game, e))?,
        fleet_id: fleet_id
            .filter(|s| !s.is_empty())
            .map(|s| FleetId::parse(n_fleet, s).map_err(|e| err(n_fleet, e)))
            .transpose()?,
        status,
        player_data: player_data(n_data, data)?,
        creation_time: times.0,
        termination_time: times.1,
    })
}

const SNAKE: [&str; 8] = [
    "player_session_id",
    "player_id",
    "game_session_id",
    "fleet_id",
    "status",
    "player_data",
    "creation_time",
    "termination_time",
];

const PASCAL: [&str; 8] = [
    "PlayerSessionId",
    "PlayerId",
    "GameSessionId",
    "FleetId",
    "Status",
    "PlayerData",
    "CreationTime",
    "TerminationTime",
];

/// GameLift's GameSessionId is often an ARN ending in the id:
/// `arn:aws:gamelift:us-east-1::gamesession/fleet-123/gsess-abc`. Takes the last segment.
fn gamelift_game_session_id(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

fn player_from_json(f: &Fields, names: [&str; 8]) -> Result<PlayerSessionRecord, RecordError> {
    let game = f.str(names[2])?;
    let game = if names == PASCAL {
        game.map(gamelift_game_session_id)
    } else {
        game
    };
    player_record(
        names,
        f.str(names[0])?,
        f.str(names[1])?,
        game,
        f.str(names[3])?,
        f.str(names[4])?,
        f.str(names[5])?,
        (f.time(names[6])?, f.time(names[7])?),
    )
}

fn game_from_json(f: &Fields) -> Result<GameSessionRecord, RecordError> {
    let id = f.required("game_session_id")?;
    let port = f.u32("port")?.unwrap_or(0);
    let port = u16::try_from(port).map_err(|_| format!("port: {port} is out of range"))?;
    let status = match f.str("status")?.unwrap_or("ACTIVE") {
        "ACTIVE" => GameSessionStatus::Active,
        "TERMINATED" => GameSessionStatus::Terminated,
        "ERROR" => GameSessionStatus::Error,
        s => return Err(format!("status: {s:?} is not ACTIVE, TERMINATED or ERROR")),
    };
    let creation_policy = match f
        .str("player_session_creation_policy")?
        .unwrap_or("ACCEPT_ALL")
    {
        "ACCEPT_ALL" => CreationPolicy::AcceptAll,
        "DENY_ALL" => CreationPolicy::DenyAll,
        s => {
            return Err(format!(
                "player_session_creation_policy: {s:?} is not ACCEPT_ALL or DENY_ALL"
            ))
        }
    };
    let labels = match f.get("labels") {
        None => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("labels: the value of {k:?} is not a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("labels: expected an object".into()),
    };
    let termination_time = f.time("termination_time")?;
    if status == GameSessionStatus::Active && termination_time.is_some() {
        return Err("termination_time: given for an ACTIVE game session".into());
    }
    let max = f.u32("maximum_player_session_count")?.unwrap_or(0);
    crate::domain::check_capacity_value(max)
        .map_err(|e| format!("maximum_player_session_count: {e}"))?;
    let text = |name: &str, max: usize| -> Result<String, RecordError> {
        let s = f.str(name)?.unwrap_or("");
        crate::domain::check_text(name, s, max).map_err(|e| err(name, e))?;
        Ok(s.to_string())
    };
    Ok(GameSessionRecord {
        game_session_id: GameSessionId::parse("game_session_id", id)
            .map_err(|e| err("game_session_id", e))?,
        fleet_id: FleetId::parse("fleet_id", f.required("fleet_id")?)
            .map_err(|e| err("fleet_id", e))?,
        name: text("name", limits::NAME_MAX)?,
        ip_address: text("ip_address", limits::IP_ADDRESS_MAX)?,
        port,
        maximum_player_session_count: max,
        creation_policy,
        status,
        labels,
        release: text("release", limits::RELEASE_MAX)?,
        environment: text("environment", limits::ENVIRONMENT_MAX)?,
        reservation_timeout_seconds: f.u32("reservation_timeout_seconds")?.unwrap_or(0),
        heartbeat_timeout_seconds: f.u32("heartbeat_timeout_seconds")?.unwrap_or(0),
        creation_time: f.time("creation_time")?,
        termination_time,
        termination_reason: f.str("termination_reason")?.map(str::to_string),
    })
}

/// A snake_case player session line, borrowed from the line (the common case of an import,
/// parsed without building a `serde_json::Value`).
#[derive(serde::Deserialize)]
struct PlayerLine<'a> {
    #[serde(borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    player_session_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    player_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    game_session_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    fleet_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    player_data: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    creation_time: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    termination_time: Option<std::borrow::Cow<'a, str>>,
}

/// The fast path of [`parse_jsonl`]: `None` when the line is anything but a well-typed
/// snake_case player session (the general path then parses it, with its exact messages).
fn parse_player_line(line: &str) -> Option<Result<ImportRecord, RecordError>> {
    let l: PlayerLine = serde_json::from_str(line).ok()?;
    if l.kind.as_deref() != Some("player_session") {
        return None;
    }
    let time = |field: &str, v: &Option<std::borrow::Cow<str>>| {
        v.as_deref().map(|s| parse_time_str(field, s)).transpose()
    };
    let times = match (
        time("creation_time", &l.creation_time),
        time("termination_time", &l.termination_time),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
    };
    Some(
        player_record(
            SNAKE,
            l.player_session_id.as_deref(),
            l.player_id.as_deref(),
            l.game_session_id.as_deref(),
            l.fleet_id.as_deref(),
            l.status.as_deref(),
            l.player_data.as_deref(),
            times,
        )
        .map(ImportRecord::PlayerSession),
    )
}

/// Parses one JSONL line.
pub fn parse_jsonl(line: &str) -> Result<ImportRecord, RecordError> {
    parse_player_line(line).unwrap_or_else(|| parse_general(line))
}

/// [`parse_jsonl`] through a `serde_json::Value`: every kind and naming.
fn parse_general(line: &str) -> Result<ImportRecord, RecordError> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("invalid record: expected a JSON object".into());
    };
    let f = Fields { map: &map };
    match f.str("kind")? {
        Some("game_session") => Ok(ImportRecord::GameSession(game_from_json(&f)?)),
        Some("player_session") => Ok(ImportRecord::PlayerSession(player_from_json(&f, SNAKE)?)),
        Some(other) => Err(format!(
            "kind: {other:?} is not game_session or player_session"
        )),
        None if map.contains_key("PlayerSessionId") || map.contains_key("PlayerId") => {
            Ok(ImportRecord::PlayerSession(player_from_json(&f, PASCAL)?))
        }
        None => Err(
            "kind: missing (and not a GameLift PlayerSession with PlayerSessionId/PlayerId)".into(),
        ),
    }
}

/// The columns of a CSV file, from its header row.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    /// Position of each of [`SNAKE`]'s fields.
    index: [Option<usize>; 8],
}

impl CsvColumns {
    /// Reads the header: `player_id` and `game_session_id` are required, unknown columns are
    /// refused (a typo would otherwise drop a field silently).
    pub fn from_header(header: &csv::StringRecord) -> Result<Self, RecordError> {
        let mut index = [None; 8];
        for (i, name) in header.iter().enumerate() {
            let name = name.trim();
            let Some(k) = SNAKE.iter().position(|n| *n == name) else {
                return Err(format!(
                    "header: unknown column {name:?} (expected {})",
                    SNAKE.join(", ")
                ));
            };
            if index[k].replace(i).is_some() {
                return Err(format!("header: column {name:?} appears twice"));
            }
        }
        for required in [1, 2] {
            if index[required].is_none() {
                return Err(format!("header: no {} column", SNAKE[required]));
            }
        }
        Ok(CsvColumns { index })
    }

    /// Parses one CSV row.
    pub fn parse(&self, row: &csv::StringRecord) -> Result<PlayerSessionRecord, RecordError> {
        let field = |k: usize| self.index[k].and_then(|i| row.get(i));
        let time = |k: usize| {
            field(k)
                .filter(|s| !s.trim().is_empty())
                .map(|s| match s.trim().parse::<f64>() {
                    Ok(n) => parse_time(SNAKE[k], &json!(n)),
                    Err(_) => parse_time_str(SNAKE[k], s),
                })
                .transpose()
        };
        player_record(
            SNAKE,
            field(0),
            field(1),
            field(2),
            field(3),
            field(4),
            field(5),
            (time(6)?, time(7)?),
        )
    }
}

/// The export (and import) form of a game session: one JSONL line's object.
pub fn game_session_json(g: &GameSession) -> Value {
    let mut v = json!({
        "kind": "game_session",
        "game_session_id": g.id().as_str(),
        "fleet_id": g.fleet_id().as_str(),
        "name": g.name.as_ref(),
        "ip_address": g.info.ip_address.as_ref(),
        "port": g.info.port,
        "maximum_player_session_count": g.maximum_player_session_count,
        "player_session_creation_policy": match g.creation_policy {
            CreationPolicy::AcceptAll => "ACCEPT_ALL",
            CreationPolicy::DenyAll => "DENY_ALL",
        },
        "status": g.status.as_str(),
        "labels": g.labels.as_ref(),
        "release": g.release.as_ref(),
        "environment": g.environment.as_ref(),
        "reservation_timeout_seconds": g.reservation_timeout.as_secs(),
        "heartbeat_timeout_seconds": g.heartbeat_timeout.map_or(0, |t| t.as_secs()),
        "creation_time": format_time(g.creation_time),
    });
    if let Some(t) = g.termination_time {
        v["termination_time"] = json!(format_time(t));
    }
    if let Some(r) = &g.termination_reason {
        v["termination_reason"] = json!(r.as_ref());
    }
    v
}

/// The export (and import) form of a player session: one JSONL line's object.
pub fn player_session_json(p: &PlayerSession) -> Value {
    let mut v = json!({
        "kind": "player_session",
        "player_session_id": p.id.to_string(),
        "player_id": p.player_id(),
        "game_session_id": p.game.id.as_str(),
        "fleet_id": p.game.fleet_id.as_str(),
        "status": p.status.as_str(),
        "creation_time": format_time(p.creation_time),
        "ip_address": p.game.ip_address.as_ref(),
        "port": p.game.port,
    });
    if let Some(t) = p.termination_time {
        v["termination_time"] = json!(format_time(t));
    }
    if let Some(d) = p.player_data() {
        v["player_data"] = json!(d);
    }
    v
}

/// The CSV header export writes.
pub const CSV_HEADER: [&str; 8] = SNAKE;

/// The CSV row of a player session, in [`CSV_HEADER`]'s order.
pub fn player_session_csv(p: &PlayerSession) -> [String; 8] {
    [
        p.id.to_string(),
        p.player_id().to_string(),
        p.game.id.to_string(),
        p.game.fleet_id.to_string(),
        p.status.as_str().to_string(),
        p.player_data().unwrap_or_default().to_string(),
        format_time(p.creation_time),
        p.termination_time.map(format_time).unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests;
