//! Authorization: may this identity use this route? Role × route (methods
//! are already matched by the router), then owner rules: an agent reaches
//! only paths naming themselves unless they hold a bypass role.

use crate::auth::Identity;
use crate::config::snapshot::Route;

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

pub fn authorize(
    route: &Route,
    identity: &Identity,
    params: &[(&str, &str)],
) -> Result<(), Denial> {
    if !route.roles.is_empty() && !identity.has_any_role(&route.roles) {
        return Err(Denial::Role);
    }
    if let Some(owner) = &route.owner {
        if identity.has_any_role(&owner.bypass_roles) {
            return Ok(());
        }
        let value = params
            .iter()
            .find(|(name, _)| *name == owner.param)
            .map(|(_, v)| *v);
        if value != Some(identity.user.as_str()) {
            return Err(Denial::Owner);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::OwnerRule;
    use crate::config::snapshot::Target;
    use crate::router::{MethodSet, PathTemplate};

    fn route(roles: &[&str], owner: Option<OwnerRule>) -> Route {
        Route {
            name: "r".into(),
            template: PathTemplate::parse("/a/{agent}").unwrap(),
            methods: MethodSet::Any,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            owner,
            rate_limit: None,
            rate_limit_enforced: true,
            websocket: false,
            target: Target::Llm {
                api: Default::default(),
                guards: Default::default(),
                output: Default::default(),
            },
        }
    }

    fn who(user: &str, roles: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            tenant: "t".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            key_id: "k".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn roles_gate_the_route() {
        let r = route(&["admin"], None);
        assert_eq!(authorize(&r, &who("a", &["agent"]), &[]), Err(Denial::Role));
        assert_eq!(authorize(&r, &who("a", &["admin"]), &[]), Ok(()));
        assert_eq!(authorize(&route(&[], None), &who("a", &[]), &[]), Ok(()));
    }

    #[test]
    fn owner_rule_with_bypass() {
        let owner = OwnerRule {
            param: "agent".into(),
            bypass_roles: vec!["admin".into()],
        };
        let r = route(&["agent", "admin"], Some(owner));
        let bob = who("bob", &["agent"]);
        assert_eq!(authorize(&r, &bob, &[("agent", "bob")]), Ok(()));
        assert_eq!(
            authorize(&r, &bob, &[("agent", "alice")]),
            Err(Denial::Owner)
        );
        assert_eq!(
            authorize(&r, &who("root", &["admin"]), &[("agent", "alice")]),
            Ok(())
        );
    }
}
