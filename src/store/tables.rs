//! The two largest tables, one entry per player session: the session map (id -> record) and
//! the by-player index. Both are sharded hashbrown tables behind reader-writer locks, holding
//! only what they must: the session map keeps the boxed record alone (an 8-byte entry, hashed
//! by the id inside it) instead of a copy of the id beside the box, and the by-player index a
//! (player key, session id) pair per session with no per-player container.
//!
//! At 1,000,000 sessions the tables are half empty just after a doubling, so each byte of an
//! entry costs about two: the DashMaps these replace paid ~52 bytes a session for the session
//! map (24-byte slots) and ~86 for the by-player index (40-byte slots).

use hashbrown::HashTable;
use parking_lot::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use crate::domain::{PlayerSession, PlayerSessionId};

/// Shards: many more than cores, so concurrent calls rarely share a lock.
const SHARDS: usize = 128;

/// The shard of `hash`: bits the tables themselves do not use (they take the low bits for the
/// bucket and the top seven for the control byte).
fn shard_index(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// A hash table split into [`SHARDS`] independently locked shards.
struct Sharded<T> {
    shards: Box<[RwLock<HashTable<T>>]>,
}

impl<T> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// The shard of `hash` ([`shard_index`]).
    fn shard(&self, hash: u64) -> &RwLock<HashTable<T>> {
        &self.shards[shard_index(hash)]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Makes room for `additional` more entries in all (spread evenly over the shards).
    fn reserve(&self, additional: usize, hasher: impl Fn(&T) -> u64) {
        for s in self.shards.iter() {
            s.write().reserve(additional.div_ceil(SHARDS), &hasher);
        }
    }

    /// Runs `each` on every `(hash, item)` with the item's shard write-locked, locking each
    /// shard once for all its items (in their order). A locked instruction is a fence: one
    /// lock per item serializes the cache misses of big tables, and one per shard lets the
    /// CPU overlap a batch's misses (replay).
    fn batched<I>(&self, items: Vec<(u64, I)>, mut each: impl FnMut(&mut HashTable<T>, u64, I)) {
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

/// Player sessions by id.
pub(super) struct SessionMap {
    table: Sharded<Box<PlayerSession>>,
    hasher: ahash::RandomState,
}

impl Default for SessionMap {
    fn default() -> Self {
        SessionMap {
            table: Sharded::default(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl SessionMap {
    fn hash(&self, id: &PlayerSessionId) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The session `id`, read-locked (its shard) while the guard lives.
    pub fn get(&self, id: &PlayerSessionId) -> Option<MappedRwLockReadGuard<'_, PlayerSession>> {
        let h = self.hash(id);
        let shard = self.table.shard(h).read();
        RwLockReadGuard::try_map(shard, |t| t.find(h, |p| p.id == *id).map(|b| &**b)).ok()
    }

    /// The session `id`, write-locked (its shard) while the guard lives.
    pub fn get_mut(
        &self,
        id: &PlayerSessionId,
    ) -> Option<MappedRwLockWriteGuard<'_, PlayerSession>> {
        let h = self.hash(id);
        let shard = self.table.shard(h).write();
        RwLockWriteGuard::try_map(shard, |t| t.find_mut(h, |p| p.id == *id).map(|b| &mut **b)).ok()
    }

    pub fn contains_key(&self, id: &PlayerSessionId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `ps` unless a session with its id is there (then nothing changes); returns
    /// whether it was added. One probe of the table either way.
    pub fn insert_new(&self, ps: Box<PlayerSession>) -> bool {
        let h = self.hash(&ps.id);
        self.insert_in(&mut self.table.shard(h).write(), h, ps)
    }

    /// Adds `ps` (hashed `h`) to its locked shard unless its id is there.
    fn insert_in(
        &self,
        shard: &mut HashTable<Box<PlayerSession>>,
        h: u64,
        ps: Box<PlayerSession>,
    ) -> bool {
        match shard.entry(h, |p| p.id == ps.id, |p| self.hash(&p.id)) {
            hashbrown::hash_table::Entry::Occupied(_) => false,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(ps);
                true
            }
        }
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
        self.table.batched(items, |table, h, (i, ps)| {
            added[i] = self.insert_in(table, h, Box::new(ps));
        });
        added
    }

    /// Makes room for `additional` more sessions (replay: growing the table as it fills would
    /// rehash every record, reading each boxed record for its id).
    pub fn reserve(&self, additional: usize) {
        self.table.reserve(additional, |p| self.hash(&p.id));
    }

    pub fn remove(&self, id: &PlayerSessionId) -> Option<Box<PlayerSession>> {
        let h = self.hash(id);
        let mut shard = self.table.shard(h).write();
        shard
            .find_entry(h, |p| p.id == *id)
            .ok()
            .map(|e| e.remove().0)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Every id (a copy, shard by shard: for checks and tests, not the RPC path).
    pub fn ids(&self) -> Vec<PlayerSessionId> {
        let mut out = Vec::with_capacity(self.len());
        for s in self.table.shards.iter() {
            out.extend(s.read().iter().map(|p| p.id));
        }
        out
    }
}

/// The player sessions of each player, by the player's 64-bit key
/// ([`super::Store::player_key`]). Keys of two players may collide: readers check each
/// session's player id. Listing order (creation time, then id) is restored by the reader, who
/// sorts the few sessions one player has.
#[derive(Default)]
pub(super) struct PlayerIndex {
    table: Sharded<(u64, PlayerSessionId)>,
}

impl PlayerIndex {
    /// Adds `id` under `key` (the caller never adds the same session twice).
    pub fn insert(&self, key: u64, id: PlayerSessionId) {
        Self::insert_in(&mut self.table.shard(key).write(), key, id);
    }

    fn insert_in(shard: &mut HashTable<(u64, PlayerSessionId)>, key: u64, id: PlayerSessionId) {
        shard.insert_unique(key, (key, id), |e| e.0);
    }

    /// [`PlayerIndex::insert`] for many sessions at once, each shard locked once.
    pub fn insert_batch(&self, entries: Vec<(u64, PlayerSessionId)>) {
        self.table.batched(entries, Self::insert_in);
    }

    /// Makes room for `additional` more entries.
    pub fn reserve(&self, additional: usize) {
        self.table.reserve(additional, |e| e.0);
    }

    /// Removes `id` from under `key` (nothing if it is not there).
    pub fn remove(&self, key: u64, id: PlayerSessionId) {
        if let Ok(e) = self
            .table
            .shard(key)
            .write()
            .find_entry(key, |e| *e == (key, id))
        {
            e.remove();
        }
    }

    /// The sessions under `key`, in no particular order (another player's too on a collision).
    pub fn get(&self, key: u64) -> Vec<PlayerSessionId> {
        self.table
            .shard(key)
            .read()
            .iter_hash(key)
            .filter(|e| e.0 == key)
            .map(|e| e.1)
            .collect()
    }

    /// Whether `id` is under `key`.
    pub fn contains(&self, key: u64, id: PlayerSessionId) -> bool {
        self.table
            .shard(key)
            .read()
            .find(key, |e| *e == (key, id))
            .is_some()
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
        let ids: Vec<_> = (0..300).map(|_| PlayerSessionId::generate()).collect();
        let (one, batched) = (PlayerIndex::default(), PlayerIndex::default());
        // Keys in few shards, some equal: every shard takes several entries per lock.
        let entries: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ((i as u64 % 7) << 32, *id))
            .collect();
        for &(key, id) in &entries {
            one.insert(key, id);
        }
        batched.insert_batch(entries.clone());
        for k in 0..7u64 {
            let (mut a, mut b) = (one.get(k << 32), batched.get(k << 32));
            a.sort();
            b.sort();
            assert_eq!(a, b);
        }
        assert_eq!(batched.len(), 300);
    }

    #[test]
    fn a_multimap_that_survives_equal_keys() {
        let ix = PlayerIndex::default();
        let ids: Vec<_> = (0..50).map(|_| PlayerSessionId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            // Every key equal, or two keys in one shard: both must keep the entries apart.
            ix.insert(if i % 2 == 0 { 0 } else { 1 << 40 }, *id);
        }
        assert_eq!(ix.len(), 50);
        let mut zero = ix.get(0);
        zero.sort();
        let mut want: Vec<_> = ids.iter().copied().step_by(2).collect();
        want.sort();
        assert_eq!(zero, want);
        assert!(ix.contains(1 << 40, ids[1]) && !ix.contains(0, ids[1]));
        ix.remove(0, ids[1]);
        assert_eq!(ix.len(), 50, "removing under the wrong key removes nothing");
        ix.remove(1 << 40, ids[1]);
        assert!(!ix.contains(1 << 40, ids[1]));
        assert_eq!(ix.get(1 << 40).len(), 24);
        assert!(ix.get(7).is_empty());
    }
}
