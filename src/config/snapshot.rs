//! The compiled, immutable form of a configuration. A request loads the
//! current snapshot once (one `ArcSwap` load) and uses it throughout, so a
//! reload landing mid-flight never mixes two configurations.

use super::api_keys::ApiKeyConfig;
use super::problems::Problems;
use super::schema::*;
use crate::alerts::webhook::Webhook;
use crate::auth::api_key::KeyIndex;
use crate::auth::Authenticator;
use crate::guards::output::{OutputGuardSet, OutputScanner};
use crate::guards::{GuardSet, Guards};
use crate::limits::policy::BudgetPolicy;
use crate::llm::conversation::Attribution;
use crate::llm::model::Model;
use crate::mcp::rules::ToolPolicy;
use crate::router::{MethodSet, PathTemplate, Routable};
use crate::upstream::pool::Pool;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub template: PathTemplate,
    pub methods: MethodSet,
    pub roles: Vec<String>,
    pub owner: Option<OwnerRule>,
    pub rate_limit: Option<u32>,
    /// `rate_limit.enforce`: false counts and logs instead of refusing.
    pub rate_limit_enforced: bool,
    pub websocket: bool,
    /// Where the route's requests go, by kind.
    pub target: Target,
}

/// What serves a route's requests.
#[derive(Debug)]
pub enum Target {
    /// Proxied to one pool, resolved when the snapshot is built: a request
    /// asks for it several times (peer, headers, breaker).
    Http { upstream: String, pool: Arc<Pool> },
    /// An LLM call of `api`; the request's model picks the pool.
    Llm {
        api: LlmApi,
        guards: GuardSet,
        /// Guards on the answer (empty: the answer is forwarded as is).
        output: OutputGuardSet,
    },
    /// MCP (Streamable HTTP) to one pool, tool calls under `tools`.
    Mcp(Box<McpTarget>),
}

/// A `kind: mcp` route's pool, tool rules, guards and protocol bounds.
#[derive(Debug)]
pub struct McpTarget {
    pub upstream: String,
    pub pool: Arc<Pool>,
    pub tools: ToolPolicy,
    /// Input guards on `tools/call` arguments.
    pub guards: GuardSet,
    /// Output guards on tool results.
    pub output: OutputGuardSet,
    pub limits: McpConfig,
}

impl Route {
    pub fn is_llm(&self) -> bool {
        matches!(self.target, Target::Llm { .. })
    }

    pub fn is_mcp(&self) -> bool {
        matches!(self.target, Target::Mcp(_))
    }

    /// The pool of a `kind: http` or `kind: mcp` route.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match &self.target {
            Target::Http { pool, .. } => Some(pool),
            Target::Mcp(mcp) => Some(&mcp.pool),
            Target::Llm { .. } => None,
        }
    }

    /// The pool's name of a `kind: http` or `kind: mcp` route.
    pub fn upstream(&self) -> Option<&str> {
        match &self.target {
            Target::Http { upstream, .. } => Some(upstream),
            Target::Mcp(mcp) => Some(&mcp.upstream),
            Target::Llm { .. } => None,
        }
    }

    /// The API of a `kind: llm` route.
    pub fn llm_api(&self) -> Option<LlmApi> {
        match &self.target {
            Target::Llm { api, .. } => Some(*api),
            Target::Http { .. } | Target::Mcp(_) => None,
        }
    }

    /// What a `kind: mcp` route serves.
    pub fn mcp(&self) -> Option<&McpTarget> {
        match &self.target {
            Target::Mcp(mcp) => Some(mcp),
            Target::Http { .. } | Target::Llm { .. } => None,
        }
    }
}

impl Routable for Route {
    fn template(&self) -> &PathTemplate {
        &self.template
    }
    fn methods(&self) -> &MethodSet {
        &self.methods
    }
}

pub struct Snapshot {
    pub generation: u64,
    /// The validated file, minus `auth.api_keys`: once compiled, the keys
    /// live only in `auth`'s index (see [`Snapshot::api_keys`]), so a large
    /// key set is not held twice.
    pub config: Arc<Config>,
    pub routes: Vec<Route>,
    pub auth: Authenticator,
    pub pools: HashMap<String, Arc<Pool>>,
    pub models: HashMap<String, Arc<Model>>,
    pub budgets: BudgetPolicy,
    pub guards: Option<Guards>,
    /// `guards.output` compiled, with the gateway's own upstream secrets.
    pub output_guards: Option<Arc<OutputScanner>>,
    /// `attribution` compiled: where a call's conversation id comes from.
    pub attribution: Attribution,
    /// `alerts.webhooks` compiled (signing keys read).
    pub webhooks: Vec<Arc<Webhook>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("routes", &self.routes.len())
            .field("pools", &self.pools.len())
            .finish()
    }
}

impl Snapshot {
    /// Compiles a validated config. Pools whose definition is unchanged in
    /// `previous` are reused as they are (health and breaker state kept).
    pub fn compile_with(
        mut config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        problems: &mut Problems,
    ) -> Option<Snapshot> {
        // The keys were compiled while parsing (sharing `previous`'s
        // identities, see config::load_snapshot_from_str); moved, not copied.
        let keys = config.auth.api_keys.take_index();
        let auth = compile_auth(keys, config.auth.jwt.as_ref(), problems);
        let mut pools = HashMap::new();
        for (name, definition) in &config.upstreams {
            let reused = previous
                .and_then(|prev| prev.pools.get(name))
                .filter(|pool| &pool.definition == definition)
                .cloned();
            let pool = match reused {
                Some(pool) => pool,
                None => match Pool::build(name, definition) {
                    Ok(pool) => Arc::new(pool),
                    Err(e) => {
                        problems.push(format!("upstreams.{name}"), e);
                        continue;
                    }
                },
            };
            pools.insert(name.clone(), pool);
        }
        let routes: Vec<Route> = config
            .routes
            .iter()
            .filter_map(|r| compile_route(r, &pools))
            .collect();
        let mut models = HashMap::new();
        for (i, m) in config.models.iter().enumerate() {
            match Model::compile(m) {
                Ok(model) => {
                    models.insert(model.name.clone(), Arc::new(model));
                }
                Err(e) => problems.push(format!("models[{i}]"), e),
            }
        }
        let budgets = BudgetPolicy::compile(&config.limits).unwrap_or_else(|e| {
            problems.push("limits", e);
            BudgetPolicy::default()
        });
        let guards = match config.guards.as_ref().map(Guards::compile).transpose() {
            Ok(g) => g,
            Err(e) => {
                problems.push("guards", e);
                None
            }
        };
        let output_guards = match config.guards.as_ref().and_then(|g| g.output.as_ref()) {
            Some(output) => match OutputScanner::compile(output, &gateway_secrets(&pools)) {
                Ok(scanner) => Some(Arc::new(scanner)),
                Err(e) => {
                    problems.push("guards.output", e);
                    None
                }
            },
            None => None,
        };
        let attribution = Attribution::compile(&config.attribution).unwrap_or_else(|e| {
            problems.push("attribution", e);
            Attribution::default()
        });
        let mut webhooks = Vec::new();
        for (i, w) in config.alerts.iter().flat_map(|a| &a.webhooks).enumerate() {
            match Webhook::compile(w) {
                Ok(webhook) => webhooks.push(Arc::new(webhook)),
                Err(e) => problems.push(format!("alerts.webhooks[{i}]"), e),
            }
        }
        if !problems.is_empty() {
            return None;
        }
        Some(Snapshot {
            generation,
            config: Arc::new(config),
            routes,
            auth,
            pools,
            models,
            budgets,
            guards,
            output_guards,
            attribution,
            webhooks,
        })
    }

    pub fn compile(config: Config, generation: u64, problems: &mut Problems) -> Option<Snapshot> {
        Self::compile_with(config, generation, None, problems)
    }

    /// `auth.api_keys` as configured (file order), rebuilt from the index;
    /// `expires_at` is rendered in UTC.
    pub fn api_keys(&self) -> Vec<ApiKeyConfig> {
        super::api_keys::entries_as_config(self.auth.keys())
    }

    pub fn server(&self) -> &ServerConfig {
        &self.config.server
    }

    /// Requests per minute for `user` on the shared default counter.
    /// `limits.default.enforce`; a user's `requests_per_minute` override
    /// changes the number, not the mode.
    pub fn default_rate_limit_enforced(&self) -> bool {
        self.config.limits.default.is_none_or(|d| d.enforce)
    }

    pub fn default_rate_limit(&self, user: &str) -> Option<u32> {
        self.config
            .limits
            .overrides
            .get(user)
            .and_then(|o| o.requests_per_minute)
            .or(self.config.limits.default.map(|d| d.requests_per_minute))
    }
}

/// The Streamable HTTP transport's methods, when an mcp route names none.
const MCP_METHODS: [&str; 3] = ["POST", "GET", "DELETE"];

/// Validation already rejected bad templates, unknown guards and missing
/// upstreams; a route whose pool failed to build was reported with it.
fn compile_route(r: &RouteConfig, pools: &HashMap<String, Arc<Pool>>) -> Option<Route> {
    let template = PathTemplate::parse(&r.path).ok()?;
    let target = match r.kind {
        RouteKind::Http => {
            let upstream = r.upstream.clone()?;
            let pool = pools.get(&upstream)?.clone();
            Target::Http { upstream, pool }
        }
        RouteKind::Llm => Target::Llm {
            api: r.api.unwrap_or_default(),
            guards: GuardSet::parse(&r.guards).ok()?,
            output: OutputGuardSet::parse(&r.output_guards).ok()?,
        },
        RouteKind::Mcp => {
            let upstream = r.upstream.clone()?;
            let pool = pools.get(&upstream)?.clone();
            Target::Mcp(Box::new(McpTarget {
                upstream,
                pool,
                tools: ToolPolicy::compile(&r.name, r.tools.as_ref()),
                guards: GuardSet::parse(&r.guards).ok()?,
                output: OutputGuardSet::parse(&r.output_guards).ok()?,
                limits: r.mcp.clone().unwrap_or_default(),
            }))
        }
    };
    Some(Route {
        name: r.name.clone(),
        template,
        methods: match (r.kind, r.methods.is_empty()) {
            (RouteKind::Mcp, true) => MethodSet::from_config(&MCP_METHODS.map(String::from)),
            _ => MethodSet::from_config(&r.methods),
        },
        roles: r.roles.clone(),
        owner: r.owner.clone(),
        rate_limit: r.rate_limit.map(|l| l.requests_per_minute),
        rate_limit_enforced: r.rate_limit.is_none_or(|l| l.enforce),
        websocket: r.websocket,
        target,
    })
}

/// Header names whose `set_headers` values are credentials.
const CREDENTIAL_HINTS: &[&str] = &["auth", "key", "token", "secret", "password", "cookie"];

/// The credentials the gateway sends upstream (`set_headers` values of
/// credential headers, and the token after an auth scheme), which no
/// answer may echo. Other set headers (`anthropic-version: 2023-06-01`)
/// are not secrets and would match ordinary text.
fn gateway_secrets(pools: &HashMap<String, Arc<Pool>>) -> Vec<String> {
    let mut out = Vec::new();
    for pool in pools.values() {
        for (name, value) in &pool.set_headers {
            let name = name.as_str();
            if !CREDENTIAL_HINTS.iter().any(|h| name.contains(h)) {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            out.push(value.to_string());
            if let Some((_scheme, token)) = value.split_once(' ') {
                out.push(token.trim().to_string());
            }
        }
    }
    out
}

fn compile_auth(keys: KeyIndex, jwt: Option<&JwtConfig>, problems: &mut Problems) -> Authenticator {
    let authenticator = Authenticator::new(keys);
    match jwt.and_then(|jwt| crate::auth::jwt_config::build(jwt, problems)) {
        Some(verifier) => authenticator.with_jwt(verifier),
        None => authenticator,
    }
}
