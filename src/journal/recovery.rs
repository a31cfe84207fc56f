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
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use prost::Message;

use super::{frame, io_err, protowire, records, segment, snapshot, JournalConfig, JournalError};
use crate::{
    domain::{GameSessionInfo, Lsn, LSN_MAX},
    storage::Checkpoint,
    store::{ReplayBatch, Store},
};

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

/// Past the last non-zero byte of a segment there is only preallocated space: a frame reaching
/// more than this many bytes into it is not one that was written (and checking it would CRC
/// megabytes of zeros for every candidate offset of a torn record).
const TRAILING_ZEROS: usize = 64;

/// Chunks kept for reuse while replaying (more are in flight only while workers hold them).
const SPARE_BUFFERS: usize = 8;

/// Is there a valid frame (continuing the LSN sequence) anywhere in `buf`?
fn valid_frame_after(buf: &[u8], expected_lsn: Lsn) -> bool {
    let data_end = buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut i = 1;
    while i < data_end {
        // A frame's length is never 0: skip runs of zeros at once.
        match buf[i..].iter().position(|&b| b != 0) {
            None => return false,
            Some(nz) if nz > 3 => i += nz - 3,
            Some(_) => {}
        }
        let claimed = frame::claimed_len(&buf[i..]).unwrap_or(usize::MAX);
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

/// Records routed to one replay worker: spans of one segment's bytes, each a record with its
/// LSN and the offset of its frame (for errors). The bytes are shared, not copied: the reader
/// thread only splits checkpoints, and the workers decode.
struct Batch {
    segment: Arc<Vec<u8>>,
    file: usize,
    records: Vec<Routed>,
}

struct Routed {
    bytes: Range<usize>,
    lsn: Lsn,
    frame: u64,
}

/// The worker for a record: records of one game session are applied in LSN order by one
/// worker (its key is the game session's id); different game sessions commute.
fn shard_of(key: &[u8], shards: usize) -> usize {
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
                    let mut pending = ReplayBatch::default();
                    // The game session of the last reservation: runs of records share one.
                    // (A game session's fixed part never changes, nor is one removed, during
                    // replay.)
                    let last_game = std::cell::RefCell::new(None::<Arc<GameSessionInfo>>);
                    let game = |g: &str| {
                        let mut last = last_game.borrow_mut();
                        if let Some(info) = last.as_ref().filter(|i| i.id.as_str() == g) {
                            return Some(info.clone());
                        }
                        let info = store.game_info(g)?;
                        *last = Some(info.clone());
                        Some(info)
                    };
                    for batch in rx {
                        for r in &batch.records {
                            let bytes = &batch.segment[r.bytes.clone()];
                            match records::decode_bytes(bytes, r.lsn, game) {
                                Ok(Some(change)) => {
                                    store.apply_batched(&mut pending, change, r.lsn)
                                }
                                Ok(None) => {}
                                Err(e) => return Err((batch.file, r.frame, e.to_string())),
                            }
                        }
                    }
                    store.flush_replay(&mut pending);
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
    store.reserve_player_sessions(records_ahead(&segments, replay_from));
    let mut router = Router {
        workers,
        pending: (0..workers.len()).map(|_| Vec::new()).collect(),
    };
    // Segments are read a chunk at a time into buffers reused once the workers are done with
    // them: a few chunks' pages are faulted in once, not the whole journal's.
    let chunk = config.replay_chunk.max(frame::HEADER);
    let mut spare: Vec<Arc<Vec<u8>>> = Vec::new();
    let mut spans = Vec::new();
    for (index, (first_lsn, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == count;
        if let Some((next_first, _)) = segments.get(index + 1) {
            if *next_first <= replay_from {
                // Covered by the snapshot (kept only for a consumer such as analytics).
                last_lsn = Some(next_first - 1);
                continue;
            }
        }
        let mut file = fs::File::open(path).map_err(io_err(path))?;
        // The segment is read a chunk at a time; `base` is the file offset of the chunk.
        let mut segment = take_buffer(&mut spare, chunk);
        let mut eof = fill(&mut file, &mut segment, chunk).map_err(io_err(path))?;
        let mut base = 0u64;
        let mut offset = 0usize;
        let stop = loop {
            let buf: &[u8] = &segment;
            let next = frame::next(&buf[offset..]);
            if !eof && matches!(next, frame::Next::End | frame::Next::Truncated) {
                // The frame goes on in the next chunk: carry its start over (a batch never
                // spans two chunks, so the workers get this chunk's records now).
                router.flush(&segment, index);
                let carried = &buf[offset..];
                // A frame longer than a chunk is read whole (its length is checked once
                // its header is in: an impossible one is corrupt, not a huge buffer).
                let need = frame::claimed_len(carried).unwrap_or(0);
                let want = chunk.max(frame::HEADER + need.min(frame::MAX_BODY));
                let mut more = take_buffer(&mut spare, want);
                Arc::make_mut(&mut more).extend_from_slice(carried);
                eof = fill(&mut file, &mut more, want).map_err(io_err(path))?;
                base += offset as u64;
                offset = 0;
                spare.push(std::mem::replace(&mut segment, more));
                spare.truncate(SPARE_BUFFERS);
                continue;
            }
            match next {
                frame::Next::End => break Stop::End,
                // The preallocated rest of the segment: the end, unless records follow.
                frame::Next::Zeros => break Stop::Zeros,
                frame::Next::Truncated => break Stop::Bad("torn record (file ends inside it)"),
                frame::Next::Corrupt(why) => break Stop::Bad(why),
                frame::Next::Frame { body, len } => {
                    spans.clear();
                    let Ok(first) = protowire::split_checkpoint(body, &mut spans) else {
                        break Stop::Bad("undecodable checkpoint");
                    };
                    let n = spans.len() as Lsn;
                    if n == 0 {
                        break Stop::Bad("empty checkpoint");
                    }
                    let expected = last_lsn.map_or(*first_lsn, |l| l + 1);
                    if first != expected {
                        break Stop::Bad("LSN sequence broken");
                    }
                    if first.saturating_add(n - 1) > LSN_MAX {
                        break Stop::Bad("LSN beyond 2^48 - 1");
                    }
                    let body_at = offset + frame::HEADER;
                    for (i, span) in spans.iter().enumerate() {
                        let lsn = first + i as Lsn;
                        if lsn < replay_from {
                            continue;
                        }
                        let shard = shard_of(&body[span.key.clone()], workers.len());
                        let record = Routed {
                            bytes: body_at + span.bytes.start..body_at + span.bytes.end,
                            lsn,
                            frame: base + offset as u64,
                        };
                        router.route(&segment, index, shard, record);
                        out.records_replayed += 1;
                    }
                    last_lsn = Some(first + n - 1);
                    offset += len;
                }
            }
        };
        // A batch never spans two segments.
        router.flush(&segment, index);
        let valid_len = base + offset as u64;
        // Anything but the clean end: does a valid frame follow in the rest of the file?
        let followed = !matches!(stop, Stop::End) && {
            let rest = rest_of_file(&mut file, &segment[offset..]).map_err(io_err(path))?;
            valid_frame_after(&rest, last_lsn.map_or(*first_lsn, |l| l + 1))
        };
        let problem = match stop {
            Stop::End => None,
            Stop::Zeros => followed.then_some("zeroed bytes where records should be"),
            Stop::Bad(why) => Some(why),
        };
        if let Some(reason) = problem {
            let before_tail = !is_last || followed;
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
        spare.push(segment);
        spare.truncate(SPARE_BUFFERS);
    }
    if let Some(l) = last_lsn {
        out.next_lsn = out.next_lsn.max(l + 1);
    }
    Ok(out)
}

/// About how many records replay will read (most of them reservations), to size the tables
/// once instead of growing them: exact for every segment but the last (their names give their
/// first LSNs), the last counted as the average of the others. 0 for a journal of one segment.
fn records_ahead(segments: &[(Lsn, PathBuf)], replay_from: Lsn) -> usize {
    let full: Vec<u64> = segments
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0.max(replay_from)))
        .filter(|&n| n > 0)
        .collect();
    let total: u64 = full.iter().sum();
    let last = total.checked_div(full.len() as u64).unwrap_or(0);
    usize::try_from(total + last).unwrap_or(0)
}

/// Where reading a segment stopped.
enum Stop {
    /// The file ends after a whole frame.
    End,
    /// An all-zero header: the preallocated end, unless a valid frame follows.
    Zeros,
    /// A torn or corrupt frame, or one that does not continue the journal.
    Bad(&'static str),
}

/// An empty buffer for at least `need` bytes: a spare one the workers are done with, or a
/// new one.
fn take_buffer(spare: &mut Vec<Arc<Vec<u8>>>, need: usize) -> Arc<Vec<u8>> {
    let free = spare
        .iter_mut()
        .position(|b| Arc::get_mut(b).is_some_and(|v| v.capacity() >= need));
    match free {
        Some(i) => {
            let mut b = spare.swap_remove(i);
            Arc::get_mut(&mut b).expect("not shared").clear();
            b
        }
        None => Arc::new(Vec::with_capacity(need)),
    }
}

/// Reads from `file` until `buf` (from [`take_buffer`]) holds `want` bytes or the file ends;
/// true when it ended.
fn fill(file: &mut fs::File, buf: &mut Arc<Vec<u8>>, want: usize) -> std::io::Result<bool> {
    use std::io::Read;
    let buf = Arc::get_mut(buf).expect("a buffer from take_buffer is not shared");
    let asked = want.saturating_sub(buf.len());
    buf.reserve(asked);
    let read = file.by_ref().take(asked as u64).read_to_end(buf)?;
    Ok(read < asked)
}

/// `head` (the unread part of the current chunk) and the rest of `file`, without the zeros
/// after its last non-zero byte but [`TRAILING_ZEROS`]: all [`valid_frame_after`] looks at.
/// The preallocated end of the last segment is read 64 KiB at a time, not kept.
fn rest_of_file(file: &mut fs::File, head: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    const READ: usize = 64 << 10;
    let mut out = head.to_vec();
    let mut scratch = Vec::with_capacity(READ);
    // Zeros read and not yet appended: only kept if data follows them.
    let mut zeros = 0usize;
    loop {
        scratch.clear();
        let n = file.by_ref().take(READ as u64).read_to_end(&mut scratch)?;
        if n == 0 {
            break;
        }
        match scratch.iter().rposition(|&b| b != 0) {
            None => zeros += n,
            Some(last) => {
                out.resize(out.len() + zeros, 0);
                out.extend_from_slice(&scratch[..=last]);
                zeros = n - last - 1;
            }
        }
    }
    out.resize(out.len() + zeros.min(TRAILING_ZEROS), 0);
    Ok(out)
}

/// Records per batch sent to a worker.
const BATCH: usize = 256;

/// The reader's pending batches, one per worker.
struct Router<'a> {
    workers: &'a [std::sync::mpsc::SyncSender<Batch>],
    pending: Vec<Vec<Routed>>,
}

impl Router<'_> {
    fn route(&mut self, segment: &Arc<Vec<u8>>, file: usize, shard: usize, record: Routed) {
        self.pending[shard].push(record);
        if self.pending[shard].len() >= BATCH {
            self.send(segment, file, shard);
        }
    }

    fn send(&mut self, segment: &Arc<Vec<u8>>, file: usize, shard: usize) {
        let records = std::mem::replace(&mut self.pending[shard], Vec::with_capacity(BATCH));
        // A worker that is gone has failed: its error is reported when it is joined.
        let _ = self.workers[shard].send(Batch {
            segment: segment.clone(),
            file,
            records,
        });
    }

    /// Sends every pending batch.
    fn flush(&mut self, segment: &Arc<Vec<u8>>, file: usize) {
        for shard in 0..self.pending.len() {
            if !self.pending[shard].is_empty() {
                self.send(segment, file, shard);
            }
        }
    }
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
    use crate::proto::OperationRecord;

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

    #[test]
    fn records_ahead_counts_the_full_segments_and_guesses_the_last() {
        let segs = |firsts: &[Lsn]| -> Vec<(Lsn, PathBuf)> {
            firsts.iter().map(|&f| (f, PathBuf::new())).collect()
        };
        assert_eq!(records_ahead(&segs(&[]), 1), 0);
        assert_eq!(
            records_ahead(&segs(&[1]), 1),
            0,
            "one segment: nothing known"
        );
        assert_eq!(records_ahead(&segs(&[1, 101, 201]), 1), 300);
        // A snapshot covers the first segment and half of the second.
        assert_eq!(records_ahead(&segs(&[1, 101, 201]), 151), 100);
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
