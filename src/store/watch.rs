//! Live fleet feeds (WatchFleet): a snapshot of a fleet's ACTIVE game sessions, a marker, then
//! every change in order with the fleet's sequence number.
//!
//! Changes are published under the fleet's lock, so a subscription (which takes its snapshot
//! under the same lock) neither misses nor repeats a change. Each watcher keeps at most one
//! pending event per game session: a burst of changes to one game session while the consumer is
//! slow is coalesced into its latest state (the sequence number tells how far it is). A consumer
//! that falls behind by more than `watch_buffer` game sessions is cut off with
//! [`Error::WatchLagged`] and resubscribes for a fresh snapshot: never a silently stale view.
//! Publishing never waits for a consumer.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use parking_lot::Mutex;

use super::{search::selector_matches, Hasher, LabelSelector, Store};
use crate::domain::{Error, FleetId, GameSession, GameSessionId, Result};

/// What happened to a game session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetEventKind {
    /// Part of the initial snapshot.
    Snapshot,
    /// The snapshot is complete; live changes follow.
    SnapshotComplete,
    /// A game session was registered.
    Created,
    /// Capacity, policy or player count changed.
    Updated,
    /// The game session ended (TERMINATED or ERROR).
    Ended,
}

/// One event of a fleet feed.
#[derive(Debug, Clone)]
pub struct FleetEvent {
    /// The fleet's sequence number of the change (for snapshot events: the sequence number the
    /// snapshot reflects). Strictly increasing after the snapshot; gaps mean coalesced or
    /// filtered-out changes.
    pub sequence: u64,
    pub kind: FleetEventKind,
    /// The game session as of this change; `None` for [`FleetEventKind::SnapshotComplete`].
    pub game_session: Option<GameSession>,
}

#[derive(Default)]
struct Pending {
    /// Sequence number -> game session, in order.
    order: BTreeMap<u64, GameSessionId>,
    /// The latest pending change of each game session.
    latest: HashMap<GameSessionId, (u64, FleetEventKind, GameSession), Hasher>,
    lagged: bool,
}

/// One subscriber's queue.
pub(super) struct Watcher {
    selector: LabelSelector,
    capacity: usize,
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

impl Watcher {
    /// Queues a change (called under the fleet's lock; never blocks on the consumer).
    /// Returns true if this change made the watcher fall too far behind.
    pub(super) fn push(&self, sequence: u64, kind: FleetEventKind, g: &GameSession) -> bool {
        if !selector_matches(&self.selector, g) {
            return false;
        }
        let mut p = self.pending.lock();
        if p.lagged {
            return false;
        }
        let kind = match p.latest.remove(g.id()) {
            Some((old_seq, old_kind, _)) => {
                p.order.remove(&old_seq);
                match (old_kind, kind) {
                    // The consumer never saw it created: it still learns of it as created.
                    (FleetEventKind::Created, FleetEventKind::Updated) => FleetEventKind::Created,
                    (_, k) => k,
                }
            }
            None => kind,
        };
        let lagged = p.latest.len() >= self.capacity;
        if lagged {
            *p = Pending {
                lagged: true,
                ..Pending::default()
            };
        } else {
            p.order.insert(sequence, g.id().clone());
            p.latest.insert(g.id().clone(), (sequence, kind, g.clone()));
        }
        drop(p);
        self.wake.notify_one();
        lagged
    }

    fn pop(&self) -> Option<Result<FleetEvent, ()>> {
        let mut p = self.pending.lock();
        if p.lagged {
            return Some(Err(()));
        }
        let (_, id) = p.order.pop_first()?;
        let (sequence, kind, g) = p.latest.remove(&id)?;
        Some(Ok(FleetEvent {
            sequence,
            kind,
            game_session: Some(g),
        }))
    }
}

/// A subscription to a fleet's changes. Dropping it unsubscribes and frees its queue.
pub struct FleetWatch {
    store: Arc<Store>,
    fleet_id: FleetId,
    snapshot: VecDeque<FleetEvent>,
    watcher: Arc<Watcher>,
}

impl FleetWatch {
    /// The next event: the snapshot first, then changes as they happen. Cancel-safe. After
    /// [`Error::WatchLagged`] the subscription is dead: every call returns that error.
    pub async fn next(&mut self) -> Result<FleetEvent> {
        if let Some(e) = self.snapshot.pop_front() {
            return Ok(e);
        }
        loop {
            match self.watcher.pop() {
                Some(Ok(e)) => return Ok(e),
                Some(Err(())) => {
                    return Err(Error::WatchLagged {
                        fleet_id: self.fleet_id.clone(),
                        buffer: self.watcher.capacity,
                    })
                }
                None => self.watcher.wake.notified().await,
            }
        }
    }
}

impl Drop for FleetWatch {
    fn drop(&mut self) {
        if let Some(mut f) = self.store.fleets.get_mut(&self.fleet_id) {
            f.watchers.retain(|w| !Arc::ptr_eq(w, &self.watcher));
        }
        // A fleet that only existed because it was watched leaves no trace.
        self.store.fleets.remove_if(&self.fleet_id, |_, f| {
            f.watchers.is_empty() && f.is_unused()
        });
        if let Some(m) = self.store.metrics.get() {
            m.fleet_watchers.dec();
        }
    }
}

impl Store {
    /// Subscribes to the changes of `fleet_id`'s game sessions matching `selector` (an unknown
    /// fleet is watched until its first game session appears).
    pub fn watch_fleet(self: &Arc<Self>, fleet_id: FleetId, selector: LabelSelector) -> FleetWatch {
        let watcher = Arc::new(Watcher {
            selector,
            capacity: self.config.watch_buffer.max(1),
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        });
        let mut f = self.fleets.entry(fleet_id.clone()).or_default();
        let sequence = f.sequence;
        let mut snapshot: VecDeque<FleetEvent> = f
            .index
            .snapshot(&watcher.selector)
            .into_iter()
            .map(|g| FleetEvent {
                sequence,
                kind: FleetEventKind::Snapshot,
                game_session: Some(g),
            })
            .collect();
        snapshot.push_back(FleetEvent {
            sequence,
            kind: FleetEventKind::SnapshotComplete,
            game_session: None,
        });
        f.watchers.push(watcher.clone());
        drop(f);
        if let Some(m) = self.metrics.get() {
            m.fleet_watchers.inc();
        }
        FleetWatch {
            store: self.clone(),
            fleet_id,
            snapshot,
            watcher,
        }
    }
}
