//! The keys operations the admin API calls: tenant scoping, the config
//! keys' protection, idempotency, the database write and the registry
//! update, in that order. Nothing reaches the registry unless the
//! database committed it.

use super::change::{ChangeError, NewKey, Operation};
use super::idempotency::IdempotencySlot;
use super::record::{config_key_json, StoredKey};
use super::registry::KeyRegistry;
use super::request::{BadField, CreateKey, PatchKey, RotateKey};
use super::store::{Idempotent, KeyStore, KeyWrite, ListQuery, StoreError, Written};
use crate::auth::api_key::{digest, generate_key, KeyDigest, KeyIndex};
use serde_json::{json, Value};
use std::sync::Arc;

/// Default and largest page of `GET /admin/keys`.
pub const PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Who asks: the admin token's id ("full", or an `admin_tokens` id), the
/// tenant it is bound to and the roles it may grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub admin_id: String,
    pub tenant: Option<String>,
    /// `None`: any role.
    pub grant_roles: Option<Vec<String>>,
}

impl Caller {
    pub fn full() -> Caller {
        Caller {
            admin_id: "full".into(),
            tenant: None,
            grant_roles: None,
        }
    }

    fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// Refuses roles beyond the token's `grant_roles`: a tenant's token
    /// must not mint (or take over, by rotating) a key more privileged
    /// than the operator allowed it.
    fn may_grant(&self, roles: &[String]) -> Result<(), KeysError> {
        let Some(grantable) = &self.grant_roles else {
            return Ok(());
        };
        match roles.iter().find(|r| !grantable.contains(r)) {
            Some(role) => Err(KeysError::RoleNotGrantable(role.clone())),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{0}")]
    BadRequest(#[from] BadField),
    /// Unknown, or another tenant's (never confirmed to exist).
    #[error("no such key")]
    NotFound,
    #[error("key '{0}' is defined in the configuration file: change it there")]
    ManagedByConfig(String),
    #[error("API-made keys need a shared ledger: with store.kind redis, set ledger.kind postgres (keys made on one instance would be unknown to the others)")]
    SharedLedgerRequired,
    #[error("the key is revoked")]
    Revoked,
    #[error("role '{0}' is not in this admin token's grant_roles")]
    RoleNotGrantable(String),
    #[error("this Idempotency-Key was used for another request")]
    IdempotencyReused,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for KeysError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => KeysError::Unavailable(m),
            StoreError::Change(ChangeError::NotFound) => KeysError::NotFound,
            StoreError::Change(ChangeError::Revoked) => KeysError::Revoked,
            StoreError::Change(ChangeError::IdTaken) => {
                KeysError::Internal("generated key id already taken; try again".into())
            }
            StoreError::IdempotencyReused => KeysError::IdempotencyReused,
            e @ StoreError::Corrupt { .. } => KeysError::Internal(e.to_string()),
        }
    }
}

/// An answer: status and JSON body (a replayed one comes back as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The key's id and tenant (for the audit line), when known.
    pub key_id: String,
    pub tenant: String,
    pub replayed: bool,
}

/// The keys service of one process.
#[derive(Debug)]
pub struct Keys {
    pub registry: Arc<KeyRegistry>,
    /// `None`: per-instance SQLite ledgers in a Redis cluster: API-made
    /// keys are refused (409 `shared_ledger_required`).
    store: Option<KeyStore>,
}

/// What every keys operation is asked with: who asks, the configuration
/// file's keys (which the API may not change) and the time of the call.
#[derive(Clone, Copy)]
pub struct KeysCall<'a> {
    pub caller: &'a Caller,
    pub config: &'a KeyIndex,
    /// Unix seconds.
    pub now_unix: i64,
}

/// A request's idempotency, from its `Idempotency-Key` header.
pub struct IdempotencyRequest<'a> {
    pub header: Option<&'a str>,
    pub body: &'a [u8],
}

/// How an operation that makes a new secret answers: its name and key id
/// in the idempotency slot (empty for create: the id is made by it), and
/// its status.
struct NewSecret<'a> {
    operation: &'static str,
    idempotency_id: &'a str,
    status: u16,
}

fn new_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!("key_{}", hex::encode(raw))
}

fn with_secret(key: &StoredKey, secret: &str, now_unix: i64) -> Vec<u8> {
    let mut v = key.to_json(now_unix);
    v["key"] = Value::String(secret.to_string());
    v.to_string().into_bytes()
}

impl Keys {
    pub fn new(registry: Arc<KeyRegistry>, store: Option<KeyStore>) -> Keys {
        Keys { registry, store }
    }

    pub fn store(&self) -> Option<&KeyStore> {
        self.store.as_ref()
    }

    fn writable(&self) -> Result<&KeyStore, KeysError> {
        self.store.as_ref().ok_or(KeysError::SharedLedgerRequired)
    }

    /// A key of the file with this id, as the caller may see it.
    fn config_key(config: &KeyIndex, id: &str, caller: &Caller) -> Option<Value> {
        config
            .entries()
            .into_iter()
            .find(|e| e.identity.key_id == id)
            .filter(|e| caller.sees(&e.identity.tenant))
            .map(|e| config_key_json(&e, crate::sys::clock::unix_secs()))
    }

    /// Refuses changes to a key of the file (409), or 404 if the caller
    /// may not see it.
    fn not_config(config: &KeyIndex, id: &str, caller: &Caller) -> Result<(), KeysError> {
        if !config.has_id(id) {
            return Ok(());
        }
        match Self::config_key(config, id, caller) {
            Some(_) => Err(KeysError::ManagedByConfig(id.to_string())),
            None => Err(KeysError::NotFound),
        }
    }

    /// The stored key `id` if the caller may see it.
    async fn visible(
        &self,
        store: &KeyStore,
        id: &str,
        caller: &Caller,
    ) -> Result<StoredKey, KeysError> {
        match store.get(id).await? {
            Some(k) if caller.sees(&k.tenant) => Ok(k),
            _ => Err(KeysError::NotFound),
        }
    }

    fn idempotent(
        caller: &Caller,
        idem: &IdempotencyRequest<'_>,
        answer: &NewSecret<'_>,
        secret: &str,
        now_unix: i64,
    ) -> Result<Option<Idempotent>, KeysError> {
        let Some(header) = idem.header else {
            return Ok(None);
        };
        let slot = IdempotencySlot::new(
            header,
            &caller.admin_id,
            answer.operation,
            answer.idempotency_id,
            idem.body,
        )?;
        let secret = secret.to_string();
        Ok(Some(Idempotent {
            slot,
            status: answer.status,
            answer: Arc::new(move |k: &StoredKey| with_secret(k, &secret, now_unix)),
        }))
    }

    fn finish(
        &self,
        written: Written,
        idempotent: Option<&Idempotent>,
        secret: &str,
        status: u16,
        now_unix: i64,
    ) -> Result<Answer, KeysError> {
        match written {
            Written::Changed(key) | Written::Unchanged(key) => {
                self.registry.apply_written(&key);
                Ok(Answer {
                    status,
                    body: with_secret(&key, secret, now_unix),
                    key_id: key.id,
                    tenant: key.tenant,
                    replayed: false,
                })
            }
            Written::Replayed(stored) => {
                let body = idempotent
                    .and_then(|i| i.slot.open(&stored.sealed))
                    .ok_or_else(|| KeysError::Internal("stored answer cannot be opened".into()))?;
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Ok(Answer {
                    status: stored.status,
                    key_id: v["id"].as_str().unwrap_or_default().to_string(),
                    tenant: v["tenant"].as_str().unwrap_or_default().to_string(),
                    body,
                    replayed: true,
                })
            }
        }
    }

    pub async fn create(
        &self,
        body: &[u8],
        idem: IdempotencyRequest<'_>,
        call: &KeysCall<'_>,
    ) -> Result<Answer, KeysError> {
        let store = self.writable()?;
        let req = CreateKey::parse(body, call.now_unix)?;
        let tenant = match (req.tenant, &call.caller.tenant) {
            (Some(t), Some(own)) if &t != own => return Err(KeysError::NotFound),
            (Some(t), _) => t,
            (None, Some(own)) => own.clone(),
            (None, None) => {
                return Err(BadField {
                    field: "tenant".into(),
                    message: "required".into(),
                }
                .into())
            }
        };
        call.caller.may_grant(&req.roles)?;
        let mut id = new_id();
        while call.config.has_id(&id) {
            id = new_id();
        }
        let answer = NewSecret {
            operation: "create",
            idempotency_id: "",
            status: 201,
        };
        self.write_new_secret(store, &id, &idem, answer, call, |digest| {
            Operation::Create(Box::new(NewKey {
                id: id.clone(),
                digest,
                user: req.user,
                tenant,
                roles: req.roles,
                expires_at: req.expires_at,
                policy: req.policy,
                note: req.note,
            }))
        })
        .await
    }

    pub async fn rotate(
        &self,
        id: &str,
        body: &[u8],
        idem: IdempotencyRequest<'_>,
        call: &KeysCall<'_>,
    ) -> Result<Answer, KeysError> {
        Self::not_config(call.config, id, call.caller)?;
        let req = RotateKey::parse(body)?;
        let store = self.writable()?;
        let key = self.visible(store, id, call.caller).await?;
        call.caller.may_grant(&key.roles)?;
        let answer = NewSecret {
            operation: "rotate",
            idempotency_id: id,
            status: 200,
        };
        self.write_new_secret(store, id, &idem, answer, call, |digest| Operation::Rotate {
            digest,
            grace_seconds: req.grace_seconds,
        })
        .await
    }

    /// Writes an operation that gives the key a new secret (create,
    /// rotate) and answers with the secret, once, or replays the stored
    /// answer of an earlier request with the same `Idempotency-Key`.
    async fn write_new_secret(
        &self,
        store: &KeyStore,
        id: &str,
        idem: &IdempotencyRequest<'_>,
        answer: NewSecret<'_>,
        call: &KeysCall<'_>,
        operation: impl FnOnce(KeyDigest) -> Operation,
    ) -> Result<Answer, KeysError> {
        let now_unix = call.now_unix;
        let (secret, _) = generate_key();
        let idempotent = Self::idempotent(call.caller, idem, &answer, &secret, now_unix)?;
        let op = operation(digest(&secret));
        let written = store
            .write(KeyWrite {
                id: id.to_string(),
                op,
                idempotent: idempotent.clone(),
                now_unix,
            })
            .await?;
        self.finish(
            written,
            idempotent.as_ref(),
            &secret,
            answer.status,
            now_unix,
        )
    }

    pub async fn patch(
        &self,
        id: &str,
        body: &[u8],
        call: &KeysCall<'_>,
    ) -> Result<StoredKey, KeysError> {
        Self::not_config(call.config, id, call.caller)?;
        let patch = PatchKey::parse(body, call.now_unix)?;
        if let Some(roles) = &patch.roles {
            call.caller.may_grant(roles)?;
        }
        let store = self.writable()?;
        let key = self.visible(store, id, call.caller).await?;
        call.caller.may_grant(&key.roles)?;
        self.written(
            store
                .write(KeyWrite::new(
                    id,
                    Operation::Patch(Box::new(patch)),
                    call.now_unix,
                ))
                .await?,
        )
    }

    pub async fn revoke(&self, id: &str, call: &KeysCall<'_>) -> Result<StoredKey, KeysError> {
        Self::not_config(call.config, id, call.caller)?;
        let store = self.writable()?;
        self.visible(store, id, call.caller).await?;
        self.written(
            store
                .write(KeyWrite::new(id, Operation::Revoke, call.now_unix))
                .await?,
        )
    }

    fn written(&self, written: Written) -> Result<StoredKey, KeysError> {
        match written {
            Written::Changed(k) | Written::Unchanged(k) => {
                self.registry.apply_written(&k);
                Ok(k)
            }
            Written::Replayed(_) => Err(KeysError::Internal("unexpected replay".into())),
        }
    }

    pub async fn get(&self, id: &str, call: &KeysCall<'_>) -> Result<Value, KeysError> {
        if let Some(v) = Self::config_key(call.config, id, call.caller) {
            return Ok(v);
        }
        if call.config.has_id(id) {
            return Err(KeysError::NotFound);
        }
        let store = self.store.as_ref().ok_or(KeysError::NotFound)?;
        let key = self.visible(store, id, call.caller).await?;
        Ok(key.to_json(call.now_unix))
    }

    /// One page of the file's keys and the stored ones, merged in id
    /// order; the cursor is the last id of the page.
    pub async fn list(
        &self,
        pairs: &[(String, String)],
        call: &KeysCall<'_>,
    ) -> Result<Value, KeysError> {
        let mut q = ListQuery {
            limit: PAGE,
            ..ListQuery::default()
        };
        for (k, v) in pairs {
            let field = |m: &str| BadField {
                field: k.clone(),
                message: m.into(),
            };
            match k.as_str() {
                "tenant" => q.tenant = Some(v.clone()),
                "user" => q.user = Some(v.clone()),
                "cursor" if !v.is_empty() => q.after = Some(v.clone()),
                "cursor" => {}
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| field(&format!("must be an integer from 1 to {MAX_PAGE}")))?
                }
                _ => return Err(field("unknown parameter (tenant, user, cursor, limit)").into()),
            }
        }
        if let Some(own) = &call.caller.tenant {
            match &q.tenant {
                Some(t) if t != own => return Ok(json!({"keys": [], "next_cursor": null})),
                _ => q.tenant = Some(own.clone()),
            }
        }
        let now = call.now_unix;
        let mut from_file: Vec<(String, Value)> = call
            .config
            .entries()
            .into_iter()
            .filter(|e| q.tenant.as_ref().is_none_or(|t| &e.identity.tenant == t))
            .filter(|e| q.user.as_ref().is_none_or(|u| &e.identity.user == u))
            .filter(|e| q.after.as_ref().is_none_or(|a| &e.identity.key_id > a))
            .map(|e| (e.identity.key_id.clone(), config_key_json(&e, now)))
            .collect();
        from_file.sort_by(|a, b| a.0.cmp(&b.0));
        from_file.truncate(q.limit + 1);
        let stored = match &self.store {
            Some(store) => {
                let mut page = q.clone();
                page.limit = q.limit + 1;
                store.list(page).await?
            }
            None => Vec::new(),
        };
        let mut merged: Vec<(String, Value)> = from_file
            .into_iter()
            .chain(stored.iter().map(|k| (k.id.clone(), k.to_json(now))))
            .collect();
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        let more = merged.len() > q.limit;
        merged.truncate(q.limit);
        let next = if more {
            merged.last().map(|(id, _)| Value::String(id.clone()))
        } else {
            None
        };
        Ok(json!({
            "keys": merged.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "next_cursor": next.unwrap_or(Value::Null),
        }))
    }
}
