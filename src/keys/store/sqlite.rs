//! API keys in the SQLite ledger file (`ledger.kind: sqlite`, one
//! instance). One connection, used on the blocking pool; the ledger's
//! writer thread has its own (WAL: neither blocks the other for long).

use super::row::{
    raw_row, replay, unchanged, KeyWrite, ListQuery, RawRow, RowValues, StoreError, Written,
    COLUMNS, UPSERT_BY_ID,
};
use crate::keys::change::apply;
use crate::keys::idempotency::{StoredAnswer, WINDOW_SECONDS};
use crate::keys::record::StoredKey;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
pub struct SqliteKeys {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl SqliteKeys {
    /// The ledger file (its schema, keys tables included, is made by the
    /// ledger's writer, which is opened first).
    pub fn new(path: &Path) -> SqliteKeys {
        SqliteKeys {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Runs `f` on the connection, in place (start-up, tests).
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| StoreError::Unavailable("key store lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Unavailable("no connection".into()));
        };
        let result = f(conn);
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // Reopened on the next call.
            *guard = None;
        }
        result
    }

    /// Runs `f` on the connection, on the blocking pool.
    pub async fn blocking<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(move || self.run(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("key store task: {e}")))?
    }
}

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(raw_row!(r.get))
}

fn collect(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<StoredKey>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, raw)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.into_key()?);
    }
    Ok(out)
}

pub fn load_since(conn: &mut Connection, version: i64) -> Result<Vec<StoredKey>, StoreError> {
    collect(
        conn,
        &format!("SELECT {COLUMNS} FROM api_keys WHERE version > ?1 ORDER BY version"),
        &[&version],
    )
}

/// Every stored key (start-up).
pub fn load_since_all(conn: &mut Connection) -> Result<Vec<StoredKey>, StoreError> {
    load_since(conn, 0)
}

pub fn get(conn: &mut Connection, id: &str) -> Result<Option<StoredKey>, StoreError> {
    Ok(collect(
        conn,
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
        &[&id],
    )?
    .pop())
}

pub fn list(conn: &mut Connection, q: &ListQuery) -> Result<Vec<StoredKey>, StoreError> {
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    collect(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM api_keys
             WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR user_id = ?2)
               AND (?3 IS NULL OR id > ?3)
             ORDER BY id LIMIT ?4"
        ),
        &[&q.tenant, &q.user, &q.after, &limit],
    )
}

pub fn touch(conn: &mut Connection, used: &[(String, i64)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE api_keys SET last_used_at = ?2
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
        )?;
        for (id, at) in used {
            stmt.execute(params![id, at])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub fn write(conn: &mut Connection, w: &KeyWrite) -> Result<Written, StoreError> {
    let (id, op, idempotent, now_unix) = w.parts();
    // IMMEDIATE: the write lock from the start, so the version read below
    // is the last one until this commits.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(i) = idempotent {
        tx.execute(
            "DELETE FROM api_key_requests WHERE created_at < ?1",
            [now_unix - WINDOW_SECONDS],
        )?;
        let found = tx
            .query_row(
                "SELECT fingerprint, status, sealed FROM api_key_requests WHERE lookup = ?1",
                [&i.slot.lookup[..]],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, u16>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?
            .and_then(|(fp, status, sealed)| {
                Some(StoredAnswer {
                    fingerprint: fp.try_into().ok()?,
                    status,
                    sealed,
                })
            });
        if let Some(done) = replay(found, idempotent)? {
            return Ok(done);
        }
    }
    let current = collect(
        &tx,
        &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
        &[&id],
    )?
    .pop();
    let version: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM api_keys",
        [],
        |r| r.get(0),
    )?;
    let Some(key) = apply(op, current.as_ref(), now_unix, version)? else {
        return unchanged(current);
    };
    let v = RowValues::of(&key);
    tx.execute(
        &format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)

             {UPSERT_BY_ID}"
        ),
        params![
            key.id,
            &key.digest[..],
            key.user,
            key.tenant,
            v.roles,
            v.models,
            v.requests_per_minute,
            v.tokens_per_day,
            v.micro_usd_per_month,
            key.note,
            key.created_at,
            key.expires_at,
            key.revoked_at,
            key.previous_digest.as_ref().map(|d| &d[..]),
            key.previous_until,
            key.version,
            key.last_used_at,
        ],
    )?;
    if let Some(i) = idempotent {
        let sealed = i.sealed(&key)?;
        tx.execute(
            "INSERT INTO api_key_requests (lookup, fingerprint, status, sealed, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &i.slot.lookup[..],
                &i.slot.fingerprint[..],
                i.status,
                sealed,
                now_unix
            ],
        )?;
    }
    tx.commit()?;
    Ok(Written::Changed(key))
}
