//! Who is calling: the same shape whether an API key or a JWT proved it, so
//! authorization, limits and budgets treat both alike.

use super::key_policy::KeyPolicy;
use std::sync::Arc;

/// The authenticated caller of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// API key id, or the JWT's `kid`; never a secret.
    pub key_id: String,
    /// What proved it: only an API key is a key of its own (per-key
    /// budgets, `scope: key`); a JWT's `kid` is shared by every token it signs.
    pub credential: CredentialKind,
    /// The key's own policy (allow-list, rate, budgets); `None` for a key
    /// without one and for JWTs.
    pub policy: Option<Arc<KeyPolicy>>,
}

/// The kind of credential an [`Identity`] was proved with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialKind {
    #[default]
    ApiKey,
    Jwt,
}

/// Why a user, tenant, role or key id cannot be an identity value.
///
/// They travel to backends in headers, roles as one comma-separated list:
/// a comma would forge another list item, a control character would break
/// (or split) the header, and surrounding spaces are trimmed by parsers, so
/// the backend would see another name than the one authorised.
pub fn value_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("must not be empty")
    } else if value.contains(',') {
        Some("must not contain a comma")
    } else if value.chars().any(char::is_control) {
        Some("must not contain a control character")
    } else if value.trim() != value {
        Some("must not begin or end with white space")
    } else {
        None
    }
}

impl Identity {
    /// A caller of tenant `t` with key id `k`, for the tests of the rules
    /// that read identities.
    #[cfg(test)]
    pub fn for_tests(user: &str, roles: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            tenant: "t".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            key_id: "k".into(),
            ..Identity::default()
        }
    }

    pub fn has_any_role(&self, roles: &[String]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// The first problem of any of its values (see [`value_problem`]).
    pub fn problem(&self) -> Option<&'static str> {
        std::iter::once(&self.user)
            .chain(std::iter::once(&self.tenant))
            .chain(std::iter::once(&self.key_id))
            .chain(self.roles.iter())
            .find_map(|v| value_problem(v))
    }

    /// Whether this caller may call the model clients name `model`: its
    /// key's allow-list, if it has one.
    pub fn allows_model(&self, model: &str) -> bool {
        self.policy.as_deref().is_none_or(|p| p.allows_model(model))
    }

    /// The key id when the caller authenticated with an API key.
    pub fn api_key_id(&self) -> Option<&str> {
        (self.credential == CredentialKind::ApiKey).then_some(self.key_id.as_str())
    }

    /// `X-Gateway-Roles` value.
    pub fn roles_header(&self) -> String {
        self.roles.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_separators_and_control_characters_are_refused() {
        for bad in [
            "",
            "bob,carol",
            "x,admin",
            "bob\r\nx-gateway-roles: admin",
            "a\u{0}",
            "a\u{7f}",
            "a\u{85}",
            " bob",
            "bob\t",
        ] {
            assert!(value_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["bob", "jane.doe@example.com", "Zoë", "team a"] {
            assert_eq!(value_problem(good), None, "{good:?}");
        }
        let id = Identity {
            user: "bob".into(),
            tenant: "acme".into(),
            roles: vec!["agent".into(), "x,admin".into()],
            key_id: "k".into(),
            ..Identity::default()
        };
        assert_eq!(id.problem(), Some("must not contain a comma"));
    }
}
