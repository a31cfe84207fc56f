//! Recovery: load the newest snapshot, replay every later record, truncate a torn tail.
//!
//! - A torn or corrupt tail of the last segment (nothing valid after it) is truncated with a
//!   warning naming the file and offset: those records were never acknowledged.
//! - Corruption before the tail (a bad frame followed by valid ones, or in an older segment)
//!   refuses to start with an error naming file and offset, unless `truncate_corrupt` is set.
//! - Segments are preallocated: the zeros after the last frame are the end, unless a valid
//!   frame follows them (then it is corruption before the tail, as above).
//! - A missing or empty data directory starts fresh.

use std::{
    fs,
    path::{Path, PathBuf},
};

use prost::Message;

use super::{frame, io_err, records, segment, snapshot, JournalConfig, JournalError};
use crate::{domain::Lsn, proto::OperationRecord, storage::Checkpoint, store::Store};

/// Where the journal continues after recovery.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// LSN of the next record to append.
    pub next_lsn: Lsn,
    /// The last segment and its valid length (appends continue there).
    pub active_segment: Option<(PathBuf, u64)>,
    pub snapshot: Option<PathBuf>,
    pub records_replayed: u64,
    pub segments: usize,
}

impl Recovered {
    /// A fresh start (no files).
    pub fn fresh() -> Self {
        Recovered {
            next_lsn: 1,
            active_segment: None,
            snapshot: None,
            records_replayed: 0,
            segments: 0,
        }
    }
}

/// Is there a valid frame (continuing the LSN sequence) anywhere in `buf`?
fn valid_frame_after(buf: &[u8], expected_lsn: Lsn) -> bool {
    // Past the last non-zero byte there is only preallocated space: a frame reaching more than
    // a few bytes into it is not one that was written (and checking it would CRC megabytes of
    // zeros for every candidate offset of a torn record).
    const TRAILING_ZEROS: usize = 64;
    let data_end = buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut i = 1;
    while i < data_end {
        // A frame's length is never 0: skip runs of zeros at once.
        match buf[i..].iter().position(|&b| b != 0) {
            None => return false,
            Some(nz) if nz > 3 => i += nz - 3,
            Some(_) => {}
        }
        let claimed = buf.get(i..i + 4).map_or(usize::MAX, |l| {
            u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize
        });
        if claimed.saturating_add(i + frame::HEADER) > data_end + TRAILING_ZEROS {
            i += 1;
            continue;
        }
        if let frame::Next::Frame { body, .. } = frame::next(&buf[i..]) {
            if Checkpoint::decode(body)
                .is_ok_and(|c| c.first_lsn >= expected_lsn && !c.records.is_empty())
            {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Records routed to one replay worker: (record, position of its frame).
type Batch = Vec<(OperationRecord, usize, u64)>;

/// The game session a record belongs to: records of one game session are applied in LSN order
/// by one worker; different game sessions commute.
fn shard_of(r: &OperationRecord, shards: usize) -> usize {
    let key = if r.parent_id.is_empty() {
        &r.operation_id
    } else {
        &r.parent_id
    };
    (SHARD_HASH.hash_one(key) % shards as u64) as usize
}

static SHARD_HASH: std::sync::LazyLock<ahash::RandomState> =
    std::sync::LazyLock::new(|| ahash::RandomState::with_seeds(1, 2, 3, 4));

/// Rebuilds `store` (empty) from the files in `config.dir`, replaying on one worker per core.
pub fn recover(config: &JournalConfig, store: &Store) -> Result<Recovered, JournalError> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(1);
    let mut senders = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(64);
        senders.push(tx);
        receivers.push(rx);
    }
    let paths: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .into_iter()
            .map(|rx| {
                scope.spawn(move || -> Result<(), (usize, u64, String)> {
                    for batch in rx {
                        for (rec, file, offset) in batch {
                            let lsn = rec.lsn;
                            match records::decode(&rec, |g| store.game_info(g)) {
                                Ok(Some(change)) => store.apply(change, lsn),
                                Ok(None) => {}
                                Err(e) => return Err((file, offset, e.to_string())),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let result = read_and_route(config, store, &senders, &paths);
        drop(senders);
        let mut failure = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some((0, 0, "replay worker panicked".into()))),
            }
        }
        let out = result?;
        if let Some((file, offset, reason)) = failure {
            let path = paths
                .lock()
                .map(|p| p.get(file).cloned())
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(JournalError::Corrupt {
                path,
                offset,
                reason,
            });
        }
        Ok(out)
    })
}

fn read_and_route(
    config: &JournalConfig,
    store: &Store,
    workers: &[std::sync::mpsc::SyncSender<Batch>],
    paths: &std::sync::Mutex<Vec<PathBuf>>,
) -> Result<Recovered, JournalError> {
    let dir = &config.dir;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let _ = fs::remove_file(dir.join("snapshot.tmp"));
    let mut out = Recovered::fresh();
    let mut replay_from: Lsn = 1;
    if let Some(path) = snapshot::newest(dir)? {
        let stats = snapshot::load(store, &path)?;
        replay_from = stats.replay_from;
        out.next_lsn = replay_from;
        tracing::info!(path = %path.display(), game_sessions = stats.game_sessions,
            player_sessions = stats.player_sessions, "snapshot loaded");
        out.snapshot = Some(path);
    }
    let segments = segment::list(dir, segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX)
        .map_err(io_err(dir))?;
    out.segments = segments.len();
    if let Some((first, path)) = segments.first() {
        if *first > replay_from {
            return Err(JournalError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("journal starts at LSN {first} but LSN {replay_from} is needed (a segment is missing)"),
            });
        }
    }
    let mut last_lsn: Option<Lsn> = None;
    let count = segments.len();
    if let Ok(mut p) = paths.lock() {
        p.extend(segments.iter().map(|(_, p)| p.clone()));
    }
    let mut batches: Vec<Batch> = vec![Vec::new(); workers.len()];
    // One buffer for every segment: its pages are faulted in once, not once per segment.
    let mut buf = Vec::new();
    for (index, (first_lsn, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == count;
        if let Some((next_first, _)) = segments.get(index + 1) {
            if *next_first <= replay_from {
                // Covered by the snapshot (kept only for a consumer such as analytics).
                last_lsn = Some(next_first - 1);
                continue;
            }
        }
        buf.clear();
        fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut buf))
            .map_err(io_err(path))?;
        let mut offset = 0usize;
        let problem = loop {
            match frame::next(&buf[offset..]) {
                frame::Next::End => break None,
                // The preallocated rest of the segment: the end, unless records follow.
                frame::Next::Zeros => {
                    let expected = last_lsn.map_or(*first_lsn, |l| l + 1);
                    if valid_frame_after(&buf[offset..], expected) {
                        break Some("zeroed bytes where records should be");
                    }
                    break None;
                }
                frame::Next::Truncated => break Some("torn record (file ends inside it)"),
                frame::Next::Corrupt(why) => break Some(why),
                frame::Next::Frame { body, len } => {
                    let Ok(cp) = Checkpoint::decode(body) else {
                        break Some("undecodable checkpoint");
                    };
                    let n = cp.records.len() as Lsn;
                    if n == 0 {
                        break Some("empty checkpoint");
                    }
                    let expected = last_lsn.map_or(*first_lsn, |l| l + 1);
                    if cp.first_lsn != expected {
                        break Some("LSN sequence broken");
                    }
                    for (i, mut rec) in cp.records.into_iter().enumerate() {
                        let lsn = cp.first_lsn + i as Lsn;
                        rec.lsn = lsn;
                        if lsn < replay_from {
                            continue;
                        }
                        let shard = shard_of(&rec, workers.len());
                        batches[shard].push((rec, index, offset as u64));
                        if batches[shard].len() >= 256 {
                            let full = std::mem::take(&mut batches[shard]);
                            if workers[shard].send(full).is_err() {
                                break;
                            }
                        }
                        out.records_replayed += 1;
                    }
                    last_lsn = Some(cp.first_lsn + n - 1);
                    offset += len;
                }
            }
        };
        let valid_len = offset as u64;
        if let Some(reason) = problem {
            let expected = last_lsn.map_or(*first_lsn, |l| l + 1);
            let before_tail = !is_last || valid_frame_after(&buf[offset..], expected);
            if before_tail && !config.truncate_corrupt {
                return Err(JournalError::Corrupt {
                    path: path.clone(),
                    offset: valid_len,
                    reason: reason.into(),
                });
            }
            if before_tail {
                tracing::error!(path = %path.display(), offset = valid_len, reason,
                    "corrupt journal record: truncating here and dropping everything after it (--journal-truncate-corrupt)");
                for (_, later) in &segments[index + 1..] {
                    fs::remove_file(later).map_err(io_err(later))?;
                }
            } else {
                tracing::warn!(path = %path.display(), offset = valid_len, reason,
                    "torn journal tail: truncating (those records were never acknowledged)");
            }
            truncate(path, valid_len)?;
            out.active_segment = Some((path.clone(), valid_len));
            break;
        }
        if is_last {
            out.active_segment = Some((path.clone(), valid_len));
        }
    }
    for (shard, batch) in batches.into_iter().enumerate() {
        if !batch.is_empty() {
            let _ = workers[shard].send(batch);
        }
    }
    if let Some(l) = last_lsn {
        out.next_lsn = out.next_lsn.max(l + 1);
    }
    Ok(out)
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(len).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(first_lsn: Lsn, payload: usize) -> Vec<u8> {
        let cp = Checkpoint {
            first_lsn,
            records: vec![OperationRecord {
                operation_id: "x".repeat(payload),
                ..Default::default()
            }],
        };
        let mut out = Vec::new();
        frame::put(&mut out, &cp.encode_to_vec());
        out
    }

    /// A large torn record in a preallocated segment: every offset inside it claims some
    /// length, and most fit in the megabytes of zeros after it. None is a frame that was
    /// written; a real frame after the torn one still is found.
    #[test]
    fn a_torn_record_before_preallocated_zeros_hides_no_frame() {
        let big = checkpoint(7, 200_000);
        let mut torn = big[..big.len() / 2].to_vec();
        torn.resize(torn.len() + (8 << 20), 0);
        assert!(!valid_frame_after(&torn, 7));
        let mut followed = big[..big.len() / 2].to_vec();
        followed.extend(checkpoint(8, 10));
        followed.resize(followed.len() + (8 << 20), 0);
        assert!(valid_frame_after(&followed, 7));
        assert!(
            !valid_frame_after(&followed, 9),
            "an older LSN does not count"
        );
    }
}
