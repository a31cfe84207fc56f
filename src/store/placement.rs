//! PlacePlayerSessions: seat a whole party in one game session of a fleet, atomically.
//!
//! The candidate comes from the fleet's index (ordered by available seats, so no scan); the
//! reservation then runs the ordinary all-or-nothing path under that game session's lock, which
//! re-checks capacity, policy and the filter against the state as it is now. If a racing call
//! took the seats first, the placement moves on to the next candidate: a game session is never
//! over-filled and a party is never split.

use std::collections::HashSet;

use super::{
    page_token::Fingerprint,
    search::{selector_matches, LabelSelector, PlacementStrategy},
    Reserve, Store,
};
use crate::domain::{
    limits, Error, Filter, FleetId, GameSession, IdempotencyKey, PlayerSession, PlayerStrings,
    Result,
};

/// Candidates tried before a placement gives up with [`Error::PlacementContention`].
const ATTEMPTS: usize = 64;

/// A validated PlacePlayerSessions request.
#[derive(Debug, Clone)]
pub struct Place {
    pub fleet_id: FleetId,
    /// 1-100 distinct players with optional player data.
    pub players: Vec<PlayerStrings>,
    pub selector: LabelSelector,
    pub filter: Filter,
    /// The filter's text (part of the idempotency fingerprint).
    pub filter_text: String,
    pub strategy: PlacementStrategy,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Place {
    fn fingerprint(&self) -> u64 {
        let mut f = Fingerprint::default()
            .str("place")
            .str(self.fleet_id.as_str())
            .str(&self.filter_text)
            .str(match self.strategy {
                PlacementStrategy::Packed => "packed",
                PlacementStrategy::Distributed => "distributed",
            });
        for (k, v) in &self.selector {
            f = f.str(k).str(v);
        }
        for p in &self.players {
            f = f.str(p.player_id()).str(p.player_data().unwrap_or(""));
        }
        f.finish()
    }

    fn accepts(&self, g: &GameSession) -> bool {
        selector_matches(&self.selector, g) && self.filter.matches(g)
    }
}

impl Store {
    /// Places the party in one matching game session; returns it (as right after the
    /// reservation) with the new player sessions. An idempotent retry returns the original
    /// placement as it is now.
    pub async fn place(&self, req: Place) -> Result<(GameSession, Vec<PlayerSession>)> {
        super::validate_party(&req.players, limits::MAX_PLACEMENT_PLAYERS)?;
        // Only an idempotency key needs the request's fingerprint.
        let fingerprint = req.idempotency_key.as_ref().map(|_| req.fingerprint());
        if let Some(found) = self.placement_retry(&req, fingerprint)? {
            return Ok(found);
        }
        let party = req.players.len() as u32;
        let accept = |g: &GameSession| req.accepts(g);
        let mut tried = HashSet::new();
        for _ in 0..ATTEMPTS {
            let candidate = self
                .with_index(&req.fleet_id, |index| {
                    index.pick(party, req.strategy, accept, &tried)
                })
                .flatten();
            let Some(gsid) = candidate else {
                return Err(Error::NoGameSessionAvailable {
                    fleet_id: req.fleet_id.clone(),
                    requested: party,
                });
            };
            let attempt = Reserve {
                game_session_id: gsid.clone(),
                players: req.players.clone(),
                idempotency_key: req.idempotency_key.clone(),
            };
            match self.reserve_now(attempt, fingerprint, Some(&accept)) {
                Ok(done) => {
                    self.journal.wait_durable(done.lsn).await?;
                    let game = match done.game_session {
                        Some(g) => g,
                        // A racing retry with the same key won: report its placement.
                        None => self.get_game_session(&done.player_sessions[0].game.id)?,
                    };
                    tracing::debug!(
                        game_session_id = %game.id(),
                        fleet_id = %req.fleet_id,
                        party,
                        "party placed"
                    );
                    return Ok((game, done.player_sessions));
                }
                // Lost a race for this candidate (or a player already sits in it): next one.
                Err(
                    Error::GameSessionFull { .. }
                    | Error::GameSessionNotActive { .. }
                    | Error::GameSessionNotFound(_)
                    | Error::CreationDenied(_)
                    | Error::NoGameSessionAvailable { .. }
                    | Error::PlayerAlreadyInGameSession { .. },
                ) => {
                    tried.insert(gsid);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::PlacementContention(req.fleet_id.clone()))
    }

    /// The earlier placement made with the same idempotency key, if any.
    fn placement_retry(
        &self,
        req: &Place,
        fingerprint: Option<u64>,
    ) -> Result<Option<(GameSession, Vec<PlayerSession>)>> {
        let (Some(key), Some(fingerprint)) = (&req.idempotency_key, fingerprint) else {
            return Ok(None);
        };
        let ids = match self.idempotency.get(key) {
            None => return Ok(None),
            Some(r) if r.fingerprint != fingerprint => return Err(Error::IdempotencyKeyReused),
            Some(r) => r.player_session_ids.clone(),
        };
        let sessions = ids
            .into_iter()
            .map(|id| self.get_player_session(id))
            .collect::<Result<Vec<_>>>()?;
        let game = match sessions.first() {
            Some(p) => self.get_game_session(&p.game.id)?,
            None => return Ok(None),
        };
        Ok(Some((game, sessions)))
    }
}
