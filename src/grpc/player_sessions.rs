//! `PlayerSessionService`: translates requests into store calls.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    domain::{
        check_player_data, limits, Error, GameSessionId, IdempotencyKey, PlayerId, PlayerSessionId,
        PlayerStrings, Result,
    },
    proto::{self, player_session_service_server::PlayerSessionService},
    security::Caller,
    store::{Describe, DescribeBy, PageToken, Reserve, Store},
};

pub struct PlayerSessions {
    store: Arc<Store>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl PlayerSessions {
    pub fn new(store: Arc<Store>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        PlayerSessions { store, metrics }
    }
}

/// An idempotent retry returns the sessions the key first made: never ones outside the
/// caller's fleets (idempotency keys are chosen by clients and shared by all of them).
fn replayed_in_scope(caller: &Caller, sessions: &[crate::domain::PlayerSession]) -> Result<()> {
    sessions
        .iter()
        .try_for_each(|ps| caller.fleet(&ps.game.fleet_id))
}

fn gsid(s: &str) -> Result<GameSessionId> {
    GameSessionId::parse("game_session_id", s)
}

fn psid(s: &str) -> Result<PlayerSessionId> {
    PlayerSessionId::parse("player_session_id", s)
}

fn batch_request(r: proto::CreatePlayerSessionsRequest) -> Result<Reserve> {
    Ok(Reserve {
        game_session_id: gsid(&r.game_session_id)?,
        players: convert::party(&r.player_ids, &r.player_data, limits::MAX_BATCH_PLAYERS)?,
        idempotency_key: IdempotencyKey::parse_optional("idempotency_key", &r.idempotency_key)?,
    })
}

fn describe_request(r: &proto::DescribePlayerSessionsRequest, caller: &Caller) -> Result<Describe> {
    let given = [
        !r.player_session_id.is_empty(),
        !r.game_session_id.is_empty(),
        !r.player_id.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(Error::invalid(
            "player_session_id",
            format!(
                "exactly one of player_session_id, game_session_id and player_id must be set, got {given}"
            ),
        ));
    }
    let by = if !r.player_session_id.is_empty() {
        DescribeBy::PlayerSession(psid(&r.player_session_id)?)
    } else if !r.game_session_id.is_empty() {
        DescribeBy::GameSession(gsid(&r.game_session_id)?)
    } else {
        DescribeBy::Player(PlayerId::parse("player_id", &r.player_id)?)
    };
    let status = convert::status_filter("status_filter", r.status_filter)?;
    let limit = match r.limit {
        0 => limits::DESCRIBE_LIMIT_DEFAULT,
        n if n > limits::DESCRIBE_LIMIT_MAX => {
            return Err(Error::invalid(
                "limit",
                format!("must be at most {}, got {n}", limits::DESCRIBE_LIMIT_MAX),
            ))
        }
        n => n,
    };
    let query = Describe::query_fingerprint(&by, status);
    let after = match r.page_token.as_str() {
        "" => None,
        t => Some(PageToken::decode("page_token", t, query, &caller.scope_bytes())?.after),
    };
    Ok(Describe {
        by,
        status,
        limit,
        after,
    })
}

#[tonic::async_trait]
impl PlayerSessionService for PlayerSessions {
    async fn create_player_session(
        &self,
        req: Request<proto::CreatePlayerSessionRequest>,
    ) -> std::result::Result<Response<proto::PlayerSession>, Status> {
        let span = super::rpc_span("CreatePlayerSession", req.get_ref());
        super::observed(&self.metrics, "CreatePlayerSession", span, async move {
            let caller = Caller::of(&req);
            let r = req.into_inner();
            let cmd = Reserve {
                game_session_id: gsid(&r.game_session_id)?,
                players: vec![{
                    let p = PlayerStrings::parse("player_id", &r.player_id, Some(&r.player_data))?;
                    check_player_data("player_data", &r.player_data)?;
                    p
                }],
                idempotency_key: IdempotencyKey::parse_optional(
                    "idempotency_key",
                    &r.idempotency_key,
                )?,
            };
            caller.game_session(&self.store, &cmd.game_session_id)?;
            let created = self.store.reserve(cmd).await?;
            replayed_in_scope(&caller, &created)?;
            let ps = created
                .first()
                .ok_or_else(|| Error::Internal("reservation returned no session".into()))?;
            Ok(Response::new(convert::player_session(ps)))
        })
        .await
    }

    async fn create_player_sessions(
        &self,
        req: Request<proto::CreatePlayerSessionsRequest>,
    ) -> std::result::Result<Response<proto::CreatePlayerSessionsResponse>, Status> {
        let span = super::rpc_span("CreatePlayerSessions", req.get_ref());
        super::observed(&self.metrics, "CreatePlayerSessions", span, async move {
            let caller = Caller::of(&req);
            let cmd = batch_request(req.into_inner())?;
            caller.game_session(&self.store, &cmd.game_session_id)?;
            let created = self.store.reserve(cmd).await?;
            replayed_in_scope(&caller, &created)?;
            Ok(Response::new(proto::CreatePlayerSessionsResponse {
                player_sessions: created.iter().map(convert::player_session).collect(),
            }))
        })
        .await
    }

    async fn accept_player_session(
        &self,
        req: Request<proto::AcceptPlayerSessionRequest>,
    ) -> std::result::Result<Response<proto::PlayerSession>, Status> {
        let span = super::rpc_span("AcceptPlayerSession", req.get_ref());
        super::observed(&self.metrics, "AcceptPlayerSession", span, async move {
            let r = req.get_ref();
            let (g, p) = (gsid(&r.game_session_id)?, psid(&r.player_session_id)?);
            Caller::of(&req).game_session(&self.store, &g)?;
            let ps = self.store.accept(&g, p).await?;
            Ok(Response::new(convert::player_session(&ps)))
        })
        .await
    }

    async fn remove_player_session(
        &self,
        req: Request<proto::RemovePlayerSessionRequest>,
    ) -> std::result::Result<Response<proto::PlayerSession>, Status> {
        let span = super::rpc_span("RemovePlayerSession", req.get_ref());
        super::observed(&self.metrics, "RemovePlayerSession", span, async move {
            let r = req.get_ref();
            let (g, p) = (gsid(&r.game_session_id)?, psid(&r.player_session_id)?);
            Caller::of(&req).game_session(&self.store, &g)?;
            let ps = self.store.remove(&g, p).await?;
            Ok(Response::new(convert::player_session(&ps)))
        })
        .await
    }

    async fn describe_player_sessions(
        &self,
        req: Request<proto::DescribePlayerSessionsRequest>,
    ) -> std::result::Result<Response<proto::DescribePlayerSessionsResponse>, Status> {
        let span = super::rpc_span("DescribePlayerSessions", req.get_ref());
        super::observed(&self.metrics, "DescribePlayerSessions", span, async move {
            let caller = Caller::of(&req);
            let q = describe_request(req.get_ref(), &caller)?;
            match &q.by {
                DescribeBy::GameSession(g) => caller.game_session(&self.store, g)?,
                DescribeBy::PlayerSession(p) => caller.player_session(&self.store, *p)?,
                // A player's sessions across fleets: only those in the caller's fleets.
                DescribeBy::Player(_) => {}
            }
            let page = self.store.describe(&q)?;
            let query = Describe::query_fingerprint(&q.by, q.status);
            Ok(Response::new(proto::DescribePlayerSessionsResponse {
                player_sessions: page
                    .player_sessions
                    .iter()
                    .filter(|p| caller.fleet(&p.game.fleet_id).is_ok())
                    .map(convert::player_session)
                    .collect(),
                next_page_token: page
                    .next
                    .map(|after| PageToken { after, query }.encode(&caller.scope_bytes()))
                    .unwrap_or_default(),
            }))
        })
        .await
    }

    async fn get_player_session_history(
        &self,
        req: Request<proto::GetPlayerSessionHistoryRequest>,
    ) -> std::result::Result<Response<proto::GetPlayerSessionHistoryResponse>, Status> {
        let span = super::rpc_span("GetPlayerSessionHistory", req.get_ref());
        super::observed(&self.metrics, "GetPlayerSessionHistory", span, async move {
            let id = psid(&req.get_ref().player_session_id)?;
            Caller::of(&req).player_session(&self.store, id)?;
            let ps = self.store.get_player_session(id)?;
            let errors = self.store.error_log(&id);
            Ok(Response::new(proto::GetPlayerSessionHistoryResponse {
                records: crate::journal::records::history(&ps, errors.as_ref()),
            }))
        })
        .await
    }
}
