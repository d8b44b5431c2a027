//! Keys as data (DESIGN §5 "Keys"): API keys created, changed, rotated and
//! revoked through the admin API, with real processes: gateway instances,
//! a mock backend, and a throwaway PostgreSQL cluster (+ redis-server) per
//! test where the test needs them. Skipped with a printed reason only when
//! PostgreSQL or redis-server is not installed (`make test-deps`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::postgres::Postgres;
use common::redis::Redis;
use common::*;
use reqwest::blocking::RequestBuilder;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// The contract: a change is honoured by every instance within a second.
const PROPAGATION: Duration = Duration::from_secs(1);

const ACME_TOKEN: &str = "acme-admin-token";
const GLOBEX_TOKEN: &str = "globex-admin-token";

/// The support API plus an LLM route on one mock backend; tenant-bound
/// admin tokens for acme and globex.
fn builder(backend: &Backend) -> ConfigBuilder {
    ConfigBuilder::support(&[&backend.addr])
        .pool("llm", Pool::new(&[&backend.addr]).timeouts(300, 2000))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent"]))
        .model(Model::new("m", "llm", 0.15, 0.6, 100))
        .model(Model::new("m2", "llm", 0.15, 0.6, 100))
        .admin_tokens(&[
            ("acme-admin", ACME_TOKEN, "acme"),
            ("globex-admin", GLOBEX_TOKEN, "globex"),
        ])
        .server("max_body_bytes", 1_048_576)
}

fn admin(gw: &Gateway, method: Method, path: &str, token: &str) -> RequestBuilder {
    client()
        .request(method, gw.admin_url(path))
        .bearer_auth(token)
}

fn answer(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn create_as(gw: &Gateway, token: &str, body: Value) -> (u16, Value) {
    answer(
        admin(gw, Method::POST, "/admin/keys", token)
            .json(&body)
            .send()
            .unwrap(),
    )
}

/// Asserts that creating a key in `tenant` with `token` is refused with
/// `(status, error code)`.
fn assert_create_refused(gw: &Gateway, token: &str, tenant: &str, refusal: (u16, &str)) {
    let (status, v) = create_as(
        gw,
        token,
        json!({"user": "x", "tenant": tenant, "roles": []}),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str().unwrap_or("")),
        refusal,
        "{v}"
    );
}

/// Creates a key (full token) and returns `(id, secret)`.
fn create(gw: &Gateway, user: &str, tenant: &str) -> (String, String) {
    let (status, v) = create_as(
        gw,
        ADMIN_TOKEN,
        json!({"user": user, "tenant": tenant, "roles": ["agent"], "note": "made by a test"}),
    );
    assert_eq!(status, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

fn rotate(gw: &Gateway, id: &str, grace_seconds: u64) -> String {
    let (status, v) = answer(
        admin(
            gw,
            Method::POST,
            &format!("/admin/keys/{id}/rotate"),
            ADMIN_TOKEN,
        )
        .json(&json!({"grace_seconds": grace_seconds}))
        .send()
        .unwrap(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], id, "same id after a rotation");
    v["key"].as_str().unwrap().to_string()
}

fn revoke(gw: &Gateway, id: &str, token: &str) -> u16 {
    admin(gw, Method::DELETE, &format!("/admin/keys/{id}"), token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// The status of a support API call with `key`.
fn call(gw: &Gateway, key: &str) -> u16 {
    gw.get("/api/v1/tickets/1", key).status().as_u16()
}

fn llm_call(gw: &Gateway, key: &str) -> u16 {
    llm_call_to(gw, key, "m").0
}

/// An LLM call of `model`: status and `error.code`.
fn llm_call_to(gw: &Gateway, key: &str, model: &str) -> (u16, String) {
    let body = chat_body(model, json!({}));
    let (status, v) = answer(post(gw, "/v1/chat/completions", key, &body, &[]));
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// Whether `key` is answered `status` within the propagation bound.
fn answered_within(gw: &Gateway, key: &str, status: u16) -> bool {
    eventually(PROPAGATION, || call(gw, key) == status)
}

fn list(gw: &Gateway, token: &str, query: &str) -> (u16, Value) {
    answer(
        admin(gw, Method::GET, &format!("/admin/keys{query}"), token)
            .send()
            .unwrap(),
    )
}

fn ids(listing: &Value) -> Vec<String> {
    listing["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| k["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What the instances of a cluster share: one PostgreSQL ledger, one Redis
/// and one mock backend (all stop when dropped).
struct Shared {
    pg: Postgres,
    _redis: Redis,
    _backend: Backend,
}

/// The shared servers and the config of an instance on them; None
/// (skipped) when PostgreSQL or redis-server is not installed.
fn cluster() -> Option<(Shared, String)> {
    let pg = Postgres::start()?;
    let redis = Redis::start()?;
    let backend = Backend::start();
    let template = builder(&backend)
        .redis(&format!("redis://127.0.0.1:{}/0", redis.port))
        .postgres_ledger(&pg.url())
        .render();
    let shared = Shared {
        pg,
        _redis: redis,
        _backend: backend,
    };
    Some((shared, template))
}

#[test]
fn keys_made_on_one_instance_work_on_every_instance_within_a_second() {
    let Some((shared, template)) = cluster() else {
        return;
    };
    let (a, mut b) = (Gateway::start(&template), Gateway::start(&template));

    // Create on A: at once on A, within a second on B.
    let (id, secret) = create(&a, "dana", "acme");
    assert!(id.starts_with("key_"), "{id}");
    assert_eq!(call(&a, &secret), 200);
    assert!(
        answered_within(&b, &secret, 200),
        "created key not honoured on B"
    );

    // Rotate with a 2 s grace on A: the new secret at once, the old one
    // until the grace ends, on both.
    let new_secret = rotate(&a, &id, 2);
    assert_eq!(call(&a, &new_secret), 200, "new secret at once on A");
    assert!(answered_within(&b, &new_secret, 200), "new secret on B");
    assert_eq!(llm_call(&a, &secret), 200, "old secret during the grace");
    assert_eq!(llm_call(&b, &new_secret), 200);
    let (_, shown) = answer(
        admin(&a, Method::GET, &format!("/admin/keys/{id}"), ADMIN_TOKEN)
            .send()
            .unwrap(),
    );
    assert_eq!(shown["state"], "rotating", "{shown}");
    assert!(
        eventually(Duration::from_secs(4), || call(&a, &secret) == 401
            && call(&b, &secret) == 401),
        "old secret still works after the grace"
    );
    assert_eq!(call(&b, &new_secret), 200);
    // Both secrets' usage lands on the same key id.
    let key_ids = poll_until(
        Duration::from_secs(10),
        || {
            shared
                .pg
                .try_psql(&format!("SELECT count(*) FROM usage WHERE key_id = '{id}'"))
                .unwrap_or_default()
        },
        |n| n == "2",
    );
    assert_eq!(key_ids, "2", "usage of both secrets under {id}");
    assert_eq!(
        shared
            .pg
            .psql("SELECT count(DISTINCT key_id) FROM usage WHERE user_id = 'dana'"),
        "1"
    );

    // Revoke on A: 401 on A at once, on B within a second.
    assert_eq!(revoke(&a, &id, ADMIN_TOKEN), 204);
    assert_eq!(call(&a, &new_secret), 401);
    assert!(
        answered_within(&b, &new_secret, 401),
        "revoked key still honoured on B"
    );
    assert_eq!(
        revoke(&a, &id, ADMIN_TOKEN),
        204,
        "revoking twice is no error"
    );

    // A key made on B while A listens; then B restarts and keeps every key.
    let (_, other) = create(&b, "erin", "globex");
    assert!(answered_within(&a, &other, 200));
    drop(b);
    b = Gateway::start(&template);
    assert_eq!(call(&b, &other), 200, "restart keeps the key");
    assert_eq!(call(&b, &new_secret), 401, "restart keeps the revocation");
    let (_, listing) = list(&b, ADMIN_TOKEN, "?user=dana");
    assert_eq!(listing["keys"][0]["state"], "revoked", "{listing}");

    // The secrets appear in no log line, listing or /admin/config.
    let config = admin(&a, Method::GET, "/admin/config", ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let (_, everything) = list(&a, ADMIN_TOKEN, "");
    let seen = format!(
        "{}\n{}\n{config}\n{everything}",
        a.all_output(),
        b.all_output()
    );
    for s in [&secret, &new_secret, &other] {
        assert!(!seen.contains(s.as_str()), "a secret leaked");
        assert!(!seen.contains(&sha(s)), "a digest leaked");
    }
    // Every key operation is an audit line.
    let audit: Vec<Value> = a
        .access_log()
        .into_iter()
        .filter(|l| l["event"] == "admin_key")
        .collect();
    let ops: Vec<&str> = audit
        .iter()
        .filter(|l| l["key_id"] == id.as_str())
        .map(|l| l["operation"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ops, ["create", "rotate", "revoke", "revoke"], "{audit:?}");
    assert!(audit
        .iter()
        .all(|l| l["admin"] == "full" && l["tenant"] == "acme"));
}

#[test]
fn a_keys_own_policy_is_enforced_on_every_instance() {
    let Some((_shared, template)) = cluster() else {
        return;
    };
    let (a, b) = (Gateway::start(&template), Gateway::start(&template));
    let (status, v) = create_as(
        &a,
        ADMIN_TOKEN,
        json!({"user": "bot", "tenant": "acme", "roles": ["agent"], "models": ["m"],
               "rate_limit": {"requests_per_minute": 3}}),
    );
    assert_eq!(status, 201, "{v}");
    let secret = v["key"].as_str().unwrap();
    assert!(answered_within(&b, secret, 200));
    assert_eq!(
        llm_call_to(&b, secret, "m2"),
        (403, "model_not_allowed".to_string())
    );
    // The rate is the key's, shared by both instances (Redis): 3 a minute
    // in all, and the support call above was the first.
    assert_eq!(llm_call_to(&a, secret, "m").0, 200);
    let third = llm_call_to(&b, secret, "m").0;
    let fourth = llm_call_to(&a, secret, "m");
    assert!(third == 200 || third == 429, "{third}");
    assert_eq!(fourth, (429, "rate_limited".to_string()));
    // A policy changed on A is enforced on B within a second.
    let id = v["id"].as_str().unwrap();
    let r = admin(&a, Method::PATCH, &format!("/admin/keys/{id}"), ADMIN_TOKEN)
        .json(&json!({"models": ["m2"], "rate_limit": null}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(eventually(PROPAGATION, || llm_call_to(&b, secret, "m").1
        == "model_not_allowed"));
}

#[test]
fn a_retried_create_or_rotate_gets_the_same_answer() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let backend = Backend::start();
    let gw = builder(&backend).postgres_ledger(&pg.url()).start();
    let body = json!({"user": "dana", "tenant": "acme", "roles": ["agent"]});
    let send = |path: &str, idem: &str, body: &Value| {
        answer(
            admin(&gw, Method::POST, path, ADMIN_TOKEN)
                .header("Idempotency-Key", idem)
                .json(body)
                .send()
                .unwrap(),
        )
    };
    let first = send("/admin/keys", "create-0001", &body);
    assert_eq!(first.0, 201, "{}", first.1);
    let again = send("/admin/keys", "create-0001", &body);
    assert_eq!(again, first, "same answer, same secret");
    assert_eq!(pg.psql("SELECT count(*) FROM api_keys"), "1");
    // The stored answer is sealed: the secret is not in the database.
    let secret = first.1["key"].as_str().unwrap();
    let dump = pg.psql("SELECT encode(sealed, 'escape') FROM api_key_requests");
    assert!(!dump.contains(secret));
    // The same idempotency key for another request is refused.
    let other = send(
        "/admin/keys",
        "create-0001",
        &json!({"user": "x", "tenant": "acme", "roles": []}),
    );
    assert_eq!(other.0, 422, "{}", other.1);
    assert_eq!(other.1["error"]["code"], "idempotency_key_reused");
    // A tenant token with the same idempotency key finds nothing of the full token's.
    let tenant = answer(
        admin(&gw, Method::POST, "/admin/keys", ACME_TOKEN)
            .header("Idempotency-Key", "create-0001")
            .json(&body)
            .send()
            .unwrap(),
    );
    assert_eq!(tenant.0, 201);
    assert_ne!(tenant.1["id"], first.1["id"]);

    let id = first.1["id"].as_str().unwrap();
    let path = format!("/admin/keys/{id}/rotate");
    let rotated = send(&path, "rotate-0001", &json!({"grace_seconds": 0}));
    assert_eq!(rotated.0, 200, "{}", rotated.1);
    let retried = send(&path, "rotate-0001", &json!({"grace_seconds": 0}));
    assert_eq!(retried, rotated, "a retried rotation rotates once");
    let new_secret = rotated.1["key"].as_str().unwrap();
    assert_eq!(call(&gw, new_secret), 200);
    assert_eq!(call(&gw, secret), 401);
    let bad = send("/admin/keys", "two words", &body);
    assert_eq!(
        (bad.0, bad.1["error"]["field"].clone()),
        (400, json!("Idempotency-Key"))
    );
}

#[test]
fn with_postgres_down_keys_keep_working_and_changes_are_refused_whole() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let backend = Backend::start();
    let gw = builder(&backend).postgres_ledger(&pg.url()).start();
    let (id, secret) = create(&gw, "dana", "acme");
    let before = pg.psql("SELECT version, digest FROM api_keys");
    // The test cluster runs with synchronous_commit=off: made durable
    // before the crash-like stop.
    pg.psql("CHECKPOINT");
    pg.stop();
    assert_eq!(
        call(&gw, &secret),
        200,
        "existing key works with PostgreSQL down"
    );
    assert_create_refused(&gw, ADMIN_TOKEN, "acme", (503, "store_unavailable"));
    let r = admin(
        &gw,
        Method::POST,
        &format!("/admin/keys/{id}/rotate"),
        ADMIN_TOKEN,
    )
    .json(&json!({"grace_seconds": 10}))
    .send()
    .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(revoke(&gw, &id, ADMIN_TOKEN), 503);
    assert_eq!(
        call(&gw, &secret),
        200,
        "nothing half-done: still the old secret"
    );
    pg.restart();
    assert_eq!(pg.psql("SELECT version, digest FROM api_keys"), before);
    assert_eq!(pg.psql("SELECT count(*) FROM api_keys"), "1");
    assert_eq!(revoke(&gw, &id, ADMIN_TOKEN), 204, "back with PostgreSQL");
    assert_eq!(call(&gw, &secret), 401);
}

#[test]
fn tenant_tokens_see_and_manage_only_their_tenant() {
    let backend = Backend::start();
    let gw = builder(&backend).start();
    let (globex_id, globex_secret) = create(&gw, "gina", "globex");
    // Created by the acme token: the tenant is its own.
    let (status, mine) = create_as(&gw, ACME_TOKEN, json!({"user": "dana", "roles": ["agent"]}));
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["tenant"], "acme");
    let mine_id = mine["id"].as_str().unwrap();
    assert_create_refused(&gw, ACME_TOKEN, "globex", (404, "not_found"));

    let (_, acme_list) = list(&gw, ACME_TOKEN, "");
    let acme_ids = ids(&acme_list);
    assert!(acme_ids.contains(&mine_id.to_string()));
    assert!(
        acme_ids.contains(&"bob-1".to_string()),
        "config keys listed"
    );
    assert!(!acme_ids.contains(&globex_id), "{acme_list}");
    assert!(acme_list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["tenant"] == "acme"));
    assert_eq!(
        ids(&list(&gw, ACME_TOKEN, "?tenant=globex").1),
        Vec::<String>::new()
    );

    let not_found = |resp: reqwest::blocking::Response| {
        let (status, v) = answer(resp);
        status == 404 && v["error"]["code"] == "not_found"
    };
    let key_path = format!("/admin/keys/{globex_id}");
    assert!(not_found(
        admin(&gw, Method::GET, &key_path, ACME_TOKEN)
            .send()
            .unwrap()
    ));
    assert!(not_found(
        admin(&gw, Method::PATCH, &key_path, ACME_TOKEN)
            .json(&json!({"note": "x"}))
            .send()
            .unwrap()
    ));
    assert!(not_found(
        admin(&gw, Method::POST, &format!("{key_path}/rotate"), ACME_TOKEN)
            .json(&json!({}))
            .send()
            .unwrap()
    ));
    assert!(not_found(
        admin(&gw, Method::DELETE, &key_path, ACME_TOKEN)
            .send()
            .unwrap()
    ));
    assert_eq!(call(&gw, &globex_secret), 200, "untouched");
    // Another tenant's usage and report rows.
    assert!(not_found(
        admin(&gw, Method::GET, "/admin/usage?tenant=globex", ACME_TOKEN)
            .send()
            .unwrap()
    ));
    assert!(not_found(
        admin(&gw, Method::GET, "/admin/usage?user=gina", ACME_TOKEN)
            .send()
            .unwrap()
    ));
    let day = "2026-01-01";
    let report = |token: &str, extra: &str| {
        admin(
            &gw,
            Method::GET,
            &format!("/admin/usage/report?from={day}&to={day}&group_by=tenant{extra}"),
            token,
        )
        .send()
        .unwrap()
    };
    assert!(not_found(report(ACME_TOKEN, "&tenant=globex")));
    assert_eq!(report(ACME_TOKEN, "").status(), 200);
    assert_eq!(
        admin(&gw, Method::GET, "/admin/usage?user=bob", ACME_TOKEN)
            .send()
            .unwrap()
            .status(),
        200
    );
    // Reload and config need the full token.
    assert_eq!(
        admin(&gw, Method::POST, "/admin/reload", ACME_TOKEN)
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        admin(&gw, Method::GET, "/admin/config", ACME_TOKEN)
            .send()
            .unwrap()
            .status(),
        404
    );
    // Its own key: managed.
    assert_eq!(revoke(&gw, mine_id, ACME_TOKEN), 204);
    // The config shows the tenant tokens' digests redacted.
    let config = admin(&gw, Method::GET, "/admin/config", ADMIN_TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!config.contains(&sha(ACME_TOKEN)) && config.contains("acme-admin"));
    let audit = gw.access_log();
    assert!(audit.iter().any(|l| l["event"] == "admin_key"
        && l["admin"] == "acme-admin"
        && l["operation"] == "revoke"));
}

#[test]
fn keys_of_the_file_cannot_be_changed_and_bad_bodies_name_their_field() {
    let backend = Backend::start();
    let gw = builder(&backend).start();
    for (method, path) in [
        (Method::PATCH, "/admin/keys/bob-1"),
        (Method::POST, "/admin/keys/bob-1/rotate"),
        (Method::DELETE, "/admin/keys/bob-1"),
    ] {
        let (status, v) = answer(
            admin(&gw, method, path, ADMIN_TOKEN)
                .json(&json!({"note": "x"}))
                .send()
                .unwrap(),
        );
        assert_eq!(
            (status, v["error"]["code"].clone()),
            (409, json!("key_managed_by_config")),
            "{path} {v}"
        );
    }
    assert_eq!(call(&gw, BOB_KEY), 200);
    let (_, bob) = answer(
        admin(&gw, Method::GET, "/admin/keys/bob-1", ADMIN_TOKEN)
            .send()
            .unwrap(),
    );
    assert_eq!(bob["source"], "config");
    let (status, _) = answer(
        admin(&gw, Method::GET, "/admin/keys/key_nope", ADMIN_TOKEN)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 404);

    let raw = |method: Method, path: &str, body: &str| {
        answer(
            admin(&gw, method, path, ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    };
    let (id, _) = create(&gw, "dana", "acme");
    let long_note = format!(
        r#"{{"user":"u","tenant":"t","roles":[],"note":"{}"}}"#,
        "n".repeat(2000)
    );
    for (method, path, body, field) in [
        (
            Method::POST,
            "/admin/keys".to_string(),
            "{\"user\":",
            "body",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","tenant":"t","roles":[],"admin":true}"#,
            "admin",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            long_note.as_str(),
            "note",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","tenant":"t","roles":[],"expires_at":"soon"}"#,
            "expires_at",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","tenant":"t","roles":[],"expires_at":"2001-01-01T00:00:00Z"}"#,
            "expires_at",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u,v","tenant":"t","roles":[]}"#,
            "user",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","tenant":"t\r\nx","roles":[]}"#,
            "tenant",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","tenant":"t","roles":["agent","a,admin"]}"#,
            "roles[1]",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","roles":[]}"#,
            "tenant",
        ),
        (
            Method::POST,
            "/admin/keys".to_string(),
            r#"{"user":"u","tenant":"t","roles":[],"rate_limit":{"requests_per_minute":"x"}}"#,
            "rate_limit.requests_per_minute",
        ),
        (
            Method::PATCH,
            format!("/admin/keys/{id}"),
            r#"{"tenant":"globex"}"#,
            "tenant",
        ),
        (
            Method::PATCH,
            format!("/admin/keys/{id}"),
            r#"{"budgets":{"usd_per_month":0}}"#,
            "budgets.usd_per_month",
        ),
        (
            Method::POST,
            format!("/admin/keys/{id}/rotate"),
            r#"{"grace_seconds":"2"}"#,
            "grace_seconds",
        ),
        (
            Method::POST,
            format!("/admin/keys/{id}/rotate"),
            r#"{"grace_seconds":1,"x":1}"#,
            "x",
        ),
    ] {
        let (status, v) = raw(method, &path, body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let (status, v) = list(&gw, ADMIN_TOKEN, "?colour=red");
    assert_eq!(
        (status, v["error"]["field"].clone()),
        (400, json!("colour"))
    );
    let huge = "x".repeat(100_000);
    let (status, _) = raw(Method::POST, "/admin/keys", &huge);
    assert_eq!(status, 413);

    // A patch changes what it names; the listing pages by cursor.
    let (status, patched) = raw(
        Method::PATCH,
        &format!("/admin/keys/{id}"),
        r#"{"models":["m"],"rate_limit":{"requests_per_minute":30},"budgets":{"tokens_per_day":500,"usd_per_month":1.5},"note":"bot"}"#,
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["models"], json!(["m"]));
    assert_eq!(patched["rate_limit"]["requests_per_minute"], 30);
    assert_eq!(
        patched["budgets"],
        json!({"tokens_per_day": 500, "usd_per_month": 1.5})
    );
    assert_eq!(patched["user"], "dana");
    for _ in 0..3 {
        create(&gw, "paged", "acme");
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = list(&gw, ADMIN_TOKEN, &format!("?limit=2&cursor={cursor}"));
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages in id order, none twice");
    assert_eq!(seen.len(), 4 + 4, "four config keys and four made ones");
    let (_, listing) = list(&gw, ADMIN_TOKEN, "");
    let text = listing.to_string();
    assert!(!text.contains("sha256") && !text.contains("digest") && !text.contains("\"key\""));
}

#[test]
fn a_reload_may_not_give_a_file_key_the_id_of_an_api_made_key() {
    let backend = Backend::start();
    let config = builder(&backend);
    let gw = config.start();
    let (id, secret) = create(&gw, "dana", "acme");
    let rendered = config.render();
    assert!(rendered.contains("id: bob-1"));
    gw.rewrite_config(&rendered.replace("id: bob-1", &format!("id: {id}")));
    let (status, v) = answer(gw.reload());
    assert_eq!(status, 400, "{v}");
    let problems = v["error"]["problems"].to_string();
    assert!(
        problems.contains("made through the admin API") && problems.contains(&id),
        "{problems}"
    );
    assert_eq!(call(&gw, &secret), 200);
    assert_eq!(call(&gw, BOB_KEY), 200, "the old config keeps serving");
}

#[test]
fn a_restart_keeps_every_key_and_its_last_use() {
    let backend = Backend::start();
    let mut gw = builder(&backend).start();
    let (id, secret) = create(&gw, "dana", "acme");
    let (_, revoked_secret) = create(&gw, "old", "acme");
    let revoked_id = list(&gw, ADMIN_TOKEN, "?user=old").1["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(revoke(&gw, &revoked_id, ADMIN_TOKEN), 204);
    assert_eq!(call(&gw, &secret), 200);
    // SIGTERM: the last uses are written on the way out.
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    gw.spawn(false);
    assert_eq!(call(&gw, &secret), 200);
    assert_eq!(call(&gw, &revoked_secret), 401);
    let (_, shown) = answer(
        admin(&gw, Method::GET, &format!("/admin/keys/{id}"), ADMIN_TOKEN)
            .send()
            .unwrap(),
    );
    assert!(shown["last_used_at"].is_string(), "{shown}");
    assert_eq!(shown["state"], "active");
}

#[test]
fn per_instance_ledgers_in_a_redis_cluster_refuse_the_keys_api() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let backend = Backend::start();
    let gw = builder(&backend)
        .redis(&format!("redis://127.0.0.1:{}/0", redis.port))
        .start();
    assert_create_refused(&gw, ADMIN_TOKEN, "acme", (409, "shared_ledger_required"));
    // The file's keys are still listed.
    let (status, listing) = list(&gw, ADMIN_TOKEN, "");
    assert_eq!(status, 200);
    assert!(ids(&listing).contains(&"bob-1".to_string()));
}

#[test]
fn admin_tokens_are_checked() {
    let backend = Backend::start();
    let result = builder(&backend)
        .server(
            "admin_tokens",
            json!([
                {"id": "full", "sha256": sha("a"), "tenant": "acme"},
                {"id": "x", "sha256": "nothex", "tenant": "a,b"},
                {"id": "y", "sha256": sha(ADMIN_TOKEN), "tenant": "acme"},
            ]),
        )
        .check();
    assert_check_reports(
        result,
        &[
            "server.admin_tokens[0].id",
            "server.admin_tokens[1].sha256",
            "server.admin_tokens[1].tenant",
            "server.admin_tokens[2].sha256: the same token as another admin token",
        ],
    );
}

/// `tollgate keys ...` against `gw`'s admin API with `token`.
fn cli(gw: &Gateway, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("keys")
        .args(args)
        .args(["--admin-url", &gw.admin_url("")])
        .env_remove("TOLLGATE_ADMIN_TOKEN");
    if let Some(token) = token {
        cmd.env("TOLLGATE_ADMIN_TOKEN", token);
    }
    let out = cmd.output().expect("run tollgate keys");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_manages_keys_through_the_admin_api() {
    let backend = Backend::start();
    let gw = builder(&backend).start();
    let (code, out, err) = cli(
        &gw,
        Some(ADMIN_TOKEN),
        &[
            "create",
            "--user",
            "dana",
            "--tenant",
            "acme",
            "--role",
            "agent",
            "--tokens-per-day",
            "500",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    let (id, secret) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
    assert_eq!(made["budgets"]["tokens_per_day"], 500);
    assert_eq!(call(&gw, secret), 200);

    let (code, table, _) = cli(&gw, Some(ACME_TOKEN), &["list"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(id) && table.contains("bob-1") && table.contains("config"));
    assert!(!table.contains(secret));
    let (code, shown, _) = cli(&gw, Some(ADMIN_TOKEN), &["show", id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&shown).unwrap()["user"],
        "dana"
    );

    let (code, rotated, _) = cli(
        &gw,
        Some(ADMIN_TOKEN),
        &["rotate", id, "--grace-seconds", "0"],
    );
    assert_eq!(code, 0);
    let new_secret = rotated
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_string();
    assert!(new_secret.starts_with("tg_"), "{rotated}");
    assert_eq!(call(&gw, &new_secret), 200);
    assert_eq!(call(&gw, secret), 401);
    let (code, _, _) = cli(&gw, Some(ADMIN_TOKEN), &["revoke", id]);
    assert_eq!(code, 0);
    assert_eq!(call(&gw, &new_secret), 401);

    // Refusals exit 2 with the API's code; no token, no request.
    let (code, _, err) = cli(&gw, Some(GLOBEX_TOKEN), &["show", id]);
    assert_eq!((code, err.contains("404 not_found")), (2, true), "{err}");
    let (code, _, err) = cli(
        &gw,
        Some(ADMIN_TOKEN),
        &["create", "--user", "a,b", "--tenant", "acme"],
    );
    assert_eq!((code, err.contains("field user")), (2, true), "{err}");
    let (code, _, err) = cli(&gw, None, &["list"]);
    assert_eq!(
        (code, err.contains("TOLLGATE_ADMIN_TOKEN")),
        (2, true),
        "{err}"
    );
}

/// `grant_roles` bounds what a tenant's token may hand out: it cannot
/// mint a key with another role, give one to its key, or take over (rotate,
/// change) a more privileged key the full token made for its tenant; it
/// may still see and revoke it. A token without `grant_roles` is unbounded,
/// and `tollgate check` warns about it.
#[test]
fn a_tenant_token_grants_only_its_grant_roles() {
    let backend = Backend::start();
    let tokens = json!([
        {"id": "acme-admin", "sha256": sha(ACME_TOKEN), "tenant": "acme", "grant_roles": ["agent"]},
        {"id": "globex-admin", "sha256": sha(GLOBEX_TOKEN), "tenant": "globex"},
    ]);
    let (code, _, stderr) = builder(&backend)
        .server("admin_tokens", tokens.clone())
        .check();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: server.admin_tokens[1].grant_roles")
            && !stderr.contains("server.admin_tokens[0].grant_roles"),
        "{stderr}"
    );
    let gw = builder(&backend).server("admin_tokens", tokens).start();
    let forbidden = |(status, v): (u16, Value)| {
        assert_eq!(
            (status, v["error"]["code"].clone()),
            (403, json!("forbidden")),
            "{v}"
        );
        assert!(v["error"]["message"].as_str().unwrap().contains("'admin'"));
    };

    let (status, agent) = create_as(&gw, ACME_TOKEN, json!({"user": "dana", "roles": ["agent"]}));
    assert_eq!(status, 201, "{agent}");
    let agent_id = agent["id"].as_str().unwrap();
    forbidden(create_as(
        &gw,
        ACME_TOKEN,
        json!({"user": "eve", "roles": ["agent", "admin"]}),
    ));
    let made: Vec<String> = ids(&list(&gw, ACME_TOKEN, "?user=eve").1);
    assert!(made.is_empty(), "a refused create writes nothing: {made:?}");

    let patch = |id: &str, body: Value| {
        answer(
            admin(&gw, Method::PATCH, &format!("/admin/keys/{id}"), ACME_TOKEN)
                .json(&body)
                .send()
                .unwrap(),
        )
    };
    forbidden(patch(agent_id, json!({"roles": ["admin"]})));
    assert_eq!(patch(agent_id, json!({"note": "ok"})).0, 200);
    assert_eq!(call(&gw, agent["key"].as_str().unwrap()), 200);

    // The full token made an acme admin key: acme's token may not rotate
    // it (it would get the admin secret) nor change it, only revoke it.
    let (admin_id, admin_secret) = {
        let (status, v) = create_as(
            &gw,
            ADMIN_TOKEN,
            json!({"user": "root", "tenant": "acme", "roles": ["admin"]}),
        );
        assert_eq!(status, 201, "{v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    };
    forbidden(answer(
        admin(
            &gw,
            Method::POST,
            &format!("/admin/keys/{admin_id}/rotate"),
            ACME_TOKEN,
        )
        .json(&json!({"grace_seconds": 0}))
        .send()
        .unwrap(),
    ));
    forbidden(patch(&admin_id, json!({"expires_at": null})));
    assert!(
        answered_within(&gw, &admin_secret, 200),
        "still the old secret"
    );
    assert_eq!(
        answer(
            admin(
                &gw,
                Method::GET,
                &format!("/admin/keys/{admin_id}"),
                ACME_TOKEN
            )
            .send()
            .unwrap()
        )
        .0,
        200
    );
    assert_eq!(revoke(&gw, &admin_id, ACME_TOKEN), 204);
    assert!(answered_within(&gw, &admin_secret, 401));

    // Unbounded token: any role.
    let (status, v) = create_as(&gw, GLOBEX_TOKEN, json!({"user": "g", "roles": ["admin"]}));
    assert_eq!(status, 201, "{v}");

    let (code, out, err) = builder(&backend)
        .server(
            "admin_tokens",
            json!([{"id": "a", "sha256": sha("a"), "tenant": "acme", "grant_roles": ["a b"]}]),
        )
        .check();
    assert_check_reports((code, out, err), &["server.admin_tokens[0].grant_roles[0]"]);
}
