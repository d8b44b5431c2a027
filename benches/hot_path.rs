//! Per-request hot path: route match + API-key lookup + authorization +
//! rate check (`admission::admit`), and its parts.

#![allow(clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use futures::executor::block_on;
use pingora::http::RequestHeader;
use std::sync::Arc;
use tollgate::admission;
use tollgate::ctx::RequestCtx;
use tollgate::limits::store::Store;

const KEY: &str = "bench-key-bob";
/// Bob's second key, with a policy of its own (allow-list, rate, budgets).
const POLICY_KEY: &str = "bench-key-bob-policy";

fn config() -> String {
    let digest = hex::encode(tollgate::auth::api_key::digest(KEY));
    let policy_digest = hex::encode(tollgate::auth::api_key::digest(POLICY_KEY));
    let mut keys = String::new();
    // A realistic key table: 1,000 keys.
    for i in 0..1000 {
        let d = hex::encode(tollgate::auth::api_key::digest(&format!("other-{i}")));
        keys.push_str(&format!(
            "    - {{ id: k{i}, sha256: \"{d}\", user: u{i}, tenant: t, roles: [agent] }}\n"
        ));
    }
    format!(
        r#"
server: {{ listen: ["127.0.0.1:1"], admin_listen: "127.0.0.1:2" }}
auth:
  api_keys:
    - {{ id: bob-1, sha256: "{digest}", user: bob, tenant: acme, roles: [agent] }}
    - {{ id: bob-2, sha256: "{policy_digest}", user: bob, tenant: acme, roles: [agent], models: [m],
         rate_limit: {{ requests_per_minute: 1000000000 }}, budgets: {{ tokens_per_day: 1000000000000 }} }}
{keys}
upstreams:
  support: {{ peers: ["127.0.0.1:9001"] }}
  llm: {{ peers: ["127.0.0.1:9101"] }}
routes:
  - {{ name: users, path: "/api/v1/users/**", methods: ["*"], upstream: support, roles: [admin] }}
  - {{ name: agent-tickets, path: "/api/v1/agents/{{agent}}/tickets", methods: [GET], upstream: support, roles: [agent], owner: {{ param: agent }} }}
  - {{ name: tickets, path: "/api/v1/tickets/**", methods: [GET, POST, PATCH], upstream: support, roles: [agent, admin] }}
models:
  - {{ name: m, upstream: llm, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_tokens: 100 }}
limits:
  default: {{ requests_per_minute: 1000000000 }}
  budgets:
    - {{ scope: user, tokens_per_day: 1000000000000 }}
"#
    )
}

fn request(path: &str, key: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).expect("req");
    req.insert_header("host", "gw").expect("h");
    req.insert_header("x-api-key", key).expect("h");
    req.insert_header("user-agent", "bench/1.0").expect("h");
    req.insert_header("accept", "application/json").expect("h");
    req
}

fn bench(c: &mut Criterion) {
    let snapshot = Arc::new(
        tollgate::config::load::load_snapshot_from_str(&config(), "bench.yaml", 1, None)
            .expect("config"),
    );
    let store = Store::local();
    let limiter = &store.local_counters().limiter;
    let ok = request("/api/v1/agents/bob/tickets?status=open", KEY);
    let bad = request("/api/v1/agents/bob/tickets", "not-a-key");
    let keyed = request("/api/v1/agents/bob/tickets?status=open", POLICY_KEY);

    let mut group = c.benchmark_group("hot_path");
    for (name, req) in [
        ("admit_ok", &ok),
        ("admit_invalid_key", &bad),
        // + the key's own request counter.
        ("admit_ok_key_policy", &keyed),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut ctx = RequestCtx::new(snapshot.clone());
                // Local mode never suspends: block_on polls the future once.
                black_box(block_on(admission::admit(
                    &store,
                    None,
                    black_box(req),
                    || None,
                    &mut ctx,
                )))
                .is_ok()
            })
        });
    }
    llm_budget_checks(&mut group, &snapshot, &ok, &keyed);
    let path = tollgate::router::normalize("/api/v1/agents/bob/tickets").expect("path");
    group.bench_function("route_match", |b| {
        b.iter(|| {
            matches!(
                tollgate::router::lookup(&snapshot.routes, black_box(&path.segments), "GET"),
                tollgate::router::RouteLookup::Found { .. }
            )
        })
    });
    group.bench_function("key_lookup", |b| {
        b.iter(|| snapshot.auth.authenticate(black_box(&ok), 0, None).is_ok())
    });
    group.bench_function("rate_check", |b| {
        b.iter(|| limiter.check(black_box("bob"), "r", None, Some(1_000_000_000)))
    });
    group.bench_function("trace_ids", |b| {
        b.iter(|| {
            (
                tollgate::observe::trace::request_id(black_box(&ok)),
                tollgate::observe::trace::traceparent(black_box(&ok)),
            )
        })
    });
    let head = b"GET /api/v1/agents/bob/tickets?status=open HTTP/1.1\r\nHost: gw.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nX-API-Key: 0123456789abcdef\r\n\r\n";
    let limits = tollgate::edge::head_scan::HeadLimits {
        max_header_bytes: 32768,
        max_uri_bytes: 8192,
    };
    group.bench_function("head_scan", |b| {
        b.iter(|| tollgate::edge::head_scan::HeadScanner::default().scan(black_box(head), &limits))
    });
    // The contract's headers (identity, trace and forwarding upstream;
    // request id, rate limit and Server-Timing on the answer) through
    // Pingora's header API, on a case-preserving request as Pingora parses
    // it: the per-request cost of the header path (benches/RESULTS.md).
    let mut admitted = RequestCtx::new(snapshot.clone());
    let _done =
        block_on(admission::admit(&store, None, &ok, || None, &mut admitted)).expect("admitted");
    let pool = snapshot.pools.get("support").expect("pool").clone();
    let ip: std::net::IpAddr = [10, 1, 2, 3].into();
    let answer = {
        let mut r = pingora::http::ResponseHeader::build(200, None).expect("resp");
        r.insert_header("content-type", "application/json")
            .expect("h");
        r.insert_header("content-length", "512").expect("h");
        r
    };
    group.bench_function("upstream_and_answer_headers", |b| {
        b.iter(|| {
            let mut upstream = ok.clone();
            tollgate::edge::headers::prepare_upstream_request(
                &mut upstream,
                &admitted,
                &pool.set_headers,
                Some(ip),
                false,
            )
            .expect("upstream headers");
            let mut resp = answer.clone();
            tollgate::edge::headers::decorate_response(&mut resp, &admitted)
                .expect("answer headers");
            black_box((upstream, resp))
        })
    });
    group.bench_function("clone_request_and_answer_only", |b| {
        b.iter(|| black_box((ok.clone(), answer.clone())))
    });
    let detector = tollgate::guards::injection::InjectionDetector::new(&[]).expect("guard");
    let prompt = "Hello, I ordered a blender (order 88231) two weeks ago and followed all the \
        instructions in the manual, but the motor stops after ten seconds. The previous agent \
        told me to reset it by holding the power button, which did not help. Your website says \
        the warranty rules cover motor faults for two years. Can you tell me how to return it \
        and whether I need the original box? Thanks, Dana";
    group.bench_function("injection_guard_support_prompt", |b| {
        b.iter(|| detector.matches(black_box(prompt)))
    });
    let long = prompt.repeat(8);
    group.bench_function("injection_guard_3k_prompt", |b| {
        b.iter(|| detector.matches(black_box(&long)))
    });
    access_lines(&mut group);
    group.finish();
}

/// The access log's line: the typed record (`access_line`) against the
/// `serde_json::Value` tree the gateway built before, same fields.
/// What an LLM call's budgets cost with and without a key policy: the
/// allow-list check, the scopes (user, tenant; + the key's), one local
/// reservation and its settlement.
fn llm_budget_checks(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    snapshot: &Arc<tollgate::config::snapshot::Snapshot>,
    plain: &RequestHeader,
    keyed: &RequestHeader,
) {
    use tollgate::limits::budget::Charge;
    let store = Store::local();
    let hold = std::time::Duration::from_secs(60);
    for (name, req) in [
        ("llm_budgets_plain_key", plain),
        ("llm_budgets_key_policy", keyed),
    ] {
        let identity = snapshot
            .auth
            .authenticate(req, 0, None)
            .expect("a known key");
        group.bench_function(name, |b| {
            b.iter(|| {
                assert!(identity.allows_model(black_box("m")));
                let scopes = snapshot.budgets.scopes_for(black_box(&identity), None);
                let now = 1_796_126_400;
                let ticket = block_on(store.reserve(&scopes, Charge::tokens(100), now, hold))
                    .expect("reserved");
                block_on(store.settle(ticket, Charge::tokens(50), now)).is_ok()
            })
        });
    }
}

fn access_lines(group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>) {
    use tollgate::observe::access_line::{AccessLine, RequestFacts};
    let facts = || RequestFacts {
        client_ip: Some(std::net::IpAddr::from([10, 0, 0, 7])),
        method: "GET",
        path: "/api/v1/agents/alice/tickets",
        route: "agent-tickets",
        status: 200,
        bytes_sent: 512,
        request_id: "01JEXAMPLE7Q3ZC0M6P1V9K2RB",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        user: Some("alice"),
        tenant: Some("acme"),
        key_id: Some("bench-1"),
        conversation: None,
        shadow_refusal: None,
        upstream_peer: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9000))),
        upstream_attempts: 1,
        error: None,
        error_code: None,
        duration_ms: 1.25,
        gateway_ms: 0.125,
    };
    group.bench_function("access_line_typed", |b| {
        b.iter(|| {
            let line = AccessLine::new(facts(), "2026-12-02T20:00:00.123456789Z".into(), None);
            black_box(serde_json::to_string(&line).expect("line"))
        })
    });
    group.bench_function("access_line_value_tree_before", |b| {
        b.iter(|| {
            let f = facts();
            let line = serde_json::json!({
                "log": "access", "time": "2026-12-02T20:00:00.123456789Z",
                "request_id": f.request_id,
                "client_ip": f.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "method": f.method, "path": f.path, "route": f.route.to_string(),
                "status": f.status, "error_code": f.error_code, "user": f.user,
                "tenant": f.tenant, "key_id": f.key_id,
                "upstream_peer": f.upstream_peer.map(|p| p.to_string()),
                "duration_ms": f.duration_ms, "gateway_ms": f.gateway_ms,
                "bytes_sent": f.bytes_sent, "error": f.error, "traceparent": f.traceparent,
            });
            black_box(line.to_string())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
