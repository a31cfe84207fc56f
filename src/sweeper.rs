//! The one sweeper task: a deadline-ordered heap of timers (reservation timeouts, heartbeat
//! deadlines, retention purges, idempotency-key expiry), fired in chunks so no lock is held long.
//!
//! Timers are lazy: a fired timer re-checks the current state (a reservation accepted in the
//! meantime, a heartbeat that moved the deadline) instead of being cancelled. There is one heap
//! entry per deadline, never one tokio timer per session.

use std::{cmp::Reverse, collections::BinaryHeap, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{GameSessionId, IdempotencyKey, Timestamp},
    store::{SessionHandle, Store},
};

/// How many due timers are fired before the sweeper yields to other tasks.
const CHUNK: usize = 1024;

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Time out the RESERVED player session (on a collision: sessions) with this handle whose
    /// deadline passed.
    Reservation(SessionHandle),
    /// Check a game session's heartbeat deadline.
    Heartbeat(GameSessionId),
    /// Purge the terminal player session(s) with this handle after the retention period.
    PurgePlayerSession(SessionHandle),
    /// Purge an ended game session (and what is left of its player sessions) after retention.
    PurgeGameSession(GameSessionId),
    /// Forget an idempotency key.
    IdempotencyExpiry(IdempotencyKey),
}

/// Timers of player sessions (most of them) are kept apart from the rest, in heaps of
/// 12-byte entries ([`SessionTimer`]) instead of the 32 a [`Timer`] takes with its deadline.
type SessionHeap = BinaryHeap<Reverse<SessionTimer>>;

/// A player session's timer: its deadline, as two 32-bit halves so that the entry aligns to 4
/// bytes and takes 12 (a `(Timestamp, SessionHandle)` pair takes 16), and the session's
/// handle. Ordered as `(deadline, handle)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SessionTimer {
    /// The deadline's microseconds with the sign bit flipped (so unsigned order is time
    /// order), high half first.
    at: [u32; 2],
    handle: SessionHandle,
}

impl SessionTimer {
    fn new(at: Timestamp, handle: SessionHandle) -> Self {
        let us = (at.as_micros() as u64) ^ (1 << 63);
        SessionTimer {
            at: [(us >> 32) as u32, us as u32],
            handle,
        }
    }

    fn at(self) -> Timestamp {
        let us = (u64::from(self.at[0]) << 32 | u64::from(self.at[1])) ^ (1 << 63);
        Timestamp::from_micros(us as i64)
    }
}

/// Pending timers by kind; the earliest deadline of the three heaps fires first (on a tie, in
/// [`Timer`]'s order, as one heap of `(deadline, Timer)` would).
#[derive(Default)]
struct Heaps {
    reservations: SessionHeap,
    purges: SessionHeap,
    other: BinaryHeap<Reverse<(Timestamp, Timer)>>,
}

/// Which heap holds the earliest timer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Which {
    Reservations,
    Other,
    Purges,
}

impl Heaps {
    fn push(&mut self, at: Timestamp, timer: Timer) {
        match timer {
            Timer::Reservation(h) => self.reservations.push(Reverse(SessionTimer::new(at, h))),
            Timer::PurgePlayerSession(h) => self.purges.push(Reverse(SessionTimer::new(at, h))),
            other => self.other.push(Reverse((at, other))),
        }
    }

    fn len(&self) -> usize {
        self.reservations.len() + self.purges.len() + self.other.len()
    }

    /// The earliest deadline and its heap.
    fn peek(&self) -> Option<(Timestamp, Which)> {
        // Ties go by the kind's place in `Timer`, as in a single heap of `(deadline, Timer)`.
        let rank = |t: &Timer| match t {
            Timer::Reservation(_) => 0,
            Timer::Heartbeat(_) => 1,
            Timer::PurgePlayerSession(_) => 2,
            Timer::PurgeGameSession(_) => 3,
            Timer::IdempotencyExpiry(_) => 4,
        };
        [
            self.reservations
                .peek()
                .map(|Reverse(t)| (t.at(), 0, Which::Reservations)),
            self.other
                .peek()
                .map(|Reverse((t, timer))| (*t, rank(timer), Which::Other)),
            self.purges
                .peek()
                .map(|Reverse(t)| (t.at(), 2, Which::Purges)),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|(t, _, which)| (t, which))
    }

    fn pop(&mut self, which: Which) -> Option<(Timestamp, Timer)> {
        match which {
            Which::Reservations => self
                .reservations
                .pop()
                .map(|Reverse(t)| (t.at(), Timer::Reservation(t.handle))),
            Which::Purges => self
                .purges
                .pop()
                .map(|Reverse(t)| (t.at(), Timer::PurgePlayerSession(t.handle))),
            Which::Other => self.other.pop().map(|Reverse(e)| e),
        }
    }
}

/// The deadline-ordered timer heaps shared by the store (which schedules) and the sweeper
/// (which fires).
#[derive(Default)]
pub struct Timers {
    heap: Mutex<Heaps>,
    wake: Notify,
}

impl Timers {
    /// Schedules `timer` at `at`; wakes the sweeper if it is now the earliest.
    pub fn schedule(&self, at: Timestamp, timer: Timer) {
        let earliest = {
            let mut heap = self.heap.lock();
            let earliest = heap.peek().is_none_or(|(t, _)| at < t);
            heap.push(at, timer);
            earliest
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Schedules many timers at once (recovery): one lock and one rebuild per heap.
    pub fn schedule_all(&self, timers: Vec<(Timestamp, Timer)>) {
        if timers.is_empty() {
            return;
        }
        {
            let mut heap = self.heap.lock();
            let Heaps {
                reservations,
                purges,
                other,
            } = std::mem::take(&mut *heap);
            let (mut r, mut p, mut o) =
                (reservations.into_vec(), purges.into_vec(), other.into_vec());
            for (at, timer) in timers {
                match timer {
                    Timer::Reservation(h) => r.push(Reverse(SessionTimer::new(at, h))),
                    Timer::PurgePlayerSession(h) => p.push(Reverse(SessionTimer::new(at, h))),
                    other => o.push(Reverse((at, other))),
                }
            }
            *heap = Heaps {
                reservations: BinaryHeap::from(r),
                purges: BinaryHeap::from(p),
                other: BinaryHeap::from(o),
            };
        }
        self.wake.notify_one();
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.heap.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.heap.lock().peek().map(|(t, _)| t)
    }

    /// Removes up to `max` timers due at `now` into `out`, earliest first.
    fn pop_due(&self, now: Timestamp, max: usize, out: &mut Vec<(Timestamp, Timer)>) {
        let mut heap = self.heap.lock();
        while out.len() < max {
            match heap.peek() {
                Some((t, which)) if t <= now => {
                    out.extend(heap.pop(which));
                }
                _ => break,
            }
        }
    }
}

/// Fires every timer due now, in chunks. Returns how many fired. Used by the sweeper task and by
/// tests that drive time by hand.
pub fn fire_due(store: &Store) -> usize {
    let mut fired = 0;
    let mut due = Vec::with_capacity(CHUNK);
    loop {
        let now = store.clock().now();
        store.timers().pop_due(now, CHUNK, &mut due);
        if due.is_empty() {
            return fired;
        }
        fired += due.len();
        for (_, timer) in due.drain(..) {
            store.fire(timer, now);
        }
    }
}

/// Runs the sweeper until `shutdown` is cancelled.
pub async fn run(store: Arc<Store>, shutdown: CancellationToken) {
    let timers = store.timers();
    let mut due = Vec::with_capacity(CHUNK);
    loop {
        let now = store.clock().now();
        match timers.next_deadline() {
            Some(t) if t <= now => {
                timers.pop_due(now, CHUNK, &mut due);
                for (_, timer) in due.drain(..) {
                    store.fire(timer, now);
                }
                // Let RPCs run between chunks of a large burst.
                tokio::task::yield_now().await;
            }
            Some(t) => {
                let until = store.clock().instant_at(t);
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = timers.wake.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            None => {
                tokio::select! {
                    _ = timers.wake.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_of_every_kind_fire_in_deadline_order() {
        let timers = Timers::default();
        let t = Timestamp::from_micros;
        let (a, b) = (SessionHandle::for_tests(1), SessionHandle::for_tests(2));
        let g = GameSessionId::parse("g", "g1").unwrap();
        timers.schedule(t(30), Timer::PurgePlayerSession(a));
        timers.schedule(t(10), Timer::Heartbeat(g.clone()));
        timers.schedule(t(20), Timer::Reservation(b));
        timers.schedule_all(vec![
            (t(20), Timer::PurgePlayerSession(b)),
            (t(5), Timer::Reservation(a)),
            (t(20), Timer::PurgeGameSession(g.clone())),
        ]);
        assert_eq!(timers.len(), 6);
        assert_eq!(timers.next_deadline(), Some(t(5)));
        let mut out = Vec::new();
        timers.pop_due(t(20), 100, &mut out);
        assert_eq!(
            out,
            vec![
                (t(5), Timer::Reservation(a)),
                (t(10), Timer::Heartbeat(g.clone())),
                (t(20), Timer::Reservation(b)),
                (t(20), Timer::PurgePlayerSession(b)),
                (t(20), Timer::PurgeGameSession(g)),
            ]
        );
        assert_eq!(timers.next_deadline(), Some(t(30)));
        out.clear();
        timers.pop_due(t(29), 100, &mut out);
        assert!(out.is_empty(), "nothing is due before its deadline");
        timers.pop_due(t(30), 1, &mut out);
        assert_eq!(out, vec![(t(30), Timer::PurgePlayerSession(a))]);
        assert!(timers.is_empty());
    }

    #[test]
    fn session_timers_keep_their_deadline_and_its_order_in_12_bytes() {
        assert_eq!(std::mem::size_of::<SessionTimer>(), 12);
        let (a, b) = (SessionHandle::for_tests(7), SessionHandle::for_tests(3));
        let times = [
            Timestamp::MIN,
            Timestamp::from_micros(-(1 << 40) - 5),
            Timestamp::from_micros(-1),
            Timestamp::from_micros(0),
            Timestamp::from_micros(1),
            Timestamp::from_micros((1 << 32) - 1),
            Timestamp::from_micros(1 << 32),
            Timestamp::from_micros(1_764_000_000_000_000),
            Timestamp::from_micros(i64::MAX),
        ];
        for (i, &t) in times.iter().enumerate() {
            assert_eq!(SessionTimer::new(t, a).at(), t);
            assert!(
                SessionTimer::new(t, b) < SessionTimer::new(t, a),
                "ties go by handle"
            );
            for &later in &times[i + 1..] {
                assert!(SessionTimer::new(t, a) < SessionTimer::new(later, b));
            }
        }
    }
}
