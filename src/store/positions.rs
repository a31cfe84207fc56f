//! The player sessions of one game session in listing order (creation time, then id): a
//! sorted list of sorted chunks of 12-byte entries, the creation time and the session's
//! handle ([`SessionHandle`]), so each position costs its 12 bytes and little more.
//!
//! An entry does not hold the id it is ordered by. Entries of different creation times
//! compare by time alone; entries of one creation time (a batch's players, calls in one
//! microsecond, an import that gives every row one time) compare by the ids they stand for,
//! which the caller's resolver finds in the session map by handle (`Resolve`: the game
//! session's sessions created at that time with that handle). A binary search resolves only
//! the tied entries it meets, so an insert, lookup or removal among n ties resolves
//! O(log n) of them, and an append (no tie) none. A session that shares its creation time
//! and 32-bit handle with another listed session of its game session (one tied pair in 2^32:
//! a store of 1,000,000 sessions made in batches of 25 holds 12,000,000 tied pairs, so about
//! one such pair in 360 stores) is kept whole, (time, id), in a side set that is almost
//! always absent. So each entry stands for exactly one session: the one
//! its resolver finds that is not in the side set.
//!
//! Positions almost always arrive in order (a new session is created now) or nearly so (ties
//! in creation time), and a full chunk passes its last entry on to the next chunk instead of
//! splitting, so such inserts fill chunks completely; a `BTreeSet` left its nodes about 60 %
//! full, and splitting in halves left half the chunks of batch reservations half empty. An
//! insert moves at most two chunks' entries ([`CHUNK`] each), a removal one; finding the
//! chunk is a binary search over the chunks.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use smallvec::SmallVec;

use super::SessionHandle;
use crate::domain::{PlayerSessionId, Timestamp};

/// Where a player session sits in its game session's listing.
pub(super) type Position = (Timestamp, PlayerSessionId);

/// The player sessions of the game session created at a time with a handle (one, or on a
/// collision several; none if it is gone). Called with no player session guard held.
pub(super) trait Resolve:
    Fn(Timestamp, SessionHandle) -> SmallVec<[PlayerSessionId; 1]>
{
}
impl<F: Fn(Timestamp, SessionHandle) -> SmallVec<[PlayerSessionId; 1]>> Resolve for F {}

/// Entries per chunk (12 bytes each: 1.5 KiB, one of the allocator's size classes).
const CHUNK: usize = 128;

/// One position: creation time (microseconds) and handle, 12 bytes (4-byte aligned).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C, packed(4))]
struct Entry {
    micros: i64,
    handle: SessionHandle,
}

impl Entry {
    fn new(t: Timestamp, handle: SessionHandle) -> Self {
        Entry {
            micros: t.as_micros(),
            handle,
        }
    }
    fn time(self) -> Timestamp {
        Timestamp::from_micros(self.micros)
    }
    fn handle(self) -> SessionHandle {
        self.handle
    }
}

#[derive(Default)]
pub(super) struct Positions {
    /// Sorted, non-empty, and each chunk's entries precede the next chunk's.
    chunks: Vec<Vec<Entry>>,
    /// Positions of sessions that share their time and handle with another listed session
    /// of this game session, kept whole (no entry stands for them). Boxed so the field costs
    /// a game session 8 bytes, not 24: it is almost always absent.
    #[allow(clippy::box_collection)]
    whole: Option<Box<BTreeSet<Position>>>,
}

impl Positions {
    fn in_whole(&self, p: &Position) -> bool {
        self.whole.as_ref().is_some_and(|w| w.contains(p))
    }

    /// The session `e` stands for: the one `resolve` finds that is not kept whole.
    fn id_of(&self, e: Entry, resolve: &impl Resolve) -> Option<PlayerSessionId> {
        let t = e.time();
        let ids = resolve(t, e.handle());
        match self.whole.as_ref() {
            None => ids.into_iter().min(),
            Some(w) => ids.into_iter().filter(|id| !w.contains(&(t, *id))).min(),
        }
    }

    /// Whether `e` comes before `p` (or is it, with `or_equal`).
    fn before(&self, e: Entry, p: &Position, or_equal: bool, resolve: &impl Resolve) -> bool {
        match e.time().cmp(&p.0) {
            Ordering::Less => true,
            Ordering::Greater => false,
            // An entry that stands for nothing (never, if the indexes agree) sorts first.
            Ordering::Equal => self
                .id_of(e, resolve)
                .is_none_or(|id| id < p.1 || (or_equal && id == p.1)),
        }
    }

    /// The first place (chunk, index) whose entry is not `below`, `below` holding for a
    /// prefix of the entries; `(chunks.len(), 0)` past them all.
    fn first_not(&self, below: impl Fn(Entry) -> bool) -> (usize, usize) {
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|&l| below(l)));
        match self.chunks.get(i) {
            Some(c) => (i, c.partition_point(|&e| below(e))),
            None => (i, 0),
        }
    }

    /// The entries from place `(i, at)` on.
    fn entries_from(&self, (i, at): (usize, usize)) -> impl Iterator<Item = Entry> + '_ {
        self.chunks
            .get(i..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(k, c)| c[if k == 0 { at } else { 0 }..].iter().copied())
    }

    /// Whether an entry or a kept-whole position has the creation time `t` (no resolving).
    fn has_time(&self, t: Timestamp) -> bool {
        let (i, at) = self.first_not(|e| e.time() < t);
        let entry = self.chunks.get(i).and_then(|c| c.get(at));
        entry.is_some_and(|e| e.time() == t)
            || self
                .whole
                .as_ref()
                .is_some_and(|w| w.range((t, id_min())..=(t, id_max())).next().is_some())
    }

    /// The place of the entry standing for `(t, id)` (handle `h`), if there is one: a binary
    /// search, resolving only the entries of time `t` it meets. `resolve` need not find the
    /// session itself any more (a removal after the record went).
    fn entry_of(
        &self,
        (t, id): Position,
        h: SessionHandle,
        resolve: &impl Resolve,
    ) -> Option<(usize, usize)> {
        let resolve = |ti: Timestamp, hi: SessionHandle| {
            let mut ids = resolve(ti, hi);
            if ti == t && hi == h && !ids.contains(&id) {
                ids.push(id);
            }
            ids
        };
        let (i, at) = self.first_not(|e| self.before(e, &(t, id), false, &resolve));
        let &e = self.chunks.get(i)?.get(at)?;
        (e.time() == t && e.handle() == h && self.id_of(e, &resolve) == Some(id)).then_some((i, at))
    }

    /// Adds the position `(t, id)` of a session whose handle is `h`, new to this listing
    /// (already findable by `resolve`, which must not find sessions of this game session
    /// that are not listed yet). Appends resolve nothing; a tie in creation time resolves
    /// the handle once and the ties the binary search meets.
    pub fn insert(&mut self, (t, id): Position, h: SessionHandle, resolve: impl Resolve) {
        let entry = Entry::new(t, h);
        let last = self.chunks.last().and_then(|c| c.last()).map(|e| e.time());
        let whole_last = self.whole.as_ref().and_then(|w| w.last()).map(|p| p.0);
        if last.is_none_or(|l| l < t) && whole_last.is_none_or(|l| l < t) {
            // An append (the common case): later than everything, nothing to resolve.
            match self.chunks.last_mut() {
                Some(c) if c.len() < CHUNK => c.push(entry),
                _ => self.chunks.push(chunk_with(entry)),
            }
            return;
        }
        if self.has_time(t) && resolve(t, h).len() > 1 {
            // Another listed session has this time and handle: an entry could not tell
            // them apart.
            self.whole.get_or_insert_default().insert((t, id));
            return;
        }
        if self.chunks.is_empty() {
            self.chunks.push(chunk_with(entry));
            return;
        }
        // No entry of time `t` has handle `h`, so none resolves to `id`.
        let (i, at) = self.first_not(|e| self.before(e, &(t, id), false, &resolve));
        let (i, at) = if i == self.chunks.len() {
            (i - 1, self.chunks[i - 1].len())
        } else {
            (i, at)
        };
        if self.chunks[i].len() < CHUNK {
            self.chunks[i].insert(at, entry);
            return;
        }
        if self.chunks.get(i + 1).is_none_or(|next| next.len() < CHUNK) {
            // A full chunk hands its last entry to the next one (a new one after the last),
            // which has room, and stays full. Positions arrive almost in order: appends, and
            // ties in creation time (a batch's players, calls in one microsecond) that their
            // random ids order. Splitting in halves would leave each such chunk half empty
            // for good, since later positions go to the chunks after it.
            let chunk = &mut self.chunks[i];
            let spilled = if at == chunk.len() {
                entry
            } else {
                let last = chunk.pop().expect("a full chunk");
                chunk.insert(at, entry);
                last
            };
            match self.chunks.get_mut(i + 1) {
                Some(next) => next.insert(0, spilled),
                None => self.chunks.push(chunk_with(spilled)),
            }
            return;
        }
        let chunk = &mut self.chunks[i];
        let mut tail = Vec::with_capacity(CHUNK);
        tail.extend(chunk.drain(CHUNK / 2..));
        if at <= CHUNK / 2 {
            chunk.insert(at, entry);
        } else {
            tail.insert(at - CHUNK / 2, entry);
        }
        self.chunks.insert(i + 1, tail);
    }

    /// Removes the position `(t, id)` of the session whose handle is `h`; returns whether it
    /// was there. `resolve` may or may not still find the session.
    pub fn remove(&mut self, (t, id): Position, h: SessionHandle, resolve: impl Resolve) -> bool {
        if let Some(w) = self.whole.as_mut() {
            if w.remove(&(t, id)) {
                if w.is_empty() {
                    self.whole = None;
                }
                return true;
            }
        }
        let Some((i, at)) = self.entry_of((t, id), h, &resolve) else {
            return false;
        };
        let chunk = &mut self.chunks[i];
        chunk.remove(at);
        if chunk.is_empty() {
            self.chunks.remove(i);
        }
        true
    }

    /// Whether the position `(t, id)` of the session whose handle is `h` is listed.
    pub fn contains(&self, p: &Position, h: SessionHandle, resolve: impl Resolve) -> bool {
        self.in_whole(p) || self.entry_of(*p, h, &resolve).is_some()
    }

    /// The positions after `after` (all of them for `None`), in order, each entry resolved
    /// as it is reached (so no guard `resolve` takes is held between items).
    pub fn after<R: Resolve>(&self, after: Option<Position>, resolve: R) -> Listing<'_, R> {
        let (start, whole) = match after {
            None => ((0, 0), self.whole.as_ref().map(|w| w.range(..))),
            Some(a) => (
                self.first_not(|e| self.before(e, &a, true, &resolve)),
                self.whole
                    .as_ref()
                    .map(|w| w.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))),
            ),
        };
        Listing {
            positions: self,
            place: start,
            whole: whole.into_iter().flatten().peekable(),
            next_entry: None,
            resolve,
        }
    }

    /// The entries in listing order, unresolved, if no position is kept whole (then each
    /// entry stands for the one session of this game session created at its time with its
    /// handle, and the entries are the whole listing); `None` otherwise.
    pub fn in_order_unresolved(
        &self,
    ) -> Option<impl Iterator<Item = (Timestamp, SessionHandle)> + '_> {
        self.whole
            .is_none()
            .then(|| self.entries_from((0, 0)).map(|e| (e.time(), e.handle())))
    }

    /// Every position, in order.
    pub fn iter<R: Resolve>(&self, resolve: R) -> Listing<'_, R> {
        self.after(None, resolve)
    }

    /// Checks every entry stands for exactly one session, kept-whole positions are not
    /// entries too, and the listing is strictly ordered.
    pub fn check(&self, resolve: impl Resolve) -> Result<(), String> {
        for e in self.entries_from((0, 0)) {
            let t = e.time();
            let n = resolve(t, e.handle())
                .into_iter()
                .filter(|id| !self.in_whole(&(t, *id)))
                .count();
            if n != 1 {
                return Err(format!("entry {e:?} stands for {n} sessions"));
            }
        }
        let listed: Vec<Position> = self.iter(&resolve).collect();
        if listed.windows(2).any(|w| w[0] >= w[1]) {
            return Err("listing out of order".into());
        }
        if self.chunks.iter().any(|c| c.is_empty() || c.len() > CHUNK) {
            return Err("a chunk empty or over-full".into());
        }
        Ok(())
    }
}

/// The positions of a listing from a place on ([`Positions::after`]), in order.
pub(super) struct Listing<'a, R> {
    positions: &'a Positions,
    place: (usize, usize),
    whole: std::iter::Peekable<
        std::iter::Flatten<std::option::IntoIter<std::collections::btree_set::Range<'a, Position>>>,
    >,
    /// The next entry's position, resolved but not yet returned.
    next_entry: Option<Position>,
    resolve: R,
}

impl<R: Resolve> Listing<'_, R> {
    /// The position of the next entry that stands for a session, resolved.
    fn peek_entry(&mut self) -> Option<Position> {
        while self.next_entry.is_none() {
            let (i, at) = self.place;
            let chunk = self.positions.chunks.get(i)?;
            let Some(&e) = chunk.get(at) else {
                self.place = (i + 1, 0);
                continue;
            };
            self.place = (i, at + 1);
            self.next_entry = self
                .positions
                .id_of(e, &self.resolve)
                .map(|id| (e.time(), id));
        }
        self.next_entry
    }
}

impl<R: Resolve> Iterator for Listing<'_, R> {
    type Item = Position;
    fn next(&mut self) -> Option<Position> {
        let entry = self.peek_entry();
        match (entry, self.whole.peek()) {
            (Some(e), Some(&&w)) if w < e => self.whole.next().copied(),
            (Some(_), _) => self.next_entry.take(),
            (None, _) => self.whole.next().copied(),
        }
    }
}

fn id_min() -> PlayerSessionId {
    PlayerSessionId::from_uuid(uuid::Uuid::nil())
}

fn id_max() -> PlayerSessionId {
    PlayerSessionId::from_uuid(uuid::Uuid::from_u128(u128::MAX))
}

fn chunk_with(e: Entry) -> Vec<Entry> {
    let mut c = Vec::with_capacity(CHUNK);
    c.push(e);
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn id(n: u16) -> PlayerSessionId {
        PlayerSessionId::from_uuid(uuid::Uuid::from_u128(u128::from(n)))
    }

    /// The sessions of one game session (the session map's part): id -> (time, handle).
    #[derive(Default)]
    struct Sessions(BTreeMap<PlayerSessionId, (Timestamp, SessionHandle)>);

    impl Sessions {
        fn resolver(&self) -> impl Resolve + '_ {
            |t, h| {
                self.0
                    .iter()
                    .filter(|(_, &(ti, hi))| ti == t && hi == h)
                    .map(|(id, _)| *id)
                    .collect()
            }
        }
    }

    proptest! {
        /// Any mix of inserts and removals (in order or not, ties in time, handles shared by
        /// sessions of one time) lists exactly what a `BTreeSet` would, from any cursor.
        #[test]
        fn behaves_like_an_ordered_set(
            ops in proptest::collection::vec((any::<bool>(), 0u16..300, 0u32..4), 0..600),
            cursor in (0u16..300, 0u16..1200),
        ) {
            let mut p = Positions::default();
            let mut sessions = Sessions::default();
            let mut model = BTreeSet::new();
            for (i, (add, t, h)) in ops.into_iter().enumerate() {
                // Mostly appends, as in the daemon; few handles, so ties share them.
                let t = Timestamp::from_micros(i64::from(if i % 3 == 0 { t } else { i as u16 / 4 + 300 }));
                if add || model.is_empty() {
                    let x = (t, id((i as u32 * 7919 % 1200) as u16));
                    if sessions.0.contains_key(&x.1) {
                        continue;
                    }
                    let h = SessionHandle::for_tests(h);
                    sessions.0.insert(x.1, (t, h));
                    p.insert(x, h, sessions.resolver());
                    model.insert(x);
                } else {
                    let x = *model.iter().nth(i % model.len()).unwrap();
                    let (_, h) = sessions.0.remove(&x.1).unwrap();
                    prop_assert!(p.remove(x, h, sessions.resolver()));
                    model.remove(&x);
                }
                prop_assert_eq!(p.iter(sessions.resolver()).count(), model.len());
            }
            let r = sessions.resolver();
            prop_assert_eq!(p.check(&r), Ok(()));
            prop_assert!(p.iter(&r).eq(model.iter().copied()));
            let c = (Timestamp::from_micros(i64::from(cursor.0)), id(cursor.1));
            prop_assert!(p
                .after(Some(c), &r)
                .eq(model.range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)).copied()));
            for x in &model {
                prop_assert!(p.contains(x, sessions.0[&x.1].1, &r));
            }
        }
    }

    #[test]
    fn an_entry_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 12);
    }

    #[test]
    fn a_shared_time_and_handle_keeps_the_later_session_whole() {
        let mut p = Positions::default();
        let mut sessions = Sessions::default();
        let t = Timestamp::from_micros(5);
        let h = SessionHandle::for_tests(9);
        for n in [3, 1, 2] {
            sessions.0.insert(id(n), (t, h));
            p.insert((t, id(n)), h, sessions.resolver());
        }
        assert_eq!(p.entries_from((0, 0)).count(), 1);
        assert_eq!(p.whole.as_ref().map(|w| w.len()), Some(2));
        let listed: Vec<_> = p.iter(sessions.resolver()).map(|(_, id)| id).collect();
        assert_eq!(listed, [id(1), id(2), id(3)]);
        // The entry's own session leaves: the others stay, kept whole.
        sessions.0.remove(&id(3));
        assert!(p.remove((t, id(3)), h, sessions.resolver()));
        let listed: Vec<_> = p.iter(sessions.resolver()).map(|(_, id)| id).collect();
        assert_eq!(listed, [id(1), id(2)]);
        assert_eq!(p.check(sessions.resolver()), Ok(()));
        for n in [1, 2] {
            sessions.0.remove(&id(n));
            assert!(p.remove((t, id(n)), h, sessions.resolver()));
        }
        assert!(p.whole.is_none() && p.chunks.is_empty());
    }

    #[test]
    fn ten_thousand_ties_cost_a_logarithmic_number_of_lookups() {
        // An import with one creation time for every row: each insert, lookup and removal
        // resolves the few ties its binary search meets, not the whole tie.
        use std::cell::Cell;
        use std::collections::HashMap;
        let t = Timestamp::from_micros(7);
        let mut by_handle: HashMap<SessionHandle, PlayerSessionId> = HashMap::new();
        let calls = Cell::new(0usize);
        let mut p = Positions::default();
        let mut all = Vec::new();
        for k in 0..10_000u32 {
            // Distinct ids in a scrambled order (10,007 is prime).
            let x = (t, id((k * 7919 % 10_007) as u16));
            let h = SessionHandle::for_tests(k);
            by_handle.insert(h, x.1);
            all.push((h, x));
            let resolve = |_, h| {
                calls.set(calls.get() + 1);
                by_handle.get(&h).copied().into_iter().collect()
            };
            p.insert(x, h, resolve);
        }
        let resolve = |_, h| {
            calls.set(calls.get() + 1);
            by_handle.get(&h).copied().into_iter().collect()
        };
        let per_insert = calls.replace(0) / all.len();
        assert!(per_insert <= 40, "{per_insert} lookups an insert");
        for (h, x) in &all {
            assert!(p.contains(x, *h, resolve));
        }
        let per_lookup = calls.replace(0) / all.len();
        assert!(per_lookup <= 40, "{per_lookup} lookups a contains");
        let mut sorted: Vec<_> = all.iter().map(|&(_, x)| x).collect();
        sorted.sort_unstable();
        assert!(p.iter(&resolve).eq(sorted.iter().copied()));
        calls.set(0);
        for (h, x) in all.iter().step_by(2) {
            assert!(p.remove(*x, *h, resolve));
        }
        let per_remove = calls.get() / all.len().div_ceil(2);
        assert!(per_remove <= 40, "{per_remove} lookups a removal");
    }

    #[test]
    fn ties_at_the_end_leave_chunks_nearly_full() {
        // Groups of 25 positions with one timestamp each, ids in random order within a group
        // (concurrent calls in one microsecond): no chunk but the last is left half empty.
        let mut p = Positions::default();
        let mut sessions = Sessions::default();
        let mut seed = 0x9e37_79b9_u32;
        let n = CHUNK * 20;
        for i in 0..n {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = (
                Timestamp::from_micros((i / 25) as i64),
                id((seed >> 16) as u16),
            );
            if sessions.0.contains_key(&x.1) {
                continue;
            }
            let h = SessionHandle::for_tests(seed);
            sessions.0.insert(x.1, (x.0, h));
            p.insert(x, h, sessions.resolver());
        }
        let len = p.iter(sessions.resolver()).count();
        assert_eq!(len, sessions.0.len());
        let (full, chunks) = (len.div_ceil(CHUNK), p.chunks.len());
        assert!(
            chunks * 100 <= full * 115,
            "{chunks} chunks for {len} positions (at least {full})"
        );
        assert_eq!(p.check(sessions.resolver()), Ok(()));
    }

    #[test]
    fn appends_fill_whole_chunks() {
        let mut p = Positions::default();
        let none = |_: Timestamp, _: SessionHandle| -> SmallVec<[PlayerSessionId; 1]> {
            unreachable!("an append resolves nothing")
        };
        for t in 0..(CHUNK * 10) as i64 {
            p.insert(
                (Timestamp::from_micros(t), id(1)),
                SessionHandle::for_tests(1),
                none,
            );
        }
        assert_eq!(p.chunks.len(), 10);
        assert!(p.chunks.iter().all(|c| c.len() == CHUNK));
    }
}
