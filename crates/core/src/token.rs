//! Opaque, tamper-evident pagination tokens (`spec/protocols.md` §12.2):
//! base64url of a small JSON body plus an HMAC-SHA256 tag, bound to a hash of the
//! request's filters and carrying their issue time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trailwatch_types::Timestamp;

/// Signs and checks tokens with a server secret.
#[derive(Clone)]
pub struct TokenCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCodec(..)")
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// Hash of the request filters the token belongs to.
    f: String,
    /// Issue time, epoch seconds.
    i: i64,
    /// The cursor.
    c: T,
}

/// Hex SHA-256 of `parts`, for binding a token to request filters.
pub fn filters_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update((p.len() as u64).to_le_bytes());
        hasher.update(p.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

impl TokenCodec {
    /// A codec with the given secret key.
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn tag(&self, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        mac.finalize().into_bytes()[..16].to_vec()
    }

    /// Issues a token for `cursor` under `filters`.
    pub fn issue<T: Serialize>(&self, filters: &str, cursor: &T, now: Timestamp) -> String {
        let body = serde_json::to_vec(&Envelope {
            f: filters.to_owned(),
            i: now.secs(),
            c: cursor,
        })
        .expect("cursor serializes");
        let mut raw = body;
        let tag = self.tag(&raw);
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Opens a token: `None` when forged, damaged, issued for other filters, or
    /// older than `max_age_secs`.
    pub fn open<T: DeserializeOwned>(
        &self,
        token: &str,
        filters: &str,
        now: Timestamp,
        max_age_secs: i64,
    ) -> Option<T> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if raw.len() < 17 {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - 16);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        let envelope: Envelope<T> = serde_json::from_slice(body).ok()?;
        if envelope.f != filters
            || now.secs() - envelope.i > max_age_secs
            || envelope.i > now.secs() + 60
        {
            return None;
        }
        Some(envelope.c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_and_tamper_evident() {
        let codec = TokenCodec::new(b"k".to_vec());
        let now = Timestamp::from_secs(1_000_000);
        let f = filters_hash(&["a", "b"]);
        let t = codec.issue(&f, &(5i64, "x".to_owned()), now);
        assert_eq!(
            codec.open::<(i64, String)>(&t, &f, now, 86_400),
            Some((5, "x".to_owned()))
        );
        assert_eq!(
            codec.open::<(i64, String)>(&t, &filters_hash(&["a", "c"]), now, 86_400),
            None
        );
        assert_eq!(
            codec.open::<(i64, String)>(&t, &f, Timestamp::from_secs(1_000_000 + 86_401), 86_400),
            None
        );
        let mut bad = t.clone().into_bytes();
        bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            codec.open::<(i64, String)>(std::str::from_utf8(&bad).unwrap(), &f, now, 86_400),
            None
        );
        assert_eq!(
            TokenCodec::new(b"other".to_vec()).open::<(i64, String)>(&t, &f, now, 86_400),
            None
        );
        assert_eq!(codec.open::<(i64, String)>("!!", &f, now, 86_400), None);
        assert_ne!(filters_hash(&["ab", ""]), filters_hash(&["a", "b"]));
    }
}
