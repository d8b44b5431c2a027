//! Per-tool authorization of a `kind: mcp` route: which roles may call a
//! tool, whose resources its arguments may name (owner rules on tool
//! arguments), and which tools `tools/list` shows the caller. Pure over
//! (rules, identity, arguments), so every decision is unit-tested here.

use crate::auth::Identity;
use crate::config::schema::{ArgumentOwnerRule, ToolDefault, ToolsConfig};
use serde_json::Value;
use std::collections::HashMap;

/// One tool's compiled rule.
#[derive(Debug, Clone)]
pub struct ToolRule {
    pub name: String,
    pub roles: Vec<String>,
    pub owner: Option<ArgumentOwnerRule>,
    pub rate_limit: Option<u32>,
    /// The counter name of this tool's rate: `<route>/tools/<tool>`.
    pub rate_key: String,
}

/// The compiled `tools:` of one route.
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    default: ToolDefault,
    rules: HashMap<String, ToolRule>,
}

/// Why a tool call (or method) was refused: the rule that said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDenial {
    /// No rule names the tool and the route's default is deny.
    NotListed,
    /// None of the caller's roles may call the tool.
    Role,
    /// The owner argument names someone else (or is missing).
    Owner { argument: String },
    /// The route's `mcp.deny_methods` lists the method.
    Method,
}

impl ToolDenial {
    /// The audit log's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ToolDenial::NotListed => "tool_not_listed",
            ToolDenial::Role => "role_not_allowed",
            ToolDenial::Owner { .. } => "not_owner",
            ToolDenial::Method => "method_denied",
        }
    }

    /// The JSON-RPC error message: names the tool and the rule, never an
    /// argument's value.
    pub fn message(&self, tool: &str) -> String {
        match self {
            ToolDenial::NotListed => {
                format!("tool {tool} is not allowed on this route (not listed, default deny)")
            }
            ToolDenial::Role => format!("your roles may not call tool {tool} (rule: roles)"),
            ToolDenial::Owner { argument } => format!(
                "tool {tool} only serves the caller's own resources (rule: owner on argument {argument})"
            ),
            ToolDenial::Method => format!("method {tool} is denied on this route"),
        }
    }
}

impl ToolPolicy {
    /// `route` names the per-tool rate counters. Validation already
    /// refused duplicate names.
    pub fn compile(route: &str, config: Option<&ToolsConfig>) -> ToolPolicy {
        let Some(config) = config else {
            return ToolPolicy::default();
        };
        let rules = config
            .rules
            .iter()
            .map(|r| {
                let rule = ToolRule {
                    name: r.name.clone(),
                    roles: r.roles.clone(),
                    owner: r.owner.clone(),
                    rate_limit: r.rate_limit.map(|l| l.requests_per_minute),
                    rate_key: format!("{route}/tools/{}", r.name),
                };
                (r.name.clone(), rule)
            })
            .collect();
        ToolPolicy {
            default: config.default,
            rules,
        }
    }

    /// The rule naming `tool`, if any.
    pub fn rule(&self, tool: &str) -> Option<&ToolRule> {
        self.rules.get(tool)
    }

    /// Whether `tool` may appear in the caller's `tools/list`: the roles
    /// allow it (owner rules depend on arguments, so they do not hide it).
    pub fn lists(&self, identity: &Identity, tool: &str) -> bool {
        match self.rules.get(tool) {
            Some(rule) => rule.roles.is_empty() || identity.has_any_role(&rule.roles),
            None => self.default == ToolDefault::Allow,
        }
    }

    /// May `identity` call `tool` with `arguments` (the `tools/call`
    /// params' `arguments` object)?
    pub fn authorize(
        &self,
        identity: &Identity,
        tool: &str,
        arguments: Option<&Value>,
    ) -> Result<(), ToolDenial> {
        let Some(rule) = self.rules.get(tool) else {
            return match self.default {
                ToolDefault::Allow => Ok(()),
                ToolDefault::Deny => Err(ToolDenial::NotListed),
            };
        };
        if !rule.roles.is_empty() && !identity.has_any_role(&rule.roles) {
            return Err(ToolDenial::Role);
        }
        if let Some(owner) = &rule.owner {
            if identity.has_any_role(&owner.bypass_roles) {
                return Ok(());
            }
            // Only a string equal to the user passes: a number, an array
            // or a missing argument cannot be proven to be the caller's.
            let named = arguments
                .and_then(|a| a.get(&owner.argument))
                .and_then(Value::as_str);
            if named != Some(identity.user.as_str()) {
                return Err(ToolDenial::Owner {
                    argument: owner.argument.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `method` matches one of `deny` (`name` exactly, or `prefix/*`).
pub fn method_denied(deny: &[String], method: &str) -> bool {
    deny.iter().any(|d| match d.strip_suffix('*') {
        Some(prefix) => method.starts_with(prefix),
        None => d == method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{RateLimitConfig, ToolRuleConfig};
    use serde_json::json;

    fn who(user: &str, roles: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            tenant: "t".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            key_id: "k".into(),
            ..Identity::default()
        }
    }

    fn rule(name: &str, roles: &[&str]) -> ToolRuleConfig {
        ToolRuleConfig {
            name: name.into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            owner: None,
            rate_limit: None,
        }
    }

    fn support(default: ToolDefault) -> ToolPolicy {
        let mut list = rule("list_agent_tickets", &["agent", "admin"]);
        list.owner = Some(ArgumentOwnerRule {
            argument: "agent".into(),
            bypass_roles: vec!["admin".into()],
        });
        let mut refund = rule("refund_ticket", &["admin"]);
        refund.rate_limit = Some(RateLimitConfig {
            requests_per_minute: 5,
            enforce: true,
        });
        let config = ToolsConfig {
            default,
            rules: vec![rule("get_ticket", &[]), list, refund],
        };
        ToolPolicy::compile("tools", Some(&config))
    }

    #[test]
    fn roles_gate_each_tool() {
        let p = support(ToolDefault::Deny);
        let bob = who("bob", &["agent"]);
        assert_eq!(p.authorize(&bob, "get_ticket", None), Ok(()));
        assert_eq!(
            p.authorize(&bob, "refund_ticket", None),
            Err(ToolDenial::Role)
        );
        assert_eq!(
            p.authorize(&who("root", &["admin"]), "refund_ticket", None),
            Ok(())
        );
        assert_eq!(
            p.rule("refund_ticket").map(|r| r.rate_key.as_str()),
            Some("tools/tools/refund_ticket")
        );
    }

    #[test]
    fn unlisted_tools_follow_the_default() {
        let bob = who("bob", &["agent"]);
        let deny = support(ToolDefault::Deny);
        assert_eq!(
            deny.authorize(&bob, "search_kb", None),
            Err(ToolDenial::NotListed)
        );
        assert!(!deny.lists(&bob, "search_kb"));
        let allow = support(ToolDefault::Allow);
        assert_eq!(allow.authorize(&bob, "search_kb", None), Ok(()));
        assert!(allow.lists(&bob, "search_kb"));
        // Without `tools:` every tool is denied.
        let none = ToolPolicy::compile("r", None);
        assert_eq!(
            none.authorize(&bob, "get_ticket", None),
            Err(ToolDenial::NotListed)
        );
    }

    #[test]
    fn owner_rule_reads_the_named_argument() {
        let p = support(ToolDefault::Deny);
        let bob = who("bob", &["agent"]);
        let owner = Err(ToolDenial::Owner {
            argument: "agent".into(),
        });
        let call = |args: Value| p.authorize(&bob, "list_agent_tickets", Some(&args));
        assert_eq!(call(json!({"agent": "bob"})), Ok(()));
        assert_eq!(call(json!({"agent": "alice"})), owner);
        assert_eq!(call(json!({})), owner);
        assert_eq!(call(json!({"agent": ["bob"]})), owner);
        assert_eq!(call(json!({"agent": "Bob"})), owner);
        assert_eq!(
            p.authorize(&bob, "list_agent_tickets", None),
            owner,
            "no arguments at all"
        );
        let root = who("root", &["admin"]);
        assert_eq!(
            p.authorize(
                &root,
                "list_agent_tickets",
                Some(&json!({"agent": "alice"}))
            ),
            Ok(())
        );
    }

    #[test]
    fn lists_what_the_roles_allow() {
        let p = support(ToolDefault::Deny);
        let bob = who("bob", &["agent"]);
        let listed: Vec<&str> = ["get_ticket", "list_agent_tickets", "refund_ticket"]
            .into_iter()
            .filter(|t| p.lists(&bob, t))
            .collect();
        assert_eq!(listed, ["get_ticket", "list_agent_tickets"]);
    }

    #[test]
    fn denial_messages_name_tool_and_rule_never_values() {
        let m = ToolDenial::Owner {
            argument: "agent".into(),
        }
        .message("list_agent_tickets");
        assert!(
            m.contains("list_agent_tickets") && m.contains("owner"),
            "{m}"
        );
        assert!(ToolDenial::Role.message("refund_ticket").contains("roles"));
    }

    #[test]
    fn deny_methods_match_names_and_prefixes() {
        let deny = vec!["resources/*".to_string(), "sampling/createMessage".into()];
        assert!(method_denied(&deny, "resources/read"));
        assert!(method_denied(&deny, "sampling/createMessage"));
        assert!(!method_denied(&deny, "tools/call"));
        assert!(!method_denied(&deny, "sampling/createMessageX"));
    }
}
