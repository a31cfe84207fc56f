//! Import jobs: an uploaded file in the data directory, imported chunk by chunk on a blocking
//! thread, each chunk checkpointed in the journal with its counts (a STEP of the job's
//! CONTEXT). After a crash or restart a running job resumes at its last checkpoint and ends with
//! the counts it would have had: rows of the unfinished chunk that were imported are known from
//! their journaled `ImportedRow` records and counted once.
//!
//! Rows are never held in memory beyond one line (bounded by [`MAX_LINE`]) and one chunk's
//! counters; an import takes no lock longer than one row's game session lock, so RPCs go on.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::records::{self, CsvColumns, Format, ImportRecord};
use crate::{
    domain::{ImportProgress, PlayerSessionId},
    store::{JobStatus, RowOutcome, Store, MAX_JOB_ERRORS},
};

/// Records per chunk (one journal checkpoint of counts each).
pub const CHUNK_RECORDS: usize = 1000;
/// Longest accepted line of a JSONL file (bytes).
pub const MAX_LINE: usize = 1 << 20;
/// Namespace of the ids generated for rows without a player_session_id.
const ROW_NAMESPACE: Uuid = Uuid::from_u128(0x1d6c_83f2_5b0e_4a57_9a41_6f3c_2e8b_d017);

/// The id of a row without a player_session_id: the same on every attempt of the job.
pub fn generated_id(job: &str, line: u64) -> PlayerSessionId {
    PlayerSessionId::from_uuid(Uuid::new_v5(
        &ROW_NAMESPACE,
        format!("{job}/{line}").as_bytes(),
    ))
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the file is larger than --import-max-bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("{0}")]
    Io(String),
}

/// The daemon's import jobs: uploads, runners, cancellation.
pub struct Imports {
    store: Arc<Store>,
    dir: PathBuf,
    max_bytes: u64,
    shutdown: CancellationToken,
    running: Mutex<HashMap<Arc<str>, CancellationToken>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Imports {
    /// Jobs of `store`; uploads are kept in `data_dir/imports/` until their job ends.
    pub fn new(
        store: Arc<Store>,
        data_dir: &Path,
        max_bytes: u64,
        shutdown: CancellationToken,
    ) -> std::io::Result<Arc<Self>> {
        let dir = data_dir.join("imports");
        std::fs::create_dir_all(&dir)?;
        // Uploads a crash interrupted never became jobs.
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "part") {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Arc::new(Imports {
            store,
            dir,
            max_bytes,
            shutdown,
            running: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        }))
    }

    /// Resumes every job that was running when the daemon stopped.
    pub fn resume_all(self: &Arc<Self>) {
        for job in self.store.import_jobs() {
            if job.status == JobStatus::Running {
                tracing::info!(job_id = %job.id, line = job.progress.line, "resuming import job");
                self.spawn(job.id);
            }
        }
    }

    fn spawn(self: &Arc<Self>, job: Arc<str>) {
        let cancel = self.shutdown.child_token();
        self.running.lock().insert(job.clone(), cancel.clone());
        let me = self.clone();
        self.tasks.lock().spawn(async move {
            me.run(job.clone(), cancel).await;
            me.running.lock().remove(&job);
        });
    }

    /// Stores an upload (streamed, never held in memory) and starts its job.
    pub async fn upload<S, B, E>(
        self: &Arc<Self>,
        format: Format,
        mut body: S,
    ) -> Result<Arc<str>, UploadError>
    where
        S: futures::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let job: Arc<str> = format!("import-{}", Uuid::new_v4()).into();
        let name = format!("{job}.{}", format.as_str());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.part"));
        let io = |e: std::io::Error| UploadError::Io(format!("cannot store the upload: {e}"));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk
                    .map_err(|e| UploadError::BadRequest(format!("upload interrupted: {e}")))?;
                let chunk = chunk.as_ref();
                written += chunk.len() as u64;
                if written > self.max_bytes {
                    return Err(UploadError::TooLarge(self.max_bytes));
                }
                file.write_all(chunk).await.map_err(io)?;
            }
            if written == 0 {
                return Err(UploadError::BadRequest(
                    "empty body: nothing to import".into(),
                ));
            }
            file.sync_all().await.map_err(io)?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        crate::journal::segment::sync_dir(&self.dir).map_err(io)?;
        let lsn = self
            .store
            .start_import(job.clone(), format.as_str(), &name)
            .map_err(|e| UploadError::Io(e.to_string()))?;
        self.store
            .journal()
            .wait_durable(lsn)
            .await
            .map_err(|e| UploadError::Io(e.to_string()))?;
        tracing::info!(job_id = %job, format = format.as_str(), bytes = written, "import job started");
        self.spawn(job.clone());
        Ok(job)
    }

    /// Cancels a running job (it stops at its next chunk boundary and ends as failed).
    pub fn cancel(&self, job: &str) -> bool {
        match self.running.lock().get(job) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Waits until every runner stopped (they stop at a chunk boundary on shutdown; their jobs
    /// stay running and resume at the next start).
    pub async fn wait_all(self: Arc<Self>, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        while tasks.join_next().await.is_some() {}
    }

    async fn run(self: &Arc<Self>, job: Arc<str>, cancel: CancellationToken) {
        let Some(state) = self.store.import_job(&job) else {
            return;
        };
        let path = self.dir.join(&*state.file);
        let format = Format::parse(&state.format).unwrap_or(Format::Jsonl);
        let run = Run {
            store: self.store.clone(),
            job: job.clone(),
            path: path.clone(),
            format,
            cancel,
            shutdown: self.shutdown.clone(),
        };
        let start = (state.progress, state.errors.len());
        let ended = tokio::task::spawn_blocking(move || run.import(start.0, start.1))
            .await
            .unwrap_or_else(|e| Ended::Failed(format!("import task failed: {e}"), start.0));
        let (failed, progress) = match ended {
            Ended::Paused => return, // resumes at the next start
            Ended::Completed(p) => (None, p),
            Ended::Failed(why, p) => (Some(why), p),
        };
        let reason = failed.map(|f| Arc::<str>::from(f.as_str()));
        if let Ok(lsn) = self.store.finish_import(job.clone(), reason.clone()) {
            let _ = self.store.journal().wait_durable(lsn).await;
        }
        let _ = tokio::fs::remove_file(&path).await;
        tracing::info!(
            job_id = %job,
            total = progress.total,
            imported = progress.imported,
            skipped = progress.skipped,
            failed = reason.as_deref().unwrap_or(""),
            "import job finished"
        );
    }
}

/// How a runner stopped.
enum Ended {
    /// The file was read to its end.
    Completed(ImportProgress),
    /// Stopped for good (cancelled, unreadable file): why, and the checkpointed progress.
    Failed(String, ImportProgress),
    /// The daemon is stopping (or the journal closed): the job stays running and resumes at
    /// the next start.
    Paused,
}

/// One runner of a job, on a blocking thread.
struct Run {
    store: Arc<Store>,
    job: Arc<str>,
    path: PathBuf,
    format: Format,
    cancel: CancellationToken,
    shutdown: CancellationToken,
}

/// One line (or CSV record) read: where the next one starts, and its record (`None` for a
/// blank line, which is not counted).
struct Item {
    line: u64,
    next_line: u64,
    next_offset: u64,
    record: Option<Result<ImportRecord, String>>,
}

impl Run {
    /// Imports from `progress` on, checkpointing every [`CHUNK_RECORDS`] rows without waiting
    /// for each checkpoint to be durable (the journal's order makes a crash lose a suffix: the
    /// rows after the last durable checkpoint, with their `ImportedRow` records).
    fn import(&self, progress: ImportProgress, kept: usize) -> Ended {
        let result = match self.format {
            Format::Jsonl => self.jsonl(progress, kept),
            Format::Csv => match csv_items(&self.path, progress) {
                Ok((progress, items)) => self.apply(progress, kept, items),
                Err(e) => Err((e, progress)),
            },
        };
        match result {
            Ok(Some(p)) => Ended::Completed(p),
            Ok(None) => Ended::Paused,
            Err((e, p)) => Ended::Failed(e, p),
        }
    }

    /// JSONL: a reader thread reads and parses lines ahead (in batches) while this thread
    /// imports them, so parsing and importing use both cores.
    fn jsonl(
        &self,
        progress: ImportProgress,
        kept: usize,
    ) -> Result<Option<ImportProgress>, (String, ImportProgress)> {
        let mut file = std::fs::File::open(&self.path)
            .and_then(|mut f| f.seek(SeekFrom::Start(progress.offset)).map(|_| f))
            .map_err(|e| (format!("cannot read the upload: {e}"), progress))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Item, String>>>(8);
        std::thread::scope(|scope| {
            let reader = std::thread::Builder::new().name("import-reader".into());
            let spawned = reader.spawn_scoped(scope, move || {
                let mut lines = JsonlLines {
                    job: &self.job,
                    reader: BufReader::with_capacity(256 << 10, &mut file),
                    buf: Vec::with_capacity(4096),
                    line: progress.line,
                    offset: progress.offset,
                };
                loop {
                    let mut batch = Vec::with_capacity(BATCH);
                    let mut end = false;
                    while batch.len() < BATCH {
                        match lines.next() {
                            Some(item) => {
                                end = item.is_err();
                                batch.push(item);
                                if end {
                                    break;
                                }
                            }
                            None => {
                                end = true;
                                break;
                            }
                        }
                    }
                    let sent = batch.is_empty() || tx.send(batch).is_ok();
                    if end || !sent {
                        break;
                    }
                }
            });
            if let Err(e) = spawned {
                return Err((format!("cannot start the import reader: {e}"), progress));
            }
            let items = rx.into_iter().flatten();
            self.apply(progress, kept, items)
        })
    }

    /// Imports `items` into the store, checkpointing each chunk. `Ok(None)`: paused.
    /// Consecutive player session rows of one game session are imported as a run (up to
    /// [`RUN_ROWS`], never across a chunk boundary): one lock of the game session and one
    /// journal checkpoint for the run.
    fn apply(
        &self,
        progress: ImportProgress,
        kept: usize,
        items: impl Iterator<Item = Result<Item, String>>,
    ) -> Result<Option<ImportProgress>, (String, ImportProgress)> {
        let mut a = Applier {
            run: self,
            c: Chunk {
                progress,
                errors: Vec::new(),
            },
            kept,
            rows: 0,
            checkpointed: progress,
        };
        let mut held: Vec<Held> = Vec::with_capacity(RUN_ROWS);
        for item in items {
            if a.rows == 0 && held.is_empty() && self.cancel.is_cancelled() {
                if self.shutdown.is_cancelled() {
                    return Ok(None);
                }
                return Err(("cancelled".into(), a.checkpointed));
            }
            let item = item.map_err(|e| (e, a.checkpointed))?;
            match item.record {
                Some(Ok(ImportRecord::PlayerSession(record))) => {
                    if held
                        .first()
                        .is_some_and(|h| h.record.game_session_id != record.game_session_id)
                        && !a.flush(&mut held)
                    {
                        return Ok(None);
                    }
                    held.push(Held {
                        line: item.line,
                        next_line: item.next_line,
                        next_offset: item.next_offset,
                        record,
                    });
                    if (held.len() >= RUN_ROWS || a.rows + held.len() >= CHUNK_RECORDS)
                        && !a.flush(&mut held)
                    {
                        return Ok(None);
                    }
                }
                // Anything else ends the held run first, so rows are counted in file order.
                Some(Ok(ImportRecord::GameSession(g))) => {
                    if !a.flush(&mut held) {
                        return Ok(None);
                    }
                    let result = self
                        .store
                        .import_game_session(&self.job, item.line, &g)
                        .map_err(|e| e.0);
                    if !a.done(item.line, item.next_line, item.next_offset, Some(result)) {
                        return Ok(None);
                    }
                }
                Some(Err(e)) => {
                    if !a.flush(&mut held)
                        || !a.done(item.line, item.next_line, item.next_offset, Some(Err(e)))
                    {
                        return Ok(None);
                    }
                }
                // A blank line: not a row.
                None => {
                    if !a.flush(&mut held)
                        || !a.done(item.line, item.next_line, item.next_offset, None)
                    {
                        return Ok(None);
                    }
                }
            }
        }
        if !a.flush(&mut held) || !a.checkpoint() {
            return Ok(None);
        }
        Ok(Some(a.c.progress))
    }
}

/// Player session rows of one game session imported together.
const RUN_ROWS: usize = 256;

/// A player session row waiting for the rest of its run.
struct Held {
    line: u64,
    next_line: u64,
    next_offset: u64,
    record: records::PlayerSessionRecord,
}

/// The counting and checkpointing state of [`Run::apply`].
struct Applier<'a> {
    run: &'a Run,
    c: Chunk,
    /// Error messages kept by earlier chunks.
    kept: usize,
    /// Rows counted in the current chunk.
    rows: usize,
    /// The progress of the last checkpoint.
    checkpointed: ImportProgress,
}

impl Applier<'_> {
    /// Journals the current chunk's counts. `false`: the journal closed (pause).
    fn checkpoint(&mut self) -> bool {
        self.kept += self.c.errors.len();
        let errors = std::mem::take(&mut self.c.errors);
        match self
            .run
            .store
            .import_chunk_done(self.run.job.clone(), self.c.progress, errors)
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(job_id = %self.run.job, error = %e, "import job paused (journal closed)");
                false
            }
        }
    }

    /// Counts one line (`None`: a blank line, not a row) and checkpoints at a chunk's end.
    fn done(
        &mut self,
        line: u64,
        next_line: u64,
        next_offset: u64,
        result: Option<Result<RowOutcome, String>>,
    ) -> bool {
        if let Some(r) = result {
            count(&mut self.c, self.kept, line, r);
            self.rows += 1;
        }
        self.c.progress.line = next_line;
        self.c.progress.offset = next_offset;
        if self.rows == CHUNK_RECORDS {
            if !self.checkpoint() {
                return false;
            }
            self.checkpointed = self.c.progress;
            self.rows = 0;
        }
        true
    }

    /// Imports the held run and counts its rows in order.
    fn flush(&mut self, held: &mut Vec<Held>) -> bool {
        if held.is_empty() {
            return true;
        }
        let job = &self.run.job;
        let rows: Vec<_> = held
            .iter()
            .map(|h| {
                let id = h
                    .record
                    .player_session_id
                    .unwrap_or_else(|| generated_id(job, h.line));
                (h.line, &h.record, id)
            })
            .collect();
        let results = self.run.store.import_player_sessions(job, &rows);
        drop(rows);
        for (h, r) in held.drain(..).zip(results) {
            if !self.done(h.line, h.next_line, h.next_offset, Some(r.map_err(|e| e.0))) {
                return false;
            }
        }
        true
    }
}

/// Rows a reader thread hands over at once.
const BATCH: usize = 256;

/// The lines of a JSONL file from an offset on, parsed.
struct JsonlLines<'j, R> {
    job: &'j str,
    reader: R,
    buf: Vec<u8>,
    line: u64,
    offset: u64,
}

impl<R: BufRead> Iterator for JsonlLines<'_, R> {
    type Item = Result<Item, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let io = |e: std::io::Error| format!("cannot read the upload: {e}");
        self.buf.clear();
        let n = match (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)
        {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => return Some(Err(io(e))),
        };
        let mut consumed = n as u64;
        let record = if self.buf.len() > MAX_LINE && self.buf.last() != Some(&b'\n') {
            // Skip the rest of the overlong line.
            loop {
                let more = match self.reader.fill_buf() {
                    Ok(m) => m,
                    Err(e) => return Some(Err(io(e))),
                };
                if more.is_empty() {
                    break;
                }
                let (used, end) = match more.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (more.len(), false),
                };
                self.reader.consume(used);
                consumed += used as u64;
                if end {
                    break;
                }
            }
            Some(Err(format!("longer than {MAX_LINE} bytes")))
        } else {
            match std::str::from_utf8(&self.buf) {
                Err(_) => Some(Err("not UTF-8".to_string())),
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some(records::parse_jsonl(text.trim_end()).map(|r| match r {
                    // Generated here, on the reader thread.
                    ImportRecord::PlayerSession(mut p) => {
                        p.player_session_id
                            .get_or_insert_with(|| generated_id(self.job, self.line));
                        ImportRecord::PlayerSession(p)
                    }
                    other => other,
                })),
            }
        };
        let line = self.line;
        self.line += 1;
        self.offset += consumed;
        Some(Ok(Item {
            line,
            next_line: self.line,
            next_offset: self.offset,
            record,
        }))
    }
}

/// The records of a CSV file from `progress` on (reading its header first), and the progress
/// to start from (past the header on a first run).
fn csv_items(
    path: &Path,
    mut progress: ImportProgress,
) -> Result<(ImportProgress, impl Iterator<Item = Result<Item, String>>), String> {
    let open = || std::fs::File::open(path).map_err(|e| format!("cannot read the upload: {e}"));
    let mut header_reader = csv::Reader::from_reader(open()?);
    let header = header_reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .clone();
    let columns = CsvColumns::from_header(&header).map_err(|e| format!("line 1: {e}"))?;
    let start = if progress.offset == 0 {
        progress.line = header_reader.position().line();
        header_reader.position().byte()
    } else {
        progress.offset
    };
    drop(header_reader);
    let mut f = open()?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| format!("cannot read the upload: {e}"))?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::with_capacity(256 << 10, f));
    let base_line = progress.line;
    let mut row = csv::StringRecord::new();
    let mut failed = false;
    let items = std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let line = base_line + r.position().line() - 1;
        let before = r.position().byte();
        let record = match r.read_record(&mut row) {
            Ok(false) => return None,
            Ok(true) => columns.parse(&row).map(ImportRecord::PlayerSession),
            Err(e) => {
                if r.position().byte() == before {
                    failed = true;
                    return Some(Err(format!("line {line}: unreadable CSV: {e}")));
                }
                Err(format!("invalid CSV: {e}"))
            }
        };
        Some(Ok(Item {
            line,
            next_line: base_line + r.position().line() - 1,
            next_offset: start + r.position().byte(),
            record: Some(record),
        }))
    });
    Ok((progress, items))
}

/// What the current chunk did.
struct Chunk {
    progress: ImportProgress,
    /// Its error messages to keep.
    errors: Vec<Arc<str>>,
}

/// Counts one row into `c`.
fn count(c: &mut Chunk, kept: usize, line: u64, result: Result<RowOutcome, String>) {
    c.progress.total += 1;
    match result {
        Ok(_) => c.progress.imported += 1,
        Err(e) => {
            c.progress.skipped += 1;
            if kept + c.errors.len() < MAX_JOB_ERRORS {
                c.errors.push(format!("line {line}: {e}").into());
            } else {
                c.progress.more_errors += 1;
            }
        }
    }
}
