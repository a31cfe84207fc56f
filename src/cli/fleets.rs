//! `session-broker fleets ...`: the matchmaker's calls (search, utilization, place, watch).

use clap::{Subcommand, ValueEnum};

use super::{
    client::{channel, follow, pages, parse_key_value, status_error, ClientArgs},
    output,
};
use crate::proto::{self, fleet_service_client::FleetServiceClient};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    /// The fullest game session the party fits in.
    Packed,
    /// The emptiest game session.
    Distributed,
}

#[derive(Debug, Subcommand)]
pub enum FleetsCmd {
    /// Search a fleet's ACTIVE game sessions with a GameLift filter expression.
    Search {
        #[arg(long)]
        fleet_id: String,
        /// e.g. "maximumSessions>=10 AND hasAvailablePlayerSessions=true".
        #[arg(long, default_value = "")]
        filter: String,
        /// "<operand> ASC|DESC"; default: creation time.
        #[arg(long, default_value = "")]
        sort: String,
        /// Only game sessions with this label, as KEY=VALUE; repeatable.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        /// Page size (1-100; default 20).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long, default_value = "")]
        page_token: String,
        /// Follow page tokens and print every page.
        #[arg(long)]
        all: bool,
    },
    /// Seat counts per fleet (every fleet when none is given).
    Utilization {
        /// Fleet ids.
        fleet_ids: Vec<String>,
    },
    /// Reserve seats for a whole party in one matching game session.
    Place {
        #[arg(long)]
        fleet_id: String,
        /// Player ids (1-100).
        #[arg(required = true)]
        player_ids: Vec<String>,
        /// Player data as PLAYER_ID=DATA; repeatable.
        #[arg(long = "player-data", value_parser = parse_key_value)]
        player_data: Vec<(String, String)>,
        /// Only game sessions with this label, as KEY=VALUE; repeatable.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long, value_enum, default_value_t = StrategyArg::Packed)]
        strategy: StrategyArg,
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Print the fleet's game sessions, then every change, until interrupted.
    Watch {
        #[arg(long)]
        fleet_id: String,
        /// Only game sessions with this label, as KEY=VALUE; repeatable.
        #[arg(long = "label", value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
    },
}

/// Runs a `fleets` subcommand.
pub async fn fleets(args: ClientArgs, cmd: FleetsCmd) -> anyhow::Result<()> {
    // A watch lasts until interrupted: no per-call timeout for it.
    let timeout = !matches!(cmd, FleetsCmd::Watch { .. });
    let mut c = FleetServiceClient::new(channel(&args, timeout).await?);
    match cmd {
        FleetsCmd::Search {
            fleet_id,
            filter,
            sort,
            labels,
            limit,
            page_token,
            all,
        } => {
            let (games, next) = pages(page_token, all, |page_token| {
                let mut c = c.clone();
                let request = proto::SearchGameSessionsRequest {
                    fleet_id: fleet_id.clone(),
                    filter_expression: filter.clone(),
                    sort_expression: sort.clone(),
                    label_selector: labels.iter().cloned().collect(),
                    limit,
                    page_token,
                };
                async move {
                    let r = c.search_game_sessions(request).await?.into_inner();
                    Ok((r.game_sessions, r.next_page_token))
                }
            })
            .await?;
            output::print_game_sessions(&games, &next, args.json);
        }
        FleetsCmd::Utilization { fleet_ids } => {
            let r = c
                .describe_fleet_utilization(proto::DescribeFleetUtilizationRequest { fleet_ids })
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_utilization(&r.fleet_utilization, args.json);
        }
        FleetsCmd::Place {
            fleet_id,
            player_ids,
            player_data,
            labels,
            filter,
            strategy,
            idempotency_key,
        } => {
            let r = c
                .place_player_sessions(proto::PlacePlayerSessionsRequest {
                    fleet_id,
                    player_ids,
                    player_data: player_data.into_iter().collect(),
                    label_selector: labels.into_iter().collect(),
                    filter_expression: filter,
                    strategy: match strategy {
                        StrategyArg::Packed => proto::PlacementStrategy::Packed,
                        StrategyArg::Distributed => proto::PlacementStrategy::Distributed,
                    } as i32,
                    idempotency_key,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if let Some(g) = &r.game_session {
                if !args.json {
                    println!(
                        "placed in {} ({}:{}), {}/{} seats taken",
                        g.game_session_id,
                        g.ip_address,
                        g.port,
                        g.current_player_session_count,
                        g.maximum_player_session_count
                    );
                }
            }
            output::print_player_sessions(&r.player_sessions, "", args.json);
        }
        FleetsCmd::Watch { fleet_id, labels } => {
            let stream = c
                .watch_fleet(proto::WatchFleetRequest {
                    fleet_id,
                    label_selector: labels.into_iter().collect(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            follow(stream, |e| output::print_fleet_event(e, args.json)).await?;
        }
    }
    Ok(())
}
