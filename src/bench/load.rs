//! The closed-loop load engine: `concurrency` worker tasks, each issuing its next call as soon
//! as the previous one answered, timing every call into its own HdrHistogram (merged at the end,
//! so workers never contend on a shared histogram). Measurement windows are switched from the
//! outside (warm-up is window 0, which records nothing).
//!
//! Two loads can also take [`Turns`]: each runs only in its own time slices (plain, secure,
//! secure, plain, ...), so the machine's slow drift falls on both alike and their throughputs
//! compare within a few percent on a machine whose separate runs vary by 10 %.

use std::{
    future::Future,
    io::{IsTerminal, Write},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

/// Phase value that tells workers to stop.
const STOP: usize = usize::MAX;

/// A fresh latency histogram in nanoseconds (1 ns .. 10 min, 3 significant digits).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static bounds are valid")
}

struct Shared {
    /// 0 = warm-up (not recorded), 1..=n = recording into window n-1, STOP = stop.
    phase: AtomicUsize,
    /// Calls answered so far (for the progress line).
    answered: AtomicU64,
    failed: AtomicU64,
    /// Workers wait before their next call while this is set (the other load's turn).
    paused: AtomicBool,
    resumed: tokio::sync::Notify,
}

impl Shared {
    fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.resumed.notify_waiters();
    }
}

/// Time slices shared by two loads that take turns (see the module docs).
pub(crate) struct Turns {
    /// Both loads set up and started before the first slice.
    ready: tokio::sync::Barrier,
    slice: Duration,
}

/// One of the two loads' place in a [`Turns`].
#[derive(Clone)]
pub(crate) struct Turn {
    turns: Arc<Turns>,
    /// 0 or 1.
    me: usize,
}

impl Turns {
    /// The two turns of slices of `slice` each.
    pub fn pair(slice: Duration) -> [Turn; 2] {
        let turns = Arc::new(Turns {
            ready: tokio::sync::Barrier::new(2),
            slice,
        });
        [0, 1].map(|me| Turn {
            turns: turns.clone(),
            me,
        })
    }

    /// Whose slice `k` is: 0, 1, 1, 0, 0, 1, 1, 0, ... (each pair of slices has one of each,
    /// and neither always goes first).
    fn owner(k: u32) -> usize {
        [0, 1, 1, 0][(k % 4) as usize]
    }
}

/// What one worker measured; handed to the worker and returned by it.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    windows: Vec<Window>,
}

/// The calls measured in one window.
#[derive(Clone)]
pub(crate) struct Window {
    pub latency: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Seconds the window was open (set by [`Load::finish`]).
    pub seconds: f64,
}

impl Window {
    fn new() -> Self {
        Window {
            latency: histogram(),
            ops: 0,
            errors: 0,
            last_error: None,
            seconds: 0.0,
        }
    }

    fn merge(&mut self, other: &Window) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds merge");
        self.ops += other.ops;
        self.errors += other.errors;
        if other.last_error.is_some() {
            self.last_error.clone_from(&other.last_error);
        }
    }

    /// Successful calls per second in this window.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// A latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }
}

impl Recorder {
    /// False once the load is being stopped: the worker should return.
    pub fn running(&self) -> bool {
        self.shared.phase.load(Ordering::Relaxed) != STOP
    }

    /// Times one call. Calls that started in a recording window count there (successes into the
    /// latency histogram, failures as errors). Returns the reply, or `None` if the call failed.
    pub async fn time<T>(
        &mut self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<T> {
        while self.shared.paused.load(Ordering::Acquire) {
            // Registered before the check, so a resume in between is not missed.
            let resumed = self.shared.resumed.notified();
            if !self.shared.paused.load(Ordering::Acquire) {
                break;
            }
            resumed.await;
        }
        let phase = self.shared.phase.load(Ordering::Relaxed);
        let started = Instant::now();
        let result = call.await;
        let nanos = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.shared.answered.fetch_add(1, Ordering::Relaxed);
        let window = phase.checked_sub(1).and_then(|w| self.windows.get_mut(w));
        match result {
            Ok(reply) => {
                if let Some(w) = window {
                    w.latency.saturating_record(nanos.max(1));
                    w.ops += 1;
                }
                Some(reply.into_inner())
            }
            Err(status) => {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(w) = window {
                    w.errors += 1;
                    w.last_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
                None
            }
        }
    }
}

/// A running closed-loop load.
pub(crate) struct Load {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<Recorder>>,
    /// (window, opened at) of the window open now, and the seconds each window was open.
    open: Mutex<(usize, Instant, Vec<f64>)>,
    progress: Option<JoinHandle<()>>,
    turn: Option<Turn>,
}

impl Load {
    /// Starts `concurrency` workers; `worker(i, recorder)` runs until `recorder.running()` is
    /// false and returns the recorder. `windows` is how many measurement windows the caller
    /// will open. Shows a live progress line on stderr when it is a terminal.
    pub fn start<F, Fut>(
        label: &str,
        concurrency: usize,
        windows: usize,
        progress: bool,
        mut worker: F,
    ) -> Load
    where
        F: FnMut(usize, Recorder) -> Fut,
        Fut: Future<Output = Recorder> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            phase: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            resumed: tokio::sync::Notify::new(),
        });
        let workers = (0..concurrency)
            .map(|i| {
                let recorder = Recorder {
                    shared: shared.clone(),
                    windows: vec![Window::new(); windows],
                };
                tokio::spawn(worker(i, recorder))
            })
            .collect();
        let progress = (progress && std::io::stderr().is_terminal())
            .then(|| tokio::spawn(show_progress(label.to_string(), shared.clone())));
        Load {
            shared,
            workers,
            open: Mutex::new((0, Instant::now(), vec![0.0; windows])),
            progress,
            turn: None,
        }
    }

    /// Makes [`Load::measure`] run in `turn`'s slices only.
    pub fn with_turn(mut self, turn: Option<Turn>) -> Load {
        self.turn = turn;
        self
    }

    /// Opens measurement window `window` (1-based), or stops recording with 0.
    pub fn set_window(&self, window: usize) {
        let mut open = self.open.lock();
        let now = Instant::now();
        let (current, since, ref mut seconds) = *open;
        if current > 0 {
            seconds[current - 1] += now.duration_since(since).as_secs_f64();
        }
        open.0 = window;
        open.1 = now;
        self.shared.phase.store(window, Ordering::Relaxed);
    }

    /// Stops the workers and merges what they measured, one [`Window`] per window.
    pub async fn finish(self) -> anyhow::Result<Vec<Window>> {
        self.set_window(0);
        self.shared.phase.store(STOP, Ordering::Relaxed);
        self.shared.resume();
        let seconds = self.open.lock().2.clone();
        let mut merged: Vec<Window> = seconds
            .iter()
            .map(|s| Window {
                seconds: *s,
                ..Window::new()
            })
            .collect();
        for worker in self.workers {
            let recorder = worker.await?;
            for (m, w) in merged.iter_mut().zip(&recorder.windows) {
                m.merge(w);
            }
        }
        if let Some(p) = self.progress {
            p.abort();
            eprint!("\r\x1b[K");
        }
        Ok(merged)
    }

    /// Warm up, then measure one window of `duration`. With a [`Turn`], both warm-up and
    /// measurement are this load's slices, adding up to (about) `warmup` and `duration`.
    pub async fn measure(self, warmup: Duration, duration: Duration) -> anyhow::Result<Window> {
        match self.turn.clone() {
            None => {
                tokio::time::sleep(warmup).await;
                self.set_window(1);
                tokio::time::sleep(duration).await;
            }
            Some(turn) => self.take_turns(&turn, warmup, duration).await,
        }
        let mut windows = self.finish().await?;
        Ok(windows.remove(0))
    }

    async fn take_turns(&self, turn: &Turn, warmup: Duration, duration: Duration) {
        let slice = turn.turns.slice;
        let slices = |d: Duration| (d.as_secs_f64() / slice.as_secs_f64()).ceil() as u32;
        let (warm, measured) = (slices(warmup), slices(duration).max(1));
        self.shared.pause();
        turn.turns.ready.wait().await;
        let start = tokio::time::Instant::now();
        for k in 0..2 * (warm + measured) {
            tokio::time::sleep_until(start + slice * k).await;
            if Turns::owner(k) == turn.me {
                self.set_window(usize::from(k >= 2 * warm));
                self.shared.resume();
            } else {
                self.set_window(0);
                self.shared.pause();
            }
        }
        tokio::time::sleep_until(start + slice * (2 * (warm + measured))).await;
    }
}

async fn show_progress(label: String, shared: Arc<Shared>) {
    let started = Instant::now();
    let mut last = 0;
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.tick().await;
    loop {
        interval.tick().await;
        let answered = shared.answered.load(Ordering::Relaxed);
        let phase = match shared.phase.load(Ordering::Relaxed) {
            0 => "warm-up",
            STOP => "stopping",
            _ => "measuring",
        };
        eprint!(
            "\r\x1b[K{label}: {phase} {:>5.1}s  {:>9.0} calls/s  errors {}",
            started.elapsed().as_secs_f64(),
            (answered - last) as f64 * 2.0,
            shared.failed.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
        last = answered;
    }
}
