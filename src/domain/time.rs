//! Wall-clock timestamps driven by tokio's clock, so `tokio::time::pause()` / `advance()` move
//! every time the daemon sees (creation times, deadlines, the sweeper) together.

use std::{
    num::NonZeroI64,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

/// Microseconds since the Unix epoch. Deadlines are stored as absolute timestamps.
///
/// Stored with the sign bit flipped in a `NonZeroI64`, so `Option<Timestamp>` is 8 bytes like
/// the timestamp itself (session records hold several optional times). The one value that
/// cannot be stored, `i64::MIN` microseconds (292,000 years before the epoch), reads as
/// [`Timestamp::MIN`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp(NonZeroI64);

impl Timestamp {
    /// The earliest timestamp: a lower bound for range queries.
    pub const MIN: Timestamp = Timestamp::from_micros(i64::MIN + 1);

    pub const fn from_micros(us: i64) -> Self {
        let us = if us == i64::MIN { i64::MIN + 1 } else { us };
        match NonZeroI64::new(us ^ i64::MIN) {
            Some(v) => Timestamp(v),
            // `us ^ MIN` is zero only for `us == MIN`, mapped away above.
            None => Timestamp(NonZeroI64::MAX),
        }
    }
    pub const fn as_micros(self) -> i64 {
        self.0.get() ^ i64::MIN
    }
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp::from_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => {
                Timestamp::from_micros(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX))
            }
        }
    }
    pub fn to_system_time(self) -> SystemTime {
        let us = self.as_micros();
        if us >= 0 {
            UNIX_EPOCH + Duration::from_micros(us as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
        }
    }
    /// Seconds and nanoseconds, as protobuf's `Timestamp` wants them.
    pub fn to_seconds_nanos(self) -> (i64, i32) {
        let us = self.as_micros();
        (
            us.div_euclid(1_000_000),
            (us.rem_euclid(1_000_000) * 1_000) as i32,
        )
    }
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp::from_micros(
            self.as_micros()
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }
    /// `self - earlier`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.as_micros().saturating_sub(earlier.as_micros()).max(0) as u64)
    }
}

impl Default for Timestamp {
    /// The Unix epoch.
    fn default() -> Self {
        Timestamp::from_micros(0)
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_micros().cmp(&other.as_micros())
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Timestamp").field(&self.as_micros()).finish()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_micros(self.to_system_time())
        )
    }
}

/// The daemon's clock: the wall time read once at start, advanced by tokio's monotonic clock.
///
/// Wall-clock steps (NTP) during a run do not move deadlines; tokio's paused clock in tests does.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_wall: Timestamp,
    anchor: Instant,
}

impl Clock {
    /// A clock anchored at the current system time.
    pub fn system() -> Self {
        Self::starting_at(Timestamp::from_system_time(SystemTime::now()))
    }

    /// A clock whose `now()` is `wall` at this instant of tokio's clock.
    pub fn starting_at(wall: Timestamp) -> Self {
        Clock {
            anchor_wall: wall,
            anchor: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.anchor_wall.saturating_add(self.anchor.elapsed())
    }

    /// The tokio instant at which wall time `t` is reached (now or earlier: an instant not after now).
    pub fn instant_at(&self, t: Timestamp) -> Instant {
        let now_wall = self.now();
        let now = Instant::now();
        if t <= now_wall {
            now
        } else {
            now + t.duration_since(now_wall)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_order_and_fit_an_option_in_8_bytes() {
        assert_eq!(std::mem::size_of::<Option<Timestamp>>(), 8);
        let values = [
            i64::MIN + 1,
            -1_000_000,
            -1,
            0,
            1,
            1_700_000_000_000_000,
            i64::MAX,
        ];
        for w in values.windows(2) {
            let (a, b) = (Timestamp::from_micros(w[0]), Timestamp::from_micros(w[1]));
            assert_eq!((a.as_micros(), b.as_micros()), (w[0], w[1]));
            assert!(a < b, "{a:?} < {b:?}");
        }
        assert_eq!(Timestamp::from_micros(i64::MIN), Timestamp::MIN);
        assert_eq!(Timestamp::default().as_micros(), 0);
        assert_eq!(format!("{:?}", Timestamp::from_micros(-5)), "Timestamp(-5)");
        assert_eq!(
            Timestamp::from_micros(-1).to_seconds_nanos(),
            (-1, 999_999_000)
        );
    }
}
