//! `SessionHealthService`: error reports of player sessions and the live health feed.

use std::sync::Arc;

use futures::StreamExt;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream, ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    domain::{
        check_text, limits, Error, GameSessionId, HealthStatus, HealthUpdate, PlayerSessionId,
    },
    proto::{self, session_health_service_server::SessionHealthService},
    security::{Caller, Security},
    store::{HealthCounts, ReleaseHealthQuery, Store},
};

pub struct SessionHealth {
    store: Arc<Store>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
    security: Arc<Security>,
}

impl SessionHealth {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: CancellationToken,
        security: Arc<Security>,
    ) -> Self {
        SessionHealth {
            store,
            metrics,
            shutdown,
            security,
        }
    }
}

/// The API message of a health update.
pub fn session_update(u: &HealthUpdate) -> proto::SessionUpdate {
    proto::SessionUpdate {
        session_id: u.session_id.to_string(),
        distinct_id: u.distinct_id.to_string(),
        sequence: u.sequence,
        timestamp: Some(convert::timestamp(u.timestamp)),
        started: Some(convert::timestamp(u.started)),
        init: u.init,
        duration_seconds: u.duration.map(|d| d.as_secs_f64()),
        status: match u.status {
            HealthStatus::Ok => proto::SessionStatus::Ok,
            HealthStatus::Exited => proto::SessionStatus::Exited,
            HealthStatus::Crashed => proto::SessionStatus::Crashed,
            HealthStatus::Abnormal => proto::SessionStatus::Abnormal,
        } as i32,
        errors: u.errors,
        attributes: Some(proto::SessionAttributes {
            release: u.release.to_string(),
            environment: u.environment.to_string(),
            ip_address: String::new(),
            user_agent: String::new(),
        }),
        player_session_id: u.player_session_id.to_string(),
        game_session_id: u.game_session_id.to_string(),
        fleet_id: u.fleet_id.to_string(),
    }
}

/// A scoped caller's release health must name one of its fleets (the aggregate over every
/// fleet would include others').
fn scoped_fleet(
    caller: &Caller,
    fleet: Option<crate::domain::FleetId>,
) -> Result<Option<crate::domain::FleetId>, Error> {
    match &fleet {
        Some(f) => caller.fleet(f)?,
        None if caller.is_scoped() => {
            return Err(Error::PermissionDenied(
                "a token scoped to fleets must name one of them in fleet_id".into(),
            ))
        }
        None => {}
    }
    Ok(fleet)
}

fn bucket(started: crate::domain::Timestamp, c: &HealthCounts) -> proto::ReleaseHealthBucket {
    proto::ReleaseHealthBucket {
        started: Some(convert::timestamp(started)),
        total: c.total,
        exited: c.exited,
        errored: c.errored,
        abnormal: c.abnormal,
        crashed: c.crashed,
        crash_free_rate: c.crash_free_rate(),
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
                let caller = Caller::of(&req);
                let r = req.into_inner();
                let gsid = GameSessionId::parse("game_session_id", &r.game_session_id)?;
                caller.game_session(&self.store, &gsid)?;
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

    async fn get_release_health(
        &self,
        req: Request<proto::GetReleaseHealthRequest>,
    ) -> Result<Response<proto::ReleaseHealth>, Status> {
        let span = tracing::debug_span!("rpc", method = "GetReleaseHealth");
        super::observed(&self.metrics, "GetReleaseHealth", span, async move {
            let caller = Caller::of(&req);
            let r = req.into_inner();
            if r.release.is_empty() {
                return Err(Error::invalid("release", "must not be empty").into());
            }
            check_text("release", &r.release, limits::RELEASE_MAX)?;
            check_text("environment", &r.environment, limits::ENVIRONMENT_MAX)?;
            let q = ReleaseHealthQuery {
                environment: (!r.environment.is_empty()).then_some(r.environment),
                fleet_id: scoped_fleet(&caller, convert::optional_fleet("fleet_id", &r.fleet_id)?)?,
                window: (r.window_seconds > 0)
                    .then(|| std::time::Duration::from_secs(u64::from(r.window_seconds))),
                release: r.release,
            };
            let report = self.store.release_health(&q);
            let c = report.counts;
            Ok(Response::new(proto::ReleaseHealth {
                release: q.release,
                total: c.total,
                exited: c.exited,
                errored: c.errored,
                abnormal: c.abnormal,
                crashed: c.crashed,
                crash_free_rate: c.crash_free_rate(),
                buckets: report.buckets.iter().map(|(t, c)| bucket(*t, c)).collect(),
            }))
        })
        .await
    }

    type WatchSessionUpdatesStream = ReceiverStream<Result<proto::SessionUpdate, Status>>;

    async fn watch_session_updates(
        &self,
        req: Request<proto::WatchSessionUpdatesRequest>,
    ) -> Result<Response<Self::WatchSessionUpdatesStream>, Status> {
        let span = tracing::debug_span!("rpc", method = "WatchSessionUpdates");
        super::observed(&self.metrics, "WatchSessionUpdates", span, async move {
            let caller = Caller::of(&req);
            let r = req.into_inner();
            let fleet = convert::optional_fleet("fleet_id", &r.fleet_id)?;
            if let Some(f) = &fleet {
                caller.fleet(f)?;
            }
            check_text("release", &r.release, limits::RELEASE_MAX)?;
            let slot = self.security.watch_slot(&caller)?;
            let release = (!r.release.is_empty()).then_some(r.release);
            let buffer = self.store.health().capacity();
            let lagged = self.metrics.health_watchers_lagged.clone();
            let updates =
                BroadcastStream::new(self.store.health().subscribe()).filter_map(move |u| {
                    let out = match u {
                        Ok(u) => {
                            // The stream owns the watch slot: released when it ends.
                            let _open = &slot;
                            let wanted = fleet.as_ref().is_none_or(|f| *f == u.fleet_id)
                                && caller.fleet(&u.fleet_id).is_ok()
                                && release.as_deref().is_none_or(|r| r == &*u.release);
                            wanted.then(|| Ok(session_update(&u)))
                        }
                        Err(BroadcastStreamRecvError::Lagged(_)) => {
                            lagged.inc();
                            Some(Err(Status::from(Error::HealthWatchLagged { buffer })))
                        }
                    };
                    std::future::ready(out)
                });
            Ok(Response::new(super::forward(
                updates,
                self.shutdown.clone(),
                "WatchSessionUpdates",
            )))
        })
        .await
    }
}
