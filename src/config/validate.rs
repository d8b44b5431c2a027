//! Semantic checks that serde cannot express: cross-references, formats,
//! ranges. Every problem is collected (not just the first) with its field
//! path, so `tollgate check` can list them all like a compiler.

use super::env::expand_env;
use super::formats::NOT_A_SHA256_HEX;
use super::problems::Problems;
use super::schema::*;
use crate::router::PathTemplate;
use std::collections::HashSet;
use std::net::SocketAddr;

const KNOWN_GUARDS: &[&str] = &["pii", "injection"];
const KNOWN_PII: &[&str] = &["email", "phone", "credit_card", "ssn", "iban"];
const JWT_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512",
];
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

pub fn validate(config: &Config, p: &mut Problems) {
    server(&config.server, p);
    auth(&config.auth, p);
    for (name, upstream) in &config.upstreams {
        upstream_pool(&format!("upstreams.{name}"), upstream, p);
    }
    routes(config, p);
    models(config, p);
    limits(&config.limits, p);
    attribution(&config.attribution, p);
    if let Some(alerts) = &config.alerts {
        alerts_section(alerts, p);
    }
    if let Some(guards) = &config.guards {
        guards_section(guards, p);
    }
    store(&config.store, p);
    ledger(&config.ledger, p);
    if !LOG_LEVELS.contains(&config.observability.log_level.as_str()) {
        p.push(
            "observability.log_level",
            format!("must be one of {}", LOG_LEVELS.join(", ")),
        );
    }
    if let Some(otlp) = &config.observability.otlp {
        otlp_section(otlp, p);
    }
}

fn otlp_section(otlp: &OtlpConfig, p: &mut Problems) {
    // The exporter's HTTP client is built without TLS: a collector is
    // reached over loopback or a private network (a local agent/sidecar).
    let valid_url = otlp
        .endpoint
        .strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && otlp.endpoint.parse::<http::Uri>().is_ok());
    if !valid_url {
        p.push(
            "observability.otlp.endpoint",
            "must be an http:// URL such as http://127.0.0.1:4318 (https is not supported: use a local collector)",
        );
    }
    if otlp.service_name.is_empty() {
        p.push("observability.otlp.service_name", "must not be empty");
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        p.push(
            "observability.otlp.sample_ratio",
            "must be between 0.0 and 1.0",
        );
    }
}

fn socket_addr(path: &str, value: &str, p: &mut Problems) {
    if value.parse::<SocketAddr>().is_err() {
        p.push(
            path,
            format!(
                "'{value}' is not an IP:port socket address (no host names: DNS is not resolved)"
            ),
        );
    }
}

fn sha256_hex(path: &str, value: &str, p: &mut Problems) {
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        p.push(path, NOT_A_SHA256_HEX);
    }
}

fn readable_file(path: &str, file: &str, p: &mut Problems) {
    if let Err(e) = std::fs::metadata(file).and_then(|_| std::fs::File::open(file).map(|_| ())) {
        p.push(path, format!("cannot read '{file}': {e}"));
    }
}

/// `server.admin_tokens`: ids and tenants usable as identity values,
/// digests well formed, and no two tokens (the full one included) alike.
fn admin_tokens(s: &ServerConfig, p: &mut Problems) {
    let mut ids: Vec<&str> = Vec::new();
    let mut digests: Vec<String> = s
        .admin_token_sha256
        .iter()
        .map(|t| t.expose().to_ascii_lowercase())
        .collect();
    for (i, t) in s.admin_tokens.iter().enumerate() {
        let path = format!("server.admin_tokens[{i}]");
        match crate::auth::identity::value_problem(&t.id) {
            Some(problem) => p.push(format!("{path}.id"), problem),
            None if t.id == "full" => p.push(
                format!("{path}.id"),
                "'full' names the full admin token in the audit log",
            ),
            None if ids.contains(&t.id.as_str()) => {
                p.push(format!("{path}.id"), format!("duplicate id '{}'", t.id))
            }
            None => ids.push(&t.id),
        }
        sha256_hex(&format!("{path}.sha256"), t.sha256.expose(), p);
        let digest = t.sha256.expose().to_ascii_lowercase();
        if digests.contains(&digest) {
            p.push(
                format!("{path}.sha256"),
                "the same token as another admin token",
            );
        }
        digests.push(digest);
        if let Some(problem) = crate::auth::identity::value_problem(&t.tenant) {
            p.push(format!("{path}.tenant"), problem);
        }
        if let Some(roles) = &t.grant_roles {
            roles_list(&format!("{path}.grant_roles"), roles, p);
        }
    }
}

fn server(s: &ServerConfig, p: &mut Problems) {
    if s.listen.is_empty() {
        p.push("server.listen", "at least one listen address is required");
    }
    for (i, addr) in s.listen.iter().enumerate() {
        socket_addr(&format!("server.listen[{i}]"), addr, p);
    }
    socket_addr("server.admin_listen", &s.admin_listen, p);
    if let Some(token) = &s.admin_token_sha256 {
        sha256_hex("server.admin_token_sha256", token.expose(), p);
    }
    admin_tokens(s, p);
    if let Some(tls) = &s.tls {
        socket_addr("server.tls.listen", &tls.listen, p);
        // Parsed for real (chain, key, key matches cert): `check` catches
        // what would otherwise fail when the listener starts.
        if let Err(e) = crate::edge::tls::load_certified_key(&tls.cert_file, &tls.key_file) {
            p.push(format!("server.tls.{}", e.field()), e.to_string());
        }
    }
    if s.threads == Some(0) {
        p.push("server.threads", "must be at least 1");
    }
    for (field, value) in [
        ("max_body_bytes", s.max_body_bytes),
        ("max_uri_bytes", s.max_uri_bytes as u64),
        ("max_header_bytes", s.max_header_bytes as u64),
        ("header_timeout_ms", s.header_timeout_ms),
        ("body_timeout_ms", s.body_timeout_ms),
    ] {
        if value == 0 {
            p.push(format!("server.{field}"), "must be greater than 0");
        }
    }
    if s.max_uri_bytes > MAX_URI_BYTES_CEILING {
        p.push(
            "server.max_uri_bytes",
            format!(
                "must be at most {MAX_URI_BYTES_CEILING}: the normalised path, re-encoded (up to 3x), must stay a representable request target"
            ),
        );
    }
}

/// Hard ceiling of `server.max_uri_bytes`. A raw path byte re-encodes to
/// at most 3 (`"` → `%22`), and a request target holds at most 65,534
/// bytes (`http::Uri`): 16 KiB leaves the rewritten target always
/// representable, so the normalised path can always be what goes upstream.
pub const MAX_URI_BYTES_CEILING: usize = 16 * 1024;

fn auth(a: &AuthConfig, p: &mut Problems) {
    // Each key entry was checked while it was parsed (config::api_keys).
    for (path, message) in a.api_keys.problems() {
        p.push(path.clone(), message.clone());
    }
    if let Some(jwt) = &a.jwt {
        if jwt.keys.is_empty() {
            p.push("auth.jwt.keys", "at least one key is required");
        }
        let mut kids = HashSet::new();
        for (i, key) in jwt.keys.iter().enumerate() {
            let path = format!("auth.jwt.keys[{i}]");
            not_duplicate(&mut kids, &key.kid, format!("{path}.kid"), "kid", p);
            if !JWT_ALGS.contains(&key.alg.as_str()) {
                p.push(
                    format!("{path}.alg"),
                    format!("must be one of {}", JWT_ALGS.join(" ")),
                );
                continue;
            }
            let hmac = key.alg.starts_with("HS");
            let sources = [
                key.public_key_file.is_some(),
                key.secret_env.is_some(),
                key.secret_file.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                p.push(
                    path.clone(),
                    "exactly one of public_key_file, secret_env, secret_file is required",
                );
            } else if hmac && key.public_key_file.is_some() {
                p.push(
                    format!("{path}.public_key_file"),
                    "HMAC algorithms take secret_env or secret_file",
                );
            } else if !hmac && key.public_key_file.is_none() {
                p.push(path.clone(), "asymmetric algorithms take public_key_file");
            }
            if let Some(file) = &key.public_key_file {
                readable_file(&format!("{path}.public_key_file"), file, p);
            }
            if let Some(file) = key.secret_file.as_ref().map(|f| f.expose()) {
                readable_file(&format!("{path}.secret_file"), file, p);
            }
            if let Some(var) = key.secret_env.as_ref().map(|v| v.expose()) {
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                    p.push(
                        format!("{path}.secret_env"),
                        format!("environment variable {var} is not set"),
                    );
                }
            }
        }
    }
    if a.failed_auth_per_ip_per_minute == Some(0) {
        p.push("auth.failed_auth_per_ip_per_minute", "must be at least 1");
    }
}

fn upstream_pool(path: &str, u: &UpstreamConfig, p: &mut Problems) {
    if u.peers.is_empty() {
        p.push(format!("{path}.peers"), "at least one peer is required");
    }
    let mut seen = HashSet::new();
    for (i, peer) in u.peers.iter().enumerate() {
        socket_addr(&format!("{path}.peers[{i}]"), peer, p);
        if !seen.insert(peer) {
            p.push(format!("{path}.peers[{i}]"), "duplicate peer");
        }
    }
    let hc = u.health_check.as_ref();
    let cb = u.circuit_breaker.as_ref();
    // (broken, field, problem), in the order they are reported.
    let rules = [
        (
            hc.is_some_and(|hc| hc.interval_ms == 0 || hc.timeout_ms == 0),
            "health_check",
            "interval_ms and timeout_ms must be greater than 0",
        ),
        (
            hc.is_some_and(|hc| hc.unhealthy_after == 0 || hc.healthy_after == 0),
            "health_check",
            "unhealthy_after and healthy_after must be at least 1",
        ),
        (
            hc.is_some_and(|hc| hc.kind == HealthCheckKind::Http && !hc.path.starts_with('/')),
            "health_check.path",
            "must start with '/'",
        ),
        (
            cb.is_some_and(|cb| cb.failure_threshold == 0 || cb.open_seconds == 0),
            "circuit_breaker",
            "failure_threshold and open_seconds must be at least 1",
        ),
        (
            u.timeouts.connect_ms == 0 || u.timeouts.read_ms == 0,
            "timeouts",
            "connect_ms and read_ms must be greater than 0",
        ),
        (
            !u.tls && u.ca_file.is_some(),
            "ca_file",
            "only valid with tls: true",
        ),
        (
            !u.tls && !u.pins_sha256.is_empty(),
            "pins_sha256",
            "only valid with tls: true",
        ),
    ];
    for (broken, field, problem) in rules {
        if broken {
            p.push(format!("{path}.{field}"), problem);
        }
    }
    if let Some(ca) = &u.ca_file {
        readable_file(&format!("{path}.ca_file"), ca, p);
    }
    for (i, pin) in u.pins_sha256.iter().enumerate() {
        sha256_hex(&format!("{path}.pins_sha256[{i}]"), pin, p);
    }
    for (name, value) in &u.set_headers {
        let field = format!("{path}.set_headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.push(field.clone(), "invalid header name");
        }
        match expand_env(value.expose()) {
            Ok(expanded) => {
                if http::HeaderValue::from_str(&expanded).is_err() {
                    p.push(field, "invalid header value");
                }
            }
            Err(message) => p.push(field, message),
        }
    }
}

fn roles_list(path: &str, roles: &[String], p: &mut Problems) {
    for (i, role) in roles.iter().enumerate() {
        if role.is_empty() || role.contains(',') || role.contains(char::is_whitespace) {
            p.push(
                format!("{path}[{i}]"),
                "role names must be non-empty, without commas or spaces",
            );
        }
    }
}

fn routes(config: &Config, p: &mut Problems) {
    let mut names = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        not_duplicate(
            &mut names,
            &route.name,
            format!("{path}.name"),
            "route name",
            p,
        );
        let template = match PathTemplate::parse(&route.path) {
            Ok(t) => Some(t),
            Err(e) => {
                p.push(format!("{path}.path"), e);
                None
            }
        };
        if route.methods.is_empty() && route.kind != RouteKind::Mcp {
            p.push(
                format!("{path}.methods"),
                "at least one method (or \"*\") is required",
            );
        }
        for (j, method) in route.methods.iter().enumerate() {
            let valid = method == "*"
                || (!method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic()));
            if !valid {
                p.push(
                    format!("{path}.methods[{j}]"),
                    format!("'{method}' is not an HTTP method"),
                );
            }
        }
        match (route.kind, &route.upstream) {
            (RouteKind::Http, None) => {
                p.push(format!("{path}.upstream"), "required for kind: http routes")
            }
            (RouteKind::Mcp, None) => {
                p.push(format!("{path}.upstream"), "required for kind: mcp routes")
            }
            (RouteKind::Http | RouteKind::Mcp, Some(up)) if !config.upstreams.contains_key(up) => p
                .push(
                    format!("{path}.upstream"),
                    format!("unknown upstream '{up}'"),
                ),
            (RouteKind::Llm, Some(_)) => p.push(
                format!("{path}.upstream"),
                "kind: llm routes take their upstream from the model; remove this field",
            ),
            _ => {}
        }
        mcp_route(route, &path, p);
        if route.kind != RouteKind::Llm && route.api.is_some() {
            p.push(format!("{path}.api"), "only kind: llm routes have an api");
        }
        roles_list(&format!("{path}.roles"), &route.roles, p);
        if let (Some(owner), Some(t)) = (&route.owner, &template) {
            if !t.has_param(&owner.param) {
                p.push(
                    format!("{path}.owner.param"),
                    format!("the path has no '{{{}}}' parameter", owner.param),
                );
            }
            roles_list(
                &format!("{path}.owner.bypass_roles"),
                &owner.bypass_roles,
                p,
            );
        }
        for (j, guard) in route.guards.iter().enumerate() {
            let gpath = format!("{path}.guards[{j}]");
            if !KNOWN_GUARDS.contains(&guard.as_str()) {
                p.push(
                    gpath,
                    format!(
                        "unknown guard '{guard}' (known: {})",
                        KNOWN_GUARDS.join(", ")
                    ),
                );
                continue;
            }
            let configured = config
                .guards
                .as_ref()
                .is_some_and(|g| match guard.as_str() {
                    "pii" => g.pii.is_some(),
                    _ => g.injection.is_some(),
                });
            if !configured {
                p.push(
                    gpath,
                    format!("guard '{guard}' has no section under guards:"),
                );
            }
        }
        output_guards(config, route, &path, p);
        if route.rate_limit.is_some_and(|r| r.requests_per_minute == 0) {
            p.push(
                format!("{path}.rate_limit.requests_per_minute"),
                "must be at least 1",
            );
        }
    }
}

/// The `name` of the list item at `path` is set and not one of the names
/// `seen` before it; `what` the item is, in the message.
fn unique_name<'a>(
    seen: &mut HashSet<&'a str>,
    name: &'a str,
    path: &str,
    what: &str,
    p: &mut Problems,
) {
    if name.is_empty() {
        p.push(format!("{path}.name"), "must not be empty");
    } else {
        not_duplicate(seen, name, format!("{path}.name"), what, p);
    }
}

/// `value` (at `field`) is not one of the values `seen` before it in its
/// list; `what` it is, in the message.
fn not_duplicate<'a>(
    seen: &mut HashSet<&'a str>,
    value: &'a str,
    field: String,
    what: &str,
    p: &mut Problems,
) {
    if !seen.insert(value) {
        p.push(field, format!("duplicate {what} '{value}'"));
    }
}

fn models(config: &Config, p: &mut Problems) {
    let names: HashSet<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    for (entry, allowed) in config.auth.api_keys.allow_lists() {
        for (i, model) in allowed.iter().enumerate() {
            if !names.contains(model.as_str()) {
                p.push(
                    format!("auth.api_keys[{entry}].models[{i}]"),
                    format!("unknown model '{model}'"),
                );
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, model) in config.models.iter().enumerate() {
        let path = format!("models[{i}]");
        unique_name(&mut seen, &model.name, &path, "model", p);
        if !config.upstreams.contains_key(&model.upstream) {
            p.push(
                format!("{path}.upstream"),
                format!("unknown upstream '{}'", model.upstream),
            );
        }
        for field in ["input_usd_per_mtok", "output_usd_per_mtok"] {
            let value = if field.starts_with("input") {
                model.input_usd_per_mtok
            } else {
                model.output_usd_per_mtok
            };
            match value {
                None => p.push(
                    format!("{path}.{field}"),
                    "required: an unpriced model would silently bypass USD budgets (use 0.0 for free models)",
                ),
                Some(v) if !v.is_finite() || v < 0.0 => {
                    p.push(format!("{path}.{field}"), "must be a non-negative number")
                }
                Some(_) => {}
            }
        }
        if model.max_n == 0 {
            p.push(format!("{path}.max_n"), "must be at least 1");
        }
        if model.max_tokens == 0 {
            p.push(format!("{path}.max_tokens"), "must be at least 1");
        }
        for (field, value) in [
            ("cached_input_usd_per_mtok", model.cached_input_usd_per_mtok),
            ("cache_write_usd_per_mtok", model.cache_write_usd_per_mtok),
        ] {
            if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                p.push(format!("{path}.{field}"), "must be a non-negative number");
            }
        }
        if let Some(up) = &model.upstream_path {
            if !up.starts_with('/')
                || up
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                p.push(
                    format!("{path}.upstream_path"),
                    "must start with '/' and contain no spaces or control characters",
                );
            }
        }
        if model.upstream_api == Some(UpstreamApi::Gemini) && model.upstream_path.is_some() {
            // Gemini's path names the model and the method (JSON or SSE).
            p.push(
                format!("{path}.upstream_path"),
                "cannot be set with upstream_api: gemini (the path names the model and method)",
            );
        }
        roles_list(&format!("{path}.roles"), &model.roles, p);
        for (j, fallback) in model.fallbacks.iter().enumerate() {
            if fallback == &model.name {
                p.push(
                    format!("{path}.fallbacks[{j}]"),
                    "a model cannot fall back to itself",
                );
            } else if !names.contains(fallback.as_str()) {
                p.push(
                    format!("{path}.fallbacks[{j}]"),
                    format!("unknown model '{fallback}'"),
                );
            }
        }
    }
    let has_llm_route = config.routes.iter().any(|r| r.kind == RouteKind::Llm);
    if has_llm_route && config.models.is_empty() {
        p.push("models", "kind: llm routes need at least one model");
    }
}

fn usd(path: String, value: Option<f64>, p: &mut Problems) {
    if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
        p.push(path, "must be a non-negative number of USD");
    }
}

fn alerts_section(a: &AlertsConfig, p: &mut Problems) {
    for (i, w) in a.webhooks.iter().enumerate() {
        let path = format!("alerts.webhooks[{i}]");
        let url = w.url.expose();
        let valid = (url.starts_with("http://") || url.starts_with("https://"))
            && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
        if !valid {
            // Never the value: the URL may hold the receiver's credential.
            p.push(format!("{path}.url"), "must be an http:// or https:// URL");
        }
        if w.secret_env.is_empty() {
            p.push(
                format!("{path}.secret_env"),
                "must name an environment variable",
            );
        } else if std::env::var_os(&w.secret_env).is_none_or(|v| v.is_empty()) {
            p.push(
                format!("{path}.secret_env"),
                format!("environment variable {} is not set", w.secret_env),
            );
        }
        if w.thresholds.is_empty() {
            p.push(
                format!("{path}.thresholds"),
                "must list at least one fraction",
            );
        }
        if w.thresholds
            .iter()
            .any(|t| !t.is_finite() || *t <= 0.0 || *t > 10.0)
        {
            p.push(
                format!("{path}.thresholds"),
                "fractions of a limit must be above 0 and at most 10",
            );
        }
        if w.scopes.is_empty() {
            p.push(format!("{path}.scopes"), "must list at least one scope");
        }
        if w.timeout_ms == 0 {
            p.push(format!("{path}.timeout_ms"), "must be at least 1");
        }
    }
}

fn attribution(a: &AttributionConfig, p: &mut Problems) {
    if http::HeaderName::from_bytes(a.conversation_header.as_bytes()).is_err() {
        p.push(
            "attribution.conversation_header",
            "must be a valid HTTP header name",
        );
    }
}

/// A conversation counts only its day (its counters expire daily); the
/// other scopes have no daily USD window.
fn budget_windows(i: usize, b: &BudgetConfig, p: &mut Problems) {
    let conversation = b.scope == BudgetScope::Conversation;
    let misplaced: &[(&str, bool)] = if conversation {
        &[
            ("tokens_per_minute", b.tokens_per_minute.is_some()),
            ("usd_per_month", b.usd_per_month.is_some()),
        ]
    } else {
        &[("usd_per_day", b.usd_per_day.is_some())]
    };
    for (field, set) in misplaced {
        if *set {
            let allowed = if conversation {
                "scope conversation has tokens_per_day and usd_per_day only"
            } else {
                "only scope conversation has usd_per_day"
            };
            p.push(format!("limits.budgets[{i}].{field}"), allowed);
        }
    }
}

fn limits(l: &LimitsConfig, p: &mut Problems) {
    if l.default.is_some_and(|d| d.requests_per_minute == 0) {
        p.push("limits.default.requests_per_minute", "must be at least 1");
    }
    let mut scopes = HashSet::new();
    for (i, b) in l.budgets.iter().enumerate() {
        if !scopes.insert(b.scope) {
            p.push(
                format!("limits.budgets[{i}].scope"),
                "only one budget entry per scope",
            );
        }
        usd(
            format!("limits.budgets[{i}].usd_per_month"),
            b.usd_per_month,
            p,
        );
        usd(format!("limits.budgets[{i}].usd_per_day"), b.usd_per_day, p);
        budget_windows(i, b, p);
    }
    for (user, o) in &l.overrides {
        usd(
            format!("limits.overrides.{user}.usd_per_month"),
            o.usd_per_month,
            p,
        );
        if o.requests_per_minute == Some(0) {
            p.push(
                format!("limits.overrides.{user}.requests_per_minute"),
                "must be at least 1",
            );
        }
    }
}

/// A route's `output_guards`: known, configured, on llm routes only.
fn output_guards(config: &Config, route: &RouteConfig, path: &str, p: &mut Problems) {
    if !route.output_guards.is_empty() && route.kind == RouteKind::Http {
        p.push(
            format!("{path}.output_guards"),
            "only kind: llm and kind: mcp routes have output guards",
        );
    }
    let output = config.guards.as_ref().and_then(|g| g.output.as_ref());
    for (j, guard) in route.output_guards.iter().enumerate() {
        let gpath = format!("{path}.output_guards[{j}]");
        let configured = match guard.as_str() {
            "pii" => output.is_some_and(|o| o.pii.is_some()),
            "secrets" => output.is_some_and(|o| o.secrets.is_some()),
            _ => {
                p.push(
                    gpath,
                    format!("unknown output guard '{guard}' (known: pii, secrets)"),
                );
                continue;
            }
        };
        if !configured {
            p.push(
                gpath,
                format!("output guard '{guard}' has no section under guards.output:"),
            );
        }
    }
}

/// Every PII kind of a `detect` list (at `path`) is one the guards know.
fn pii_kinds(path: &str, detect: &[String], p: &mut Problems) {
    for (i, kind) in detect.iter().enumerate() {
        if !KNOWN_PII.contains(&kind.as_str()) {
            p.push(
                format!("{path}[{i}]"),
                format!(
                    "unknown PII kind '{kind}' (known: {})",
                    KNOWN_PII.join(", ")
                ),
            );
        }
    }
}

fn guards_section(g: &GuardsConfig, p: &mut Problems) {
    if let Some(output) = &g.output {
        if let Some(pii) = &output.pii {
            pii_kinds("guards.output.pii.detect", &pii.detect, p);
        }
        let min = crate::guards::output::MIN_HOLDBACK;
        if output.holdback_bytes < min {
            p.push(
                "guards.output.holdback_bytes",
                format!("must be at least {min} (the longest pattern's window)"),
            );
        }
    }
    if let Some(pii) = &g.pii {
        pii_kinds("guards.pii.detect", &pii.detect, p);
    }
    if let Some(inj) = &g.injection {
        if inj.action == GuardAction::Redact {
            p.push("guards.injection.action", "must be block or log");
        }
        for (i, pattern) in inj.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                p.push(
                    format!("guards.injection.patterns[{i}]"),
                    format!("invalid regex: {e}"),
                );
            }
        }
    }
}

fn store(s: &StoreConfig, p: &mut Problems) {
    if s.path.is_empty() {
        p.push("store.path", "must not be empty");
    }
    match (s.kind, s.redis_url.as_ref().map(|u| u.expose())) {
        (StoreKind::Redis, None) => p.push("store.redis_url", "required with kind: redis"),
        (StoreKind::Redis, Some(url))
            if !url.starts_with("redis://") && !url.starts_with("rediss://") =>
        {
            p.push("store.redis_url", "must start with redis:// or rediss://")
        }
        (_, Some(url)) if redis_url_has_password(url) => p.push(
            "store.redis_url",
            "must not hold a password: use redis_password_env or redis_password_file",
        ),
        (_, Some(url)) => {
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                p.push("store.redis_url", format!("invalid: {e}"));
            }
        }
        _ => {}
    }
    match (&s.redis_password_env, &s.redis_password_file) {
        (Some(_), Some(_)) => p.push(
            "store.redis_password_env",
            "give redis_password_env or redis_password_file, not both",
        ),
        (Some(name), None)
            if s.kind == StoreKind::Redis
                && std::env::var_os(name).is_none_or(|v| v.is_empty()) =>
        {
            p.push(
                "store.redis_password_env",
                format!("environment variable {name} is not set"),
            )
        }
        (None, Some(file)) if s.kind == StoreKind::Redis => {
            readable_file("store.redis_password_file", file, p)
        }
        _ => {}
    }
    // Braces would move keys out of their tenant's hash slot.
    if s.redis_prefix.contains(['{', '}']) {
        p.push("store.redis_prefix", "must not contain { or }");
    }
    for (field, ms) in [
        ("connect_ms", s.redis_timeouts.connect_ms),
        ("command_ms", s.redis_timeouts.command_ms),
    ] {
        if ms == 0 {
            p.push(format!("store.redis_timeouts.{field}"), "must be > 0");
        }
    }
}

/// Valid but probably not what the operator wants: `(field, message)`
/// pairs that `tollgate check` prints and the gateway logs at start.
pub fn warnings(config: &Config) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (i, t) in config.server.admin_tokens.iter().enumerate() {
        if t.grant_roles.is_none() {
            out.push((
                format!("server.admin_tokens[{i}].grant_roles"),
                "not set: this tenant's token may give its keys any role, admin included",
            ));
        }
    }
    if config.store.kind == StoreKind::Redis && config.ledger.kind == LedgerKind::Sqlite {
        out.push((
            "ledger.kind".into(),
            "store.kind is redis but the ledger is each instance's own SQLite file: \
             budgets reset when Redis loses its data, and reports show only this \
             instance's calls (use ledger.kind: postgres)",
        ));
    }
    out
}

fn ledger(l: &LedgerConfig, p: &mut Problems) {
    let postgres = l.kind == LedgerKind::Postgres;
    match (postgres, l.postgres_url.as_ref().map(|u| u.expose())) {
        (true, None) => p.push("ledger.postgres_url", "required with kind: postgres"),
        (_, Some(url)) if !url.starts_with("postgres://") && !url.starts_with("postgresql://") => p
            .push(
                "ledger.postgres_url",
                "must start with postgres:// or postgresql://",
            ),
        (_, Some(url)) if redis_url_has_password(url) => p.push(
            "ledger.postgres_url",
            "must not hold a password: use postgres_password_env or postgres_password_file",
        ),
        (_, Some(url)) => match super::pg_url::split_sslmode(url) {
            Ok((rest, _)) => {
                if let Err(e) = rest.parse::<tokio_postgres::Config>() {
                    p.push("ledger.postgres_url", format!("invalid: {e}"));
                }
            }
            Err(e) => p.push("ledger.postgres_url", e),
        },
        _ => {}
    }
    match (&l.postgres_password_env, &l.postgres_password_file) {
        (Some(_), Some(_)) => p.push(
            "ledger.postgres_password_env",
            "give postgres_password_env or postgres_password_file, not both",
        ),
        (Some(name), None) if postgres && std::env::var_os(name).is_none_or(|v| v.is_empty()) => p
            .push(
                "ledger.postgres_password_env",
                format!("environment variable {name} is not set"),
            ),
        (None, Some(file)) if postgres => readable_file("ledger.postgres_password_file", file, p),
        _ => {}
    }
    if let Some(file) = &l.ca_file {
        readable_file("ledger.ca_file", file, p);
    }
}

/// `redis://user:secret@host` or `redis://:secret@host`: a clear-text
/// password in the file, which the contract forbids.
fn redis_url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A route's `tools:` and `mcp:`: on mcp routes only; tool names unique
/// and non-empty, roles valid, owner arguments named, limits positive.
fn mcp_route(route: &RouteConfig, path: &str, p: &mut Problems) {
    if route.kind != RouteKind::Mcp {
        if route.tools.is_some() {
            p.push(format!("{path}.tools"), "only kind: mcp routes have tools");
        }
        if route.mcp.is_some() {
            p.push(
                format!("{path}.mcp"),
                "only kind: mcp routes have mcp limits",
            );
        }
        return;
    }
    if route.websocket {
        p.push(
            format!("{path}.websocket"),
            "kind: mcp routes do not upgrade",
        );
    }
    if let Some(tools) = &route.tools {
        let mut seen = HashSet::new();
        for (i, rule) in tools.rules.iter().enumerate() {
            let rpath = format!("{path}.tools.rules[{i}]");
            unique_name(&mut seen, &rule.name, &rpath, "tool rule", p);
            roles_list(&format!("{rpath}.roles"), &rule.roles, p);
            if let Some(owner) = &rule.owner {
                if owner.argument.is_empty() {
                    p.push(format!("{rpath}.owner.argument"), "must not be empty");
                }
                roles_list(
                    &format!("{rpath}.owner.bypass_roles"),
                    &owner.bypass_roles,
                    p,
                );
            }
            if rule.rate_limit.is_some_and(|r| r.requests_per_minute == 0) {
                p.push(
                    format!("{rpath}.rate_limit.requests_per_minute"),
                    "must be at least 1",
                );
            }
            // A tool's refusal is a JSON-RPC error inside a served session:
            // shadow mode is not offered there (it would be enforced anyway).
            if rule.rate_limit.is_some_and(|r| !r.enforce) {
                p.push(
                    format!("{rpath}.rate_limit.enforce"),
                    "a tool's rate limit is always enforced (shadow limits apply to routes and budgets)",
                );
            }
        }
    }
    if let Some(mcp) = &route.mcp {
        if mcp.max_batch == 0 {
            p.push(format!("{path}.mcp.max_batch"), "must be at least 1");
        }
        if mcp.max_message_bytes < 1024 {
            p.push(
                format!("{path}.mcp.max_message_bytes"),
                "must be at least 1024",
            );
        }
        if mcp.max_stream_seconds == 0 {
            p.push(
                format!("{path}.mcp.max_stream_seconds"),
                "must be at least 1",
            );
        }
        for (j, method) in mcp.deny_methods.iter().enumerate() {
            if method.is_empty() || method == "*" {
                p.push(
                    format!("{path}.mcp.deny_methods[{j}]"),
                    "must name a method or a prefix ending in /*",
                );
            }
        }
    }
}
