//! Which budgets apply to a call: the user-scope limits (with the
//! caller's overrides), the API key's limits (`scope: key` with the key's
//! own `budgets` on top), the tenant-scope limits and, for a call naming a
//! conversation, the conversation-scope limits, compiled from config.

use super::budget::{BudgetLimits, ScopeKey};
use crate::auth::Identity;
use crate::config::schema::{BudgetScope, LimitsConfig};
use crate::llm::pricing::micro_usd_from_usd;
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct BudgetPolicy {
    user: BudgetLimits,
    tenant: BudgetLimits,
    /// `scope: key`; `None` without one: then only keys with budgets of
    /// their own are tracked (no counter per key otherwise).
    key: Option<BudgetLimits>,
    /// `None` without a conversation budget entry: conversations are then
    /// not tracked at all (no counter per conversation id).
    conversation: Option<BudgetLimits>,
    overrides: HashMap<String, BudgetLimits>,
}

fn usd(value: Option<f64>) -> Result<Option<u64>, String> {
    value
        .map(|v| micro_usd_from_usd(v).map_err(|e| e.to_string()))
        .transpose()
}

impl BudgetPolicy {
    pub fn compile(limits: &LimitsConfig) -> Result<BudgetPolicy, String> {
        let mut policy = BudgetPolicy::default();
        for budget in &limits.budgets {
            let compiled = BudgetLimits {
                tokens_per_minute: budget.tokens_per_minute,
                tokens_per_day: budget.tokens_per_day,
                micro_usd_per_month: usd(budget.usd_per_month)?,
                micro_usd_per_day: usd(budget.usd_per_day)?,
                shadow: !budget.enforce,
            };
            match budget.scope {
                BudgetScope::User => policy.user = compiled,
                BudgetScope::Tenant => policy.tenant = compiled,
                BudgetScope::Key => policy.key = Some(compiled),
                BudgetScope::Conversation => policy.conversation = Some(compiled),
            }
        }
        for (user, o) in &limits.overrides {
            let over = BudgetLimits {
                tokens_per_minute: o.tokens_per_minute,
                tokens_per_day: o.tokens_per_day,
                micro_usd_per_month: usd(o.usd_per_month)?,
                micro_usd_per_day: None,
                shadow: false,
            };
            policy.overrides.insert(user.clone(), over);
        }
        Ok(policy)
    }

    pub fn user_limits(&self, user: &str) -> BudgetLimits {
        match self.overrides.get(user) {
            Some(over) => self.user.with_override(over),
            None => self.user,
        }
    }

    pub fn tenant_limits(&self) -> BudgetLimits {
        self.tenant
    }

    /// The budget of the API key `identity` authenticated with: `scope:
    /// key` with the fields of the key's own `budgets` replacing its (and
    /// their `enforce`). `None` for a JWT, or a key with no budget at all.
    pub fn key_limits(&self, identity: &Identity) -> Option<BudgetLimits> {
        identity.api_key_id()?;
        let own = identity.policy.as_deref().and_then(|p| p.budgets);
        match (self.key, own) {
            (base, Some(own)) => {
                let base = base.unwrap_or_default();
                Some(BudgetLimits {
                    tokens_per_day: own.tokens_per_day.or(base.tokens_per_day),
                    micro_usd_per_month: own.micro_usd_per_month.or(base.micro_usd_per_month),
                    shadow: !own.enforce,
                    ..base
                })
            }
            (base, None) => base,
        }
    }

    /// Scopes to reserve against, user first (its refusal is reported
    /// first), then the API key's when it has a budget, then tenant, then
    /// the call's conversation when it names one and a conversation budget
    /// exists. Unlimited user and tenant scopes
    /// are included too, so that spend is tracked and shown by
    /// /admin/usage even where nothing caps it.
    pub fn scopes_for(
        &self,
        identity: &Identity,
        conversation: Option<&str>,
    ) -> Vec<(ScopeKey, BudgetLimits)> {
        let mut scopes = Vec::with_capacity(4);
        scopes.push((
            ScopeKey::User(identity.user.clone()),
            self.user_limits(&identity.user),
        ));
        if let Some(limits) = self.key_limits(identity) {
            scopes.push((ScopeKey::Key(identity.key_id.clone()), limits));
        }
        scopes.push((
            ScopeKey::Tenant(identity.tenant.clone()),
            self.tenant_limits(),
        ));
        if let (Some(id), Some(limits)) = (conversation, self.conversation) {
            scopes.push((ScopeKey::conversation(&identity.tenant, id), limits));
        }
        scopes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key_policy::{KeyBudgets, KeyPolicy};
    use crate::auth::CredentialKind;
    use crate::config::schema::BudgetConfig;
    use std::sync::Arc;

    fn limits(key: Option<BudgetConfig>) -> LimitsConfig {
        LimitsConfig {
            budgets: key.into_iter().collect(),
            ..LimitsConfig::default()
        }
    }

    fn key_budget(tokens_per_day: Option<u64>, usd: Option<f64>, enforce: bool) -> BudgetConfig {
        BudgetConfig {
            scope: BudgetScope::Key,
            tokens_per_minute: Some(7),
            tokens_per_day,
            usd_per_month: usd,
            usd_per_day: None,
            enforce,
        }
    }

    fn caller(budgets: Option<KeyBudgets>, credential: CredentialKind) -> Identity {
        Identity {
            user: "bob".into(),
            tenant: "acme".into(),
            key_id: "bob-1".into(),
            credential,
            policy: budgets.map(|b| {
                Arc::new(KeyPolicy {
                    budgets: Some(b),
                    ..KeyPolicy::default()
                })
            }),
            ..Identity::default()
        }
    }

    fn kinds(scopes: &[(ScopeKey, BudgetLimits)]) -> Vec<&'static str> {
        scopes.iter().map(|s| s.0.kind()).collect()
    }

    #[test]
    fn a_key_without_budgets_adds_no_scope() -> Result<(), String> {
        let policy = BudgetPolicy::compile(&limits(None))?;
        let scopes = policy.scopes_for(&caller(None, CredentialKind::ApiKey), None);
        assert_eq!(kinds(&scopes), ["user", "tenant"]);
        Ok(())
    }

    #[test]
    fn own_budgets_replace_the_fields_of_scope_key() -> Result<(), String> {
        let policy = BudgetPolicy::compile(&limits(Some(key_budget(Some(100), Some(1.0), true))))?;
        let own = KeyBudgets {
            tokens_per_day: None,
            micro_usd_per_month: Some(250_000),
            enforce: false,
        };
        let scopes = policy.scopes_for(&caller(Some(own), CredentialKind::ApiKey), None);
        assert_eq!(kinds(&scopes), ["user", "key", "tenant"]);
        assert_eq!(scopes[1].0, ScopeKey::key("bob-1"));
        let key = scopes[1].1;
        assert_eq!(key.tokens_per_minute, Some(7));
        assert_eq!(key.tokens_per_day, Some(100));
        assert_eq!(key.micro_usd_per_month, Some(250_000));
        assert!(key.shadow, "the key's own enforce: false");
        // scope: key alone applies to every key, in its own mode.
        let plain = policy.scopes_for(&caller(None, CredentialKind::ApiKey), None);
        assert_eq!(plain[1].1.micro_usd_per_month, Some(1_000_000));
        assert!(!plain[1].1.shadow);
        Ok(())
    }

    #[test]
    fn a_jwt_kid_is_not_a_key_scope() -> Result<(), String> {
        let policy = BudgetPolicy::compile(&limits(Some(key_budget(Some(100), None, true))))?;
        let scopes = policy.scopes_for(&caller(None, CredentialKind::Jwt), None);
        assert_eq!(kinds(&scopes), ["user", "tenant"]);
        Ok(())
    }
}
