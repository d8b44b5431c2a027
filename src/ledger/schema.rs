//! The ledger's tables, their migrations, and the mapping of a row to and
//! from SQL.

use super::row::{LedgerError, LedgerRow};
use rusqlite::{params, Connection, Row};
use std::path::Path;
use std::time::Duration;

/// How long a connection waits on a lock held by another connection.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The SQLite ledger's `user_version` once every upgrade has run.
pub const SCHEMA_VERSION: i64 = 5;

/// The columns a usage row has in both SQLite tables (the ledger's `usage`
/// and the PostgreSQL spool), up to `estimated`.
macro_rules! usage_row_columns {
    () => {
        "    time_ms           INTEGER NOT NULL,
    request_id        TEXT    NOT NULL,
    user_id           TEXT,
    tenant_id         TEXT,
    key_id            TEXT,
    route             TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    upstream_model    TEXT    NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    reasoning_tokens  INTEGER NOT NULL,
    micro_usd         INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,
"
    };
}

pub(super) const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS usage (
    id                INTEGER PRIMARY KEY,
",
    usage_row_columns!(),
    "    api               TEXT    NOT NULL DEFAULT 'openai_chat',
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    over_cap          INTEGER NOT NULL DEFAULT 0,
    requested_model   TEXT    NOT NULL DEFAULT '',
    upstream_api      TEXT    NOT NULL DEFAULT '',
    conversation_id   TEXT
);
CREATE INDEX IF NOT EXISTS usage_time ON usage(time_ms);
"
);

/// Daily totals per tenant, user and model, kept by a trigger in the same
/// transaction as the rows: the usage report (report.rs) reads this instead
/// of scanning every call, so it answers in milliseconds over millions of
/// rows. A trigger rather than writer code: every insert path keeps it
/// exact. `''` stands for a missing tenant or user (key columns cannot be
/// NULL in a primary key).
const ROLLUP_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_daily (
    day               INTEGER NOT NULL,
    tenant_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    key_id            TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    api               TEXT    NOT NULL,
    calls             INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    micro_usd         INTEGER NOT NULL,
    estimated_calls   INTEGER NOT NULL,
    PRIMARY KEY (day, tenant_id, user_id, key_id, model, api)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS usage_daily_add AFTER INSERT ON usage
BEGIN
    INSERT INTO usage_daily VALUES (
        NEW.time_ms / 86400000, COALESCE(NEW.tenant_id, ''), COALESCE(NEW.user_id, ''),
        COALESCE(NEW.key_id, ''), NEW.model, NEW.api, 1, NEW.prompt_tokens,
        NEW.completion_tokens, NEW.cached_tokens, NEW.micro_usd, NEW.estimated != 0)
    ON CONFLICT (day, tenant_id, user_id, key_id, model, api) DO UPDATE SET
        calls = calls + 1,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens,
        micro_usd = micro_usd + excluded.micro_usd,
        estimated_calls = estimated_calls + excluded.estimated_calls;
END;
";

/// Schema 3 → 4: the rollup gains the key and the API (reports by key;
/// the same rollup as PostgreSQL's). Dropped here, created by
/// `ROLLUP_SCHEMA`, refilled by `REBUILD_ROLLUP`.
const DROP_ROLLUP: &str = "
DROP TRIGGER IF EXISTS usage_daily_add;
DROP TABLE IF EXISTS usage_daily;
";

/// Schemas before 4: the daily rollup, rebuilt from the rows already there.
const REBUILD_ROLLUP: &str = "
DELETE FROM usage_daily;
INSERT INTO usage_daily
SELECT time_ms / 86400000, COALESCE(tenant_id, ''), COALESCE(user_id, ''),
    COALESCE(key_id, ''), model, api, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
    SUM(cached_tokens), SUM(micro_usd), SUM(estimated != 0)
FROM usage GROUP BY 1, 2, 3, 4, 5, 6;
";

/// Schema 3 → 4: the conversation id of a call (attribution), in the
/// ledger and the spool; old rows have none.
const ADD_CONVERSATION: &str = "ADD COLUMN conversation_id TEXT";

/// Written after the migrations, on a new file and a migrated one alike:
/// a conversation budget rebuilt from the ledger reads one conversation's
/// rows of one day.
const CONVERSATION_INDEX: &str = "
CREATE INDEX IF NOT EXISTS usage_conversation_time
    ON usage(tenant_id, conversation_id, time_ms) WHERE conversation_id IS NOT NULL;
";

/// Schema 1 → 2: the API of the call, Anthropic cache-write tokens, and the
/// flag of a call whose output went past the request's cap. `ADD COLUMN`
/// with a default rewrites nothing: old rows read as chat calls.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT 'openai_chat';
ALTER TABLE usage ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN over_cap INTEGER NOT NULL DEFAULT 0;
";

/// Schema 3 → 4: the model the client asked for and the upstream's API of
/// a translated call, in both tables (`ADD COLUMN` with a default rewrites
/// nothing; old rows read as untranslated calls of the model that served).
const ADDED_IN_4: &[(&str, &str)] = &[
    ("requested_model", "TEXT NOT NULL DEFAULT ''"),
    ("upstream_api", "TEXT NOT NULL DEFAULT ''"),
];

/// Adds the columns of schema 4 to `table` where it exists without them.
fn migrate_3_to_4(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let present: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if present.is_empty() {
        return Ok(());
    }
    for (column, decl) in ADDED_IN_4 {
        if !present.iter().any(|p| p == column) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl};"))?;
        }
    }
    Ok(())
}

/// With `ledger.kind: postgres` the writer puts rows here instead of in
/// `usage`, and the forwarder (spool.rs) moves them to PostgreSQL in id
/// order, deleting each batch once PostgreSQL has committed it. No index
/// but the id: rows are only read front to back. AUTOINCREMENT: an id is
/// never reused, even once the spool was empty (see spool.rs).
const SPOOL_SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS spool (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
",
    usage_row_columns!(),
    "    api               TEXT    NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    over_cap          INTEGER NOT NULL,
    requested_model   TEXT    NOT NULL DEFAULT '',
    upstream_api      TEXT    NOT NULL DEFAULT '',
    conversation_id   TEXT
);
"
);

/// The table the writer thread inserts into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    /// The ledger itself (`ledger.kind: sqlite`).
    Usage,
    /// Rows on their way to PostgreSQL.
    Spool,
}

/// A usage row's columns in both SQLite tables (`usage` and `spool`), in
/// the order `insert_batch` binds them and `read_row_at` reads them.
macro_rules! row_column_names {
    () => {
        "time_ms, request_id, user_id, tenant_id, key_id, route, model,
    upstream_model, prompt_tokens, completion_tokens, cached_tokens,
    reasoning_tokens, micro_usd, status, estimated, api, cache_write_tokens, over_cap,
    requested_model, upstream_api, conversation_id"
    };
}

/// A row into `$table`: one placeholder per column of `row_column_names!`.
macro_rules! insert_row {
    ($table:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " (",
            row_column_names!(),
            ")
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
    ?21)"
        )
    };
}

const INSERT: &str = insert_row!("usage");
const INSERT_SPOOL: &str = insert_row!("spool");

/// Schema 5: API keys made through the admin API (keys::store), next to
/// the usage rows they are billed by, and the sealed answers of
/// idempotent key requests (keys::idempotency). Digests only, never a
/// secret. `version` grows with every change (one writer at a time: a
/// `BEGIN IMMEDIATE` transaction).
const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id                  TEXT    PRIMARY KEY,
    digest              BLOB    NOT NULL UNIQUE,
    user_id             TEXT    NOT NULL,
    tenant_id           TEXT    NOT NULL,
    roles               TEXT    NOT NULL,
    models              TEXT,
    requests_per_minute INTEGER,
    tokens_per_day      INTEGER,
    micro_usd_per_month INTEGER,
    note                TEXT    NOT NULL DEFAULT '',
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER,
    revoked_at          INTEGER,
    previous_digest     BLOB,
    previous_until      INTEGER,
    version             INTEGER NOT NULL,
    last_used_at        INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_version ON api_keys(version);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant_id, id);
CREATE TABLE IF NOT EXISTS api_key_requests (
    lookup      BLOB    PRIMARY KEY,
    fingerprint BLOB    NOT NULL,
    status      INTEGER NOT NULL,
    sealed      BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS api_key_requests_created ON api_key_requests(created_at);
";

/// The oldest spooled rows, with their spool ids, at most `?1`.
pub(super) const SELECT_SPOOLED: &str = concat!(
    "SELECT id, ",
    row_column_names!(),
    " FROM spool ORDER BY id LIMIT ?1"
);

pub(super) const SELECT_ROW: &str = concat!("SELECT ", row_column_names!(), "\nFROM usage");

pub(super) fn open_writer(path: &Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 1 {
        conn.execute_batch(MIGRATE_1_TO_2)?;
    }
    if (1..4).contains(&version) {
        migrate_3_to_4(&conn, "usage")?;
        migrate_3_to_4(&conn, "spool")?;
    }
    conn.execute_batch(SCHEMA)?;
    if version < SCHEMA_VERSION {
        // One transaction: a crash leaves the old rollup or the whole new one.
        conn.execute_batch(&format!(
            "BEGIN; {DROP_ROLLUP} {ROLLUP_SCHEMA} {REBUILD_ROLLUP} COMMIT;"
        ))?;
    }
    conn.execute_batch(ROLLUP_SCHEMA)?;
    conn.execute_batch(SPOOL_SCHEMA)?;
    // Per table: one made by the statements above already has it.
    for table in ["usage", "spool"] {
        if !has_column(&conn, table, "conversation_id")? {
            conn.execute(&format!("ALTER TABLE {table} {ADD_CONVERSATION}"), [])?;
        }
    }
    conn.execute_batch(CONVERSATION_INDEX)?;
    conn.execute_batch(KEYS_SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

pub(super) fn insert_batch(
    conn: &mut Connection,
    table: Table,
    batch: &[LedgerRow],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(match table {
            Table::Usage => INSERT,
            Table::Spool => INSERT_SPOOL,
        })?;
        for r in batch {
            stmt.execute(params![
                to_sql_int(r.time_ms),
                r.request_id,
                r.user,
                r.tenant,
                r.key_id,
                r.route,
                r.model,
                r.upstream_model,
                to_sql_int(r.prompt_tokens),
                to_sql_int(r.completion_tokens),
                to_sql_int(r.cached_tokens),
                to_sql_int(r.reasoning_tokens),
                to_sql_int(r.micro_usd),
                r.status,
                r.estimated,
                r.api,
                to_sql_int(r.cache_write_tokens),
                r.over_cap,
                r.requested_model,
                r.upstream_api,
                r.conversation,
            ])?;
        }
    }
    tx.commit()
}

pub(super) fn read_row(r: &Row<'_>) -> rusqlite::Result<LedgerRow> {
    read_row_at(r, 0)
}

/// A row whose columns start at index `at` (after a spool id).
pub(super) fn read_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        time_ms: from_sql_int(r.get(at)?),
        request_id: r.get(at + 1)?,
        user: r.get(at + 2)?,
        tenant: r.get(at + 3)?,
        key_id: r.get(at + 4)?,
        route: r.get(at + 5)?,
        model: r.get(at + 6)?,
        upstream_model: r.get(at + 7)?,
        prompt_tokens: from_sql_int(r.get(at + 8)?),
        completion_tokens: from_sql_int(r.get(at + 9)?),
        cached_tokens: from_sql_int(r.get(at + 10)?),
        reasoning_tokens: from_sql_int(r.get(at + 11)?),
        micro_usd: from_sql_int(r.get(at + 12)?),
        status: r.get(at + 13)?,
        estimated: r.get(at + 14)?,
        api: r.get(at + 15)?,
        cache_write_tokens: from_sql_int(r.get(at + 16)?),
        over_cap: r.get(at + 17)?,
        requested_model: r.get(at + 18)?,
        upstream_api: r.get(at + 19)?,
        conversation: r.get(at + 20)?,
    })
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for name in names {
        if name? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

/// SQLite integers are i64; values beyond it are clamped (never reached in practice).
pub(super) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn to_ms(unix_secs: u64) -> i64 {
    to_sql_int(unix_secs.saturating_mul(1000))
}
