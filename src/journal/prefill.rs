//! Segments written in place over real zeros.
//!
//! A preallocated (`fallocate`) extent is *unwritten*: the first write into each block turns it
//! into a written one, a metadata change that the following `fdatasync` must commit to the
//! file system's journal as well. A segment whose blocks were already written with zeros (and
//! synced) only has data to flush. On the project machine's ext4 disk that takes a sync under
//! the bench's `reserve` load from ~380 µs to ~280 µs, and a lone writer's sync from ~550 µs to
//! ~330 µs at about half its CPU (see `docs/journal.md`).
//!
//! - [`zero_fill`] writes zeros over the holes and unwritten extents of a segment past a
//!   given offset (found with `SEEK_HOLE`, so an already filled segment costs nothing) and
//!   syncs it. The writer does it when it opens its segment at start-up.
//! - [`Spare`] fills the next segment ahead, on its own thread, while the current one is
//!   being written; the writer renames it into place when it rotates, so a rotation never
//!   waits for zeros. A spare that is not ready then is skipped (the new segment is
//!   preallocated as before), never waited for.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

/// The spare segment's name in the data directory: not a `journal-*.log`, so readers and
/// recovery never see it; deleted when the writer starts.
pub(super) const SPARE_NAME: &str = "segment.spare";

/// The most zeros the writer waits for when it opens its segment at start-up (~65 ms for this
/// much on the project machine): a larger `--segment-size` keeps the rest of that first
/// segment preallocated only.
pub(super) const START_FILL_MAX: u64 = 64 << 20;

/// Zeros are written this many bytes at a time.
const ZERO_CHUNK: usize = 1 << 20;

/// Writes zeros from the first hole or unwritten extent of `file` at or after `from` up to
/// `bytes` (everything past `from` is beyond the segment's frames), then syncs it (data and
/// size), unless there was none. Returns the bytes written. A file shorter than `bytes` is
/// extended. (A file system that cannot tell unwritten extents from data reports none, and
/// its segment stays preallocated only.) `stop` is checked between chunks: the fill is then
/// left partial and unsynced, and its file is not used.
pub(super) fn zero_fill(file: &File, from: u64, bytes: u64, stop: &AtomicBool) -> io::Result<u64> {
    // Past the end of the file everything is to be written (and SEEK_HOLE refuses).
    let first_hole = if from >= file.metadata()?.len() {
        from
    } else {
        match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(from)) {
            Ok(hole) => hole,
            Err(_) => return Ok(0),
        }
    };
    if first_hole >= bytes {
        return Ok(0);
    }
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut off = first_hole;
    while off < bytes {
        if stop.load(Ordering::Relaxed) {
            return Ok(off - first_hole);
        }
        let n = (bytes - off).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    file.sync_all()?;
    Ok(bytes - first_hole)
}

/// The next segment, being zero-filled on its own thread.
pub(super) struct Spare {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    filling: Option<JoinHandle<io::Result<()>>>,
}

impl Spare {
    /// Starts filling a spare of `bytes` in `dir` (replacing any left from before).
    pub(super) fn start(dir: &Path, bytes: u64) -> io::Result<Spare> {
        let path = dir.join(SPARE_NAME);
        let stop = Arc::new(AtomicBool::new(false));
        let filling = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::Builder::new()
                .name("journal-prefill".into())
                .spawn(move || {
                    let file = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&path)?;
                    zero_fill(&file, 0, bytes, &stop).map(drop)
                })?
        };
        Ok(Spare {
            path,
            stop,
            filling: Some(filling),
        })
    }

    /// Whether the spare is filled (or failed), so [`Spare::into_segment`] will not wait.
    pub(super) fn is_done(&self) -> bool {
        self.filling.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Joins the filling thread, renames the filled spare to `to` and opens it for writing
    /// in place. A spare whose filling failed is logged and removed, and gives `Ok(None)`
    /// (the caller preallocates instead): it only ever makes syncs cheaper. Call it once
    /// [`Spare::is_done`], or it waits for the fill.
    pub(super) fn into_segment(mut self, to: &Path) -> io::Result<Option<File>> {
        let filled = self.filling.take().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("the prefill thread panicked")))
        });
        if let Some(Err(e)) = filled {
            tracing::warn!(path = %self.path.display(), error = %e,
                "journal spare segment not filled; the next segment is preallocated only");
            let _ = std::fs::remove_file(&self.path);
            return Ok(None);
        }
        std::fs::rename(&self.path, to)?;
        OpenOptions::new().read(true).write(true).open(to).map(Some)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.filling.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first hole at or after `from` (the file's size if none).
    fn hole(file: &File, from: u64) -> u64 {
        rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(from)).unwrap()
    }

    fn preallocated(path: &Path, bytes: u64) -> File {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes).unwrap();
        file
    }

    #[test]
    fn zero_fill_writes_the_unwritten_tail_once_and_keeps_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = 3 * ZERO_CHUNK as u64 + 12_345;
        let file = preallocated(&dir.path().join("seg"), bytes);
        let data = vec![7u8; 10_000];
        file.write_all_at(&data, 0).unwrap();
        let unwritten = hole(&file, 10_000);
        assert!(unwritten < bytes, "the preallocated tail reads as a hole");
        let never = AtomicBool::new(false);
        assert_eq!(
            zero_fill(&file, 10_000, bytes, &never).unwrap(),
            bytes - unwritten
        );
        assert_eq!(hole(&file, 0), bytes, "no hole or unwritten extent is left");
        let mut back = vec![0u8; bytes as usize];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..10_000], &data[..], "records before `from` are kept");
        assert!(back[10_000..].iter().all(|&b| b == 0));
        assert_eq!(
            std::fs::metadata(dir.path().join("seg")).unwrap().len(),
            bytes
        );
        assert_eq!(
            zero_fill(&file, 0, bytes, &never).unwrap(),
            0,
            "filled once"
        );
    }

    #[test]
    fn zero_fill_grows_a_short_file_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        let file = File::create(&path).unwrap();
        let bytes = 2 * ZERO_CHUNK as u64;
        assert_eq!(
            zero_fill(&file, 0, bytes, &AtomicBool::new(false)).unwrap(),
            bytes
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        let other = File::create(dir.path().join("stopped")).unwrap();
        assert_eq!(
            zero_fill(&other, 0, bytes, &AtomicBool::new(true)).unwrap(),
            0
        );
    }

    #[test]
    fn a_filled_spare_becomes_the_named_segment() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = ZERO_CHUNK as u64 + 4096;
        let spare = Spare::start(dir.path(), bytes).unwrap();
        let to = dir.path().join("journal-next.log");
        // Waits for the fill when it is not done yet.
        let file = spare.into_segment(&to).unwrap().expect("filled");
        assert!(!dir.path().join(SPARE_NAME).exists(), "renamed, not copied");
        assert_eq!(file.metadata().unwrap().len(), bytes);
        assert_eq!(hole(&file, 0), bytes, "written zeros, no unwritten extent");
        file.write_all_at(b"frame", 0).unwrap();
        let mut back = [0u8; 5];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"frame", "opened for writing in place");
    }

    #[test]
    fn a_spare_that_cannot_be_filled_gives_none_and_the_caller_preallocates() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the spare's file should be: creating it fails.
        std::fs::create_dir(dir.path().join(SPARE_NAME)).unwrap();
        let spare = Spare::start(dir.path(), 4096).unwrap();
        let to = dir.path().join("journal-next.log");
        assert!(spare.into_segment(&to).unwrap().is_none());
        assert!(!to.exists(), "nothing renamed into the segment's place");
    }
}
