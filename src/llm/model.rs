//! Models as the gateway serves them: the name clients send, the pool and
//! upstream name it maps to, its price, its output cap, who may use it and
//! where to fall back.

use super::pricing::Price;
use crate::config::schema::{ModelConfig, UpstreamApi};

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub upstream: String,
    pub upstream_model: Option<String>,
    pub price: Price,
    pub max_tokens: u64,
    /// Most answers per request (`n`).
    pub max_n: u64,
    pub roles: Vec<String>,
    pub fallbacks: Vec<String>,
    /// Path and query sent upstream instead of the client's (Azure).
    pub upstream_path: Option<String>,
    /// The API the upstream speaks when set (else the route's).
    pub upstream_api: Option<UpstreamApi>,
}

impl Model {
    pub fn compile(config: &ModelConfig) -> Result<Model, String> {
        let (Some(input), Some(output)) = (config.input_usd_per_mtok, config.output_usd_per_mtok)
        else {
            return Err("both prices are required".into());
        };
        let price = Price::from_usd_per_mtok(input, output)
            .and_then(|p| {
                p.with_cache_prices(
                    config.cached_input_usd_per_mtok,
                    config.cache_write_usd_per_mtok,
                )
            })
            .map_err(|e| e.to_string())?;
        Ok(Model {
            name: config.name.clone(),
            upstream: config.upstream.clone(),
            upstream_model: config.upstream_model.clone(),
            price,
            max_tokens: config.max_tokens,
            max_n: config.max_n,
            roles: config.roles.clone(),
            fallbacks: config.fallbacks.clone(),
            upstream_path: config.upstream_path.clone(),
            upstream_api: config.upstream_api,
        })
    }

    /// The name written into the body sent upstream.
    pub fn upstream_name(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }

    pub fn allows(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || roles.iter().any(|r| self.roles.contains(r))
    }
}
