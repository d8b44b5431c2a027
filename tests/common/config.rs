//! The one way tests write a gateway config: a typed builder over the
//! schema of DESIGN.md §3 that renders YAML text.
//!
//! `ConfigBuilder::new()` is the part every test config shares (`server`
//! with the `{listen}`/`{admin}` placeholders `Gateway::start` fills in,
//! the admin token `ADMIN_TOKEN`, 2 threads, a 1 s grace period; the
//! ledger at `{dir}/usage.db`; the access log at `{dir}/access.log`, level
//! warn). `ConfigBuilder::support` adds the support API of most tests.
//! Methods named after a config field set that field; `Pool`, `Route`,
//! `Model` and `Budget` build the list entries; every part has `set` and
//! `unset` for a field no method names, and `ConfigBuilder::section`
//! takes a whole rare section as YAML.

use super::{fill_placeholders, run_check, sha, Gateway, TestKey, ADMIN_TOKEN};
use serde::Serialize;
use serde_yaml::{Mapping, Value};

fn yaml(value: impl Serialize) -> Value {
    serde_yaml::to_value(value).expect("a value YAML can hold")
}

/// One setter per config field, named after it: `name: type` pairs; the
/// setter calls `self.$set(field name, value)`.
macro_rules! field_setters {
    ($set:ident => $($name:ident: $ty:ty),* $(,)?) => {
        $(pub fn $name(self, value: $ty) -> Self { self.$set(stringify!($name), value) })*
    };
}

/// A mapping of the config (a pool, a route, a model, a budget): fields
/// set in order; `set`/`unset` reach any field.
pub trait Fields: Sized {
    fn fields(&mut self) -> &mut Mapping;

    fn set(mut self, key: &str, value: impl Serialize) -> Self {
        self.fields().insert(key.into(), yaml(value));
        self
    }

    fn unset(mut self, key: &str) -> Self {
        self.fields().remove(key);
        self
    }
}

macro_rules! part {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $name(Mapping);
        impl Fields for $name {
            fn fields(&mut self) -> &mut Mapping {
                &mut self.0
            }
        }
    };
}

part!(
    /// An entry of `upstreams`.
    Pool
);
part!(
    /// An entry of `routes`.
    Route
);
part!(
    /// An entry of `models`.
    Model
);
part!(
    /// An entry of `limits.budgets`.
    Budget
);

impl Pool {
    pub fn new(peers: &[&str]) -> Pool {
        Pool::default().set("peers", peers)
    }

    /// `timeouts: { connect_ms, read_ms }`.
    pub fn timeouts(self, connect_ms: u64, read_ms: u64) -> Pool {
        self.set(
            "timeouts",
            serde_json::json!({"connect_ms": connect_ms, "read_ms": read_ms}),
        )
    }

    /// The harness's fast HTTP health check: `/healthz` every 200 ms,
    /// down after 2 failures, up after 1 success.
    pub fn health_check(self) -> Pool {
        self.set(
            "health_check",
            serde_json::json!({"kind": "http", "path": "/healthz", "interval_ms": 200,
                "timeout_ms": 200, "unhealthy_after": 2, "healthy_after": 1}),
        )
    }

    pub fn no_health_check(self) -> Pool {
        self.unset("health_check")
    }

    pub fn circuit_breaker(self, failure_threshold: u32, open_seconds: u64) -> Pool {
        self.set(
            "circuit_breaker",
            serde_json::json!({"failure_threshold": failure_threshold, "open_seconds": open_seconds}),
        )
    }

    /// `tls: true` with the name the peer's certificate must carry.
    pub fn tls(self, sni: &str) -> Pool {
        self.set("tls", true).set("sni", sni)
    }

    /// One entry of `set_headers`.
    pub fn set_header(mut self, name: &str, value: &str) -> Pool {
        let headers = self
            .fields()
            .entry("set_headers".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Value::Mapping(headers) = headers {
            headers.insert(name.into(), value.into());
        }
        self
    }

    field_setters!(set => retries: u32, selection: &str, ca_file: &str, pins_sha256: &[&str]);
}

impl Route {
    /// A plain HTTP route to the pool `upstream`.
    pub fn http(name: &str, path: &str, methods: &[&str], upstream: &str) -> Route {
        Route::default()
            .set("name", name)
            .set("path", path)
            .set("methods", methods)
            .set("upstream", upstream)
    }

    /// A `kind: llm` route (POST; the API defaults to openai_chat).
    pub fn llm(name: &str, path: &str) -> Route {
        Route::default()
            .set("name", name)
            .set("path", path)
            .set("methods", ["POST"])
            .set("kind", "llm")
    }

    /// `owner: { param, bypass_roles }`.
    pub fn owner(self, param: &str, bypass_roles: &[&str]) -> Route {
        self.set(
            "owner",
            serde_json::json!({"param": param, "bypass_roles": bypass_roles}),
        )
    }

    pub fn rate_limit(self, requests_per_minute: u64) -> Route {
        self.set(
            "rate_limit",
            serde_json::json!({ "requests_per_minute": requests_per_minute }),
        )
    }

    field_setters!(set => api: &str, roles: &[&str], guards: &[&str], methods: &[&str], upstream: &str);
}

impl Model {
    /// A model served by the pool `upstream` at these $/Mtok prices.
    pub fn new(
        name: &str,
        upstream: &str,
        input_usd: f64,
        output_usd: f64,
        max_tokens: u64,
    ) -> Model {
        Model::default()
            .set("name", name)
            .set("upstream", upstream)
            .set("input_usd_per_mtok", input_usd)
            .set("output_usd_per_mtok", output_usd)
            .set("max_tokens", max_tokens)
    }

    field_setters!(set => upstream_model: &str, upstream_path: &str, roles: &[&str],
        fallbacks: &[&str], cached_input_usd_per_mtok: f64, cache_write_usd_per_mtok: f64);
}

impl Budget {
    /// A budget of one scope: user, tenant, key or conversation.
    pub fn scope(scope: &str) -> Budget {
        Budget::default().set("scope", scope)
    }

    pub fn user() -> Budget {
        Budget::scope("user")
    }

    field_setters!(set => tokens_per_minute: u64, tokens_per_day: u64, usd_per_day: f64,
        usd_per_month: f64, enforce: bool);
}

/// A whole gateway config; `render` writes it as YAML.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    server: Mapping,
    keys: Vec<Value>,
    auth: Mapping,
    pools: Vec<(String, Pool)>,
    routes: Vec<Route>,
    models: Vec<Model>,
    limits: Mapping,
    budgets: Vec<Budget>,
    guards: Mapping,
    store: Mapping,
    observability: Mapping,
    sections: Mapping,
}

impl ConfigBuilder {
    /// The part every test config shares (see the module doc); no keys,
    /// pools, routes or limits yet.
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
            .listen("{listen}")
            .admin_listen("{admin}")
            .admin_token(ADMIN_TOKEN)
            .threads(2)
            .grace_period_seconds(1)
            .store_path("{dir}/usage.db")
            .access_log("{dir}/access.log")
            .log_level("warn")
    }

    /// The support API most tests run against: bob, alice, root and the
    /// expired carol; a 4 KiB body limit; the pool `support` on `peers`
    /// (fast health check, connect 300 ms, read 2 s); the routes
    /// `agent-tickets` (GET, owner rule on `{agent}`, admin bypass),
    /// `tickets` (GET POST PATCH), `users` (any method, admin only) and
    /// `limited` (GET, 10 a minute); 1,000 requests a minute per user.
    pub fn support(peers: &[&str]) -> ConfigBuilder {
        ConfigBuilder::new()
            .max_body_bytes(4096)
            .keys(&[super::BOB, super::ALICE, super::ROOT, super::CAROL_EXPIRED])
            .pool(
                "support",
                Pool::new(peers).health_check().timeouts(300, 2000),
            )
            .route(
                Route::http(
                    "agent-tickets",
                    "/api/v1/agents/{agent}/tickets",
                    &["GET"],
                    "support",
                )
                .roles(&["agent", "admin"])
                .owner("agent", &["admin"]),
            )
            .route(
                Route::http(
                    "tickets",
                    "/api/v1/tickets/**",
                    &["GET", "POST", "PATCH"],
                    "support",
                )
                .roles(&["agent", "admin"]),
            )
            .route(Route::http("users", "/api/v1/users/**", &["*"], "support").roles(&["admin"]))
            .route(Route::http("limited", "/api/v1/limited/**", &["GET"], "support").rate_limit(10))
            .default_rate_limit(1000)
    }

    /// A field of `server`.
    pub fn server(mut self, key: &str, value: impl Serialize) -> Self {
        self.server.insert(key.into(), yaml(value));
        self
    }

    /// The only plain listener.
    pub fn listen(self, addr: &str) -> Self {
        self.server("listen", [addr])
    }

    /// `admin_token_sha256` of `token`.
    pub fn admin_token(self, token: &str) -> Self {
        self.server("admin_token_sha256", sha(token))
    }

    /// `server.tls`: a TLS listener with its certificate and key files.
    pub fn tls(self, listen: &str, cert_file: &str, key_file: &str) -> Self {
        self.server(
            "tls",
            serde_json::json!({"listen": listen, "cert_file": cert_file, "key_file": key_file}),
        )
    }

    field_setters!(server => admin_listen: &str, threads: u32, max_body_bytes: u64,
        max_uri_bytes: u64, max_header_bytes: u64, header_timeout_ms: u64, body_timeout_ms: u64,
        max_connections_per_ip: u32, grace_period_seconds: u64, pid_file: &str);

    /// The API keys of `keys`, after those already there.
    pub fn keys(mut self, keys: &[TestKey]) -> Self {
        for key in keys {
            let mut entry = Mapping::new();
            entry.insert("id".into(), key.id.into());
            entry.insert("sha256".into(), sha(key.key).into());
            entry.insert("user".into(), key.user.into());
            entry.insert("tenant".into(), key.tenant.into());
            entry.insert("roles".into(), yaml(key.roles));
            if let Some(at) = key.expires_at {
                entry.insert("expires_at".into(), at.into());
            }
            self.keys.push(Value::Mapping(entry));
        }
        self
    }

    /// Without the API key whose id is `id`.
    pub fn without_key(mut self, id: &str) -> Self {
        self.keys.retain(|k| k.get("id") != Some(&Value::from(id)));
        self
    }

    /// A field of `auth` beside `api_keys` (`jwt`, ...).
    pub fn auth(mut self, key: &str, value: impl Serialize) -> Self {
        self.auth.insert(key.into(), yaml(value));
        self
    }

    pub fn failed_auth_per_ip_per_minute(self, n: u32) -> Self {
        self.auth("failed_auth_per_ip_per_minute", n)
    }

    pub fn pool(mut self, name: &str, pool: Pool) -> Self {
        self.pools.push((name.to_string(), pool));
        self
    }

    /// Changes the pool `name` (which must exist).
    pub fn with_pool(mut self, name: &str, change: impl FnOnce(Pool) -> Pool) -> Self {
        let (_, pool) = self
            .pools
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no pool {name}"));
        *pool = change(std::mem::take(pool));
        self
    }

    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Changes the route named `name` (which must exist).
    pub fn with_route(mut self, name: &str, change: impl FnOnce(Route) -> Route) -> Self {
        let route = self
            .routes
            .iter_mut()
            .find(|r| r.0.get("name") == Some(&Value::from(name)))
            .unwrap_or_else(|| panic!("no route {name}"));
        *route = change(std::mem::take(route));
        self
    }

    pub fn model(mut self, model: Model) -> Self {
        self.models.push(model);
        self
    }

    /// Changes the model named `name` (which must exist).
    pub fn with_model(mut self, name: &str, change: impl FnOnce(Model) -> Model) -> Self {
        let model = self
            .models
            .iter_mut()
            .find(|m| m.0.get("name") == Some(&Value::from(name)))
            .unwrap_or_else(|| panic!("no model {name}"));
        *model = change(std::mem::take(model));
        self
    }

    /// A field of `limits`.
    pub fn limits(mut self, key: &str, value: impl Serialize) -> Self {
        self.limits.insert(key.into(), yaml(value));
        self
    }

    /// `limits.default`: requests a minute per user.
    pub fn default_rate_limit(self, requests_per_minute: u64) -> Self {
        self.limits(
            "default",
            serde_json::json!({ "requests_per_minute": requests_per_minute }),
        )
    }

    pub fn budget(mut self, budget: Budget) -> Self {
        self.budgets.push(budget);
        self
    }

    /// One entry of `limits.overrides`, e.g. `("alice", json!({"tokens_per_day": 10}))`.
    pub fn limit_override(mut self, user: &str, limits: serde_json::Value) -> Self {
        let overrides = self
            .limits
            .entry("overrides".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Value::Mapping(overrides) = overrides {
            overrides.insert(user.into(), yaml(limits));
        }
        self
    }

    /// A field of `guards`.
    pub fn guards(mut self, key: &str, value: impl Serialize) -> Self {
        self.guards.insert(key.into(), yaml(value));
        self
    }

    /// `guards.pii`.
    pub fn pii(self, detect: &[&str], action: &str) -> Self {
        self.guards(
            "pii",
            serde_json::json!({"detect": detect, "action": action}),
        )
    }

    /// `guards.injection`, with patterns added to the built-in list.
    pub fn injection(self, action: &str, patterns: &[&str]) -> Self {
        let mut injection = serde_json::json!({ "action": action });
        if !patterns.is_empty() {
            injection["patterns"] = serde_json::json!(patterns);
        }
        self.guards("injection", injection)
    }

    field_setters!(guards => max_messages: u32, max_prompt_tokens: u64);

    /// A field of `store`.
    pub fn store(mut self, key: &str, value: impl Serialize) -> Self {
        self.store.insert(key.into(), yaml(value));
        self
    }

    /// The ledger file (`store.path`).
    pub fn store_path(self, path: &str) -> Self {
        self.store("path", path)
    }

    /// `store.kind: redis` at `url`.
    pub fn redis(self, url: &str) -> Self {
        self.store("kind", "redis").store("redis_url", url)
    }

    /// `store.redis_timeouts`.
    pub fn redis_timeouts(self, connect_ms: u64, command_ms: u64) -> Self {
        self.store(
            "redis_timeouts",
            serde_json::json!({"connect_ms": connect_ms, "command_ms": command_ms}),
        )
    }

    field_setters!(store => on_store_error: &str, redis_password_file: &str, redis_prefix: &str);

    /// A field of `observability`.
    pub fn observability(mut self, key: &str, value: impl Serialize) -> Self {
        self.observability.insert(key.into(), yaml(value));
        self
    }

    /// `observability.otlp`: trace export to `endpoint`.
    pub fn otlp(self, endpoint: &str, service_name: &str, sample_ratio: f64) -> Self {
        self.observability(
            "otlp",
            serde_json::json!({"endpoint": endpoint, "service_name": service_name,
                "sample_ratio": sample_ratio}),
        )
    }

    field_setters!(observability => access_log: &str, log_level: &str);

    /// A whole top-level section given as YAML (`attribution`, `alerts`,
    /// ...), for what no method above names.
    pub fn section(mut self, name: &str, yaml_text: &str) -> Self {
        let value: Value = serde_yaml::from_str(yaml_text)
            .unwrap_or_else(|e| panic!("section {name}: {e}: {yaml_text}"));
        self.sections.insert(name.into(), value);
        self
    }

    /// The config as YAML, placeholders (`{listen}`, `{admin}`, `{dir}`)
    /// left for `Gateway::start` or `fill_placeholders`.
    pub fn render(&self) -> String {
        let mut doc = Mapping::new();
        let mut put = |key: &str, value: Value| {
            let empty = match &value {
                Value::Mapping(m) => m.is_empty(),
                Value::Sequence(s) => s.is_empty(),
                _ => false,
            };
            if !empty {
                doc.insert(key.into(), value);
            }
        };
        put("server", Value::Mapping(self.server.clone()));
        let mut auth = Mapping::new();
        if !self.keys.is_empty() {
            auth.insert("api_keys".into(), Value::Sequence(self.keys.clone()));
        }
        auth.extend(self.auth.clone());
        put("auth", Value::Mapping(auth));
        let pools = self
            .pools
            .iter()
            .map(|(name, pool)| (Value::from(name.as_str()), Value::Mapping(pool.0.clone())))
            .collect();
        put("upstreams", Value::Mapping(pools));
        put("routes", entries(&self.routes, |r| &r.0));
        put("models", entries(&self.models, |m| &m.0));
        let mut limits = self.limits.clone();
        if !self.budgets.is_empty() {
            limits.insert("budgets".into(), entries(&self.budgets, |b| &b.0));
        }
        put("limits", Value::Mapping(limits));
        put("guards", Value::Mapping(self.guards.clone()));
        put("store", Value::Mapping(self.store.clone()));
        put("observability", Value::Mapping(self.observability.clone()));
        for (name, value) in &self.sections {
            put(name.as_str().unwrap_or_default(), value.clone());
        }
        serde_yaml::to_string(&doc).expect("the config renders")
    }

    /// Renders the config and starts a gateway on it.
    pub fn start(&self) -> Gateway {
        Gateway::start(&self.render())
    }

    /// `tollgate check` on the config, placeholders filled: (exit code,
    /// stdout, stderr).
    pub fn check(&self) -> (i32, String, String) {
        run_check(&fill_placeholders(&self.render()))
    }
}

fn entries<T>(parts: &[T], map: impl Fn(&T) -> &Mapping) -> Value {
    Value::Sequence(
        parts
            .iter()
            .map(|p| Value::Mapping(map(p).clone()))
            .collect(),
    )
}
