//! Opaque page tokens: the position after which the next page starts, plus a fingerprint of the
//! query so a token cannot be replayed against a different query, sealed with an HMAC-SHA256
//! (truncated to 128 bits) over the token and the caller's scope (token name, role, fleets), so
//! a forged token, or one issued to another caller, is refused. The key is per data directory
//! ([`set_key`]; random per process without one).
//!
//! Positions are `(creation_time, player_session_id)`, the listing order, so a token survives
//! concurrent inserts: new sessions sort after every existing position.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use uuid::Uuid;

use super::SearchPosition;
use crate::domain::{Error, GameSessionId, PlayerSessionId, Result, SortValue, Timestamp};

const VERSION: u8 = 1;
/// Bytes of the MAC at the end of every token.
const TAG: usize = 16;

static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Sets the page-token key (once per process; later calls keep the first key).
pub fn set_key(key: [u8; 32]) {
    let _ = KEY.set(key);
}

fn key() -> &'static [u8; 32] {
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        k[16..].copy_from_slice(Uuid::new_v4().as_bytes());
        k
    })
}

fn mac(body: &[u8], scope: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key()).expect("any key size");
    m.update(&(body.len() as u64).to_be_bytes());
    m.update(body);
    m.update(scope);
    m
}

/// `body` and its MAC for `scope`, base64url.
fn seal(mut body: Vec<u8>, scope: &[u8]) -> String {
    use hmac::Mac;
    let tag = mac(&body, scope).finalize().into_bytes();
    body.extend_from_slice(&tag[..TAG]);
    URL_SAFE_NO_PAD.encode(body)
}

/// The body of a token sealed for `scope` (constant-time MAC check).
fn unseal(s: &str, scope: &[u8]) -> Option<Vec<u8>> {
    use hmac::Mac;
    let mut buf = URL_SAFE_NO_PAD.decode(s).ok()?;
    let at = buf.len().checked_sub(TAG)?;
    mac(&buf[..at], scope)
        .verify_truncated_left(&buf[at..])
        .ok()?;
    buf.truncate(at);
    Some(buf)
}
const LEN: usize = 1 + 8 + 16 + 8;

/// A decoded page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub after: (Timestamp, PlayerSessionId),
    pub query: u64,
}

impl PageToken {
    /// The token, for a caller with scope `scope`.
    pub fn encode(&self, scope: &[u8]) -> String {
        let mut buf = [0u8; LEN];
        buf[0] = VERSION;
        buf[1..9].copy_from_slice(&self.after.0.as_micros().to_be_bytes());
        buf[9..25].copy_from_slice(self.after.1.uuid().as_bytes());
        buf[25..33].copy_from_slice(&self.query.to_be_bytes());
        seal(buf.to_vec(), scope)
    }

    /// Decodes a token and checks it was issued for `query` to a caller with `scope`.
    pub fn decode(field: &str, s: &str, query: u64, scope: &[u8]) -> Result<Self> {
        let bad = || Error::invalid(field, "is not a page token returned by this query");
        let buf = unseal(s, scope).ok_or_else(bad)?;
        if buf.len() != LEN || buf[0] != VERSION {
            return Err(bad());
        }
        let t = i64::from_be_bytes(buf[1..9].try_into().map_err(|_| bad())?);
        let id = Uuid::from_slice(&buf[9..25]).map_err(|_| bad())?;
        let q = u64::from_be_bytes(buf[25..33].try_into().map_err(|_| bad())?);
        if q != query {
            return Err(bad());
        }
        Ok(PageToken {
            after: (Timestamp::from_micros(t), PlayerSessionId::from_uuid(id)),
            query,
        })
    }
}

/// A decoded SearchGameSessions page token: the last game session's sort position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPageToken {
    pub after: SearchPosition,
    pub query: u64,
}

const SEARCH_VERSION: u8 = 2;

impl SearchPageToken {
    /// The token, for a caller with scope `scope`.
    pub fn encode(&self, scope: &[u8]) -> String {
        let mut buf = Vec::with_capacity(64);
        buf.push(SEARCH_VERSION);
        buf.extend_from_slice(&self.query.to_be_bytes());
        buf.extend_from_slice(&self.after.creation_time.as_micros().to_be_bytes());
        match &self.after.value {
            SortValue::Num(n) => {
                buf.push(0);
                buf.extend_from_slice(&n.to_bits().to_be_bytes());
            }
            SortValue::Str(s) => {
                buf.push(1);
                buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            SortValue::Missing => buf.push(2),
        }
        buf.extend_from_slice(self.after.game_session_id.as_str().as_bytes());
        seal(buf, scope)
    }

    /// Decodes a token and checks it was issued for `query` to a caller with `scope`.
    pub fn decode(field: &str, s: &str, query: u64, scope: &[u8]) -> Result<Self> {
        let bad = || Error::invalid(field, "is not a page token returned by this query");
        let buf = unseal(s, scope).ok_or_else(bad)?;
        let mut r = Reader(&buf);
        if r.take(1).ok_or_else(bad)?[0] != SEARCH_VERSION {
            return Err(bad());
        }
        let q = u64::from_be_bytes(r.array().ok_or_else(bad)?);
        if q != query {
            return Err(bad());
        }
        let creation = i64::from_be_bytes(r.array().ok_or_else(bad)?);
        let value = match r.take(1).ok_or_else(bad)?[0] {
            0 => SortValue::Num(f64::from_bits(u64::from_be_bytes(
                r.array().ok_or_else(bad)?,
            ))),
            1 => {
                let n = u32::from_be_bytes(r.array().ok_or_else(bad)?) as usize;
                let text = r.take(n).ok_or_else(bad)?;
                SortValue::Str(String::from_utf8(text.to_vec()).map_err(|_| bad())?)
            }
            2 => SortValue::Missing,
            _ => return Err(bad()),
        };
        let id = std::str::from_utf8(r.0).map_err(|_| bad())?;
        let game_session_id = GameSessionId::parse(field, id).map_err(|_| bad())?;
        Ok(SearchPageToken {
            after: SearchPosition {
                value,
                creation_time: Timestamp::from_micros(creation),
                game_session_id,
            },
            query,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// FNV-1a, 64 bit: a stable fingerprint (the same across runs and builds, unlike `DefaultHasher`).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn bytes(mut self, data: &[u8]) -> Self {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
    /// Adds a length-prefixed string, so ("ab","c") and ("a","bc") differ.
    pub fn str(self, s: &str) -> Self {
        self.bytes(&(s.len() as u64).to_le_bytes())
            .bytes(s.as_bytes())
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let t = PageToken {
            after: (Timestamp::from_micros(123_456), PlayerSessionId::generate()),
            query: 42,
        };
        let s = t.encode(b"me");
        assert_eq!(PageToken::decode("page_token", &s, 42, b"me").unwrap(), t);
        assert!(
            PageToken::decode("page_token", &s, 43, b"me").is_err(),
            "other query"
        );
        assert!(PageToken::decode("page_token", "garbage!", 42, b"me").is_err());
        assert!(PageToken::decode("page_token", "", 42, b"me").is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
        bytes[0] = 9;
        assert!(
            PageToken::decode("page_token", &URL_SAFE_NO_PAD.encode(bytes), 42, b"me").is_err()
        );
        assert!(
            PageToken::decode("page_token", &s, 42, b"someone else").is_err(),
            "another caller's token"
        );
        // A token built by hand (no valid MAC) is refused.
        let mut forged = [0u8; LEN + TAG];
        forged[0] = VERSION;
        forged[25..33].copy_from_slice(&42u64.to_be_bytes());
        assert!(
            PageToken::decode("page_token", &URL_SAFE_NO_PAD.encode(forged), 42, b"me").is_err()
        );
    }

    #[test]
    fn search_tokens_round_trip_and_reject() {
        for value in [
            SortValue::Num(12.5),
            SortValue::Str("de_dust 2".into()),
            SortValue::Missing,
        ] {
            let t = SearchPageToken {
                after: SearchPosition {
                    value,
                    creation_time: Timestamp::from_micros(1_700_000_000_000_001),
                    game_session_id: GameSessionId::parse("id", "gs-7").unwrap(),
                },
                query: 7,
            };
            let s = t.encode(b"me");
            assert_eq!(
                SearchPageToken::decode("page_token", &s, 7, b"me").unwrap(),
                t
            );
            assert!(SearchPageToken::decode("page_token", &s, 8, b"me").is_err());
            let bytes = URL_SAFE_NO_PAD.decode(&s).unwrap();
            // Cut anywhere before the id ("gs-7") is complete garbage; a shorter id is not.
            for cut in 0..=bytes.len() - 4 {
                let short = URL_SAFE_NO_PAD.encode(&bytes[..cut]);
                assert!(SearchPageToken::decode("page_token", &short, 7, b"me").is_err());
            }
        }
        // A DescribePlayerSessions token is not a search token, and vice versa.
        let describe = PageToken {
            after: (Timestamp::from_micros(1), PlayerSessionId::generate()),
            query: 7,
        }
        .encode(b"me");
        assert!(SearchPageToken::decode("page_token", &describe, 7, b"me").is_err());
    }

    proptest::proptest! {
        /// Any string is a token or an INVALID_ARGUMENT, never a panic.
        #[test]
        fn random_tokens_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            let s = URL_SAFE_NO_PAD.encode(&bytes);
            let _ = PageToken::decode("page_token", &s, 1, b"");
            let _ = SearchPageToken::decode("page_token", &s, 1, b"");
            let raw = String::from_utf8_lossy(&bytes);
            let _ = PageToken::decode("page_token", &raw, 1, b"");
        }
    }

    #[test]
    fn fingerprints_are_length_prefixed() {
        let a = Fingerprint::default().str("ab").str("c").finish();
        let b = Fingerprint::default().str("a").str("bc").finish();
        assert_ne!(a, b);
    }
}
