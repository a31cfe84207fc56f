//! `FleetService`: search, utilization, party placement and the live fleet feed.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    domain::{limits, Error, Filter, FleetId, IdempotencyKey, Result, Sort},
    proto::{self, fleet_service_server::FleetService},
    security::{Caller, Security},
    store::{
        FleetCounts, FleetEvent, FleetEventKind, Place, PlacementStrategy, Search, SearchPageToken,
        Store,
    },
};

pub struct Fleets {
    store: Arc<Store>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
    security: Arc<Security>,
}

impl Fleets {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: CancellationToken,
        security: Arc<Security>,
    ) -> Self {
        Fleets {
            store,
            metrics,
            shutdown,
            security,
        }
    }
}

fn fleet_id(s: &str) -> Result<FleetId> {
    FleetId::parse("fleet_id", s)
}

/// The validated search and its query fingerprint (for the page tokens).
fn search_request(r: proto::SearchGameSessionsRequest, caller: &Caller) -> Result<(Search, u64)> {
    let fleet_id = fleet_id(&r.fleet_id)?;
    caller.fleet(&fleet_id)?;
    let filter = Filter::parse("filter_expression", &r.filter_expression)?;
    let sort = Sort::parse("sort_expression", &r.sort_expression)?;
    let selector = convert::label_selector("label_selector", r.label_selector)?;
    let limit = match r.limit {
        0 => limits::SEARCH_LIMIT_DEFAULT,
        n if n > limits::SEARCH_LIMIT_MAX => {
            return Err(Error::invalid(
                "limit",
                format!("must be at most {}, got {n}", limits::SEARCH_LIMIT_MAX),
            ))
        }
        n => n,
    };
    let query = Search::query_fingerprint(&fleet_id, &r.filter_expression, &sort, &selector);
    let after = match r.page_token.as_str() {
        "" => None,
        t => Some(SearchPageToken::decode("page_token", t, query, &caller.scope_bytes())?.after),
    };
    let search = Search {
        fleet_id,
        filter,
        sort,
        selector,
        limit,
        after,
    };
    Ok((search, query))
}

fn place_request(r: proto::PlacePlayerSessionsRequest) -> Result<Place> {
    let strategy = match proto::PlacementStrategy::try_from(r.strategy) {
        Ok(proto::PlacementStrategy::Unspecified | proto::PlacementStrategy::Packed) => {
            PlacementStrategy::Packed
        }
        Ok(proto::PlacementStrategy::Distributed) => PlacementStrategy::Distributed,
        Err(_) => {
            return Err(Error::invalid(
                "strategy",
                "must be PLACEMENT_STRATEGY_PACKED or PLACEMENT_STRATEGY_DISTRIBUTED",
            ))
        }
    };
    Ok(Place {
        fleet_id: fleet_id(&r.fleet_id)?,
        players: convert::party(&r.player_ids, &r.player_data, limits::MAX_PLACEMENT_PLAYERS)?,
        selector: convert::label_selector("label_selector", r.label_selector)?,
        filter: Filter::parse("filter_expression", &r.filter_expression)?,
        filter_text: r.filter_expression,
        strategy,
        idempotency_key: IdempotencyKey::parse_optional("idempotency_key", &r.idempotency_key)?,
    })
}

fn utilization(fleet: &FleetId, c: &FleetCounts) -> proto::FleetUtilization {
    proto::FleetUtilization {
        fleet_id: fleet.to_string(),
        active_game_session_count: c.game_sessions[0],
        current_player_session_count: c.current_player_session_count(),
        reserved_player_session_count: c.player_sessions[0],
        active_player_session_count: c.player_sessions[1],
        maximum_player_session_count: c.maximum_player_session_count,
        available_player_session_count: c.available_player_session_count(),
    }
}

fn fleet_event(e: FleetEvent) -> proto::FleetEvent {
    let kind = match e.kind {
        FleetEventKind::Snapshot => proto::FleetEventType::Snapshot,
        FleetEventKind::SnapshotComplete => proto::FleetEventType::SnapshotComplete,
        FleetEventKind::Created => proto::FleetEventType::Created,
        FleetEventKind::Updated => proto::FleetEventType::Updated,
        FleetEventKind::Ended => proto::FleetEventType::Ended,
    };
    proto::FleetEvent {
        sequence: e.sequence,
        r#type: kind as i32,
        game_session: e.game_session.as_ref().map(convert::game_session),
    }
}

/// The ids a fleet request is about, for its log span.
fn fleet_span(method: &'static str, fleet_id: &str) -> tracing::Span {
    tracing::debug_span!("rpc", method, fleet_id)
}

#[tonic::async_trait]
impl FleetService for Fleets {
    async fn search_game_sessions(
        &self,
        req: Request<proto::SearchGameSessionsRequest>,
    ) -> std::result::Result<Response<proto::SearchGameSessionsResponse>, Status> {
        let span = fleet_span("SearchGameSessions", &req.get_ref().fleet_id);
        super::observed(&self.metrics, "SearchGameSessions", span, async move {
            let caller = Caller::of(&req);
            let (q, query) = search_request(req.into_inner(), &caller)?;
            let page = self.store.search(&q);
            Ok(Response::new(proto::SearchGameSessionsResponse {
                game_sessions: page
                    .game_sessions
                    .iter()
                    .map(convert::game_session)
                    .collect(),
                next_page_token: page
                    .next
                    .map(|after| SearchPageToken { after, query }.encode(&caller.scope_bytes()))
                    .unwrap_or_default(),
            }))
        })
        .await
    }

    async fn describe_fleet_utilization(
        &self,
        req: Request<proto::DescribeFleetUtilizationRequest>,
    ) -> std::result::Result<Response<proto::DescribeFleetUtilizationResponse>, Status> {
        let span = fleet_span("DescribeFleetUtilization", "");
        super::observed(
            &self.metrics,
            "DescribeFleetUtilization",
            span,
            async move {
                let caller = Caller::of(&req);
                let ids = &req.get_ref().fleet_ids;
                if ids.len() > limits::UTILIZATION_FLEETS_MAX {
                    return Err(Error::invalid(
                        "fleet_ids",
                        format!(
                            "at most {} fleet ids, got {}",
                            limits::UTILIZATION_FLEETS_MAX,
                            ids.len()
                        ),
                    )
                    .into());
                }
                let fleets = if ids.is_empty() {
                    // Every fleet the caller may see.
                    let mut all = self.store.all_fleet_counts();
                    all.retain(|(f, _)| caller.fleet(f).is_ok());
                    all
                } else {
                    ids.iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let f = FleetId::parse(&format!("fleet_ids[{i}]"), s)?;
                            caller.fleet(&f)?;
                            let c = self.store.fleet_counts(&f);
                            Ok((f, c))
                        })
                        .collect::<Result<Vec<_>>>()?
                };
                Ok(Response::new(proto::DescribeFleetUtilizationResponse {
                    fleet_utilization: fleets.iter().map(|(f, c)| utilization(f, c)).collect(),
                }))
            },
        )
        .await
    }

    async fn place_player_sessions(
        &self,
        req: Request<proto::PlacePlayerSessionsRequest>,
    ) -> std::result::Result<Response<proto::PlacePlayerSessionsResponse>, Status> {
        let span = fleet_span("PlacePlayerSessions", &req.get_ref().fleet_id);
        super::observed(&self.metrics, "PlacePlayerSessions", span, async move {
            let caller = Caller::of(&req);
            let cmd = place_request(req.into_inner())?;
            caller.fleet(&cmd.fleet_id)?;
            let (game, players) = self.store.place(cmd).await?;
            // An idempotent retry's sessions, too, stay within the caller's fleets.
            caller.fleet(game.fleet_id())?;
            Ok(Response::new(proto::PlacePlayerSessionsResponse {
                game_session: Some(convert::game_session(&game)),
                player_sessions: players.iter().map(convert::player_session).collect(),
            }))
        })
        .await
    }

    type WatchFleetStream = ReceiverStream<std::result::Result<proto::FleetEvent, Status>>;

    async fn watch_fleet(
        &self,
        req: Request<proto::WatchFleetRequest>,
    ) -> std::result::Result<Response<Self::WatchFleetStream>, Status> {
        let span = fleet_span("WatchFleet", &req.get_ref().fleet_id);
        super::observed(&self.metrics, "WatchFleet", span, async move {
            let caller = Caller::of(&req);
            let r = req.into_inner();
            let fleet = fleet_id(&r.fleet_id)?;
            caller.fleet(&fleet)?;
            let selector = convert::label_selector("label_selector", r.label_selector)?;
            let slot = self.security.watch_slot(&caller)?;
            let watch = self.store.watch_fleet(fleet, selector);
            // The slot lives as long as the stream.
            let events = futures::stream::unfold((watch, slot), |(mut w, slot)| async move {
                let e = w.next().await.map(fleet_event).map_err(Status::from);
                Some((e, (w, slot)))
            });
            Ok(Response::new(super::forward(
                events,
                self.shutdown.clone(),
                "WatchFleet",
            )))
        })
        .await
    }
}
