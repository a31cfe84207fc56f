//! The per-fleet search index: every ACTIVE game session of a fleet, as of its last change, in
//! ordered sets by creation time, available seats, player count, maximum sessions,
//! has-available, name and id. SearchGameSessions and
//! PlacePlayerSessions walk these sets from the right place instead of scanning the fleet. The
//! index's copy of a game session is updated under the game session's lock on every change; the
//! numeric orders catch up under the fleet's lock before a search or placement reads them
//! ([`FleetIndex::refresh`]), so a search sees one consistent state of the fleet.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    ops::Bound,
    sync::Arc,
};

use super::{page_token::Fingerprint, Hasher};
use crate::domain::{
    available_seats, limits, Filter, FleetId, GameSession, GameSessionId, Operand, Sort, SortValue,
    Timestamp,
};

/// `(sort value, creation time, id)`: the order of an indexed sort.
type Key = (i64, Timestamp, GameSessionId);
/// The same for the name and the id.
type NameKey = (Arc<str>, Timestamp, GameSessionId);
type IdKey = (GameSessionId, Timestamp, GameSessionId);

/// How PlacePlayerSessions picks among the game sessions a party fits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementStrategy {
    /// The fullest game session that fits (fewest available seats): keeps servers few.
    #[default]
    Packed,
    /// The emptiest game session (most available seats): spreads players out.
    Distributed,
}

/// Label equality constraints: every pair must be among the game session's labels.
pub type LabelSelector = BTreeMap<String, String>;

pub(crate) fn selector_matches(selector: &LabelSelector, g: &GameSession) -> bool {
    selector
        .iter()
        .all(|(k, v)| g.labels.get(k).is_some_and(|x| x == v))
}

/// Where a search page ends: the last game session's sort value, creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPosition {
    pub value: SortValue,
    pub creation_time: Timestamp,
    pub game_session_id: GameSessionId,
}

/// A validated SearchGameSessions request.
#[derive(Debug, Clone)]
pub struct Search {
    pub fleet_id: FleetId,
    pub filter: Filter,
    pub sort: Sort,
    pub selector: LabelSelector,
    /// 1..=100.
    pub limit: u32,
    pub after: Option<SearchPosition>,
}

impl Search {
    /// Fingerprint of the query (not the position), bound into page tokens.
    pub fn query_fingerprint(
        fleet_id: &FleetId,
        filter_text: &str,
        sort: &Sort,
        selector: &LabelSelector,
    ) -> u64 {
        let mut f = Fingerprint::default()
            .str("search")
            .str(fleet_id.as_str())
            .str(filter_text)
            .str(&sort.to_string());
        for (k, v) in selector {
            f = f.str(k).str(v);
        }
        f.finish()
    }
}

/// One page of game sessions.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub game_sessions: Vec<GameSession>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<SearchPosition>,
}

/// A numeric sort value of a game session.
type Value = fn(&GameSession) -> i64;

fn creation_millis(g: &GameSession) -> i64 {
    g.creation_time.as_micros().div_euclid(1000)
}
fn available(g: &GameSession) -> i64 {
    i64::from(available_seats(g))
}
fn player_count(g: &GameSession) -> i64 {
    i64::from(g.current_player_session_count)
}
fn maximum(g: &GameSession) -> i64 {
    i64::from(g.maximum_player_session_count)
}
fn has_available(g: &GameSession) -> i64 {
    i64::from(available_seats(g) > 0)
}

/// The numeric orders the index keeps, in the order of [`FleetIndex::numeric`].
const NUMERIC: [(Operand, Value); 5] = [
    (Operand::CreationTimeMillis, creation_millis),
    (Operand::AvailablePlayerSessions, available),
    (Operand::PlayerSessionCount, player_count),
    (Operand::MaximumSessions, maximum),
    (Operand::HasAvailablePlayerSessions, has_available),
];
/// Where the creation-time and available-seats orders are in [`NUMERIC`].
const CREATION: usize = 0;
const AVAILABLE: usize = 1;

fn name_key(g: &GameSession) -> NameKey {
    (g.name.clone(), g.creation_time, g.id().clone())
}
fn id_key(g: &GameSession) -> IdKey {
    (g.id().clone(), g.creation_time, g.id().clone())
}

/// The ACTIVE game sessions of one fleet, indexed.
///
/// The copy of each game session (what filters read) and the seat count are current after every
/// change; the numeric orders catch up lazily. A reservation changes a game session's available
/// seats and player count, which used to move it in two ordered sets on every call (6 % of a
/// daemon's CPU under `reserve`); now the change only marks the entry stale, and the orders are
/// brought up to date ([`FleetIndex::refresh`]) before the next search or placement reads them,
/// once per game session however many changes it had meanwhile.
#[derive(Default)]
pub(super) struct FleetIndex {
    sessions: HashMap<GameSessionId, Indexed, Hasher>,
    /// One ordered set per entry of [`NUMERIC`].
    numeric: [BTreeSet<Key>; NUMERIC.len()],
    by_name: BTreeSet<NameKey>,
    by_id: BTreeSet<IdKey>,
    /// Entries whose numeric keys are behind their game session (each once, while stale).
    stale: Vec<GameSessionId>,
    /// Sum of available seats (ACTIVE, ACCEPT_ALL game sessions' free seats).
    available_seats: u64,
}

/// One indexed game session.
struct Indexed {
    /// As of its last change.
    session: GameSession,
    /// Its values in the [`NUMERIC`] orders (the keys those sets hold for it).
    keys: [i64; NUMERIC.len()],
    /// Whether `keys` are behind `session` (it is in [`FleetIndex::stale`]).
    stale: bool,
}

/// `g`'s value in every [`NUMERIC`] order.
fn values(g: &GameSession) -> [i64; NUMERIC.len()] {
    NUMERIC.map(|(_, value)| value(g))
}

/// Walks `set` from just after `after` (ascending, or descending with `desc`) until `visit`
/// returns false.
fn walk<K: Ord>(
    set: &BTreeSet<(K, Timestamp, GameSessionId)>,
    after: Option<(K, Timestamp, GameSessionId)>,
    desc: bool,
    mut visit: impl FnMut(&GameSessionId) -> bool,
) {
    let range = match (&after, desc) {
        (None, _) => set.range::<(K, Timestamp, GameSessionId), _>(..),
        (Some(a), false) => set.range((Bound::Excluded(a), Bound::Unbounded)),
        (Some(a), true) => set.range((Bound::Unbounded, Bound::Excluded(a))),
    };
    if desc {
        for k in range.rev() {
            if !visit(&k.2) {
                break;
            }
        }
    } else {
        for k in range {
            if !visit(&k.2) {
                break;
            }
        }
    }
}

impl FleetIndex {
    pub(super) fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub(super) fn available_seats(&self) -> u64 {
        self.available_seats
    }

    /// Records the current state of `g`: inserted or updated while ACTIVE, removed once ended.
    /// An update whose numeric values changed marks the entry stale (see [`Self::refresh`]).
    pub(super) fn upsert(&mut self, g: &GameSession) {
        if !g.is_active() {
            self.remove(g.id());
            return;
        }
        match self.sessions.get_mut(g.id()) {
            Some(old) => {
                self.available_seats = (self.available_seats + available(g) as u64)
                    .saturating_sub(available(&old.session) as u64);
                old.session = g.clone();
                if !old.stale && values(g) != old.keys {
                    old.stale = true;
                    self.stale.push(g.id().clone());
                }
            }
            None => {
                let keys = values(g);
                for (v, set) in keys.iter().zip(&mut self.numeric) {
                    set.insert((*v, g.creation_time, g.id().clone()));
                }
                self.by_name.insert(name_key(g));
                self.by_id.insert(id_key(g));
                self.available_seats += available(g) as u64;
                self.sessions.insert(
                    g.id().clone(),
                    Indexed {
                        session: g.clone(),
                        keys,
                        stale: false,
                    },
                );
            }
        }
    }

    pub(super) fn remove(&mut self, id: &GameSessionId) {
        if let Some(old) = self.sessions.remove(id) {
            let g = &old.session;
            for (v, set) in old.keys.iter().zip(&mut self.numeric) {
                set.remove(&(*v, g.creation_time, id.clone()));
            }
            self.by_name.remove(&name_key(g));
            self.by_id.remove(&id_key(g));
            self.available_seats = self.available_seats.saturating_sub(available(g) as u64);
            if old.stale {
                // Ending is rare; the list holds exactly the stale entries.
                self.stale.retain(|s| s != id);
            }
        }
    }

    /// Whether some numeric order is behind (a search or placement must [`Self::refresh`]
    /// first).
    pub(super) fn needs_refresh(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Moves every stale entry to its current place in the numeric orders.
    pub(super) fn refresh(&mut self) {
        let mut stale = std::mem::take(&mut self.stale);
        for id in stale.drain(..) {
            // The list holds exactly the stale entries (`check` verifies it); skip anything else.
            let Some(e) = self.sessions.get_mut(&id).filter(|e| e.stale) else {
                continue;
            };
            e.stale = false;
            let now = values(&e.session);
            for ((was, now), set) in e.keys.iter_mut().zip(now).zip(&mut self.numeric) {
                if *was != now {
                    set.remove(&(*was, e.session.creation_time, id.clone()));
                    set.insert((now, e.session.creation_time, id.clone()));
                    *was = now;
                }
            }
        }
        // Keep the list's capacity for the next round.
        self.stale = stale;
    }

    /// Every indexed game session matching `selector`, oldest first.
    pub(super) fn snapshot(&self, selector: &LabelSelector) -> Vec<GameSession> {
        // Creation times never change, so this order is never behind.
        self.numeric[CREATION]
            .iter()
            .map(|k| &self.sessions[&k.2].session)
            .filter(|g| selector_matches(selector, g))
            .cloned()
            .collect()
    }

    /// One page of a search. Sorts by creation time, available seats, player count, maximum
    /// sessions, has-available, name or id walk their ordered set from the page position and
    /// stop once the page is full; a sort by a property sorts the matching game sessions.
    /// Needs an up-to-date index ([`Self::refresh`]).
    pub(super) fn search(&self, q: &Search) -> SearchPage {
        debug_assert!(!self.needs_refresh(), "search of a stale index");
        let limit = q.limit.clamp(1, limits::SEARCH_LIMIT_MAX) as usize;
        let matches = |g: &GameSession| selector_matches(&q.selector, g) && q.filter.matches(g);
        let mut out: Vec<GameSession> = Vec::with_capacity(limit.min(32));
        let mut more = false;
        let desc = q.sort.descending;
        let mut visit = |id: &GameSessionId| -> bool {
            let g = &self.sessions[id].session;
            if !matches(g) {
                return true;
            }
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(g.clone());
            true
        };
        let num_after = || {
            q.after.as_ref().map(|p| {
                let v = match p.value {
                    SortValue::Num(n) => n as i64,
                    _ => i64::MIN,
                };
                (v, p.creation_time, p.game_session_id.clone())
            })
        };
        let name_after = || {
            q.after.as_ref().map(|p| {
                let v: Arc<str> = match &p.value {
                    SortValue::Str(s) => s.as_str().into(),
                    _ => "".into(),
                };
                (v, p.creation_time, p.game_session_id.clone())
            })
        };
        let id_after = || {
            q.after.as_ref().map(|p| {
                let id = p.game_session_id.clone();
                (id.clone(), p.creation_time, id)
            })
        };
        let numeric = NUMERIC.iter().position(|(op, _)| *op == q.sort.operand);
        match (numeric, &q.sort.operand) {
            (Some(i), _) => walk(&self.numeric[i], num_after(), desc, &mut visit),
            (None, Operand::GameSessionName) => walk(&self.by_name, name_after(), desc, &mut visit),
            (None, Operand::GameSessionId) => walk(&self.by_id, id_after(), desc, &mut visit),
            (None, _) => {
                let op = &q.sort.operand;
                let mut all: Vec<(SortValue, Timestamp, &GameSessionId, &GameSession)> = self
                    .sessions
                    .values()
                    .map(|e| &e.session)
                    .filter(|g| matches(g))
                    .map(|g| (op.sort_value(g), g.creation_time, g.id(), g))
                    .filter(|(v, t, id, _)| match &q.after {
                        None => true,
                        Some(a) => {
                            let here = (v, t, *id);
                            let there = (&a.value, &a.creation_time, &a.game_session_id);
                            if desc {
                                here < there
                            } else {
                                here > there
                            }
                        }
                    })
                    .collect();
                let by =
                    |a: &(SortValue, Timestamp, &GameSessionId, &GameSession),
                     b: &(SortValue, Timestamp, &GameSessionId, &GameSession)| {
                        (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2))
                    };
                // Only the page (plus one, to know whether more follow) needs ordering.
                let want = (limit + 1).min(all.len());
                if want > 0 && want < all.len() {
                    if desc {
                        all.select_nth_unstable_by(want - 1, |a, b| by(b, a));
                    } else {
                        all.select_nth_unstable_by(want - 1, by);
                    }
                    all.truncate(want);
                }
                if desc {
                    all.sort_unstable_by(|a, b| by(b, a));
                } else {
                    all.sort_unstable_by(by);
                }
                more = all.len() > limit;
                out.extend(all.into_iter().take(limit).map(|x| x.3.clone()));
            }
        }
        let next = if more {
            out.last().map(|g| SearchPosition {
                value: q.sort.operand.sort_value(g),
                creation_time: g.creation_time,
                game_session_id: g.id().clone(),
            })
        } else {
            None
        };
        SearchPage {
            game_sessions: out,
            next,
        }
    }

    /// The game session a party of `party` would be placed in: among ACTIVE, ACCEPT_ALL game
    /// sessions with at least `party` available seats that match, the one with the fewest
    /// (PACKED) or the most (DISTRIBUTED) available seats, oldest first on ties. Needs an
    /// up-to-date index ([`Self::refresh`]).
    pub(super) fn pick(
        &self,
        party: u32,
        strategy: PlacementStrategy,
        accept: impl Fn(&GameSession) -> bool,
        skip: &HashSet<GameSessionId>,
    ) -> Option<GameSessionId> {
        debug_assert!(!self.needs_refresh(), "placement from a stale index");
        let from: Key = (i64::from(party), Timestamp::MIN, GameSessionId::min());
        let ok = |k: &&Key| !skip.contains(&k.2) && accept(&self.sessions[&k.2].session);
        let by_available = &self.numeric[AVAILABLE];
        let found = match strategy {
            PlacementStrategy::Packed => by_available
                .range((Bound::Included(from), Bound::Unbounded))
                .find(ok),
            PlacementStrategy::Distributed => {
                // Groups of equal available seats, largest first; oldest first in a group.
                let mut upper: Bound<Key> = Bound::Unbounded;
                loop {
                    let top = by_available
                        .range((Bound::Included(from.clone()), upper.clone()))
                        .next_back()?;
                    let group: Key = (top.0, Timestamp::MIN, GameSessionId::min());
                    if let Some(k) = by_available
                        .range((Bound::Included(group.clone()), upper))
                        .find(ok)
                    {
                        break Some(k);
                    }
                    upper = Bound::Excluded(group);
                }
            }
        };
        found.map(|k| k.2.clone())
    }

    /// Checks the index against the store's game sessions (tests and debugging).
    pub(super) fn check(&self, fleet: &FleetId, active: &[GameSession]) -> Result<(), String> {
        if self.sessions.len() != active.len() {
            return Err(format!(
                "fleet {fleet}: index holds {} game sessions, {} are ACTIVE",
                self.sessions.len(),
                active.len()
            ));
        }
        let mut seats = 0u64;
        for g in active {
            let Some(e) = self.sessions.get(g.id()) else {
                return Err(format!("fleet {fleet}: {} missing from the index", g.id()));
            };
            let i = &e.session;
            if (
                i.current_player_session_count,
                i.maximum_player_session_count,
                i.creation_policy,
            ) != (
                g.current_player_session_count,
                g.maximum_player_session_count,
                g.creation_policy,
            ) {
                return Err(format!("fleet {fleet}: index copy of {} is stale", g.id()));
            }
            // The numeric orders hold the entry's keys: its current values, or older ones
            // while it waits in the stale list.
            if e.stale != self.stale.contains(g.id()) || (!e.stale && e.keys != values(g)) {
                return Err(format!(
                    "fleet {fleet}: {} is behind the index without being marked stale",
                    g.id()
                ));
            }
            let stale = e
                .keys
                .iter()
                .zip(&self.numeric)
                .any(|(v, set)| !set.contains(&(*v, g.creation_time, g.id().clone())))
                || !self.by_name.contains(&name_key(g))
                || !self.by_id.contains(&id_key(g));
            if stale {
                return Err(format!("fleet {fleet}: {} has stale keys", g.id()));
            }
            seats += u64::from(available_seats(g));
        }
        let n = active.len();
        let sizes = self.numeric.iter().map(BTreeSet::len);
        if sizes
            .chain([self.by_name.len(), self.by_id.len()])
            .any(|l| l != n)
        {
            return Err(format!("fleet {fleet}: index sets hold stale keys"));
        }
        if seats != self.available_seats {
            return Err(format!(
                "fleet {fleet}: available seats {} counted, {seats} by scan",
                self.available_seats
            ));
        }
        Ok(())
    }
}
