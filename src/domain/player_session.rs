//! Player sessions and their state machine.
//!
//! ```text
//!   RESERVED --accept--> ACTIVE --complete--> COMPLETED
//!   RESERVED --complete (removed / game session ended)--> COMPLETED
//!   RESERVED --time out--> TIMEDOUT
//! ```
//! COMPLETED and TIMEDOUT are terminal: nothing changes them again.

use std::{fmt, sync::Arc};

use super::{
    EndReason, Error, GameSessionInfo, Lsn, PlayerId, PlayerSessionId, Result, Timestamp, LSN_MAX,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlayerSessionStatus {
    Reserved,
    Active,
    Completed,
    TimedOut,
}

impl PlayerSessionStatus {
    /// RESERVED and ACTIVE hold a seat.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            PlayerSessionStatus::Reserved | PlayerSessionStatus::Active
        )
    }
    pub fn is_terminal(self) -> bool {
        !self.is_live()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PlayerSessionStatus::Reserved => "RESERVED",
            PlayerSessionStatus::Active => "ACTIVE",
            PlayerSessionStatus::Completed => "COMPLETED",
            PlayerSessionStatus::TimedOut => "TIMEDOUT",
        }
    }
    /// The status named `s` (case-insensitive: `RESERVED`, `ACTIVE`, `COMPLETED`, `TIMEDOUT`).
    pub fn parse(s: &str) -> Option<Self> {
        [
            PlayerSessionStatus::Reserved,
            PlayerSessionStatus::Active,
            PlayerSessionStatus::Completed,
            PlayerSessionStatus::TimedOut,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for PlayerSessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One player's seat in one game session.
#[derive(Debug, Clone)]
pub struct PlayerSession {
    pub id: PlayerSessionId,
    /// The player's id and player data, in one allocation.
    pub player: PlayerStrings,
    /// The game session's fixed part: id, fleet, address, port.
    pub game: Arc<GameSessionInfo>,
    pub status: PlayerSessionStatus,
    pub creation_time: Timestamp,
    pub termination_time: Option<Timestamp>,
    /// When a RESERVED session times out.
    pub reservation_deadline: Timestamp,
    /// When the game server accepted the player.
    pub accepted_at: Option<Timestamp>,
    /// Why a COMPLETED session ended.
    pub end_reason: Option<EndReason>,
    /// The journal records of this session (for its history).
    pub lsns: SessionLsns,
    /// Errors reported for the session (ReportPlayerSessionError). Their log (the recent
    /// reports, for the history) is kept beside the record, by the store: most sessions never
    /// report one, and a pointer here would cost every session a larger allocation.
    pub error_count: u32,
}

/// A player session's player id and optional player data, kept in one heap allocation: the
/// id, then (when there is player data) a NUL and the data. A valid player id holds no control
/// character, so the first NUL always ends it. One 16-byte field and one allocation per session
/// instead of two reference-counted strings (48 bytes a session less at 64 bytes of data).
#[derive(Clone, PartialEq, Eq)]
pub struct PlayerStrings(Box<str>);

impl PlayerStrings {
    /// `player`'s id with `data` (`None` or empty: no player data).
    pub fn new(player: &PlayerId, data: Option<&str>) -> Self {
        Self::from_valid(player.as_str(), data)
    }

    /// Validates `player_id` (as [`PlayerId::parse`] does, naming `field`) and keeps it with
    /// `data`, without an intermediate [`PlayerId`].
    pub fn parse(field: &str, player_id: &str, data: Option<&str>) -> Result<Self> {
        PlayerId::validate(field, player_id)?;
        Ok(Self::from_valid(player_id, data))
    }

    fn from_valid(player_id: &str, data: Option<&str>) -> Self {
        match data.filter(|d| !d.is_empty()) {
            None => PlayerStrings(player_id.into()),
            Some(d) => {
                let mut s = String::with_capacity(player_id.len() + 1 + d.len());
                s.push_str(player_id);
                s.push('\0');
                s.push_str(d);
                PlayerStrings(s.into_boxed_str())
            }
        }
    }

    fn split(&self) -> (&str, Option<&str>) {
        match self.0.split_once('\0') {
            None => (&self.0, None),
            Some((id, data)) => (id, Some(data)),
        }
    }

    /// The player id.
    pub fn player_id(&self) -> &str {
        self.split().0
    }

    /// The player data, if any.
    pub fn player_data(&self) -> Option<&str> {
        self.split().1
    }

    /// Whether this is `player`'s.
    pub fn is(&self, player: &str) -> bool {
        self.player_id() == player
    }
}

impl fmt::Debug for PlayerStrings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, data) = self.split();
        f.debug_struct("PlayerStrings")
            .field("player_id", &id)
            .field("player_data", &data)
            .finish()
    }
}

/// The errors reported for one player session (their count is the record's
/// [`PlayerSession::error_count`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorLog {
    /// LSN of the last report (replay applies a report only once).
    pub last_lsn: Lsn,
    /// The most recent reports, at most [`ErrorLog::KEPT`], oldest first.
    pub recent: Vec<ErrorReport>,
}

impl ErrorLog {
    /// Reports kept with their message (the count keeps counting).
    pub const KEPT: usize = 16;
}

/// One reported error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    pub lsn: Lsn,
    pub at: Timestamp,
    pub message: Arc<str>,
}

/// LSNs of the journal records of one player session (0 = no such record), 48 bits each
/// ([`LSN_MAX`]): 18 bytes instead of 24, which with the rest of [`PlayerSession`] is what
/// keeps the record in a 96-byte allocation instead of a 112-byte one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLsns {
    /// The reservation's, acceptance's and end's LSNs, three 16-bit words each, high word
    /// first (16-bit words, so the struct aligns to 2 and takes 18 bytes, not 20).
    words: [u16; 9],
}

impl SessionLsns {
    /// A session's LSNs (each at most [`LSN_MAX`]; the journal never assigns a larger one).
    pub fn new(reserved: Lsn, accepted: Lsn, ended: Lsn) -> Self {
        let mut lsns = SessionLsns::default();
        lsns.set(0, reserved);
        lsns.set(1, accepted);
        lsns.set(2, ended);
        lsns
    }

    fn get(&self, i: usize) -> Lsn {
        self.words[3 * i..3 * i + 3]
            .iter()
            .fold(0, |lsn, w| lsn << 16 | Lsn::from(*w))
    }

    fn set(&mut self, i: usize, lsn: Lsn) {
        debug_assert!(lsn <= LSN_MAX, "LSN {lsn} beyond 48 bits");
        for (j, w) in self.words[3 * i..3 * i + 3].iter_mut().enumerate() {
            *w = (lsn >> (32 - 16 * j)) as u16;
        }
    }

    /// The reservation's record.
    pub fn reserved(&self) -> Lsn {
        self.get(0)
    }

    /// The acceptance's record (0: not accepted).
    pub fn accepted(&self) -> Lsn {
        self.get(1)
    }

    /// The record that ended the session (0: not ended).
    pub fn ended(&self) -> Lsn {
        self.get(2)
    }

    pub fn set_reserved(&mut self, lsn: Lsn) {
        self.set(0, lsn);
    }

    pub fn set_accepted(&mut self, lsn: Lsn) {
        self.set(1, lsn);
    }

    pub fn set_ended(&mut self, lsn: Lsn) {
        self.set(2, lsn);
    }
}

/// Outcome of a state-machine step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The session changed state.
    Changed,
    /// The request was already satisfied; nothing changed (idempotent repeat).
    Unchanged,
}

impl PlayerSession {
    /// A new RESERVED player session of `player` in the game session `game`, created at
    /// `created`, to be accepted by `deadline` (no LSNs yet).
    pub fn reserved(
        id: PlayerSessionId,
        player: PlayerStrings,
        game: Arc<GameSessionInfo>,
        created: Timestamp,
        deadline: Timestamp,
    ) -> Self {
        PlayerSession {
            id,
            player,
            game,
            status: PlayerSessionStatus::Reserved,
            creation_time: created,
            termination_time: None,
            reservation_deadline: deadline,
            accepted_at: None,
            end_reason: None,
            lsns: SessionLsns::default(),
            error_count: 0,
        }
    }

    /// The player's id.
    pub fn player_id(&self) -> &str {
        self.player.player_id()
    }

    /// The player data given at reservation, if any.
    pub fn player_data(&self) -> Option<&str> {
        self.player.player_data()
    }

    /// RESERVED -> ACTIVE. ACTIVE stays ACTIVE (a repeated accept). Terminal: an error naming the status.
    pub fn accept(&mut self, at: Timestamp) -> Result<Step> {
        match self.status {
            PlayerSessionStatus::Reserved => {
                self.status = PlayerSessionStatus::Active;
                self.accepted_at = Some(at);
                Ok(Step::Changed)
            }
            PlayerSessionStatus::Active => Ok(Step::Unchanged),
            status => Err(Error::PlayerSessionNotReserved {
                id: self.id,
                status,
            }),
        }
    }

    /// RESERVED or ACTIVE -> COMPLETED at `at`. Terminal sessions are left unchanged.
    pub fn complete(&mut self, at: Timestamp, reason: EndReason) -> Step {
        if self.status.is_terminal() {
            return Step::Unchanged;
        }
        self.status = PlayerSessionStatus::Completed;
        self.termination_time = Some(at);
        self.end_reason = Some(reason);
        Step::Changed
    }

    /// Errors reported so far.
    pub fn error_count(&self) -> u32 {
        self.error_count
    }

    /// Checks an error may be reported: only while RESERVED or ACTIVE (nothing follows a
    /// terminal state).
    pub fn check_can_report_error(&self) -> Result<()> {
        if self.status.is_terminal() {
            return Err(Error::PlayerSessionEnded {
                id: self.id,
                status: self.status,
            });
        }
        Ok(())
    }

    /// Records an error journaled at `lsn` in the session's `log`; a report at or before the
    /// last one applied is ignored (replay over a snapshot that already has it). Returns
    /// whether it counted.
    pub fn record_error(
        &mut self,
        log: &mut ErrorLog,
        lsn: Lsn,
        at: Timestamp,
        message: Arc<str>,
    ) -> bool {
        if lsn != 0 && lsn <= log.last_lsn {
            return false;
        }
        self.error_count = self.error_count.saturating_add(1);
        log.last_lsn = lsn;
        if log.recent.len() == ErrorLog::KEPT {
            log.recent.remove(0);
        }
        log.recent.push(ErrorReport { lsn, at, message });
        true
    }

    /// RESERVED -> TIMEDOUT if the deadline has passed at `now`; the termination time is the
    /// deadline itself, however late the sweeper runs.
    pub fn time_out(&mut self, now: Timestamp) -> Step {
        if self.status != PlayerSessionStatus::Reserved || self.reservation_deadline > now {
            return Step::Unchanged;
        }
        self.status = PlayerSessionStatus::TimedOut;
        self.termination_time = Some(self.reservation_deadline);
        Step::Changed
    }
}

/// Parses optional player data: empty means none; at most 2048 characters.
pub fn parse_player_data(field: &str, s: &str) -> Result<Option<Arc<str>>> {
    check_player_data(field, s)?;
    Ok((!s.is_empty()).then(|| s.into()))
}

/// Checks player data (empty means none) is at most 2048 characters.
pub fn check_player_data(field: &str, s: &str) -> Result<()> {
    if s.len() <= super::limits::PLAYER_DATA_MAX {
        return Ok(());
    }
    let n = s.chars().count();
    if n > super::limits::PLAYER_DATA_MAX {
        return Err(Error::invalid(
            field,
            format!(
                "player_data longer than {} characters ({n})",
                super::limits::PLAYER_DATA_MAX
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FleetId, GameSessionId};

    fn session() -> PlayerSession {
        PlayerSession {
            id: PlayerSessionId::generate(),
            player: PlayerStrings::parse("p", "player-1", None).unwrap(),
            game: Arc::new(GameSessionInfo {
                id: GameSessionId::parse("g", "gs-1").unwrap(),
                fleet_id: FleetId::parse("f", "fleet-1").unwrap(),
                ip_address: "10.0.0.1".into(),
                port: 7777,
            }),
            status: PlayerSessionStatus::Reserved,
            creation_time: Timestamp::from_micros(1_000),
            termination_time: None,
            reservation_deadline: Timestamp::from_micros(61_000),
            accepted_at: None,
            end_reason: None,
            lsns: SessionLsns::default(),
            error_count: 0,
        }
    }

    #[test]
    fn player_strings_keep_id_and_data_apart() {
        let p = PlayerId::parse("p", "player-1").unwrap();
        let none = PlayerStrings::new(&p, None);
        assert_eq!((none.player_id(), none.player_data()), ("player-1", None));
        assert_eq!(PlayerStrings::new(&p, Some("")).player_data(), None);
        let nul = PlayerStrings::new(&p, Some("a\0b"));
        assert_eq!(nul.player_id(), "player-1");
        assert_eq!(nul.player_data(), Some("a\0b"), "data may hold a NUL");
        assert!(nul.is("player-1") && !nul.is("player-"));
        let e = PlayerStrings::parse("player_id", "a\0b", None).unwrap_err();
        assert!(e.to_string().contains("player_id"), "{e}");
        assert_eq!(std::mem::size_of::<PlayerSession>(), 96);
    }

    #[test]
    fn lsns_keep_48_bits_each() {
        let all = [
            0,
            1,
            0xFFFF,
            0x1_0000,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0x1234_5678_9ABC,
            LSN_MAX,
        ];
        for &r in &all {
            for &a in &all {
                let mut l = SessionLsns::new(r, a, LSN_MAX - r);
                assert_eq!((l.reserved(), l.accepted(), l.ended()), (r, a, LSN_MAX - r));
                l.set_ended(a);
                l.set_accepted(r);
                l.set_reserved(0);
                assert_eq!((l.reserved(), l.accepted(), l.ended()), (0, r, a));
            }
        }
        assert_eq!(std::mem::size_of::<SessionLsns>(), 18);
    }

    #[test]
    fn errors_count_once_per_record_and_keep_the_recent_ones() {
        let (mut s, mut log) = (session(), ErrorLog::default());
        assert_eq!(s.error_count(), 0);
        for lsn in 1..=20 {
            assert!(s.record_error(
                &mut log,
                lsn,
                Timestamp::from_micros(lsn as i64),
                format!("e{lsn}").into()
            ));
        }
        assert!(
            !s.record_error(&mut log, 20, Timestamp::from_micros(20), "again".into()),
            "replayed"
        );
        assert!(!s.record_error(&mut log, 7, Timestamp::from_micros(7), "older".into()));
        assert_eq!((s.error_count(), log.last_lsn), (20, 20));
        assert_eq!(log.recent.len(), ErrorLog::KEPT);
        assert_eq!(&*log.recent[0].message, "e5");
        s.check_can_report_error().unwrap();
        s.complete(Timestamp::from_micros(30), EndReason::PlayerCrashed);
        assert!(s.check_can_report_error().is_err());
    }

    #[test]
    fn accept_then_complete() {
        let mut s = session();
        assert_eq!(
            s.accept(Timestamp::from_micros(2_000)).unwrap(),
            Step::Changed
        );
        assert_eq!(s.status, PlayerSessionStatus::Active);
        assert_eq!(
            s.accept(Timestamp::from_micros(3_000)).unwrap(),
            Step::Unchanged
        );
        assert_eq!(s.accepted_at, Some(Timestamp::from_micros(2_000)));
        assert_eq!(
            s.time_out(Timestamp::from_micros(100_000)),
            Step::Unchanged,
            "ACTIVE never times out"
        );
        assert_eq!(
            s.complete(Timestamp::from_micros(5_000), EndReason::Removed),
            Step::Changed
        );
        assert_eq!(s.termination_time, Some(Timestamp::from_micros(5_000)));
        assert_eq!(
            s.complete(Timestamp::from_micros(6_000), EndReason::GameSessionEnded),
            Step::Unchanged
        );
        assert_eq!(s.termination_time, Some(Timestamp::from_micros(5_000)));
        assert_eq!(s.end_reason, Some(EndReason::Removed));
        let e = s.accept(Timestamp::from_micros(7_000)).unwrap_err();
        assert!(e.to_string().contains("COMPLETED"), "{e}");
    }

    #[test]
    fn time_out_only_at_the_deadline() {
        let mut s = session();
        assert_eq!(s.time_out(Timestamp::from_micros(60_999)), Step::Unchanged);
        assert_eq!(s.time_out(Timestamp::from_micros(70_000)), Step::Changed);
        assert_eq!(s.status, PlayerSessionStatus::TimedOut);
        assert_eq!(
            s.termination_time,
            Some(Timestamp::from_micros(61_000)),
            "terminated at the deadline"
        );
        assert!(s
            .accept(Timestamp::from_micros(70_001))
            .unwrap_err()
            .to_string()
            .contains("TIMEDOUT"));
        assert_eq!(
            s.complete(Timestamp::from_micros(80_000), EndReason::Removed),
            Step::Unchanged
        );
        assert_eq!(s.status, PlayerSessionStatus::TimedOut);
    }
}
