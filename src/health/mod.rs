//! Session health updates (Sentry release-health semantics, see [`crate::domain::health`]):
//! the hub the store publishes every update to, and what reads from it (live streams).
//!
//! The hub is a bounded broadcast ring: publishing never waits for a reader, and a reader that
//! falls more than the ring's size behind learns it (and is cut off by the gRPC layer) instead
//! of silently missing updates.

pub mod sentry;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::HealthUpdate;

/// Where the store publishes health updates.
pub struct HealthHub {
    tx: broadcast::Sender<Arc<HealthUpdate>>,
    capacity: usize,
}

impl HealthHub {
    /// A hub whose readers may fall `capacity` updates behind.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        HealthHub { tx, capacity }
    }

    /// Whether anyone reads updates (the store skips building them otherwise).
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes one update (never blocks).
    pub fn publish(&self, update: HealthUpdate) {
        let _ = self.tx.send(Arc::new(update));
    }

    /// A reader of every update published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HealthUpdate>> {
        self.tx.subscribe()
    }

    /// How far a reader may fall behind.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
