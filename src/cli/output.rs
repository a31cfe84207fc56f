//! Tables and JSON for the client subcommands.

use serde_json::{json, Map, Value};

use crate::{
    grpc::from_timestamp,
    proto::{self, GameSessionStatus, PlayerSessionCreationPolicy, PlayerSessionStatus},
};

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| from_timestamp(t).to_string()).unwrap_or_default()
}

fn status_name(v: i32) -> &'static str {
    match PlayerSessionStatus::try_from(v) {
        Ok(PlayerSessionStatus::Reserved) => "RESERVED",
        Ok(PlayerSessionStatus::Active) => "ACTIVE",
        Ok(PlayerSessionStatus::Completed) => "COMPLETED",
        Ok(PlayerSessionStatus::Timedout) => "TIMEDOUT",
        _ => "UNSPECIFIED",
    }
}

fn game_status_name(v: i32) -> &'static str {
    match GameSessionStatus::try_from(v) {
        Ok(GameSessionStatus::Active) => "ACTIVE",
        Ok(GameSessionStatus::Terminated) => "TERMINATED",
        Ok(GameSessionStatus::Error) => "ERROR",
        _ => "UNSPECIFIED",
    }
}

fn policy_name(v: i32) -> &'static str {
    match PlayerSessionCreationPolicy::try_from(v) {
        Ok(PlayerSessionCreationPolicy::AcceptAll) => "ACCEPT_ALL",
        Ok(PlayerSessionCreationPolicy::DenyAll) => "DENY_ALL",
        _ => "UNSPECIFIED",
    }
}

fn opt_time_json(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(from_timestamp(t).to_string())
    })
}

/// A game session as JSON with the API's snake_case names.
pub fn game_session_json(g: &proto::GameSession) -> Value {
    json!({
        "game_session_id": g.game_session_id,
        "fleet_id": g.fleet_id,
        "name": g.name,
        "ip_address": g.ip_address,
        "port": g.port,
        "maximum_player_session_count": g.maximum_player_session_count,
        "current_player_session_count": g.current_player_session_count,
        "player_session_creation_policy": policy_name(g.player_session_creation_policy),
        "status": game_status_name(g.status),
        "labels": g.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>(),
        "release": g.release,
        "environment": g.environment,
        "reservation_timeout_seconds": g.reservation_timeout_seconds,
        "heartbeat_timeout_seconds": g.heartbeat_timeout_seconds,
        "creation_time": opt_time_json(g.creation_time.as_ref()),
        "termination_time": opt_time_json(g.termination_time.as_ref()),
        "termination_reason": g.termination_reason,
    })
}

/// A player session as JSON with the API's snake_case names.
pub fn player_session_json(p: &proto::PlayerSession) -> Value {
    json!({
        "player_session_id": p.player_session_id,
        "player_id": p.player_id,
        "game_session_id": p.game_session_id,
        "fleet_id": p.fleet_id,
        "status": status_name(p.status),
        "creation_time": opt_time_json(p.creation_time.as_ref()),
        "termination_time": opt_time_json(p.termination_time.as_ref()),
        "reservation_deadline": opt_time_json(p.reservation_deadline.as_ref()),
        "ip_address": p.ip_address,
        "port": p.port,
        "player_data": p.player_data,
    })
}

pub fn print_game_session(g: &proto::GameSession, as_json: bool) {
    if as_json {
        println!("{}", game_session_json(g));
        return;
    }
    let labels = g
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let rows = [
        ("game_session_id", g.game_session_id.clone()),
        ("fleet_id", g.fleet_id.clone()),
        ("name", g.name.clone()),
        ("status", game_status_name(g.status).to_string()),
        ("address", format!("{}:{}", g.ip_address, g.port)),
        (
            "players",
            format!(
                "{}/{}",
                g.current_player_session_count, g.maximum_player_session_count
            ),
        ),
        (
            "policy",
            policy_name(g.player_session_creation_policy).to_string(),
        ),
        ("labels", labels),
        ("release", g.release.clone()),
        ("environment", g.environment.clone()),
        (
            "reservation_timeout",
            format!("{}s", g.reservation_timeout_seconds),
        ),
        (
            "heartbeat_timeout",
            format!("{}s", g.heartbeat_timeout_seconds),
        ),
        ("created", time(g.creation_time.as_ref())),
        ("terminated", time(g.termination_time.as_ref())),
        ("reason", g.termination_reason.clone()),
    ];
    for (k, v) in rows {
        println!("{k:<20} {v}");
    }
}

pub fn print_player_sessions(
    sessions: &[proto::PlayerSession],
    next_page_token: &str,
    as_json: bool,
) {
    if as_json {
        let v = json!({
            "player_sessions": sessions.iter().map(player_session_json).collect::<Vec<_>>(),
            "next_page_token": next_page_token,
        });
        println!("{v}");
        return;
    }
    let rows = sessions
        .iter()
        .map(|p| {
            vec![
                p.player_session_id.clone(),
                p.player_id.clone(),
                status_name(p.status).to_string(),
                p.game_session_id.clone(),
                time(p.creation_time.as_ref()),
                time(p.termination_time.as_ref()),
            ]
        })
        .collect();
    print_table(
        &[
            "PLAYER_SESSION_ID",
            "PLAYER_ID",
            "STATUS",
            "GAME_SESSION_ID",
            "CREATED",
            "TERMINATED",
        ],
        rows,
    );
    if !next_page_token.is_empty() {
        println!("next page: --page-token {next_page_token}");
    }
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&mut header.iter().copied()));
    for r in &rows {
        println!("{}", line(&mut r.iter().map(String::as_str)));
    }
}

/// Game sessions as a table (one row each), or as JSON with the page token.
pub fn print_game_sessions(games: &[proto::GameSession], next_page_token: &str, as_json: bool) {
    if as_json {
        let v = json!({
            "game_sessions": games.iter().map(game_session_json).collect::<Vec<_>>(),
            "next_page_token": next_page_token,
        });
        println!("{v}");
        return;
    }
    let rows = games
        .iter()
        .map(|g| {
            vec![
                g.game_session_id.clone(),
                g.name.clone(),
                format!(
                    "{}/{}",
                    g.current_player_session_count, g.maximum_player_session_count
                ),
                policy_name(g.player_session_creation_policy).to_string(),
                g.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                time(g.creation_time.as_ref()),
            ]
        })
        .collect();
    print_table(
        &[
            "GAME_SESSION_ID",
            "NAME",
            "PLAYERS",
            "POLICY",
            "LABELS",
            "CREATED",
        ],
        rows,
    );
    if !next_page_token.is_empty() {
        println!("next page: --page-token {next_page_token}");
    }
}

/// Fleet utilization as a table or JSON.
pub fn print_utilization(fleets: &[proto::FleetUtilization], as_json: bool) {
    if as_json {
        let v: Vec<Value> = fleets
            .iter()
            .map(|f| {
                json!({
                    "fleet_id": f.fleet_id,
                    "active_game_session_count": f.active_game_session_count,
                    "current_player_session_count": f.current_player_session_count,
                    "reserved_player_session_count": f.reserved_player_session_count,
                    "active_player_session_count": f.active_player_session_count,
                    "maximum_player_session_count": f.maximum_player_session_count,
                    "available_player_session_count": f.available_player_session_count,
                })
            })
            .collect();
        println!("{}", json!({ "fleet_utilization": v }));
        return;
    }
    let rows = fleets
        .iter()
        .map(|f| {
            vec![
                f.fleet_id.clone(),
                f.active_game_session_count.to_string(),
                f.current_player_session_count.to_string(),
                f.reserved_player_session_count.to_string(),
                f.active_player_session_count.to_string(),
                f.maximum_player_session_count.to_string(),
                f.available_player_session_count.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "FLEET_ID",
            "GAME_SESSIONS",
            "CURRENT",
            "RESERVED",
            "ACTIVE",
            "MAXIMUM",
            "AVAILABLE",
        ],
        rows,
    );
}

/// One WatchFleet event per line: as JSON, or `sequence type game session players`.
pub fn print_fleet_event(e: &proto::FleetEvent, as_json: bool) {
    let kind = match proto::FleetEventType::try_from(e.r#type) {
        Ok(proto::FleetEventType::Snapshot) => "SNAPSHOT",
        Ok(proto::FleetEventType::SnapshotComplete) => "SNAPSHOT_COMPLETE",
        Ok(proto::FleetEventType::Created) => "CREATED",
        Ok(proto::FleetEventType::Updated) => "UPDATED",
        Ok(proto::FleetEventType::Ended) => "ENDED",
        _ => "UNSPECIFIED",
    };
    if as_json {
        let v = json!({
            "sequence": e.sequence,
            "type": kind,
            "game_session": e.game_session.as_ref().map_or(Value::Null, game_session_json),
        });
        println!("{v}");
        return;
    }
    match &e.game_session {
        Some(g) => println!(
            "{:>8}  {kind:<17}  {}  {}/{}  {}  {}",
            e.sequence,
            g.game_session_id,
            g.current_player_session_count,
            g.maximum_player_session_count,
            policy_name(g.player_session_creation_policy),
            game_status_name(g.status),
        ),
        None => println!("{:>8}  {kind}", e.sequence),
    }
}

fn session_status_name(v: i32) -> &'static str {
    match proto::SessionStatus::try_from(v) {
        Ok(proto::SessionStatus::Ok) => "ok",
        Ok(proto::SessionStatus::Exited) => "exited",
        Ok(proto::SessionStatus::Crashed) => "crashed",
        Ok(proto::SessionStatus::Abnormal) => "abnormal",
        _ => "unspecified",
    }
}

/// Release health as a summary and a per-minute table, or JSON.
pub fn print_release_health(h: &proto::ReleaseHealth, as_json: bool) {
    let counts = |total: u64, exited: u64, errored: u64, abnormal: u64, crashed: u64, rate: f64| {
        json!({"total": total, "exited": exited, "errored": errored, "abnormal": abnormal,
               "crashed": crashed, "crash_free_rate": rate})
    };
    if as_json {
        let mut v = counts(
            h.total,
            h.exited,
            h.errored,
            h.abnormal,
            h.crashed,
            h.crash_free_rate,
        );
        v["release"] = json!(h.release);
        v["buckets"] = h
            .buckets
            .iter()
            .map(|b| {
                let mut c = counts(
                    b.total,
                    b.exited,
                    b.errored,
                    b.abnormal,
                    b.crashed,
                    b.crash_free_rate,
                );
                c["started"] = opt_time_json(b.started.as_ref());
                c
            })
            .collect::<Vec<_>>()
            .into();
        println!("{v}");
        return;
    }
    println!(
        "release {}: {} sessions, crash-free {:.2} %, exited {} (errored {}), abnormal {}, crashed {}",
        h.release,
        h.total,
        h.crash_free_rate * 100.0,
        h.exited,
        h.errored,
        h.abnormal,
        h.crashed
    );
    let rows = h
        .buckets
        .iter()
        .map(|b| {
            vec![
                time(b.started.as_ref()),
                b.total.to_string(),
                b.exited.to_string(),
                b.errored.to_string(),
                b.abnormal.to_string(),
                b.crashed.to_string(),
                format!("{:.2}", b.crash_free_rate * 100.0),
            ]
        })
        .collect();
    print_table(
        &[
            "MINUTE",
            "TOTAL",
            "EXITED",
            "ERRORED",
            "ABNORMAL",
            "CRASHED",
            "CRASH_FREE_%",
        ],
        rows,
    );
}

/// One session health update per line: JSON with Sentry's keys, or a short line.
pub fn print_session_update(u: &proto::SessionUpdate, as_json: bool) {
    let attrs = u.attributes.clone().unwrap_or_default();
    if as_json {
        let v = json!({
            "sid": u.session_id,
            "did": u.distinct_id,
            "seq": u.sequence,
            "init": u.init,
            "timestamp": opt_time_json(u.timestamp.as_ref()),
            "started": opt_time_json(u.started.as_ref()),
            "duration": u.duration_seconds,
            "status": session_status_name(u.status),
            "errors": u.errors,
            "attrs": {"release": attrs.release, "environment": attrs.environment},
            "player_session_id": u.player_session_id,
            "game_session_id": u.game_session_id,
            "fleet_id": u.fleet_id,
        });
        println!("{v}");
        return;
    }
    println!(
        "{:>8}  {:<8}  {}{}  errors={}  {}  {}",
        u.sequence,
        session_status_name(u.status),
        u.player_session_id,
        if u.init { " (init)" } else { "" },
        u.errors,
        attrs.release,
        u.game_session_id
    );
}
