//! Release health: per fleet, release and environment, health sessions bucketed by the minute
//! they started (Sentry's aggregation), with their outcomes. Kept in the fleet's state and
//! updated in the same step as its counts, so it costs no extra lock; rebuilt from the retained
//! player sessions after recovery and shrunk when sessions are purged ("everything retained").

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use crate::domain::{FleetId, GameSession, HealthStatus, PlayerSession, Timestamp};

/// Health sessions and their outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Sessions started (init updates).
    pub total: u64,
    /// Ended normally (exited), with or without errors.
    pub exited: u64,
    /// Exited with errors > 0 (a subset of `exited`).
    pub errored: u64,
    pub abnormal: u64,
    pub crashed: u64,
}

impl HealthCounts {
    /// 1 - crashed / total (1 when nothing started).
    pub fn crash_free_rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            1.0 - self.crashed as f64 / self.total as f64
        }
    }

    pub(super) fn add(&mut self, o: &HealthCounts) {
        self.total += o.total;
        self.exited += o.exited;
        self.errored += o.errored;
        self.abnormal += o.abnormal;
        self.crashed += o.crashed;
    }

    fn sub(&mut self, o: &HealthCounts) {
        self.total = self.total.saturating_sub(o.total);
        self.exited = self.exited.saturating_sub(o.exited);
        self.errored = self.errored.saturating_sub(o.errored);
        self.abnormal = self.abnormal.saturating_sub(o.abnormal);
        self.crashed = self.crashed.saturating_sub(o.crashed);
    }

    fn is_zero(&self) -> bool {
        *self == HealthCounts::default()
    }
}

/// What one player session contributes: its start minute and counts.
fn contribution(ps: &PlayerSession, started: bool, ended: bool) -> (i64, HealthCounts) {
    let minute = ps.creation_time.as_micros().div_euclid(60_000_000) * 60;
    let mut c = HealthCounts {
        total: u64::from(started),
        ..HealthCounts::default()
    };
    if ended {
        match HealthStatus::of(ps) {
            HealthStatus::Ok => {}
            HealthStatus::Exited => {
                c.exited = 1;
                c.errored = u64::from(ps.error_count() > 0);
            }
            HealthStatus::Abnormal => c.abnormal = 1,
            HealthStatus::Crashed => c.crashed = 1,
        }
    }
    (minute, c)
}

/// What a retained session contributes as it is now (rebuilding after recovery, scans).
pub(super) fn retained(ps: &PlayerSession) -> (i64, HealthCounts) {
    contribution(ps, true, ps.status.is_terminal())
}

/// (release, environment).
pub type ReleaseKey = (Arc<str>, Arc<str>);
type Key = ReleaseKey;

/// Release health of one fleet.
#[derive(Default)]
pub(super) struct ReleaseHealth {
    /// (release, environment) -> start minute (Unix seconds) -> counts.
    buckets: HashMap<Key, BTreeMap<i64, HealthCounts>>,
    /// Monotonic totals of live updates (for the Prometheus counter).
    totals: HashMap<Key, HealthCounts>,
}

impl ReleaseHealth {
    fn add(&mut self, g: &GameSession, (minute, c): (i64, HealthCounts), live: bool) {
        if c.is_zero() {
            return;
        }
        let key = (g.release.clone(), g.environment.clone());
        if live {
            self.totals.entry(key.clone()).or_default().add(&c);
        }
        self.buckets
            .entry(key)
            .or_default()
            .entry(minute)
            .or_default()
            .add(&c);
    }

    /// A session started (reserved): `live` = by a call (not rebuilt).
    pub(super) fn started(&mut self, g: &GameSession, ps: &PlayerSession) {
        self.add(g, contribution(ps, true, false), true);
    }

    /// A session reached its terminal state (live).
    pub(super) fn ended(&mut self, g: &GameSession, ps: &PlayerSession) {
        self.add(g, contribution(ps, false, true), true);
    }

    /// A retained session's contribution (see [`retained`]), rebuilding after recovery.
    pub(super) fn restore(&mut self, g: &GameSession, contribution: (i64, HealthCounts)) {
        self.add(g, contribution, false);
    }

    /// A session was purged: it leaves the buckets (not the monotonic totals).
    pub(super) fn forget(
        &mut self,
        release: &Arc<str>,
        environment: &Arc<str>,
        ps: &PlayerSession,
    ) {
        let (minute, c) = retained(ps);
        let key = (release.clone(), environment.clone());
        if let Some(b) = self.buckets.get_mut(&key) {
            if let Some(m) = b.get_mut(&minute) {
                m.sub(&c);
                if m.is_zero() {
                    b.remove(&minute);
                }
            }
            if b.is_empty() {
                self.buckets.remove(&key);
            }
        }
    }

    /// Adds the buckets of `release` (and `environment` if given) from `since` on into `out`.
    fn collect(
        &self,
        release: &str,
        environment: Option<&str>,
        since: Option<i64>,
        out: &mut BTreeMap<i64, HealthCounts>,
    ) {
        for ((r, e), b) in &self.buckets {
            if &**r != release || environment.is_some_and(|x| x != &**e) {
                continue;
            }
            let range = match since {
                Some(s) => b.range(s..),
                None => b.range(..),
            };
            for (m, c) in range {
                out.entry(*m).or_default().add(c);
            }
        }
    }

    /// Whether the buckets equal `other`'s (invariant checks).
    pub(super) fn same_buckets(&self, other: &ReleaseHealth) -> bool {
        self.buckets == other.buckets
    }

    /// Monotonic totals per (release, environment).
    pub(super) fn totals(&self) -> impl Iterator<Item = (&Key, &HealthCounts)> {
        self.totals.iter()
    }
}

/// A validated GetReleaseHealth request.
#[derive(Debug, Clone)]
pub struct ReleaseHealthQuery {
    pub release: String,
    pub environment: Option<String>,
    pub fleet_id: Option<FleetId>,
    /// Sessions started within this window (None: everything retained).
    pub window: Option<std::time::Duration>,
}

/// The answer: totals and per-minute buckets (start minute in Unix seconds), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseHealthReport {
    pub counts: HealthCounts,
    pub buckets: Vec<(Timestamp, HealthCounts)>,
}

impl super::Store {
    /// Release health over the retained sessions of one or every fleet.
    pub fn release_health(&self, q: &ReleaseHealthQuery) -> ReleaseHealthReport {
        let since = q.window.map(|w| {
            let from =
                self.clock.now().as_micros() - i64::try_from(w.as_micros()).unwrap_or(i64::MAX);
            from.div_euclid(60_000_000) * 60
        });
        let mut merged = BTreeMap::new();
        let env = q.environment.as_deref();
        match &q.fleet_id {
            Some(f) => {
                if let Some(fleet) = self.fleets.get(f) {
                    fleet.health.collect(&q.release, env, since, &mut merged);
                }
            }
            None => {
                for fleet in self.fleets.iter() {
                    fleet.health.collect(&q.release, env, since, &mut merged);
                }
            }
        }
        let mut counts = HealthCounts::default();
        for c in merged.values() {
            counts.add(c);
        }
        ReleaseHealthReport {
            counts,
            buckets: merged
                .into_iter()
                .map(|(m, c)| (Timestamp::from_micros(m * 1_000_000), c))
                .collect(),
        }
    }

    /// Monotonic health totals per (release, environment) over every fleet, sorted.
    pub fn health_totals(&self) -> Vec<(ReleaseKey, HealthCounts)> {
        let mut sum: BTreeMap<ReleaseKey, HealthCounts> = BTreeMap::new();
        for f in self.fleets.iter() {
            for (k, c) in f.health.totals() {
                sum.entry(k.clone()).or_default().add(c);
            }
        }
        sum.into_iter().collect()
    }
}
