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
        let mut progress = state.progress;
        let mut kept = state.errors.len();
        let failed = loop {
            if cancel.is_cancelled() {
                if self.shutdown.is_cancelled() {
                    return; // resumes at the next start
                }
                break Some("cancelled".to_string());
            }
            let (store, job2, path2) = (self.store.clone(), job.clone(), path.clone());
            let chunk = tokio::task::spawn_blocking(move || {
                import_chunk(&store, &job2, &path2, format, progress, kept)
            })
            .await;
            let chunk = match chunk {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => break Some(e),
                Err(e) => break Some(format!("import task failed: {e}")),
            };
            progress = chunk.progress;
            kept += chunk.errors.len();
            let lsn = match self
                .store
                .import_chunk_done(job.clone(), progress, chunk.errors)
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(job_id = %job, error = %e, "import job paused (journal closed)");
                    return;
                }
            };
            if self.store.journal().wait_durable(lsn).await.is_err() {
                return;
            }
            if chunk.done {
                break None;
            }
            tokio::task::yield_now().await;
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

/// What one chunk did.
struct Chunk {
    progress: ImportProgress,
    /// Its error messages to keep.
    errors: Vec<Arc<str>>,
    /// The file ended.
    done: bool,
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

fn import_record(
    store: &Store,
    job: &Arc<str>,
    line: u64,
    r: ImportRecord,
) -> Result<RowOutcome, String> {
    match r {
        ImportRecord::GameSession(g) => store.import_game_session(job, line, &g).map_err(|e| e.0),
        ImportRecord::PlayerSession(p) => {
            let id = p
                .player_session_id
                .unwrap_or_else(|| generated_id(job, line));
            store
                .import_player_session(job, line, &p, id)
                .map_err(|e| e.0)
        }
    }
}

/// Imports up to [`CHUNK_RECORDS`] records from `progress.offset` on.
fn import_chunk(
    store: &Store,
    job: &Arc<str>,
    path: &Path,
    format: Format,
    progress: ImportProgress,
    kept: usize,
) -> Result<Chunk, String> {
    let open = || std::fs::File::open(path).map_err(|e| format!("cannot read the upload: {e}"));
    let mut c = Chunk {
        progress,
        errors: Vec::new(),
        done: false,
    };
    match format {
        Format::Jsonl => {
            let mut f = open()?;
            f.seek(SeekFrom::Start(progress.offset))
                .map_err(|e| format!("cannot read the upload: {e}"))?;
            let mut r = BufReader::with_capacity(256 << 10, f);
            let mut buf = Vec::with_capacity(4096);
            let mut rows = 0;
            while rows < CHUNK_RECORDS {
                buf.clear();
                let n = (&mut r)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .map_err(|e| format!("cannot read the upload: {e}"))?;
                if n == 0 {
                    c.done = true;
                    break;
                }
                let line = c.progress.line;
                let mut consumed = n as u64;
                let result = if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                    // Skip the rest of the overlong line.
                    loop {
                        let more = r
                            .fill_buf()
                            .map_err(|e| format!("cannot read the upload: {e}"))?;
                        if more.is_empty() {
                            break;
                        }
                        let (used, end) = match more.iter().position(|b| *b == b'\n') {
                            Some(i) => (i + 1, true),
                            None => (more.len(), false),
                        };
                        r.consume(used);
                        consumed += used as u64;
                        if end {
                            break;
                        }
                    }
                    Some(Err(format!("longer than {MAX_LINE} bytes")))
                } else {
                    match std::str::from_utf8(&buf) {
                        Err(_) => Some(Err("not UTF-8".to_string())),
                        Ok(text) if text.trim().is_empty() => None,
                        Ok(text) => Some(
                            records::parse_jsonl(text.trim_end())
                                .and_then(|rec| import_record(store, job, line, rec)),
                        ),
                    }
                };
                c.progress.offset += consumed;
                c.progress.line += 1;
                if let Some(result) = result {
                    count(&mut c, kept, line, result);
                    rows += 1;
                }
            }
        }
        Format::Csv => {
            let mut header_reader = csv::Reader::from_reader(open()?);
            let header = header_reader
                .headers()
                .map_err(|e| format!("line 1: {e}"))?
                .clone();
            let columns = CsvColumns::from_header(&header).map_err(|e| format!("line 1: {e}"))?;
            let start = if progress.offset == 0 {
                header_reader.position().byte()
            } else {
                progress.offset
            };
            if progress.offset == 0 {
                c.progress.line = header_reader.position().line();
            }
            drop(header_reader);
            let mut f = open()?;
            f.seek(SeekFrom::Start(start))
                .map_err(|e| format!("cannot read the upload: {e}"))?;
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(BufReader::with_capacity(256 << 10, f));
            let base_line = c.progress.line;
            let mut row = csv::StringRecord::new();
            let mut rows = 0;
            while rows < CHUNK_RECORDS {
                let line = base_line + r.position().line() - 1;
                let before = r.position().byte();
                match r.read_record(&mut row) {
                    Ok(false) => {
                        c.done = true;
                        break;
                    }
                    Ok(true) => {
                        let result = columns.parse(&row).and_then(|p| {
                            import_record(store, job, line, ImportRecord::PlayerSession(p))
                        });
                        count(&mut c, kept, line, result);
                    }
                    Err(e) => {
                        if r.position().byte() == before {
                            return Err(format!("line {line}: unreadable CSV: {e}"));
                        }
                        count(&mut c, kept, line, Err(format!("invalid CSV: {e}")));
                    }
                }
                rows += 1;
                c.progress.offset = start + r.position().byte();
                c.progress.line = base_line + r.position().line() - 1;
            }
        }
    }
    Ok(c)
}
