//! The single writer thread: group commit. It takes every pending checkpoint at once, writes
//! them with one `write`, syncs with one `fdatasync`, and only then publishes the durable LSN
//! that callers wait for. A write or sync error is fatal: it is logged, the journal refuses
//! further appends, and the daemon stops with a non-zero exit (a retried fsync can lie).
//! With `--journal-direct-io` the write and the sync are one in sync mode: the segment is
//! written through `O_DIRECT | O_DSYNC` ([`super::direct`]) where the file system allows it.
//!
//! Segments are preallocated (`fallocate`) to their full size when they are opened, and
//! written in place: an `fdatasync` then only has data to flush, not the growing file's size
//! (on ext4 about half the latency and CPU of a sync that grows the file). The unwritten rest
//! reads as zeros, which the readers treat as the end ([`super::frame::Next::Zeros`]).
//! Its blocks are written with real zeros, so that a sync does not also convert unwritten
//! extents ([`super::prefill`]): the segment the writer starts on is filled when it opens, and
//! from half way through each segment the next one is filled ahead on another thread.
//!
//! In async mode appends do not wake the writer while it waits for the next sync: records
//! gather for up to [`ASYNC_SYNC_INTERVAL`] (or [`ASYNC_WAKE_BYTES`]) and go out in one write.
//!
//! In sync mode, when at least `commit_siblings` checkpoints arrived while the last sync ran,
//! the writer waits up to `commit_delay` (or until [`GROUP_FULL_BYTES`] are pending) before it
//! writes the next group, like PostgreSQL's `commit_delay`/`commit_siblings`: under load the
//! groups grow and the syncs per record fall; a lone caller never waits.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    direct::Direct,
    io_err,
    prefill::{self, Spare},
    recovery::Recovered,
    segment, Inner, JournalConfig, JournalError, Mode,
};
use crate::domain::Lsn;

/// Async mode syncs at least this often.
const ASYNC_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Async mode: pending bytes that wake a writer waiting for its next sync.
pub(super) const ASYNC_WAKE_BYTES: usize = 1 << 20;

/// Sync mode: a gathering group this large is written at once.
pub(super) const GROUP_FULL_BYTES: usize = 64 << 10;

/// Opens (creating) the segment at `path` for writing in place, preallocated to `bytes`.
fn open_segment(path: &Path, bytes: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = file.metadata()?.len();
    if len < bytes {
        // Not every file system can; the segment then grows as it is written.
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), len, bytes - len) {
            Ok(()) => file.sync_all()?,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "journal segment not preallocated")
            }
        }
    }
    Ok(file)
}

pub(super) struct Writer {
    inner: Arc<Inner>,
    dir: PathBuf,
    file: File,
    segment_len: u64,
    segment_bytes: u64,
    snapshot_every_bytes: u64,
    bytes_since_snapshot: u64,
    commit_delay: Duration,
    commit_siblings: u32,
    /// The next segment, zero-filled ahead once this one is half written.
    spare: Option<Spare>,
    /// Sync mode with `--journal-direct-io`: the segment's direct, synchronous handle (each
    /// write is durable when it returns, so there is no `fdatasync`).
    direct: Option<Direct>,
    /// Whether each new segment is opened for direct writes: `--journal-direct-io` in sync
    /// mode, until the file system refuses it once (it is not asked again every segment).
    direct_io: bool,
    on_fatal: Arc<dyn Fn(String) + Send + Sync>,
}

impl Writer {
    pub(super) fn open(
        inner: Arc<Inner>,
        config: &JournalConfig,
        recovered: &Recovered,
        on_fatal: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Self, JournalError> {
        let (path, len) = match &recovered.active_segment {
            Some((path, len)) => (path.clone(), *len),
            None => (segment::segment_path(&config.dir, recovered.next_lsn), 0),
        };
        let file = open_segment(&path, config.segment_bytes).map_err(io_err(&path))?;
        // Start-up waits for at most START_FILL_MAX of zeros (a huge --segment-size keeps the
        // rest preallocated only); the spare segments are filled whole, on their own thread.
        let fill_to = config
            .segment_bytes
            .min(len.saturating_add(prefill::START_FILL_MAX));
        prefill::zero_fill(&file, len, fill_to, &AtomicBool::new(false)).map_err(io_err(&path))?;
        let spare = config.dir.join(prefill::SPARE_NAME);
        match std::fs::remove_file(&spare) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&spare)(e)),
            _ => {}
        }
        segment::sync_dir(&config.dir).map_err(io_err(&config.dir))?;
        let direct = (config.direct_io && inner.mode == Mode::Sync)
            .then(|| Direct::open(&path, &file, len))
            .flatten();
        let direct_io = direct.is_some();
        Ok(Writer {
            inner,
            dir: config.dir.clone(),
            file,
            segment_len: len,
            segment_bytes: config.segment_bytes.max(1),
            snapshot_every_bytes: config.snapshot_every_bytes.max(1),
            bytes_since_snapshot: 0,
            commit_delay: config.commit_delay.min(super::MAX_COMMIT_DELAY),
            commit_siblings: config.commit_siblings.max(1),
            spare: None,
            direct,
            direct_io,
            on_fatal,
        })
    }

    fn fatal(&self, what: &str, e: std::io::Error) {
        let msg = format!("journal {what} failed: {e}; stopping (records after the last sync are not acknowledged)");
        tracing::error!(error = %e, "{msg}");
        self.inner.failed.store(true, Ordering::SeqCst);
        // Wake every waiter so it sees the failure.
        self.inner.wake_all();
        (self.on_fatal)(msg);
    }

    pub(super) fn run(mut self) {
        let mode = self.inner.mode;
        let mut spare: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut unsynced: Option<Lsn> = None;
        let mut last_sync = Instant::now();
        loop {
            let (buf, last, closed) = {
                let mut p = self.inner.pending.lock();
                match (mode, unsynced) {
                    // Until the next sync is due, only a full buffer or closing wakes it.
                    (Mode::Async, Some(_)) => {
                        while p.buf.len() < ASYNC_WAKE_BYTES && !p.closed {
                            let left = ASYNC_SYNC_INTERVAL.saturating_sub(last_sync.elapsed());
                            if left.is_zero()
                                || self.inner.wake_writer.wait_for(&mut p, left).timed_out()
                            {
                                break;
                            }
                        }
                    }
                    _ => {
                        let busy = !p.buf.is_empty();
                        while p.buf.is_empty() && !p.closed {
                            p.writer_idle = true;
                            self.inner.wake_writer.wait(&mut p);
                        }
                        // Group commit window: checkpoints kept coming while the last sync
                        // ran, so callers are concurrent; let the rest of this round join the
                        // group (fewer, larger syncs: less CPU per record on a busy machine).
                        // A writer woken from idle (a lone caller) never waits.
                        if mode == Mode::Sync
                            && busy
                            && !self.commit_delay.is_zero()
                            && p.checkpoints >= self.commit_siblings
                        {
                            let until = Instant::now() + self.commit_delay;
                            p.writer_gathering = true;
                            while p.buf.len() < GROUP_FULL_BYTES
                                && !p.closed
                                && !self.inner.wake_writer.wait_until(&mut p, until).timed_out()
                            {
                            }
                            p.writer_gathering = false;
                        }
                    }
                }
                p.writer_idle = false;
                p.checkpoints = 0;
                let buf = std::mem::replace(&mut p.buf, std::mem::take(&mut spare));
                (buf, p.buffered_last, p.closed)
            };
            // With direct I/O the write is the sync, and is timed as one.
            let written_at = Instant::now();
            if !buf.is_empty() {
                let written = match &mut self.direct {
                    Some(d) => d.write(&buf, self.segment_len),
                    None => self.file.write_all_at(&buf, self.segment_len),
                };
                if let Err(e) = written {
                    return self.fatal("write", e);
                }
                self.segment_len += buf.len() as u64;
                if let Some(m) = self.inner.metrics.get() {
                    m.journal_bytes.inc_by(buf.len() as u64);
                }
                self.bytes_since_snapshot += buf.len() as u64;
                unsynced = Some(last);
            }
            let sync_now = match mode {
                Mode::Sync => unsynced.is_some(),
                _ => unsynced.is_some() && (closed || last_sync.elapsed() >= ASYNC_SYNC_INTERVAL),
            };
            if sync_now {
                let started = if self.direct.is_some() {
                    written_at
                } else {
                    let before = Instant::now();
                    if let Err(e) = self.file.sync_data() {
                        return self.fatal("fdatasync", e);
                    }
                    before
                };
                last_sync = Instant::now();
                if let Some(m) = self.inner.metrics.get() {
                    m.journal_fsync.observe((last_sync - started).as_secs_f64());
                }
                if let Some(lsn) = unsynced.take() {
                    self.inner.publish_durable(lsn);
                }
                if self.segment_len >= self.segment_bytes {
                    if let Err(e) = self.rotate(last + 1) {
                        return self.fatal("segment rotation", e);
                    }
                } else if self.spare.is_none() && self.segment_len >= self.segment_bytes / 2 {
                    match Spare::start(&self.dir, self.segment_bytes) {
                        Ok(spare) => self.spare = Some(spare),
                        Err(e) => tracing::warn!(error = %e, "journal spare segment not started"),
                    }
                }
                if self.bytes_since_snapshot >= self.snapshot_every_bytes {
                    self.bytes_since_snapshot = 0;
                    self.inner.snapshot_due.notify_one();
                }
            }
            spare = buf;
            spare.clear();
            if closed && unsynced.is_none() && self.inner.pending.lock().buf.is_empty() {
                return;
            }
        }
    }

    fn rotate(&mut self, next_lsn: Lsn) -> std::io::Result<()> {
        // A segment preallocated larger than it was filled (the segment size was lowered
        // since) keeps no zero tail: a finished segment is exactly its frames.
        if self.file.metadata()?.len() > self.segment_len {
            self.file.set_len(self.segment_len)?;
        }
        let path = segment::segment_path(&self.dir, next_lsn);
        // The spare if it is filled; a rotation never waits for one (it keeps filling for the
        // next rotation), the new segment is then only preallocated.
        let filled = match self.spare.take_if(|s| s.is_done()) {
            Some(spare) => spare.into_segment(&path)?,
            None => None,
        };
        let zeroed = filled.is_some();
        self.file = match filled {
            Some(file) => file,
            None => open_segment(&path, self.segment_bytes)?,
        };
        segment::sync_dir(&self.dir)?;
        self.direct = if self.direct_io {
            Direct::open(&path, &self.file, 0)
        } else {
            None
        };
        self.direct_io = self.direct.is_some();
        self.segment_len = 0;
        tracing::debug!(path = %path.display(), zeroed, "new journal segment");
        if let Some(m) = self.inner.metrics.get() {
            let space = if zeroed { "zeros" } else { "preallocated" };
            m.journal_segments
                .get_or_create(&crate::metrics::SpaceLabels { space })
                .inc();
        }
        Ok(())
    }
}
