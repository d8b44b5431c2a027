//! What both databases share: the errors, the shape of a write and of a
//! listing, and a key's columns.

use crate::auth::api_key::KeyDigest;
use crate::keys::change::{ChangeError, Operation};
use crate::keys::idempotency::{IdempotencySlot, StoredAnswer};
use crate::keys::record::{KeyPolicy, StoredKey};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("this Idempotency-Key was used for another request")]
    IdempotencyReused,
    #[error("stored key {id} is unreadable: {message}")]
    Corrupt { id: String, message: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<crate::ledger::postgres::PgError> for StoreError {
    fn from(e: crate::ledger::postgres::PgError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Renders the answer an idempotent request stores (sealed) with the key
/// as written.
pub type Answer = Arc<dyn Fn(&StoredKey) -> Vec<u8> + Send + Sync>;

/// One change of one key, as the store writes it in one transaction.
pub struct KeyWrite {
    pub id: String,
    pub op: Operation,
    /// Set when the request carried an `Idempotency-Key`.
    pub idempotent: Option<Idempotent>,
    pub now_unix: i64,
}

impl KeyWrite {
    /// A change without an `Idempotency-Key`.
    pub fn new(id: &str, op: Operation, now_unix: i64) -> KeyWrite {
        KeyWrite {
            id: id.to_string(),
            op,
            idempotent: None,
            now_unix,
        }
    }

    /// Its parts, borrowed, as each database's write reads them.
    pub(crate) fn parts(&self) -> (&str, &Operation, Option<&Idempotent>, i64) {
        (&self.id, &self.op, self.idempotent.as_ref(), self.now_unix)
    }
}

/// An idempotent write: its slot, and the answer to keep.
#[derive(Clone)]
pub struct Idempotent {
    pub slot: IdempotencySlot,
    pub status: u16,
    pub answer: Answer,
}

impl Idempotent {
    /// The answer to keep for `key` as written, sealed.
    pub(crate) fn sealed(&self, key: &StoredKey) -> Result<Vec<u8>, StoreError> {
        self.slot
            .seal(&(self.answer)(key))
            .ok_or_else(|| StoreError::Unavailable("cannot seal the answer".into()))
    }
}

/// What a write did.
#[derive(Debug)]
pub enum Written {
    Changed(StoredKey),
    /// Nothing to change (revoking a revoked key): the key as it is.
    Unchanged(StoredKey),
    /// The same idempotent request was answered before: that answer.
    Replayed(StoredAnswer),
}

/// Filters and position of a listing page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub tenant: Option<String>,
    pub user: Option<String>,
    /// Ids after this one (the cursor).
    pub after: Option<String>,
    pub limit: usize,
}

/// What a write of a key row changes when the id exists (both databases
/// read `excluded` as the row that was proposed).
pub(crate) const UPSERT_BY_ID: &str = "ON CONFLICT (id) DO UPDATE SET digest = excluded.digest,
    roles = excluded.roles, models = excluded.models,
    requests_per_minute = excluded.requests_per_minute, tokens_per_day = excluded.tokens_per_day,
    micro_usd_per_month = excluded.micro_usd_per_month, note = excluded.note,
    expires_at = excluded.expires_at, revoked_at = excluded.revoked_at,
    previous_digest = excluded.previous_digest, previous_until = excluded.previous_until,
    version = excluded.version";

/// The columns of `api_keys`, in the order both databases read them.
pub(crate) const COLUMNS: &str = "id, digest, user_id, tenant_id, roles, models,
    requests_per_minute, tokens_per_day, micro_usd_per_month, note, created_at, expires_at,
    revoked_at, previous_digest, previous_until, version, last_used_at";

/// A row of `SELECT {COLUMNS}` read with the database's getter (`get`
/// for SQLite, `try_get` for PostgreSQL): the positions follow
/// [`COLUMNS`], written once for both.
macro_rules! raw_row {
    ($row:ident . $get:ident) => {
        RawRow {
            id: $row.$get(0)?,
            digest: $row.$get(1)?,
            user: $row.$get(2)?,
            tenant: $row.$get(3)?,
            roles: $row.$get(4)?,
            models: $row.$get(5)?,
            requests_per_minute: $row.$get(6)?,
            tokens_per_day: $row.$get(7)?,
            micro_usd_per_month: $row.$get(8)?,
            note: $row.$get(9)?,
            created_at: $row.$get(10)?,
            expires_at: $row.$get(11)?,
            revoked_at: $row.$get(12)?,
            previous_digest: $row.$get(13)?,
            previous_until: $row.$get(14)?,
            version: $row.$get(15)?,
            last_used_at: $row.$get(16)?,
        }
    };
}
pub(crate) use raw_row;

/// A row's columns, as both databases give them.
pub(crate) struct RawRow {
    pub id: String,
    pub digest: Vec<u8>,
    pub user: String,
    pub tenant: String,
    pub roles: String,
    pub models: Option<String>,
    pub requests_per_minute: Option<i64>,
    pub tokens_per_day: Option<i64>,
    pub micro_usd_per_month: Option<i64>,
    pub note: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub previous_digest: Option<Vec<u8>>,
    pub previous_until: Option<i64>,
    pub version: i64,
    pub last_used_at: Option<i64>,
}

fn to_digest(id: &str, bytes: Vec<u8>) -> Result<KeyDigest, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        id: id.to_string(),
        message: "digest is not 32 bytes".into(),
    })
}

impl RawRow {
    pub fn into_key(self) -> Result<StoredKey, StoreError> {
        let corrupt = |m: String| StoreError::Corrupt {
            id: self.id.clone(),
            message: m,
        };
        let roles: Vec<String> =
            serde_json::from_str(&self.roles).map_err(|e| corrupt(format!("roles: {e}")))?;
        let models: Option<Vec<String>> = self
            .models
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("models: {e}")))?;
        let unsigned = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
        let previous_digest = self
            .previous_digest
            .map(|d| to_digest(&self.id, d))
            .transpose()?;
        Ok(StoredKey {
            digest: to_digest(&self.id, self.digest)?,
            id: self.id,
            user: self.user,
            tenant: self.tenant,
            roles,
            policy: KeyPolicy {
                models,
                requests_per_minute: self.requests_per_minute.and_then(|n| u32::try_from(n).ok()),
                tokens_per_day: unsigned(self.tokens_per_day),
                micro_usd_per_month: unsigned(self.micro_usd_per_month),
            },
            note: self.note,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            previous_digest,
            previous_until: self.previous_until,
            version: self.version,
            last_used_at: self.last_used_at,
        })
    }
}

/// A key's columns for a write.
pub(crate) struct RowValues {
    pub roles: String,
    pub models: Option<String>,
    pub requests_per_minute: Option<i64>,
    pub tokens_per_day: Option<i64>,
    pub micro_usd_per_month: Option<i64>,
}

impl RowValues {
    pub fn of(k: &StoredKey) -> RowValues {
        let signed = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        RowValues {
            roles: serde_json::to_string(&k.roles).unwrap_or_else(|_| "[]".into()),
            models: k
                .policy
                .models
                .as_ref()
                .and_then(|m| serde_json::to_string(m).ok()),
            requests_per_minute: k.policy.requests_per_minute.map(i64::from),
            tokens_per_day: signed(k.policy.tokens_per_day),
            micro_usd_per_month: signed(k.policy.micro_usd_per_month),
        }
    }
}

/// A write that `apply` found nothing to do for: the key as it is, or
/// no key of that id.
pub(crate) fn unchanged(current: Option<StoredKey>) -> Result<Written, StoreError> {
    match current {
        Some(k) => Ok(Written::Unchanged(k)),
        None => Err(ChangeError::NotFound.into()),
    }
}

/// What a write found in the idempotency window: the stored answer of
/// the same request, or a refusal if the key was used for another.
pub(crate) fn replay(
    found: Option<StoredAnswer>,
    idempotent: Option<&Idempotent>,
) -> Result<Option<Written>, StoreError> {
    match (found, idempotent) {
        (Some(answer), Some(i)) if answer.fingerprint == i.slot.fingerprint => {
            Ok(Some(Written::Replayed(answer)))
        }
        (Some(_), Some(_)) => Err(StoreError::IdempotencyReused),
        _ => Ok(None),
    }
}
