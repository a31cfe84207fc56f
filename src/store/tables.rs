//! The two largest tables, one entry per player session: the session map (id -> record) and
//! the by-player index. Both are sharded hashbrown tables behind reader-writer locks, holding
//! only what they must: each session-map shard packs its records in a slab of fixed-size
//! chunks and its table holds a 4-byte slot number per record (hashed by the id inside the
//! record) instead of a copy of the id or an 8-byte box pointer, and the by-player index holds
//! a (player key, session handle) pair per session with no per-player container. A session's
//! *handle* is its 32-bit hash in the session map ([`SessionMap::handle`]): 4 bytes instead of
//! the 16-byte id, and enough to find the session ([`SessionMap::ids_at`]). Sessions do share
//! handles (at 1,000,000 sessions about a hundred pairs do): whoever follows a handle checks
//! what it finds.
//!
//! At 1,000,000 sessions the tables are half empty just after a doubling, so each byte of an
//! entry costs about two: the DashMaps these replace paid ~52 bytes a session for the session
//! map (24-byte slots) and ~86 for the by-player index (40-byte slots); the by-player index
//! now pays ~19 (8-byte entries) and the session map ~10 (4-byte entries; boxed records in
//! 8-byte entries paid ~19 and an allocation each).

use hashbrown::HashTable;
use parking_lot::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use smallvec::SmallVec;

use crate::domain::{PlayerSession, PlayerSessionId};

/// Shards: many more than cores, so concurrent calls rarely share a lock.
const SHARDS: usize = 128;

/// The shard of `hash`: bits the tables themselves do not use (they take the low bits for the
/// bucket and the top seven for the control byte).
fn shard_index(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// The table hash of a 32-bit hash (a handle or a player key): the tables rehash from their
/// entries alone, so the 32 bits are all there is, spread over the 64 the tables and
/// [`shard_index`] use (a multiplication by an odd constant: the low bits stay as random as
/// the input's, the high ones mix all of it).
fn spread(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// What a shard of [`Sharded`] holds: a hash table, or a table with its records.
trait Shard: Default {
    fn len(&self) -> usize;
}

impl<T> Shard for HashTable<T> {
    fn len(&self) -> usize {
        HashTable::len(self)
    }
}

/// A table split into [`SHARDS`] independently locked shards.
struct Sharded<S> {
    shards: Box<[RwLock<S>]>,
}

impl<S: Shard> Default for Sharded<S> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| RwLock::new(S::default())).collect(),
        }
    }
}

impl<S: Shard> Sharded<S> {
    /// The shard of `hash` ([`shard_index`]).
    fn shard(&self, hash: u64) -> &RwLock<S> {
        &self.shards[shard_index(hash)]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Makes room for `additional` more entries in all, spread evenly over the shards: `grow`
    /// runs on each shard with its share.
    fn reserve(&self, additional: usize, grow: impl Fn(&mut S, usize)) {
        for s in self.shards.iter() {
            grow(&mut s.write(), additional.div_ceil(SHARDS));
        }
    }

    /// Runs `each` on every `(hash, item)` with the item's shard write-locked, locking each
    /// shard once for all its items (in their order). A locked instruction is a fence: one
    /// lock per item serializes the cache misses of big tables, and one per shard lets the
    /// CPU overlap a batch's misses (replay).
    fn batched<I>(&self, items: Vec<(u64, I)>, mut each: impl FnMut(&mut S, u64, I)) {
        let shard_of = shard_index;
        // A counting sort of the items by shard, stable (two entries for one key keep their
        // order).
        let mut starts = [0usize; SHARDS + 1];
        for (h, _) in &items {
            starts[shard_of(*h) + 1] += 1;
        }
        for s in 0..SHARDS {
            starts[s + 1] += starts[s];
        }
        let mut next = starts;
        let mut order = vec![0; items.len()];
        for (i, (h, _)) in items.iter().enumerate() {
            let s = shard_of(*h);
            order[next[s]] = i;
            next[s] += 1;
        }
        let mut slots: Vec<Option<(u64, I)>> = items.into_iter().map(Some).collect();
        for s in 0..SHARDS {
            let mine = &order[starts[s]..starts[s + 1]];
            if mine.is_empty() {
                continue;
            }
            let mut table = self.shards[s].write();
            for &i in mine {
                if let Some((h, item)) = slots[i].take() {
                    each(&mut table, h, item);
                }
            }
        }
    }
}

/// Records per chunk of a session-map shard: 85 of 96 bytes are 8,160 bytes, in mimalloc's
/// 8 KiB size class, eight to its 64 KiB page (0.4 % unused; 64 records, 6 KiB, left 4 KiB
/// of each page unused: ~6 bytes a session).
const SLAB_CHUNK: usize = 85;

/// One shard of the session map: its records packed densely in chunks of [`SLAB_CHUNK`]
/// (every chunk full but the last, which is not empty), and a table of their 4-byte slot
/// numbers hashed by the id in the record. Removing a record moves the last one into its
/// slot, so there are no holes and only one chunk per shard is partly used.
#[derive(Default)]
struct SlabShard {
    index: HashTable<u32>,
    chunks: Vec<Vec<PlayerSession>>,
}

impl Shard for SlabShard {
    fn len(&self) -> usize {
        self.index.len()
    }
}

/// Where `slot` is: (chunk, place in the chunk).
fn place(slot: u32) -> (usize, usize) {
    let s = slot as usize;
    (s / SLAB_CHUNK, s % SLAB_CHUNK)
}

/// The record in `slot` of `chunks`.
fn slot_of(chunks: &[Vec<PlayerSession>], slot: u32) -> &PlayerSession {
    let (c, i) = place(slot);
    &chunks[c][i]
}

impl SlabShard {
    fn find(&self, h: u64, id: &PlayerSessionId) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(h, |&s| slot_of(chunks, s).id == *id)
            .copied()
    }

    fn at(&self, slot: u32) -> &PlayerSession {
        slot_of(&self.chunks, slot)
    }

    fn at_mut(&mut self, slot: u32) -> &mut PlayerSession {
        let (c, i) = place(slot);
        &mut self.chunks[c][i]
    }

    /// Records held (slots in use).
    fn records(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |l| (self.chunks.len() - 1) * SLAB_CHUNK + l.len())
    }

    /// Adds `ps` (hashed `h`; `hash` hashes any id) unless its id is there; returns whether
    /// it was added. One probe of the table either way.
    fn insert_new(
        &mut self,
        h: u64,
        ps: PlayerSession,
        hash: impl Fn(&PlayerSessionId) -> u64,
    ) -> bool {
        // A shard would need 400 GB of records to pass u32::MAX slots.
        let slot = self.records() as u32;
        let SlabShard { index, chunks } = self;
        match index.entry(
            h,
            |&s| slot_of(chunks, s).id == ps.id,
            |&s| hash(&slot_of(chunks, s).id),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(slot);
                if chunks.last().is_none_or(|c| c.len() == SLAB_CHUNK) {
                    chunks.push(Vec::with_capacity(SLAB_CHUNK));
                }
                chunks.last_mut().expect("a chunk with room").push(ps);
                true
            }
        }
    }

    /// Removes the record of `id` (hashed `h`) and moves the last record into its slot.
    fn remove(
        &mut self,
        h: u64,
        id: &PlayerSessionId,
        hash: impl Fn(&PlayerSessionId) -> u64,
    ) -> Option<PlayerSession> {
        let last_slot = self.records().checked_sub(1)?;
        let SlabShard { index, chunks } = self;
        let slot = index
            .find_entry(h, |&s| slot_of(chunks, s).id == *id)
            .ok()?
            .remove()
            .0;
        let last = chunks.last_mut().expect("a record to remove");
        let tail = last.pop().expect("chunks are not empty");
        if last.is_empty() {
            chunks.pop();
        }
        if slot as usize == last_slot {
            return Some(tail);
        }
        // The last record moves into the freed slot, and its entry follows it.
        let moved = index
            .find_mut(hash(&tail.id), |&s| s as usize == last_slot)
            .expect("every record has an entry");
        *moved = slot;
        Some(std::mem::replace(self.at_mut(slot), tail))
    }
}

/// A player session's handle in the indexes: its 32-bit hash in the session map. Sessions
/// share handles (a 32-bit collision: about a hundred pairs at 1,000,000 sessions), so whoever
/// follows a handle ([`SessionMap::ids_at`]) checks each session it finds. Only meaningful
/// within one process: the indexes holding handles are rebuilt at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionHandle(u32);

#[cfg(test)]
impl SessionHandle {
    /// A handle made up (for tests of what holds handles).
    pub(crate) const fn for_tests(h: u32) -> Self {
        SessionHandle(h)
    }
}

/// Player sessions by id.
pub(super) struct SessionMap {
    table: Sharded<SlabShard>,
    hasher: ahash::RandomState,
    /// Tests narrow the hashes so that sessions share handles.
    #[cfg(test)]
    pub(super) hash_mask: u32,
}

impl Default for SessionMap {
    fn default() -> Self {
        SessionMap {
            table: Sharded::default(),
            hasher: ahash::RandomState::new(),
            #[cfg(test)]
            hash_mask: u32::MAX,
        }
    }
}

impl SessionMap {
    fn hash(&self, id: &PlayerSessionId) -> u64 {
        spread(self.handle(id).0)
    }

    /// The handle of `id`: its 32-bit hash in this map (stable while the process runs; the
    /// indexes that hold handles are rebuilt at start-up).
    pub fn handle(&self, id: &PlayerSessionId) -> SessionHandle {
        let h = self.hasher.hash_one(id) as u32;
        #[cfg(test)]
        let h = h & self.hash_mask;
        SessionHandle(h)
    }

    /// The ids of the sessions whose handle is `h`: one, none (it is gone), or on a 32-bit
    /// collision several.
    pub fn ids_at(&self, h: SessionHandle) -> SmallVec<[PlayerSessionId; 1]> {
        self.ids_at_where(h, |_| true)
    }

    /// [`SessionMap::ids_at`], of the sessions that pass `also` (one shard lock, one probe).
    pub fn ids_at_where(
        &self,
        h: SessionHandle,
        also: impl Fn(&PlayerSession) -> bool,
    ) -> SmallVec<[PlayerSessionId; 1]> {
        let mut ids = SmallVec::new();
        self.for_each_at(h, also, |p| ids.push(p.id));
        ids
    }

    /// Calls `f` with each session whose handle is `h` and that passes `also`, under one
    /// shard read lock and one probe: for walks that follow handles to the records themselves
    /// (a handle to an id and then the id to its record would probe twice).
    pub fn for_each_at(
        &self,
        h: SessionHandle,
        also: impl Fn(&PlayerSession) -> bool,
        mut f: impl FnMut(&PlayerSession),
    ) {
        let hash = spread(h.0);
        let shard = self.table.shard(hash).read();
        for &s in shard.index.iter_hash(hash) {
            let p = shard.at(s);
            if self.handle(&p.id) == h && also(p) {
                f(p);
            }
        }
    }

    /// The session `id`, read-locked (its shard) while the guard lives.
    pub fn get(&self, id: &PlayerSessionId) -> Option<MappedRwLockReadGuard<'_, PlayerSession>> {
        let h = self.hash(id);
        let shard = self.table.shard(h).read();
        RwLockReadGuard::try_map(shard, |s| s.find(h, id).map(|slot| s.at(slot))).ok()
    }

    /// The session `id`, write-locked (its shard) while the guard lives.
    pub fn get_mut(
        &self,
        id: &PlayerSessionId,
    ) -> Option<MappedRwLockWriteGuard<'_, PlayerSession>> {
        let h = self.hash(id);
        let shard = self.table.shard(h).write();
        RwLockWriteGuard::try_map(shard, |s| {
            let slot = s.find(h, id)?;
            Some(s.at_mut(slot))
        })
        .ok()
    }

    pub fn contains_key(&self, id: &PlayerSessionId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `ps` unless a session with its id is there (then nothing changes); returns
    /// whether it was added. One probe of the table either way.
    pub fn insert_new(&self, ps: PlayerSession) -> bool {
        let h = self.hash(&ps.id);
        self.table
            .shard(h)
            .write()
            .insert_new(h, ps, |id| self.hash(id))
    }

    /// [`SessionMap::insert_new`] for many sessions at once, each shard locked once; returns
    /// whether each was added, in order (of two with one id, the first is).
    pub fn insert_new_batch(&self, sessions: Vec<PlayerSession>) -> Vec<bool> {
        let mut added = vec![false; sessions.len()];
        let items = sessions
            .into_iter()
            .enumerate()
            .map(|(i, ps)| (self.hash(&ps.id), (i, ps)))
            .collect();
        self.table.batched(items, |shard, h, (i, ps)| {
            added[i] = shard.insert_new(h, ps, |id| self.hash(id));
        });
        added
    }

    /// Makes room for `additional` more sessions (replay: growing the table as it fills would
    /// rehash every record, reading each record for its id).
    pub fn reserve(&self, additional: usize) {
        self.table.reserve(additional, |s, n| {
            let SlabShard { index, chunks } = s;
            chunks.reserve(n.div_ceil(SLAB_CHUNK));
            index.reserve(n, |&slot| self.hash(&slot_of(chunks, slot).id));
        });
    }

    pub fn remove(&self, id: &PlayerSessionId) -> Option<PlayerSession> {
        let h = self.hash(id);
        self.table
            .shard(h)
            .write()
            .remove(h, id, |id| self.hash(id))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Every id (a copy, shard by shard: for checks and tests, not the RPC path).
    pub fn ids(&self) -> Vec<PlayerSessionId> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.table.shards.iter() {
            out.extend(s.read().chunks.iter().flatten().map(|p| p.id));
        }
        out
    }
}

/// The player sessions of each player, by the player's 32-bit key
/// ([`super::Store::player_key`]): one (key, session handle) entry per session, 8 bytes. Keys
/// of two players collide, and handles of two sessions: readers follow each handle
/// ([`SessionMap::ids_at`]) and check each session's player id. Listing order (creation time,
/// then id) is restored by the reader, who sorts the few sessions one player has.
#[derive(Default)]
pub(super) struct PlayerIndex {
    table: Sharded<HashTable<(u32, SessionHandle)>>,
}

impl PlayerIndex {
    /// Adds a session's `handle` under `key` (once per session: two sessions with one key and
    /// one handle have two equal entries).
    pub fn insert(&self, key: u32, handle: SessionHandle) {
        Self::insert_in(&mut self.table.shard(spread(key)).write(), key, handle);
    }

    fn insert_in(shard: &mut HashTable<(u32, SessionHandle)>, key: u32, handle: SessionHandle) {
        shard.insert_unique(spread(key), (key, handle), |e| spread(e.0));
    }

    /// [`PlayerIndex::insert`] for many sessions at once, each shard locked once.
    pub fn insert_batch(&self, entries: Vec<(u32, SessionHandle)>) {
        let items = entries.into_iter().map(|e| (spread(e.0), e)).collect();
        self.table.batched(items, |shard, _, (key, handle)| {
            Self::insert_in(shard, key, handle)
        });
    }

    /// Makes room for `additional` more entries.
    pub fn reserve(&self, additional: usize) {
        self.table
            .reserve(additional, |t, n| t.reserve(n, |e| spread(e.0)));
    }

    /// Removes one entry of `handle` under `key` (nothing if there is none).
    pub fn remove(&self, key: u32, handle: SessionHandle) {
        let hash = spread(key);
        if let Ok(e) = self
            .table
            .shard(hash)
            .write()
            .find_entry(hash, |e| *e == (key, handle))
        {
            e.remove();
        }
    }

    /// The entries under `key` that pass `pick`, mapped by it.
    fn under<T>(
        &self,
        key: u32,
        pick: impl Fn(&(u32, SessionHandle)) -> Option<T>,
    ) -> SmallVec<[T; 4]> {
        let hash = spread(key);
        self.table
            .shard(hash)
            .read()
            .iter_hash(hash)
            .filter_map(pick)
            .collect()
    }

    /// The handles under `key`, each once, in no particular order (another player's too on a
    /// key collision).
    pub fn get(&self, key: u32) -> SmallVec<[SessionHandle; 4]> {
        let mut out = self.under(key, |e| (e.0 == key).then_some(e.1));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Entries of `handle` under `key`.
    pub fn count(&self, key: u32, handle: SessionHandle) -> usize {
        self.under(key, |e| (*e == (key, handle)).then_some(()))
            .len()
    }

    /// Entries in all.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_insert_as_one_by_one() {
        let (one, batched) = (PlayerIndex::default(), PlayerIndex::default());
        // Keys in few shards, some equal: every shard takes several entries per lock.
        let entries: Vec<_> = (0..300u32)
            .map(|i| ((i % 7) * 128, SessionHandle(i * 31)))
            .collect();
        for &(key, h) in &entries {
            one.insert(key, h);
        }
        batched.insert_batch(entries.clone());
        for k in 0..7u32 {
            assert_eq!(one.get(k * 128), batched.get(k * 128));
        }
        assert_eq!(batched.len(), 300);
    }

    #[test]
    fn a_multimap_that_survives_equal_keys_and_handles() {
        let ix = PlayerIndex::default();
        let other = (1..)
            .find(|k| shard_index(spread(*k)) == shard_index(spread(0)))
            .unwrap();
        for h in 0..50u32 {
            // Every key equal, or two keys in one shard: both must keep the entries apart.
            ix.insert(if h % 2 == 0 { 0 } else { other }, SessionHandle(h));
        }
        // Two sessions with one key and one handle: two entries, one handle to follow.
        ix.insert(0, SessionHandle(4));
        assert_eq!(ix.len(), 51);
        assert_eq!(ix.count(0, SessionHandle(4)), 2);
        let want: Vec<_> = (0..50).step_by(2).map(SessionHandle).collect();
        assert_eq!(ix.get(0).to_vec(), want);
        assert_eq!(ix.count(other, SessionHandle(1)), 1);
        assert_eq!(ix.count(0, SessionHandle(1)), 0);
        ix.remove(0, SessionHandle(1));
        assert_eq!(ix.len(), 51, "removing under the wrong key removes nothing");
        ix.remove(other, SessionHandle(1));
        assert_eq!(ix.count(other, SessionHandle(1)), 0);
        assert_eq!(ix.get(other).len(), 24);
        ix.remove(0, SessionHandle(4));
        assert_eq!(
            (ix.count(0, SessionHandle(4)), ix.get(0).len()),
            (1, 25),
            "one entry each"
        );
        assert!(ix.get(7).is_empty());
    }

    fn session(id: PlayerSessionId) -> PlayerSession {
        let game = std::sync::Arc::new(crate::domain::GameSessionInfo {
            id: crate::domain::GameSessionId::parse("g", "gs-1").unwrap(),
            fleet_id: crate::domain::FleetId::parse("f", "fleet-1").unwrap(),
            ip_address: "127.0.0.1".into(),
            port: 7777,
        });
        let now = crate::domain::Timestamp::from_micros(1_000_000);
        PlayerSession {
            id,
            player: crate::domain::PlayerStrings::parse("p", "player-1", None).unwrap(),
            game,
            status: crate::domain::PlayerSessionStatus::Reserved,
            creation_time: now,
            termination_time: None,
            reservation_deadline: now,
            accepted_at: None,
            end_reason: None,
            lsns: Default::default(),
            error_count: 0,
        }
    }

    /// Inserts and removals in any order, across chunk boundaries and with every session in
    /// a few shards and sharing handles: the map finds exactly the sessions a model holds,
    /// each with its own record, and keeps its chunks dense.
    #[test]
    fn removals_move_records_and_keep_every_lookup_right() {
        for mask in [u32::MAX, 0b11 << 30, 0] {
            let map = SessionMap {
                hash_mask: mask,
                ..SessionMap::default()
            };
            let mut model = std::collections::HashMap::new();
            let mut seed = 0x2545_f491_u32;
            let mut next = || {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                seed >> 8
            };
            let mut live: Vec<PlayerSessionId> = Vec::new();
            for i in 0..3_000u32 {
                if live.is_empty() || next() % 3 != 0 {
                    let id = PlayerSessionId::generate();
                    let mut ps = session(id);
                    ps.error_count = i;
                    assert!(map.insert_new(ps.clone()));
                    assert!(
                        !map.insert_new(ps),
                        "a second insert of one id adds nothing"
                    );
                    model.insert(id, i);
                    live.push(id);
                } else {
                    let id = live.swap_remove(next() as usize % live.len());
                    let removed = map.remove(&id).expect("live");
                    assert_eq!((removed.id, removed.error_count), (id, model[&id]));
                    model.remove(&id);
                    assert!(map.remove(&id).is_none() && map.get(&id).is_none());
                }
                if i % 97 == 0 {
                    if let Some(id) = live.first() {
                        map.get_mut(id).expect("live").error_count += 1_000_000;
                        *model.get_mut(id).expect("live") += 1_000_000;
                    }
                }
            }
            assert_eq!(map.len(), model.len());
            for (id, n) in &model {
                assert_eq!(map.get(id).map(|p| p.error_count), Some(*n));
                assert!(map.ids_at(map.handle(id)).contains(id));
            }
            let mut ids = map.ids();
            ids.sort();
            let mut want: Vec<_> = model.keys().copied().collect();
            want.sort();
            assert_eq!(ids, want);
            for s in map.table.shards.iter() {
                let s = s.read();
                assert_eq!(s.records(), s.index.len());
                assert!(s.chunks.iter().rev().skip(1).all(|c| c.len() == SLAB_CHUNK));
                assert!(s.chunks.last().is_none_or(|c| !c.is_empty()));
            }
        }
    }

    #[test]
    fn handles_find_every_session_that_shares_them() {
        let mut map = SessionMap::default();
        let ids: Vec<_> = (0..3).map(|_| PlayerSessionId::generate()).collect();
        let h = map.handle(&ids[0]);
        assert!(map.ids_at(h).is_empty());
        assert!(map.insert_new(session(ids[0])));
        assert_eq!(map.ids_at(h).to_vec(), vec![ids[0]]);
        // Narrowed hashes: every session has the handle 0.
        map = SessionMap {
            hash_mask: 0,
            ..SessionMap::default()
        };
        for id in &ids {
            assert!(map.insert_new(session(*id)));
            assert_eq!(map.handle(id), SessionHandle(0));
        }
        let mut all = map.ids_at(SessionHandle(0)).to_vec();
        all.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(all, want);
        map.remove(&ids[1]);
        assert_eq!(map.ids_at(SessionHandle(0)).len(), 2);
        assert!(map.get(&ids[1]).is_none() && map.get(&ids[2]).is_some());
    }
}
