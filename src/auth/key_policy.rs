//! A key's own policy: which models it may use, its own request rate and
//! its own budgets. Plain data, filled from `auth.api_keys[]` in the file
//! or from a key made through the admin API, and carried on the
//! [`Identity`](super::Identity) behind an `Arc` (shared by every request
//! of the key, never copied). A key without any of it carries `None`, and
//! costs the request path nothing.

/// What one key may do beyond its roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The model names (as clients send them) this key may call; a model
    /// outside the list is a 403 `model_not_allowed`, and a fallback
    /// outside it is skipped. `None`: every model its roles allow.
    pub models: Option<Box<[String]>>,
    /// The key's own request rate, counted next to its user's.
    pub rate_limit: Option<KeyRateLimit>,
    /// The key's own budgets, reserved and settled next to its user's and
    /// tenant's (they replace the fields a `scope: key` budget sets).
    pub budgets: Option<KeyBudgets>,
}

/// `rate_limit` of a key: requests per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRateLimit {
    pub requests_per_minute: u32,
    /// `false`: shadow mode (served, the would-be refusal counted and logged).
    pub enforce: bool,
}

/// `budgets` of a key. USD in integer micro-dollars, like every budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyBudgets {
    pub tokens_per_day: Option<u64>,
    pub micro_usd_per_month: Option<u64>,
    /// `false`: shadow mode.
    pub enforce: bool,
}

impl KeyPolicy {
    /// Whether the key may call the model clients name `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_deref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    /// Nothing set: such a key is carried with no policy at all.
    pub fn is_empty(&self) -> bool {
        self.models.is_none() && self.rate_limit.is_none() && self.budgets.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_list_names_the_models_clients_send() {
        let open = KeyPolicy::default();
        assert!(open.is_empty());
        assert!(open.allows_model("anything"));
        let listed = KeyPolicy {
            models: Some(vec!["support-fast".to_string()].into_boxed_slice()),
            ..KeyPolicy::default()
        };
        assert!(!listed.is_empty());
        assert!(listed.allows_model("support-fast"));
        assert!(!listed.allows_model("support-fas"));
        assert!(!listed.allows_model("claude-support"));
        let none = KeyPolicy {
            models: Some(Box::default()),
            ..KeyPolicy::default()
        };
        assert!(!none.allows_model("support-fast"));
    }
}
