//! Assembles the Pingora server: the proxy service on the public listeners,
//! the admin service, and the background services (health checks, SIGHUP
//! reload, drain watcher, budget resync during an upgrade).

use crate::admin::AdminApp;
use crate::cli::CliError;
use crate::config::load;
use crate::config::reload::{OnSignal, SignalService};
use crate::config::schema::{LedgerKind, LogTarget, StoreKind};
use crate::config::snapshot::Snapshot;
use crate::edge::conn_limit::{peer_ip, ConnectionLimiter};
use crate::edge::head_deadline::HeadGuard;
use crate::ledger::postgres::{PgSettings, SharedSpend};
use crate::ledger::reader::LedgerReader;
use crate::ledger::Ledger;
use crate::limits::local_counters::LocalCounters;
use crate::limits::redis_store::{self, RedisSettings, RedisStore};
use crate::limits::store::Store;
use crate::observe::logs::LogSink;
use crate::proxy::Gateway;
use crate::state::{GatewayState, Services};
use crate::upstream::health_loop::HealthCheckLoop;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::protocols::Stream;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn server_conf(snapshot: &Snapshot, config_path: &Path) -> ServerConf {
    let s = snapshot.server();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Each config gets its own upgrade socket, so instances on one host
    // (tests, several gateways) never hand sockets to the wrong process.
    let upgrade_sock = s.upgrade_sock.clone().unwrap_or_else(|| {
        let id = crate::auth::api_key::digest(&config_path.display().to_string());
        format!("/tmp/tollgate-{}.sock", hex::encode(&id[..8]))
    });
    ServerConf {
        threads: s.threads.unwrap_or(cores),
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock,
        pid_file: s
            .pid_file
            .clone()
            .unwrap_or_else(|| "/tmp/tollgate.pid".into()),
        ..ServerConf::default()
    }
}

/// Loads the config and builds a ready-to-run server (not yet running).
pub fn build(config_path: &Path, upgrade: bool) -> Result<(Server, Arc<GatewayState>), CliError> {
    let snapshot = load::load_snapshot(config_path, 1)?;
    crate::sys::heap::release_freed_memory();
    let obs = &snapshot.config.observability;
    init_tracing(&obs.log_level);
    let audit_target = obs
        .audit_log
        .clone()
        .unwrap_or_else(|| match obs.access_log {
            LogTarget::Off => LogTarget::Stderr,
            ref access => access.clone(),
        });
    let logs = LogSink::start(&obs.access_log, &audit_target)
        .map_err(|e| CliError::Runtime(format!("cannot open logs: {e}")))?;
    crate::observe::metrics::init();
    if let Some(g) = crate::observe::metrics::CONFIG_GENERATION.as_ref() {
        g.set(1);
    }

    let conf = server_conf(&snapshot, config_path);
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let listen = snapshot.server().listen.clone();
    // Parsed here, not by Pingora's `build()`, which would panic on bad files.
    let tls_listener = match &snapshot.server().tls {
        Some(tls) => Some((
            tls.listen.clone(),
            crate::edge::tls::listener_settings(tls)
                .map_err(|e| CliError::Runtime(format!("server.tls.{}: {e}", e.field())))?,
        )),
        None => None,
    };
    let admin_listen = snapshot.server().admin_listen.clone();
    let absolute = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    if !upgrade {
        ensure_bindable(&snapshot)?;
    }
    if let Some(pid_file) = &snapshot.server().pid_file {
        crate::sys::pidfile::write(Path::new(pid_file))
            .map_err(|e| CliError::Runtime(format!("cannot write pid_file {pid_file}: {e}")))?;
    }
    for (field, message) in crate::config::validate::warnings(&snapshot.config) {
        tracing::warn!("{field}: {message}");
    }
    let (store, ledger) = open_store(&snapshot)?;
    let keys = crate::keys::sync::open(&snapshot, &ledger);
    // The tokenizer is not loaded here: reservations use a byte bound, and
    // it is built off the event loop the first time a count is needed.

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    // Built here, outside Pingora's runtimes: the exporter's blocking
    // HTTP client may not be created inside one.
    let tracing = match &snapshot.config.observability.otlp {
        Some(otlp) => Some(
            crate::observe::otel::Tracing::start(otlp)
                .map_err(|e| CliError::Runtime(e.to_string()))?,
        ),
        None => None,
    };
    let services = Services {
        logs,
        store,
        ledger,
        connector,
        tracing,
        keys,
    };
    let state = GatewayState::new(snapshot, absolute, services);

    add_proxy_service(&mut server, &state, &listen, tls_listener);
    let mut admin = Service::new("tollgate admin".to_string(), AdminApp::new(state.clone()));
    admin.add_tcp(&admin_listen);

    server.add_service(admin);
    server.add_service(background_service(
        "health checks",
        HealthCheckLoop::new(state.snapshot.clone()),
    ));
    server.add_service(background_service(
        "sighup reload",
        SignalService::new(state.clone(), OnSignal::Reload),
    ));
    server.add_service(background_service(
        "log reopen",
        SignalService::new(state.clone(), OnSignal::ReopenLogs),
    ));
    server.add_service(background_service(
        "drain watcher",
        DrainWatcher(state.clone()),
    ));
    server.add_service(background_service(
        "budget alerts",
        crate::alerts::worker::AlertSender::new(state.alerts.clone(), state.store.clone()),
    ));
    server.add_service(background_service(
        "key sync",
        crate::keys::sync::KeySync::new(state.keys.clone(), state.snapshot.clone()),
    ));
    let phases = server.watch_execution_phase();
    server.add_service(background_service(
        "budget resync",
        crate::ledger::resync::BudgetResync::new(state.clone(), upgrade, phases),
    ));
    Ok((server, state))
}

/// The proxy service on the plain and TLS listeners. Bench builds
/// (`bench-tools`) may wrap the gateway to skip parts of its work
/// (`TOLLGATE_BENCH_SKIP`, dev::ablation); product builds cannot.
fn add_proxy_service(
    server: &mut Server,
    state: &Arc<GatewayState>,
    listen: &[String],
    tls: Option<(String, pingora::listeners::tls::TlsSettings)>,
) {
    let gateway = Gateway {
        state: state.clone(),
    };
    #[cfg(feature = "bench-tools")]
    {
        use crate::dev::ablation::{self, Ablated, Part};
        let skip = ablation::from_env();
        if skip != 0 {
            let heads = (skip & Part::HeadDeadline as u32 == 0).then(HeadGuard::new);
            let proxy = Ablated {
                inner: gateway,
                skip,
            };
            let app = listener_app(server, state, proxy, heads);
            return add_listeners(server, app, listen, tls);
        }
    }
    let app = listener_app(server, state, gateway, Some(HeadGuard::new()));
    add_listeners(server, app, listen, tls);
}

fn listener_app<P>(
    server: &Server,
    state: &Arc<GatewayState>,
    proxy: P,
    heads: Option<HeadGuard>,
) -> ListenerApp<pingora::proxy::HttpProxy<P>>
where
    P: pingora::proxy::ProxyHttp,
{
    ListenerApp {
        app: Arc::new(http_proxy(&server.configuration, proxy)),
        state: state.clone(),
        connections: ConnectionLimiter::default(),
        heads,
    }
}

fn add_listeners<A: ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    app: A,
    listen: &[String],
    tls: Option<(String, pingora::listeners::tls::TlsSettings)>,
) {
    let mut proxy = Service::new("tollgate proxy".to_string(), app);
    for addr in listen {
        proxy.add_tcp(addr);
    }
    if let Some((addr, settings)) = tls {
        proxy.add_tls_with_settings(&addr, None, settings);
    }
    server.add_service(proxy);
}

/// Pingora logs a listener that cannot bind and keeps running without it:
/// a gateway that answers nothing. Fail at start instead (exit 2). Skipped
/// for `-u`, where the sockets come from the running process.
fn ensure_bindable(snapshot: &Snapshot) -> Result<(), CliError> {
    let server = snapshot.server();
    let addrs = server
        .listen
        .iter()
        .chain(std::iter::once(&server.admin_listen))
        .chain(server.tls.as_ref().map(|t| &t.listen));
    for addr in addrs {
        std::net::TcpListener::bind(addr.as_str())
            .map_err(|e| CliError::Runtime(format!("cannot listen on {addr}: {e}")))?;
    }
    Ok(())
}

/// Opens the ledger and the counters. Local mode rebuilds the current
/// windows' spend from the ledger, so a restart (or a crash) never resets a
/// budget; redis mode does not (Redis holds the shared counters, and this
/// instance's ledger holds only what it served).
fn open_store(snapshot: &Snapshot) -> Result<(Arc<Store>, Ledger), CliError> {
    let store_config = &snapshot.config.store;
    let ledger = open_ledger(snapshot)?;
    if store_config.kind == StoreKind::Redis {
        let settings = RedisSettings {
            url: store_config
                .redis_url
                .as_ref()
                .map(|u| u.expose().clone())
                .unwrap_or_default(),
            password: redis_store::password(store_config).map_err(CliError::Runtime)?,
            prefix: store_config.redis_prefix.clone(),
            connect_timeout: Duration::from_millis(store_config.redis_timeouts.connect_ms),
            command_timeout: Duration::from_millis(store_config.redis_timeouts.command_ms),
            on_error: store_config.on_store_error,
        };
        let mut redis = RedisStore::new(settings)
            .map_err(|e| CliError::Runtime(format!("store.redis_url: {e}")))?;
        // Windows Redis loses are rebuilt from the shared ledger; a
        // per-instance ledger knows only its own calls (check warns).
        if let LedgerReader::Postgres(shared) = ledger.reader() {
            redis = redis.with_spend_source(Arc::new(SharedSpend(shared)));
        }
        return Ok((Arc::new(Store::Redis(redis)), ledger));
    }
    let now = crate::limits::window::now_unix();
    let spend = ledger
        .current_spend(now)
        .map_err(|e| CliError::Runtime(format!("cannot read usage ledger: {e}")))?;
    let local = LocalCounters::default();
    local
        .budgets
        .restore(&spend, now)
        .map_err(|e| CliError::Runtime(format!("cannot restore spend: {e}")))?;
    tracing::info!(scopes = spend.len(), "budgets restored from the ledger");
    Ok((Arc::new(Store::Local(local)), ledger))
}

/// The SQLite ledger at `store.path`, or with `ledger.kind: postgres` the
/// spool there and its forwarder to the shared ledger (which may be
/// unreachable now: the gateway starts anyway, rows wait in the spool).
fn open_ledger(snapshot: &Snapshot) -> Result<Ledger, CliError> {
    let path = &snapshot.config.store.path;
    let opened = match snapshot.config.ledger.kind {
        LedgerKind::Sqlite => Ledger::open(path),
        LedgerKind::Postgres => {
            let settings = PgSettings::from_config(&snapshot.config.ledger)
                .map_err(|e| CliError::Runtime(e.to_string()))?;
            Ledger::open_spooled(path, settings)
        }
    };
    opened.map_err(|e| CliError::Runtime(format!("cannot open usage ledger {path}: {e}")))
}

/// Marks the gateway as draining the moment Pingora starts shutting down.
struct DrainWatcher(Arc<GatewayState>);

#[async_trait]
impl BackgroundService for DrainWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        self.0.draining.store(true, Ordering::Release);
    }
}

/// The proxy app as the listeners see it: every new client connection
/// passes here first.
///
/// Per-IP connection cap (`server.max_connections_per_ip`): a connection
/// over it is closed at once, before a byte is read. The count is held for
/// the connection's life: Pingora keeps a keep-alive connection inside
/// `process_new` while it waits for the next request.
///
/// No shutdown `cleanup`: Pingora's proxy drops every idle keep-alive
/// client connection the moment shutdown starts (SIGTERM, or 5 s after
/// SIGQUIT during an upgrade). A client that sent its next request at that
/// instant gets a connection reset it cannot safely retry: measured as 2
/// failures in ~7,500 requests of the upgrade load test. Without the
/// cleanup, a kept-alive connection is still served during the grace
/// period, and its next answer carries `Connection: close` (Pingora turns
/// keep-alive off once shutting down), so busy clients move to the new
/// process cleanly. Connections idle for the whole grace period are dropped
/// when the runtimes stop, as before.
struct ListenerApp<A> {
    app: Arc<A>,
    state: Arc<GatewayState>,
    connections: ConnectionLimiter,
    /// Every request head is held to `server.header_timeout_ms` and the
    /// head limits before Pingora parses it (see `head_deadline`). None
    /// only in a bench build measuring what that costs.
    heads: Option<HeadGuard>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ListenerApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limit = self.state.snapshot.load().server().max_connections_per_ip;
        let _open = match (limit, limit.and_then(|_| peer_ip(&session))) {
            (Some(limit), Some(ip)) => match self.connections.admit(ip, limit) {
                Some(guard) => Some(guard),
                None => {
                    crate::observe::metrics::inc(
                        &crate::observe::metrics::REJECTIONS,
                        &["too_many_connections"],
                    );
                    tracing::warn!(%ip, limit, "connection refused: too many from this address");
                    return None;
                }
            },
            _ => None,
        };
        let Some(heads) = &self.heads else {
            return self.app.process_new(session, shutdown).await;
        };
        let snapshot = &self.state.snapshot;
        let settings = || {
            let server = snapshot.load();
            let server = server.server();
            (
                crate::edge::head_scan::HeadLimits {
                    max_header_bytes: server.max_header_bytes,
                    max_uri_bytes: server.max_uri_bytes,
                },
                std::time::Duration::from_millis(server.header_timeout_ms),
            )
        };
        heads.serve(&self.app, session, shutdown, settings).await
    }
}
