//! Reading committed records back from the segment files, in LSN order, from any LSN on, while
//! the writer keeps appending: the base for consumers that derive their output from the journal
//! and keep their own cursor (e.g. an analytics dispatcher), instead of a side queue.
//!
//! The reader only returns records up to the LSN the caller says is durable, never a frame the
//! writer has only partly written, and follows segment rotation. If the segments holding the
//! next LSN were deleted (a snapshot pruned them), it says so with [`ReadError::Gap`] and the
//! caller decides (count the loss, then [`JournalReader::skip_to`]).

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use prost::Message;

use super::{frame, segment};
use crate::{domain::Lsn, proto::OperationRecord, storage::Checkpoint};

/// Why a read stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The records from `from` to `to - 1` are no longer on disk.
    #[error("journal records {from}..{to} are no longer on disk")]
    Gap { from: Lsn, to: Lsn },
    #[error("journal segment {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("journal segment {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Bytes read from a segment at a time.
const CHUNK: usize = 1 << 20;

/// The segment being read.
struct Open {
    path: PathBuf,
    file: fs::File,
    /// File offset of `buf[0]`.
    offset: u64,
}

/// A cursor over the journal's committed records.
pub struct JournalReader {
    dir: PathBuf,
    /// The next LSN to return.
    next: Lsn,
    segment: Option<Open>,
    /// Bytes read from the segment; `buf[pos..]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
}

impl JournalReader {
    /// A reader whose first record will be `from` (1 = the beginning).
    pub fn new(dir: impl Into<PathBuf>, from: Lsn) -> Self {
        JournalReader {
            dir: dir.into(),
            next: from.max(1),
            segment: None,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The LSN the next record will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    fn close_segment(&mut self) {
        self.segment = None;
        self.buf.clear();
        self.pos = 0;
    }

    /// Moves the cursor forward to `lsn` (after a [`ReadError::Gap`]).
    pub fn skip_to(&mut self, lsn: Lsn) {
        if lsn > self.next {
            self.next = lsn;
            self.close_segment();
        }
    }

    /// Records with LSN from the cursor to `durable`, in order: whole checkpoints, stopping after
    /// the one that reaches `max` records (empty when there is nothing new yet).
    pub fn read(&mut self, durable: Lsn, max: usize) -> Result<Vec<OperationRecord>, ReadError> {
        let mut out = Vec::with_capacity(max.min(4096));
        while out.len() < max && self.next <= durable {
            if self.segment.is_none() && !self.open_segment()? {
                break;
            }
            let before = out.len();
            let exhausted = self.read_frames(durable, max, &mut out)?;
            if exhausted {
                // The writer may have rotated (the next segment starts at `next`), or a
                // snapshot deleted this one and those after it (look again: a gap).
                let segments = self.segments()?;
                let current = self.segment.as_ref().map(|s| s.path.as_path());
                let rotated = segments.iter().any(|(first, _)| *first == self.next);
                let deleted = !segments.iter().any(|(_, p)| Some(p.as_path()) == current);
                if rotated || deleted {
                    self.close_segment();
                    continue;
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    fn segments(&self) -> Result<Vec<(Lsn, PathBuf)>, ReadError> {
        segment::list(&self.dir, segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).map_err(
            |source| ReadError::Io {
                path: self.dir.clone(),
                source,
            },
        )
    }

    /// Opens the segment holding `next`; false if none exists yet.
    fn open_segment(&mut self) -> Result<bool, ReadError> {
        loop {
            let segments = self.segments()?;
            let Some(pos) = segments.iter().rposition(|(first, _)| *first <= self.next) else {
                return match segments.first() {
                    Some((first, _)) if *first > self.next => Err(ReadError::Gap {
                        from: self.next,
                        to: *first,
                    }),
                    _ => Ok(false),
                };
            };
            let path = segments[pos].1.clone();
            match fs::File::open(&path) {
                Ok(file) => {
                    self.close_segment();
                    self.segment = Some(Open {
                        path,
                        file,
                        offset: 0,
                    });
                    return Ok(true);
                }
                // A snapshot deleted it between the listing and the open: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ReadError::Io { path, source }),
            }
        }
    }

    /// Reads whole frames of the current segment into `out`. Returns true when the segment has
    /// no more bytes after the last whole frame. The file stays open (a snapshot deleting it
    /// does not disturb the read), and bytes are read in large chunks.
    fn read_frames(
        &mut self,
        durable: Lsn,
        max: usize,
        out: &mut Vec<OperationRecord>,
    ) -> Result<bool, ReadError> {
        let Some(seg) = self.segment.as_mut() else {
            return Ok(true);
        };
        let mut eof = false;
        loop {
            match frame::next(&self.buf[self.pos..]) {
                frame::Next::Frame { body, len } => {
                    let cp = Checkpoint::decode(body).map_err(|e| ReadError::Corrupt {
                        path: seg.path.clone(),
                        reason: format!("undecodable checkpoint: {e}"),
                    })?;
                    let last = cp.first_lsn + cp.records.len() as Lsn - 1;
                    if cp.first_lsn > durable {
                        // Written but not yet durable: stop before it, and forget what was
                        // read from here on (the writer may still be filling those bytes).
                        self.buf.truncate(self.pos);
                        break;
                    }
                    if last >= self.next {
                        if cp.first_lsn > self.next {
                            return Err(ReadError::Gap {
                                from: self.next,
                                to: cp.first_lsn,
                            });
                        }
                        for (i, mut r) in cp.records.into_iter().enumerate() {
                            let lsn = cp.first_lsn + i as Lsn;
                            if lsn >= self.next {
                                r.lsn = lsn;
                                out.push(r);
                            }
                        }
                        self.next = last + 1;
                    }
                    self.pos += len;
                    if out.len() >= max {
                        break;
                    }
                }
                frame::Next::End | frame::Next::Truncated => {
                    if eof {
                        break;
                    }
                    // Need more bytes: keep only the unconsumed tail, then append a chunk.
                    if self.pos > 0 {
                        self.buf.drain(..self.pos);
                        seg.offset += self.pos as u64;
                        self.pos = 0;
                    }
                    let have = self.buf.len();
                    let read = seg
                        .file
                        .seek(SeekFrom::Start(seg.offset + have as u64))
                        .and_then(|_| {
                            (&mut seg.file)
                                .take(CHUNK as u64)
                                .read_to_end(&mut self.buf)
                        });
                    match read {
                        Ok(n) => eof = n < CHUNK,
                        Err(source) => {
                            self.buf.truncate(have);
                            return Err(ReadError::Io {
                                path: seg.path.clone(),
                                source,
                            });
                        }
                    }
                }
                // Preallocated space not written yet, or a frame being written beyond the
                // durable LSN (every durable frame was whole before `durable` was published):
                // no more records for now; read these bytes again next time.
                frame::Next::Zeros => {
                    self.buf.truncate(self.pos);
                    return Ok(true);
                }
                frame::Next::Corrupt(_) if self.next > durable => {
                    self.buf.truncate(self.pos);
                    return Ok(true);
                }
                frame::Next::Corrupt(why) => {
                    return Err(ReadError::Corrupt {
                        path: seg.path.clone(),
                        reason: why.to_string(),
                    })
                }
            }
        }
        Ok(eof && self.pos == self.buf.len())
    }
}

/// Every committed record of `dir` from `from` to `durable` (tests and tools).
pub fn read_all(dir: &Path, from: Lsn, durable: Lsn) -> Result<Vec<OperationRecord>, ReadError> {
    let mut r = JournalReader::new(dir, from);
    let mut out = Vec::new();
    loop {
        let batch = r.read(durable, 4096)?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}
