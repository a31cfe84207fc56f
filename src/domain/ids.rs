//! Validated identifiers. Parsing takes the request field name so errors can name it.

use std::{fmt, sync::Arc};

use uuid::Uuid;

use super::{limits, Error, Result};

fn check_len(field: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let n = s.chars().count();
    if n > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters, got {n}"),
        ));
    }
    Ok(())
}

/// Checks a free-text field: at most `max` characters, no control characters.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters, got {n}"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Identifier of a game session: 1-48 characters of `[a-zA-Z0-9-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GameSessionId(Arc<str>);

impl GameSessionId {
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        Self::validate(field, s)?;
        Ok(GameSessionId(s.into()))
    }

    /// Checks `s` is a valid game session id without making one.
    pub fn validate(field: &str, s: &str) -> Result<()> {
        check_len(field, s, limits::GAME_SESSION_ID_MAX)?;
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(Error::invalid(
                field,
                format!("character {c:?} is not allowed (only a-z, A-Z, 0-9 and '-')"),
            ));
        }
        Ok(())
    }

    /// The empty id: sorts before every valid id (a lower bound for range queries). Never a
    /// real game session's id.
    pub(crate) fn min() -> Self {
        GameSessionId("".into())
    }

    /// A fresh `gsess-<uuid>` id.
    pub fn generate() -> Self {
        GameSessionId(format!("gsess-{}", Uuid::new_v4()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by game session id can be read with a `&str` (the same hash and equality).
impl std::borrow::Borrow<str> for GameSessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Identifier of a player session: `psess-<uuid>`. Stored as the 128-bit UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayerSessionId(Uuid);

impl PlayerSessionId {
    pub const PREFIX: &'static str = "psess-";

    pub fn parse(field: &str, s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        let rest = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| Error::invalid(field, "must have the form psess-<uuid>"))?;
        Uuid::try_parse(rest)
            .map(PlayerSessionId)
            .map_err(|_| Error::invalid(field, "must have the form psess-<uuid>"))
    }

    pub fn generate() -> Self {
        PlayerSessionId(Uuid::new_v4())
    }

    pub const fn from_uuid(u: Uuid) -> Self {
        PlayerSessionId(u)
    }

    /// The UUID inside the id (the Sentry session id of this player session).
    pub const fn uuid(self) -> Uuid {
        self.0
    }
}

/// Identifier of a player: 1-1024 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayerId(Arc<str>);

impl PlayerId {
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        Self::validate(field, s)?;
        Ok(PlayerId(s.into()))
    }
    /// Checks `s` is a valid player id without making one.
    pub fn validate(field: &str, s: &str) -> Result<()> {
        check_len(field, s, limits::PLAYER_ID_MAX)?;
        check_text(field, s, limits::PLAYER_ID_MAX)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifier of a fleet: 1-128 characters of `[a-zA-Z0-9._:/-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FleetId(Arc<str>);

impl FleetId {
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        check_len(field, s, limits::FLEET_ID_MAX)?;
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
        {
            return Err(Error::invalid(
                field,
                format!("character {c:?} is not allowed (only a-z, A-Z, 0-9 and . _ : / -)"),
            ));
        }
        Ok(FleetId(s.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Client-chosen key that makes a reservation request safe to retry: 1-128 printable characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// `None` for an empty string (no key given).
    pub fn parse_optional(field: &str, s: &str) -> Result<Option<Self>> {
        if s.is_empty() {
            return Ok(None);
        }
        check_len(field, s, limits::IDEMPOTENCY_KEY_MAX)?;
        check_text(field, s, limits::IDEMPOTENCY_KEY_MAX)?;
        Ok(Some(IdempotencyKey(s.into())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Debug::fmt(self.as_str(), f) }
        }
    )*};
}
display_as_str!(GameSessionId, PlayerId, FleetId, IdempotencyKey);

impl fmt::Display for PlayerSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0.as_hyphenated())
    }
}
impl fmt::Debug for PlayerSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_session_ids() {
        assert!(GameSessionId::parse("id", "abc-DEF-123").is_ok());
        assert!(GameSessionId::parse("id", &"a".repeat(48)).is_ok());
        let e = GameSessionId::parse("game_session_id", &"a".repeat(49)).unwrap_err();
        assert!(e.to_string().contains("game_session_id"), "{e}");
        assert!(GameSessionId::parse("id", "").is_err());
        assert!(GameSessionId::parse("id", "a_b").is_err());
        assert!(GameSessionId::generate().as_str().starts_with("gsess-"));
    }

    #[test]
    fn player_session_ids_round_trip() {
        let id = PlayerSessionId::generate();
        let s = id.to_string();
        assert!(s.starts_with("psess-"));
        assert_eq!(PlayerSessionId::parse("f", &s).unwrap(), id);
        assert!(PlayerSessionId::parse("f", "psess-nope").is_err());
        assert!(PlayerSessionId::parse("f", &id.uuid().to_string()).is_err());
    }

    #[test]
    fn player_ids_and_keys() {
        assert!(PlayerId::parse("p", &"x".repeat(1024)).is_ok());
        assert!(PlayerId::parse("p", &"x".repeat(1025)).is_err());
        assert!(PlayerId::parse("p", "a\nb").is_err());
        assert_eq!(IdempotencyKey::parse_optional("k", "").unwrap(), None);
        assert!(IdempotencyKey::parse_optional("k", &"k".repeat(129)).is_err());
        assert!(FleetId::parse("f", "fleet-1/eu_west.2").is_ok());
        assert!(FleetId::parse("f", "fleet 1").is_err());
    }
}
