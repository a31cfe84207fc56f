//! `GameSessionService`: translates requests into store calls.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    domain::{limits, Error, FleetId, GameSessionId, RegisterGameSession, Result},
    proto::{self, game_session_service_server::GameSessionService},
    security::Caller,
    store::Store,
};

pub struct GameSessions {
    store: Arc<Store>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl GameSessions {
    pub fn new(store: Arc<Store>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        GameSessions { store, metrics }
    }
}

fn timeout(field: &str, secs: u32) -> Result<Option<Duration>> {
    match secs {
        0 => Ok(None),
        s if s > limits::TIMEOUT_SECONDS_MAX => Err(Error::invalid(
            field,
            format!(
                "must be at most {} seconds, got {s}",
                limits::TIMEOUT_SECONDS_MAX
            ),
        )),
        s => Ok(Some(Duration::from_secs(u64::from(s)))),
    }
}

fn register_request(r: proto::RegisterGameSessionRequest) -> Result<RegisterGameSession> {
    let game_session_id = match r.game_session_id.as_str() {
        "" => None,
        s => Some(GameSessionId::parse("game_session_id", s)?),
    };
    let port = u16::try_from(r.port)
        .map_err(|_| Error::invalid("port", format!("must be at most 65535, got {}", r.port)))?;
    Ok(RegisterGameSession {
        fleet_id: FleetId::parse("fleet_id", &r.fleet_id)?,
        game_session_id,
        name: r.name,
        ip_address: r.ip_address,
        port,
        maximum_player_session_count: r.maximum_player_session_count,
        labels: r.labels.into_iter().collect::<BTreeMap<_, _>>(),
        release: r.release,
        environment: r.environment,
        reservation_timeout: timeout("reservation_timeout_seconds", r.reservation_timeout_seconds)?,
        heartbeat_timeout: timeout("heartbeat_timeout_seconds", r.heartbeat_timeout_seconds)?,
    })
}

fn gsid(s: &str) -> Result<GameSessionId> {
    GameSessionId::parse("game_session_id", s)
}

type Reply = std::result::Result<Response<proto::GameSession>, Status>;

#[tonic::async_trait]
impl GameSessionService for GameSessions {
    async fn register_game_session(
        &self,
        req: Request<proto::RegisterGameSessionRequest>,
    ) -> Reply {
        let span = super::rpc_span("RegisterGameSession", req.get_ref());
        super::observed(&self.metrics, "RegisterGameSession", span, async move {
            let caller = Caller::of(&req);
            let cmd = register_request(req.into_inner())?;
            caller.fleet(&cmd.fleet_id)?;
            // A scoped caller does not learn that an id is taken in another fleet.
            if let Some(id) = cmd.game_session_id.as_ref().filter(|_| caller.is_scoped()) {
                if let Some(fleet) = self.store.game_session_fleet(id) {
                    caller.fleet(&fleet)?;
                }
            }
            let g = self.store.register_game_session(cmd).await?;
            Ok(Response::new(convert::game_session(&g)))
        })
        .await
    }

    async fn heartbeat(&self, req: Request<proto::HeartbeatRequest>) -> Reply {
        let span = super::rpc_span("Heartbeat", req.get_ref());
        super::observed(&self.metrics, "Heartbeat", span, async move {
            let id = gsid(&req.get_ref().game_session_id)?;
            Caller::of(&req).game_session(&self.store, &id)?;
            let g = self.store.heartbeat(&id)?;
            Ok(Response::new(convert::game_session(&g)))
        })
        .await
    }

    async fn update_game_session(&self, req: Request<proto::UpdateGameSessionRequest>) -> Reply {
        let span = super::rpc_span("UpdateGameSession", req.get_ref());
        super::observed(&self.metrics, "UpdateGameSession", span, async move {
            let id = gsid(&req.get_ref().game_session_id)?;
            Caller::of(&req).game_session(&self.store, &id)?;
            let r = req.into_inner();
            let policy = r
                .player_session_creation_policy
                .map(|p| convert::parse_creation_policy("player_session_creation_policy", p))
                .transpose()?;
            let g = self
                .store
                .update_game_session(&id, r.maximum_player_session_count, policy)
                .await?;
            Ok(Response::new(convert::game_session(&g)))
        })
        .await
    }

    async fn end_game_session(&self, req: Request<proto::EndGameSessionRequest>) -> Reply {
        let span = super::rpc_span("EndGameSession", req.get_ref());
        super::observed(&self.metrics, "EndGameSession", span, async move {
            let id = gsid(&req.get_ref().game_session_id)?;
            Caller::of(&req).game_session(&self.store, &id)?;
            let r = req.into_inner();
            crate::domain::check_text("reason", &r.reason, limits::REASON_MAX)?;
            let g = self
                .store
                .end_game_session(&id, r.crashed, &r.reason)
                .await?;
            Ok(Response::new(convert::game_session(&g)))
        })
        .await
    }

    async fn get_game_session(&self, req: Request<proto::GetGameSessionRequest>) -> Reply {
        let span = super::rpc_span("GetGameSession", req.get_ref());
        super::observed(&self.metrics, "GetGameSession", span, async move {
            let id = gsid(&req.get_ref().game_session_id)?;
            Caller::of(&req).game_session(&self.store, &id)?;
            let g = self.store.get_game_session(&id)?;
            Ok(Response::new(convert::game_session(&g)))
        })
        .await
    }
}
