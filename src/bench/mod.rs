//! `session-broker bench`: a closed-loop load generator over real gRPC, and the echo baseline
//! (`bench-echo-server`) every figure is compared with. See `docs/performance.md`.
//!
//! - [`load`]: workers, HdrHistograms, measurement windows, the progress line.
//! - `scenarios`: what each scenario registers, preloads and calls.
//! - `server`: the daemon and echo server a run starts itself when not given a `--target`.
//! - [`echo`]: the echo service.

pub mod echo;
pub(crate) mod load;
mod scenarios;
mod secure;
mod server;

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::{config::parse_duration, journal::Durability};
use scenarios::{Ctx, Outcome};
use server::OwnServer;

/// What a bench run calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The baseline: a trivial tonic echo service, messages sized like `reserve`'s.
    Echo,
    /// CreatePlayerSession across many game sessions.
    Reserve,
    /// reserve -> accept -> remove per player (the game-server path); every call counts.
    Cycle,
    /// CreatePlayerSessions of 25 players.
    Batch,
    /// DescribePlayerSessions by id over 10,000 live reservations.
    Describe,
    /// 25 % reserve, 25 % describe, 20 % accept, 20 % remove, 10 % GetGameSession.
    Mixed,
    /// PlacePlayerSessions of parties of 5 in a fleet of `--fleet-game-sessions` game sessions.
    Place,
    /// SearchGameSessions with a filter over a fleet of `--fleet-game-sessions` game sessions.
    Search,
    /// 100,000 reservations with one deadline, `cycle` running through it.
    Sweep,
    /// `cycle` at 10k, 100k and 1M live reservations, and memory per session.
    Growth,
    /// echo, reserve, cycle, batch, describe, mixed, place, search.
    All,
}

impl Scenario {
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Flags of `session-broker bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated; `echo` always runs first (every figure is a ratio to it).
    #[arg(
        long,
        env = "SESSION_BROKER_BENCH_SCENARIO",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub scenario: Vec<Scenario>,

    /// HTTP/2 connections the clients spread over.
    #[arg(long, env = "SESSION_BROKER_BENCH_CONNECTIONS", default_value_t = 4)]
    pub connections: usize,

    /// Calls in flight (closed loop: each worker waits for its reply before the next call).
    #[arg(long, env = "SESSION_BROKER_BENCH_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// Measured time per scenario (and per step of `growth`).
    #[arg(long, env = "SESSION_BROKER_BENCH_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Unmeasured load before each measurement.
    #[arg(long, env = "SESSION_BROKER_BENCH_WARMUP", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// gRPC URL of a running daemon to load. Default: start a fresh daemon per scenario on
    /// loopback (a child process with its own data dir).
    #[arg(long, env = "SESSION_BROKER_BENCH_TARGET")]
    pub target: Option<String>,

    /// Admin HTTP address (host:port) of `--target`, for `sweep` and the memory figures.
    #[arg(long, env = "SESSION_BROKER_BENCH_ADMIN_TARGET", requires = "target")]
    pub admin_target: Option<std::net::SocketAddr>,

    /// gRPC URL of a running `bench-echo-server`. Default: start one on loopback.
    #[arg(long, env = "SESSION_BROKER_BENCH_ECHO_TARGET")]
    pub echo_target: Option<String>,

    /// Durability of the daemon the bench starts itself.
    #[arg(long, env = "SESSION_BROKER_BENCH_DURABILITY", value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,

    /// Where the bench's own daemon keeps its (fresh, deleted afterwards) data dir.
    #[arg(long, env = "SESSION_BROKER_BENCH_DATA_DIR", default_value_os_t = std::env::temp_dir())]
    pub data_dir: PathBuf,

    /// Game sessions (of 1000 seats) the reserving scenarios spread over (`batch`: four times
    /// as many) [default: 1000; for `reserve` and `batch`, whose seats stay taken, at least
    /// enough seats for 150,000 reservations (20,000 batches of 25) a second over warm-up and
    /// duration, so a long run never fills them]
    #[arg(long, env = "SESSION_BROKER_BENCH_GAME_SESSIONS")]
    pub game_sessions: Option<u64>,

    /// Game sessions in the one fleet `place` and `search` work on (200-1000 seats each).
    #[arg(
        long,
        env = "SESSION_BROKER_BENCH_FLEET_GAME_SESSIONS",
        default_value_t = 10_000
    )]
    pub fleet_game_sessions: u64,

    /// Bytes of player_data in every reservation.
    #[arg(
        long,
        env = "SESSION_BROKER_BENCH_PLAYER_DATA_BYTES",
        default_value_t = 64
    )]
    pub player_data_bytes: usize,

    /// Reservations created in one burst by `sweep`.
    #[arg(
        long,
        env = "SESSION_BROKER_BENCH_SWEEP_SESSIONS",
        default_value_t = 100_000
    )]
    pub sweep_sessions: u64,

    /// Reservation timeout of the `sweep` burst (the burst must be created well within it).
    #[arg(long, env = "SESSION_BROKER_BENCH_SWEEP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub sweep_timeout: Duration,

    /// Live-session counts `growth` measures at, comma-separated.
    #[arg(
        long,
        env = "SESSION_BROKER_BENCH_GROWTH_STEPS",
        value_delimiter = ',',
        default_value = "10000,100000,1000000"
    )]
    pub growth_steps: Vec<u64>,

    /// Print one JSON line instead of the table (and no progress line).
    #[arg(long, env = "SESSION_BROKER_BENCH_JSON")]
    pub json: bool,

    /// The bench's own daemon: `plain`, `secure` (TLS on both ports and an auth file; the
    /// clients send a token over TLS), or `both` (a plain and a secure daemon side by side,
    /// loaded in turns of `--turn`: plain, secure, secure, plain, ...; the secure throughput is
    /// reported as a ratio to the plain one). Not for `sweep` and `growth`, which read the admin
    /// port.
    #[arg(long, env = "SESSION_BROKER_BENCH_SECURITY", value_enum, default_value_t = Security::Plain)]
    pub security: Security,

    /// With `--security both`: length of each turn. Each daemon gets `--warmup` and then
    /// `--duration` of turns in all.
    #[arg(long, env = "SESSION_BROKER_BENCH_TURN", default_value = "500ms", value_parser = parse_duration)]
    pub turn: Duration,

    /// Extra flags for the daemons the bench starts itself, space-separated or repeated, e.g.
    /// `--daemon-arg=--journal-commit-delay=0`.
    #[arg(
        long = "daemon-arg",
        env = "SESSION_BROKER_BENCH_DAEMON_ARGS",
        value_name = "FLAG",
        allow_hyphen_values = true,
        value_delimiter = ' '
    )]
    pub daemon_args: Vec<String>,

    /// An A/B run: each scenario also gets a second daemon with these flags added
    /// (space-separated or repeated, e.g. `--versus-arg=--journal-commit-delay=0`), loaded in
    /// turns with the first like `--security both`; its rows are `<scenario>+versus`, with
    /// throughput and p99 as ratios to the first daemon's. Not with `--security`, `sweep` or `growth`.
    #[arg(
        long = "versus-arg",
        env = "SESSION_BROKER_BENCH_VERSUS_ARGS",
        value_name = "FLAG",
        allow_hyphen_values = true,
        value_delimiter = ' '
    )]
    pub versus_args: Vec<String>,

    /// An A/B run of two builds: the second daemon is this `session-broker` binary (a copy of
    /// another build) instead of the bench's own, with `--versus-arg` flags if any; loaded in
    /// turns like `--versus-arg`.
    #[arg(
        long = "versus-binary",
        env = "SESSION_BROKER_BENCH_VERSUS_BINARY",
        value_name = "PATH"
    )]
    pub versus_binary: Option<std::path::PathBuf>,

    /// Token and TLS settings for `--target`.
    #[command(flatten)]
    pub credentials: crate::cli::Credentials,
}

impl BenchArgs {
    /// Whether each scenario runs against two daemons in turns: `--versus-arg` or
    /// `--versus-binary`.
    fn is_ab_run(&self) -> bool {
        !self.versus_args.is_empty() || self.versus_binary.is_some()
    }
}

/// See [`BenchArgs::security`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Security {
    Plain,
    Secure,
    Both,
}

/// One scenario's figures as reported.
fn report(scenario: Scenario, out: &Outcome, echo: Option<&Outcome>) -> Value {
    let w = &out.window;
    let mut v = Map::new();
    v.insert("scenario".into(), json!(scenario.name()));
    v.insert("calls".into(), json!(w.ops));
    v.insert("seconds".into(), json!(w.seconds));
    v.insert("calls_per_sec".into(), json!(w.ops_per_sec()));
    v.insert(
        "throughput_vs_echo".into(),
        json!(echo.map(|e| w.ops_per_sec() / e.window.ops_per_sec().max(f64::MIN_POSITIVE))),
    );
    v.insert(
        "latency_us".into(),
        json!({
            "p50": w.quantile_us(0.5),
            "p90": w.quantile_us(0.9),
            "p99": w.quantile_us(0.99),
            "p99_9": w.quantile_us(0.999),
            "max": w.latency.max() as f64 / 1000.0,
        }),
    );
    v.insert(
        "p99_vs_echo".into(),
        json!(echo.map(|e| w.quantile_us(0.99) / e.window.quantile_us(0.99).max(f64::MIN_POSITIVE))),
    );
    v.insert("errors".into(), json!(w.errors));
    if let Some(e) = &w.last_error {
        v.insert("last_error".into(), json!(e));
    }
    v.extend(out.extra.clone());
    Value::Object(v)
}

/// Which of a scenario's daemons a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The bench's own daemon as configured (or `--target`).
    Base,
    /// `--security secure|both`: TLS on both ports and an auth file.
    Secure,
    /// `--versus-arg`: the second daemon of an A/B run.
    Versus,
}

/// A report row's name: the scenario, `+secure` on a secure daemon, `+versus` on an A/B run's
/// second daemon.
fn label(s: Scenario, variant: Variant) -> String {
    match variant {
        Variant::Base => s.name(),
        Variant::Secure => format!("{}+secure", s.name()),
        Variant::Versus => format!("{}+versus", s.name()),
    }
}

/// Rejects flag values no run can use, before anything starts.
fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    if args.security != Security::Plain {
        if args.target.is_some() {
            anyhow::bail!("--security secure|both starts its own daemons: not with --target (give --token/--tls-ca for a secured target)");
        }
        if args
            .scenario
            .iter()
            .any(|s| matches!(s, Scenario::Sweep | Scenario::Growth))
        {
            anyhow::bail!("--security secure|both: not for sweep and growth (they read the admin port over plain HTTP)");
        }
    }
    if args.is_ab_run() {
        if args.target.is_some() || args.security != Security::Plain {
            anyhow::bail!(
                "--versus-arg and --versus-binary start two plain daemons of their own: not with --target or --security"
            );
        }
        if args
            .scenario
            .iter()
            .any(|s| matches!(s, Scenario::Sweep | Scenario::Growth))
        {
            anyhow::bail!(
                "--versus-arg, --versus-binary: not for sweep and growth (they do not take turns)"
            );
        }
    }
    if let Some(binary) = &args.versus_binary {
        if !binary.is_file() {
            anyhow::bail!("--versus-binary {}: no such file", binary.display());
        }
    }
    if args.target.is_some() && !args.daemon_args.is_empty() {
        anyhow::bail!("--daemon-arg is for the bench's own daemons: not with --target");
    }
    use crate::domain::limits::PLAYER_DATA_MAX;
    if args.concurrency == 0 || args.connections == 0 {
        anyhow::bail!("--concurrency and --connections must be at least 1");
    }
    if args.game_sessions == Some(0) || args.fleet_game_sessions == 0 {
        anyhow::bail!("--game-sessions and --fleet-game-sessions must be at least 1");
    }
    if args.player_data_bytes > PLAYER_DATA_MAX {
        anyhow::bail!("--player-data-bytes: at most {PLAYER_DATA_MAX} (the daemon's limit)");
    }
    if args.growth_steps.contains(&0) {
        anyhow::bail!("--growth-steps: every step must be at least 1 session");
    }
    if args.turn < Duration::from_millis(10) {
        anyhow::bail!("--turn: at least 10ms");
    }
    if args.sweep_timeout < Duration::from_secs(1) {
        anyhow::bail!("--sweep-timeout: at least 1s");
    }
    Ok(())
}

/// The scenarios to run, in order, with `echo` first.
fn plan(requested: &[Scenario]) -> Vec<Scenario> {
    let mut plan = vec![Scenario::Echo];
    for s in requested {
        let expanded: &[Scenario] = match s {
            Scenario::All => &[
                Scenario::Reserve,
                Scenario::Cycle,
                Scenario::Batch,
                Scenario::Describe,
                Scenario::Mixed,
                Scenario::Place,
                Scenario::Search,
            ],
            other => std::slice::from_ref(other),
        };
        for e in expanded {
            if !plan.contains(e) {
                plan.push(*e);
            }
        }
    }
    plan
}

/// Runs one daemon scenario against `--target`, or against a fresh daemon of its own (secured
/// with `files`, with `versus` flags added), measuring in `turn`'s slices if given.
async fn run_daemon_scenario(
    args: &BenchArgs,
    scenario: Scenario,
    files: Option<&secure::Secure>,
    versus: bool,
    turn: Option<load::Turn>,
) -> anyhow::Result<Outcome> {
    // A fresh daemon per scenario, so one's sessions and timers do not load the next.
    let own = match &args.target {
        Some(_) => None,
        None => {
            let mut extra: Vec<&str> = args.daemon_args.iter().map(String::as_str).collect();
            if versus {
                extra.extend(args.versus_args.iter().map(String::as_str));
            }
            let binary = versus.then_some(args.versus_binary.as_deref()).flatten();
            Some(OwnServer::daemon(&args.data_dir, args.durability, &extra, files, binary).await?)
        }
    };
    let url = args
        .target
        .clone()
        .or_else(|| own.as_ref().map(|s| s.grpc.clone()))
        .expect("one of the two");
    let admin = args.admin_target.or(own.as_ref().and_then(|s| s.admin));
    let credentials = files.map_or(&args.credentials, |f| &f.credentials);
    let mut ctx = Ctx::connect(args, &url, admin, credentials).await?;
    ctx.turn = turn;
    let outcome = scenarios::run(scenario, &ctx).await;
    if own.is_none() {
        ctx.clean_up().await;
    }
    outcome
}

/// Runs `session-broker bench`.
pub async fn main(args: BenchArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let plan = plan(&args.scenario);
    if plan.contains(&Scenario::Sweep) && args.target.is_some() && args.admin_target.is_none() {
        anyhow::bail!("--scenario sweep with --target reads fleet counts from the admin port: give --admin-target");
    }
    let own_echo = match &args.echo_target {
        Some(_) => None,
        None => Some(OwnServer::echo().await?),
    };
    let echo_url = args
        .echo_target
        .clone()
        .or_else(|| own_echo.as_ref().map(|s| s.grpc.clone()))
        .expect("one of the two");
    let secure_files = match args.security {
        Security::Plain => None,
        _ => Some(secure::Secure::make(&args.data_dir.join(format!(
            "session-broker-bench-tls-{}",
            uuid::Uuid::new_v4()
        )))?),
    };
    let mut outcomes: Vec<(Scenario, Variant, Outcome)> = Vec::new();
    for scenario in plan {
        let done: Vec<(Variant, Outcome)> = if scenario == Scenario::Echo {
            vec![(Variant::Base, scenarios::echo(&args, &echo_url).await?)]
        } else {
            match (args.security, &secure_files) {
                // Both daemons at once, taking turns (see `load::Turns`).
                (Security::Both, Some(files)) => {
                    let [plain_turn, secure_turn] = load::Turns::pair(args.turn);
                    let (plain, secure) = tokio::try_join!(
                        run_daemon_scenario(&args, scenario, None, false, Some(plain_turn)),
                        run_daemon_scenario(&args, scenario, Some(files), false, Some(secure_turn)),
                    )?;
                    vec![(Variant::Base, plain), (Variant::Secure, secure)]
                }
                _ if args.is_ab_run() => {
                    let [base_turn, versus_turn] = load::Turns::pair(args.turn);
                    let (base, versus) = tokio::try_join!(
                        run_daemon_scenario(&args, scenario, None, false, Some(base_turn)),
                        run_daemon_scenario(&args, scenario, None, true, Some(versus_turn)),
                    )?;
                    vec![(Variant::Base, base), (Variant::Versus, versus)]
                }
                (_, files) => vec![(
                    if files.is_some() {
                        Variant::Secure
                    } else {
                        Variant::Base
                    },
                    run_daemon_scenario(&args, scenario, files.as_ref(), false, None).await?,
                )],
            }
        };
        for (variant, outcome) in done {
            if !args.json {
                eprintln!(
                    "{:<9} done: {:.0} calls/s",
                    label(scenario, variant),
                    outcome.window.ops_per_sec()
                );
            }
            outcomes.push((scenario, variant, outcome));
        }
    }
    if let Some(f) = &secure_files {
        if let Some(dir) = f.cert.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let echo = outcomes
        .iter()
        .find(|(s, _, _)| *s == Scenario::Echo)
        .map(|(_, _, o)| o);
    let reserve = outcomes
        .iter()
        .find(|(s, variant, _)| *s == Scenario::Reserve && *variant == Variant::Base)
        .map(|(_, _, o)| o);
    let mut reports: Vec<Value> = outcomes
        .iter()
        .map(|(s, variant, o)| {
            let mut r = report(*s, o, echo);
            r["scenario"] = json!(label(*s, *variant));
            r["secure"] = json!(*variant == Variant::Secure);
            // A secure or versus run against the first daemon's run of the same scenario.
            let plain = outcomes
                .iter()
                .find(|(s2, v2, _)| s2 == s && *v2 == Variant::Base)
                .map(|(_, _, p)| p);
            if let (true, Some(p)) = (*variant != Variant::Base, plain) {
                r["throughput_vs_plain"] =
                    json!(o.window.ops_per_sec() / p.window.ops_per_sec().max(f64::MIN_POSITIVE));
                r["p99_vs_plain"] = json!(
                    o.window.quantile_us(0.99) / p.window.quantile_us(0.99).max(f64::MIN_POSITIVE)
                );
            }
            r
        })
        .collect();
    // The matchmaker's calls are compared with CreatePlayerSession's latency.
    if let Some(reserve) = reserve {
        for (r, (s, _, o)) in reports.iter_mut().zip(&outcomes) {
            if matches!(s, Scenario::Place | Scenario::Search) {
                for (key, q) in [("p50_vs_reserve", 0.5), ("p99_vs_reserve", 0.99)] {
                    let x = o.window.quantile_us(q)
                        / reserve.window.quantile_us(q).max(f64::MIN_POSITIVE);
                    r[key] = json!(x);
                }
            }
        }
    }
    let run = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "target": args.target.clone().unwrap_or_else(|| "own daemon".into()),
        "durability": if args.target.is_some() { "target's".into() } else { format!("{:?}", args.durability).to_lowercase() },
        "connections": args.connections,
        "concurrency": args.concurrency,
        "duration_secs": args.duration.as_secs_f64(),
        "warmup_secs": args.warmup.as_secs_f64(),
        "player_data_bytes": args.player_data_bytes,
        "security": format!("{:?}", args.security).to_lowercase(),
        "turn_secs": (args.security == Security::Both || args.is_ab_run()).then_some(args.turn.as_secs_f64()),
        "daemon_args": args.daemon_args,
        "versus_args": args.versus_args,
        "versus_binary": args.versus_binary,
        "scenarios": reports,
    });
    if args.json {
        println!("{run}");
    } else {
        print!("{}", table(&run));
    }
    Ok(())
}

/// The human-readable report: ratios first, absolute figures beside them.
fn table(run: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "session-broker bench: {} cores, target {}, durability {}, {} connections, concurrency {}, {} s per scenario",
        run["cores"], run["target"].as_str().unwrap_or(""), run["durability"].as_str().unwrap_or(""),
        run["connections"], run["concurrency"], run["duration_secs"]
    );
    let _ = writeln!(
        s,
        "{:<14} {:>8} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "scenario",
        "vs echo",
        "p99 vs echo",
        "calls/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "errors"
    );
    let empty = Vec::new();
    for r in run["scenarios"].as_array().unwrap_or(&empty) {
        let ms = |q: &str| r["latency_us"][q].as_f64().unwrap_or(0.0) / 1000.0;
        let ratio = |k: &str| r[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
        let _ = writeln!(
            s,
            "{:<14} {:>8} {:>11} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            r["scenario"].as_str().unwrap_or(""),
            ratio("throughput_vs_echo"),
            ratio("p99_vs_echo"),
            r["calls_per_sec"].as_f64().unwrap_or(0.0),
            ms("p50"),
            ms("p90"),
            ms("p99"),
            ms("p99_9"),
            r["errors"],
        );
        if let Some(e) = r["last_error"].as_str() {
            let _ = writeln!(
                s,
                "          {} calls failed (calls/s counts successes only); last error: {e}",
                r["errors"]
            );
        }
        if let Some(x) = r["throughput_vs_plain"].as_f64() {
            let what = if r["secure"].as_bool() == Some(true) {
                "with auth + TLS"
            } else {
                "the versus daemon (--versus-arg, --versus-binary)"
            };
            let p99 = r["p99_vs_plain"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                s,
                "          {what}: {x:.2}x the first daemon's calls/s, {p99:.2}x its p99"
            );
        }
        match r["scenario"].as_str() {
            Some("sweep") => {
                let _ = writeln!(
                    s,
                    "          {} reservations, deadlines spread over {:.2} s: last TIMEDOUT {:+.3} s from the last deadline (every timeout fired at most {} s late); cycle p99 {:.3} ms during the burst vs {:.3} ms before ({:.2}x)",
                    r["sweep_sessions"], r["deadline_spread_secs"].as_f64().unwrap_or(0.0),
                    r["all_timed_out_after_last_deadline_secs"].as_f64().unwrap_or(0.0),
                    r["sweeper_lag_max_secs_at_most"],
                    r["cycle_p99_during_us"].as_f64().unwrap_or(0.0) / 1000.0,
                    r["cycle_p99_before_us"].as_f64().unwrap_or(0.0) / 1000.0,
                    r["cycle_p99_burst_ratio"].as_f64().unwrap_or(0.0),
                );
            }
            Some("place" | "search") if r["p50_vs_reserve"].is_number() => {
                let _ = writeln!(
                    s,
                    "          latency vs reserve: p50 {:.2}x, p99 {:.2}x",
                    r["p50_vs_reserve"].as_f64().unwrap_or(0.0),
                    r["p99_vs_reserve"].as_f64().unwrap_or(0.0),
                );
            }
            Some("growth") => {
                for step in r["steps"].as_array().unwrap_or(&empty) {
                    let _ = writeln!(
                        s,
                        "          {:>9} live sessions: cycle {:>8.0} calls/s, p50 {:.3} ms, p99 {:.3} ms, RSS growth {} bytes/session",
                        step["live_sessions"], step["cycle_calls_per_sec"].as_f64().unwrap_or(0.0),
                        step["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
                        step["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
                        step["rss_growth_per_session_bytes"].as_f64().map_or("-".into(), |b| format!("{b:.0}")),
                    );
                }
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        <Cli as clap::Parser>::parse_from(argv).bench
    }

    #[test]
    fn unusable_flags_are_rejected_with_the_flag_named() {
        validate(&args(&[])).unwrap();
        for (flags, named) in [
            (&["--game-sessions", "0"][..], "--game-sessions"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--player-data-bytes", "5000"][..], "--player-data-bytes"),
            (&["--growth-steps", "0,10"][..], "--growth-steps"),
            (&["--sweep-timeout", "500ms"][..], "--sweep-timeout"),
        ] {
            let err = validate(&args(flags)).unwrap_err().to_string();
            assert!(err.contains(named), "{flags:?}: {err}");
        }
    }

    #[test]
    fn reserving_scenarios_get_seats_for_the_whole_run() {
        use scenarios::{game_sessions, BATCH_SEATS_PER_SEC, RESERVE_SEATS_PER_SEC};
        let default = args(&[]);
        assert_eq!(
            game_sessions(&default, 1, 0.0),
            1000,
            "cycle frees its seats"
        );
        // 12 s at 150,000 reservations/s: 1.8M seats in game sessions of 1000.
        assert_eq!(game_sessions(&default, 1, RESERVE_SEATS_PER_SEC), 1800);
        assert_eq!(game_sessions(&default, 4, BATCH_SEATS_PER_SEC), 6000);
        let long = args(&["--duration", "30s"]);
        assert_eq!(game_sessions(&long, 1, RESERVE_SEATS_PER_SEC), 4800);
        let short = args(&["--duration", "1s", "--warmup", "0s"]);
        assert_eq!(
            game_sessions(&short, 1, RESERVE_SEATS_PER_SEC),
            1000,
            "at least"
        );
        let told = args(&["--game-sessions", "20", "--duration", "60s"]);
        assert_eq!(
            game_sessions(&told, 1, RESERVE_SEATS_PER_SEC),
            20,
            "as told"
        );
        assert_eq!(game_sessions(&told, 4, BATCH_SEATS_PER_SEC), 80);
    }

    #[test]
    fn plan_runs_echo_first_and_expands_all_once() {
        assert_eq!(
            plan(&[Scenario::Cycle, Scenario::All]),
            vec![
                Scenario::Echo,
                Scenario::Cycle,
                Scenario::Reserve,
                Scenario::Batch,
                Scenario::Describe,
                Scenario::Mixed,
                Scenario::Place,
                Scenario::Search
            ]
        );
        assert_eq!(plan(&[Scenario::Echo]), vec![Scenario::Echo]);
    }
}
