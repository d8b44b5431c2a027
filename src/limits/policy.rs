//! Which budgets apply to a call: the user-scope limits (with the
//! caller's overrides), the tenant-scope limits and, for a call naming a
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

    /// Scopes to reserve against, user first (its refusal is reported
    /// first), then tenant, then the call's conversation when it names one
    /// and a conversation budget exists. Unlimited user and tenant scopes
    /// are included too, so that spend is tracked and shown by
    /// /admin/usage even where nothing caps it.
    pub fn scopes_for(
        &self,
        identity: &Identity,
        conversation: Option<&str>,
    ) -> Vec<(ScopeKey, BudgetLimits)> {
        let mut scopes = Vec::with_capacity(3);
        scopes.push((
            ScopeKey::User(identity.user.clone()),
            self.user_limits(&identity.user),
        ));
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
