//! Conversions between protobuf messages and domain types.

use crate::{
    domain::{
        CreationPolicy, Error, GameSession, GameSessionStatus, PlayerSession, PlayerSessionStatus,
        PlayerStrings, Result,
    },
    proto,
};

pub use crate::wire::{creation_policy, timestamp};

pub fn player_session_status(s: PlayerSessionStatus) -> proto::PlayerSessionStatus {
    match s {
        PlayerSessionStatus::Reserved => proto::PlayerSessionStatus::Reserved,
        PlayerSessionStatus::Active => proto::PlayerSessionStatus::Active,
        PlayerSessionStatus::Completed => proto::PlayerSessionStatus::Completed,
        PlayerSessionStatus::TimedOut => proto::PlayerSessionStatus::Timedout,
    }
}

/// A status filter: UNSPECIFIED means any status.
pub fn status_filter(field: &str, v: i32) -> Result<Option<PlayerSessionStatus>> {
    match proto::PlayerSessionStatus::try_from(v) {
        Ok(proto::PlayerSessionStatus::Unspecified) => Ok(None),
        Ok(proto::PlayerSessionStatus::Reserved) => Ok(Some(PlayerSessionStatus::Reserved)),
        Ok(proto::PlayerSessionStatus::Active) => Ok(Some(PlayerSessionStatus::Active)),
        Ok(proto::PlayerSessionStatus::Completed) => Ok(Some(PlayerSessionStatus::Completed)),
        Ok(proto::PlayerSessionStatus::Timedout) => Ok(Some(PlayerSessionStatus::TimedOut)),
        Err(_) => Err(Error::invalid(field, format!("unknown status {v}"))),
    }
}

pub fn game_session_status(s: GameSessionStatus) -> proto::GameSessionStatus {
    match s {
        GameSessionStatus::Active => proto::GameSessionStatus::Active,
        GameSessionStatus::Terminated => proto::GameSessionStatus::Terminated,
        GameSessionStatus::Error => proto::GameSessionStatus::Error,
    }
}

pub fn parse_creation_policy(field: &str, v: i32) -> Result<CreationPolicy> {
    match proto::PlayerSessionCreationPolicy::try_from(v) {
        Ok(proto::PlayerSessionCreationPolicy::AcceptAll) => Ok(CreationPolicy::AcceptAll),
        Ok(proto::PlayerSessionCreationPolicy::DenyAll) => Ok(CreationPolicy::DenyAll),
        _ => Err(Error::invalid(
            field,
            "must be PLAYER_SESSION_CREATION_POLICY_ACCEPT_ALL or PLAYER_SESSION_CREATION_POLICY_DENY_ALL",
        )),
    }
}

pub fn game_session(g: &GameSession) -> proto::GameSession {
    proto::GameSession {
        game_session_id: g.id().to_string(),
        fleet_id: g.fleet_id().to_string(),
        name: g.name.to_string(),
        ip_address: g.info.ip_address.to_string(),
        port: u32::from(g.info.port),
        maximum_player_session_count: g.maximum_player_session_count,
        current_player_session_count: g.current_player_session_count,
        player_session_creation_policy: creation_policy(g.creation_policy) as i32,
        status: game_session_status(g.status) as i32,
        labels: g
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        release: g.release.to_string(),
        environment: g.environment.to_string(),
        reservation_timeout_seconds: u32::try_from(g.reservation_timeout.as_secs())
            .unwrap_or(u32::MAX),
        heartbeat_timeout_seconds: g
            .heartbeat_timeout
            .map_or(0, |t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX)),
        creation_time: Some(timestamp(g.creation_time)),
        termination_time: g.termination_time.map(timestamp),
        termination_reason: g
            .termination_reason
            .as_deref()
            .unwrap_or_default()
            .to_string(),
    }
}

pub fn player_session(p: &PlayerSession) -> proto::PlayerSession {
    proto::PlayerSession {
        player_session_id: p.id.to_string(),
        player_id: p.player_id().to_string(),
        game_session_id: p.game.id.to_string(),
        fleet_id: p.game.fleet_id.to_string(),
        status: player_session_status(p.status) as i32,
        creation_time: Some(timestamp(p.creation_time)),
        termination_time: p.termination_time.map(timestamp),
        ip_address: p.game.ip_address.to_string(),
        port: u32::from(p.game.port),
        player_data: p.player_data().unwrap_or_default().to_string(),
        reservation_deadline: (p.status == PlayerSessionStatus::Reserved)
            .then(|| timestamp(p.reservation_deadline)),
        errors: p.error_count(),
    }
}

/// Parses a party: 1 to `max` player ids, and player data keyed by player id (every key must be
/// one of the ids). Duplicate ids are rejected by the store.
pub fn party(
    player_ids: &[String],
    player_data: &std::collections::HashMap<String, String>,
    max: usize,
) -> Result<Vec<PlayerStrings>> {
    if player_ids.is_empty() || player_ids.len() > max {
        return Err(Error::invalid(
            "player_ids",
            format!("must hold 1 to {max} player ids, got {}", player_ids.len()),
        ));
    }
    if let Some(k) = player_data.keys().find(|k| !player_ids.contains(k)) {
        return Err(Error::invalid(
            "player_data",
            format!("key {k:?} is not one of player_ids"),
        ));
    }
    player_ids
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let data = player_data.get(p).map(String::as_str);
            let player = PlayerStrings::parse(&format!("player_ids[{i}]"), p, data)?;
            if let Some(d) = data {
                crate::domain::check_player_data(&format!("player_data[{p}]"), d)?;
            }
            Ok(player)
        })
        .collect()
}

/// Parses a label selector: at most 64 non-empty keys, each pair within the label limits.
pub fn label_selector(
    field: &str,
    m: std::collections::HashMap<String, String>,
) -> Result<crate::store::LabelSelector> {
    use crate::domain::{check_text, limits};
    if m.len() > limits::SELECTOR_MAX {
        return Err(Error::invalid(
            field,
            format!("at most {} pairs, got {}", limits::SELECTOR_MAX, m.len()),
        ));
    }
    for (k, v) in &m {
        if k.is_empty() {
            return Err(Error::invalid(field, "keys must not be empty"));
        }
        check_text(field, k, limits::LABEL_KEY_MAX)?;
        check_text(field, v, limits::LABEL_VALUE_MAX)?;
    }
    Ok(m.into_iter().collect())
}

/// An optional fleet id filter: empty means any fleet.
pub fn optional_fleet(field: &str, s: &str) -> Result<Option<crate::domain::FleetId>> {
    match s {
        "" => Ok(None),
        f => crate::domain::FleetId::parse(field, f).map(Some),
    }
}
