//! The rule routes and MCP tools share (a leaf: the route table and the
//! MCP tool policy both reach it without reaching the route checks).

use crate::auth::Identity;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// None of the identity's roles is allowed on the route.
    Role,
    /// The owner parameter names someone else.
    Owner,
}

impl Denial {
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Role => "role_not_allowed",
            Denial::Owner => "not_owner",
        }
    }

    pub fn message(&self, route: &str) -> String {
        match self {
            Denial::Role => format!("your roles may not use route {route}"),
            Denial::Owner => format!("route {route} only serves the caller's own resources"),
        }
    }
}

/// The rule of routes and MCP tools alike: the identity holds one of
/// `roles` (none listed: anyone may); then, under an owner rule given as
/// (bypass roles, the owner the request names), the named owner is the
/// identity's user unless it holds a bypass role.
pub fn allow_role_and_owner(
    identity: &Identity,
    roles: &[String],
    owner: Option<(&[String], Option<&str>)>,
) -> Result<(), Denial> {
    if !roles.is_empty() && !identity.has_any_role(roles) {
        return Err(Denial::Role);
    }
    if let Some((bypass_roles, named)) = owner {
        if !identity.has_any_role(bypass_roles) && named != Some(identity.user.as_str()) {
            return Err(Denial::Owner);
        }
    }
    Ok(())
}
