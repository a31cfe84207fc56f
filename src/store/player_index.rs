//! The by-player index: the player sessions of each player, as a sharded multimap from the
//! player's 64-bit key ([`super::Store::player_key`]) to player session ids.
//!
//! One 24-byte table entry per player session (the key and the id), with no per-player
//! container: a map of per-player vectors paid ~86 bytes a session at 1,000,000 (a 40-byte
//! slot, the tables half empty after a doubling). Keys of two players may collide: readers
//! check each session's player id. Listing order (creation time, then id) is restored by
//! the reader, who sorts the few sessions one player has.

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::domain::PlayerSessionId;

/// Shards: many more than cores, so concurrent calls rarely share a lock.
const SHARDS: usize = 128;

/// One shard: (player key, player session id) entries hashed by the key.
type Shard = RwLock<HashTable<(u64, PlayerSessionId)>>;

pub(super) struct PlayerIndex {
    shards: Box<[Shard]>,
}

impl Default for PlayerIndex {
    fn default() -> Self {
        PlayerIndex {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

impl PlayerIndex {
    /// The shard of `key`: bits the tables themselves do not use (they take the low bits for
    /// the bucket and the top seven for the control byte).
    fn shard(&self, key: u64) -> &Shard {
        &self.shards[(key >> 32) as usize % SHARDS]
    }

    /// Adds `id` under `key` (the caller never adds the same session twice).
    pub fn insert(&self, key: u64, id: PlayerSessionId) {
        self.shard(key)
            .write()
            .insert_unique(key, (key, id), |e| e.0);
    }

    /// Removes `id` from under `key` (nothing if it is not there).
    pub fn remove(&self, key: u64, id: PlayerSessionId) {
        if let Ok(e) = self.shard(key).write().find_entry(key, |e| *e == (key, id)) {
            e.remove();
        }
    }

    /// The sessions under `key`, in no particular order (another player's too on a collision).
    pub fn get(&self, key: u64) -> Vec<PlayerSessionId> {
        self.shard(key)
            .read()
            .iter_hash(key)
            .filter(|e| e.0 == key)
            .map(|e| e.1)
            .collect()
    }

    /// Whether `id` is under `key`.
    pub fn contains(&self, key: u64, id: PlayerSessionId) -> bool {
        self.shard(key)
            .read()
            .find(key, |e| *e == (key, id))
            .is_some()
    }

    /// Entries in all.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
