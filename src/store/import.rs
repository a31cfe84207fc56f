//! Import jobs in the store: their journaled state, and the import of one record.
//!
//! A job is a CONTEXT in the journal: started, one checkpoint per chunk with cumulative counts,
//! finished. Every imported row is journaled in the same checkpoint as an `ImportedRow` child of
//! the job, so after a crash the job knows which rows of its unfinished chunk it already
//! imported: re-reading the chunk counts them as imported again instead of as duplicates, and
//! nothing is imported twice. Imported sessions go through the same indexes, counts, fleet
//! index, watchers and timers as live ones; RESERVED ones get a fresh reservation deadline.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use dashmap::mapref::entry::Entry;

use super::{FleetEventKind, GameSessionEntry, Store};
use crate::{
    domain::{
        Change, CreationPolicy, EndCause, EndReason, GameSession, GameSessionInfo,
        GameSessionStatus, ImportProgress, Lsn, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, RegisterGameSession, SessionLsns, Timestamp,
    },
    import::records::{GameSessionRecord, PlayerSessionRecord},
    sweeper::Timer,
};

/// Error messages a job keeps (later ones are only counted).
pub const MAX_JOB_ERRORS: usize = 1000;
/// Finished jobs remembered (the oldest are forgotten beyond).
const MAX_FINISHED_JOBS: usize = 1000;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }
}

/// One import job, as journaled.
#[derive(Debug, Clone)]
pub struct ImportJob {
    pub id: Arc<str>,
    /// `jsonl` or `csv`.
    pub format: Arc<str>,
    /// The uploaded file's name in the data directory's `imports/` folder.
    pub file: Arc<str>,
    pub status: JobStatus,
    pub progress: ImportProgress,
    /// The first [`MAX_JOB_ERRORS`] error messages (`line N: ...`).
    pub errors: Vec<Arc<str>>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub failure: Option<Arc<str>>,
    /// Rows imported since the last chunk checkpoint, with their line.
    pub pending: HashMap<Arc<str>, u64>,
}

/// What importing one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// Imported now; its records end at this LSN.
    Imported(Lsn),
    /// This job imported it before a restart (counted as imported again).
    AlreadyImported,
}

/// Why a row was not imported: `duplicate` rows and invalid ones are both skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError(pub String);

impl Store {
    /// Applies a journaled import change to the jobs (on replay).
    pub(super) fn apply_import(&self, change: &Change) {
        apply_to_jobs(&mut self.jobs.lock(), change);
    }

    /// Appends `changes` (ending with an import change) and applies that change to the jobs
    /// with the jobs' lock held across both, so a snapshot that copies the jobs after this
    /// append also sees its effect (a snapshot never misses a record older than its replay
    /// LSN). Lock order: game session entry -> jobs -> journal.
    fn append_import(&self, changes: &[Change]) -> crate::domain::Result<Lsn> {
        let mut jobs = self.jobs.lock();
        let first = self.journal.append(changes)?;
        if let Some(last) = changes.last() {
            apply_to_jobs(&mut jobs, last);
        }
        Ok(first)
    }
}

fn apply_to_jobs(jobs: &mut BTreeMap<Arc<str>, ImportJob>, change: &Change) {
    match change {
        Change::ImportStarted {
            job,
            format,
            file,
            at,
        } => {
            jobs.entry(job.clone()).or_insert_with(|| ImportJob {
                id: job.clone(),
                format: format.clone(),
                file: file.clone(),
                status: JobStatus::Running,
                progress: ImportProgress {
                    line: 1,
                    ..ImportProgress::default()
                },
                errors: Vec::new(),
                started_at: *at,
                finished_at: None,
                failure: None,
                pending: HashMap::new(),
            });
        }
        Change::ImportChunk {
            job,
            progress,
            errors,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                if progress.offset >= j.progress.offset {
                    j.progress = *progress;
                    let room = MAX_JOB_ERRORS.saturating_sub(j.errors.len());
                    j.errors.extend(errors.iter().take(room).cloned());
                    j.pending.clear();
                }
            }
        }
        Change::ImportedRow { job, id, line, .. } => {
            if let Some(j) = jobs.get_mut(job) {
                j.pending.insert(id.clone(), *line);
            }
        }
        Change::ImportFinished { job, failed, at } => {
            if let Some(j) = jobs.get_mut(job) {
                j.status = if failed.is_some() {
                    JobStatus::Failed
                } else {
                    JobStatus::Completed
                };
                j.failure = failed.clone();
                j.finished_at = Some(*at);
                j.pending.clear();
            }
            forget_old_jobs(jobs);
        }
        _ => {}
    }
}

impl Store {
    fn journal_import(&self, change: Change) -> crate::domain::Result<Lsn> {
        self.append_import(std::slice::from_ref(&change))
    }

    /// Starts a job on an uploaded file.
    pub fn start_import(
        &self,
        job: Arc<str>,
        format: &str,
        file: &str,
    ) -> crate::domain::Result<Lsn> {
        self.journal_import(Change::ImportStarted {
            job,
            format: format.into(),
            file: file.into(),
            at: self.clock.now(),
        })
    }

    /// Checkpoints a chunk: cumulative progress and the chunk's (kept) error messages.
    pub fn import_chunk_done(
        &self,
        job: Arc<str>,
        progress: ImportProgress,
        errors: Vec<Arc<str>>,
    ) -> crate::domain::Result<Lsn> {
        self.journal_import(Change::ImportChunk {
            job,
            progress,
            errors,
            at: self.clock.now(),
        })
    }

    /// Ends a job (`failed`: why it stopped).
    pub fn finish_import(
        &self,
        job: Arc<str>,
        failed: Option<Arc<str>>,
    ) -> crate::domain::Result<Lsn> {
        self.journal_import(Change::ImportFinished {
            job,
            failed,
            at: self.clock.now(),
        })
    }

    /// One job.
    pub fn import_job(&self, id: &str) -> Option<ImportJob> {
        self.jobs.lock().get(id).cloned()
    }

    /// Every remembered job, oldest first.
    pub fn import_jobs(&self) -> Vec<ImportJob> {
        let mut v: Vec<_> = self.jobs.lock().values().cloned().collect();
        v.sort_by_key(|j| (j.started_at, j.id.clone()));
        v
    }

    /// Restores a job from a snapshot.
    pub fn restore_import_job(&self, job: ImportJob) {
        self.jobs.lock().insert(job.id.clone(), job);
    }

    /// Did this job import `key` from this very line before a restart? (The same id on
    /// another line is a duplicate.)
    fn imported_before(&self, job: &Arc<str>, key: &str, line: u64) -> bool {
        self.jobs
            .lock()
            .get(job)
            .is_some_and(|j| j.pending.get(key) == Some(&line))
    }

    /// Imports a game session (ACTIVE, or ended with its own times) for `job`.
    pub fn import_game_session(
        &self,
        job: &Arc<str>,
        line: u64,
        r: &GameSessionRecord,
    ) -> Result<RowOutcome, RowError> {
        let key: Arc<str> = r.game_session_id.as_str().into();
        if self.imported_before(job, &key, line) {
            return Ok(RowOutcome::AlreadyImported);
        }
        RegisterGameSession {
            fleet_id: r.fleet_id.clone(),
            game_session_id: Some(r.game_session_id.clone()),
            name: r.name.clone(),
            ip_address: r.ip_address.clone(),
            port: r.port,
            maximum_player_session_count: r.maximum_player_session_count,
            labels: r.labels.clone(),
            release: r.release.clone(),
            environment: r.environment.clone(),
            reservation_timeout: None,
            heartbeat_timeout: None,
        }
        .validate()
        .map_err(|e| RowError(e.to_string()))?;
        let now = self.clock.now();
        let created = r.creation_time.unwrap_or(now);
        let active = r.status == GameSessionStatus::Active;
        let heartbeat = (r.heartbeat_timeout_seconds > 0)
            .then(|| Duration::from_secs(u64::from(r.heartbeat_timeout_seconds)));
        let session = GameSession {
            info: Arc::new(GameSessionInfo {
                id: r.game_session_id.clone(),
                fleet_id: r.fleet_id.clone(),
                ip_address: r.ip_address.as_str().into(),
                port: r.port,
            }),
            name: r.name.as_str().into(),
            maximum_player_session_count: r.maximum_player_session_count,
            current_player_session_count: 0,
            creation_policy: CreationPolicy::AcceptAll,
            status: GameSessionStatus::Active,
            labels: Arc::new(r.labels.clone()),
            release: r.release.as_str().into(),
            environment: r.environment.as_str().into(),
            reservation_timeout: if r.reservation_timeout_seconds > 0 {
                Duration::from_secs(u64::from(r.reservation_timeout_seconds))
            } else {
                self.config.reservation_timeout
            },
            heartbeat_timeout: heartbeat,
            heartbeat_deadline: heartbeat.filter(|_| active).map(|t| now.saturating_add(t)),
            creation_time: created,
            termination_time: None,
            termination_reason: None,
            end_cause: None,
        };
        let end = (!active).then(|| {
            let cause = if r.status == GameSessionStatus::Error {
                EndCause::Crashed
            } else {
                EndCause::Ended
            };
            let at = r.termination_time.unwrap_or(created).max(created);
            let reason: Arc<str> = r.termination_reason.as_deref().unwrap_or("").into();
            (cause, at, reason)
        });
        let mut changes = vec![Change::GameSessionStarted(session.clone())];
        if r.creation_policy == CreationPolicy::DenyAll {
            changes.push(Change::GameSessionUpdated {
                id: r.game_session_id.clone(),
                maximum_player_session_count: None,
                policy: Some(CreationPolicy::DenyAll),
                at: created,
            });
        }
        if let Some((cause, at, reason)) = &end {
            changes.push(Change::GameSessionEnded {
                id: r.game_session_id.clone(),
                cause: *cause,
                reason: reason.clone(),
                at: *at,
            });
        }
        let row = Change::ImportedRow {
            job: job.clone(),
            id: key,
            line,
            at: now,
        };
        changes.push(row);
        let lsn = match self.game_sessions.entry(r.game_session_id.clone()) {
            Entry::Occupied(_) => {
                return Err(RowError(format!(
                    "game session {} already exists",
                    r.game_session_id
                )))
            }
            Entry::Vacant(v) => {
                let first = self
                    .append_import(&changes)
                    .map_err(|e| RowError(e.to_string()))?;
                let mut e = v.insert(GameSessionEntry::new(session.clone()));
                self.count_game_added(&session);
                self.fleet_changed(&e.session, FleetEventKind::Created, |_| {});
                if r.creation_policy == CreationPolicy::DenyAll {
                    self.apply_update(&mut e, None, Some(CreationPolicy::DenyAll));
                }
                if let Some((cause, at, reason)) = end {
                    self.end_game_locked(&mut e, at, cause, reason, &[]);
                    self.fleet_changed(&e.session, FleetEventKind::Ended, |_| {});
                }
                first + changes.len() as Lsn - 1
            }
        };
        if let Some(d) = session.heartbeat_deadline {
            self.timers
                .schedule(d, Timer::Heartbeat(r.game_session_id.clone()));
        }
        Ok(RowOutcome::Imported(lsn))
    }

    /// Imports a player session with the id `id` for `job`. RESERVED and ACTIVE ones obey
    /// capacity and the one-live-session-per-player rule and need an ACTIVE game session;
    /// terminal ones keep their times (and fall under retention).
    pub fn import_player_session(
        &self,
        job: &Arc<str>,
        line: u64,
        r: &PlayerSessionRecord,
        id: PlayerSessionId,
    ) -> Result<RowOutcome, RowError> {
        let key: Arc<str> = id.to_string().into();
        if self.imported_before(job, &key, line) {
            return Ok(RowOutcome::AlreadyImported);
        }
        let gsid = &r.game_session_id;
        let mut e = self
            .entry_mut(gsid)
            .map_err(|_| RowError(format!("game session {gsid} not found")))?;
        if let Some(f) = r.fleet_id.as_ref().filter(|f| *f != e.session.fleet_id()) {
            return Err(RowError(format!(
                "fleet_id: game session {gsid} is in fleet {}, not {f}",
                e.session.fleet_id()
            )));
        }
        if self.player_sessions.contains_key(&id) {
            return Err(RowError(format!("player session {id} already exists")));
        }
        let now = self.clock.now();
        let created = r.creation_time.unwrap_or(now);
        let end = r.termination_time.unwrap_or(created).max(created);
        if r.status.is_live() {
            e.session
                .check_active()
                .map_err(|e| RowError(e.to_string()))?;
            if e.live.contains_key(&r.player_id) {
                return Err(RowError(format!(
                    "player {} already has a live player session in game session {gsid}",
                    r.player_id
                )));
            }
            if e.session.free_seats() < 1 {
                return Err(RowError(format!(
                    "game session {gsid} is full ({} seats)",
                    e.session.maximum_player_session_count
                )));
            }
        }
        let deadline = match r.status {
            PlayerSessionStatus::TimedOut => end,
            _ => now.saturating_add(e.session.reservation_timeout),
        };
        let mut ps = PlayerSession {
            id,
            player_id: r.player_id.clone(),
            game: e.session.info.clone(),
            status: PlayerSessionStatus::Reserved,
            creation_time: created,
            termination_time: None,
            reservation_deadline: deadline,
            player_data: r.player_data.clone(),
            accepted_at: None,
            end_reason: None,
            lsns: SessionLsns::default(),
            errors: None,
        };
        let mut changes = vec![Change::Reserved(ps.clone())];
        match r.status {
            PlayerSessionStatus::Reserved => {}
            PlayerSessionStatus::Active => changes.push(Change::Accepted {
                id,
                game_session_id: gsid.clone(),
                at: created,
            }),
            PlayerSessionStatus::Completed => changes.push(Change::Completed {
                id,
                game_session_id: gsid.clone(),
                reason: EndReason::Removed,
                at: end,
            }),
            PlayerSessionStatus::TimedOut => changes.push(Change::TimedOut {
                id,
                game_session_id: gsid.clone(),
                at: end,
            }),
        }
        let row = Change::ImportedRow {
            job: job.clone(),
            id: key,
            line,
            at: now,
        };
        changes.push(row);
        let first = self
            .append_import(&changes)
            .map_err(|e| RowError(e.to_string()))?;
        // The same steps replay takes for these records.
        ps.lsns.reserved = first;
        match r.status {
            PlayerSessionStatus::Reserved => {}
            PlayerSessionStatus::Active => {
                let _ = ps.accept(created);
                ps.lsns.accepted = first + 1;
            }
            PlayerSessionStatus::Completed => {
                ps.complete(end, EndReason::Removed);
                ps.lsns.ended = first + 1;
            }
            PlayerSessionStatus::TimedOut => {
                ps.time_out(end);
                ps.lsns.ended = first + 1;
            }
        }
        let fleet = e.session.fleet_id().clone();
        self.count_player(&fleet, None, Some(ps.status));
        let contribution = super::release_health::retained(&ps);
        let status = ps.status;
        self.index_player(&mut e, ps);
        if status.is_live() {
            e.sync_count();
            self.fleet_changed(&e.session, FleetEventKind::Updated, |f| {
                f.health.restore(&e.session, contribution);
            });
        } else {
            // A terminal row takes no seat: the game session did not change, so its index
            // entry and its fleet's watchers need nothing.
            self.with_fleet(e.session.fleet_id(), |f| {
                f.health.restore(&e.session, contribution);
            });
        }
        drop(e);
        match status {
            PlayerSessionStatus::Reserved => {
                self.timers.schedule(deadline, Timer::Reservation(id));
            }
            PlayerSessionStatus::Active => {}
            _ => self.schedule_purge(end, Timer::PurgePlayerSession(id)),
        }
        Ok(RowOutcome::Imported(first + changes.len() as Lsn - 1))
    }
}

fn forget_old_jobs(jobs: &mut BTreeMap<Arc<str>, ImportJob>) {
    let finished = jobs
        .values()
        .filter(|j| j.status != JobStatus::Running)
        .count();
    if finished <= MAX_FINISHED_JOBS {
        return;
    }
    let mut old: Vec<_> = jobs
        .values()
        .filter(|j| j.status != JobStatus::Running)
        .map(|j| (j.finished_at, j.id.clone()))
        .collect();
    old.sort();
    for (_, id) in old.into_iter().take(finished - MAX_FINISHED_JOBS) {
        jobs.remove(&id);
    }
}
