//! The admission decision against the in-process store (the same counters
//! local mode runs on): one test per outcome, in the order `admit` asks.

use super::*;
use crate::auth::api_key::digest;
use crate::config::load::load_snapshot_from_str;
use crate::config::snapshot::Snapshot;
use std::sync::Arc;

const BOB: &str = "admission-test-bob";
const ROOT: &str = "admission-test-root";

fn snapshot() -> Arc<Snapshot> {
    let yaml = format!(
        r#"
server: {{ listen: ["127.0.0.1:1"], admin_listen: "127.0.0.1:2" }}
auth:
  api_keys:
    - {{ id: bob-1, sha256: "{bob}", user: bob, tenant: acme, roles: [agent] }}
    - {{ id: root-1, sha256: "{root}", user: root, tenant: acme, roles: [admin] }}
  failed_auth_per_ip_per_minute: 2
upstreams:
  support: {{ peers: ["127.0.0.1:9"], retries: 2 }}
  llm: {{ peers: ["127.0.0.1:9"] }}
routes:
  - {{ name: users, path: "/users/**", methods: ["*"], upstream: support, roles: [admin] }}
  - {{ name: mine, path: "/agents/{{agent}}/tickets", methods: [GET], upstream: support, roles: [agent], owner: {{ param: agent }} }}
  - {{ name: tickets, path: "/tickets/**", methods: [GET, POST], upstream: support, roles: [agent], rate_limit: {{ requests_per_minute: 2 }} }}
  - {{ name: chat, path: /v1/chat/completions, methods: [POST], kind: llm, roles: [agent] }}
models:
  - {{ name: m, upstream: llm, input_usd_per_mtok: 0.0, output_usd_per_mtok: 0.0, max_tokens: 16 }}
limits:
  default: {{ requests_per_minute: 1000 }}
"#,
        bob = hex::encode(digest(BOB)),
        root = hex::encode(digest(ROOT)),
    );
    Arc::new(
        load_snapshot_from_str(&yaml, "admission.yaml", 1, None).unwrap_or_else(|e| panic!("{e}")),
    )
}

fn request(method: &str, path: &str, key: Option<&str>) -> RequestHeader {
    let mut req =
        RequestHeader::build(method, path.as_bytes(), None).unwrap_or_else(|e| panic!("{e}"));
    req.insert_header("host", "gw")
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(key) = key {
        req.insert_header("x-api-key", key)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    req
}

const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

/// Admits on a fresh context; local mode never suspends.
fn admit_on(
    store: &Store,
    snapshot: &Arc<Snapshot>,
    req: &RequestHeader,
) -> (Result<Admitted, Refusal>, RequestCtx) {
    let mut ctx = RequestCtx::new(snapshot.clone());
    let outcome = futures::executor::block_on(admit(store, CLIENT, req, || None, &mut ctx));
    (outcome, ctx)
}

/// The refusal of one request on a fresh context.
fn refused(
    store: &Store,
    snapshot: &Arc<Snapshot>,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> Refusal {
    refusal(admit_on(store, snapshot, &request(method, path, key)).0)
}

fn refusal(outcome: Result<Admitted, Refusal>) -> Refusal {
    match outcome {
        Ok(admitted) => panic!("admitted: {admitted:?}"),
        Err(refusal) => refusal,
    }
}

#[test]
fn an_authorized_request_is_done_with_its_route_and_retries() {
    let (store, snapshot) = (Store::local(), snapshot());
    let (outcome, ctx) = admit_on(&store, &snapshot, &request("GET", "/tickets/7", Some(BOB)));
    assert!(matches!(outcome, Ok(Admitted::Done)));
    assert_eq!(ctx.route_name(), "tickets");
    assert_eq!(ctx.retries_left, 2);
    assert_eq!(ctx.identity.as_ref().map(|i| i.user.as_str()), Some("bob"));
    assert!(ctx.rate.as_ref().is_some_and(|r| r.allowed && r.limit == 2));
}

#[test]
fn an_llm_call_in_local_mode_asks_its_question_at_once() {
    let (store, snapshot) = (Store::local(), snapshot());
    let req = request("POST", "/v1/chat/completions", Some(BOB));
    let (outcome, ctx) = admit_on(&store, &snapshot, &req);
    // Only a shared store leaves the question to the reservation.
    assert!(matches!(outcome, Ok(Admitted::Done)));
    assert!(ctx.route().is_some_and(|r| r.is_llm()));
}

#[test]
fn no_route_and_wrong_method_come_before_credentials() {
    let (store, snapshot) = (Store::local(), snapshot());
    let r = refused(&store, &snapshot, "GET", "/nope", None);
    assert!(matches!(r.error, GatewayError::NoRoute(_)), "{:?}", r.error);
    let r = refused(&store, &snapshot, "DELETE", "/tickets/1", None);
    match r.error {
        GatewayError::MethodNotAllowed { allow, .. } => assert_eq!(allow, ["GET", "POST"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn credentials_missing_or_unknown_are_audited_refusals() {
    let (store, snapshot) = (Store::local(), snapshot());
    let r = refused(&store, &snapshot, "GET", "/tickets/1", None);
    assert!(matches!(r.error, GatewayError::MissingCredentials));
    assert!(matches!(r.audit, Some(AuditEvent::AuthFailed(_))));
    let r = refused(&store, &snapshot, "GET", "/tickets/1", Some("guess"));
    assert!(matches!(r.error, GatewayError::InvalidApiKey));
}

#[test]
fn roles_and_owner_rules_deny_with_their_reason() {
    let (store, snapshot) = (Store::local(), snapshot());
    let r = refused(&store, &snapshot, "GET", "/users/1", Some(BOB));
    assert!(matches!(r.error, GatewayError::Forbidden(_)));
    assert!(matches!(r.audit, Some(AuditEvent::Denied(_))));
    let r = refused(&store, &snapshot, "GET", "/agents/alice/tickets", Some(BOB));
    assert!(matches!(r.error, GatewayError::Forbidden(_)));
    let (own, _) = admit_on(
        &store,
        &snapshot,
        &request("GET", "/agents/bob/tickets", Some(BOB)),
    );
    assert!(matches!(own, Ok(Admitted::Done)));
}

#[test]
fn the_route_rate_refuses_the_third_request_of_the_minute() {
    let (store, snapshot) = (Store::local(), snapshot());
    let req = request("GET", "/tickets/1", Some(BOB));
    for _ in 0..2 {
        assert!(matches!(
            admit_on(&store, &snapshot, &req).0,
            Ok(Admitted::Done)
        ));
    }
    let (outcome, ctx) = admit_on(&store, &snapshot, &req);
    let r = refusal(outcome);
    assert!(matches!(r.error, GatewayError::RateLimited { retry_after, .. } if retry_after <= 60));
    assert!(ctx
        .rate
        .as_ref()
        .is_some_and(|r| !r.allowed && r.remaining == 0));
    // Over the rate, a route bob may not use still answers 403: the
    // authorization decision comes before the rate is judged.
    let r = refused(&store, &snapshot, "GET", "/users/1", Some(BOB));
    assert!(matches!(r.error, GatewayError::Forbidden(_)));
}

#[test]
fn a_locked_out_address_hears_429_even_with_a_good_key() {
    let (store, snapshot) = (Store::local(), snapshot());
    for _ in 0..2 {
        let r = refused(&store, &snapshot, "GET", "/tickets/1", Some("guess"));
        assert!(matches!(r.error, GatewayError::InvalidApiKey));
    }
    let r = refused(&store, &snapshot, "GET", "/tickets/1", Some(ROOT));
    assert!(
        matches!(r.error, GatewayError::RateLimited { .. }),
        "{:?}",
        r.error
    );
    assert!(matches!(r.audit, Some(AuditEvent::AuthBlocked)));
}

#[test]
fn a_pending_question_is_judged_lockout_first_then_rate() {
    let snapshot = snapshot();
    let question = Question {
        failed_auth: None,
        stuffing_limit: Some(2),
    };
    let identity = Identity {
        user: "bob".into(),
        tenant: "acme".into(),
        roles: vec!["agent".into()],
        key_id: "bob-1".into(),
        ..Identity::default()
    };
    let over = RateDecision {
        policy: "default".into(),
        limit: 1,
        remaining: 0,
        reset_secs: 9,
        allowed: false,
        enforced: true,
    };
    let mut ctx = RequestCtx::new(snapshot.clone());
    let both = AdmitVerdict {
        blocked_retry_after: Some(30),
        rate: Some(over.clone()),
        key_rate: None,
    };
    let r = question
        .judge(both, &identity, &mut ctx)
        .err()
        .unwrap_or_else(|| panic!("admitted"));
    assert!(matches!(r.audit, Some(AuditEvent::AuthBlocked)));
    assert!(matches!(
        r.error,
        GatewayError::RateLimited {
            retry_after: 30,
            ..
        }
    ));
    let rate_only = AdmitVerdict {
        blocked_retry_after: None,
        rate: Some(over),
        key_rate: None,
    };
    let r = question
        .judge(rate_only, &identity, &mut ctx)
        .err()
        .unwrap_or_else(|| panic!("admitted"));
    assert!(matches!(
        r.error,
        GatewayError::RateLimited { retry_after: 9, .. }
    ));
    assert!(question
        .judge(AdmitVerdict::default(), &identity, &mut ctx)
        .is_ok());
}

mod upstream_target {
    use super::super::upstream_uri;
    use crate::config::schema::ServerConfig;

    fn server() -> ServerConfig {
        serde_yaml::from_str("listen: ['127.0.0.1:1']\nadmin_listen: '127.0.0.1:2'")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_target_that_cannot_be_represented_fails_closed() {
        let s = server();
        let ok = upstream_uri("/a/%22".into(), Some("q=1"), &s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok, "/a/%22?q=1");
        let huge = format!("/{}", "%22".repeat(22_000));
        let err = upstream_uri(huge, None, &s).err().map(|e| e.code());
        assert_eq!(err, Some("uri_too_long"));
    }
}
