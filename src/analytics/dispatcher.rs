//! The analytics dispatcher: events are derived from the journal, not kept in a side queue.
//!
//! One task reads the committed (durable) records after its cursor, turns each lifecycle
//! transition into a track message ([`super::events`]), batches them ([`super::batcher`]) and
//! hands full batches to delivery tasks (at most `max_in_flight` at once). A delivery retries
//! what may succeed later (network errors, timeouts, 408, 429, 5xx but 501/505) with full-jitter
//! backoff and Retry-After behind one shared "rate-limited until", journaling each failed
//! attempt as a STEP RETRY; a batch the sink refuses as malformed or too large (400, 413) is
//! split until the refused messages stand alone and are dropped (counted); 401/403 drop the
//! batch (counted, logged: the write key is wrong).
//!
//! Once every batch up to a record was acknowledged (delivered or dropped), the cursor moves
//! past it: first in the store (so a snapshot carries it), then as a STEP SUCCEED record in the
//! journal. After a crash the dispatcher resumes after the last journaled cursor: delivery is
//! at least once, and a resent event carries the same messageId, so Segment drops the duplicate.
//! The journal keeps the segments the cursor still needs, up to `--analytics-max-backlog`.
//!
//! Nothing here runs on the RPC path: RPCs only append to the journal, as they always do.

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    batcher::{self, Batcher},
    events::{self, GameContext, PlayerContext, Written},
    sink::{backoff, Outcome, Sink},
    AnalyticsConfig,
};
use crate::{
    domain::{Change, GameSessionId, Lsn, PlayerSessionId, Timestamp},
    journal::{
        reader::{JournalReader, ReadError},
        records, Journal,
    },
    metrics::{Metrics, OutcomeLabels, ResultLabels},
    proto::OperationRecord,
    store::Store,
};

/// Records read from the journal at a time (at most).
const READ_CHUNK: usize = 2048;

/// After catching up with the writer, the next read waits this long (events are sent at most
/// every flush interval anyway; this keeps the reads few and large under load).
const READ_PAUSE: Duration = Duration::from_millis(50);

/// Game sessions whose event context is cached.
const GAME_CACHE: usize = 65_536;

/// Where a dispatcher starts: the first LSN to deliver and the journal's id (part of every
/// messageId, see [`events::message_id`]).
#[derive(Debug, Clone)]
pub struct Start {
    pub from: Lsn,
    pub journal_id: Arc<str>,
}

/// Decides where delivery starts and makes the journal keep what it needs: after the last
/// journaled cursor, or (analytics never ran on this journal) after everything already
/// journaled, which is then recorded as the cursor so a crash before the first delivery does
/// not move the start. Call before snapshots can prune. Fails if the data directory's journal
/// id cannot be read or made.
pub fn prepare(
    store: &Store,
    config: &AnalyticsConfig,
    sink: &str,
    data_dir: &std::path::Path,
) -> std::io::Result<Start> {
    let journal_id = events::journal_id(data_dir)?;
    let journal = store.journal();
    let from = match store.analytics_resume_lsn() {
        Some(next) => next,
        None => {
            let through = journal.last_lsn();
            checkpoint(store, through, sink);
            through + 1
        }
    };
    journal.hold_segments_from(from, config.max_backlog);
    Ok(Start {
        from,
        journal_id: journal_id.into(),
    })
}

/// Journals the cursor: every record up to `through` is delivered (or dropped and counted).
fn checkpoint(store: &Store, through: Lsn, sink: &str) {
    store.note_analytics_delivered(through);
    // Not waited for: a cursor lost in a crash only resends events (same messageIds).
    let _ = store.journal().append(&[Change::AnalyticsDelivered {
        through,
        sink: sink.into(),
        at: store.clock().now(),
    }]);
}

/// A batch and the journal records it accounts for.
struct Batch {
    seq: u64,
    messages: Vec<String>,
    first: Lsn,
    last: Lsn,
    /// When its oldest event happened.
    oldest: Timestamp,
}

/// What every delivery task shares.
struct Shared {
    sink: Arc<dyn Sink>,
    sink_name: &'static str,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    /// No request starts before this instant (a 429 or Retry-After pauses every batch).
    limited_until: Mutex<Option<Instant>>,
}

impl Shared {
    fn events(&self, outcome: &'static str, n: usize) {
        self.metrics
            .analytics_events
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n as u64);
    }

    fn batch(&self, result: &'static str) {
        self.metrics
            .analytics_batches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    async fn wait_rate_limit(&self) {
        loop {
            let until = *self.limited_until.lock();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    fn limit_until(&self, t: Instant) {
        let mut until = self.limited_until.lock();
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
    }
}

fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Delivers one batch: retries until the sink acknowledges or refuses each part. Returns the
/// batch's sequence number once every message is accounted for.
async fn deliver(shared: Arc<Shared>, batch: Batch) -> u64 {
    let mut parts = vec![batch.messages];
    while let Some(part) = parts.pop() {
        let bytes: usize = part.iter().map(String::len).sum();
        let body_bytes = batcher::body_len(part.len(), bytes);
        let mut attempt = 0u32;
        loop {
            shared.wait_rate_limit().await;
            shared
                .metrics
                .analytics_batch_bytes
                .observe(body_bytes as f64);
            match shared.sink.send(&part).await {
                Outcome::Delivered => {
                    shared.batch("delivered");
                    shared.events("sent", part.len());
                    break;
                }
                Outcome::Retry {
                    after,
                    rate_limited,
                    why,
                } => {
                    shared.batch("retried");
                    shared.metrics.analytics_retries.inc();
                    let delay = backoff(attempt, after, random_unit());
                    if after.is_some() || rate_limited {
                        shared.limit_until(Instant::now() + delay);
                    }
                    tracing::warn!(
                        sink = shared.sink_name,
                        attempt = attempt + 1,
                        delay_ms = delay.as_millis() as u64,
                        messages = part.len(),
                        first_lsn = batch.first,
                        last_lsn = batch.last,
                        reason = %why,
                        "analytics batch not delivered; retrying"
                    );
                    let _ = shared.store.journal().append(&[Change::AnalyticsRetry {
                        first: batch.first,
                        last: batch.last,
                        sink: shared.sink_name.into(),
                        delay,
                        error: why.as_str().into(),
                        at: shared.store.clock().now(),
                    }]);
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
                Outcome::Rejected { status } => {
                    shared.batch("rejected");
                    if matches!(status, 400 | 413) && part.len() > 1 {
                        // One bad message must not take the others with it: split.
                        let mut first = part;
                        let second = first.split_off(first.len() / 2);
                        parts.push(second);
                        parts.push(first);
                    } else {
                        shared.events("dropped_rejected", part.len());
                        tracing::error!(
                            sink = shared.sink_name,
                            status,
                            messages = part.len(),
                            first_lsn = batch.first,
                            last_lsn = batch.last,
                            "analytics sink refused events; dropped (counted in session_broker_analytics_events_total{{outcome=\"dropped_rejected\"}})"
                        );
                    }
                    break;
                }
            }
        }
    }
    batch.seq
}

/// Turns committed records into sealed batches. It runs on a blocking thread (never on the
/// runtime's workers), while the next records are read on another.
struct Converter {
    shared: Arc<Shared>,
    /// Part of every messageId.
    journal_id: Arc<str>,
    batch_size: usize,
    batcher: Batcher,
    /// First record the batch being filled accounts for.
    first: Lsn,
    /// Last record consumed.
    covered: Lsn,
    /// When the oldest event of the batch being filled happened.
    oldest: Option<Timestamp>,
    /// When its first message arrived (the flush interval runs from then).
    since: Option<Instant>,
    /// When the last event consumed happened (a lower bound of the age of unread ones).
    last_consumed_at: Option<Timestamp>,
    /// Event context of recently seen game sessions.
    games: std::collections::HashMap<Box<str>, Arc<GameContext>, ahash::RandomState>,
    /// Bytes to reserve for the next message (the largest recent one).
    message_capacity: usize,
    next_seq: u64,
    /// Batches sealed since the dispatcher last took them.
    sealed: Vec<Batch>,
}

impl Converter {
    fn new(shared: Arc<Shared>, config: &AnalyticsConfig, start: &Start) -> Self {
        let journal_id = start.journal_id.clone();
        let start = start.from;
        Converter {
            shared,
            journal_id,
            batch_size: config.batch_size,
            batcher: Batcher::new(config.limits),
            first: start,
            covered: start - 1,
            oldest: None,
            since: None,
            last_consumed_at: None,
            games: Default::default(),
            message_capacity: 512,
            next_seq: 0,
            sealed: Vec::new(),
        }
    }

    fn convert(mut self, records: Vec<OperationRecord>) -> Self {
        for r in records {
            self.consume(r);
        }
        self
    }

    /// Turns one committed record into a message of the batch being filled.
    fn consume(&mut self, record: OperationRecord) {
        let lsn = record.lsn;
        self.covered = lsn;
        let store = &self.shared.store;
        let change = match records::decode(&record, |g| store.game_info(g)) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "analytics: undecodable journal record skipped");
                return;
            }
        };
        if let Some(ctx) = events::started_context(&change) {
            if self.games.len() >= GAME_CACHE {
                self.games.clear();
            }
            self.games
                .insert(record.operation_id.as_str().into(), Arc::new(ctx));
        }
        let games = &self.games;
        let game = |id: &str| {
            if let Some(c) = games.get(id) {
                return Some(c.clone());
            }
            let gid = GameSessionId::parse("game_session_id", id).ok()?;
            let g = store.get_game_session(&gid).ok()?;
            Some(Arc::new(GameContext::new(
                id,
                g.fleet_id().as_str(),
                &g.release,
                &g.environment,
                g.creation_time,
            )))
        };
        let player = |id: &str| {
            let id = PlayerSessionId::parse("player_session_id", id).ok()?;
            let (player_id, creation_time) = store.player_identity(id)?;
            Some(PlayerContext {
                player_id,
                creation_time,
            })
        };
        let mut text = String::with_capacity(self.message_capacity);
        let src = events::Source {
            journal: &self.journal_id,
            lsn,
        };
        match events::write_event(&mut text, &change, src, game, player) {
            Written::Event => {}
            Written::NotLifecycle => return,
            Written::UnknownSession => {
                // Its game or player session is no longer retained (older than the retention).
                self.shared.events("dropped_backlog", 1);
                tracing::warn!(
                    lsn,
                    "analytics: event of a session no longer retained dropped"
                );
                return;
            }
        }
        let at = events::timestamp_of(&change);
        self.last_consumed_at = Some(at);
        self.message_capacity = (text.len() + 64).clamp(self.message_capacity, 4096);
        match self.batcher.push(text) {
            Err(too_large) => {
                self.shared.events("dropped_too_large", 1);
                tracing::error!(
                    lsn,
                    bytes = too_large.bytes,
                    limit = too_large.limit,
                    "analytics event larger than Segment's per-message limit dropped"
                );
            }
            Ok(Some(full)) => {
                // Full by bytes or count: it accounts for everything before this record.
                self.seal_messages(full, lsn - 1);
                self.first = lsn;
                self.oldest = Some(at);
                self.since = Some(Instant::now());
            }
            Ok(None) => {
                if self.oldest.is_none() {
                    self.oldest = Some(at);
                    self.since = Some(Instant::now());
                }
            }
        }
        if self.batcher.len() >= self.batch_size {
            self.seal();
        }
    }

    fn seal_messages(&mut self, messages: Vec<String>, last: Lsn) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sealed.push(Batch {
            seq,
            messages,
            first: self.first,
            last,
            oldest: self
                .oldest
                .unwrap_or_else(|| self.shared.store.clock().now()),
        });
    }

    /// Seals the batch being filled (if it holds anything).
    fn seal(&mut self) {
        if let Some(messages) = self.batcher.take() {
            self.seal_messages(messages, self.covered);
            self.first = self.covered + 1;
            self.oldest = None;
            self.since = None;
        }
    }

    /// The records before `to` are gone (a pruned backlog): they count as consumed.
    fn skip_to(&mut self, to: Lsn) {
        self.covered = to - 1;
        if self.batcher.is_empty() {
            self.first = to;
        }
    }
}

struct Dispatcher {
    config: AnalyticsConfig,
    shared: Arc<Shared>,
    /// `None` while a read runs on a blocking thread.
    reader: Option<JournalReader>,
    reader_dir: PathBuf,
    /// Reading pauses until then: after reaching the end of the journal (so a busy daemon is
    /// read in chunks, not once per group commit) or after a read error.
    read_not_before: Option<Instant>,
    /// `None` while a conversion runs on a blocking thread.
    converter: Option<Converter>,
    /// Records read, waiting for the next conversion.
    unconverted: Vec<OperationRecord>,
    ready: VecDeque<Batch>,
    in_flight: JoinSet<u64>,
    /// Oldest event, last record and "acknowledged" of each batch not yet covered by the
    /// cursor, by sequence number.
    unacked: BTreeMap<u64, (Timestamp, Lsn, bool)>,
}

impl Dispatcher {
    fn journal(&self) -> &Journal {
        self.shared.store.journal()
    }

    fn converter(&mut self) -> &mut Converter {
        self.converter
            .as_mut()
            .expect("the converter is back between steps")
    }

    /// Starts deliveries while there is room.
    fn dispatch(&mut self) {
        if let Some(c) = self.converter.as_mut() {
            self.ready.extend(c.sealed.drain(..));
        }
        while self.in_flight.len() < self.config.max_in_flight {
            let Some(batch) = self.ready.pop_front() else {
                return;
            };
            self.unacked
                .insert(batch.seq, (batch.oldest, batch.last, false));
            self.in_flight.spawn(deliver(self.shared.clone(), batch));
        }
    }

    /// A delivery finished: the cursor moves over every acknowledged batch in order.
    fn acknowledge(&mut self, done: Result<u64, tokio::task::JoinError>) {
        let seq = match done {
            Ok(seq) => seq,
            Err(e) if e.is_cancelled() => return,
            Err(e) => panic!("analytics delivery task failed: {e}"),
        };
        if let Some(entry) = self.unacked.get_mut(&seq) {
            entry.2 = true;
        }
        let mut through = None;
        while let Some(entry) = self.unacked.first_entry() {
            if !entry.get().2 {
                break;
            }
            through = Some(entry.remove().1);
        }
        if let Some(through) = through {
            checkpoint(&self.shared.store, through, self.shared.sink_name);
            self.journal()
                .hold_segments_from(through + 1, self.config.max_backlog);
        }
    }

    fn acknowledge_finished(&mut self) {
        while let Some(done) = self.in_flight.try_join_next() {
            self.acknowledge(done);
        }
    }

    fn has_unread(&self, durable: Lsn) -> bool {
        self.reader
            .as_ref()
            .is_some_and(|r| r.next_lsn() <= durable)
            && self.read_not_before.is_none_or(|t| t <= Instant::now())
    }

    /// Reading goes on while the batches already made have somewhere to go.
    fn can_read(&self, durable: Lsn) -> bool {
        let made = self.ready.len() + self.converter.as_ref().map_or(0, |c| c.sealed.len());
        self.has_unread(durable) && made < self.config.max_in_flight
    }

    /// One pipelined step: reads the next records on one blocking thread while the records
    /// read last time are converted on another.
    async fn step(&mut self, durable: Lsn) {
        let read = if self.can_read(durable) {
            self.reader.take().map(|mut reader| {
                tokio::task::spawn_blocking(move || {
                    let result = reader.read(durable, READ_CHUNK);
                    (reader, result)
                })
            })
        } else {
            None
        };
        let records = std::mem::take(&mut self.unconverted);
        if !records.is_empty() {
            let c = self.converter.take().expect("one conversion at a time");
            let converted = tokio::task::spawn_blocking(move || c.convert(records)).await;
            self.converter = Some(converted.expect("analytics conversion panicked"));
        }
        let Some(read) = read else {
            return;
        };
        let (reader, result) = match read.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "analytics journal reader failed; reopening it");
                let from = self.converter().covered + 1;
                self.reader = Some(JournalReader::new(self.reader_dir.clone(), from));
                return;
            }
        };
        self.reader = Some(reader);
        match result {
            Ok(records) if records.is_empty() => {
                // Committed records that cannot be read yet: do not spin.
                tracing::debug!(durable, "analytics: nothing readable yet");
                self.read_not_before = Some(Instant::now() + Duration::from_millis(20));
            }
            Ok(records) => {
                if records.len() < READ_CHUNK {
                    // Caught up with the writer: let records accumulate for a moment.
                    self.read_not_before = Some(Instant::now() + READ_PAUSE);
                }
                self.unconverted = records;
            }
            Err(ReadError::Gap { from, to }) => {
                let lost = to - from;
                self.shared.events("dropped_backlog", lost as usize);
                tracing::error!(
                    from_lsn = from,
                    to_lsn = to,
                    records = lost,
                    "analytics backlog exceeded --analytics-max-backlog: journal records deleted before their events were delivered (counted as dropped_backlog)"
                );
                if let Some(r) = self.reader.as_mut() {
                    r.skip_to(to);
                }
                self.converter().skip_to(to);
            }
            Err(e) => {
                tracing::error!(error = %e, "analytics cannot read the journal; retrying in 5 s");
                self.read_not_before = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }

    /// Seals the batch being filled once the flush interval since its first event passed.
    fn flush_due(&mut self) {
        let interval = self.config.flush_interval;
        let c = self.converter();
        if c.since.is_some_and(|s| s + interval <= Instant::now()) {
            c.seal();
        }
    }

    /// Age of the oldest event not yet delivered.
    fn update_lag(&self) {
        let Some(c) = self.converter.as_ref() else {
            return;
        };
        let now = self.shared.store.clock().now();
        let oldest = self
            .unacked
            .values()
            .map(|(t, _, _)| *t)
            .chain(self.ready.iter().map(|b| b.oldest))
            .chain(c.sealed.iter().map(|b| b.oldest))
            .chain(c.oldest)
            .min()
            .or_else(|| {
                // Nothing read is pending; records not read yet are at least as old as the
                // last event read.
                let durable = self.journal().durable_lsn();
                (self.has_unread(durable) || !self.unconverted.is_empty())
                    .then_some(c.last_consumed_at)
                    .flatten()
            });
        self.shared
            .metrics
            .analytics_lag
            .set(oldest.map_or(0.0, |t| now.duration_since(t).as_secs_f64()));
    }

    async fn run(&mut self, shutdown: &CancellationToken) {
        let mut durable_rx = self.journal().subscribe_durable();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.acknowledge_finished();
            self.flush_due();
            let durable = self.journal().durable_lsn();
            if self.can_read(durable) || !self.unconverted.is_empty() {
                self.step(durable).await;
                self.dispatch();
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            self.dispatch();
            let flush_at = self
                .converter()
                .since
                .map(|s| s + self.config.flush_interval);
            let retry_read_at = self.read_not_before;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.acknowledge(done);
                }
                _ = async { tokio::time::sleep_until(flush_at.expect("guarded")).await }, if flush_at.is_some() => {
                    self.converter().seal();
                }
                _ = async { tokio::time::sleep_until(retry_read_at.expect("guarded")).await }, if retry_read_at.is_some() => {
                    self.read_not_before = None;
                }
                _ = durable_rx.changed(), if retry_read_at.is_none() => {}
                _ = tick.tick() => self.update_lag(),
            }
        }
    }

    /// At shutdown: delivers what is committed, within the shutdown timeout; what is left stays
    /// in the journal for the next start.
    async fn drain(&mut self) {
        let deadline = Instant::now() + self.config.shutdown_timeout;
        let target = self.journal().durable_lsn();
        self.read_not_before = None;
        loop {
            self.acknowledge_finished();
            if self.can_read(target) || !self.unconverted.is_empty() {
                if Instant::now() >= deadline {
                    break;
                }
                self.step(target).await;
                self.dispatch();
                continue;
            }
            if !self.has_unread(target) {
                self.converter().seal();
            }
            self.dispatch();
            if self.in_flight.is_empty() {
                if self.ready.is_empty() && !self.has_unread(target) {
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                Some(done) = self.in_flight.join_next() => self.acknowledge(done),
            }
        }
        let undelivered = self.in_flight.len() + self.ready.len();
        self.in_flight.abort_all();
        if undelivered > 0
            || self
                .converter
                .as_ref()
                .is_some_and(|c| !c.batcher.is_empty())
        {
            tracing::warn!(
                batches = undelivered,
                "analytics: undelivered events stay in the journal for the next start"
            );
        }
        self.update_lag();
    }
}

/// Runs the dispatcher from `start` (see [`prepare`]) until shutdown, then flushes what it can
/// within the shutdown timeout.
pub async fn run(
    config: AnalyticsConfig,
    sink: Arc<dyn Sink>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    start: Start,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        sink_name: sink.name(),
        sink,
        metrics,
        store,
        limited_until: Mutex::new(None),
    });
    let mut d = Dispatcher {
        converter: Some(Converter::new(shared.clone(), &config, &start)),
        config,
        shared,
        reader: Some(JournalReader::new(dir.clone(), start.from)),
        reader_dir: dir,
        read_not_before: None,
        unconverted: Vec::new(),
        ready: VecDeque::new(),
        in_flight: JoinSet::new(),
        unacked: BTreeMap::new(),
    };
    d.run(&shutdown).await;
    d.drain().await;
}
