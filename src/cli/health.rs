//! `session-broker health ...`: session health from the command line (report an error, release
//! health of a build, the live update feed).

use clap::Subcommand;

use super::{
    client::{channel, follow, status_error, ClientArgs},
    output,
};
use crate::proto::{self, session_health_service_client::SessionHealthServiceClient};

#[derive(Debug, Subcommand)]
pub enum HealthCmd {
    /// Report an error for a RESERVED or ACTIVE player session (--crashed also ends it).
    ReportError {
        #[arg(long)]
        game_session_id: String,
        player_session_id: String,
        #[arg(long)]
        crashed: bool,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Crash-free rate and outcomes of one release (game build).
    Release {
        release: String,
        #[arg(long, default_value = "")]
        environment: String,
        #[arg(long, default_value = "")]
        fleet_id: String,
        /// Only sessions started in the last N seconds (0 = everything retained).
        #[arg(long, default_value_t = 0)]
        window_seconds: u32,
    },
    /// Print session health updates as they happen, until interrupted.
    Watch {
        #[arg(long, default_value = "")]
        fleet_id: String,
        #[arg(long, default_value = "")]
        release: String,
    },
}

/// Runs a `health` subcommand.
pub async fn health(args: ClientArgs, cmd: HealthCmd) -> anyhow::Result<()> {
    let timeout = !matches!(cmd, HealthCmd::Watch { .. });
    let mut c = SessionHealthServiceClient::new(channel(&args, timeout).await?);
    match cmd {
        HealthCmd::ReportError {
            game_session_id,
            player_session_id,
            crashed,
            message,
        } => {
            let ps = c
                .report_player_session_error(proto::ReportPlayerSessionErrorRequest {
                    game_session_id,
                    player_session_id,
                    crashed,
                    message,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_player_sessions(&[ps], "", args.json);
        }
        HealthCmd::Release {
            release,
            environment,
            fleet_id,
            window_seconds,
        } => {
            let h = c
                .get_release_health(proto::GetReleaseHealthRequest {
                    release,
                    environment,
                    fleet_id,
                    window_seconds,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_release_health(&h, args.json);
        }
        HealthCmd::Watch { fleet_id, release } => {
            let stream = c
                .watch_session_updates(proto::WatchSessionUpdatesRequest { fleet_id, release })
                .await
                .map_err(status_error)?
                .into_inner();
            follow(stream, |u| output::print_session_update(u, args.json)).await?;
        }
    }
    Ok(())
}
