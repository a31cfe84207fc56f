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

/// A cursor over the journal's committed records.
pub struct JournalReader {
    dir: PathBuf,
    /// The next LSN to return.
    next: Lsn,
    /// The segment being read: its first LSN, path and the offset of the next frame.
    segment: Option<(Lsn, PathBuf, u64)>,
    /// Bytes read past `offset` that do not yet form a whole frame.
    buf: Vec<u8>,
}

impl JournalReader {
    /// A reader whose first record will be `from` (1 = the beginning).
    pub fn new(dir: impl Into<PathBuf>, from: Lsn) -> Self {
        JournalReader {
            dir: dir.into(),
            next: from.max(1),
            segment: None,
            buf: Vec::new(),
        }
    }

    /// The LSN the next record will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// Moves the cursor forward to `lsn` (after a [`ReadError::Gap`]).
    pub fn skip_to(&mut self, lsn: Lsn) {
        if lsn > self.next {
            self.next = lsn;
            self.segment = None;
            self.buf.clear();
        }
    }

    /// Records with LSN from the cursor to `durable`, in order: whole checkpoints, stopping after
    /// the one that reaches `max` records (empty when there is nothing new yet).
    pub fn read(&mut self, durable: Lsn, max: usize) -> Result<Vec<OperationRecord>, ReadError> {
        let mut out = Vec::new();
        while out.len() < max && self.next <= durable {
            if self.segment.is_none() && !self.open_segment()? {
                break;
            }
            let before = out.len();
            let exhausted = match self.read_frames(durable, max, &mut out) {
                Err(ReadError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // A snapshot deleted the segment under us: look again (-> Gap).
                    self.segment = None;
                    self.buf.clear();
                    continue;
                }
                other => other?,
            };
            if exhausted {
                // The writer may have rotated: the next segment starts at `next`.
                let newer = self
                    .segments()?
                    .into_iter()
                    .any(|(first, _)| first == self.next);
                if newer {
                    self.segment = None;
                    self.buf.clear();
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
        let (first, path) = segments[pos].clone();
        self.segment = Some((first, path, 0));
        self.buf.clear();
        Ok(true)
    }

    /// Reads whole frames of the current segment into `out`. Returns true when the segment has
    /// no more bytes after the last whole frame.
    fn read_frames(
        &mut self,
        durable: Lsn,
        max: usize,
        out: &mut Vec<OperationRecord>,
    ) -> Result<bool, ReadError> {
        let Some((_, path, offset)) = self.segment.clone() else {
            return Ok(true);
        };
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::File::open(&path).map_err(io)?;
        file.seek(SeekFrom::Start(offset + self.buf.len() as u64))
            .map_err(io)?;
        let mut consumed = 0usize;
        let mut eof = false;
        loop {
            match frame::next(&self.buf[consumed..]) {
                frame::Next::Frame { body, len } => {
                    let cp = Checkpoint::decode(body).map_err(|e| ReadError::Corrupt {
                        path: path.clone(),
                        reason: format!("undecodable checkpoint: {e}"),
                    })?;
                    let last = cp.first_lsn + cp.records.len() as Lsn - 1;
                    if cp.first_lsn > durable {
                        // Written but not yet durable: stop before it.
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
                    consumed += len;
                    if out.len() >= max {
                        break;
                    }
                }
                frame::Next::End | frame::Next::Truncated => {
                    if eof {
                        break;
                    }
                    // Need more bytes.
                    let mut chunk = vec![0u8; CHUNK];
                    let n = file.read(&mut chunk).map_err(io)?;
                    if n == 0 {
                        eof = true;
                        continue;
                    }
                    self.buf.drain(..consumed);
                    if let Some((_, _, off)) = self.segment.as_mut() {
                        *off += consumed as u64;
                    }
                    consumed = 0;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                frame::Next::Corrupt(why) => {
                    return Err(ReadError::Corrupt {
                        path: path.clone(),
                        reason: why.to_string(),
                    })
                }
            }
        }
        self.buf.drain(..consumed);
        if let Some((_, _, off)) = self.segment.as_mut() {
            *off += consumed as u64;
        }
        Ok(eof && self.buf.is_empty())
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
