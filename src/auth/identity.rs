//! Who is calling: the same shape whether an API key or a JWT proved it, so
//! authorization, limits and budgets treat both alike.

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// API key id, or the JWT's `kid`; never a secret.
    pub key_id: String,
}

impl Identity {
    pub fn has_any_role(&self, roles: &[String]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// `X-Gateway-Roles` value.
    pub fn roles_header(&self) -> String {
        self.roles.join(",")
    }
}
