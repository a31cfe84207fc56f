//! `SessionHealthService`: error reports of player sessions.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    domain::{check_text, limits, GameSessionId, PlayerSessionId},
    proto::{self, session_health_service_server::SessionHealthService},
    store::Store,
};

pub struct SessionHealth {
    store: Arc<Store>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl SessionHealth {
    pub fn new(store: Arc<Store>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        SessionHealth { store, metrics }
    }
}

#[tonic::async_trait]
impl SessionHealthService for SessionHealth {
    async fn report_player_session_error(
        &self,
        req: Request<proto::ReportPlayerSessionErrorRequest>,
    ) -> Result<Response<proto::PlayerSession>, Status> {
        let span = super::rpc_span("ReportPlayerSessionError", req.get_ref());
        super::observed(
            &self.metrics,
            "ReportPlayerSessionError",
            span,
            async move {
                let r = req.into_inner();
                let gsid = GameSessionId::parse("game_session_id", &r.game_session_id)?;
                let psid = PlayerSessionId::parse("player_session_id", &r.player_session_id)?;
                check_text("message", &r.message, limits::REASON_MAX)?;
                let ps = self
                    .store
                    .report_error(&gsid, psid, r.crashed, &r.message)
                    .await?;
                Ok(Response::new(convert::player_session(&ps)))
            },
        )
        .await
    }
}
