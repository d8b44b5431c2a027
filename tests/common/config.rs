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

    /// The `name` field, by which `with_route`/`with_model` find an entry.
    fn name(&self) -> Option<&str>;

    fn set(mut self, key: &str, value: impl Serialize) -> Self {
        self.fields().insert(key.into(), yaml(value));
        self
    }

    fn unset(mut self, key: &str) -> Self {
        self.fields().shift_remove(key);
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
            fn name(&self) -> Option<&str> {
                self.0.get("name").and_then(Value::as_str)
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

    /// A `kind: mcp` route to the pool `upstream` (POST, GET, DELETE).
    pub fn mcp(name: &str, path: &str, upstream: &str) -> Route {
        Route::default()
            .set("name", name)
            .set("path", path)
            .set("kind", "mcp")
            .set("upstream", upstream)
    }

    /// `tools:` of an mcp route: `default` and `rules` as JSON.
    pub fn tools(self, default: &str, rules: serde_json::Value) -> Route {
        self.set(
            "tools",
            serde_json::json!({"default": default, "rules": rules}),
        )
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
        fallbacks: &[&str], cached_input_usd_per_mtok: f64, cache_write_usd_per_mtok: f64,
        upstream_api: &str);
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
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    /// The sections, in the order they render (empty ones are left out).
    doc: Mapping,
    keys: Vec<Value>,
    pools: Vec<(String, Pool)>,
    routes: Vec<Route>,
    models: Vec<Model>,
    budgets: Vec<Budget>,
}

/// A setter of any field of a top-level section, named after the section.
macro_rules! section_setters {
    ($($name:ident),*) => {
        $(#[doc = concat!("A field of `", stringify!($name), "`.")]
        pub fn $name(self, key: &str, value: impl Serialize) -> Self { self.field(stringify!($name), key, value) })*
    };
}

impl ConfigBuilder {
    /// The part every test config shares (see the module doc); no keys,
    /// pools, routes or limits yet.
    pub fn new() -> ConfigBuilder {
        let sections = [
            "server",
            "auth",
            "upstreams",
            "routes",
            "models",
            "limits",
            "guards",
            "store",
            "observability",
        ];
        ConfigBuilder {
            doc: sections
                .into_iter()
                .map(|s| (s.into(), Value::Mapping(Mapping::new())))
                .collect(),
            keys: Vec::new(),
            pools: Vec::new(),
            routes: Vec::new(),
            models: Vec::new(),
            budgets: Vec::new(),
        }
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
        let staff = ["agent", "admin"];
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
                .roles(&staff)
                .owner("agent", &["admin"]),
            )
            .route(
                Route::http(
                    "tickets",
                    "/api/v1/tickets/**",
                    &["GET", "POST", "PATCH"],
                    "support",
                )
                .roles(&staff),
            )
            .route(Route::http("users", "/api/v1/users/**", &["*"], "support").roles(&["admin"]))
            .route(Route::http("limited", "/api/v1/limited/**", &["GET"], "support").rate_limit(10))
            .default_rate_limit(1000)
    }

    /// Sets `key` of the top-level `section`.
    fn field(mut self, section: &str, key: &str, value: impl Serialize) -> Self {
        let fields = self
            .doc
            .entry(section.into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Value::Mapping(fields) = fields {
            fields.insert(key.into(), yaml(value));
        }
        self
    }

    section_setters!(server, auth, limits, guards, store, observability);

    /// `server.admin_tokens`: `(id, token, tenant)`, each bound to its tenant.
    pub fn admin_tokens(self, tokens: &[(&str, &str, &str)]) -> Self {
        let tokens: Vec<serde_json::Value> = tokens
            .iter()
            .map(|(id, token, tenant)| {
                serde_json::json!({"id": id, "sha256": super::sha(token), "tenant": tenant})
            })
            .collect();
        self.server("admin_tokens", tokens)
    }

    /// `ledger: {kind: postgres, postgres_url: url}`.
    pub fn postgres_ledger(self, url: &str) -> Self {
        self.section(
            "ledger",
            &format!("kind: postgres\npostgres_url: \"{url}\""),
        )
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
            let mut entry = serde_json::json!({
                "id": key.id, "sha256": sha(key.key), "user": key.user,
                "tenant": key.tenant, "roles": key.roles,
            });
            if let Some(at) = key.expires_at {
                entry["expires_at"] = at.into();
            }
            self.keys.push(yaml(entry));
        }
        self
    }

    /// Sets fields of the API key `id` (its own policy: `models`,
    /// `rate_limit`, `budgets`), each field of the JSON object `fields`.
    pub fn key_fields(mut self, id: &str, fields: serde_json::Value) -> Self {
        let entry = self
            .keys
            .iter_mut()
            .find(|k| k.get("id") == Some(&Value::from(id)))
            .and_then(Value::as_mapping_mut)
            .expect("a key with this id");
        for (name, value) in fields.as_object().expect("an object of fields") {
            entry.insert(name.as_str().into(), yaml(value));
        }
        self
    }

    /// The API keys of `keys` before those already there.
    pub fn keys_first(mut self, keys: &[TestKey]) -> Self {
        let rest = std::mem::take(&mut self.keys);
        self = self.keys(keys);
        self.keys.extend(rest);
        self
    }

    /// Without the API key whose id is `id`.
    pub fn without_key(mut self, id: &str) -> Self {
        self.keys.retain(|k| k.get("id") != Some(&Value::from(id)));
        self
    }

    pub fn failed_auth_per_ip_per_minute(self, n: u32) -> Self {
        self.auth("failed_auth_per_ip_per_minute", n)
    }

    /// Adds `entry` to one of the lists.
    fn add<T>(mut self, list: impl FnOnce(&mut Self) -> &mut Vec<T>, entry: T) -> Self {
        list(&mut self).push(entry);
        self
    }

    /// Replaces the entry named `name` (which must exist) by `f` of it.
    fn change<T: Fields + Default>(
        mut self,
        list: impl FnOnce(&mut Self) -> &mut Vec<T>,
        name: &str,
        f: impl FnOnce(T) -> T,
    ) -> Self {
        let entry = list(&mut self).iter_mut().find(|e| e.name() == Some(name));
        change(entry, name, f);
        self
    }

    /// The pool `name` (an entry of `upstreams`).
    pub fn pool(self, name: &str, pool: Pool) -> Self {
        self.add(|c| &mut c.pools, (name.to_string(), pool))
    }

    /// Changes the pool `name` (which must exist).
    pub fn with_pool(mut self, name: &str, f: impl FnOnce(Pool) -> Pool) -> Self {
        let pool = self.pools.iter_mut().find(|(n, _)| n == name);
        change(pool.map(|(_, p)| p), name, f);
        self
    }

    pub fn route(self, route: Route) -> Self {
        self.add(|c| &mut c.routes, route)
    }

    /// Changes the route named `name` (which must exist).
    pub fn with_route(self, name: &str, f: impl FnOnce(Route) -> Route) -> Self {
        self.change(|c| &mut c.routes, name, f)
    }

    pub fn model(self, model: Model) -> Self {
        self.add(|c| &mut c.models, model)
    }

    /// Changes the model named `name` (which must exist).
    pub fn with_model(self, name: &str, f: impl FnOnce(Model) -> Model) -> Self {
        self.change(|c| &mut c.models, name, f)
    }

    /// `limits.default`: requests a minute per user.
    pub fn default_rate_limit(self, requests_per_minute: u64) -> Self {
        self.limits(
            "default",
            serde_json::json!({ "requests_per_minute": requests_per_minute }),
        )
    }

    /// An entry of `limits.budgets`.
    pub fn budget(self, budget: Budget) -> Self {
        self.add(|c| &mut c.budgets, budget)
    }

    /// `limits.overrides`, by user, e.g. `json!({"alice": {"tokens_per_day": 10}})`.
    pub fn limit_overrides(self, overrides: serde_json::Value) -> Self {
        self.limits("overrides", overrides)
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
        self.doc.insert(name.into(), value);
        self
    }

    /// The config as YAML, placeholders (`{listen}`, `{admin}`, `{dir}`)
    /// left for `Gateway::start` or `fill_placeholders`.
    pub fn render(&self) -> String {
        let mut doc = self.doc.clone();
        if !self.keys.is_empty() {
            let keys = Value::Sequence(self.keys.clone());
            doc["auth"]
                .as_mapping_mut()
                .map(|auth| auth.insert("api_keys".into(), keys));
        }
        let pools = self
            .pools
            .iter()
            .map(|(name, p)| (name.as_str().into(), p.0.clone().into()));
        doc.insert("upstreams".into(), Value::Mapping(pools.collect()));
        doc.insert("routes".into(), entries(&self.routes, |r| &r.0));
        doc.insert("models".into(), entries(&self.models, |m| &m.0));
        if !self.budgets.is_empty() {
            let budgets = entries(&self.budgets, |b| &b.0);
            doc["limits"]
                .as_mapping_mut()
                .map(|limits| limits.insert("budgets".into(), budgets));
        }
        doc.retain(|_, v| match v {
            Value::Mapping(m) => !m.is_empty(),
            Value::Sequence(s) => !s.is_empty(),
            _ => true,
        });
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

/// Replaces `entry` (the one named `name`, which must exist) by `f` of it.
fn change<T: Default>(entry: Option<&mut T>, name: &str, f: impl FnOnce(T) -> T) {
    let entry = entry.unwrap_or_else(|| panic!("nothing named {name} in the config"));
    *entry = f(std::mem::take(entry));
}

fn entries<T>(parts: &[T], map: impl Fn(&T) -> &Mapping) -> Value {
    Value::Sequence(
        parts
            .iter()
            .map(|p| Value::Mapping(map(p).clone()))
            .collect(),
    )
}
