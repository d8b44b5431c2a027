//! The shared ledger in PostgreSQL (`ledger.kind: postgres`): connection
//! (plain or rustls TLS), versioned migrations under an advisory lock, the
//! idempotent batch insert that keeps the daily rollup, and the reads the
//! gateway needs (current spend). Reports are in report.rs.
//!
//! Rows reach this module only through the spool (spool.rs): the request
//! path never waits for PostgreSQL.

use crate::config::pg_url::{split_sslmode, PgSslMode};
use crate::config::schema::LedgerConfig;
use crate::ledger::row::LedgerRow;
pub use crate::ledger::row::PgError;
use crate::limits::budget::ScopeKey;
use crate::limits::types::{SpendInWindows, SpendSource};
use crate::limits::window::{reset_at, window_start, Window};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::verify_tls12_signature as tls12_signature;
use rustls::crypto::verify_tls13_signature as tls13_signature;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connect timeout when the URL sets none: a start-up or a forwarding
/// pass must not hang on an unreachable host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Key of the advisory lock held while migrating: "tollgate" in ASCII.
pub const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;
const MS_PER_DAY: i64 = 86_400_000;

fn config_error(field: &'static str, message: impl Into<String>) -> PgError {
    PgError::Config {
        field,
        message: message.into(),
    }
}

/// How to reach the shared ledger, resolved from `ledger:` (password read,
/// TLS configured). Cloning is cheap.
#[derive(Clone)]
pub struct PgSettings {
    config: Arc<tokio_postgres::Config>,
    tls: Option<MakeRustlsConnect>,
}

impl fmt::Debug for PgSettings {
    // Never the password; host and database are enough to recognise it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PgSettings {
    /// Resolves `ledger:` (kind postgres): the URL, the password named by
    /// `postgres_password_env` / `_file`, and TLS as `sslmode` asks.
    pub fn from_config(c: &LedgerConfig) -> Result<PgSettings, PgError> {
        let url = c
            .postgres_url
            .as_ref()
            .ok_or_else(|| config_error("ledger.postgres_url", "required with kind: postgres"))?;
        let (url, mode) =
            split_sslmode(url.expose()).map_err(|e| config_error("ledger.postgres_url", e))?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| config_error("ledger.postgres_url", format!("invalid: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("tollgate");
        if let Some(password) = password(c)? {
            config.password(password);
        }
        let tls = match mode {
            PgSslMode::Disable => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            PgSslMode::Require | PgSslMode::VerifyFull => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(tls_config(
                    mode,
                    c.ca_file.as_deref(),
                )?))
            }
        };
        Ok(PgSettings {
            config: Arc::new(config),
            tls,
        })
    }

    /// Connects; the connection's I/O task runs on the current runtime.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }
}

/// Notifications a listening connection may hold before the reader takes
/// them; more are dropped (the reader's periodic check catches up).
const NOTIFICATION_QUEUE: usize = 64;

impl PgSettings {
    /// Connects with the connection's notifications (`LISTEN`) delivered
    /// to the returned receiver. The receiver closes when the connection
    /// ends.
    pub async fn connect_listening(
        &self,
    ) -> Result<
        (
            Client,
            tokio::sync::mpsc::Receiver<tokio_postgres::Notification>,
        ),
        PgError,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(NOTIFICATION_QUEUE);
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive_listening(connection, tx));
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive_listening(connection, tx));
                client
            }
        };
        Ok((client, rx))
    }
}

async fn drive_listening<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::Sender<tokio_postgres::Notification>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match futures::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                // Full or gone: the periodic check catches up.
                let _ = tx.try_send(n);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "postgres listening connection closed");
                return;
            }
            None => return,
        }
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "postgres connection closed");
    }
}

fn password(c: &LedgerConfig) -> Result<Option<String>, PgError> {
    if let Some(var) = &c.postgres_password_env {
        return std::env::var(var)
            .map(Some)
            .map_err(|e| config_error("ledger.postgres_password_env", format!("{var}: {e}")));
    }
    if let Some(file) = &c.postgres_password_file {
        return std::fs::read_to_string(file)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| config_error("ledger.postgres_password_file", format!("{file}: {e}")));
    }
    Ok(None)
}

/// rustls with the ring provider (as the rest of the gateway): `require`
/// encrypts without checking the certificate (libpq's meaning), and
/// `verify-full` checks the chain against `ca_file` (else the system's
/// roots) and the host name.
fn tls_config(mode: PgSslMode, ca_file: Option<&str>) -> Result<rustls::ClientConfig, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("ledger.postgres_url", format!("TLS: {e}")))?;
    if mode == PgSslMode::Require {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| config_error("ledger.ca_file", format!("{file}: {e}")))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| config_error("ledger.ca_file", format!("{file}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| config_error("ledger.ca_file", format!("{file}: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(config_error(
                    "ledger.ca_file",
                    "sslmode=verify-full needs ca_file: no system root certificates found",
                ));
            }
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `sslmode=require`: any certificate is accepted, but the handshake's
/// signatures are still checked, so the session is really encrypted to
/// whoever holds the presented key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl EncryptOnly {
    fn schemes(&self) -> &WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }
}

/// The handshake signature checks' types, short enough that each check
/// reads on one line.
type Cert<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Signed = Result<HandshakeSignatureValid, rustls::Error>;

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &Cert<'_>, dss: &Dss) -> Signed {
        tls12_signature(message, cert, dss, self.schemes())
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &Cert<'_>, dss: &Dss) -> Signed {
        tls13_signature(message, cert, dss, self.schemes())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes().supported_schemes()
    }
}

/// How many migrations a fully migrated database has run.
pub const MIGRATION_COUNT: usize = MIGRATIONS.len();

/// Versioned migrations, applied in order, each in its own transaction
/// with its row in `tollgate_migrations`. Never edit one that shipped:
/// add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, MIGRATION_1),
    (2, MIGRATION_2),
    (3, MIGRATION_3),
    (4, MIGRATION_4),
];

/// The calls, one row per request id (a row forwarded twice is one row),
/// and the daily rollup the reports read. Indexes: time (ranges, the
/// minute's spend), and user / tenant by time (a budget rebuilt for one
/// scope reads only its own rows).
const MIGRATION_1: &str = "
CREATE TABLE usage (
    id                 BIGSERIAL PRIMARY KEY,
    request_id         TEXT    NOT NULL UNIQUE,
    time_ms            BIGINT  NOT NULL,
    user_id            TEXT,
    tenant_id          TEXT,
    key_id             TEXT,
    route              TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    upstream_model     TEXT    NOT NULL,
    prompt_tokens      BIGINT  NOT NULL,
    completion_tokens  BIGINT  NOT NULL,
    cached_tokens      BIGINT  NOT NULL,
    reasoning_tokens   BIGINT  NOT NULL,
    micro_usd          BIGINT  NOT NULL,
    status             INTEGER NOT NULL,
    estimated          BOOLEAN NOT NULL,
    api                TEXT    NOT NULL,
    cache_write_tokens BIGINT  NOT NULL,
    over_cap           BOOLEAN NOT NULL
);
CREATE INDEX usage_time ON usage (time_ms);
CREATE INDEX usage_user_time ON usage (user_id, time_ms) WHERE user_id IS NOT NULL;
CREATE INDEX usage_tenant_time ON usage (tenant_id, time_ms) WHERE tenant_id IS NOT NULL;
CREATE TABLE usage_daily (
    day               BIGINT NOT NULL,
    tenant_id         TEXT   NOT NULL,
    user_id           TEXT   NOT NULL,
    key_id            TEXT   NOT NULL,
    model             TEXT   NOT NULL,
    api               TEXT   NOT NULL,
    calls             BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens     BIGINT NOT NULL,
    micro_usd         BIGINT NOT NULL,
    estimated_calls   BIGINT NOT NULL,
    PRIMARY KEY (day, tenant_id, user_id, key_id, model, api)
);
";

/// The model the client asked for and the upstream's API of a translated
/// call (old rows: empty, read as untranslated calls of the serving model).
const MIGRATION_2: &str = "
ALTER TABLE usage ADD COLUMN requested_model TEXT NOT NULL DEFAULT '';
ALTER TABLE usage ADD COLUMN upstream_api TEXT NOT NULL DEFAULT '';
";

/// The conversation id of a call (attribution); old rows have none. The
/// index serves a conversation budget rebuilt from the ledger.
const MIGRATION_3: &str = "
ALTER TABLE usage ADD COLUMN conversation_id TEXT;
CREATE INDEX usage_conversation_time ON usage (tenant_id, conversation_id, time_ms)
    WHERE conversation_id IS NOT NULL;
";

/// API keys made through the admin API (keys::store): digests only.
/// `version` comes from one sequence, taken under a transaction advisory
/// lock ([`KEYS_LOCK`]) so versions commit in order and an instance that
/// reloads "above the version I have" never skips a row. The sealed
/// answers of idempotent key requests live 24 hours (keys::idempotency).
const MIGRATION_4: &str = "
CREATE SEQUENCE api_key_versions;
CREATE TABLE api_keys (
    id                  TEXT    PRIMARY KEY,
    digest              BYTEA   NOT NULL UNIQUE,
    user_id             TEXT    NOT NULL,
    tenant_id           TEXT    NOT NULL,
    roles               TEXT    NOT NULL,
    models              TEXT,
    requests_per_minute BIGINT,
    tokens_per_day      BIGINT,
    micro_usd_per_month BIGINT,
    note                TEXT    NOT NULL DEFAULT '',
    created_at          BIGINT  NOT NULL,
    expires_at          BIGINT,
    revoked_at          BIGINT,
    previous_digest     BYTEA,
    previous_until      BIGINT,
    version             BIGINT  NOT NULL,
    last_used_at        BIGINT
);
CREATE INDEX api_keys_version ON api_keys (version);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
CREATE TABLE api_key_requests (
    lookup      BYTEA   PRIMARY KEY,
    fingerprint BYTEA   NOT NULL,
    status      INTEGER NOT NULL,
    sealed      BYTEA   NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX api_key_requests_created ON api_key_requests (created_at);
";

/// Key of the transaction advisory lock every API-key change holds:
/// "tgkeys" in ASCII.
pub const KEYS_LOCK: i64 = 0x7467_6b65_7973;

/// Applies the migrations this database lacks. Instances starting at once
/// take turns on a session advisory lock (released by PostgreSQL if this
/// connection dies), so each migration runs exactly once.
pub async fn migrate(client: &mut Client) -> Result<usize, PgError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = apply_migrations(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply_migrations(client: &mut Client) -> Result<usize, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tollgate_migrations (
                version    INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    let done: Vec<i32> = client
        .query("SELECT version FROM tollgate_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO tollgate_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "ledger schema migrated");
        applied += 1;
    }
    Ok(applied)
}

/// Inserts `rows` and adds the ones that were new to the daily rollup, in
/// one statement (one transaction). A request id already present is
/// skipped and not counted again, which makes forwarding idempotent.
/// Returns how many rows were new.
const INSERT_BATCH: &str = "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[],
        $12::bigint[], $13::bigint[], $14::int[], $15::bool[], $16::text[], $17::bigint[],
        $18::bool[], $19::text[], $20::text[], $21::text[])
    AS r(request_id, time_ms, user_id, tenant_id, key_id, route, model, upstream_model,
        prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, micro_usd,
        status, estimated, api, cache_write_tokens, over_cap, requested_model, upstream_api,
        conversation_id)
), inserted AS (
    INSERT INTO usage (request_id, time_ms, user_id, tenant_id, key_id, route, model,
        upstream_model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
        micro_usd, status, estimated, api, cache_write_tokens, over_cap, requested_model,
        upstream_api, conversation_id)
    SELECT * FROM input
    ON CONFLICT (request_id) DO NOTHING
    RETURNING time_ms, tenant_id, user_id, key_id, model, api, prompt_tokens,
        completion_tokens, cached_tokens, micro_usd, estimated
), rolled AS (
    INSERT INTO usage_daily AS d (day, tenant_id, user_id, key_id, model, api, calls,
        prompt_tokens, completion_tokens, cached_tokens, micro_usd, estimated_calls)
    SELECT time_ms / 86400000, COALESCE(tenant_id, ''), COALESCE(user_id, ''),
        COALESCE(key_id, ''), model, api, COUNT(*), SUM(prompt_tokens),
        SUM(completion_tokens), SUM(cached_tokens), SUM(micro_usd),
        COUNT(*) FILTER (WHERE estimated)
    FROM inserted GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (day, tenant_id, user_id, key_id, model, api) DO UPDATE SET
        calls = d.calls + EXCLUDED.calls,
        prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
        cached_tokens = d.cached_tokens + EXCLUDED.cached_tokens,
        micro_usd = d.micro_usd + EXCLUDED.micro_usd,
        estimated_calls = d.estimated_calls + EXCLUDED.estimated_calls
    RETURNING 1
)
SELECT COUNT(*) FROM inserted";

pub async fn insert_batch(client: &Client, rows: &[LedgerRow]) -> Result<u64, PgError> {
    let text = |f: fn(&LedgerRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let opt = |f: fn(&LedgerRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&LedgerRow) -> u64| {
        rows.iter()
            .map(|r| i64::try_from(f(r)).unwrap_or(i64::MAX))
            .collect::<Vec<i64>>()
    };
    let request_id = text(|r| &r.request_id);
    let time_ms = int(|r| r.time_ms);
    let user = opt(|r| r.user.as_deref());
    let tenant = opt(|r| r.tenant.as_deref());
    let key = opt(|r| r.key_id.as_deref());
    let route = text(|r| &r.route);
    let model = text(|r| &r.model);
    let upstream_model = text(|r| &r.upstream_model);
    let prompt = int(|r| r.prompt_tokens);
    let completion = int(|r| r.completion_tokens);
    let cached = int(|r| r.cached_tokens);
    let reasoning = int(|r| r.reasoning_tokens);
    let micro_usd = int(|r| r.micro_usd);
    let status: Vec<i32> = rows.iter().map(|r| i32::from(r.status)).collect();
    let estimated: Vec<bool> = rows.iter().map(|r| r.estimated).collect();
    let api = text(|r| &r.api);
    let cache_write = int(|r| r.cache_write_tokens);
    let over_cap: Vec<bool> = rows.iter().map(|r| r.over_cap).collect();
    let requested_model = text(|r| &r.requested_model);
    let upstream_api = text(|r| &r.upstream_api);
    let conversation = opt(|r| r.conversation.as_deref());
    let row = client
        .query_one(
            INSERT_BATCH,
            &[
                &request_id,
                &time_ms,
                &user,
                &tenant,
                &key,
                &route,
                &model,
                &upstream_model,
                &prompt,
                &completion,
                &cached,
                &reasoning,
                &micro_usd,
                &status,
                &estimated,
                &api,
                &cache_write,
                &over_cap,
                &requested_model,
                &upstream_api,
                &conversation,
            ],
        )
        .await?;
    let inserted: i64 = row.get(0);
    Ok(u64::try_from(inserted).unwrap_or(0))
}

/// Settled spend per user and tenant in the minute, day and month holding
/// `now_unix`: the day and month from the daily rollup, the minute from
/// the rows (an index range over one minute).
pub async fn current_spend(
    client: &Client,
    now_unix: u64,
) -> Result<Vec<(ScopeKey, SpendInWindows)>, PgError> {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (minute_start, minute_end) = (
        ms(window_start(Window::Minute, now_unix)),
        ms(reset_at(Window::Minute, now_unix)),
    );
    let today = ms(window_start(Window::Day, now_unix)) / MS_PER_DAY;
    let (month_first, month_end) = (
        ms(window_start(Window::Month, now_unix)) / MS_PER_DAY,
        ms(reset_at(Window::Month, now_unix)) / MS_PER_DAY,
    );
    let mut out: Vec<(ScopeKey, SpendInWindows)> = Vec::new();
    for (column, scope) in [
        ("user_id", ScopeKey::User as fn(String) -> ScopeKey),
        ("tenant_id", ScopeKey::Tenant),
    ] {
        let daily = format!(
            "SELECT {column},
                COALESCE(SUM(CASE WHEN day = $3 THEN prompt_tokens + completion_tokens END), 0)::BIGINT,
                COALESCE(SUM(micro_usd), 0)::BIGINT
             FROM usage_daily WHERE day >= $1 AND day < $2 AND {column} <> ''
             GROUP BY {column}"
        );
        let mut index = std::collections::HashMap::new();
        for row in client
            .query(&daily, &[&month_first, &month_end, &today])
            .await?
        {
            let id: String = row.get(0);
            let spend = SpendInWindows {
                tokens_day: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                micro_usd_month: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                ..SpendInWindows::default()
            };
            index.insert(id.clone(), out.len());
            out.push((scope(id), spend));
        }
        let minute = format!(
            "SELECT {column}, COALESCE(SUM(prompt_tokens + completion_tokens), 0)::BIGINT
             FROM usage WHERE time_ms >= $1 AND time_ms < $2 AND {column} IS NOT NULL
             GROUP BY {column}"
        );
        for row in client.query(&minute, &[&minute_start, &minute_end]).await? {
            let id: String = row.get(0);
            let tokens = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
            match index.get(&id) {
                Some(&i) => out[i].1.tokens_minute = tokens,
                None => out.push((
                    scope(id),
                    SpendInWindows {
                        tokens_minute: tokens,
                        ..SpendInWindows::default()
                    },
                )),
            }
        }
    }
    let day = (
        ms(window_start(Window::Day, now_unix)),
        ms(reset_at(Window::Day, now_unix)),
    );
    for row in client.query(CONVERSATIONS_TODAY, &[&day.0, &day.1]).await? {
        out.push((
            ScopeKey::conversation(
                row.get::<_, Option<String>>(0).unwrap_or_default(),
                row.get::<_, String>(1),
            ),
            SpendInWindows {
                tokens_day: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                micro_usd_day: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
                ..SpendInWindows::default()
            },
        ));
    }
    Ok(out)
}

/// Every conversation's spend in one day (`$1..$2`, unix ms); a
/// conversation counts only its day.
const CONVERSATIONS_TODAY: &str = "
SELECT tenant_id, conversation_id,
    COALESCE(SUM(prompt_tokens + completion_tokens), 0)::BIGINT, COALESCE(SUM(micro_usd), 0)::BIGINT
FROM usage WHERE time_ms >= $1 AND time_ms < $2 AND conversation_id IS NOT NULL
GROUP BY tenant_id, conversation_id";

/// Runs `f` with a fresh connection on a thread of its own with its own
/// runtime: for the blocking callers (start-up, CLI, the resync pass),
/// which may be on a runtime's thread where `block_on` is not allowed.
/// `E`: the caller's error, which a connection's, a timeout's or the
/// worker's own failure becomes.
pub fn blocking<T, E, F, Fut>(settings: &PgSettings, timeout: Duration, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<PgError> + Send + 'static,
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let settings = settings.clone();
    let worker = std::thread::Builder::new()
        .name("tollgate-pg".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| config_error("ledger", format!("runtime: {e}")))?;
            runtime.block_on(async move {
                tokio::time::timeout(timeout, async move { f(settings.connect().await?).await })
                    .await
                    .unwrap_or_else(|_| Err(PgError::Timeout("query").into()))
            })
        })
        .map_err(|e| config_error("ledger", format!("thread: {e}")))?;
    worker
        .join()
        .unwrap_or_else(|_| Err(config_error("ledger", "postgres worker panicked").into()))
}

/// Longest a budget rebuild may wait for the shared ledger (the call that
/// found the windows lost waits for it, once per scope).
const REBUILD_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared ledger as the source Redis mode rebuilds lost budget windows
/// from (`limits::types::SpendSource`).
pub struct SharedSpend(pub PgSettings);

#[async_trait::async_trait]
impl SpendSource for SharedSpend {
    async fn spend(&self, scope: &ScopeKey, now_unix: u64) -> Result<SpendInWindows, String> {
        let run = async {
            let client = self.0.connect().await?;
            scope_spend(&client, scope, now_unix).await
        };
        tokio::time::timeout(REBUILD_TIMEOUT, run)
            .await
            .unwrap_or(Err(PgError::Timeout("budget rebuild")))
            .map_err(|e| e.to_string())
    }
}

/// One scope's settled spend in the windows current at `now_unix`: the day
/// and month from the rollup, the minute from the rows.
pub async fn scope_spend(
    client: &Client,
    scope: &ScopeKey,
    now_unix: u64,
) -> Result<SpendInWindows, PgError> {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (column, id) = match scope {
        ScopeKey::User(id) => ("user_id", id),
        ScopeKey::Tenant(id) => ("tenant_id", id),
        ScopeKey::Key(id) => ("key_id", id),
        ScopeKey::Conversation { tenant, id } => {
            let row = client
                .query_one(
                    "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0)::BIGINT,
                        COALESCE(SUM(micro_usd), 0)::BIGINT
                     FROM usage WHERE tenant_id = $3 AND conversation_id = $4
                        AND time_ms >= $1 AND time_ms < $2",
                    &[
                        &ms(window_start(Window::Day, now_unix)),
                        &ms(reset_at(Window::Day, now_unix)),
                        tenant,
                        id,
                    ],
                )
                .await?;
            return Ok(SpendInWindows {
                tokens_day: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                micro_usd_day: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                ..SpendInWindows::default()
            });
        }
    };
    let today = ms(window_start(Window::Day, now_unix)) / MS_PER_DAY;
    let month_first = ms(window_start(Window::Month, now_unix)) / MS_PER_DAY;
    let month_end = ms(reset_at(Window::Month, now_unix)) / MS_PER_DAY;
    let daily = client
        .query_one(
            &format!(
                "SELECT COALESCE(SUM(CASE WHEN day = $3 THEN prompt_tokens + completion_tokens END), 0)::BIGINT,
                    COALESCE(SUM(micro_usd), 0)::BIGINT
                 FROM usage_daily WHERE day >= $1 AND day < $2 AND {column} = $4"
            ),
            &[&month_first, &month_end, &today, id],
        )
        .await?;
    let minute = client
        .query_one(
            &format!(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0)::BIGINT
                 FROM usage WHERE {column} = $3 AND time_ms >= $1 AND time_ms < $2"
            ),
            &[
                &ms(window_start(Window::Minute, now_unix)),
                &ms(reset_at(Window::Minute, now_unix)),
                id,
            ],
        )
        .await?;
    let int = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(SpendInWindows {
        tokens_minute: int(minute.get(0)),
        tokens_day: int(daily.get(0)),
        micro_usd_month: int(daily.get(1)),
        micro_usd_day: 0,
    })
}
