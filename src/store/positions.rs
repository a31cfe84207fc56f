//! The player sessions of one game session in listing order (creation time, then id): a
//! sorted list of sorted chunks, so each position costs its 24 bytes and little more.
//!
//! Positions almost always arrive in order (a new session is created now) or nearly so (ties
//! in creation time, ordered by random ids), and a full chunk passes its last position on to
//! the next chunk instead of splitting, so such inserts fill chunks completely; a `BTreeSet`
//! left its nodes about 60 % full and paid ~49 bytes a position at 1,000,000 sessions, and
//! splitting in halves left half the chunks of batch reservations half empty. An insert moves
//! at most two chunks' entries ([`CHUNK`] each), a removal one; finding the chunk is a binary
//! search over the chunks.

/// Where a player session sits in its game session's listing.
pub(super) type Position = (crate::domain::Timestamp, crate::domain::PlayerSessionId);

/// Positions per chunk (24 bytes each: 1.5 KiB).
const CHUNK: usize = 64;

#[derive(Default)]
pub(super) struct Positions {
    /// Sorted, non-empty, and each chunk's positions precede the next chunk's.
    chunks: Vec<Vec<Position>>,
}

impl Positions {
    /// The chunk that holds `p` or would: the first whose last position is not below `p`
    /// (the last chunk if `p` is beyond them all). `None` when empty.
    fn chunk_of(&self, p: &Position) -> Option<usize> {
        if self.chunks.is_empty() {
            return None;
        }
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|l| l < p));
        Some(i.min(self.chunks.len() - 1))
    }

    /// Adds `p` (nothing if it is there already).
    pub fn insert(&mut self, p: Position) {
        let Some(i) = self.chunk_of(&p) else {
            self.chunks.push(chunk_with(p));
            return;
        };
        let at = match self.chunks[i].binary_search(&p) {
            Ok(_) => return,
            Err(at) => at,
        };
        if self.chunks[i].len() < CHUNK {
            self.chunks[i].insert(at, p);
            return;
        }
        if self.chunks.get(i + 1).is_none_or(|next| next.len() < CHUNK) {
            // A full chunk hands its last position to the next one (a new one after the
            // last), which has room, and stays full. Positions arrive almost in order: appends,
            // and ties in creation time (a batch's players, calls in one microsecond) that
            // their random ids order. Splitting in halves would leave each such chunk half
            // empty for good, since later positions go to the chunks after it.
            let chunk = &mut self.chunks[i];
            let spilled = if at == chunk.len() {
                p
            } else {
                let last = chunk.pop().expect("a full chunk");
                chunk.insert(at, p);
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
            chunk.insert(at, p);
        } else {
            tail.insert(at - CHUNK / 2, p);
        }
        self.chunks.insert(i + 1, tail);
    }

    /// Removes `p`; returns whether it was there.
    pub fn remove(&mut self, p: &Position) -> bool {
        let Some(i) = self.chunk_of(p) else {
            return false;
        };
        let chunk = &mut self.chunks[i];
        let Ok(at) = chunk.binary_search(p) else {
            return false;
        };
        chunk.remove(at);
        if chunk.is_empty() {
            self.chunks.remove(i);
        }
        true
    }

    pub fn contains(&self, p: &Position) -> bool {
        self.chunk_of(p)
            .is_some_and(|i| self.chunks[i].binary_search(p).is_ok())
    }

    /// Every position, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Position> + '_ {
        self.chunks.iter().flatten()
    }

    /// The positions after `after` (all of them for `None`), in order.
    pub fn after(&self, after: Option<Position>) -> impl Iterator<Item = &Position> + '_ {
        let (i, at) = match after {
            None => (0, 0),
            Some(a) => {
                let i = self
                    .chunks
                    .partition_point(|c| c.last().is_some_and(|l| *l <= a));
                let at = self
                    .chunks
                    .get(i)
                    .map_or(0, |c| c.partition_point(|x| *x <= a));
                (i, at)
            }
        };
        self.chunks
            .get(i..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(k, c)| c[if k == 0 { at } else { 0 }..].iter())
    }
}

impl IntoIterator for Positions {
    type Item = Position;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<Position>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

impl<'a> IntoIterator for &'a Positions {
    type Item = &'a Position;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<Position>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten()
    }
}

fn chunk_with(p: Position) -> Vec<Position> {
    let mut c = Vec::with_capacity(CHUNK);
    c.push(p);
    c
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::{PlayerSessionId, Timestamp};

    fn pos(t: u16, id: u8) -> Position {
        (
            Timestamp::from_micros(i64::from(t)),
            PlayerSessionId::from_uuid(uuid::Uuid::from_bytes([id; 16])),
        )
    }

    proptest! {
        /// Any mix of inserts and removals (in order or not, with repeats) lists exactly what
        /// a `BTreeSet` would, from any cursor.
        #[test]
        fn behaves_like_an_ordered_set(
            ops in proptest::collection::vec((any::<bool>(), 0u16..400, 0u8..3), 0..600),
            cursor in (0u16..400, 0u8..3),
        ) {
            let mut p = Positions::default();
            let mut model = BTreeSet::new();
            for (i, (add, t, id)) in ops.into_iter().enumerate() {
                // Mostly appends, as in the daemon.
                let x = if i % 3 == 0 { pos(t, id) } else { pos(i as u16 + 400, id) };
                if add || i % 4 != 0 {
                    p.insert(x);
                    model.insert(x);
                } else {
                    prop_assert_eq!(p.remove(&x), model.remove(&x));
                }
                prop_assert_eq!(p.iter().count(), model.len());
            }
            prop_assert!(p.iter().copied().eq(model.iter().copied()));
            let c = pos(cursor.0, cursor.1);
            prop_assert_eq!(p.contains(&c), model.contains(&c));
            prop_assert!(p
                .after(Some(c))
                .copied()
                .eq(model.range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)).copied()));
            prop_assert!(p.after(None).copied().eq(model.iter().copied()));
            prop_assert!(p.chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
            prop_assert!(p.into_iter().eq(model.into_iter()));
        }
    }

    #[test]
    fn ties_at_the_end_leave_chunks_nearly_full() {
        // Groups of 25 positions with one timestamp each, ids in random order within a group
        // (concurrent calls in one microsecond): no chunk but the last is left half empty.
        let mut p = Positions::default();
        let mut seed = 0x9e37_79b9_u32;
        let n = CHUNK * 20;
        for i in 0..n {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            p.insert(pos((i / 25) as u16, (seed >> 24) as u8));
        }
        let len = p.iter().count();
        let (full, chunks) = (len.div_ceil(CHUNK), p.chunks.len());
        assert!(
            chunks * 100 <= full * 115,
            "{chunks} chunks for {len} positions (at least {full})"
        );
    }

    #[test]
    fn appends_fill_whole_chunks() {
        let mut p = Positions::default();
        for t in 0..(CHUNK * 10) as u16 {
            p.insert(pos(t, 1));
        }
        assert_eq!(p.chunks.len(), 10);
        assert!(p.chunks.iter().all(|c| c.len() == CHUNK));
    }
}
