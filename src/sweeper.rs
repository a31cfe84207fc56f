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
    domain::{GameSessionId, IdempotencyKey, PlayerSessionId, Timestamp},
    store::Store,
};

/// How many due timers are fired before the sweeper yields to other tasks.
const CHUNK: usize = 1024;

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Time out a RESERVED player session whose deadline passed.
    Reservation(PlayerSessionId),
    /// Check a game session's heartbeat deadline.
    Heartbeat(GameSessionId),
    /// Purge a terminal player session after the retention period.
    PurgePlayerSession(PlayerSessionId),
    /// Purge an ended game session (and what is left of its player sessions) after retention.
    PurgeGameSession(GameSessionId),
    /// Forget an idempotency key.
    IdempotencyExpiry(IdempotencyKey),
}

/// The deadline-ordered timer heap shared by the store (which schedules) and the sweeper (which fires).
#[derive(Default)]
pub struct Timers {
    heap: Mutex<BinaryHeap<Reverse<(Timestamp, Timer)>>>,
    wake: Notify,
}

impl Timers {
    /// Schedules `timer` at `at`; wakes the sweeper if it is now the earliest.
    pub fn schedule(&self, at: Timestamp, timer: Timer) {
        let earliest = {
            let mut heap = self.heap.lock();
            let earliest = heap.peek().is_none_or(|Reverse((t, _))| at < *t);
            heap.push(Reverse((at, timer)));
            earliest
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Schedules many timers at once (recovery): one lock and one heap rebuild.
    pub fn schedule_all(&self, timers: Vec<(Timestamp, Timer)>) {
        if timers.is_empty() {
            return;
        }
        {
            let mut heap = self.heap.lock();
            // Wrapped in place (same layout), then the few already scheduled join.
            let mut all: Vec<_> = timers.into_iter().map(Reverse).collect();
            all.append(&mut std::mem::take(&mut *heap).into_vec());
            *heap = BinaryHeap::from(all);
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
        self.heap.lock().peek().map(|Reverse((t, _))| *t)
    }

    /// Removes up to `max` timers due at `now` into `out`.
    fn pop_due(&self, now: Timestamp, max: usize, out: &mut Vec<(Timestamp, Timer)>) {
        let mut heap = self.heap.lock();
        while out.len() < max {
            match heap.peek() {
                Some(Reverse((t, _))) if *t <= now => {
                    let Reverse(entry) = heap.pop().expect("peeked");
                    out.push(entry);
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
