//! Wall-clock timestamps driven by tokio's clock, so `tokio::time::pause()` / `advance()` move
//! every time the daemon sees (creation times, deadlines, the sweeper) together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Microseconds since the Unix epoch. Deadlines are stored as absolute timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }
    pub const fn as_micros(self) -> i64 {
        self.0
    }
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }
    /// Seconds and nanoseconds, as protobuf's `Timestamp` wants them.
    pub fn to_seconds_nanos(self) -> (i64, i32) {
        (
            self.0.div_euclid(1_000_000),
            (self.0.rem_euclid(1_000_000) * 1_000) as i32,
        )
    }
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }
    /// `self - earlier`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
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
