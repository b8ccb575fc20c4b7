//! Signed tokens: the user's bearer token and the queue token.
//!
//! Both are `kind.fields….signature`, where the signature is HMAC-SHA256 over
//! everything before it. Checking one costs a hash and no I/O, and the
//! comparison is constant-time (`Mac::verify_slice`).
//!
//! Keys rotate: the current key signs, and the key it replaced still
//! verifies (`TOKEN_SECRET_PREVIOUS`), so a leaked key is replaced without
//! logging everyone out.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::clock::Millis;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct TokenKey {
    current: HmacSha256,
    previous: Option<HmacSha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

/// Who a bearer token speaks for, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserClaims {
    pub user_id: i64,
    pub expires_at: Millis,
}

/// A place in one concert's queue. `seq` is the place's ticket number: a new
/// place gets a new `seq`, so an old token cannot stand in for a new place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueClaims {
    pub concert_id: i64,
    pub user_id: i64,
    pub seq: i64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

const USER: &str = "u";
const QUEUE: &str = "q";

impl TokenKey {
    pub fn new(secret: &[u8]) -> Self {
        Self { current: mac(secret), previous: None }
    }

    /// Also accepts tokens signed with `previous` (never signs with it).
    pub fn with_previous(mut self, previous: &[u8]) -> Self {
        self.previous = Some(mac(previous));
        self
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac = self.current.clone();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Returns the signed fields after `kind`, if the signature holds.
    fn open<'t>(&self, token: &'t str, kind: &str) -> Result<Vec<&'t str>, TokenError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        let verifies = |key: &HmacSha256| {
            let mut mac = key.clone();
            mac.update(payload.as_bytes());
            mac.verify_slice(&sig).is_ok()
        };
        if !verifies(&self.current) && !self.previous.as_ref().is_some_and(verifies) {
            return Err(TokenError::BadSignature);
        }
        let mut fields = payload.split('.');
        if fields.next() != Some(kind) {
            return Err(TokenError::Malformed);
        }
        Ok(fields.collect())
    }

    pub fn issue_user(&self, claims: UserClaims) -> String {
        self.sign(&format!("{USER}.{}.{}", claims.user_id, claims.expires_at))
    }

    pub fn verify_user(&self, token: &str, now: Millis) -> Result<UserClaims, TokenError> {
        let [user_id, expires_at] = numbers(&self.open(token, USER)?)?;
        if expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(UserClaims { user_id, expires_at })
    }

    pub fn issue_queue(&self, claims: QueueClaims) -> String {
        self.sign(&format!("{QUEUE}.{}.{}.{}", claims.concert_id, claims.user_id, claims.seq))
    }

    pub fn verify_queue(&self, token: &str) -> Result<QueueClaims, TokenError> {
        let [concert_id, user_id, seq] = numbers(&self.open(token, QUEUE)?)?;
        Ok(QueueClaims { concert_id, user_id, seq })
    }
}

/// Whether `given` is `expected`, in time that depends on neither their
/// contents nor their lengths: both are hashed to 32 bytes first, and the
/// digests are compared in constant time.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.as_slice().ct_eq(b.as_slice()).into()
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

fn numbers<const N: usize>(fields: &[&str]) -> Result<[i64; N], TokenError> {
    let values: Vec<i64> =
        fields.iter().map(|f| f.parse().map_err(|_| TokenError::Malformed)).collect::<Result<_, _>>()?;
    values.try_into().map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(b"test-secret")
    }

    #[test]
    fn a_user_token_round_trips_until_it_expires() {
        let claims = UserClaims { user_id: 42, expires_at: 1_000 };
        let token = key().issue_user(claims);
        assert_eq!(key().verify_user(&token, 999), Ok(claims));
        assert_eq!(key().verify_user(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn tampering_or_another_secret_breaks_the_signature() {
        let token = key().issue_user(UserClaims { user_id: 42, expires_at: 1_000 });
        let forged = token.replacen("u.42.", "u.43.", 1);
        assert_eq!(key().verify_user(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(TokenKey::new(b"other").verify_user(&token, 0), Err(TokenError::BadSignature));
        assert_eq!(key().verify_user("garbage", 0), Err(TokenError::Malformed));
        assert_eq!(key().verify_user("", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn after_a_rotation_old_tokens_verify_and_new_ones_are_signed_with_the_new_key() {
        let old = key().issue_user(UserClaims { user_id: 7, expires_at: 1_000 });
        let rotated = TokenKey::new(b"new-secret").with_previous(b"test-secret");
        assert_eq!(rotated.verify_user(&old, 0).map(|c| c.user_id), Ok(7));
        let fresh = rotated.issue_user(UserClaims { user_id: 8, expires_at: 1_000 });
        assert_eq!(key().verify_user(&fresh, 0), Err(TokenError::BadSignature), "the old key does not sign");
        assert_eq!(TokenKey::new(b"new-secret").verify_user(&fresh, 0).map(|c| c.user_id), Ok(8));
        assert_eq!(
            TokenKey::new(b"new-secret").verify_user(&old, 0),
            Err(TokenError::BadSignature),
            "once dropped, old tokens end"
        );
        let q = key().issue_queue(QueueClaims { concert_id: 1, user_id: 2, seq: 3 });
        assert!(rotated.verify_queue(&q).is_ok());
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"right-key", b"right-key"));
        assert!(!same_secret(b"right-kez", b"right-key"));
        assert!(!same_secret(b"right", b"right-key"), "a prefix is not the key");
        assert!(!same_secret(b"", b"right-key"));
    }

    #[test]
    fn a_queue_token_is_not_a_user_token() {
        let q = key().issue_queue(QueueClaims { concert_id: 1, user_id: 2, seq: 3 });
        assert_eq!(key().verify_queue(&q), Ok(QueueClaims { concert_id: 1, user_id: 2, seq: 3 }));
        assert_eq!(key().verify_user(&q, 0), Err(TokenError::Malformed));
        let u = key().issue_user(UserClaims { user_id: 2, expires_at: 9 });
        assert_eq!(key().verify_queue(&u), Err(TokenError::Malformed));
    }
}
