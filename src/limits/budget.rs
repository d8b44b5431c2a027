//! Budget vocabulary: limits per scope, the charge a request carries, and the
//! refusal returned when a budget is exhausted. No state lives here.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::limits::window::Window;
use crate::llm::pricing::usd_string;

/// Formats micro-USD as a decimal dollar amount: `50.00`, `0.125`, `1.000001`.
pub fn format_micro_usd(micro: u64) -> String {
    // usd_string always has six decimals; keep cents, drop zeros beyond.
    let mut text = usd_string(micro);
    let with_cents = text.len() - 4;
    while text.len() > with_cents && text.ends_with('0') {
        text.pop();
    }
    text
}

/// Limits for one scope. `None` means unlimited in that window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetLimits {
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub micro_usd_per_month: Option<u64>,
    /// Conversation scope only (validation refuses it elsewhere).
    pub micro_usd_per_day: Option<u64>,
    /// `enforce: false`: a refusal of these limits is reported on the
    /// reservation (`ReservationTicket::shadow`), never answered.
    pub shadow: bool,
}

impl BudgetLimits {
    /// True when no window is limited.
    pub fn is_unlimited(&self) -> bool {
        self.tokens_per_minute.is_none()
            && self.tokens_per_day.is_none()
            && self.micro_usd_per_month.is_none()
            && self.micro_usd_per_day.is_none()
    }

    /// These limits with every field set in `over` replacing ours
    /// (per-user overrides on top of the user-scope defaults).
    pub fn with_override(&self, over: &BudgetLimits) -> BudgetLimits {
        BudgetLimits {
            tokens_per_minute: over.tokens_per_minute.or(self.tokens_per_minute),
            tokens_per_day: over.tokens_per_day.or(self.tokens_per_day),
            micro_usd_per_month: over.micro_usd_per_month.or(self.micro_usd_per_month),
            micro_usd_per_day: over.micro_usd_per_day.or(self.micro_usd_per_day),
            shadow: self.shadow,
        }
    }

    /// The configured limit for `kind`.
    pub fn limit(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::TokensPerMinute => self.tokens_per_minute,
            LimitKind::TokensPerDay => self.tokens_per_day,
            LimitKind::UsdPerMonth => self.micro_usd_per_month,
            LimitKind::UsdPerDay => self.micro_usd_per_day,
        }
    }
}

/// Who a budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKey {
    User(String),
    Tenant(String),
    /// One API key (by id); counted in its tenant's Redis slot.
    Key(String),
    /// One conversation of one tenant (`acme`'s `c-1` is not `globex`'s).
    Conversation {
        tenant: String,
        id: String,
    },
}

impl ScopeKey {
    pub fn user(id: impl Into<String>) -> Self {
        ScopeKey::User(id.into())
    }

    pub fn tenant(id: impl Into<String>) -> Self {
        ScopeKey::Tenant(id.into())
    }

    pub fn key(id: impl Into<String>) -> Self {
        ScopeKey::Key(id.into())
    }

    pub fn conversation(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        ScopeKey::Conversation {
            tenant: tenant.into(),
            id: id.into(),
        }
    }

    /// `"user"`, `"tenant"`, `"key"` or `"conversation"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ScopeKey::User(_) => "user",
            ScopeKey::Tenant(_) => "tenant",
            ScopeKey::Key(_) => "key",
            ScopeKey::Conversation { .. } => "conversation",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            ScopeKey::User(id) | ScopeKey::Tenant(id) | ScopeKey::Key(id) => id,
            ScopeKey::Conversation { id, .. } => id,
        }
    }

    /// Whether this scope counts the window of `kind`. A conversation
    /// counts only its day: its entry (and its Redis keys) expire with the
    /// day, so a million conversations do not stay for a month.
    pub fn counts(&self, kind: LimitKind) -> bool {
        match self {
            ScopeKey::User(_) | ScopeKey::Tenant(_) | ScopeKey::Key(_) => {
                kind != LimitKind::UsdPerDay
            }
            ScopeKey::Conversation { .. } => {
                matches!(kind, LimitKind::TokensPerDay | LimitKind::UsdPerDay)
            }
        }
    }
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKey::Conversation { tenant, id } => write!(f, "conversation:{tenant}/{id}"),
            _ => write!(f, "{}:{}", self.kind(), self.id()),
        }
    }
}

/// Error parsing a `ScopeKey` from `"user:<id>"` / `"tenant:<id>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: expected user:<id>, tenant:<id> or key:<id>")]
pub struct ParseScopeError(pub String);

impl FromStr for ScopeKey {
    type Err = ParseScopeError;

    /// Parses the `Display` form, e.g. for `/admin/usage/user:alice`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("user", id)) if !id.is_empty() => Ok(ScopeKey::User(id.to_string())),
            Some(("tenant", id)) if !id.is_empty() => Ok(ScopeKey::Tenant(id.to_string())),
            Some(("key", id)) if !id.is_empty() => Ok(ScopeKey::Key(id.to_string())),
            _ => Err(ParseScopeError(s.to_string())),
        }
    }
}

impl Serialize for ScopeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one request costs (estimated before the call, actual after it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Charge {
    pub tokens: u64,
    pub micro_usd: u64,
}

impl Charge {
    /// A charge of tokens alone (an API without prices, a token budget).
    pub fn tokens(tokens: u64) -> Self {
        Charge {
            tokens,
            micro_usd: 0,
        }
    }

    /// The amount this charge counts against a window of `kind`.
    pub fn amount(&self, kind: LimitKind) -> u64 {
        match kind {
            LimitKind::TokensPerMinute | LimitKind::TokensPerDay => self.tokens,
            LimitKind::UsdPerDay | LimitKind::UsdPerMonth => self.micro_usd,
        }
    }

    pub fn saturating_add(self, other: Charge) -> Charge {
        Charge {
            tokens: self.tokens.saturating_add(other.tokens),
            micro_usd: self.micro_usd.saturating_add(other.micro_usd),
        }
    }

    pub fn saturating_sub(self, other: Charge) -> Charge {
        Charge {
            tokens: self.tokens.saturating_sub(other.tokens),
            micro_usd: self.micro_usd.saturating_sub(other.micro_usd),
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    TokensPerMinute,
    TokensPerDay,
    UsdPerDay,
    UsdPerMonth,
}

impl LimitKind {
    /// Check order inside one scope: shortest window first (the order of
    /// the Redis scripts' window keys too).
    pub const ALL: [LimitKind; 4] = [
        LimitKind::TokensPerMinute,
        LimitKind::TokensPerDay,
        LimitKind::UsdPerDay,
        LimitKind::UsdPerMonth,
    ];

    pub fn window(self) -> Window {
        match self {
            LimitKind::TokensPerMinute => Window::Minute,
            LimitKind::TokensPerDay | LimitKind::UsdPerDay => Window::Day,
            LimitKind::UsdPerMonth => Window::Month,
        }
    }

    /// A USD limit (`usd_budget_exceeded`), not a token one.
    pub fn is_usd(self) -> bool {
        matches!(self, LimitKind::UsdPerDay | LimitKind::UsdPerMonth)
    }

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        match self {
            LimitKind::TokensPerMinute => 0,
            LimitKind::TokensPerDay => 1,
            LimitKind::UsdPerDay => 2,
            LimitKind::UsdPerMonth => 3,
        }
    }
}

/// A request refused because a budget would be exceeded.
///
/// `used` is settled usage in the current window plus in-flight reservations;
/// `limit`/`used` are tokens, or micro-USD for `UsdPerMonth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetRefusal {
    pub scope: ScopeKey,
    pub kind: LimitKind,
    pub limit: u64,
    pub used: u64,
    /// Seconds until the refusing window resets (for `Retry-After`).
    pub retry_after_secs: u64,
}

impl fmt::Display for BudgetRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (who, id) = (self.scope.kind(), self.scope.id());
        match self.kind {
            LimitKind::TokensPerMinute => write!(
                f,
                "per-minute token budget of {} exhausted for {who} {id}",
                self.limit
            ),
            LimitKind::TokensPerDay => write!(
                f,
                "daily token budget of {} exhausted for {who} {id}",
                self.limit
            ),
            LimitKind::UsdPerMonth => write!(
                f,
                "monthly budget of ${} exhausted for {who} {id}",
                format_micro_usd(self.limit)
            ),
            LimitKind::UsdPerDay => write!(
                f,
                "daily budget of ${} exhausted for {who} {id}",
                format_micro_usd(self.limit)
            ),
        }
    }
}

impl std::error::Error for BudgetRefusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_formatting() {
        for (micro_usd, shown) in [
            (50_000_000, "50.00"),
            (2_000_500_000, "2000.50"),
            (125_000, "0.125"),
            (1_000_001, "1.000001"),
            (0, "0.00"),
        ] {
            assert_eq!(format_micro_usd(micro_usd), shown, "{micro_usd}");
        }
    }

    #[test]
    fn refusal_messages() {
        let r = BudgetRefusal {
            scope: ScopeKey::User("alice".into()),
            kind: LimitKind::TokensPerDay,
            limit: 200_000,
            used: 199_000,
            retry_after_secs: 10,
        };
        assert_eq!(
            r.to_string(),
            "daily token budget of 200000 exhausted for user alice"
        );
        let r = BudgetRefusal {
            scope: ScopeKey::Tenant("acme".into()),
            kind: LimitKind::UsdPerMonth,
            limit: 2_000_000_000,
            ..r
        };
        assert_eq!(
            r.to_string(),
            "monthly budget of $2000.00 exhausted for tenant acme"
        );
    }

    #[test]
    fn a_conversation_counts_only_its_day_and_is_named_in_refusals() {
        let c = ScopeKey::conversation("acme", "c-1");
        assert_ne!(c, ScopeKey::conversation("globex", "c-1"));
        assert_eq!(c.to_string(), "conversation:acme/c-1");
        let counted: Vec<LimitKind> = LimitKind::ALL
            .into_iter()
            .filter(|k| c.counts(*k))
            .collect();
        assert_eq!(counted, [LimitKind::TokensPerDay, LimitKind::UsdPerDay]);
        assert!(!ScopeKey::user("u").counts(LimitKind::UsdPerDay));
        let r = BudgetRefusal {
            scope: c,
            kind: LimitKind::UsdPerDay,
            limit: 2_000_000,
            used: 1_999_000,
            retry_after_secs: 5,
        };
        assert_eq!(
            r.to_string(),
            "daily budget of $2.00 exhausted for conversation c-1"
        );
        for (i, k) in LimitKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn scope_key_display_parse_roundtrip() {
        let k = ScopeKey::User("alice".into());
        assert_eq!(k.to_string(), "user:alice");
        assert_eq!("user:alice".parse::<ScopeKey>(), Ok(k));
        assert_eq!(
            "tenant:a:b".parse::<ScopeKey>(),
            Ok(ScopeKey::Tenant("a:b".into()))
        );
        assert!("user:".parse::<ScopeKey>().is_err());
        assert_eq!("key:k-1".parse::<ScopeKey>(), Ok(ScopeKey::key("k-1")));
        assert_eq!(ScopeKey::key("k-1").to_string(), "key:k-1");
        assert!(ScopeKey::key("k").counts(LimitKind::UsdPerMonth));
        assert!(!ScopeKey::key("k").counts(LimitKind::UsdPerDay));
        assert!("group:x".parse::<ScopeKey>().is_err());
        assert_eq!(
            serde_json::to_string(&ScopeKey::Tenant("acme".into())).ok(),
            Some("\"tenant:acme\"".to_string())
        );
    }

    #[test]
    fn override_replaces_only_set_fields() {
        let base = BudgetLimits {
            tokens_per_minute: Some(20_000),
            tokens_per_day: Some(200_000),
            micro_usd_per_month: Some(50_000_000),
            micro_usd_per_day: None,
            shadow: false,
        };
        let over = BudgetLimits {
            tokens_per_day: Some(500_000),
            ..Default::default()
        };
        let merged = base.with_override(&over);
        assert_eq!(merged.tokens_per_minute, Some(20_000));
        assert_eq!(merged.tokens_per_day, Some(500_000));
        assert_eq!(merged.micro_usd_per_month, Some(50_000_000));
        assert!(BudgetLimits::default().is_unlimited());
        assert!(!merged.is_unlimited());
    }
}
