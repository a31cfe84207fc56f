//! What each scenario sets up and what its workers call. Every worker runs a closed loop: its
//! next call starts when the previous one answered.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::cli::{Conn, Credentials};
use anyhow::{bail, Context};
use futures::{stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use serde_json::{json, Map, Value};

use super::{
    load::{Load, Recorder, Turn, Window},
    server::http_get,
    BenchArgs, Scenario,
};
use crate::{
    bench_proto::{echo_service_client::EchoServiceClient, EchoRequest},
    proto::{
        game_session_service_client::GameSessionServiceClient,
        player_session_service_client::PlayerSessionServiceClient, AcceptPlayerSessionRequest,
        CreatePlayerSessionRequest, CreatePlayerSessionsRequest, DescribePlayerSessionsRequest,
        EndGameSessionRequest, GetGameSessionRequest, PlayerSession, PlayerSessionStatus,
        RegisterGameSessionRequest, RemovePlayerSessionRequest,
    },
};

/// Seats per game session the bench registers (the daemon's maximum).
const SEATS: u32 = 1000;
/// Reservation timeout of game sessions whose reservations must outlive the run.
const LONG_TIMEOUT: u32 = 86_400;
/// Game sessions a scenario spreads over unless `--game-sessions` says otherwise.
const DEFAULT_GAME_SESSIONS: u64 = 1000;
/// Seats a second `reserve` keeps taken by default, over warm-up and measurement: 150,000
/// reservations, half again the fastest rate measured (~100,000 calls/s echo), so that no run
/// fills its game sessions. A full game session fails every later call, and the figures would
/// count a capacity limit instead of the daemon's speed.
pub(crate) const RESERVE_SEATS_PER_SEC: f64 = 150_000.0;
/// The same for `batch`: 20,000 calls of 25 players a second (5,800-7,400 measured here).
pub(crate) const BATCH_SEATS_PER_SEC: f64 = 500_000.0;
/// Live sessions the `describe` scenario reads from.
const DESCRIBE_SESSIONS: u64 = 10_000;

/// One scenario's outcome: the measured window plus scenario-specific figures.
pub(crate) struct Outcome {
    pub window: Window,
    pub extra: Map<String, Value>,
}

impl From<Window> for Outcome {
    fn from(window: Window) -> Self {
        Outcome {
            window,
            extra: Map::new(),
        }
    }
}

/// Connections to the daemon under test and what the run registered there.
pub(crate) struct Ctx {
    pub args: BenchArgs,
    pub channels: Vec<Conn>,
    pub admin: Option<std::net::SocketAddr>,
    /// Short unique tag of this run, in every id it creates.
    pub run: String,
    /// Player data of every reservation.
    pub data: String,
    registered: Mutex<Vec<String>>,
    /// Measure in this turn's slices only (`--security both`).
    pub turn: Option<Turn>,
}

impl Ctx {
    pub async fn connect(
        args: &BenchArgs,
        url: &str,
        admin: Option<std::net::SocketAddr>,
        credentials: &Credentials,
    ) -> anyhow::Result<Ctx> {
        Ok(Ctx {
            channels: connect(url, args.connections, credentials).await?,
            args: args.clone(),
            admin,
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            data: "x".repeat(args.player_data_bytes),
            registered: Mutex::new(Vec::new()),
            turn: None,
        })
    }

    fn channel(&self, worker: usize) -> Conn {
        self.channels[worker % self.channels.len()].clone()
    }

    fn players(&self, worker: usize) -> PlayerSessionServiceClient<Conn> {
        PlayerSessionServiceClient::new(self.channel(worker))
    }

    fn games(&self, worker: usize) -> GameSessionServiceClient<Conn> {
        GameSessionServiceClient::new(self.channel(worker))
    }

    fn fleet(&self, tag: &str) -> String {
        format!("bench-{}-{tag}", self.run)
    }

    /// Registers `n` game sessions of [`SEATS`] seats in fleet `bench-<run>-<tag>`.
    async fn register(
        &self,
        tag: &str,
        n: u64,
        timeout_secs: u32,
    ) -> anyhow::Result<Arc<Vec<String>>> {
        self.register_with(tag, n, |_, r| r.reservation_timeout_seconds = timeout_secs)
            .await
    }

    /// Registers `n` game sessions in fleet `bench-<run>-<tag>`; `shape(i, request)` adjusts
    /// the `i`-th registration (by default [`SEATS`] seats, no labels).
    async fn register_with(
        &self,
        tag: &str,
        n: u64,
        shape: impl Fn(u64, &mut RegisterGameSessionRequest),
    ) -> anyhow::Result<Arc<Vec<String>>> {
        let fleet = self.fleet(tag);
        let ids: Vec<String> = (0..n).map(|i| format!("b{}-{tag}-{i}", self.run)).collect();
        stream::iter(ids.iter().enumerate())
            .map(|(i, id)| {
                let mut client = self.games(i);
                let mut request = RegisterGameSessionRequest {
                    fleet_id: fleet.clone(),
                    game_session_id: id.clone(),
                    ip_address: "10.0.0.1".into(),
                    port: 7777,
                    maximum_player_session_count: SEATS,
                    release: "bench".into(),
                    environment: "bench".into(),
                    ..Default::default()
                };
                shape(i as u64, &mut request);
                async move { client.register_game_session(request).await }
            })
            .buffer_unordered(64)
            .try_for_each(|_| async { Ok(()) })
            .await
            .context("register the bench's game sessions")?;
        self.registered.lock().extend(ids.iter().cloned());
        Ok(Arc::new(ids))
    }

    /// Reserves seats `first..first + n` of `games` (seat `s` is in game `s / SEATS`) with
    /// CreatePlayerSessions calls of up to 25; returns up to `keep` player session ids.
    async fn preload(
        &self,
        games: &[String],
        first: u64,
        n: u64,
        keep: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut batches = Vec::new();
        let mut seat = first;
        while seat < first + n {
            let in_game = SEATS as u64 - seat % SEATS as u64;
            let len = 25.min(in_game).min(first + n - seat);
            batches.push((seat, len));
            seat += len;
        }
        let kept = Mutex::new(Vec::new());
        stream::iter(batches.into_iter().enumerate())
            .map(|(i, (seat, len))| {
                let mut client = self.players(i);
                let players: Vec<String> = (seat..seat + len)
                    .map(|s| format!("pre-{}-{s}", self.run))
                    .collect();
                let request = CreatePlayerSessionsRequest {
                    game_session_id: games[(seat / SEATS as u64) as usize].clone(),
                    player_data: players
                        .iter()
                        .map(|p| (p.clone(), self.data.clone()))
                        .collect(),
                    player_ids: players,
                    idempotency_key: String::new(),
                };
                let kept = &kept;
                async move {
                    let reply = client.create_player_sessions(request).await?.into_inner();
                    let mut kept = kept.lock();
                    for ps in reply.player_sessions {
                        if kept.len() < keep {
                            kept.push(ps.player_session_id);
                        }
                    }
                    Ok::<_, tonic::Status>(())
                }
            })
            .buffer_unordered(self.args.concurrency.max(1))
            .try_for_each(|_| async { Ok(()) })
            .await
            .context("preload reservations")?;
        Ok(kept.into_inner())
    }

    /// Ends every game session this run registered (when loading a shared `--target`).
    pub async fn clean_up(&self) {
        let ids = std::mem::take(&mut *self.registered.lock());
        stream::iter(ids.into_iter().enumerate())
            .for_each_concurrent(64, |(i, id)| {
                let mut client = self.games(i);
                async move {
                    let _ = client
                        .end_game_session(EndGameSessionRequest {
                            game_session_id: id,
                            crashed: false,
                            reason: "bench finished".into(),
                        })
                        .await;
                }
            })
            .await;
    }

    fn load<F, Fut>(&self, label: &str, windows: usize, worker: F) -> Load
    where
        F: FnMut(usize, Recorder) -> Fut,
        Fut: std::future::Future<Output = Recorder> + Send + 'static,
    {
        Load::start(
            label,
            self.args.concurrency,
            windows,
            !self.args.json && self.turn.is_none(),
            worker,
        )
        .with_turn(self.turn.clone())
    }

    /// Worker `w`'s seats over `games`; `tag` keeps player ids apart between scenarios.
    fn seats(&self, games: &Arc<Vec<String>>, w: usize, tag: &str) -> Seats {
        Seats {
            games: games.clone(),
            data: self.data.clone(),
            prefix: format!("{}-{tag}{w}", self.run),
            worker: w,
            concurrency: self.args.concurrency,
            i: 0,
        }
    }

    fn warmup(&self) -> Duration {
        self.args.warmup
    }

    /// See [`game_sessions`].
    fn game_sessions(&self, factor: u64, held_seats_per_sec: f64) -> u64 {
        game_sessions(&self.args, factor, held_seats_per_sec)
    }
}

/// Game sessions a scenario spreads over: `--game-sessions` times `factor`, or by default
/// [`DEFAULT_GAME_SESSIONS`] times `factor`. When the scenario's reservations keep their seats
/// to the end (`reserve`, `batch`), the default grows with the run, to enough seats for
/// `held_seats_per_sec` (0: the scenario frees its seats) over warm-up and measurement.
pub(crate) fn game_sessions(args: &BenchArgs, factor: u64, held_seats_per_sec: f64) -> u64 {
    if let Some(n) = args.game_sessions {
        return n.saturating_mul(factor);
    }
    let base = DEFAULT_GAME_SESSIONS * factor;
    let secs = (args.warmup + args.duration).as_secs_f64();
    base.max((secs * held_seats_per_sec / f64::from(SEATS)).ceil() as u64)
}

/// `n` HTTP/2 connections to `url`, with `credentials` (token, TLS).
pub(crate) async fn connect(
    url: &str,
    n: usize,
    credentials: &Credentials,
) -> anyhow::Result<Vec<Conn>> {
    let mut channels = Vec::new();
    for _ in 0..n.max(1) {
        let channel = credentials
            .endpoint(url)?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {url}"))?;
        channels.push(tonic::service::interceptor::InterceptedService::new(
            channel,
            credentials.bearer()?,
        ));
    }
    Ok(channels)
}

/// One worker's walk over the game sessions, and its player ids: the workers take turns over
/// all of them, so load spreads evenly and seats fill at the same pace.
struct Seats {
    games: Arc<Vec<String>>,
    /// Player data of every reservation.
    data: String,
    /// `<run>-<tag><worker>`: makes player ids unique in the run.
    prefix: String,
    worker: usize,
    concurrency: usize,
    /// Game sessions taken so far.
    i: usize,
}

impl Seats {
    /// The next game session (`games` is never empty: `--game-sessions` is at least 1).
    fn next_game(&mut self) -> String {
        let g = self.games[(self.worker + self.i * self.concurrency) % self.games.len()].clone();
        self.i += 1;
        g
    }

    /// The `k`-th player id for the last game session taken.
    fn player(&self, k: usize) -> String {
        format!("{}-{}-{k}", self.prefix, self.i)
    }
}

/// The CreatePlayerSession request every reserving scenario sends.
fn reserve_request(game: &str, player_id: String, data: &str) -> CreatePlayerSessionRequest {
    CreatePlayerSessionRequest {
        game_session_id: game.to_string(),
        player_id,
        player_data: data.to_string(),
        idempotency_key: String::new(),
    }
}

/// Request and reply sizes of a typical `reserve` call, for the echo baseline.
pub(crate) fn reserve_sizes(args: &BenchArgs) -> (usize, usize) {
    let data = "x".repeat(args.player_data_bytes);
    let game = "b0123abcd-reserve-999";
    let request = reserve_request(game, "0123abcd-63-123456".into(), &data);
    let reply = PlayerSession {
        player_session_id: format!("psess-{}", uuid::Uuid::nil()),
        player_id: request.player_id.clone(),
        game_session_id: game.into(),
        fleet_id: "bench-0123abcd-reserve".into(),
        creation_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 123_456_789,
        }),
        status: PlayerSessionStatus::Reserved as i32,
        ip_address: "10.0.0.1".into(),
        port: 7777,
        player_data: data.clone(),
        ..Default::default()
    };
    (request.encoded_len(), reply.encoded_len())
}

/// Runs one scenario against the daemon behind `ctx`.
pub(crate) async fn run(scenario: Scenario, ctx: &Ctx) -> anyhow::Result<Outcome> {
    match scenario {
        Scenario::Echo | Scenario::All => bail!("{scenario:?} is not a daemon scenario"),
        Scenario::Reserve => reserve(ctx).await,
        Scenario::Cycle => {
            let games = ctx
                .register("cycle", ctx.game_sessions(1, 0.0), LONG_TIMEOUT)
                .await?;
            let w = cycle_load(ctx, games, 1)
                .measure(ctx.warmup(), ctx.args.duration)
                .await?;
            let mut out = Outcome::from(w);
            out.extra.insert(
                "cycles_per_sec".into(),
                json!(out.window.ops_per_sec() / 3.0),
            );
            Ok(out)
        }
        Scenario::Batch => batch(ctx).await,
        Scenario::Describe => describe(ctx).await,
        Scenario::Mixed => mixed(ctx).await,
        Scenario::Place => place(ctx).await,
        Scenario::Search => search(ctx).await,
        Scenario::Sweep => sweep(ctx).await,
        Scenario::Growth => growth(ctx).await,
    }
}

/// The echo baseline: the same closed loop against the echo service, messages sized like
/// `reserve`'s.
pub(crate) async fn echo(args: &BenchArgs, url: &str) -> anyhow::Result<Outcome> {
    // The baseline of the plain stack: no token, no TLS (unless the echo target is https).
    let channels = connect(url, args.connections, &Credentials::default()).await?;
    let (request_size, reply_size) = reserve_sizes(args);
    // EchoRequest framing: 2-3 bytes of tags and lengths on top of the payload.
    let payload = vec![b'x'; request_size.saturating_sub(6)];
    let load = Load::start("echo", args.concurrency, 1, !args.json, |w, mut rec| {
        let mut client = EchoServiceClient::new(channels[w % channels.len()].clone());
        let payload = payload.clone();
        async move {
            while rec.running() {
                let request = EchoRequest {
                    payload: payload.clone(),
                    response_size: reply_size.saturating_sub(3) as u32,
                };
                rec.time(client.echo(request)).await;
            }
            rec
        }
    });
    let mut out = Outcome::from(load.measure(args.warmup, args.duration).await?);
    out.extra
        .insert("request_bytes".into(), json!(request_size));
    out.extra.insert("reply_bytes".into(), json!(reply_size));
    Ok(out)
}

/// `reserve`: CreatePlayerSession spread over many game sessions.
async fn reserve(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let games = ctx
        .register(
            "reserve",
            ctx.game_sessions(1, RESERVE_SEATS_PER_SEC),
            LONG_TIMEOUT,
        )
        .await?;
    let load = ctx.load("reserve", 1, |w, mut rec| {
        let mut client = ctx.players(w);
        let mut seats = ctx.seats(&games, w, "r");
        async move {
            while rec.running() {
                let game = seats.next_game();
                let request = reserve_request(&game, seats.player(0), &seats.data);
                rec.time(client.create_player_session(request)).await;
            }
            rec
        }
    });
    Ok(load.measure(ctx.warmup(), ctx.args.duration).await?.into())
}

/// `cycle` workers: reserve -> accept -> remove per player (the game-server path); records
/// every call. `windows` measurement windows.
fn cycle_load(ctx: &Ctx, games: Arc<Vec<String>>, windows: usize) -> Load {
    ctx.load("cycle", windows, |w, mut rec| {
        let mut client = ctx.players(w);
        let mut seats = ctx.seats(&games, w, "c");
        async move {
            while rec.running() {
                let game = seats.next_game();
                let request = reserve_request(&game, seats.player(0), &seats.data);
                let reserved = rec.time(client.create_player_session(request)).await;
                let Some(ps) = reserved else { continue };
                let accept = AcceptPlayerSessionRequest {
                    game_session_id: ps.game_session_id.clone(),
                    player_session_id: ps.player_session_id.clone(),
                };
                if rec
                    .time(client.accept_player_session(accept))
                    .await
                    .is_none()
                {
                    continue;
                }
                let remove = RemovePlayerSessionRequest {
                    game_session_id: ps.game_session_id,
                    player_session_id: ps.player_session_id,
                };
                rec.time(client.remove_player_session(remove)).await;
            }
            rec
        }
    })
}

/// `batch`: CreatePlayerSessions of 25 players.
async fn batch(ctx: &Ctx) -> anyhow::Result<Outcome> {
    // 25 seats a call: four times the game sessions of the single-seat scenarios.
    let games = ctx
        .register(
            "batch",
            ctx.game_sessions(4, BATCH_SEATS_PER_SEC),
            LONG_TIMEOUT,
        )
        .await?;
    let load = ctx.load("batch", 1, |w, mut rec| {
        let mut client = ctx.players(w);
        let mut seats = ctx.seats(&games, w, "b");
        async move {
            while rec.running() {
                let game = seats.next_game();
                let players: Vec<String> = (0..25).map(|k| seats.player(k)).collect();
                let request = CreatePlayerSessionsRequest {
                    game_session_id: game,
                    player_data: players
                        .iter()
                        .map(|p| (p.clone(), seats.data.clone()))
                        .collect::<HashMap<_, _>>(),
                    player_ids: players,
                    idempotency_key: String::new(),
                };
                rec.time(client.create_player_sessions(request)).await;
            }
            rec
        }
    });
    let mut out = Outcome::from(load.measure(ctx.warmup(), ctx.args.duration).await?);
    out.extra.insert(
        "player_sessions_per_sec".into(),
        json!(out.window.ops_per_sec() * 25.0),
    );
    Ok(out)
}

/// `describe`: DescribePlayerSessions by player_session_id over 10,000 live reservations.
async fn describe(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let games = ctx
        .register(
            "describe",
            DESCRIBE_SESSIONS.div_ceil(SEATS as u64),
            LONG_TIMEOUT,
        )
        .await?;
    let ids = Arc::new(
        ctx.preload(&games, 0, DESCRIBE_SESSIONS, usize::MAX)
            .await?,
    );
    let load = ctx.load("describe", 1, |w, mut rec| {
        let mut client = ctx.players(w);
        let ids = ids.clone();
        async move {
            let mut i = w * 7919;
            while rec.running() {
                let request = DescribePlayerSessionsRequest {
                    player_session_id: ids[i % ids.len()].clone(),
                    ..Default::default()
                };
                rec.time(client.describe_player_sessions(request)).await;
                i += 1;
            }
            rec
        }
    });
    Ok(load.measure(ctx.warmup(), ctx.args.duration).await?.into())
}

/// `mixed`: per five players, 20 calls: 5 CreatePlayerSession (25 %), 5 DescribePlayerSessions
/// by id (25 %: the server validating), 4 AcceptPlayerSession (20 %: one player never connects
/// and times out), 2 GetGameSession (10 %), 4 RemovePlayerSession (20 %). Game sessions use the
/// daemon's default reservation timeout, so the sweeper works during the run as in production.
async fn mixed(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let games = ctx.register("mixed", ctx.game_sessions(1, 0.0), 0).await?;
    let load = ctx.load("mixed", 1, |w, mut rec| {
        let mut players = ctx.players(w);
        let mut game_client = ctx.games(w);
        let mut seats = ctx.seats(&games, w, "m");
        async move {
            while rec.running() {
                let game = seats.next_game();
                let mut party = Vec::with_capacity(5);
                for k in 0..5 {
                    let request = reserve_request(&game, seats.player(k), &seats.data);
                    if let Some(ps) = rec.time(players.create_player_session(request)).await {
                        party.push(ps.player_session_id);
                    }
                }
                for id in &party {
                    let request = DescribePlayerSessionsRequest {
                        player_session_id: id.clone(),
                        ..Default::default()
                    };
                    rec.time(players.describe_player_sessions(request)).await;
                }
                for id in party.iter().take(4) {
                    let request = AcceptPlayerSessionRequest {
                        game_session_id: game.clone(),
                        player_session_id: id.clone(),
                    };
                    rec.time(players.accept_player_session(request)).await;
                }
                for _ in 0..2 {
                    let request = GetGameSessionRequest {
                        game_session_id: game.clone(),
                    };
                    rec.time(game_client.get_game_session(request)).await;
                }
                for id in party.iter().take(4) {
                    let request = RemovePlayerSessionRequest {
                        game_session_id: game.clone(),
                        player_session_id: id.clone(),
                    };
                    rec.time(players.remove_player_session(request)).await;
                }
            }
            rec
        }
    });
    Ok(load.measure(ctx.warmup(), ctx.args.duration).await?.into())
}

/// Label values of the matchmaking fleet, in turn.
const MODES: [&str; 4] = ["ctf", "dm", "duel", "koth"];

/// The fleet `place` and `search` work on: `--fleet-game-sessions` game sessions with 200 to
/// 1000 seats (varied, so the index orders them) and a `mode` label in turn.
async fn matchmaking_fleet(ctx: &Ctx, tag: &str) -> anyhow::Result<String> {
    ctx.register_with(tag, ctx.args.fleet_game_sessions, |i, r| {
        r.maximum_player_session_count = 200 + (i * 37 % 801) as u32;
        r.reservation_timeout_seconds = LONG_TIMEOUT;
        r.labels = [(
            "mode".to_string(),
            MODES[i as usize % MODES.len()].to_string(),
        )]
        .into();
    })
    .await?;
    Ok(ctx.fleet(tag))
}

/// `place`: PlacePlayerSessions of parties of 5 in one fleet of `--fleet-game-sessions` game
/// sessions; even workers PACKED, odd workers DISTRIBUTED.
async fn place(ctx: &Ctx) -> anyhow::Result<Outcome> {
    use crate::proto::{
        fleet_service_client::FleetServiceClient, PlacePlayerSessionsRequest, PlacementStrategy,
    };
    let fleet = matchmaking_fleet(ctx, "place").await?;
    let load = ctx.load("place", 1, |w, mut rec| {
        let mut client = FleetServiceClient::new(ctx.channel(w));
        let (fleet, data, run) = (fleet.clone(), ctx.data.clone(), ctx.run.clone());
        let strategy = if w % 2 == 0 {
            PlacementStrategy::Packed
        } else {
            PlacementStrategy::Distributed
        };
        async move {
            let mut i = 0usize;
            while rec.running() {
                let players: Vec<String> = (0..5).map(|k| format!("{run}-p{w}-{i}-{k}")).collect();
                let request = PlacePlayerSessionsRequest {
                    fleet_id: fleet.clone(),
                    player_data: players.iter().map(|p| (p.clone(), data.clone())).collect(),
                    player_ids: players,
                    strategy: strategy as i32,
                    ..Default::default()
                };
                rec.time(client.place_player_sessions(request)).await;
                i += 1;
            }
            rec
        }
    });
    Ok(load.measure(ctx.warmup(), ctx.args.duration).await?.into())
}

/// The filter `search` sends: about a fifth of the fleet matches.
pub(crate) const SEARCH_FILTER: &str =
    "hasAvailablePlayerSessions=true AND gameSessionProperties.mode='ctf' AND maximumSessions>=400";

/// `search`: SearchGameSessions with [`SEARCH_FILTER`], 20 per page, over one fleet of
/// `--fleet-game-sessions` game sessions; even workers use the default order (creation
/// time), odd workers `availablePlayerSessions DESC`.
async fn search(ctx: &Ctx) -> anyhow::Result<Outcome> {
    use crate::proto::{fleet_service_client::FleetServiceClient, SearchGameSessionsRequest};
    let fleet = matchmaking_fleet(ctx, "search").await?;
    let load = ctx.load("search", 1, |w, mut rec| {
        let mut client = FleetServiceClient::new(ctx.channel(w));
        let request = SearchGameSessionsRequest {
            fleet_id: fleet.clone(),
            filter_expression: SEARCH_FILTER.into(),
            sort_expression: if w % 2 == 0 {
                ""
            } else {
                "availablePlayerSessions DESC"
            }
            .into(),
            limit: 20,
            ..Default::default()
        };
        async move {
            while rec.running() {
                rec.time(client.search_game_sessions(request.clone())).await;
            }
            rec
        }
    });
    Ok(load.measure(ctx.warmup(), ctx.args.duration).await?.into())
}

/// Player-session counts of a fleet from the admin port: (reserved, timedout).
async fn fleet_counts(admin: std::net::SocketAddr, fleet: &str) -> anyhow::Result<(u64, u64)> {
    let (status, body) = http_get(admin, &format!("/v1/fleets/{fleet}")).await?;
    if status != 200 {
        bail!("GET /v1/fleets/{fleet}: HTTP {status}: {body}");
    }
    let v: Value = serde_json::from_str(&body)?;
    let n = |k: &str| v["player_sessions"][k].as_u64().unwrap_or(0);
    Ok((n("reserved"), n("timedout")))
}

/// `sweep`: `cycle` runs throughout; first a normal window, then `--sweep-sessions`
/// reservations are created in one burst with `--sweep-timeout` (10 s), and a second window covers their
/// deadlines until the admin port shows every one TIMEDOUT. Reports how long after the last
/// deadline the last one timed out, and `cycle`'s p99 during the burst against before it.
async fn sweep(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let timeout_secs = ctx
        .args
        .sweep_timeout
        .as_secs()
        .clamp(1, LONG_TIMEOUT as u64);
    let timeout = Duration::from_secs(timeout_secs);
    let Some(admin) = ctx.admin else {
        bail!("the sweep scenario reads fleet counts from the admin port: give --admin-target");
    };
    let n = ctx.args.sweep_sessions;
    let burst_games = ctx
        .register("sweep", n.div_ceil(SEATS as u64), timeout_secs as u32)
        .await?;
    let cycle_games = ctx
        .register("sweepcycle", ctx.game_sessions(1, 0.0), LONG_TIMEOUT)
        .await?;
    let load = cycle_load(ctx, cycle_games, 2);
    tokio::time::sleep(ctx.warmup()).await;
    load.set_window(1);
    tokio::time::sleep(ctx.args.duration).await;
    load.set_window(0);

    let first = tokio::time::Instant::now();
    ctx.preload(&burst_games, 0, n, 0).await?;
    let last = tokio::time::Instant::now();
    let spread = last - first;
    if spread + Duration::from_secs(1) > timeout {
        bail!("creating {n} reservations took {spread:?}, longer than their timeout; lower --sweep-sessions");
    }
    tokio::time::sleep_until(first + timeout - Duration::from_millis(500)).await;
    load.set_window(2);
    let fleet = ctx.fleet("sweep");
    let give_up = last + timeout + Duration::from_secs(60);
    let all_done = loop {
        let (reserved, timedout) = fleet_counts(admin, &fleet).await?;
        if reserved == 0 && timedout >= n {
            break tokio::time::Instant::now();
        }
        if tokio::time::Instant::now() > give_up {
            bail!("{reserved} of {n} reservations still RESERVED 60 s after their deadline");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut windows = load.finish().await?;
    let during = windows.pop().expect("two windows");
    let before = windows.pop().expect("two windows");
    // Signed: negative when the last reservation (created a moment before its reply
    // arrived) had already timed out when the client's view of the last deadline came.
    let lag = signed_secs(all_done, last + timeout);
    let p99_before = before.quantile_us(0.99);
    let p99_during = during.quantile_us(0.99);
    let mut out = Outcome::from(during);
    out.extra.insert("sweep_sessions".into(), json!(n));
    out.extra
        .insert("deadline_spread_secs".into(), json!(spread.as_secs_f64()));
    out.extra
        .insert("all_timed_out_after_last_deadline_secs".into(), json!(lag));
    out.extra.insert(
        "sweeper_lag_max_secs_at_most".into(),
        json!(sweeper_lag_bound(admin).await?),
    );
    out.extra.insert(
        "all_timed_out_after_first_deadline_secs".into(),
        json!(all_done
            .saturating_duration_since(first + timeout)
            .as_secs_f64()),
    );
    out.extra
        .insert("cycle_p99_before_us".into(), json!(p99_before));
    out.extra
        .insert("cycle_p99_during_us".into(), json!(p99_during));
    out.extra.insert(
        "cycle_p99_burst_ratio".into(),
        json!(p99_during / p99_before.max(1.0)),
    );
    Ok(out)
}

/// `a - b` in seconds, negative when `a` is earlier.
fn signed_secs(a: tokio::time::Instant, b: tokio::time::Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}

/// An upper bound of the latest any timeout fired, from the daemon's
/// `session_broker_sweeper_lag_seconds` histogram: the smallest bucket holding every sample.
async fn sweeper_lag_bound(admin: std::net::SocketAddr) -> anyhow::Result<Option<f64>> {
    let (_, body) = http_get(admin, "/metrics").await?;
    let prefix = "session_broker_sweeper_lag_seconds";
    let count: Option<f64> = body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{prefix}_count ")))
        .and_then(|v| v.trim().parse().ok());
    let Some(count) = count else { return Ok(None) };
    Ok(body.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("{prefix}_bucket{{le=\""))?;
        let (le, n) = rest.split_once("\"} ")?;
        let n: f64 = n.trim().parse().ok()?;
        (n >= count).then(|| le.parse::<f64>().unwrap_or(f64::INFINITY))
    }))
}

/// Resident memory of the daemon from its `/metrics` (`process_resident_memory_bytes`).
async fn daemon_rss(admin: std::net::SocketAddr) -> anyhow::Result<u64> {
    let (status, body) = http_get(admin, "/metrics").await?;
    if status != 200 {
        bail!("GET /metrics: HTTP {status}");
    }
    body.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no process_resident_memory_bytes in /metrics")
}

/// [`daemon_rss`] when there is an admin port to read it from.
async fn maybe_rss(admin: Option<std::net::SocketAddr>) -> anyhow::Result<Option<u64>> {
    match admin {
        Some(a) => Ok(Some(daemon_rss(a).await?)),
        None => Ok(None),
    }
}

/// `growth`: grows the live RESERVED sessions through `--growth-steps` (64-byte player data
/// by default) and runs `cycle` at each step: per-call cost must stay flat. RSS growth per
/// session is measured across the preloads only (not the cycle runs in between).
async fn growth(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let mut steps = ctx.args.growth_steps.clone();
    steps.sort_unstable();
    let top = *steps.last().context("--growth-steps is empty")?;
    let games = ctx
        .register("growth", top.div_ceil(SEATS as u64), LONG_TIMEOUT)
        .await?;
    let cycle_games = ctx
        .register("growthcycle", ctx.game_sessions(1, 0.0), LONG_TIMEOUT)
        .await?;
    let mut live = 0;
    let mut rss_growth: i64 = 0;
    let mut rows = Vec::new();
    let mut last = None;
    for step in steps {
        let before = maybe_rss(ctx.admin).await?;
        ctx.preload(&games, live, step - live, 0).await?;
        live = step;
        let after = maybe_rss(ctx.admin).await?;
        if let (Some(after), Some(before)) = (after, before) {
            rss_growth += after as i64 - before as i64;
        }
        let w = cycle_load(ctx, cycle_games.clone(), 1)
            .measure(ctx.warmup(), ctx.args.duration)
            .await?;
        let after_cycle = maybe_rss(ctx.admin).await?;
        rows.push(json!({
            "live_sessions": step,
            "cycle_calls_per_sec": w.ops_per_sec(),
            "p50_us": w.quantile_us(0.5),
            "p99_us": w.quantile_us(0.99),
            "rss_growth_per_session_bytes": ctx.admin.map(|_| rss_growth as f64 / step as f64),
            "rss_before_preload_bytes": before,
            "rss_after_preload_bytes": after,
            "rss_after_cycle_bytes": after_cycle,
        }));
        last = Some(w);
    }
    let mut out = Outcome::from(last.expect("at least one step"));
    out.extra.insert("steps".into(), Value::Array(rows));
    out.extra.insert(
        "player_data_bytes".into(),
        json!(ctx.args.player_data_bytes),
    );
    Ok(out)
}
