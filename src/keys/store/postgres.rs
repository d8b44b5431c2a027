//! API keys in the shared ledger (`ledger.kind: postgres`). Every change
//! holds the keys' transaction advisory lock, takes its version from one
//! sequence and notifies `tollgate_keys` in the same transaction: other
//! instances hear of it when (and only if) it commits.

use super::row::{
    raw_row, replay, unchanged, KeyWrite, ListQuery, RawRow, RowValues, StoreError, Written,
    COLUMNS, UPSERT_BY_ID,
};
use crate::keys::change::apply;
use crate::keys::idempotency::{StoredAnswer, WINDOW_SECONDS};
use crate::keys::record::StoredKey;
use crate::ledger::postgres::{migrate, PgSettings, KEYS_LOCK};
use std::time::Duration;
use tokio_postgres::{Client, GenericClient, Row};

/// The channel instances listen on.
pub const CHANNEL: &str = "tollgate_keys";
/// Longest a key operation may take (connect included).
const OP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct PgKeys {
    settings: PgSettings,
    client: tokio::sync::Mutex<Option<Client>>,
}

fn raw(r: &Row) -> Result<RawRow, tokio_postgres::Error> {
    Ok(raw_row!(r.try_get))
}

fn keys_of(rows: Vec<Row>) -> Result<Vec<StoredKey>, StoreError> {
    rows.iter()
        .map(|r| raw(r).map_err(StoreError::from)?.into_key())
        .collect()
}

/// Rows above `version`, in version order.
pub async fn load_since(
    client: &impl GenericClient,
    version: i64,
) -> Result<Vec<StoredKey>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE version > $1 ORDER BY version"),
            &[&version],
        )
        .await?;
    keys_of(rows)
}

pub async fn max_version(client: &Client) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM api_keys",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

impl PgKeys {
    pub fn new(settings: PgSettings) -> PgKeys {
        PgKeys {
            settings,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// Runs `f` with the shared client (connected and migrated on first
    /// use), bounded by [`OP_TIMEOUT`]. A failure drops the client: the
    /// next operation reconnects.
    async fn with_client<T>(
        &self,
        f: impl for<'c> FnOnce(&'c mut Client) -> futures::future::BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().await;
        let run = async {
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                let mut client = self.settings.connect().await?;
                migrate(&mut client).await?;
                *guard = Some(client);
            }
            match guard.as_mut() {
                Some(client) => f(client).await,
                None => Err(StoreError::Unavailable("no connection".into())),
            }
        };
        let result = tokio::time::timeout(OP_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("postgres timed out".into())));
        if matches!(result, Err(StoreError::Unavailable(_))) {
            *guard = None;
        }
        result
    }

    pub async fn load_since(&self, version: i64) -> Result<Vec<StoredKey>, StoreError> {
        self.with_client(|c| Box::pin(async move { load_since(&*c, version).await }))
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let id = id.to_string();
        self.with_client(|c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"),
                        &[&id],
                    )
                    .await?;
                Ok(keys_of(rows)?.pop())
            })
        })
        .await
    }

    pub async fn list(&self, q: &ListQuery) -> Result<Vec<StoredKey>, StoreError> {
        let q = q.clone();
        self.with_client(|c| {
            Box::pin(async move {
                let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
                let rows = c
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM api_keys
                             WHERE ($1::TEXT IS NULL OR tenant_id = $1)
                               AND ($2::TEXT IS NULL OR user_id = $2)
                               AND ($3::TEXT IS NULL OR id > $3)
                             ORDER BY id LIMIT $4"
                        ),
                        &[&q.tenant, &q.user, &q.after, &limit],
                    )
                    .await?;
                keys_of(rows)
            })
        })
        .await
    }

    pub async fn touch(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let ids: Vec<String> = used.iter().map(|(id, _)| id.clone()).collect();
        let times: Vec<i64> = used.iter().map(|(_, t)| *t).collect();
        self.with_client(|c| {
            Box::pin(async move {
                c.execute(
                    "UPDATE api_keys k SET last_used_at = u.at
                     FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(id, at)
                     WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
                    &[&ids, &times],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn write(&self, w: KeyWrite) -> Result<Written, StoreError> {
        self.with_client(|c| Box::pin(async move { write(c, &w).await }))
            .await
    }
}

async fn write(client: &mut Client, w: &KeyWrite) -> Result<Written, StoreError> {
    let (id, op, idempotent, now_unix) = w.parts();
    let tx = client.transaction().await?;
    // One change at a time: versions commit in the order they are taken.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&KEYS_LOCK])
        .await?;
    if let Some(i) = idempotent {
        tx.execute(
            "DELETE FROM api_key_requests WHERE created_at < $1",
            &[&(now_unix - WINDOW_SECONDS)],
        )
        .await?;
        let found = tx
            .query_opt(
                "SELECT fingerprint, status, sealed FROM api_key_requests WHERE lookup = $1",
                &[&&i.slot.lookup[..]],
            )
            .await?
            .and_then(|r| {
                let fp: Vec<u8> = r.try_get(0).ok()?;
                let status: i32 = r.try_get(1).ok()?;
                Some(StoredAnswer {
                    fingerprint: fp.try_into().ok()?,
                    status: u16::try_from(status).ok()?,
                    sealed: r.try_get(2).ok()?,
                })
            });
        if let Some(done) = replay(found, idempotent)? {
            return Ok(done);
        }
    }
    let current = keys_of(
        tx.query(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?,
    )?
    .pop();
    let version: i64 = tx
        .query_one("SELECT nextval('api_key_versions')", &[])
        .await?
        .try_get(0)?;
    let Some(key) = apply(op, current.as_ref(), now_unix, version)? else {
        return unchanged(current);
    };
    let v = RowValues::of(&key);
    let previous = key.previous_digest.as_ref().map(|d| &d[..]);
    tx.execute(
        &format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)

             {UPSERT_BY_ID}"
        ),
        &[
            &key.id,
            &&key.digest[..],
            &key.user,
            &key.tenant,
            &v.roles,
            &v.models,
            &v.requests_per_minute,
            &v.tokens_per_day,
            &v.micro_usd_per_month,
            &key.note,
            &key.created_at,
            &key.expires_at,
            &key.revoked_at,
            &previous,
            &key.previous_until,
            &key.version,
            &key.last_used_at,
        ],
    )
    .await?;
    if let Some(i) = idempotent {
        let sealed = i.sealed(&key)?;
        tx.execute(
            "INSERT INTO api_key_requests (lookup, fingerprint, status, sealed, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &&i.slot.lookup[..],
                &&i.slot.fingerprint[..],
                &i32::from(i.status),
                &sealed,
                &now_unix,
            ],
        )
        .await?;
    }
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &version.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(Written::Changed(key))
}
