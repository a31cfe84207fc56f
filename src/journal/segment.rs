//! Segment and snapshot files in the data directory.
//!
//! - `journal-<first lsn, 20 digits>.log`: frames, each a `Checkpoint` of records.
//! - `snapshot-<replay-from lsn, 20 digits>.snap`: a full state dump (see `snapshot`).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::domain::Lsn;

pub const SEGMENT_PREFIX: &str = "journal-";
pub const SEGMENT_SUFFIX: &str = ".log";
pub const SNAPSHOT_PREFIX: &str = "snapshot-";
pub const SNAPSHOT_SUFFIX: &str = ".snap";

pub fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{first_lsn:020}{SEGMENT_SUFFIX}"))
}

pub fn snapshot_path(dir: &Path, lsn: Lsn) -> PathBuf {
    dir.join(format!("{SNAPSHOT_PREFIX}{lsn:020}{SNAPSHOT_SUFFIX}"))
}

fn parse(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Files of one kind in `dir`, sorted by their LSN.
pub fn list(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(Lsn, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(lsn) = entry
            .file_name()
            .to_str()
            .and_then(|n| parse(n, prefix, suffix))
        {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// fsyncs a directory so a created, renamed or deleted entry is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = segment_path(Path::new("/d"), 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse(name, SEGMENT_PREFIX, SEGMENT_SUFFIX), Some(42));
        assert_eq!(
            parse("journal-12.log", SEGMENT_PREFIX, SEGMENT_SUFFIX),
            None
        );
        assert_eq!(parse(name, SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX), None);
    }
}
