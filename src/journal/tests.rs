//! Journal tests with real files: record mapping, history, torn tails at every byte, bit flips,
//! snapshots, and a property test that crashes at a random record boundary.

use std::{path::Path, sync::Arc, time::Duration};

use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::{
    domain::{Clock, PlayerSessionId, Timestamp},
    store::{
        tests::{op, register_model_games, registration, reservation, run_op},
        Store, StoreConfig,
    },
};

const T0: i64 = 1_700_000_000_000_000;

/// Default retention (30 days): nothing is purged during these tests, so a replayed state can
/// be compared with the live one entry by entry (purges are derived, not journaled).
fn config() -> StoreConfig {
    StoreConfig::default()
}

fn jconfig(dir: &Path) -> JournalConfig {
    JournalConfig {
        // Preallocated segments: small, so tests that read them whole stay fast.
        segment_bytes: 1 << 20,
        // Small chunks: every recovery test crosses chunk boundaries, inside headers and
        // bodies, with frames shorter and longer than a chunk.
        replay_chunk: 256,
        ..JournalConfig::new(dir)
    }
}

/// Opens (recovering) a store on `dir` with a sync journal, like the daemon does.
fn open(dir: &Path, jc: &JournalConfig) -> Result<Arc<Store>, JournalError> {
    open_with(dir, jc, Durability::Sync)
}

fn open_with(
    dir: &Path,
    jc: &JournalConfig,
    durability: Durability,
) -> Result<Arc<Store>, JournalError> {
    let journal = Journal::new(durability);
    let store = Arc::new(Store::new(
        Clock::starting_at(Timestamp::from_micros(T0)),
        config(),
        journal.clone(),
    ));
    let rec = recovery::recover(
        &JournalConfig {
            dir: dir.to_path_buf(),
            ..jc.clone()
        },
        &store,
    )?;
    journal.start(jc, &rec, Arc::new(|m| panic!("fatal: {m}")))?;
    store.finish_recovery();
    Ok(store)
}

/// Everything that must survive a restart, in a canonical order (heartbeat deadlines excluded:
/// a restart grants a fresh heartbeat period on purpose).
fn dump(s: &Store) -> Vec<String> {
    let mut ids = s.game_session_ids();
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        let (g, players) = s.export_game_session(&id).unwrap();
        out.push(format!(
            "gs {} {:?} max={} count={} {:?} {:?} {:?} {:?} {:?}",
            id,
            g.status,
            g.maximum_player_session_count,
            g.current_player_session_count,
            g.creation_policy,
            g.termination_time,
            g.termination_reason,
            g.end_cause,
            g.creation_time
        ));
        for p in players {
            out.push(format!(
                "  ps {} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                p.id,
                p.player_id(),
                p.status,
                p.creation_time,
                p.termination_time,
                p.reservation_deadline,
                p.player_data(),
                p.accepted_at,
                p.end_reason,
                p.lsns,
                (p.error_count, s.error_log(&p.id))
            ));
        }
    }
    let mut idem: Vec<_> = s
        .export_idempotency()
        .into_iter()
        .map(|(k, f, ids, _)| format!("idem {k} {f} {ids:?}"))
        .collect();
    idem.sort();
    out.extend(idem);
    // Fleet counts (recovery recounts them; transitions are this process's own).
    let mut fleets = s.all_fleet_counts();
    fleets.sort_by(|a, b| a.0.cmp(&b.0));
    for (f, c) in fleets {
        out.push(format!(
            "fleet {f} gs={:?} ps={:?} max={} available={}",
            c.game_sessions, c.player_sessions, c.maximum_player_session_count, c.available
        ));
    }
    out
}

fn segment_file(dir: &Path) -> std::path::PathBuf {
    segment::list(dir, segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX)
        .unwrap()
        .pop()
        .unwrap()
        .1
}

/// Every frame's end offset in a segment.
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut off = 0;
    while let frame::Next::Frame { len, .. } = frame::next(&bytes[off..]) {
        off += len;
        out.push(off);
    }
    out
}

/// Bytes of frames in the segment at `path` (the rest is preallocated zeros).
fn data_len(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let end = *boundaries(&bytes).last().unwrap();
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "zeros after the frames"
    );
    end
}

/// Records in a segment, with their LSNs.
fn read_records(path: &Path) -> Vec<crate::proto::OperationRecord> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while let frame::Next::Frame { body, len } = frame::next(&bytes[off..]) {
        let cp = crate::storage::Checkpoint::decode(body).unwrap();
        for (i, mut r) in cp.records.into_iter().enumerate() {
            r.lsn = cp.first_lsn + i as u64;
            out.push(r);
        }
        off += len;
    }
    out
}

/// A store opened on `dir` with one game session, `gs-a`, of 4 seats.
async fn open_with_gs_a(dir: &Path, jc: &JournalConfig) -> Arc<Store> {
    let s = open(dir, jc).unwrap();
    s.register_game_session(registration("gs-a", 4))
        .await
        .unwrap();
    s
}

async fn workload(s: &Store) -> Vec<PlayerSessionId> {
    let mut r = registration("gs-a", 4);
    r.heartbeat_timeout = Some(Duration::from_secs(30));
    s.register_game_session(r).await.unwrap();
    s.register_game_session(registration("gs-b", 4))
        .await
        .unwrap();
    let mut idem = reservation("gs-a", &["p1", "p2"]);
    idem.idempotency_key = crate::domain::IdempotencyKey::parse_optional("k", "key-1").unwrap();
    let a = s.reserve(idem).await.unwrap();
    let b = s
        .reserve(reservation("gs-b", &["p3", "p4", "p5"]))
        .await
        .unwrap();
    let gsa = a[0].game.id.clone();
    let gsb = b[0].game.id.clone();
    s.accept(&gsa, a[0].id).await.unwrap();
    s.remove(&gsa, a[0].id).await.unwrap();
    s.accept(&gsb, b[0].id).await.unwrap();
    s.report_error(&gsb, b[0].id, false, "lag spike")
        .await
        .unwrap();
    s.report_error(&gsb, b[1].id, true, "client crashed")
        .await
        .unwrap();
    s.update_game_session(&gsb, Some(5), Some(crate::domain::CreationPolicy::DenyAll))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(61)).await; // p2, p4, p5 time out; gs-a loses its heartbeat at 30 s
    crate::sweeper::fire_due(s);
    s.end_game_session(&gsb, true, "segfault").await.unwrap();
    let mut ids: Vec<_> = a.iter().chain(&b).map(|p| p.id).collect();
    ids.sort();
    ids
}

#[tokio::test(start_paused = true)]
async fn every_change_round_trips_and_history_matches_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open(dir.path(), &jc).unwrap();
    let ids = workload(&s).await;
    s.journal().close();
    let journaled = read_records(&segment_file(dir.path()));
    // Every kind of update appears.
    let kinds: std::collections::BTreeSet<_> = journaled
        .iter()
        .map(|r| (r.operation_type, r.action, r.sub_type.clone()))
        .collect();
    assert!(kinds.len() >= 10, "{kinds:?}");
    // Decoding every record and re-encoding it gives the same record.
    for r in &journaled {
        let change = records::decode(r, |g| s.game_info(g)).unwrap().unwrap();
        assert_eq!(&records::encode(&change, r.lsn), r);
    }
    // The history of each player session is exactly its journaled updates, oldest first.
    for id in ids {
        let ps = s.get_player_session(id).unwrap();
        let from_journal: Vec<_> = journaled
            .iter()
            .filter(|r| r.operation_id == id.to_string())
            .cloned()
            .collect();
        let errors = s.error_log(&id);
        assert_eq!(records::history(&ps, errors.as_ref()), from_journal, "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn restart_restores_the_exact_state() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open(dir.path(), &jc).unwrap();
    workload(&s).await;
    let before = dump(&s);
    let last = s.journal().last_lsn();
    s.journal().close();
    drop(s);
    let r = open(dir.path(), &jc).unwrap();
    assert_eq!(dump(&r), before);
    r.check_invariants().unwrap();
    // Appends continue the LSN sequence.
    r.register_game_session(registration("gs-c", 2))
        .await
        .unwrap();
    assert_eq!(r.journal().last_lsn(), last + 1);
    r.journal().close();
}

/// Replay over many segments, with more reservations per worker than one batch holds and
/// accepts and removals interleaved with some of them, restores the exact state.
#[tokio::test(start_paused = true)]
async fn replay_across_segments_restores_the_exact_state() {
    let dir = tempfile::tempdir().unwrap();
    let jc = JournalConfig {
        segment_bytes: 16 << 10,
        ..jconfig(dir.path())
    };
    // Sync: every call is its own write, so segments rotate at the same records every run.
    let s = open(dir.path(), &jc).unwrap();
    let players: Vec<String> = (0..25).map(|i| format!("p{i}")).collect();
    let players: Vec<&str> = players.iter().map(String::as_str).collect();
    for g in 0..100 {
        let id = format!("gs-{g}");
        s.register_game_session(registration(&id, 25))
            .await
            .unwrap();
        let r = s.reserve(reservation(&id, &players)).await.unwrap();
        if g % 10 != 0 {
            continue;
        }
        let gs = r[0].game.id.clone();
        for (i, ps) in r.iter().enumerate() {
            if i % 3 == 0 {
                s.accept(&gs, ps.id).await.unwrap();
            }
            if i % 5 == 0 {
                s.remove(&gs, ps.id).await.unwrap();
            }
        }
    }
    let before = dump(&s);
    s.journal().close();
    drop(s);
    let segments = segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX)
        .unwrap()
        .len();
    assert!(segments > 10, "{segments} segments");
    // Whatever the read chunk (headers and bodies split anywhere, frames longer than it),
    // replay gives the same state.
    for replay_chunk in [1, 13, 256, 5000, DEFAULT_REPLAY_CHUNK] {
        let r = open(
            dir.path(),
            &JournalConfig {
                replay_chunk,
                ..jc.clone()
            },
        )
        .unwrap();
        assert_eq!(dump(&r), before, "chunk {replay_chunk}");
        r.check_invariants().unwrap();
        r.journal().close();
    }
}

#[tokio::test(start_paused = true)]
async fn torn_tail_at_every_byte_of_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open_with_gs_a(dir.path(), &jc).await;
    s.reserve(reservation("gs-a", &["p1"])).await.unwrap();
    let before_last = dump(&s);
    s.reserve(reservation("gs-a", &["p2", "p3"])).await.unwrap();
    s.journal().close();
    let seg = segment_file(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let b = boundaries(&bytes);
    let (start, end) = (b[b.len() - 2], b[b.len() - 1]);
    assert_eq!(end, data_len(&seg));
    // The file ends inside the record, or (preallocated) zeros follow its torn part.
    for (zeros, replay_chunk) in [(0, 256), (4096, 256), (0, 7), (4096, 1 << 20)] {
        let jc = JournalConfig {
            replay_chunk,
            ..jc.clone()
        };
        for cut in start + 1..end {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join(seg.file_name().unwrap());
            let mut torn = bytes[..cut].to_vec();
            torn.resize(cut + zeros, 0);
            std::fs::write(&path, &torn).unwrap();
            let r = open(d.path(), &jc).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(dump(&r), before_last, "cut at {cut}");
            r.journal().close();
            let after = std::fs::read(&path).unwrap();
            assert_eq!(
                &after[..start],
                &bytes[..start],
                "records before the tail kept"
            );
            assert!(
                after[start..].iter().all(|&b| b == 0),
                "torn tail truncated (cut {cut}, zeros {zeros})"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn corruption_before_the_tail_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open_with_gs_a(dir.path(), &jc).await;
    let after_first = dump(&s);
    for i in 0..3 {
        s.reserve(reservation("gs-a", &[&format!("p{i}")]))
            .await
            .unwrap();
    }
    s.journal().close();
    let seg = segment_file(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let b = boundaries(&bytes);
    // Flip one bit inside the second frame: valid frames follow it. Whatever the read chunk,
    // the error names the same offset.
    let chunks = [7, 256, DEFAULT_REPLAY_CHUNK];
    for (pos, replay_chunk) in [b[1] + 2, b[1] + 9, (b[1] + b[2]) / 2]
        .into_iter()
        .flat_map(|p| chunks.map(|c| (p, c)))
    {
        let jc = JournalConfig {
            replay_chunk,
            ..jc.clone()
        };
        let mut bad = bytes.clone();
        bad[pos] ^= 0x10;
        std::fs::write(&seg, &bad).unwrap();
        match open(dir.path(), &jc) {
            Err(JournalError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert_eq!(offset as usize, b[1], "names the offset of the bad record");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started on a corrupt journal (flip at {pos})"),
        }
    }
    // The second frame zeroed whole (a lost page): not the preallocated end, since valid
    // frames follow it.
    let mut zeroed = bytes.clone();
    zeroed[b[1]..b[2]].fill(0);
    std::fs::write(&seg, &zeroed).unwrap();
    match open(dir.path(), &jc) {
        Err(JournalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset as usize, b[1]);
            assert!(reason.contains("zeroed"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("zeroed records before valid ones went unnoticed"),
    }
    // The operator can choose to truncate there.
    let forced = JournalConfig {
        truncate_corrupt: true,
        ..jc.clone()
    };
    let r = open(dir.path(), &forced).unwrap();
    assert_eq!(dump(&r), after_first);
    r.journal().close();
}

/// A frame whose CRC holds was written whole: a record in it that does not decode is not a
/// torn write, even at the tail. Recovery refuses to start, naming the file and the frame,
/// whether the record goes through the borrowed reader (a CALLBACK) or through prost.
#[tokio::test(start_paused = true)]
async fn an_undecodable_record_in_a_whole_frame_refuses_to_start() {
    use crate::proto::{OperationRecord, OperationType};
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open_with_gs_a(dir.path(), &jc).await;
    s.reserve(reservation("gs-a", &["p1"])).await.unwrap();
    let next = s.journal().last_lsn() + 1;
    s.journal().close();
    drop(s);
    let seg = segment_file(dir.path());
    let good = std::fs::read(&seg).unwrap();
    let end = data_len(&seg);
    let bad_records = [
        // A reservation without its payload.
        OperationRecord {
            operation_id: PlayerSessionId::generate().to_string(),
            operation_type: OperationType::Callback as i32,
            action: 1,
            parent_id: "gs-a".into(),
            timestamp: Some(prost_types::Timestamp::default()),
            ..Default::default()
        },
        // An operation type no version writes.
        OperationRecord {
            operation_id: "gs-a".into(),
            operation_type: 99,
            timestamp: Some(prost_types::Timestamp::default()),
            ..Default::default()
        },
    ];
    for record in bad_records {
        let mut bytes = good.clone();
        let mut framed = Vec::new();
        let cp = crate::storage::Checkpoint {
            first_lsn: next,
            records: vec![record],
        };
        frame::put(&mut framed, &cp.encode_to_vec());
        bytes[end..end + framed.len()].copy_from_slice(&framed);
        std::fs::write(&seg, &bytes).unwrap();
        match open(dir.path(), &jc) {
            Err(JournalError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert_eq!(offset as usize, end, "names the frame");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started on an undecodable record"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn snapshots_round_trip_and_bound_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let jc = JournalConfig {
        segment_bytes: 4096,
        ..jconfig(dir.path())
    };
    let s = open(dir.path(), &jc).unwrap();
    workload(&s).await;
    for round in 0..3 {
        for i in 0..40 {
            let gs = format!("bulk-{round}-{i}");
            s.register_game_session(registration(&gs, 8)).await.unwrap();
            s.reserve(reservation(&gs, &["x", "y"])).await.unwrap();
        }
        let (s2, d2) = (s.clone(), dir.path().to_path_buf());
        let stats = tokio::task::spawn_blocking(move || snapshot::take(&s2, s2.journal(), &d2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.replay_from, s.journal().last_lsn() + 1);
        let segments =
            segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).unwrap();
        assert_eq!(segments.len(), 1, "covered segments deleted: {segments:?}");
        let snaps = segment::list(
            dir.path(),
            segment::SNAPSHOT_PREFIX,
            segment::SNAPSHOT_SUFFIX,
        )
        .unwrap();
        assert_eq!(snaps.len(), 1, "older snapshots deleted");
    }
    // Changes after the snapshot are replayed on top of it.
    s.register_game_session(registration("after", 2))
        .await
        .unwrap();
    s.reserve(reservation("after", &["late"])).await.unwrap();
    let before = dump(&s);
    s.journal().close();
    drop(s);
    let r = open(dir.path(), &jc).unwrap();
    assert_eq!(dump(&r), before);
    r.check_invariants().unwrap();
    r.journal().close();
}

#[tokio::test(start_paused = true)]
async fn analytics_cursor_round_trips_and_holds_segments_up_to_the_backlog_bound() {
    let dir = tempfile::tempdir().unwrap();
    let jc = JournalConfig {
        segment_bytes: 4096,
        ..jconfig(dir.path())
    };
    let s = open(dir.path(), &jc).unwrap();
    workload(&s).await;
    let at = s.clock().now();
    let changes = [
        Change::AnalyticsRetry {
            first: 3,
            last: 9,
            sink: "segment".into(),
            delay: Duration::from_secs(2),
            error: "HTTP 503".into(),
            at,
        },
        Change::AnalyticsDelivered {
            through: 9,
            sink: "segment".into(),
            at,
        },
    ];
    let first = s.journal().append(&changes).unwrap();
    s.note_analytics_delivered(9);
    s.journal().wait_all_durable().await.unwrap();
    let records = crate::journal::reader::read_all(dir.path(), first, first + 1).unwrap();
    assert_eq!(records.len(), 2);
    for r in &records {
        let change = records::decode(r, |g| s.game_info(g)).unwrap().unwrap();
        assert_eq!(&records::encode(&change, r.lsn), r);
    }
    assert_eq!(
        records[0]
            .step_options
            .as_ref()
            .unwrap()
            .next_attempt_delay_seconds,
        2
    );
    // The dispatcher still needs everything from LSN 10 on: snapshots keep those segments.
    s.journal().hold_segments_from(10, u64::MAX);
    for i in 0..60 {
        let gs = format!("held-{i}");
        s.register_game_session(registration(&gs, 8)).await.unwrap();
        s.reserve(reservation(&gs, &["x", "y"])).await.unwrap();
    }
    let snap = |s: &Arc<Store>| {
        let (s2, d2) = (s.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || snapshot::take(&s2, s2.journal(), &d2))
    };
    snap(&s).await.unwrap().unwrap();
    let segments =
        segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).unwrap();
    assert!(segments.len() > 3, "held segments kept: {segments:?}");
    assert_eq!(
        crate::journal::reader::read_all(dir.path(), 10, s.journal().durable_lsn())
            .unwrap()
            .first()
            .map(|r| r.lsn),
        Some(10),
        "the held records are all still readable"
    );
    // A restart recovers from the snapshot (skipping the held segments) and the cursor.
    let before = dump(&s);
    s.journal().close();
    drop(s);
    let r = open(dir.path(), &jc).unwrap();
    assert_eq!(dump(&r), before);
    assert_eq!(r.analytics_resume_lsn(), Some(10));
    // Over the bound: the oldest held segments go, the reader reports the gap.
    r.journal().hold_segments_from(10, 8192);
    r.register_game_session(registration("after", 2))
        .await
        .unwrap();
    snap(&r).await.unwrap().unwrap();
    let kept = segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).unwrap();
    assert!(kept.len() < segments.len(), "{kept:?}");
    let held: u64 = kept[..kept.len() - 1]
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(held <= 8192, "held {held} bytes");
    match crate::journal::reader::JournalReader::new(dir.path(), 10)
        .read(r.journal().durable_lsn(), 10)
    {
        Err(crate::journal::reader::ReadError::Gap { from: 10, to }) => assert!(to > 10),
        other => panic!("expected a gap, got {:?}", other.map(|v| v.len())),
    }
    r.journal().close();
}

#[tokio::test(start_paused = true)]
async fn a_running_import_job_survives_a_snapshot_with_its_unchecked_rows() {
    use crate::{
        domain::{GameSessionId, PlayerId, PlayerSessionStatus},
        import::records::PlayerSessionRecord,
        store::{JobStatus, RowOutcome},
    };
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open(dir.path(), &jc).unwrap();
    s.register_game_session(registration("gs-imp", 8))
        .await
        .unwrap();
    let job: Arc<str> = "import-test".into();
    s.start_import(job.clone(), "jsonl", "f.jsonl").unwrap();
    let row = |p: &str| PlayerSessionRecord {
        player_session_id: None,
        player_id: PlayerId::parse("p", p).unwrap(),
        game_session_id: GameSessionId::parse("g", "gs-imp").unwrap(),
        fleet_id: None,
        status: PlayerSessionStatus::Reserved,
        player_data: None,
        creation_time: None,
        termination_time: None,
    };
    let id = PlayerSessionId::generate();
    let a = row("a");
    assert!(matches!(
        s.import_player_sessions(&job, &[(1, &a, id)]).as_slice(),
        [Ok(RowOutcome::Imported(_))]
    ));
    s.journal().wait_all_durable().await.unwrap();
    let (s2, d2) = (s.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || snapshot::take(&s2, s2.journal(), &d2))
        .await
        .unwrap()
        .unwrap();
    s.journal().close();
    drop(s);
    let r = open(dir.path(), &jc).unwrap();
    let j = r.import_job("import-test").unwrap();
    assert_eq!(j.status, JobStatus::Running);
    assert_eq!(j.pending.get(id.to_string().as_str()), Some(&1));
    // Read again from line 1 it counts as imported; from another line the same id is a duplicate.
    assert_eq!(
        r.import_player_sessions(&job, &[(1, &a, id)]),
        [Ok(RowOutcome::AlreadyImported)]
    );
    assert!(r.import_player_sessions(&job, &[(2, &a, id)])[0].is_err());
    r.journal().close();
}

#[tokio::test(start_paused = true)]
async fn a_damaged_snapshot_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open(dir.path(), &jc).unwrap();
    workload(&s).await;
    let (s2, d2) = (s.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || snapshot::take(&s2, s2.journal(), &d2))
        .await
        .unwrap()
        .unwrap();
    s.journal().close();
    let (_, snap) = segment::list(
        dir.path(),
        segment::SNAPSHOT_PREFIX,
        segment::SNAPSHOT_SUFFIX,
    )
    .unwrap()
    .pop()
    .unwrap();
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    assert!(matches!(
        open(dir.path(), &jc),
        Err(JournalError::BadSnapshot { .. })
    ));
}

#[test]
fn a_second_daemon_cannot_open_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _held = lock_dir(dir.path()).unwrap();
    assert!(matches!(lock_dir(dir.path()), Err(JournalError::Locked(_))));
}

#[tokio::test(start_paused = true)]
async fn segments_are_preallocated_and_a_clean_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let s = open(dir.path(), &jc).unwrap();
    workload(&s).await;
    let before = dump(&s);
    s.journal().close();
    let seg = segment_file(dir.path());
    let len = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(
        len(&seg),
        jc.segment_bytes,
        "preallocated to the segment size"
    );
    let data = data_len(&seg);
    let r = open(dir.path(), &jc).unwrap();
    assert_eq!(dump(&r), before);
    r.register_game_session(registration("after-restart", 2))
        .await
        .unwrap();
    r.journal().close();
    // Written in place after the old records: nothing truncated, nothing skipped.
    assert_eq!(len(&seg), jc.segment_bytes);
    assert!(data_len(&seg) > data);
    // Restarted with a smaller segment size: the segment rotates once it holds that much and
    // is cut to its frames (no preallocated tail left behind).
    let small = JournalConfig {
        segment_bytes: 4096,
        ..jc.clone()
    };
    let again = open(dir.path(), &small).unwrap();
    assert!(again
        .game_session_ids()
        .iter()
        .any(|g| g.as_str() == "after-restart"));
    again
        .register_game_session(registration("gs-rot", 1000))
        .await
        .unwrap();
    for i in 0..40 {
        again
            .reserve(reservation("gs-rot", &[&format!("p{i}")]))
            .await
            .unwrap();
    }
    again.journal().close();
    let segments =
        segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).unwrap();
    assert!(segments.len() > 1, "rotated: {segments:?}");
    assert_eq!(len(&segments[0].1), data_len(&segments[0].1) as u64);
    let last = open(dir.path(), &small).unwrap();
    assert_eq!(last.journal().last_lsn(), again.journal().last_lsn());
    last.journal().close();
}

#[test]
fn an_async_journal_syncs_within_its_window_on_its_own() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let jc = jconfig(dir.path());
        let s = open_with(dir.path(), &jc, Durability::Async).unwrap();
        workload(&s).await;
        let before = dump(&s);
        let last = s.journal().last_lsn();
        let started = std::time::Instant::now();
        // Durable within the async window, without anyone asking.
        while s.journal().durable_lsn() < last {
            assert!(started.elapsed() < Duration::from_secs(2), "never synced");
            // The writer thread keeps real time.
            std::thread::sleep(Duration::from_millis(5));
        }
        let on_disk = crate::journal::reader::read_all(dir.path(), 1, last).unwrap();
        assert_eq!(on_disk.len() as u64, last);
        s.journal().close();
        let r = open(dir.path(), &jc).unwrap();
        assert_eq!(dump(&r), before);
        r.journal().close();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random operations, then a crash at a random record boundary: recovery rebuilds exactly
    /// the state the model had when that record was the last one written.
    #[test]
    fn crash_at_any_boundary_replays_to_the_model(
        ops in prop::collection::vec(op(), 1..40),
        pick in any::<prop::sample::Index>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let jc = jconfig(dir.path());
            let s = open(dir.path(), &jc).unwrap();
            register_model_games(&s).await;
            s.journal().wait_all_durable().await.unwrap();
            let seg = segment_file(dir.path());
            let file_len = || data_len(&seg);
            // (journal length, state) after every operation.
            let mut states = vec![(file_len(), dump(&s))];
            let mut created = Vec::new();
            for op in &ops {
                run_op(&s, op, &mut created).await;
                s.journal().wait_all_durable().await.unwrap();
                states.push((file_len(), dump(&s)));
            }
            s.journal().close();
            let bytes = std::fs::read(&seg).unwrap();
            let b = boundaries(&bytes);
            let (cut, expected) = states[pick.index(states.len())].clone();
            prop_assert!(b.contains(&cut), "operations end on frame boundaries");
            let crash = tempfile::tempdir().unwrap();
            std::fs::write(crash.path().join(seg.file_name().unwrap()), &bytes[..cut]).unwrap();
            let r = open(crash.path(), &jc).unwrap();
            prop_assert_eq!(dump(&r), expected);
            r.check_invariants().map_err(TestCaseError::fail)?;
            r.journal().close();
            Ok(())
        })?;
    }
}

mod reader {
    use super::*;
    use crate::journal::reader::{read_all, JournalReader, ReadError};

    #[tokio::test(start_paused = true)]
    async fn reads_every_committed_record_in_order_and_follows_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let jc = jconfig(dir.path());
        let s = open(dir.path(), &jc).unwrap();
        workload(&s).await;
        let durable = s.journal().durable_lsn();
        let mut r = JournalReader::new(dir.path(), 1);
        let first = r.read(durable, 5).unwrap();
        assert!(
            (5..10).contains(&first.len()),
            "max, or the end of the checkpoint reaching it"
        );
        let rest = read_all(dir.path(), first.last().unwrap().lsn + 1, durable).unwrap();
        let mut all = first.clone();
        all.extend(rest);
        assert_eq!(all, read_records(&segment_file(dir.path())));
        assert!(all.iter().enumerate().all(|(i, r)| r.lsn == i as u64 + 1));
        // From the middle.
        let mid = read_all(dir.path(), 10, durable).unwrap();
        assert_eq!(mid.first().unwrap().lsn, 10);
        assert_eq!(mid.len(), all.len() - 9);
        // Tailing: a reader at the end sees nothing, then exactly what is appended.
        let mut tail = JournalReader::new(dir.path(), durable + 1);
        assert!(tail.read(durable, 100).unwrap().is_empty());
        s.register_game_session(registration("gs-late", 2))
            .await
            .unwrap();
        s.reserve(reservation("gs-late", &["x", "y"]))
            .await
            .unwrap();
        let now = s.journal().durable_lsn();
        // Nothing past the durable LSN the caller gives.
        assert!(tail.read(durable, 100).unwrap().is_empty());
        let new = tail.read(now, 100).unwrap();
        assert_eq!(
            new.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            (durable + 1..=now).collect::<Vec<_>>()
        );
        assert_eq!(tail.next_lsn(), now + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_rotation_stops_at_a_torn_tail_and_reports_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let jc = JournalConfig {
            segment_bytes: 4096,
            ..jconfig(dir.path())
        };
        let s = open(dir.path(), &jc).unwrap();
        s.register_game_session(registration("gs-rot", 1000))
            .await
            .unwrap();
        for i in 0..300 {
            s.reserve(reservation("gs-rot", &[&format!("player-{i}")]))
                .await
                .unwrap();
        }
        let durable = s.journal().durable_lsn();
        let segments =
            segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).unwrap();
        assert!(segments.len() > 3, "rotated: {segments:?}");
        let all = read_all(dir.path(), 1, durable).unwrap();
        assert_eq!(all.len() as u64, durable);
        assert!(all.iter().enumerate().all(|(i, r)| r.lsn == i as u64 + 1));
        s.journal().close();

        // A torn frame at the end (the writer mid-write): the reader stops before it, no error.
        let last = &segments.last().unwrap().1;
        let mut bytes = std::fs::read(last).unwrap();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
        std::fs::write(last, &bytes).unwrap();
        assert_eq!(
            read_all(dir.path(), 1, durable + 10).unwrap().len() as u64,
            durable
        );

        // Preallocated: a frame being written beyond the durable LSN, zeros after it. The
        // reader stops before it without an error, and reads it once it is whole and durable.
        let mut bytes = std::fs::read(last).unwrap();
        let end = *boundaries(&bytes).last().unwrap();
        bytes.truncate(end);
        let mut next = Vec::new();
        let cp = crate::storage::Checkpoint {
            first_lsn: durable + 1,
            records: vec![crate::proto::OperationRecord {
                operation_id: "being-written".into(),
                ..Default::default()
            }],
        };
        frame::put(&mut next, &cp.encode_to_vec());
        let whole = [bytes.clone(), next.clone(), vec![0; 4096]].concat();
        let mut half = whole.clone();
        half[end + next.len() / 2..end + next.len()].fill(0);
        std::fs::write(last, &half).unwrap();
        let mut r = JournalReader::new(dir.path(), 1);
        // One read reaching the half frame (buffered, then dropped: not an error).
        assert_eq!(r.read(durable, 1 << 20).unwrap().len() as u64, durable);
        std::fs::write(last, &whole).unwrap();
        let got = r.read(durable + 1, 64).unwrap();
        assert_eq!(got.len(), 1, "the whole frame is read after all");
        assert_eq!(got[0].operation_id, "being-written");
        assert_eq!(got[0].lsn, durable + 1);
        std::fs::write(last, &bytes).unwrap();

        // Pruned segments: the reader says which records are gone.
        std::fs::remove_file(&segments[0].1).unwrap();
        match JournalReader::new(dir.path(), 1).read(durable, 10) {
            Err(ReadError::Gap { from: 1, to }) => {
                assert_eq!(to, segments[1].0);
                let mut r = JournalReader::new(dir.path(), 1);
                r.skip_to(to);
                assert_eq!(r.read(durable, 1).unwrap()[0].lsn, to);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Records keep LSNs in 48 bits: the journal refuses an append past the last one (the call
/// fails and changes nothing), and recovery does not take a record beyond it (at the tail: a
/// warning and the record dropped, as a torn one).
#[test]
fn lsns_stop_at_48_bits() {
    use crate::domain::LSN_MAX;
    let delivered = |through| Change::AnalyticsDelivered {
        through,
        sink: "segment".into(),
        at: Timestamp::from_micros(1),
    };
    let j = Journal::disabled();
    let near_the_end = recovery::Recovered {
        next_lsn: LSN_MAX - 1,
        ..recovery::Recovered::fresh()
    };
    let dir = tempfile::tempdir().unwrap();
    j.start(
        &jconfig(dir.path()),
        &near_the_end,
        Arc::new(|m| panic!("{m}")),
    )
    .unwrap();
    assert!(matches!(
        j.append(&[delivered(1), delivered(2), delivered(3)]),
        Err(crate::domain::Error::Unavailable(_))
    ));
    assert_eq!(j.last_lsn(), LSN_MAX - 2, "a refused append takes no LSN");
    assert_eq!(
        j.append(&[delivered(1), delivered(2)]).unwrap(),
        LSN_MAX - 1
    );
    assert!(j.append(&[delivered(3)]).is_err());

    // A snapshot that the journal continues from near the end, and a segment after it whose
    // second checkpoint goes past the last LSN.
    let first = LSN_MAX - 2;
    let before = Journal::disabled();
    let at_first = recovery::Recovered {
        next_lsn: first,
        ..recovery::Recovered::fresh()
    };
    before
        .start(&jconfig(dir.path()), &at_first, Arc::new(|m| panic!("{m}")))
        .unwrap();
    let empty = Store::in_memory(Clock::starting_at(Timestamp::from_micros(T0)), config());
    snapshot::take(&empty, &before, dir.path()).unwrap();
    let cp = |first_lsn, n| {
        let c = crate::storage::Checkpoint {
            first_lsn,
            records: (0..n).map(|i| records::encode(&delivered(i), 0)).collect(),
        };
        let mut out = Vec::new();
        frame::put(&mut out, &c.encode_to_vec());
        out
    };
    let mut bytes = cp(first, 2);
    bytes.extend(cp(first + 2, 2));
    std::fs::write(segment::segment_path(dir.path(), first), bytes).unwrap();
    let s = open(dir.path(), &jconfig(dir.path())).unwrap();
    assert_eq!(
        s.journal().last_lsn(),
        LSN_MAX - 1,
        "the record past the end is dropped"
    );
}

/// Opens a store with its metrics attached and `n` game sessions of 1000 seats, `<prefix><i>`.
async fn open_metered_with_games(
    dir: &Path,
    jc: &JournalConfig,
    prefix: &str,
    n: usize,
) -> (Arc<Store>, Arc<crate::metrics::Metrics>) {
    let s = open(dir, jc).unwrap();
    let m = crate::metrics::Metrics::new(s.clone());
    s.journal().set_metrics(m.clone());
    for g in 0..n {
        s.register_game_session(registration(&format!("{prefix}{g}"), 1000))
            .await
            .unwrap();
    }
    (s, m)
}

/// The journal's syncs so far, from its metrics.
fn syncs(m: &crate::metrics::Metrics) -> u64 {
    m.render()
        .lines()
        .find_map(|l| {
            l.strip_prefix("session_broker_journal_fsync_duration_seconds_count")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Sync mode's commit delay: concurrent callers are grouped into fewer syncs, and every
/// acknowledged change replays. (That an acknowledged change is on disk before the reply,
/// with the default delay, is what `tests/crash.rs`'s kill -9 runs check.)
#[test]
fn concurrent_callers_share_syncs_through_the_commit_delay_and_nothing_is_lost() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let jc = JournalConfig {
            commit_delay: Duration::from_millis(2),
            commit_siblings: 1,
            ..jconfig(dir.path())
        };
        let (s, m) = open_metered_with_games(dir.path(), &jc, "gs-", 8).await;
        let before = syncs(&m);
        let tasks: Vec<_> = (0..32)
            .map(|c| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..20 {
                        let p = format!("p{c}-{i}");
                        let r = s
                            .reserve(reservation(&format!("gs-{}", c % 8), &[p.as_str()]))
                            .await
                            .unwrap();
                        ids.push(r[0].id);
                    }
                    ids
                })
            })
            .collect();
        let mut acknowledged = Vec::new();
        for t in tasks {
            acknowledged.extend(t.await.unwrap());
        }
        let syncs = syncs(&m) - before;
        assert_eq!(acknowledged.len(), 640);
        // Group commit alone syncs ~120-190 times here; the delay groups them ~20 to a sync.
        assert!(
            syncs * 8 < 640,
            "{syncs} syncs for 640 concurrent reservations: the commit delay grouped too few"
        );
        let state = dump(&s);
        s.journal().close();
        let r = open(dir.path(), &jc).unwrap();
        assert_eq!(dump(&r), state);
        for id in acknowledged {
            assert!(r.get_player_session(id).is_ok(), "{id} lost");
        }
        r.journal().close();
    });
}

/// A lone caller never waits for company: with the longest commit delay, one change after
/// another each take about one sync, not one delay.
#[test]
fn a_lone_caller_does_not_wait_for_the_commit_delay() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let jc = JournalConfig {
            commit_delay: MAX_COMMIT_DELAY,
            ..jconfig(dir.path())
        };
        let s = open(dir.path(), &jc).unwrap();
        s.register_game_session(registration("gs-a", 1000))
            .await
            .unwrap();
        let n = 40;
        let started = std::time::Instant::now();
        for i in 0..n {
            s.reserve(reservation("gs-a", &[format!("p{i}").as_str()]))
                .await
                .unwrap();
        }
        // Waiting the delay each time would take n * 10 ms; a sync here takes well under 1 ms.
        let spent = started.elapsed();
        assert!(
            spent < MAX_COMMIT_DELAY * n / 2,
            "{n} sequential reservations took {spent:?}"
        );
        s.journal().close();
    });
}

/// The first hole or unwritten extent of the file at `path` (its size if none).
fn first_hole(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(0)).unwrap()
}

/// Segments started by rotation whose space was `space` (`zeros` or `preallocated`).
fn segments_started(m: &crate::metrics::Metrics, space: &str) -> u64 {
    let key = format!("session_broker_journal_segments_total{{space=\"{space}\"}}");
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str())?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn the_writer_starts_on_written_zeros_and_drops_a_stale_spare() {
    let dir = tempfile::tempdir().unwrap();
    let jc = jconfig(dir.path());
    let stale = dir.path().join(prefill::SPARE_NAME);
    std::fs::write(&stale, b"left by a crash during its fill").unwrap();
    let s = open(dir.path(), &jc).unwrap();
    assert!(!stale.exists(), "a spare of unknown state is never used");
    let seg = segment_file(dir.path());
    assert_eq!(
        first_hole(&seg),
        jc.segment_bytes,
        "no unwritten extent to convert"
    );
    workload(&s).await;
    let before = dump(&s);
    s.journal().close();
    // A restart fills the tail again where it was only preallocated (a segment truncated at a
    // torn record, or written by an older build), and keeps the records.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    let data = data_len(&seg) as u64;
    f.set_len(data).unwrap();
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::empty(),
        data,
        jc.segment_bytes - data,
    )
    .unwrap();
    drop(f);
    assert!(first_hole(&seg) < jc.segment_bytes);
    let r = open(dir.path(), &jc).unwrap();
    assert_eq!(dump(&r), before);
    assert_eq!(first_hole(&seg), jc.segment_bytes);
    r.journal().close();
}

/// From half way through a segment the next one is zero-filled on another thread, and a
/// rotation renames it into place; every record replays across the rotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_take_the_spare_filled_ahead_and_every_record_replays() {
    let dir = tempfile::tempdir().unwrap();
    let jc = JournalConfig {
        segment_bytes: 16 << 10,
        ..jconfig(dir.path())
    };
    let (s, m) = open_metered_with_games(dir.path(), &jc, "gs-spare-", 10).await;
    // Each rotation takes the spare if its fill (16 KiB) finished meanwhile; the short
    // pauses give it the time, so one rotation with zeros comes quickly.
    let mut i = 0;
    while segments_started(&m, "zeros") < 2 {
        assert!(i < 10_000, "no rotation took a filled spare");
        let game = format!("gs-spare-{}", i / 1000);
        s.reserve(reservation(&game, &[format!("p{i}").as_str()]))
            .await
            .unwrap();
        i += 1;
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let before = dump(&s);
    s.journal().close();
    let segments =
        segment::list(dir.path(), segment::SEGMENT_PREFIX, segment::SEGMENT_SUFFIX).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    // The current segment came from a spare if the last rotation took one; the spare
    // of the next is never listed as a segment.
    assert!(segments
        .iter()
        .all(|(_, p)| p.file_name().unwrap() != prefill::SPARE_NAME));
    assert_replays_as(dir.path(), &jc, &before);
}

/// Reopens the journal in `dir` and checks that it replays to `before`.
fn assert_replays_as(dir: &Path, jc: &JournalConfig, before: &[String]) {
    let r = open(dir, jc).unwrap();
    assert_eq!(dump(&r), before);
    r.journal().close();
}

/// Sync mode writes the same segment bytes with direct I/O as with write + fdatasync, so a
/// journal written one way replays the other way, restart after restart.
#[tokio::test(start_paused = true)]
async fn direct_and_buffered_sync_writes_replay_alike() {
    let dir = tempfile::tempdir().unwrap();
    let buffered = JournalConfig {
        direct_io: false,
        ..jconfig(dir.path())
    };
    let direct = JournalConfig {
        direct_io: true,
        ..jconfig(dir.path())
    };
    let s = open(dir.path(), &buffered).unwrap();
    workload(&s).await;
    let mut before = dump(&s);
    s.journal().close();
    for (round, jc) in [&direct, &buffered, &direct].into_iter().enumerate() {
        let r = open(dir.path(), jc).unwrap();
        assert_eq!(dump(&r), before, "round {round}");
        let game = format!("gs-round-{round}");
        r.register_game_session(registration(&game, 10))
            .await
            .unwrap();
        for i in 0..5 {
            r.reserve(reservation(&game, &[&format!("p{round}-{i}")]))
                .await
                .unwrap();
        }
        before = dump(&r);
        r.journal().close();
    }
    let seg = segment_file(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let data = data_len(&seg);
    assert!(
        bytes[data..].iter().all(|&b| b == 0),
        "zeros after the frames"
    );
    assert_replays_as(dir.path(), &direct, &before);
}

/// Start-up waits for at most `START_FILL_MAX` of zeros, whatever the segment size.
#[tokio::test(start_paused = true)]
async fn start_up_fills_a_huge_segment_only_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let jc = JournalConfig {
        segment_bytes: prefill::START_FILL_MAX + (1 << 20),
        ..jconfig(dir.path())
    };
    let s = open(dir.path(), &jc).unwrap();
    let seg = segment_file(dir.path());
    assert_eq!(first_hole(&seg), prefill::START_FILL_MAX);
    s.register_game_session(registration("gs-huge", 2))
        .await
        .unwrap();
    s.journal().close();
    let r = open(dir.path(), &jc).unwrap();
    assert!(r.game_session_ids().iter().any(|g| g.as_str() == "gs-huge"));
    r.journal().close();
}
