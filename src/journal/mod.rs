//! The durable journal: every state change is appended as operation updates (see [`records`])
//! in CRC-framed checkpoints; a single writer thread does group commit (one write and one
//! fdatasync per batch of pending checkpoints) and only then completes the callers. Snapshots
//! bound the disk use; recovery loads the newest snapshot and replays later segments.
//!
//! [`reader`] reads committed records back in LSN order for consumers that keep their own
//! cursor; [`protowire`] is replay's borrowed view of checkpoints and player-session records
//! (see [`recovery`]); [`encode`] writes checkpoints of player-session records straight into
//! bytes on the append path. The writer's segments are zero-filled ahead (`prefill`) and, with
//! `--journal-direct-io`, written through `O_DIRECT | O_DSYNC` (`direct`). Files in
//! `--data-dir`: `journal-<lsn>.log` segments, `segment.spare`, `snapshot-<lsn>.snap`, and
//! `LOCK`.

mod direct;
pub mod encode;
pub mod frame;
mod prefill;
pub mod protowire;
pub mod reader;
pub mod records;
pub mod recovery;
pub mod segment;
pub mod snapshot;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use parking_lot::{Condvar, Mutex};
use tokio::sync::{watch, Notify};

use crate::domain::{Change, Error, Lsn, Result};

/// When a call's changes count as durable.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Reply after the records are written and fdatasync'ed (group commit).
    Sync,
    /// Reply at once; records are synced at least every 100 ms (a crash loses at most that window).
    Async,
}

/// Journal settings.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// Start a new segment file past this size.
    pub segment_bytes: u64,
    /// Take a snapshot after this many journal bytes since the last one.
    pub snapshot_every_bytes: u64,
    /// Take a snapshot after this many records since the last one.
    pub snapshot_every_records: u64,
    /// Truncate the journal at a corrupt record instead of refusing to start (loses what follows).
    pub truncate_corrupt: bool,
    /// Sync mode, under load: how long the writer lets a group gather before it writes it
    /// (zero: never waits). See [`JournalConfig::commit_siblings`].
    pub commit_delay: std::time::Duration,
    /// The writer only waits [`JournalConfig::commit_delay`] when at least this many
    /// checkpoints arrived while its last sync ran (concurrent callers, so waiting groups
    /// them); a lone caller never waits.
    pub commit_siblings: u32,
    /// Sync mode: write segments with `O_DIRECT | O_DSYNC` (one system call per group, durable
    /// when it returns) where the file system allows it, instead of `write` + `fdatasync`.
    pub direct_io: bool,
    /// Recovery reads segments this many bytes at a time (a frame longer than that is read
    /// whole), so its memory for reading stays a few chunks whatever the journal's size.
    pub replay_chunk: usize,
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            durability: Durability::Sync,
            segment_bytes: 64 << 20,
            snapshot_every_bytes: 256 << 20,
            snapshot_every_records: 1_000_000,
            truncate_corrupt: false,
            commit_delay: DEFAULT_COMMIT_DELAY,
            commit_siblings: DEFAULT_COMMIT_SIBLINGS,
            direct_io: false,
            replay_chunk: DEFAULT_REPLAY_CHUNK,
        }
    }
}

/// Default [`JournalConfig::commit_delay`]: on the project machine it takes the records per
/// sync under 64 concurrent callers from ~8 to ~13 and raises their throughput (see
/// `docs/performance.md`).
pub const DEFAULT_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(200);

/// Default [`JournalConfig::replay_chunk`].
pub const DEFAULT_REPLAY_CHUNK: usize = 4 << 20;

/// Default [`JournalConfig::commit_siblings`].
pub const DEFAULT_COMMIT_SIBLINGS: u32 = 4;

/// About the encoded size of one player session's record (a reservation with 64 bytes of
/// player data is ~230 bytes), so the append's buffer is allocated once.
const RECORD_BYTES_HINT: usize = 256;

/// The longest [`JournalConfig::commit_delay`] accepted: a group never waits longer than this
/// for company (it is latency every caller of the group pays).
pub const MAX_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} at offset {offset}: {reason} (start with --journal-truncate-corrupt to drop everything from there on)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadSnapshot { path: PathBuf, reason: String },
    #[error("data directory {0} is in use by another session-broker process")]
    Locked(PathBuf),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.into();
    move |source| JournalError::Io { path, source }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// No files: LSNs are assigned, everything is durable at once (tests, embedding).
    Disabled,
    Sync,
    Async,
}

struct Pending {
    buf: Vec<u8>,
    next_lsn: Lsn,
    /// LSN of the last record in `buf`.
    buffered_last: Lsn,
    records: u64,
    closed: bool,
    /// The writer waits for a first record (nothing written is waiting for a sync).
    writer_idle: bool,
    /// The writer lets a group gather (sync mode's commit delay): only a full group wakes it.
    writer_gathering: bool,
    /// Checkpoints in `buf`.
    checkpoints: u32,
}

impl Inner {
    /// Publishes `lsn` as durable and wakes exactly the calls it covers.
    fn publish_durable(&self, lsn: Lsn) {
        self.durable.send_replace(lsn);
        let mut waiters = self.waiters.lock();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= lsn {
                let (_, tx) = waiters.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }
    }

    /// Wakes every waiter (the journal failed: they must see the error).
    fn wake_all(&self) {
        self.durable.send_modify(|_| {});
        for (_, tx) in self.waiters.lock().drain(..) {
            let _ = tx.send(());
        }
    }
}

struct Inner {
    mode: Mode,
    pending: Mutex<Pending>,
    wake_writer: Condvar,
    /// LSN up to which records are durable (written and synced).
    durable: watch::Sender<Lsn>,
    /// Calls waiting for their LSN to become durable. Only the ones a sync covers are woken
    /// (a watch channel would wake every waiter on every sync).
    waiters: Mutex<Vec<(Lsn, tokio::sync::oneshot::Sender<()>)>>,
    failed: AtomicBool,
    snapshot_due: Notify,
    records_since_snapshot: AtomicU64,
    snapshot_every_records: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// A consumer (the analytics dispatcher) still needs the records from this LSN on:
    /// snapshots keep their segments, up to `hold_max_bytes` (`u64::MAX`: nobody holds any).
    hold_from: AtomicU64,
    hold_max_bytes: AtomicU64,
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal(Arc<Inner>);

impl Journal {
    fn with_mode(mode: Mode) -> Self {
        Journal(Arc::new(Inner {
            mode,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 << 10),
                next_lsn: 1,
                buffered_last: 0,
                records: 0,
                closed: false,
                writer_idle: false,
                writer_gathering: false,
                checkpoints: 0,
            }),
            wake_writer: Condvar::new(),
            durable: watch::channel(0).0,
            waiters: Mutex::new(Vec::with_capacity(256)),
            failed: AtomicBool::new(false),
            snapshot_due: Notify::new(),
            records_since_snapshot: AtomicU64::new(0),
            snapshot_every_records: AtomicU64::new(u64::MAX),
            writer: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
            hold_from: AtomicU64::new(u64::MAX),
            hold_max_bytes: AtomicU64::new(u64::MAX),
        }))
    }

    /// A journal that writes nothing (state lives in memory only).
    pub fn disabled() -> Self {
        Self::with_mode(Mode::Disabled)
    }

    /// A file journal whose writer is not started yet (recovery runs first).
    pub fn new(durability: Durability) -> Self {
        Self::with_mode(match durability {
            Durability::Sync => Mode::Sync,
            Durability::Async => Mode::Async,
        })
    }

    /// Appends `changes` as one atomic checkpoint. Returns the LSN of the first record (record
    /// `i` has LSN `first + i`). Never blocks on I/O. Call it while holding the lock that orders
    /// the changes, so LSN order matches the order in which they were applied.
    pub fn append(&self, changes: &[Change]) -> Result<Lsn> {
        if self.0.failed.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(
                "the journal failed; the daemon is stopping".into(),
            ));
        }
        let n = changes.len() as u64;
        // The records are encoded before the lock is taken; under it only their LSN, a copy
        // and the checksum are added.
        let mut records = Vec::new();
        if self.0.mode != Mode::Disabled {
            records.reserve(RECORD_BYTES_HINT * changes.len());
            encode::records(changes, &mut records);
        }
        let mut p = self.0.pending.lock();
        if p.closed {
            return Err(Error::Unavailable(
                "the journal is closed; the daemon is stopping".into(),
            ));
        }
        let first = p.next_lsn;
        if first + n - 1 > crate::domain::LSN_MAX {
            return Err(Error::Unavailable(
                "the journal has used every LSN (2^48 - 1); start over on a fresh data dir".into(),
            ));
        }
        p.next_lsn += n;
        p.buffered_last = p.next_lsn - 1;
        p.records += n;
        if self.0.mode == Mode::Disabled {
            drop(p);
            self.0.durable.send_replace(first + n - 1);
            return Ok(first);
        }
        frame::put_with(&mut p.buf, |b| encode::checkpoint(first, &records, b));
        p.checkpoints = p.checkpoints.saturating_add(1);
        // The writer sleeps only while it waits for a first record, lets a group gather (sync),
        // or waits for its next sync (async, which writes and syncs on its own every 100 ms);
        // otherwise it is writing or syncing and takes the buffer when it is done. So only a
        // first record or a full buffer wakes it.
        let wake = p.writer_idle
            || match self.0.mode {
                Mode::Sync => p.writer_gathering && p.buf.len() >= writer::GROUP_FULL_BYTES,
                _ => p.buf.len() >= writer::ASYNC_WAKE_BYTES,
            };
        if wake {
            p.writer_idle = false;
        }
        drop(p);
        if wake {
            self.0.wake_writer.notify_one();
        }
        let since = self
            .0
            .records_since_snapshot
            .fetch_add(n, Ordering::Relaxed)
            + n;
        if since >= self.0.snapshot_every_records.load(Ordering::Relaxed) {
            self.0.records_since_snapshot.store(0, Ordering::Relaxed);
            self.0.snapshot_due.notify_one();
        }
        Ok(first)
    }

    /// Attaches the daemon's metrics (fsync durations, bytes, append-to-durable latency).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.0.metrics.set(metrics);
    }

    /// Waits until `lsn` is durable (sync mode); returns at once in async mode.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        if self.0.mode != Mode::Sync {
            return self.check_failed();
        }
        if *self.0.durable.borrow() >= lsn {
            return self.check_failed();
        }
        let started = std::time::Instant::now();
        let rx = {
            let mut waiters = self.0.waiters.lock();
            // Checked under the waiters' lock: the writer publishes before it takes that lock,
            // so either it sees this waiter or this check sees its LSN.
            if *self.0.durable.borrow() >= lsn || self.0.failed.load(Ordering::SeqCst) {
                None
            } else {
                let (tx, rx) = tokio::sync::oneshot::channel();
                waiters.push((lsn, tx));
                Some(rx)
            }
        };
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        if let Some(m) = self.0.metrics.get() {
            m.journal_append.observe(started.elapsed().as_secs_f64());
        }
        self.check_failed()
    }

    /// Waits until everything appended so far is durable, in any mode (snapshots, shutdown).
    pub async fn wait_all_durable(&self) -> Result<()> {
        if self.0.mode == Mode::Disabled {
            return Ok(());
        }
        let lsn = self.last_lsn();
        let mut rx = self.0.durable.subscribe();
        let failed = &self.0.failed;
        let _ = rx
            .wait_for(|d| *d >= lsn || failed.load(Ordering::Relaxed))
            .await;
        self.check_failed()
    }

    fn check_failed(&self) -> Result<()> {
        if self.0.failed.load(Ordering::Relaxed) {
            Err(Error::Unavailable(
                "the journal failed; the daemon is stopping".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// LSN of the last appended record (0 if none).
    pub fn last_lsn(&self) -> Lsn {
        self.0.pending.lock().next_lsn - 1
    }

    /// LSN up to which records are durable.
    pub fn durable_lsn(&self) -> Lsn {
        *self.0.durable.borrow()
    }

    /// Subscribes to the durable LSN (it only grows).
    pub fn subscribe_durable(&self) -> watch::Receiver<Lsn> {
        self.0.durable.subscribe()
    }

    /// True once a write or fsync failed (the daemon must stop).
    pub fn has_failed(&self) -> bool {
        self.0.failed.load(Ordering::Relaxed)
    }

    /// Resolves when enough has been appended since the last snapshot.
    pub async fn snapshot_due(&self) {
        self.0.snapshot_due.notified().await
    }

    /// Keeps the segments holding records from `lsn` on when snapshots prune, as long as they
    /// total at most `max_bytes` beyond what recovery needs (older ones are deleted then; the
    /// consumer sees a [`reader::ReadError::Gap`]). Moving `lsn` forward releases segments.
    pub fn hold_segments_from(&self, lsn: Lsn, max_bytes: u64) {
        self.0.hold_max_bytes.store(max_bytes, Ordering::SeqCst);
        self.0.hold_from.store(lsn, Ordering::SeqCst);
    }

    /// The hold of [`Journal::hold_segments_from`]: (first LSN, byte bound), if any.
    pub fn segment_hold(&self) -> Option<(Lsn, u64)> {
        let from = self.0.hold_from.load(Ordering::SeqCst);
        (from != u64::MAX).then(|| (from, self.0.hold_max_bytes.load(Ordering::SeqCst)))
    }

    /// Asks the snapshotter for a snapshot now.
    pub fn request_snapshot(&self) {
        self.0.snapshot_due.notify_one();
    }

    /// Starts the writer thread after recovery: `next_lsn` continues the recovered journal.
    pub fn start(
        &self,
        config: &JournalConfig,
        recovered: &recovery::Recovered,
        on_fatal: Arc<dyn Fn(String) + Send + Sync>,
    ) -> std::result::Result<(), JournalError> {
        {
            let mut p = self.0.pending.lock();
            p.next_lsn = recovered.next_lsn;
            p.buffered_last = recovered.next_lsn - 1;
        }
        self.0.durable.send_replace(recovered.next_lsn - 1);
        self.0
            .snapshot_every_records
            .store(config.snapshot_every_records.max(1), Ordering::Relaxed);
        if self.0.mode == Mode::Disabled {
            return Ok(());
        }
        let w = writer::Writer::open(self.0.clone(), config, recovered, on_fatal)?;
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || w.run())
            .map_err(io_err(&config.dir))?;
        *self.0.writer.lock() = Some(handle);
        Ok(())
    }

    /// Flushes and syncs everything appended, then stops the writer. Appends after this fail.
    pub fn close(&self) {
        {
            let mut p = self.0.pending.lock();
            p.closed = true;
        }
        self.0.wake_writer.notify_all();
        let handle = self.0.writer.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Locks the data directory against a second daemon. Keep the returned file open.
pub fn lock_dir(dir: &std::path::Path) -> std::result::Result<std::fs::File, JournalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}
