//! Authorization: may this identity use this route? Role × route (methods
//! are already matched by the router), then owner rules: an agent reaches
//! only paths naming themselves unless they hold a bypass role. MCP tool
//! rules follow the same two steps (`allow_role_and_owner`).

use crate::auth::Identity;
use crate::config::schema::OwnerRule;

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

/// A route's rule: its `roles`, then its `owner` rule over the path
/// parameters the router matched. Takes the rule's parts, not the route,
/// so that this sits below the compiled config (MCP tool rules, compiled
/// there, use [`allow_role_and_owner`]).
pub fn authorize(
    roles: &[String],
    owner: Option<&OwnerRule>,
    identity: &Identity,
    params: &[(&str, &str)],
) -> Result<(), Denial> {
    let owner = owner.map(|owner| {
        let named = params
            .iter()
            .find(|(name, _)| *name == owner.param)
            .map(|(_, v)| *v);
        (owner.bypass_roles.as_slice(), named)
    });
    allow_role_and_owner(identity, roles, owner)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn who(user: &str, roles: &[&str]) -> Identity {
        Identity::for_tests(user, roles)
    }

    #[test]
    fn roles_gate_the_route() {
        let admin = roles(&["admin"]);
        assert_eq!(
            authorize(&admin, None, &who("a", &["agent"]), &[]),
            Err(Denial::Role)
        );
        assert_eq!(authorize(&admin, None, &who("a", &["admin"]), &[]), Ok(()));
        assert_eq!(authorize(&[], None, &who("a", &[]), &[]), Ok(()));
    }

    #[test]
    fn owner_rule_with_bypass() {
        let owner = OwnerRule {
            param: "agent".into(),
            bypass_roles: vec!["admin".into()],
        };
        let allowed = roles(&["agent", "admin"]);
        let check = |identity: &Identity, agent: &str| {
            authorize(&allowed, Some(&owner), identity, &[("agent", agent)])
        };
        let bob = who("bob", &["agent"]);
        assert_eq!(check(&bob, "bob"), Ok(()));
        assert_eq!(check(&bob, "alice"), Err(Denial::Owner));
        assert_eq!(check(&who("root", &["admin"]), "alice"), Ok(()));
    }
}
