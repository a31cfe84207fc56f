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

/// A small file made once for the life of a data directory (an id, a key): its bytes if it
/// exists and `valid` accepts them, else made by `make` and written durably (temp file, fsync,
/// rename, fsync of the directory; mode 0600). Invalid contents are an error naming the file
/// (`what` says what it should hold), never silently replaced.
pub fn read_or_make(
    dir: &Path,
    name: &str,
    what: &str,
    valid: impl Fn(&[u8]) -> bool,
    make: impl FnOnce() -> Vec<u8>,
) -> io::Result<Vec<u8>> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(b) if valid(&b) => return Ok(b),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not {what}", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes = make();
    let tmp = dir.join(format!("{name}.tmp"));
    {
        use std::io::Write;
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_once_file_is_kept_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let make = || b"abc".to_vec();
        let ok = |b: &[u8]| b.len() == 3;
        assert_eq!(
            read_or_make(dir.path(), "id", "3 bytes", ok, make).unwrap(),
            b"abc"
        );
        let again = read_or_make(dir.path(), "id", "3 bytes", ok, || b"xyz".to_vec()).unwrap();
        assert_eq!(again, b"abc", "made once");
        std::fs::write(dir.path().join("id"), "toolong").unwrap();
        let e = read_or_make(dir.path(), "id", "3 bytes", ok, make).unwrap_err();
        assert!(e.to_string().contains("is not 3 bytes"), "{e}");
    }

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
