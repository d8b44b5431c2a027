//! Key layout in Redis. Every key of a tenant carries the tenant as its
//! hash tag (`tg:{acme}:…`), so every script touches one hash slot and runs
//! on Redis Cluster; a user belongs to one tenant. Failed-auth counters are
//! tagged by client address instead (no tenant is known for them). Each key
//! names its window, so it expires with it.

use std::fmt::Write;
use std::net::IpAddr;

use crate::limits::budget::ScopeKey;
use crate::limits::window::{window_id, Window};

/// Ids may hold any character; `:` (the separator) and `%` are escaped so
/// that `u:a:b` can never collide with another user's key, and `{`/`}` so
/// an id cannot move a key to another hash slot.
fn push_escaped(out: &mut String, id: &str) {
    for c in id.chars() {
        match c {
            ':' => out.push_str("%3A"),
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
}

/// `{prefix}{tenant}:`, the start of every key of one tenant.
fn tenant_base(prefix: &str, tenant: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + tenant.len() + 24);
    key.push_str(prefix);
    key.push('{');
    push_escaped(&mut key, tenant);
    key.push_str("}:");
    key
}

/// `{prefix}{tenant}:u:{user}:`, `{prefix}{tenant}:t:`, `{prefix}{tenant}:k:{key}:` or
/// `{prefix}{tenant}:c:{conversation}:`.
fn scope_base(prefix: &str, tenant: &str, scope: &ScopeKey) -> String {
    let mut key = tenant_base(prefix, tenant);
    match scope {
        ScopeKey::User(user) => {
            key.push_str("u:");
            push_escaped(&mut key, user);
            key.push(':');
        }
        ScopeKey::Tenant(_) => key.push_str("t:"),
        ScopeKey::Key(id) => {
            key.push_str("k:");
            push_escaped(&mut key, id);
            key.push(':');
        }
        ScopeKey::Conversation { id, .. } => {
            key.push_str("c:");
            push_escaped(&mut key, id);
            key.push(':');
        }
    }
    key
}

/// The 5 budget keys of one scope at `now_unix`, in the order the scripts
/// take them: tokens this minute, tokens today, micro-USD today, micro-USD
/// this month (the order of `LimitKind::ALL`), open reservations.
pub fn budget_keys(prefix: &str, tenant: &str, scope: &ScopeKey, now_unix: u64) -> [String; 5] {
    let base = scope_base(prefix, tenant, scope);
    let windowed = |name: &str, w: Window| {
        let mut key = base.clone();
        let _ = write!(key, "{name}:{}", window_id(w, now_unix));
        key
    };
    [
        windowed("tm", Window::Minute),
        windowed("td", Window::Day),
        windowed("ud", Window::Day),
        windowed("um", Window::Month),
        format!("{base}res"),
    ]
}

/// The scope's marker: present while Redis holds the scope's windows as
/// they were counted; missing after Redis lost them (restart, flush,
/// failover), when they are rebuilt from the ledger. No window in its
/// name: a new day's zero counters are right, not lost.
pub fn marker_key(prefix: &str, tenant: &str, scope: &ScopeKey) -> String {
    let mut key = scope_base(prefix, tenant, scope);
    key.push_str("mk");
    key
}

/// A one-time claim (an alert's threshold crossing) on the tenant's slot.
pub fn claim_key(prefix: &str, tenant: &str, token: &str) -> String {
    let mut key = tenant_base(prefix, tenant);
    key.push_str("al:");
    push_escaped(&mut key, token);
    key
}

/// The request counter of `user` in the minute of `now_unix`: the route's
/// own (`Some(route)`, for routes with a `rate_limit`) or the default one.
/// Distinct prefixes keep a route named `default` off the default counter.
pub fn rate_key(
    prefix: &str,
    tenant: &str,
    user: &str,
    route: Option<&str>,
    now_unix: u64,
) -> String {
    let mut key = scope_base(prefix, tenant, &ScopeKey::User(user.to_string()));
    match route {
        Some(route) => {
            key.push_str("rq:r:");
            push_escaped(&mut key, route);
        }
        None => key.push_str("rq:d"),
    }
    let _ = write!(key, ":{}", window_id(Window::Minute, now_unix));
    key
}

/// The request counter of API key `key_id` (of `tenant`) in the minute of
/// `now_unix`, counted next to its user's.
pub fn key_rate_key(prefix: &str, tenant: &str, key_id: &str, now_unix: u64) -> String {
    let mut key = scope_base(prefix, tenant, &ScopeKey::Key(key_id.to_string()));
    let _ = write!(key, "rq:{}", window_id(Window::Minute, now_unix));
    key
}

/// The failed-authentication counter of a client address in the minute of
/// `now_unix`. IPv6 is counted per /64, like the local guard.
pub fn failed_auth_key(prefix: &str, ip: IpAddr, now_unix: u64) -> String {
    let counted = match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let net = u128::from(v6) >> 64 << 64;
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    };
    format!(
        "{prefix}{{ip:{counted}}}:fa:{}",
        window_id(Window::Minute, now_unix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-01 12:00:00 UTC
    const NOW: u64 = 1_796_126_400;

    #[test]
    fn keys_carry_the_tenant_hash_tag_and_their_window() {
        let [m, d, ud, mo, res] = budget_keys("tg:", "acme", &ScopeKey::User("bob".into()), NOW);
        assert_eq!(m, format!("tg:{{acme}}:u:bob:tm:{}", NOW / 60));
        assert_eq!(d, format!("tg:{{acme}}:u:bob:td:{}", NOW / 86_400));
        assert_eq!(ud, format!("tg:{{acme}}:u:bob:ud:{}", NOW / 86_400));
        let [_, cd, ..] = budget_keys("tg:", "acme", &ScopeKey::conversation("acme", "c:1}"), NOW);
        assert_eq!(cd, format!("tg:{{acme}}:c:c%3A1%7D:td:{}", NOW / 86_400));
        assert_eq!(mo, format!("tg:{{acme}}:u:bob:um:{}", 2026 * 12 + 11));
        assert_eq!(res, "tg:{acme}:u:bob:res");
        let [t, ..] = budget_keys("tg:", "acme", &ScopeKey::Tenant("acme".into()), NOW);
        assert!(t.starts_with("tg:{acme}:t:tm:"));
        assert_eq!(
            rate_key("x:", "acme", "bob", Some("chat"), NOW),
            format!("x:{{acme}}:u:bob:rq:r:chat:{}", NOW / 60)
        );
        assert_ne!(
            rate_key("x:", "acme", "bob", Some("default"), NOW),
            rate_key("x:", "acme", "bob", None, NOW)
        );
        let [k, ..] = budget_keys("tg:", "acme", &ScopeKey::key("k:1"), NOW);
        assert_eq!(k, format!("tg:{{acme}}:k:k%3A1:tm:{}", NOW / 60));
        assert_eq!(
            key_rate_key("tg:", "acme", "k:1", NOW),
            format!("tg:{{acme}}:k:k%3A1:rq:{}", NOW / 60)
        );
    }

    #[test]
    fn ids_cannot_escape_their_slot_or_collide() {
        let a = rate_key("tg:", "ac}me", "a:rq:x", Some("p"), NOW);
        assert!(a.starts_with("tg:{ac%7Dme}:u:a%3Arq%3Ax:rq:r:p:"), "{a}");
        assert_ne!(
            rate_key("tg:", "t", "a:b", Some("c"), NOW),
            rate_key("tg:", "t", "a", Some("b:c"), NOW)
        );
    }

    #[test]
    fn failed_auth_is_per_ipv4_and_per_ipv6_64() {
        let v4 = failed_auth_key("tg:", IpAddr::from([192, 0, 2, 7]), NOW);
        assert_eq!(v4, format!("tg:{{ip:192.0.2.7}}:fa:{}", NOW / 60));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let b: IpAddr = "2001:db8:1:2::ff"
            .parse()
            .unwrap_or(IpAddr::from([0u8; 16]));
        assert_eq!(
            failed_auth_key("tg:", a, NOW),
            failed_auth_key("tg:", b, NOW)
        );
        assert!(failed_auth_key("tg:", a, NOW).starts_with("tg:{ip:2001:db8:1:2::/64}"));
    }
}
