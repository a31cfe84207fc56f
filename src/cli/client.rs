//! Client subcommands: thin wrappers over the generated tonic clients.

use std::collections::HashMap;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tonic::transport::{Channel, Endpoint};

use super::{output, CALL_TIMEOUT};
use crate::proto::{
    self, game_session_service_client::GameSessionServiceClient,
    player_session_service_client::PlayerSessionServiceClient,
};

/// Where and how the client talks to the daemon.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// gRPC address of the daemon.
    #[arg(
        long,
        global = true,
        env = "SESSION_BROKER_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,

    /// Print JSON instead of tables.
    #[arg(long, global = true, env = "SESSION_BROKER_JSON")]
    pub json: bool,

    #[command(flatten)]
    pub credentials: Credentials,
}

#[derive(Debug, Subcommand)]
pub enum GameSessionsCmd {
    /// Register a new game session.
    Register {
        #[arg(long)]
        fleet_id: String,
        /// Custom id (1-48 of [a-zA-Z0-9-]); generated when omitted.
        #[arg(long, default_value = "")]
        game_session_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        ip_address: String,
        #[arg(long, default_value_t = 0)]
        port: u32,
        /// Seats (1-1000).
        #[arg(long)]
        max_players: u32,
        /// A label as KEY=VALUE; repeatable.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        release: String,
        #[arg(long, default_value = "")]
        environment: String,
        /// 0 = the daemon default.
        #[arg(long, default_value_t = 0)]
        reservation_timeout_seconds: u32,
        /// 0 = no heartbeats expected.
        #[arg(long, default_value_t = 0)]
        heartbeat_timeout_seconds: u32,
    },
    /// Show one game session.
    Get { game_session_id: String },
    /// Send a heartbeat for a game session.
    Heartbeat { game_session_id: String },
    /// Change capacity and/or creation policy.
    Update {
        game_session_id: String,
        #[arg(long)]
        max_players: Option<u32>,
        #[arg(long, value_enum)]
        policy: Option<Policy>,
    },
    /// End a game session (its live player sessions complete).
    End {
        game_session_id: String,
        /// End in ERROR instead of TERMINATED.
        #[arg(long)]
        crashed: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Policy {
    AcceptAll,
    DenyAll,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Reserved,
    Active,
    Completed,
    Timedout,
}

#[derive(Debug, Subcommand)]
pub enum PlayerSessionsCmd {
    /// Reserve seats for one or more players (all or none).
    Reserve {
        #[arg(long)]
        game_session_id: String,
        /// Player ids (1-25).
        #[arg(required = true)]
        player_ids: Vec<String>,
        /// Player data as PLAYER_ID=DATA; repeatable.
        #[arg(long = "player-data", value_parser = parse_key_value)]
        player_data: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Validate a reserved player (RESERVED -> ACTIVE).
    Accept {
        #[arg(long)]
        game_session_id: String,
        player_session_id: String,
    },
    /// Remove a player (-> COMPLETED).
    Remove {
        #[arg(long)]
        game_session_id: String,
        player_session_id: String,
    },
    /// List player sessions by game session, player or player session.
    List {
        #[arg(long, default_value = "")]
        game_session_id: String,
        #[arg(long, default_value = "")]
        player_id: String,
        #[arg(long, default_value = "")]
        player_session_id: String,
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Page size (1-1024; default 50).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long, default_value = "")]
        page_token: String,
        /// Follow page tokens and print every page.
        #[arg(long)]
        all: bool,
    },
}

pub(super) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// The token and TLS settings of a client (the CLI, the bench).
#[derive(Debug, Clone, Default, Args)]
pub struct Credentials {
    /// Bearer token sent with every call (prefer the environment variable).
    #[arg(
        long,
        global = true,
        env = "SESSION_BROKER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// CA certificate (PEM) to verify the daemon's TLS certificate; use an https:// address.
    #[arg(long, global = true, env = "SESSION_BROKER_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for mutual TLS; needs --tls-client-key.
    #[arg(long, global = true, env = "SESSION_BROKER_TLS_CLIENT_CERT")]
    pub tls_client_cert: Option<std::path::PathBuf>,

    /// Client private key (PEM) for mutual TLS.
    #[arg(long, global = true, env = "SESSION_BROKER_TLS_CLIENT_KEY")]
    pub tls_client_key: Option<std::path::PathBuf>,

    /// The name the daemon's certificate must carry (default: the address's host).
    #[arg(long, global = true, env = "SESSION_BROKER_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

impl Credentials {
    /// The endpoint of `url` with these TLS settings.
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("invalid server address {url:?}"))?;
        if url.starts_with("https://") || self.tls_ca.is_some() {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.tls_ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(c), Some(k)) = (&self.tls_client_cert, &self.tls_client_key) {
                let cert = std::fs::read(c)
                    .with_context(|| format!("cannot read --tls-client-cert {}", c.display()))?;
                let key = std::fs::read(k)
                    .with_context(|| format!("cannot read --tls-client-key {}", k.display()))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint)
    }

    /// The interceptor adding `authorization: Bearer <token>` (nothing without a token).
    pub fn bearer(&self) -> anyhow::Result<Bearer> {
        Ok(Bearer(
            self.token
                .as_deref()
                .map(|t| format!("Bearer {}", t.trim()).parse())
                .transpose()
                .context("--token holds characters a header cannot carry")?,
        ))
    }
}

/// Adds the caller's bearer token to every request.
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client connection: a channel with the caller's token.
pub type Conn = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// Connects to the daemon; `timeout` bounds every call (not for streams that last).
pub(super) async fn channel(args: &ClientArgs, timeout: bool) -> anyhow::Result<Conn> {
    let mut endpoint = args
        .credentials
        .endpoint(&args.server)?
        .connect_timeout(CALL_TIMEOUT);
    if timeout {
        endpoint = endpoint.timeout(CALL_TIMEOUT);
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        args.credentials.bearer()?,
    ))
}

/// Prints every message of a server stream until it ends or Ctrl-C.
pub(super) async fn follow<T>(
    mut stream: tonic::Streaming<T>,
    mut print: impl FnMut(&T),
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            m = stream.message() => match m.map_err(status_error)? {
                Some(e) => print(&e),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Fetches one page (from `page_token`), or every page with `all`; returns the items and the
/// token of the page after the last one fetched.
pub(super) async fn pages<T, F, Fut>(
    mut page_token: String,
    all: bool,
    mut fetch: F,
) -> anyhow::Result<(Vec<T>, String)>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    loop {
        let (page, next) = fetch(page_token).await.map_err(status_error)?;
        items.extend(page);
        if !all || next.is_empty() {
            return Ok((items, next));
        }
        page_token = next;
    }
}

pub(super) fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Runs a `game-sessions` subcommand.
pub async fn game_sessions(args: ClientArgs, cmd: GameSessionsCmd) -> anyhow::Result<()> {
    let mut c = GameSessionServiceClient::new(channel(&args, true).await?);
    let g = match cmd {
        GameSessionsCmd::Register {
            fleet_id,
            game_session_id,
            name,
            ip_address,
            port,
            max_players,
            labels,
            release,
            environment,
            reservation_timeout_seconds,
            heartbeat_timeout_seconds,
        } => {
            c.register_game_session(proto::RegisterGameSessionRequest {
                fleet_id,
                game_session_id,
                name,
                ip_address,
                port,
                maximum_player_session_count: max_players,
                labels: labels.into_iter().collect(),
                release,
                environment,
                reservation_timeout_seconds,
                heartbeat_timeout_seconds,
            })
            .await
        }
        GameSessionsCmd::Get { game_session_id } => {
            c.get_game_session(proto::GetGameSessionRequest { game_session_id })
                .await
        }
        GameSessionsCmd::Heartbeat { game_session_id } => {
            c.heartbeat(proto::HeartbeatRequest { game_session_id })
                .await
        }
        GameSessionsCmd::Update {
            game_session_id,
            max_players,
            policy,
        } => {
            c.update_game_session(proto::UpdateGameSessionRequest {
                game_session_id,
                maximum_player_session_count: max_players,
                player_session_creation_policy: policy.map(|p| match p {
                    Policy::AcceptAll => proto::PlayerSessionCreationPolicy::AcceptAll as i32,
                    Policy::DenyAll => proto::PlayerSessionCreationPolicy::DenyAll as i32,
                }),
            })
            .await
        }
        GameSessionsCmd::End {
            game_session_id,
            crashed,
            reason,
        } => {
            c.end_game_session(proto::EndGameSessionRequest {
                game_session_id,
                crashed,
                reason,
            })
            .await
        }
    }
    .map_err(status_error)?
    .into_inner();
    output::print_game_session(&g, args.json);
    Ok(())
}

/// Runs a `player-sessions` subcommand.
pub async fn player_sessions(args: ClientArgs, cmd: PlayerSessionsCmd) -> anyhow::Result<()> {
    let mut c = PlayerSessionServiceClient::new(channel(&args, true).await?);
    match cmd {
        PlayerSessionsCmd::Reserve {
            game_session_id,
            player_ids,
            player_data,
            idempotency_key,
        } => {
            let mut data: HashMap<String, String> = player_data.into_iter().collect();
            let sessions = if player_ids.len() == 1 {
                let player_id = player_ids[0].clone();
                let ps = c
                    .create_player_session(proto::CreatePlayerSessionRequest {
                        game_session_id,
                        player_data: data.remove(&player_id).unwrap_or_default(),
                        player_id,
                        idempotency_key,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                vec![ps]
            } else {
                c.create_player_sessions(proto::CreatePlayerSessionsRequest {
                    game_session_id,
                    player_ids,
                    player_data: data,
                    idempotency_key,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .player_sessions
            };
            output::print_player_sessions(&sessions, "", args.json);
        }
        PlayerSessionsCmd::Accept {
            game_session_id,
            player_session_id,
        } => {
            let ps = c
                .accept_player_session(proto::AcceptPlayerSessionRequest {
                    game_session_id,
                    player_session_id,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_player_sessions(&[ps], "", args.json);
        }
        PlayerSessionsCmd::Remove {
            game_session_id,
            player_session_id,
        } => {
            let ps = c
                .remove_player_session(proto::RemovePlayerSessionRequest {
                    game_session_id,
                    player_session_id,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_player_sessions(&[ps], "", args.json);
        }
        PlayerSessionsCmd::List {
            game_session_id,
            player_id,
            player_session_id,
            status,
            limit,
            page_token,
            all,
        } => {
            let status_filter = status.map_or(0, |s| {
                (match s {
                    StatusArg::Reserved => proto::PlayerSessionStatus::Reserved,
                    StatusArg::Active => proto::PlayerSessionStatus::Active,
                    StatusArg::Completed => proto::PlayerSessionStatus::Completed,
                    StatusArg::Timedout => proto::PlayerSessionStatus::Timedout,
                }) as i32
            });
            let (sessions, next) = pages(page_token, all, |page_token| {
                let mut c = c.clone();
                let request = proto::DescribePlayerSessionsRequest {
                    player_session_id: player_session_id.clone(),
                    game_session_id: game_session_id.clone(),
                    player_id: player_id.clone(),
                    status_filter,
                    limit,
                    page_token,
                };
                async move {
                    let r = c.describe_player_sessions(request).await?.into_inner();
                    Ok((r.player_sessions, r.next_page_token))
                }
            })
            .await?;
            output::print_player_sessions(&sessions, &next, args.json);
        }
    }
    Ok(())
}
