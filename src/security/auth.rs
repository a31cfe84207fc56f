//! Tokens, roles and fleet scopes from the `--auth-file` (TOML), reloadable.
//!
//! ```toml
//! [[tokens]]
//! name = "eu-game-servers"
//! sha256 = "<hex of SHA-256(token)>"   # session-broker auth hash-token
//! role = "game_server"                 # game_server | matchmaker | admin | viewer
//! fleets = ["fleet-eu-1"]              # optional: only these fleets (default: every fleet)
//! requests_per_second = 500            # optional: overrides the role's rate limit
//!
//! [rate_limits.game_server]
//! requests_per_second = 2000
//! burst = 4000
//! ```
//!
//! Only hashes are stored: a leaked auth file does not leak tokens. A request's token is hashed
//! and looked up; an unknown token and a missing one are both UNAUTHENTICATED.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{atomic::AtomicUsize, Arc},
};

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::{Error, FleetId};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// GameSessionService, and Accept/Remove/ReportPlayerSessionError, for its fleets. Never
    /// reserves.
    GameServer,
    /// Reserve, place, search, describe, watch and utilization, for its fleets.
    Matchmaker,
    /// Everything, import/export and the admin HTTP API included.
    Admin,
    /// Read-only calls.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GameServer => "game_server",
            Role::Matchmaker => "matchmaker",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// A token bucket: `rate` tokens per second up to `burst` (on tokio's clock, so tests can pause
/// time).
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut s = self.state.lock();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug)]
pub struct Principal {
    /// The token's name (logs and metrics; never the token).
    pub name: Arc<str>,
    pub role: Role,
    /// `None`: every fleet.
    pub fleets: Option<BTreeSet<FleetId>>,
    /// Its rate limit, if any.
    pub bucket: Option<Bucket>,
    /// Open watch streams of this token (shared across reloads by name).
    pub watch_streams: Arc<AtomicUsize>,
}

impl Principal {
    /// May this caller act on `fleet`?
    pub fn covers(&self, fleet: &FleetId) -> bool {
        self.fleets.as_ref().is_none_or(|f| f.contains(fleet))
    }

    /// A stable fingerprint of the caller's scope (page tokens are bound to it).
    pub fn scope_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(self.name.as_bytes());
        v.push(0);
        v.extend_from_slice(self.role.as_str().as_bytes());
        if let Some(f) = &self.fleets {
            for id in f {
                v.push(0);
                v.extend_from_slice(id.as_str().as_bytes());
            }
        }
        v
    }
}

/// Rate limit settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: f64,
    /// Default: one second's worth (at least 1).
    pub burst: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    role: Role,
    #[serde(default)]
    fleets: Option<Vec<String>>,
    requests_per_second: Option<f64>,
    burst: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    rate_limits: BTreeMap<Role, RateLimit>,
}

/// Why an auth file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth file {path}: {reason}")]
pub struct AuthFileError {
    pub path: String,
    pub reason: String,
}

/// The tokens of one version of the auth file, by SHA-256.
#[derive(Debug, Default)]
struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

/// The hex SHA-256 of a token, as the auth file stores it.
pub fn hash_token(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_file(
    path: &Path,
    text: &str,
    watch: &HashMap<Arc<str>, Arc<AtomicUsize>>,
) -> Result<Tokens, AuthFileError> {
    let bad = |reason: String| AuthFileError {
        path: path.display().to_string(),
        reason,
    };
    let file: AuthFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut tokens = Tokens::default();
    let mut names = BTreeSet::new();
    for (i, t) in file.tokens.into_iter().enumerate() {
        let at = format!("tokens[{i}] ({:?})", t.name);
        if t.name.is_empty() || t.name.len() > 128 {
            return Err(bad(format!("{at}: name must be 1 to 128 characters")));
        }
        if !names.insert(t.name.clone()) {
            return Err(bad(format!("{at}: a second token with this name")));
        }
        let hash = parse_hex32(&t.sha256).ok_or_else(|| {
            bad(format!(
                "{at}: sha256 must be 64 hex digits (session-broker auth hash-token)"
            ))
        })?;
        let fleets = match t.fleets {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(bad(format!(
                        "{at}: fleets is empty (omit it for every fleet)"
                    )));
                }
                let mut set = BTreeSet::new();
                for f in list {
                    set.insert(
                        FleetId::parse("fleets", &f).map_err(|e| bad(format!("{at}: {e}")))?,
                    );
                }
                Some(set)
            }
        };
        let limit = match t.requests_per_second {
            Some(r) => Some(RateLimit {
                requests_per_second: r,
                burst: t.burst,
            }),
            None => file.rate_limits.get(&t.role).copied(),
        };
        let bucket = match limit {
            None => None,
            Some(l) => {
                if !(l.requests_per_second > 0.0 && l.requests_per_second.is_finite()) {
                    return Err(bad(format!("{at}: requests_per_second must be positive")));
                }
                let burst = l.burst.unwrap_or(l.requests_per_second).max(1.0);
                Some(Bucket::new(l.requests_per_second, burst))
            }
        };
        let name: Arc<str> = t.name.as_str().into();
        let principal = Principal {
            watch_streams: watch.get(&name).cloned().unwrap_or_default(),
            name,
            role: t.role,
            fleets,
            bucket,
        };
        if tokens.by_hash.insert(hash, Arc::new(principal)).is_some() {
            return Err(bad(format!("{at}: the same token hash as another token")));
        }
    }
    Ok(tokens)
}

/// The daemon's tokens: loaded at start, reloaded on SIGHUP (connections stay up; a file that
/// does not parse keeps the previous tokens).
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

impl Auth {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let auth = Auth {
            path: path.to_path_buf(),
            tokens: RwLock::new(Arc::default()),
        };
        auth.reload()?;
        Ok(auth)
    }

    /// Re-reads the file; returns the number of tokens. Watch-stream counts carry over by name.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| AuthFileError {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let watch: HashMap<Arc<str>, Arc<AtomicUsize>> = self
            .tokens
            .read()
            .by_hash
            .values()
            .map(|p| (p.name.clone(), p.watch_streams.clone()))
            .collect();
        let tokens = parse_file(&self.path, &text, &watch)?;
        let n = tokens.by_hash.len();
        *self.tokens.write() = Arc::new(tokens);
        Ok(n)
    }

    /// The caller presenting `authorization` (`Bearer <token>`).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Principal>, Error> {
        let Some(value) = authorization else {
            return Err(Error::Unauthenticated(
                "missing authorization: send `authorization: Bearer <token>`".into(),
            ));
        };
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .ok_or_else(|| {
                Error::Unauthenticated("authorization must be `Bearer <token>`".into())
            })?;
        let hash: [u8; 32] = Sha256::digest(token.trim_ascii()).into();
        self.tokens
            .read()
            .by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| Error::Unauthenticated("unknown token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("auth.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn tokens_are_found_by_hash_and_reload_keeps_the_old_set_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[tokens]]\nname = \"gs\"\nsha256 = \"{}\"\nrole = \"game_server\"\nfleets = [\"f1\"]\n\n[rate_limits.game_server]\nrequests_per_second = 1\nburst = 2\n",
            hash_token("secret-1")
        );
        let path = write(dir.path(), &text);
        let auth = Auth::load(&path).unwrap();
        let p = auth.authenticate(Some(b"Bearer secret-1")).unwrap();
        assert_eq!((p.role, &*p.name), (Role::GameServer, "gs"));
        assert!(p.covers(&FleetId::parse("f", "f1").unwrap()));
        assert!(!p.covers(&FleetId::parse("f", "f2").unwrap()));
        let b = p.bucket.as_ref().unwrap();
        assert!(b.try_take() && b.try_take() && !b.try_take(), "burst of 2");
        for bad in [None, Some(&b"secret-1"[..]), Some(b"Bearer nope")] {
            assert!(matches!(
                auth.authenticate(bad),
                Err(Error::Unauthenticated(_))
            ));
        }
        write(dir.path(), "[[tokens]]\nname = 1\n");
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some(b"Bearer secret-1")).is_ok(), "kept");
        write(dir.path(), "");
        assert_eq!(auth.reload().unwrap(), 0);
        assert!(auth.authenticate(Some(b"Bearer secret-1")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate() {
        let b = Bucket::new(2.0, 1.0);
        assert!(b.try_take());
        assert!(!b.try_take());
        tokio::time::advance(std::time::Duration::from_millis(400)).await;
        assert!(!b.try_take(), "0.8 of a token");
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(b.try_take());
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert!(b.try_take() && !b.try_take(), "never more than the burst");
    }

    #[test]
    fn bad_files_name_the_token() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("[[tokens]]\nname = \"a\"\nsha256 = \"xyz\"\nrole = \"admin\"\n", "sha256"),
            ("[[tokens]]\nname = \"a\"\nsha256 = \"00\"\nrole = \"root\"\n", "role"),
            ("[[tokens]]\nname = \"a\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"admin\"\nfleets = []\n", "fleets"),
            ("[[tokenz]]\n", "unknown field"),
        ] {
            let path = write(dir.path(), text);
            let e = Auth::load(&path).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    proptest::proptest! {
        /// Any header value, and any auth file text, is a principal or an error: never a panic.
        #[test]
        fn random_headers_and_files_never_panic(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            file in ".{0,200}",
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = write(dir.path(), &file);
            if let Ok(auth) = Auth::load(&path) {
                let _ = auth.authenticate(Some(&header));
            }
            let _ = super::super::required_roles(&String::from_utf8_lossy(&header));
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/auth.example.toml");
        let auth = Auth::load(&path).unwrap();
        assert_eq!(auth.tokens.read().by_hash.len(), 4);
    }
}
