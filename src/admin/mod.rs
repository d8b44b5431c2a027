//! The admin listener (DESIGN §5): health, readiness, metrics, and the
//! token-protected `/admin/*` API. Never exposed publicly.

pub mod keys;
pub mod ui;

use crate::auth::api_key::{digest, parse_digest_hex};
use crate::config::reload;
use crate::keys::service::Caller;
use crate::limits::budget::ScopeKey;
use crate::limits::failed_auth::FailedAuthGuard;
use crate::limits::window::now_unix;
use crate::llm::pricing::usd_string;
use crate::observe::metrics;
use crate::state::GatewayState;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct AdminApp {
    state: Arc<GatewayState>,
    /// Failed admin-token attempts per client IP (this listener's own
    /// count: the admin listener is per instance).
    failed_auth: FailedAuthGuard,
}

impl AdminApp {
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self {
            state,
            failed_auth: FailedAuthGuard::new(),
        }
    }
}

/// Failed admin-token attempts per IP per minute when
/// `auth.failed_auth_per_ip_per_minute` is not set: the admin token is
/// never left open to unbounded guessing.
const DEFAULT_ADMIN_FAILED_AUTH_PER_MINUTE: u32 = 20;

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Vec<u8>> {
    reply(status, "application/json", value.to_string().into_bytes())
}

fn admin_error(status: StatusCode, code: &str, message: &str) -> Response<Vec<u8>> {
    json_reply(
        status,
        &json!({"error": {"type": "admin_error", "code": code, "message": message}}),
    )
}

impl AdminApp {
    /// Who the bearer token is: the full admin token, or one of
    /// `server.admin_tokens` (bound to a tenant). Every configured digest
    /// is compared (constant time each), so the answer's timing does not
    /// say which token, if any, nearly matched.
    fn caller(&self, session: &ServerSession) -> Option<Caller> {
        let snapshot = self.state.snapshot.load();
        let server = snapshot.server();
        let presented = session
            .get_header(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let presented = digest(presented.trim());
        let matches = |hex: &str| {
            parse_digest_hex(&hex.to_ascii_lowercase())
                .is_some_and(|expected| bool::from(presented.ct_eq(&expected)))
        };
        let mut found = None;
        if server
            .admin_token_sha256
            .as_ref()
            .is_some_and(|h| matches(h.expose()))
        {
            found = Some(Caller::full());
        }
        for t in &server.admin_tokens {
            if matches(t.sha256.expose()) && found.is_none() {
                found = Some(Caller {
                    admin_id: t.id.clone(),
                    tenant: Some(t.tenant.clone()),
                    grant_roles: t.grant_roles.clone(),
                });
            }
        }
        found
    }

    async fn admin(
        &self,
        caller: &Caller,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Response<Vec<u8>> {
        if caller.tenant.is_some() && matches!(path, "/admin/reload" | "/admin/config") {
            return admin_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this admin token is bound to a tenant: reload and config need the full admin token",
            );
        }
        match (method, path) {
            ("GET", "/admin/usage") => self.usage(caller, query).await,
            ("GET", "/admin/usage/report") => self.report(caller, query).await,
            ("POST", "/admin/reload") => match reload::reload(&self.state).await {
                Ok(done) => json_reply(
                    StatusCode::OK,
                    &json!({"generation": done.generation, "warnings": done.warnings}),
                ),
                Err(e) => json_reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": {"type": "admin_error", "code": "invalid_config",
                                      "message": "configuration rejected; the previous one keeps serving",
                                      "problems": e.lines()}}),
                ),
            },
            ("GET", "/admin/config") => {
                let snapshot = self.state.snapshot.load_full();
                let mut config = serde_json::to_value(&*snapshot.config).unwrap_or(Value::Null);
                if let Some(auth) = config.get_mut("auth") {
                    auth["api_keys"] =
                        serde_json::to_value(snapshot.api_keys()).unwrap_or_default();
                }
                // Secret-bearing fields are `Secret`s: serialised as "<redacted>".
                json_reply(
                    StatusCode::OK,
                    &json!({"generation": snapshot.generation, "config": config}),
                )
            }
            _ => admin_error(StatusCode::NOT_FOUND, "not_found", "unknown admin endpoint"),
        }
    }
}

/// Decoded `name=value` pairs of a query string.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl AdminApp {
    /// `GET /admin/usage/report`: spend from the ledger (report.rs): the
    /// shared one with `ledger.kind: postgres`, else the SQLite file (read
    /// on the blocking pool so a long scan never stalls the admin listener).
    async fn report(&self, caller: &Caller, query: Option<&str>) -> Response<Vec<u8>> {
        use crate::ledger::report::{Format, ReportError, ReportQuery};
        let mut pairs = query_pairs(query);
        // A tenant-bound token reads its tenant's rows only.
        if let Some(own) = &caller.tenant {
            if pairs.iter().any(|(k, v)| k == "tenant" && v != own) {
                return admin_error(StatusCode::NOT_FOUND, "not_found", "no such tenant");
            }
            pairs.retain(|(k, _)| k != "tenant");
            pairs.push(("tenant".into(), own.clone()));
        }
        let (report_query, format) = match ReportQuery::from_pairs(&pairs) {
            Ok(q) => q,
            Err(e) => {
                return admin_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
            }
        };
        let ran = self
            .state
            .ledger
            .reader()
            .report(report_query)
            .await
            .and_then(|report| match format {
                Format::Json => Ok((
                    "application/json",
                    report.to_json().to_string().into_bytes(),
                )),
                Format::Csv => Ok(("text/csv; charset=utf-8", report.to_csv()?)),
            });
        match ran {
            Ok((content_type, body)) => reply(StatusCode::OK, content_type, body),
            Err(e @ (ReportError::InvalidParameter { .. } | ReportError::UnknownParameter(_))) => {
                admin_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
            }
            Err(e @ ReportError::Task(_)) => admin_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            ),
            Err(e) => admin_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                &e.to_string(),
            ),
        }
    }

    /// `GET /admin/usage?user=ID`, `?tenant=ID` or `?key=ID`: spend in the
    /// current windows, each limit and what remains.
    async fn usage(&self, caller: &Caller, query: Option<&str>) -> Response<Vec<u8>> {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| {
                        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                        (k.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let find = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let snapshot = self.state.snapshot.load_full();
        if let Some(own) = &caller.tenant {
            let foreign_tenant = find("tenant").is_some_and(|t| &t != own);
            let foreign_user =
                find("user").is_some_and(|u| !self.tenant_has_user(&snapshot, own, &u));
            if foreign_tenant || foreign_user {
                return admin_error(StatusCode::NOT_FOUND, "not_found", "no such user or tenant");
            }
            if find("user").is_some() {
                pairs.retain(|(k, _)| k != "tenant");
                pairs.push(("tenant".into(), own.clone()));
            }
        }
        let find = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // `&tenant=` may accompany `user=`: Redis keeps a user's counters
        // under the tenant's key; API-key users are found without it.
        let (scope, limits, tenant) = match (find("user"), find("tenant"), find("key")) {
            (None, None, Some(id)) => {
                let identity = snapshot.auth.keys().identity_of(&id).or_else(|| {
                    let made = self.state.keys.registry.table();
                    let found = made
                        .values()
                        .find(|k| k.identity.key_id == id)
                        .map(|k| Arc::clone(&k.identity));
                    found
                });
                // A tenant-bound token: another tenant's key is not found.
                let Some(identity) =
                    identity.filter(|i| caller.tenant.as_ref().is_none_or(|own| &i.tenant == own))
                else {
                    return admin_error(StatusCode::NOT_FOUND, "not_found", "no such key");
                };
                // A key without a budget is not counted (nothing to show
                // but zeros): its limits say so (all null).
                let limits = snapshot.budgets.key_limits(&identity).unwrap_or_default();
                (ScopeKey::Key(id), limits, identity.tenant.clone())
            }
            (Some(user), tenant, _) => {
                let limits = snapshot.budgets.user_limits(&user);
                let tenant = tenant.or_else(|| {
                    let keys = snapshot.auth.keys().entries();
                    keys.into_iter()
                        .find(|k| k.identity.user == user)
                        .map(|k| k.identity.tenant.clone())
                        .or_else(|| {
                            let made = self.state.keys.registry.table();
                            let tenant = made
                                .values()
                                .find(|k| k.identity.user == user)
                                .map(|k| k.identity.tenant.clone());
                            tenant
                        })
                });
                let Some(tenant) = tenant.or_else(|| {
                    // Local counters are not kept per tenant.
                    self.state.store.as_local().map(|_| String::new())
                }) else {
                    return admin_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        "this user is not an API-key user: give its tenant too (&tenant=ID)",
                    );
                };
                (ScopeKey::User(user), limits, tenant)
            }
            (None, Some(tenant), _) => (
                ScopeKey::Tenant(tenant.clone()),
                snapshot.budgets.tenant_limits(),
                tenant,
            ),
            (None, None, None) => {
                return admin_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "give ?user=ID (optionally &tenant=ID), ?tenant=ID or ?key=ID",
                )
            }
        };
        let (usage, answered_by) = match self.state.store.usage(&scope, &tenant, now_unix()).await {
            Ok(u) => u,
            Err(e) => {
                return admin_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    &e.to_string(),
                )
            }
        };
        let remaining = |limit: Option<u64>, used: u64| limit.map(|l| l.saturating_sub(used));
        json_reply(
            StatusCode::OK,
            &json!({
                "scope": scope.kind(),
                "id": scope.id(),
                // Which counters answered: "redis" (shared), or "local" (this
                // instance: local mode, or Redis down with on_store_error: allow).
                "store": answered_by.name(),
                "tokens_minute": usage.tokens_minute,
                "tokens_day": usage.tokens_day,
                "micro_usd_month": usage.micro_usd_month,
                "usd_month": usd_string(usage.micro_usd_month),
                "reserved_tokens": usage.reserved_tokens,
                "reserved_micro_usd": usage.reserved_micro_usd,
                "limits": {
                    "tokens_per_minute": limits.tokens_per_minute,
                    "tokens_per_day": limits.tokens_per_day,
                    "usd_per_month": limits.micro_usd_per_month.map(usd_string),
                },
                "remaining": {
                    "tokens_minute": remaining(limits.tokens_per_minute, usage.tokens_minute + usage.reserved_tokens),
                    "tokens_day": remaining(limits.tokens_per_day, usage.tokens_day + usage.reserved_tokens),
                    "usd_month": remaining(limits.micro_usd_per_month, usage.micro_usd_month + usage.reserved_micro_usd).map(usd_string),
                },
            }),
        )
    }
}

impl AdminApp {
    /// Whether one of `tenant`'s keys (the file's or API-made) belongs to
    /// `user`: a tenant-bound token may read only its own users' usage.
    fn tenant_has_user(
        &self,
        snapshot: &crate::config::snapshot::Snapshot,
        tenant: &str,
        user: &str,
    ) -> bool {
        let ours = |t: &str, u: &str| t == tenant && u == user;
        snapshot
            .auth
            .keys()
            .entries()
            .iter()
            .any(|k| ours(&k.identity.tenant, &k.identity.user))
            || self
                .state
                .keys
                .registry
                .table()
                .values()
                .any(|k| ours(&k.identity.tenant, &k.identity.user))
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => json_reply(StatusCode::OK, &json!({"status": "ok"})),
            ("GET", "/readyz") => {
                if self.state.draining.load(Ordering::Acquire) {
                    json_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "draining"}),
                    )
                } else {
                    let generation = self.state.snapshot.load().generation;
                    json_reply(
                        StatusCode::OK,
                        &json!({"status": "ready", "generation": generation}),
                    )
                }
            }
            ("GET", p) if p == "/admin/ui" || p.starts_with("/admin/ui/") => ui::asset(p),
            ("GET", "/metrics") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(),
            ),
            (_, p) if p.starts_with("/admin/") => {
                let ip = session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip());
                let limit = self
                    .state
                    .snapshot
                    .load()
                    .config
                    .auth
                    .failed_auth_per_ip_per_minute
                    .unwrap_or(DEFAULT_ADMIN_FAILED_AUTH_PER_MINUTE);
                // Checked before the token: a locked-out address learns
                // nothing, not even whether its guess was right.
                if let Some(retry_after) = ip.and_then(|ip| self.failed_auth.blocked(ip, limit)) {
                    let mut resp = admin_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "too many failed authentication attempts from this address",
                    );
                    resp.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from(retry_after),
                    );
                    return resp;
                }
                let Some(caller) = self.caller(session) else {
                    if let Some(ip) = ip {
                        self.failed_auth.record_failure(ip);
                    }
                    return admin_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_admin_token",
                        "admin endpoints need Authorization: Bearer <admin token>",
                    );
                };
                let query = session.req_header().uri.query().map(str::to_string);
                if p == "/admin/keys" || p.starts_with("/admin/keys/") {
                    let path = p.to_string();
                    return self
                        .keys(session, &caller, &method, &path, query.as_deref())
                        .await;
                }
                self.admin(&caller, &method, p, query.as_deref()).await
            }
            _ => admin_error(StatusCode::NOT_FOUND, "not_found", "unknown endpoint"),
        }
    }
}
