//! `Idempotency-Key` on `POST /admin/keys` and `/rotate`: a retry (a lost
//! answer, a client that timed out) gets the first answer again, secret
//! included, instead of a second key or a second rotation.
//!
//! Returning the same secret means keeping it somewhere. What a demanding
//! operator accepts, and what this does:
//! - briefly: answers are kept 24 hours (`WINDOW_SECONDS`, long enough for
//!   any client retry loop, short enough that the table stays small), then
//!   ignored and deleted by the next write;
//! - never readable from the database alone: the answer is sealed with
//!   AES-256-GCM under a key derived from the `Idempotency-Key` value,
//!   which the database never holds (rows are found by a separate SHA-256
//!   of it). A database dump, backup or read-only replica does not reveal
//!   the secrets of recent creations: only someone who also has the
//!   client's idempotency key (a UUID, 122 random bits) can open one;
//! - per admin token: the lookup mixes in the token id, so a tenant-bound
//!   token can never replay another token's answer;
//! - bound to the request: the same idempotency key with another body or
//!   another key id is refused (422 `idempotency_key_reused`, as the IETF
//!   idempotency-key draft says), never answered with the first result.

use super::request::BadField;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// How long an answer is kept: 24 hours.
pub const WINDOW_SECONDS: i64 = 86_400;
/// Longest `Idempotency-Key` value.
pub const MAX_HEADER_BYTES: usize = 255;

/// One idempotent request: where its answer is stored, what request it
/// answers, and the key its answer is sealed with.
#[derive(Clone)]
pub struct IdempotencySlot {
    pub lookup: [u8; 32],
    pub fingerprint: [u8; 32],
    seal_key: [u8; 32],
}

impl std::fmt::Debug for IdempotencySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencySlot")
            .field("lookup", &hex::encode(self.lookup))
            .finish_non_exhaustive()
    }
}

/// An answer found in the window.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub fingerprint: [u8; 32],
    pub status: u16,
    pub sealed: Vec<u8>,
}

fn derive(label: &str, admin_id: &str, header: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [label, admin_id, header] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

impl IdempotencySlot {
    /// `header`: the client's `Idempotency-Key`; `admin_id`: who asks
    /// ("full" or the `admin_tokens` id); the rest identifies the request.
    pub fn new(
        header: &str,
        admin_id: &str,
        operation: &str,
        key_id: &str,
        body: &[u8],
    ) -> Result<IdempotencySlot, BadField> {
        if header.is_empty()
            || header.len() > MAX_HEADER_BYTES
            || !header.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(BadField {
                field: "Idempotency-Key".into(),
                message: format!("must be 1 to {MAX_HEADER_BYTES} visible ASCII characters"),
            });
        }
        let mut fp = Sha256::new();
        for part in [operation.as_bytes(), key_id.as_bytes(), body] {
            fp.update((part.len() as u64).to_be_bytes());
            fp.update(part);
        }
        Ok(IdempotencySlot {
            lookup: derive("tollgate idempotency lookup", admin_id, header),
            fingerprint: fp.finalize().into(),
            seal_key: derive("tollgate idempotency seal", admin_id, header),
        })
    }

    fn key(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, &self.seal_key)
            .ok()
            .map(LessSafeKey::new)
    }

    /// nonce ‖ ciphertext ‖ tag; `None` only if the system RNG fails.
    pub fn seal(&self, answer: &[u8]) -> Option<Vec<u8>> {
        let key = self.key()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut data = answer.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(self.lookup),
            &mut data,
        )
        .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let key = self.key()?;
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(self.lookup), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(header: &str, admin: &str, body: &[u8]) -> IdempotencySlot {
        IdempotencySlot::new(header, admin, "create", "", body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sealed_answers_open_only_with_the_same_idempotency_key() {
        let a = slot("8e2b-uuid", "full", b"{}");
        let sealed = a.seal(b"{\"key\":\"tg_secret\"}").unwrap_or_default();
        assert!(
            !sealed.windows(9).any(|w| w == b"tg_secret"),
            "stored sealed"
        );
        assert_eq!(
            a.open(&sealed).as_deref(),
            Some(&b"{\"key\":\"tg_secret\"}"[..])
        );
        let other = slot("8e2b-uuie", "full", b"{}");
        assert_eq!(other.open(&sealed), None);
        assert_ne!(other.lookup, a.lookup);
        // Another admin token with the same header finds another row.
        assert_ne!(slot("8e2b-uuid", "acme-admin", b"{}").lookup, a.lookup);
        // The same header with another body is another request.
        assert_ne!(slot("8e2b-uuid", "full", b"{ }").fingerprint, a.fingerprint);
        assert_eq!(slot("8e2b-uuid", "full", b"{}").fingerprint, a.fingerprint);
    }

    #[test]
    fn bad_headers_are_refused() {
        for h in ["", "a b", "é", &"x".repeat(256)] {
            assert!(
                IdempotencySlot::new(h, "full", "create", "", b"").is_err(),
                "{h:?}"
            );
        }
    }
}
