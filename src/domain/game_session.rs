//! Game sessions: a match hosted by one game server process.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use super::{ids::check_text, limits, EndCause, Error, FleetId, GameSessionId, Result, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GameSessionStatus {
    Active,
    Terminated,
    Error,
}

impl GameSessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GameSessionStatus::Active => "ACTIVE",
            GameSessionStatus::Terminated => "TERMINATED",
            GameSessionStatus::Error => "ERROR",
        }
    }
}

impl fmt::Display for GameSessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether new player sessions may be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreationPolicy {
    AcceptAll,
    DenyAll,
}

/// The part of a game session that never changes; shared (by `Arc`) with its player sessions so
/// they can show fleet, address and port without a lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct GameSessionInfo {
    pub id: GameSessionId,
    pub fleet_id: FleetId,
    pub ip_address: Box<str>,
    pub port: u16,
}

/// A validated RegisterGameSession request.
#[derive(Debug, Clone)]
pub struct RegisterGameSession {
    pub fleet_id: FleetId,
    /// `None`: generate `gsess-<uuid>`.
    pub game_session_id: Option<GameSessionId>,
    pub name: String,
    pub ip_address: String,
    pub port: u16,
    pub maximum_player_session_count: u32,
    pub labels: BTreeMap<String, String>,
    pub release: String,
    pub environment: String,
    /// `None`: the daemon default.
    pub reservation_timeout: Option<Duration>,
    /// `None`: no heartbeats expected.
    pub heartbeat_timeout: Option<Duration>,
}

impl RegisterGameSession {
    /// Validates the free-form parts of a registration (ids are validated when parsed).
    pub fn validate(&self) -> Result<()> {
        check_text("name", &self.name, limits::NAME_MAX)?;
        check_text("ip_address", &self.ip_address, limits::IP_ADDRESS_MAX)?;
        check_text("release", &self.release, limits::RELEASE_MAX)?;
        check_text("environment", &self.environment, limits::ENVIRONMENT_MAX)?;
        check_capacity(
            "maximum_player_session_count",
            self.maximum_player_session_count,
        )?;
        if self.labels.len() > limits::LABELS_MAX {
            return Err(Error::invalid(
                "labels",
                format!(
                    "at most {} labels, got {}",
                    limits::LABELS_MAX,
                    self.labels.len()
                ),
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() {
                return Err(Error::invalid("labels", "label keys must not be empty"));
            }
            check_text("labels", k, limits::LABEL_KEY_MAX)?;
            check_text("labels", v, limits::LABEL_VALUE_MAX)?;
        }
        Ok(())
    }
}

/// Checks a seat count is within 1..=1000 (without a field name: config files).
pub fn check_capacity_value(n: u32) -> std::result::Result<(), String> {
    check_capacity("maximum_player_session_count", n).map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Checks a maximum_player_session_count: 1..=1000.
pub(crate) fn check_capacity(field: &str, n: u32) -> Result<()> {
    if n == 0 || n > limits::MAX_PLAYERS_PER_GAME_SESSION {
        return Err(Error::invalid(
            field,
            format!(
                "must be between 1 and {}, got {n}",
                limits::MAX_PLAYERS_PER_GAME_SESSION
            ),
        ));
    }
    Ok(())
}

/// A game session as callers see it.
#[derive(Debug, Clone)]
pub struct GameSession {
    pub info: Arc<GameSessionInfo>,
    pub name: Arc<str>,
    pub maximum_player_session_count: u32,
    /// RESERVED + ACTIVE player sessions.
    pub current_player_session_count: u32,
    pub creation_policy: CreationPolicy,
    pub status: GameSessionStatus,
    pub labels: Arc<BTreeMap<String, String>>,
    pub release: Arc<str>,
    pub environment: Arc<str>,
    pub reservation_timeout: Duration,
    /// `None`: no heartbeats expected.
    pub heartbeat_timeout: Option<Duration>,
    /// When the game session goes to ERROR unless it heartbeats (ACTIVE with heartbeats only).
    pub heartbeat_deadline: Option<Timestamp>,
    pub creation_time: Timestamp,
    pub termination_time: Option<Timestamp>,
    pub termination_reason: Option<Arc<str>>,
    /// Why it ended (set with the termination time).
    pub end_cause: Option<EndCause>,
}

impl GameSession {
    pub fn id(&self) -> &GameSessionId {
        &self.info.id
    }
    pub fn fleet_id(&self) -> &FleetId {
        &self.info.fleet_id
    }
    pub fn is_active(&self) -> bool {
        self.status == GameSessionStatus::Active
    }
    pub fn free_seats(&self) -> u32 {
        self.maximum_player_session_count
            .saturating_sub(self.current_player_session_count)
    }

    /// Checks that `requested` new player sessions may be reserved (status, policy, seats).
    pub fn check_can_reserve(&self, requested: u32) -> Result<()> {
        if !self.is_active() {
            return Err(Error::GameSessionNotActive {
                id: self.id().clone(),
                status: self.status,
            });
        }
        if self.creation_policy == CreationPolicy::DenyAll {
            return Err(Error::CreationDenied(self.id().clone()));
        }
        if self.free_seats() < requested {
            return Err(Error::GameSessionFull {
                id: self.id().clone(),
                free: self.free_seats(),
                requested,
            });
        }
        Ok(())
    }

    pub fn check_active(&self) -> Result<()> {
        if self.is_active() {
            Ok(())
        } else {
            Err(Error::GameSessionNotActive {
                id: self.id().clone(),
                status: self.status,
            })
        }
    }

    /// Validates a new capacity against the current count.
    pub fn check_resize(&self, requested: u32) -> Result<()> {
        check_capacity("maximum_player_session_count", requested)?;
        if requested < self.current_player_session_count {
            return Err(Error::CapacityBelowCurrent {
                id: self.id().clone(),
                requested,
                current: self.current_player_session_count,
            });
        }
        Ok(())
    }

    /// Ends the game session (TERMINATED, or ERROR when it crashed or lost its heartbeat).
    /// Returns false if it had already ended (ending is idempotent).
    pub fn end(&mut self, at: Timestamp, cause: EndCause, reason: Arc<str>) -> bool {
        if !self.is_active() {
            return false;
        }
        self.status = cause.status();
        self.end_cause = Some(cause);
        self.termination_time = Some(at);
        self.termination_reason = Some(reason);
        self.heartbeat_deadline = None;
        true
    }
}
