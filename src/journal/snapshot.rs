//! Snapshots: the whole state written to a temp file, fsynced, renamed into place, then the
//! directory fsynced; segments fully covered by it and older snapshots are deleted.
//!
//! A snapshot is fuzzy: it records `replay_from` = the first LSN not yet appended when it
//! started, captures each game session (with its player sessions) atomically under its lock, and
//! recovery replays every record from `replay_from` on. Replay is idempotent and only moves
//! sessions forward, so records already reflected in the snapshot change nothing.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use prost::Message;

use super::{frame, io_err, records, segment, Journal, JournalError};
use crate::{
    domain::{
        CreationPolicy, EndCause, EndReason, ErrorLog, ErrorReport, GameSession, GameSessionId,
        GameSessionInfo, GameSessionStatus, IdempotencyKey, PlayerSession, PlayerSessionId,
        PlayerSessionStatus, PlayerStrings, SessionLsns, Timestamp, LSN_MAX,
    },
    storage::{
        snapshot_item::Item, ErrorReportState, GameSessionState, IdempotencyState, ImportJobState,
        ImportedRowState, PlayerSessionState, SnapshotFooter, SnapshotHeader, SnapshotItem,
    },
    store::{ImportJob, JobStatus, Store},
};

const FORMAT_VERSION: u32 = 1;

/// What a snapshot held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub replay_from: u64,
    pub game_sessions: u64,
    pub player_sessions: u64,
    pub idempotency_keys: u64,
    pub bytes: u64,
}

fn write_item(w: &mut impl Write, buf: &mut Vec<u8>, item: Item) -> std::io::Result<u64> {
    buf.clear();
    frame::put_with(buf, |b| {
        SnapshotItem { item: Some(item) }
            .encode(b)
            .expect("Vec grows")
    });
    w.write_all(buf)?;
    Ok(buf.len() as u64)
}

fn status_code(s: PlayerSessionStatus) -> u32 {
    match s {
        PlayerSessionStatus::Reserved => 0,
        PlayerSessionStatus::Active => 1,
        PlayerSessionStatus::Completed => 2,
        PlayerSessionStatus::TimedOut => 3,
    }
}

fn end_reason_code(r: Option<EndReason>) -> u32 {
    match r {
        None => 0,
        Some(EndReason::Removed) => 1,
        Some(EndReason::GameSessionEnded) => 2,
        Some(EndReason::GameSessionCrashed) => 3,
        Some(EndReason::HeartbeatLost) => 4,
        Some(EndReason::PlayerCrashed) => 5,
    }
}

fn player_state(p: &PlayerSession, log: Option<&ErrorLog>) -> PlayerSessionState {
    PlayerSessionState {
        id: p.id.uuid().as_bytes().to_vec(),
        player_id: p.player_id().to_string(),
        status: status_code(p.status),
        creation_micros: p.creation_time.as_micros(),
        termination_micros: p.termination_time.map_or(0, Timestamp::as_micros),
        deadline_micros: p.reservation_deadline.as_micros(),
        player_data: p.player_data().unwrap_or_default().to_string(),
        reserved_lsn: p.lsns.reserved(),
        accepted_lsn: p.lsns.accepted(),
        accepted_micros: p.accepted_at.map_or(0, Timestamp::as_micros),
        ended_lsn: p.lsns.ended(),
        end_reason: end_reason_code(p.end_reason),
        errors: p.error_count(),
        last_error_lsn: log.map_or(0, |e| e.last_lsn),
        error_reports: log
            .map(|e| {
                e.recent
                    .iter()
                    .map(|r| ErrorReportState {
                        lsn: r.lsn,
                        micros: r.at.as_micros(),
                        message: r.message.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn game_state(
    g: &GameSession,
    players: &[PlayerSession],
    logs: &HashMap<PlayerSessionId, ErrorLog>,
) -> GameSessionState {
    GameSessionState {
        game_session_id: g.id().to_string(),
        definition: Some(records::definition(g)),
        creation_micros: g.creation_time.as_micros(),
        status: match g.status {
            GameSessionStatus::Active => 0,
            GameSessionStatus::Terminated => 1,
            GameSessionStatus::Error => 2,
        },
        policy: match g.creation_policy {
            CreationPolicy::AcceptAll => 0,
            CreationPolicy::DenyAll => 1,
        },
        termination_micros: g.termination_time.map_or(0, Timestamp::as_micros),
        termination_reason: g
            .termination_reason
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        end_cause: match g.end_cause {
            None => 0,
            Some(EndCause::Ended) => 1,
            Some(EndCause::Crashed) => 2,
            Some(EndCause::HeartbeatLost) => 3,
        },
        player_sessions: players
            .iter()
            .map(|p| player_state(p, logs.get(&p.id)))
            .collect(),
    }
}

/// Writes a snapshot of `store` into `dir`, then deletes what it covers. Runs on a blocking
/// thread: it takes each game session's lock only while copying that game session.
pub fn take(store: &Store, journal: &Journal, dir: &Path) -> Result<SnapshotStats, JournalError> {
    let started = std::time::Instant::now();
    let replay_from = journal.last_lsn() + 1;
    let tmp = dir.join("snapshot.tmp");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut stats = SnapshotStats {
        replay_from,
        ..Default::default()
    };
    let mut write = |w: &mut BufWriter<File>, item| -> Result<(), JournalError> {
        stats.bytes += write_item(w, &mut buf, item).map_err(io_err(&tmp))?;
        Ok(())
    };
    write(
        &mut w,
        Item::Header(SnapshotHeader {
            format_version: FORMAT_VERSION,
            replay_from_lsn: replay_from,
            created_micros: store.clock().now().as_micros(),
            // Read after `replay_from`: a cursor journaled before it was noted before that.
            analytics_next_lsn: store.analytics_resume_lsn().unwrap_or(0),
        }),
    )?;
    for id in store.game_session_ids() {
        if let Some((g, players, logs)) = store.export_game_session_with_errors(&id) {
            stats.game_sessions += 1;
            stats.player_sessions += players.len() as u64;
            write(&mut w, Item::GameSession(game_state(&g, &players, &logs)))?;
        }
    }
    for job in store.import_jobs() {
        write(&mut w, Item::ImportJob(import_job_state(&job)))?;
    }
    for (key, fingerprint, ids, expires) in store.export_idempotency() {
        stats.idempotency_keys += 1;
        write(
            &mut w,
            Item::Idempotency(IdempotencyState {
                key: key.to_string(),
                fingerprint,
                player_session_ids: ids.iter().map(|i| i.uuid().as_bytes().to_vec()).collect(),
                expires_micros: expires.as_micros(),
            }),
        )?;
    }
    write(
        &mut w,
        Item::Footer(SnapshotFooter {
            game_sessions: stats.game_sessions,
            player_sessions: stats.player_sessions,
            idempotency_keys: stats.idempotency_keys,
        }),
    )?;
    let file = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);

    // Everything the snapshot captured must be durable in the journal before it replaces the
    // segments: a snapshot never holds a change that a crash could still lose.
    let handle = tokio::runtime::Handle::try_current();
    if let Ok(h) = handle {
        let _ = h.block_on(journal.wait_all_durable());
    }
    let path = segment::snapshot_path(dir, replay_from);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    segment::sync_dir(dir).map_err(io_err(dir))?;
    prune(dir, replay_from, journal.segment_hold())?;
    tracing::info!(
        path = %path.display(),
        game_sessions = stats.game_sessions,
        player_sessions = stats.player_sessions,
        bytes = stats.bytes,
        took_ms = started.elapsed().as_millis() as u64,
        "snapshot written"
    );
    Ok(stats)
}

/// Deletes older snapshots and the segments whose records all precede `replay_from`, except
/// those a consumer holds (`hold`: from which LSN, at most how many bytes of them).
pub(crate) fn prune(
    dir: &Path,
    replay_from: u64,
    hold: Option<(u64, u64)>,
) -> Result<(), JournalError> {
    for (lsn, path) in segment::list(dir, segment::SNAPSHOT_PREFIX, segment::SNAPSHOT_SUFFIX)
        .map_err(io_err(dir))?
    {
        if lsn < replay_from {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    let segments = segment::list(dir, segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX)
        .map_err(io_err(dir))?;
    // Segments recovery no longer needs, oldest first; the held ones among them are kept
    // while they fit in the bound (the newest are kept first).
    let covered: Vec<(u64, &PathBuf)> = segments
        .windows(2)
        .filter(|pair| pair[1].0 <= replay_from)
        .map(|pair| (pair[1].0, &pair[0].1))
        .collect();
    let mut held_bytes = 0u64;
    let mut keep = vec![false; covered.len()];
    if let Some((from, max_bytes)) = hold {
        for (i, (next_first, path)) in covered.iter().enumerate().rev() {
            if *next_first <= from {
                break;
            }
            let len = fs::metadata(path).map_or(0, |m| m.len());
            if held_bytes + len > max_bytes {
                tracing::error!(
                    path = %path.display(),
                    held_bytes,
                    max_bytes,
                    "analytics backlog over --analytics-max-backlog: deleting the oldest undelivered journal segments (their events are lost, counted as dropped_backlog)"
                );
                break;
            }
            held_bytes += len;
            keep[i] = true;
        }
    }
    for ((_, path), keep) in covered.iter().zip(keep) {
        if !keep {
            fs::remove_file(path).map_err(io_err(*path))?;
        }
    }
    segment::sync_dir(dir).map_err(io_err(dir))
}

fn import_job_state(j: &ImportJob) -> ImportJobState {
    let p = j.progress;
    ImportJobState {
        job_id: j.id.to_string(),
        progress: Some(crate::proto::ImportJobPayload {
            format: j.format.to_string(),
            file: j.file.to_string(),
            offset: p.offset,
            line: p.line,
            total: p.total,
            imported: p.imported,
            skipped: p.skipped,
            errors: Vec::new(),
            more_errors: p.more_errors,
            reason: j.failure.as_deref().unwrap_or_default().to_string(),
        }),
        status: match j.status {
            JobStatus::Running => 0,
            JobStatus::Completed => 1,
            JobStatus::Failed => 2,
        },
        started_micros: j.started_at.as_micros(),
        finished_micros: j.finished_at.map_or(0, Timestamp::as_micros),
        errors: j.errors.iter().map(|e| e.to_string()).collect(),
        pending: j
            .pending
            .iter()
            .map(|(id, line)| ImportedRowState {
                id: id.to_string(),
                line: *line,
            })
            .collect(),
    }
}

fn import_job_from(s: ImportJobState) -> ImportJob {
    let p = s.progress.unwrap_or_default();
    let status = match s.status {
        1 => JobStatus::Completed,
        2 => JobStatus::Failed,
        _ => JobStatus::Running,
    };
    ImportJob {
        id: s.job_id.as_str().into(),
        format: p.format.as_str().into(),
        file: p.file.as_str().into(),
        status,
        progress: crate::domain::ImportProgress {
            offset: p.offset,
            line: p.line,
            total: p.total,
            imported: p.imported,
            skipped: p.skipped,
            more_errors: p.more_errors,
        },
        errors: s.errors.iter().map(|e| e.as_str().into()).collect(),
        started_at: Timestamp::from_micros(s.started_micros),
        finished_at: micros(s.finished_micros),
        failure: (status == JobStatus::Failed).then(|| p.reason.as_str().into()),
        pending: s
            .pending
            .iter()
            .map(|r| (r.id.as_str().into(), r.line))
            .collect(),
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> JournalError {
    JournalError::BadSnapshot {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_frame(r: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<Option<()>> {
    let mut header = [0u8; frame::HEADER];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
    if len > frame::MAX_BODY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "impossible frame length",
        ));
    }
    body.resize(len, 0);
    r.read_exact(body)?;
    if crc32c::crc32c(body) != crc {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "checksum mismatch",
        ));
    }
    Ok(Some(()))
}

fn micros(v: i64) -> Option<Timestamp> {
    (v != 0).then_some(Timestamp::from_micros(v))
}

/// Loads a snapshot into an empty `store`. This thread reads and decodes; game sessions are
/// rebuilt and indexed by one thread per core, so start-up uses every core.
pub fn load(store: &Store, path: &Path) -> Result<SnapshotStats, JournalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = std::sync::mpsc::sync_channel::<GameSessionState>(256);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|scope| {
        let rx = &rx;
        let inserters: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || -> Result<(), String> {
                    loop {
                        let next = rx.lock().map_err(|_| "loader poisoned")?.recv();
                        let Ok(g) = next else { return Ok(()) };
                        let (game, players, logs) = restore_game(g)?;
                        store.restore_game_session(game, players, logs);
                    }
                })
            })
            .collect();
        let read = read_items(store, path, &mut r, &tx);
        drop(tx);
        let mut inserted = Ok(());
        for h in inserters {
            let r = h
                .join()
                .map_err(|_| bad(path, "snapshot loader panicked"))?;
            if inserted.is_ok() {
                inserted = r;
            }
        }
        let stats = read?;
        inserted.map_err(|e| bad(path, e))?;
        Ok(stats)
    })
}

fn read_items(
    store: &Store,
    path: &Path,
    r: &mut impl Read,
    games: &std::sync::mpsc::SyncSender<GameSessionState>,
) -> Result<SnapshotStats, JournalError> {
    let mut body = Vec::new();
    let mut stats = SnapshotStats::default();
    let mut header_seen = false;
    loop {
        match read_frame(r, &mut body) {
            Ok(Some(())) => {}
            Ok(None) => return Err(bad(path, "ends without a footer (incomplete snapshot)")),
            Err(e) => return Err(bad(path, e.to_string())),
        }
        stats.bytes += (frame::HEADER + body.len()) as u64;
        let item = SnapshotItem::decode(body.as_slice())
            .map_err(|e| bad(path, format!("undecodable item: {e}")))?
            .item
            .ok_or_else(|| bad(path, "empty item"))?;
        match item {
            Item::Header(h) => {
                if h.format_version != FORMAT_VERSION {
                    return Err(bad(
                        path,
                        format!("unknown format version {}", h.format_version),
                    ));
                }
                if h.replay_from_lsn > LSN_MAX + 1 {
                    return Err(bad(path, "LSN beyond 2^48 - 1"));
                }
                stats.replay_from = h.replay_from_lsn;
                if h.analytics_next_lsn > 0 {
                    store.note_analytics_delivered(h.analytics_next_lsn - 1);
                }
                header_seen = true;
            }
            _ if !header_seen => return Err(bad(path, "no header")),
            Item::GameSession(g) => {
                stats.game_sessions += 1;
                stats.player_sessions += g.player_sessions.len() as u64;
                if games.send(g).is_err() {
                    return Err(bad(path, "snapshot loader stopped"));
                }
            }
            Item::Idempotency(i) => {
                stats.idempotency_keys += 1;
                let key = IdempotencyKey::parse_optional("key", &i.key)
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad(path, "bad idempotency key"))?;
                let ids = i
                    .player_session_ids
                    .iter()
                    .map(|b| uuid_of(b).map(PlayerSessionId::from_uuid))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(path, "bad player session id"))?;
                store.restore_idempotency(
                    key,
                    i.fingerprint,
                    ids,
                    Timestamp::from_micros(i.expires_micros),
                );
            }
            Item::ImportJob(j) => store.restore_import_job(import_job_from(j)),
            Item::Footer(f) => {
                if (f.game_sessions, f.player_sessions, f.idempotency_keys)
                    != (
                        stats.game_sessions,
                        stats.player_sessions,
                        stats.idempotency_keys,
                    )
                {
                    return Err(bad(path, "footer counts do not match the content"));
                }
                return Ok(stats);
            }
        }
    }
}

fn uuid_of(b: &[u8]) -> Option<uuid::Uuid> {
    uuid::Uuid::from_slice(b).ok()
}

/// A game session from a snapshot, with its player sessions and their error logs.
type Restored = (
    GameSession,
    Vec<PlayerSession>,
    Vec<(PlayerSessionId, ErrorLog)>,
);

fn restore_game(g: GameSessionState) -> Result<Restored, String> {
    let id =
        GameSessionId::parse("game_session_id", &g.game_session_id).map_err(|e| e.to_string())?;
    let def = g.definition.ok_or("game session without definition")?;
    let mut game = records::game_session_from(id, &def, Timestamp::from_micros(g.creation_micros))?;
    game.status = match g.status {
        0 => GameSessionStatus::Active,
        1 => GameSessionStatus::Terminated,
        _ => GameSessionStatus::Error,
    };
    game.creation_policy = if g.policy == 1 {
        CreationPolicy::DenyAll
    } else {
        CreationPolicy::AcceptAll
    };
    game.termination_time = micros(g.termination_micros);
    game.termination_reason = (!game.is_active()).then(|| g.termination_reason.as_str().into());
    game.end_cause = match g.end_cause {
        1 => Some(EndCause::Ended),
        2 => Some(EndCause::Crashed),
        3 => Some(EndCause::HeartbeatLost),
        _ => None,
    };
    let info: Arc<GameSessionInfo> = game.info.clone();
    let mut logs = Vec::new();
    let players = g
        .player_sessions
        .into_iter()
        .map(|p| {
            let ps = PlayerSession {
                id: PlayerSessionId::from_uuid(uuid_of(&p.id).ok_or("bad player session id")?),
                player: PlayerStrings::parse("player_id", &p.player_id, Some(&p.player_data))
                    .map_err(|e| e.to_string())?,
                game: info.clone(),
                status: match p.status {
                    0 => PlayerSessionStatus::Reserved,
                    1 => PlayerSessionStatus::Active,
                    2 => PlayerSessionStatus::Completed,
                    _ => PlayerSessionStatus::TimedOut,
                },
                creation_time: Timestamp::from_micros(p.creation_micros),
                termination_time: micros(p.termination_micros),
                reservation_deadline: Timestamp::from_micros(p.deadline_micros),
                accepted_at: micros(p.accepted_micros),
                end_reason: match p.end_reason {
                    1 => Some(EndReason::Removed),
                    2 => Some(EndReason::GameSessionEnded),
                    3 => Some(EndReason::GameSessionCrashed),
                    4 => Some(EndReason::HeartbeatLost),
                    5 => Some(EndReason::PlayerCrashed),
                    _ => None,
                },
                lsns: {
                    let lsns = [p.reserved_lsn, p.accepted_lsn, p.ended_lsn];
                    if lsns.iter().any(|l| *l > LSN_MAX) {
                        return Err("LSN beyond 2^48 - 1".into());
                    }
                    SessionLsns::new(lsns[0], lsns[1], lsns[2])
                },
                error_count: p.errors,
            };
            if p.errors > 0 {
                logs.push((
                    ps.id,
                    ErrorLog {
                        last_lsn: p.last_error_lsn,
                        recent: p
                            .error_reports
                            .iter()
                            .map(|r| ErrorReport {
                                lsn: r.lsn,
                                at: Timestamp::from_micros(r.micros),
                                message: r.message.as_str().into(),
                            })
                            .collect(),
                    },
                ));
            }
            Ok(ps)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((game, players, logs))
}

/// Newest snapshot in `dir`, if any.
pub fn newest(dir: &Path) -> Result<Option<PathBuf>, JournalError> {
    Ok(
        segment::list(dir, segment::SNAPSHOT_PREFIX, segment::SNAPSHOT_SUFFIX)
            .map_err(io_err(dir))?
            .pop()
            .map(|(_, p)| p),
    )
}
