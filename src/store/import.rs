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
        PlayerSessionStatus, PlayerStrings, RegisterGameSession, Timestamp,
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

    /// Appends `changes` (among them import changes) and applies those to the jobs
    /// with the jobs' lock held across both, so a snapshot that copies the jobs after this
    /// append also sees its effect (a snapshot never misses a record older than its replay
    /// LSN). Lock order: game session entry -> jobs -> journal.
    fn append_import(&self, changes: &[Change]) -> crate::domain::Result<Lsn> {
        let mut jobs = self.jobs.lock();
        let first = self.journal.append(changes)?;
        for c in changes {
            apply_to_jobs(&mut jobs, c);
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

    /// Imports a run of player sessions of one game session (the rows of a file usually come
    /// grouped by game session), each with its id. RESERVED and ACTIVE ones obey capacity and
    /// the one-live-session-per-player rule and need an ACTIVE game session; terminal ones
    /// keep their times (and fall under retention). The rows are checked in order under the
    /// game session's lock (as if imported one by one), and the imported ones are journaled in
    /// one checkpoint.
    /// Returns one result per row, in order. Keep runs short (a few hundred rows): the game
    /// session stays locked for the whole run.
    pub fn import_player_sessions(
        &self,
        job: &Arc<str>,
        rows: &[(u64, &PlayerSessionRecord, PlayerSessionId)],
    ) -> Vec<Result<RowOutcome, RowError>> {
        let Some(first_row) = rows.first() else {
            return Vec::new();
        };
        let gsid = &first_row.1.game_session_id;
        debug_assert!(rows.iter().all(|(_, r, _)| r.game_session_id == *gsid));
        let keys: Vec<Arc<str>> = rows
            .iter()
            .map(|(_, _, id)| id.to_string().into())
            .collect();
        // Rows this job imported before a restart (one look at the job for the whole run).
        let before: Vec<bool> = {
            let jobs = self.jobs.lock();
            let pending = jobs.get(job).map(|j| &j.pending).filter(|p| !p.is_empty());
            rows.iter()
                .zip(&keys)
                .map(|((line, _, _), k)| pending.is_some_and(|p| p.get(k) == Some(line)))
                .collect()
        };
        let mut out: Vec<Result<RowOutcome, RowError>> = Vec::with_capacity(rows.len());
        let Ok(mut e) = self.entry_mut(gsid) else {
            for b in before {
                out.push(if b {
                    Ok(RowOutcome::AlreadyImported)
                } else {
                    Err(RowError(format!("game session {gsid} not found")))
                });
            }
            return out;
        };
        let now = self.clock.now();
        // What the rows before this one in the run took: ids, live players, seats.
        let mut taken_ids = std::collections::HashSet::new();
        let mut live_players = std::collections::HashSet::new();
        let mut planned: Vec<(usize, PlayerSession, PlayerSessionStatus, Timestamp, usize)> =
            Vec::new();
        let mut changes = Vec::new();
        for (i, ((line, r, id), key)) in rows.iter().zip(&keys).enumerate() {
            let id = *id;
            if before[i] {
                out.push(Ok(RowOutcome::AlreadyImported));
                continue;
            }
            let checked = (|| {
                if let Some(f) = r.fleet_id.as_ref().filter(|f| *f != e.session.fleet_id()) {
                    return Err(RowError(format!(
                        "fleet_id: game session {gsid} is in fleet {}, not {f}",
                        e.session.fleet_id()
                    )));
                }
                if taken_ids.contains(&id) || self.player_sessions.contains_key(&id) {
                    return Err(RowError(format!("player session {id} already exists")));
                }
                if r.status.is_live() {
                    e.session
                        .check_active()
                        .map_err(|e| RowError(e.to_string()))?;
                    if live_players.contains(&r.player_id)
                        || self.seat_of(&e, r.player_id.as_str()).is_some()
                    {
                        return Err(RowError(format!(
                            "player {} already has a live player session in game session {gsid}",
                            r.player_id
                        )));
                    }
                    if e.session.free_seats() < 1 + live_players.len() as u32 {
                        return Err(RowError(format!(
                            "game session {gsid} is full ({} seats)",
                            e.session.maximum_player_session_count
                        )));
                    }
                }
                Ok(())
            })();
            if let Err(err) = checked {
                out.push(Err(err));
                continue;
            }
            taken_ids.insert(id);
            if r.status.is_live() {
                live_players.insert(r.player_id.clone());
            }
            let created = r.creation_time.unwrap_or(now);
            let end = r.termination_time.unwrap_or(created).max(created);
            let deadline = match r.status {
                PlayerSessionStatus::TimedOut => end,
                _ => now.saturating_add(e.session.reservation_timeout),
            };
            let ps = PlayerSession::reserved(
                id,
                PlayerStrings::new(&r.player_id, r.player_data.as_deref()),
                e.session.info.clone(),
                created,
                deadline,
            );
            let offset = changes.len();
            changes.push(Change::Reserved(ps.clone()));
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
            changes.push(Change::ImportedRow {
                job: job.clone(),
                id: key.clone(),
                line: *line,
                at: now,
            });
            planned.push((i, ps, r.status, end, offset));
            // A placeholder, replaced below once the run's checkpoint is appended.
            out.push(Ok(RowOutcome::AlreadyImported));
        }
        if planned.is_empty() {
            return out;
        }
        let first = match self.append_import(&changes) {
            Ok(first) => first,
            Err(err) => {
                let msg = err.to_string();
                for (i, ..) in &planned {
                    out[*i] = Err(RowError(msg.clone()));
                }
                return out;
            }
        };
        let fleet = e.session.fleet_id().clone();
        let mut live_changed = false;
        let mut timers = Vec::with_capacity(planned.len());
        for (i, mut ps, status, end, offset) in planned {
            // The same steps replay takes for these records.
            let at = first + offset as Lsn;
            ps.lsns.set_reserved(at);
            let created = ps.creation_time;
            match status {
                PlayerSessionStatus::Reserved => {}
                PlayerSessionStatus::Active => {
                    let _ = ps.accept(created);
                    ps.lsns.set_accepted(at + 1);
                }
                PlayerSessionStatus::Completed => {
                    ps.complete(end, EndReason::Removed);
                    ps.lsns.set_ended(at + 1);
                }
                PlayerSessionStatus::TimedOut => {
                    ps.time_out(end);
                    ps.lsns.set_ended(at + 1);
                }
            }
            let records = if status == PlayerSessionStatus::Reserved {
                2
            } else {
                3
            };
            out[i] = Ok(RowOutcome::Imported(at + records - 1));
            self.count_player(&fleet, None, Some(ps.status));
            let contribution = super::release_health::retained(&ps);
            let (id, deadline) = (ps.id, ps.reservation_deadline);
            self.index_player(&mut e, ps);
            live_changed |= status.is_live();
            self.with_fleet(&fleet, |f| f.health.restore(&e.session, contribution));
            timers.push((status, id, deadline, end));
        }
        if live_changed {
            // Seats changed: one index update and one event for the run.
            e.sync_count();
            self.fleet_changed(&e.session, FleetEventKind::Updated, |_| {});
        }
        drop(e);
        for (status, id, deadline, end) in timers {
            match status {
                PlayerSessionStatus::Reserved => {
                    self.timers.schedule(deadline, self.reservation_timer(&id));
                }
                PlayerSessionStatus::Active => {}
                _ => self.schedule_purge(end, self.purge_timer(&id)),
            }
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Clock, GameSessionId, PlayerId};

    fn row(player: &str, status: PlayerSessionStatus) -> PlayerSessionRecord {
        PlayerSessionRecord {
            player_session_id: None,
            player_id: PlayerId::parse("p", player).unwrap(),
            game_session_id: GameSessionId::parse("g", "gs-run").unwrap(),
            fleet_id: None,
            status,
            player_data: None,
            creation_time: None,
            termination_time: None,
        }
    }

    /// A run is checked row by row as if imported one at a time: duplicates, a second live
    /// session of a player and capacity count the run's own earlier rows.
    #[tokio::test]
    async fn a_run_of_rows_is_checked_in_order_against_itself() {
        use PlayerSessionStatus::*;
        let s = Store::in_memory(Clock::system(), super::super::StoreConfig::default());
        s.register_game_session(super::super::tests::registration("gs-run", 2))
            .await
            .unwrap();
        let job: Arc<str> = "import-run".into();
        s.start_import(job.clone(), "jsonl", "f.jsonl").unwrap();
        let dup = PlayerSessionId::generate();
        let rows = [
            (row("a", Reserved), PlayerSessionId::generate()),
            (row("a", Active), PlayerSessionId::generate()),
            (row("b", Active), dup),
            (row("c", Completed), dup),
            (row("d", Reserved), PlayerSessionId::generate()),
            (row("e", Completed), PlayerSessionId::generate()),
        ];
        let input: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, (r, id))| (i as u64 + 1, r, *id))
            .collect();
        let out = s.import_player_sessions(&job, &input);
        let errors: Vec<Option<&str>> = out
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.0.as_str()))
            .collect();
        assert!(
            errors[0].is_none() && errors[2].is_none() && errors[5].is_none(),
            "{errors:?}"
        );
        assert!(
            errors[1].unwrap().contains("already has a live"),
            "{errors:?}"
        );
        assert!(errors[3].unwrap().contains("already exists"), "{errors:?}");
        assert!(errors[4].unwrap().contains("is full"), "{errors:?}");
        let g = s
            .get_game_session(&GameSessionId::parse("g", "gs-run").unwrap())
            .unwrap();
        assert_eq!(g.current_player_session_count, 2);
        assert_eq!(s.import_job("import-run").unwrap().pending.len(), 3);
        s.check_invariants().unwrap();
    }
}
