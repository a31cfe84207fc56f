//! Sync mode's segment writes through `O_DIRECT | O_DSYNC` (`--journal-direct-io true`; off
//! by default, as it measured neutral end to end on the project machine, see `docs/journal.md`).
//!
//! A group is written with one `pwrite` that returns once it is durable, instead of a buffered
//! `pwrite` and an `fdatasync`: the records skip the page cache and the sync's writeback pass.
//! On the project machine's ext4 disk (over zero-filled blocks, see [`super::prefill`]) a 3 KiB
//! group took ~200 µs and ~75 µs of CPU this way against ~210-280 µs and ~85-120 µs of CPU for
//! write + fdatasync.
//!
//! Direct I/O writes whole, aligned blocks from aligned memory. The last block of the segment
//! is usually partial, so its bytes are kept ([`Direct::tail`]) and written again, followed by
//! the new records, with zeros after the end up to the block's boundary: zeros are what a
//! segment holds past its frames anyway (the readers' end marker). Where the file system
//! refuses direct I/O (tmpfs, some network file systems), [`Direct::open`] says so and the
//! writer keeps to buffered writes and `fdatasync`.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
};

/// Writes are aligned to (and a multiple of) this many bytes: a logical block on every disk
/// in use (512 or 4096).
const BLOCK: usize = 4096;

/// A segment opened for direct, synchronous writes.
pub(super) struct Direct {
    file: File,
    /// The bytes of the segment's last, partial block, written again in front of the next
    /// records (empty when the segment's end is at a block boundary).
    tail: Vec<u8>,
    /// Memory for one write, holding a [`BLOCK`]-aligned window.
    buf: Vec<u8>,
}

impl Direct {
    /// Opens the segment at `path`, whose frames end at `len`, for direct writes; `file` is
    /// its buffered handle (to read the partial block). `None`, logged, when the file system
    /// refuses direct I/O (the open or the probe fails): the probe writes the partial block
    /// back as it is, so nothing changes.
    pub(super) fn open(path: &Path, file: &File, len: u64) -> Option<Direct> {
        let opened = || -> io::Result<Direct> {
            let flags = rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC;
            let direct_file = OpenOptions::new()
                .write(true)
                .custom_flags(flags.bits() as i32)
                .open(path)?;
            let start = len - len % BLOCK as u64;
            let mut tail = vec![0u8; (len - start) as usize];
            file.read_exact_at(&mut tail, start)?;
            let mut direct = Direct {
                file: direct_file,
                tail,
                buf: Vec::new(),
            };
            direct.write(&[], len)?;
            Ok(direct)
        };
        opened()
            .inspect_err(|e| {
                tracing::info!(path = %path.display(), error = %e,
                    "journal: no direct I/O here; writes are synced with fdatasync")
            })
            .ok()
    }

    /// Writes `records` at `len`, the segment's end, and returns once they are durable. The
    /// partial block before `len` is written again with them; zeros pad the last block.
    pub(super) fn write(&mut self, records: &[u8], len: u64) -> io::Result<()> {
        let kept = self.tail.len();
        let start = len - kept as u64;
        let data = kept + records.len();
        let padded = data.div_ceil(BLOCK).max(1) * BLOCK;
        if self.buf.len() < padded + BLOCK {
            self.buf = vec![0u8; (padded + BLOCK).max(64 << 10)];
        }
        let at = self.buf.as_ptr().align_offset(BLOCK);
        if at >= BLOCK {
            return Err(io::Error::other(
                "no aligned window in the direct I/O buffer",
            ));
        }
        let window = &mut self.buf[at..at + padded];
        window[..kept].copy_from_slice(&self.tail);
        window[kept..data].copy_from_slice(records);
        window[data..].fill(0);
        self.file.write_all_at(window, start)?;
        let partial = data % BLOCK;
        self.tail.clear();
        self.tail.extend_from_slice(&window[data - partial..data]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dir: &Path, bytes: u64) -> (std::path::PathBuf, File) {
        let path = dir.join("journal-test.log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(bytes).unwrap();
        (path, file)
    }

    /// Writes of every size, crossing block boundaries or not, leave exactly the records
    /// followed by zeros: the same bytes buffered writes would.
    #[test]
    fn direct_writes_leave_the_records_then_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = segment(dir.path(), 64 << 10);
        let Some(mut d) = Direct::open(&path, &file, 0) else {
            eprintln!("no direct I/O on this file system: nothing to check");
            return;
        };
        let mut expected = Vec::new();
        for (i, n) in [1usize, 4095, 4096, 7, 10_000, 0, 4097, 3]
            .into_iter()
            .enumerate()
        {
            let records: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8 | 1).collect();
            d.write(&records, expected.len() as u64).unwrap();
            expected.extend_from_slice(&records);
            let mut back = vec![0u8; 64 << 10];
            file.read_exact_at(&mut back, 0).unwrap();
            assert_eq!(&back[..expected.len()], &expected[..], "after write {i}");
            assert!(
                back[expected.len()..].iter().all(|&b| b == 0),
                "after write {i}"
            );
        }
        // Reopened at the end of what was written (a restart): the partial block is kept.
        drop(d);
        let mut d = Direct::open(&path, &file, expected.len() as u64).unwrap();
        d.write(b"more", expected.len() as u64).unwrap();
        expected.extend_from_slice(b"more");
        let mut back = vec![0u8; expected.len() + 100];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..expected.len()], &expected[..]);
        assert!(back[expected.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn opening_for_direct_writes_changes_no_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = segment(dir.path(), 16 << 10);
        let written: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8 + 1).collect();
        file.write_all_at(&written, 0).unwrap();
        if Direct::open(&path, &file, written.len() as u64).is_none() {
            eprintln!("no direct I/O on this file system: nothing to check");
        }
        let mut back = vec![0u8; 16 << 10];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..5000], &written[..]);
        assert!(back[5000..].iter().all(|&b| b == 0));
    }
}
