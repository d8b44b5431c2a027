//! Opening the keys at start-up, and keeping every instance's registry
//! current afterwards.
//!
//! PostgreSQL: a dedicated connection `LISTEN`s on `tollgate_keys` (every
//! change notifies in its own transaction), and every [`CHECK_EVERY`] asks
//! for the highest version as a safety net for a lost notification or a
//! dropped connection. Either way the rows above the registry's watermark
//! are read and applied, so a change reaches every instance within about
//! a second, and a revocation is never honoured longer than that.
//! SQLite (one instance): the writes apply to the registry directly.
//!
//! Both: the minute each key was last used is written in batches every
//! [`FLUSH_USES_EVERY`] (and at shutdown), off the request path.

use super::registry::KeyRegistry;
use super::service::Keys;
use super::store::{KeyStore, PgKeys, SqliteKeys};
use crate::auth::api_key::KeyIndex;
use crate::config::schema::{LedgerKind, StoreKind};
use crate::config::snapshot::Snapshot;
use crate::ledger::postgres::{blocking, migrate, PgSettings};
use crate::ledger::Ledger;
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The safety net's period: with the notification lost, a change is
/// still seen within this (plus one read).
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often last uses are written.
pub const FLUSH_USES_EVERY: Duration = Duration::from_secs(30);
/// A catch-up this large (a bulk import) hands freed memory back.
const LARGE_BATCH: usize = 1000;
/// Wait before reconnecting the listening connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Longest the start-up read of the shared ledger may take.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Ids of the file's keys, when a whole key set is checked against them.
fn config_ids(index: &KeyIndex) -> HashSet<String> {
    index
        .entries()
        .into_iter()
        .map(|e| e.identity.key_id.clone())
        .collect()
}

/// The keys service for this configuration, its registry loaded.
/// PostgreSQL unreachable at start: the registry starts empty (logged)
/// and the sync service loads it as soon as PostgreSQL answers.
pub fn open(snapshot: &Snapshot, ledger: &Ledger) -> Keys {
    let registry = Arc::new(KeyRegistry::new());
    let config = &snapshot.config;
    let store = match (config.ledger.kind, config.store.kind) {
        (LedgerKind::Postgres, _) => match PgSettings::from_config(&config.ledger) {
            Ok(settings) => Some(KeyStore::Postgres(Arc::new(PgKeys::new(settings)))),
            Err(e) => {
                tracing::error!(error = %e, "API-made keys unavailable");
                None
            }
        },
        (LedgerKind::Sqlite, StoreKind::Local) => {
            Some(KeyStore::Sqlite(Arc::new(SqliteKeys::new(ledger.path()))))
        }
        (LedgerKind::Sqlite, StoreKind::Redis) => None,
    };
    let loaded = match &store {
        Some(KeyStore::Sqlite(s)) => s.run(super::store::sqlite_load_all),
        Some(KeyStore::Postgres(p)) => load_shared(p.settings()),
        None => Ok(Vec::new()),
    };
    match loaded {
        Ok(keys) => {
            let ids = config_ids(snapshot.auth.keys());
            registry.apply_loaded(&keys, &|id| ids.contains(id));
            tracing::info!(keys = keys.len(), "API-made keys loaded");
            drop(keys);
            crate::sys::heap::release_freed_memory();
        }
        Err(e) => {
            tracing::warn!(error = %e, "API-made keys not loaded yet: the key store is unreachable")
        }
    }
    Keys::new(registry, store)
}

/// Every stored key, read on a thread of its own (start-up runs outside
/// any runtime), migrating the schema first.
fn load_shared(settings: &PgSettings) -> Result<Vec<super::StoredKey>, super::store::StoreError> {
    blocking(settings, START_TIMEOUT, |mut client| async move {
        migrate(&mut client).await?;
        super::store::pg_load_since(&client, 0).await
    })
}

/// The background service: propagation and last uses.
pub struct KeySync {
    keys: Arc<Keys>,
    snapshot: SharedSnapshot,
}

impl KeySync {
    pub fn new(keys: Arc<Keys>, snapshot: SharedSnapshot) -> KeySync {
        KeySync { keys, snapshot }
    }

    async fn flush_uses(&self) {
        let (Some(store), registry) = (self.keys.store(), &self.keys.registry) else {
            return;
        };
        let used = registry.take_used();
        if let Err(e) = store.touch(used.clone()).await {
            tracing::debug!(error = %e, "last key uses not written yet");
            registry.unflushed(&used);
        }
    }

    /// Reads and applies the rows above the watermark.
    async fn catch_up(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<(), super::store::StoreError> {
        let rows = super::store::pg_load_since(client, self.keys.registry.watermark()).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let snapshot = self.snapshot.load();
        let config = snapshot.auth.keys();
        if rows.len() > 64 && !config.is_empty() {
            let ids = config_ids(config);
            self.keys
                .registry
                .apply_loaded(&rows, &|id| ids.contains(id));
        } else {
            self.keys
                .registry
                .apply_loaded(&rows, &|id| !config.is_empty() && config.has_id(id));
        }
        if rows.len() >= LARGE_BATCH {
            // The rows read and the table replaced are freed: give the
            // pages back rather than keep a bulk import's peak for good.
            drop(rows);
            crate::sys::heap::release_freed_memory();
        }
        Ok(())
    }

    /// One listening connection's life; returns when it fails (or on
    /// shutdown, with `true`).
    async fn listen(&self, settings: &PgSettings, shutdown: &mut ShutdownWatch) -> bool {
        let connected = async {
            let (client, rx) = settings.connect_listening().await?;
            client
                .batch_execute(&format!("LISTEN {}", super::store::CHANNEL))
                .await?;
            Ok::<_, super::store::StoreError>((client, rx))
        };
        let (client, mut notifications) = match tokio::time::timeout(START_TIMEOUT, connected).await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "keys: cannot listen on postgres");
                return false;
            }
            Err(_) => return false,
        };
        // Whatever changed while not listening.
        if let Err(e) = self.catch_up(&client).await {
            tracing::debug!(error = %e, "keys: catch-up failed");
            return false;
        }
        let mut check = tokio::time::interval(CHECK_EVERY);
        let mut flush = tokio::time::interval(FLUSH_USES_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return true,
                n = notifications.recv() => {
                    if n.is_none() {
                        return false;
                    }
                    // Drain the burst: one read for all of it.
                    while notifications.try_recv().is_ok() {}
                    if self.catch_up(&client).await.is_err() {
                        return false;
                    }
                }
                _ = check.tick() => {
                    let newer = tokio::time::timeout(CHECK_EVERY, super::store::pg_max_version(&client)).await;
                    match newer {
                        Ok(Ok(v)) if v > self.keys.registry.watermark() => {
                            if self.catch_up(&client).await.is_err() {
                                return false;
                            }
                        }
                        Ok(Ok(_)) => {}
                        _ => return false,
                    }
                }
                _ = flush.tick() => self.flush_uses().await,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for KeySync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        match self.keys.store() {
            Some(KeyStore::Postgres(pg)) => {
                let settings = pg.settings().clone();
                loop {
                    if self.listen(&settings, &mut shutdown).await {
                        break;
                    }
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(RECONNECT_AFTER) => {}
                    }
                }
            }
            Some(KeyStore::Sqlite(_)) => {
                let mut flush = tokio::time::interval(FLUSH_USES_EVERY);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = flush.tick() => self.flush_uses().await,
                    }
                }
            }
            None => return,
        }
        self.flush_uses().await;
    }
}
