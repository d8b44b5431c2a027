//! The Lua scripts against a real `redis-server` (started per test on a free
//! loopback port, no persistence). `make test` installs redis-server; a
//! test fails when it is missing rather than pass without having run.

use super::*;
use crate::limits::test_limits::{
    limited, micro_usd_per_month, spent, tokens_per_day, tokens_per_minute,
};
use crate::limits::types::{AdmitQuery, FailedAuthQuery, RateQuery};
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use time::macros::datetime;

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("free port: {e}"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e} (`make test-deps` installs it)"));
        let server = RedisServer { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn store(&self, on_error: OnStoreError) -> RedisStore {
        store_at(&self.url(), on_error)
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap_or_else(|e| panic!("{e}"))
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store_at(url: &str, on_error: OnStoreError) -> RedisStore {
    RedisStore::new(RedisSettings {
        url: url.to_string(),
        password: None,
        prefix: "tg:".into(),
        // Generous: CI machines are shared and slow; the failure tests
        // below use a port nobody listens on, which fails at once.
        connect_timeout: Duration::from_millis(2000),
        command_timeout: Duration::from_millis(2000),
        on_error,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

const fn ts(dt: time::PrimitiveDateTime) -> u64 {
    dt.assume_utc().unix_timestamp().unsigned_abs()
}

/// The time most tests run at.
const NOON: u64 = ts(datetime!(2026-12-01 12:00:00));

const HOLD: Duration = Duration::from_secs(60);

async fn spend(store: &RedisStore, scopes: &[(ScopeKey, BudgetLimits)], c: Charge, now: u64) {
    let t = store
        .reserve(scopes, c, now, HOLD)
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    store
        .settle(t, c, now)
        .await
        .unwrap_or_else(|e| panic!("settle: {e}"));
}

async fn usage(store: &RedisStore, scope: &ScopeKey, now: u64) -> ScopeUsage {
    let (u, backend) = store
        .usage(scope, "acme", now)
        .await
        .unwrap_or_else(|e| panic!("usage: {e}"));
    assert_eq!(backend, Backend::Redis);
    u
}

async fn admits(
    store: &RedisStore,
    scopes: &[(ScopeKey, BudgetLimits)],
    charge: Charge,
    now: u64,
) -> bool {
    store.reserve(scopes, charge, now, HOLD).await.is_ok()
}

/// `user`'s request on `route`, under the route's own limit, else the
/// default; enforced, no key rate.
fn rate<'a>(
    user: &'a str,
    tenant: &'a str,
    route: &'a str,
    route_limit: Option<u32>,
    default_limit: Option<u32>,
) -> Option<RateQuery<'a>> {
    Some(RateQuery {
        user,
        tenant,
        route,
        route_limit,
        default_limit,
        enforced: true,
        key: None,
    })
}

/// A failed-auth check of `ip` against `limit`; `record`: count this one.
fn failed_auth(ip: IpAddr, limit: u32, record: bool) -> Option<FailedAuthQuery> {
    Some(FailedAuthQuery { ip, limit, record })
}

fn refusal(r: Result<ReservationTicket, ReserveError>) -> BudgetRefusal {
    match r {
        Err(ReserveError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Spends `first` in the last second of a window and reserves `then`:
/// refused, retry in 1 s; one second later (a new window) the refusing
/// scope's `window_use` starts from zero. The refusal, for more checks.
async fn refused_until_the_window_rolls_over(
    store: &RedisStore,
    scopes: &[(ScopeKey, BudgetLimits)],
    (first, then): (Charge, Charge),
    last_second: u64,
    window_use: fn(&ScopeUsage) -> u64,
) -> BudgetRefusal {
    spend(store, scopes, first, last_second).await;
    let r = refusal(store.reserve(scopes, then, last_second, HOLD).await);
    assert_eq!(r.retry_after_secs, 1);
    assert_eq!(
        window_use(&usage(store, &r.scope, last_second + 1).await),
        0
    );
    r
}

#[tokio::test]
async fn day_window_rolls_over_at_utc_midnight() {
    let (_redis, store) = deny_store();
    let scopes = [
        (ScopeKey::user("bob"), tokens_per_day(100)),
        (ScopeKey::tenant("acme"), BudgetLimits::default()),
    ];
    let last_second = ts(datetime!(2026-12-01 23:59:59));
    let r = refused_until_the_window_rolls_over(
        &store,
        &scopes,
        (Charge::tokens(90), Charge::tokens(20)),
        last_second,
        |u| u.tokens_day,
    )
    .await;
    assert_eq!(
        (r.scope, r.kind, r.limit, r.used),
        (ScopeKey::user("bob"), LimitKind::TokensPerDay, 100, 90)
    );
    let midnight = last_second + 1;
    assert!(admits(&store, &scopes, Charge::tokens(100), midnight).await);
    // The tenant's day rolled over too, while its month did not.
    let t = usage(&store, &ScopeKey::tenant("acme"), midnight).await;
    assert_eq!((t.tokens_day, t.reserved_tokens), (0, 100));
}

#[tokio::test]
async fn month_window_rolls_over_on_the_first() {
    let (_redis, store) = deny_store();
    let scopes = [
        (ScopeKey::user("bob"), BudgetLimits::default()),
        (ScopeKey::tenant("acme"), micro_usd_per_month(1_000)),
    ];
    let usd = |micro_usd| Charge {
        tokens: 1,
        micro_usd,
    };
    // February 2028 is a leap month: the 29th still belongs to it.
    let feb29 = ts(datetime!(2028-02-29 23:59:59));
    let r =
        refused_until_the_window_rolls_over(&store, &scopes, (usd(1_000), usd(1)), feb29, |u| {
            u.micro_usd_month
        })
        .await;
    assert_eq!(
        (r.scope, r.kind),
        (ScopeKey::tenant("acme"), LimitKind::UsdPerMonth)
    );
    assert!(admits(&store, &scopes, usd(1_000), feb29 + 1).await);
}

#[tokio::test]
async fn all_or_none_when_the_tenant_is_short_but_the_user_is_not() {
    let (_redis, store) = deny_store();
    let now = NOON;
    let roomy = tokens_per_minute(1_000);
    let tight = tokens_per_minute(100);
    let scopes = [
        (ScopeKey::user("bob"), roomy),
        (ScopeKey::tenant("acme"), tight),
    ];
    spend(
        &store,
        &[
            (ScopeKey::user("alice"), roomy),
            (ScopeKey::tenant("acme"), tight),
        ],
        Charge::tokens(60),
        now,
    )
    .await;
    let r = refusal(store.reserve(&scopes, Charge::tokens(50), now, HOLD).await);
    assert_eq!(
        (r.scope, r.limit, r.used),
        (ScopeKey::tenant("acme"), 100, 60)
    );
    // bob's own budget passed its check but holds nothing.
    assert_eq!(
        usage(&store, &ScopeKey::user("bob"), now).await,
        ScopeUsage::default()
    );
    // Within what is left, both scopes hold it.
    let t = store.reserve(&scopes, Charge::tokens(40), now, HOLD).await;
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        usage(&store, &ScopeKey::user("bob"), now)
            .await
            .reserved_tokens,
        40
    );
    assert_eq!(
        usage(&store, &ScopeKey::tenant("acme"), now)
            .await
            .reserved_tokens,
        40
    );
    store.release(t).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        usage(&store, &ScopeKey::tenant("acme"), now)
            .await
            .reserved_tokens,
        0
    );
}

#[tokio::test]
async fn a_reservation_reports_the_first_scopes_tokens_in_use_as_a_read_would() {
    let (_redis, store, scopes) = deny_store_in_acme("alice", tokens_per_minute(1_000));
    let now = NOON;
    spend(&store, &scopes, Charge::tokens(70), now).await;
    let open = store.reserve(&scopes, Charge::tokens(30), now, HOLD).await;
    let open = open.unwrap_or_else(|e| panic!("{e}"));
    let t = store.reserve(&scopes, Charge::tokens(25), now, HOLD).await;
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    let read = usage(&store, &ScopeKey::user("alice"), now).await;
    // Settled 70 + holds 30 and 25 (its own).
    assert_eq!(t.tokens_in_use.minute, Some(125));
    assert_eq!(
        t.tokens_in_use.minute,
        Some(read.tokens_minute + read.reserved_tokens)
    );
    // No day limit: the script does not read that window.
    assert_eq!(t.tokens_in_use.day, None);
    store.release(t).await.unwrap_or_else(|e| panic!("{e}"));
    store.release(open).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn an_unsettled_reservation_expires_by_itself() {
    let (_redis, store, scopes) = deny_store_in_acme("bob", tokens_per_day(100));
    let now = NOON;
    // An instance reserves, then dies: the ticket is never settled.
    let ticket = store
        .reserve(&scopes, Charge::tokens(100), now, Duration::from_secs(30))
        .await;
    std::mem::forget(ticket);
    assert!(store
        .reserve(&scopes, Charge::tokens(1), now + 29, HOLD)
        .await
        .is_err());
    assert_eq!(
        usage(&store, &ScopeKey::user("bob"), now + 30)
            .await
            .reserved_tokens,
        0
    );
    assert!(admits(&store, &scopes, Charge::tokens(100), now + 31).await);
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_flush_and_every_key_expires() {
    let (redis, store, scopes) = deny_store_in_acme("bob", limited(1_000, 10_000, 1_000_000));
    let now = NOON;
    let mut raw = redis.raw().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spend(
        &store,
        &scopes,
        Charge {
            tokens: 10,
            micro_usd: 10,
        },
        now,
    )
    .await;
    let held = store.reserve(&scopes, Charge::tokens(5), now, HOLD).await;
    assert!(held.is_ok());
    let ip = IpAddr::from([192, 0, 2, 1]);
    let query = AdmitQuery {
        failed_auth: failed_auth(ip, 5, true),
        rate: rate("bob", "acme", "chat", None, Some(10)),
    };
    assert!(store.admit(&query, now).await.is_ok());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // 2 scopes × (3 windows + reservations + marker), 1 rate counter,
    // 1 failed-auth counter.
    assert_eq!(keys.len(), 12, "{keys:?}");
    for key in keys {
        assert!(
            key.starts_with("tg:{acme}:") || key.starts_with("tg:{ip:"),
            "{key}"
        );
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

#[tokio::test]
async fn two_instances_share_rate_and_failed_auth_counters() {
    let (_redis, a, b) = two_deny_stores();
    let now = ts(datetime!(2026-12-01 12:00:30));
    let rate = AdmitQuery {
        failed_auth: None,
        rate: rate("bob", "acme", "r", Some(4), None),
    };
    let mut allowed = 0;
    for i in 0..6 {
        let store = if i % 2 == 0 { &a } else { &b };
        let v = store
            .admit(&rate, now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let d = v.rate.unwrap_or_else(|| panic!("no rate decision"));
        assert_eq!(d.reset_secs, 30);
        allowed += usize::from(d.allowed);
    }
    assert_eq!(allowed, 4);
    let ip = IpAddr::from([192, 0, 2, 9]);
    let fail = |record| AdmitQuery {
        failed_auth: failed_auth(ip, 2, record),
        rate: None,
    };
    for _ in 0..2 {
        let v = a
            .admit(&fail(true), now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.blocked_retry_after, None);
    }
    let v = b
        .admit(&fail(false), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.blocked_retry_after, Some(30));
    // The next minute starts clean.
    let v = b
        .admit(&fail(false), now + 30)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.blocked_retry_after, None);
}

#[tokio::test]
async fn an_llm_calls_admission_rides_on_its_reservation() {
    let (_redis, a, b) = two_deny_stores();
    let now = ts(datetime!(2026-12-01 12:00:30));
    let scopes = [
        (ScopeKey::user("bob"), tokens_per_minute(100)),
        (ScopeKey::tenant("acme"), BudgetLimits::default()),
    ];
    let ip = IpAddr::from([192, 0, 2, 10]);
    let query = |route_limit| AdmitQuery {
        failed_auth: failed_auth(ip, 2, false),
        rate: rate("bob", "acme", "chat", Some(route_limit), None),
    };
    // Two calls fit the rate of 3 and hold 40 tokens each, across instances.
    let mut held = Vec::new();
    for (store, seen) in [(&a, 1), (&b, 2)] {
        let admitted = store
            .admit_and_reserve(&query(3), &scopes, Charge::tokens(40), now, HOLD)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rate = admitted
            .verdict
            .rate
            .clone()
            .unwrap_or_else(|| panic!("no rate"));
        assert_eq!(
            (rate.policy.as_str(), rate.remaining, rate.allowed),
            ("chat", 3 - seen, true)
        );
        assert_eq!(admitted.verdict.blocked_retry_after, None);
        match admitted.reserved {
            Some(Ok(ticket)) => held.push(ticket),
            other => panic!("expected a hold, got {other:?}"),
        }
    }
    assert_eq!(
        usage(&a, &ScopeKey::user("bob"), now).await.reserved_tokens,
        80
    );
    // The third is counted and refused by its budget (80 + 40 > 100)...
    let admitted = a
        .admit_and_reserve(&query(3), &scopes, Charge::tokens(40), now, HOLD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(admitted.verdict.admits());
    assert_eq!(
        refusal(admitted.reserved.unwrap_or_else(|| panic!("no answer"))).kind,
        LimitKind::TokensPerMinute
    );
    // ...the fourth by its rate, before any budget is read or held.
    let admitted = b
        .admit_and_reserve(&query(3), &scopes, Charge::tokens(1), now, HOLD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!admitted.verdict.admits());
    assert_eq!(admitted.verdict.rate.map(|r| r.remaining), Some(0));
    assert!(admitted.reserved.is_none());
    assert_eq!(
        usage(&a, &ScopeKey::user("bob"), now).await.reserved_tokens,
        80
    );
    // The counter is the one admission counts: a plain admit sees all four.
    let counted = a
        .admit(&query(5), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .rate
        .map(|r| r.remaining);
    assert_eq!(counted, Some(0));
    // A locked-out address is refused and holds nothing, even with room.
    for ticket in held {
        a.release(ticket).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let fail = AdmitQuery {
        failed_auth: failed_auth(ip, 2, true),
        rate: None,
    };
    for _ in 0..2 {
        a.admit(&fail, now).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let admitted = b
        .admit_and_reserve(&query(100), &scopes, Charge::tokens(10), now, HOLD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(admitted.verdict.blocked_retry_after, Some(30));
    assert!(admitted.reserved.is_none());
    assert_eq!(
        usage(&a, &ScopeKey::user("bob"), now).await.reserved_tokens,
        0
    );
}

#[tokio::test]
async fn unreachable_redis_denies_or_counts_locally() {
    // A port that was free a moment ago: connection refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("redis://127.0.0.1:{port}/0");
    let now = NOON;
    let scopes = [(ScopeKey::user("bob"), BudgetLimits::default())];
    let deny = store_at(&url, OnStoreError::Deny);
    assert!(matches!(
        deny.reserve(&scopes, Charge::tokens(1), now, HOLD).await,
        Err(ReserveError::Unavailable(_))
    ));
    let allow = store_at(&url, OnStoreError::Allow);
    let t = allow.reserve(&scopes, Charge::tokens(7), now, HOLD).await;
    let t = t.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.backend, Backend::Local);
    let (u, backend) = allow
        .usage(&ScopeKey::user("bob"), "acme", now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((u.reserved_tokens, backend), (7, Backend::Local));
}

/// Sizing figures for the README: keys and memory per 10,000 active users.
/// `cargo test --lib redis_memory_per_10k_users -- --ignored --nocapture`
#[tokio::test]
#[ignore = "measurement, not a check"]
async fn redis_memory_per_10k_users() {
    let (redis, store) = deny_store();
    let mut raw = redis.raw().await;
    let used = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let info = || redis::cmd("INFO").arg("memory").clone();
    let before = used(info().query_async(&mut raw).await.unwrap_or_default());
    let now = crate::limits::window::now_unix();
    let limits = limited(1_000_000, 10_000_000, 100_000_000);
    let users = 10_000;
    for i in 0..users {
        let name = format!("user-{i:05}");
        let tenant_id = format!("tenant-{}", i % 100);
        let rate = AdmitQuery {
            failed_auth: None,
            rate: rate(&name, &tenant_id, "chat", None, Some(100)),
        };
        assert!(store.admit(&rate, now).await.is_ok());
        let scopes = [
            (ScopeKey::User(name.clone()), limits),
            (ScopeKey::Tenant(tenant_id), limits),
        ];
        spend(
            &store,
            &scopes,
            Charge {
                tokens: 500,
                micro_usd: 300,
            },
            now,
        )
        .await;
    }
    let after = used(info().query_async(&mut raw).await.unwrap_or_default());
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut raw)
        .await
        .unwrap_or_default();
    println!(
        "{users} users in 100 tenants: {keys} keys, used_memory {} -> {} bytes: {:.1} MiB per 10k users",
        before,
        after,
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0) * 10_000.0 / users as f64
    );
}

/// The ledger as a rebuild sees it: fixed sums, a little slow, so two
/// instances that found the windows lost really rebuild at once.
struct FixedSpend(SpendInWindows);

#[async_trait::async_trait]
impl SpendSource for FixedSpend {
    async fn spend(&self, _: &ScopeKey, _: u64) -> Result<SpendInWindows, String> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok(self.0)
    }
}

#[tokio::test]
async fn windows_redis_lost_are_rebuilt_once_from_the_ledger_by_two_instances_at_once() {
    let redis = RedisServer::start();
    let ledger = spent(0, 500, 700);
    let instance = || {
        redis
            .store(OnStoreError::Deny)
            .with_spend_source(Arc::new(FixedSpend(ledger)))
    };
    let (a, b) = (instance(), instance());
    let now = NOON;
    let limits = tokens_per_day(1000);
    let scopes = [
        (ScopeKey::user("bob"), limits),
        (ScopeKey::tenant("acme"), BudgetLimits::default()),
    ];
    let c = Charge {
        tokens: 100,
        micro_usd: 10,
    };
    // Both find no marker (a fresh, or restarted, Redis) and rebuild.
    tokio::join!(spend(&a, &scopes, c, now), spend(&b, &scopes, c, now));
    let bob = usage(&a, &ScopeKey::user("bob"), now).await;
    assert_eq!((bob.tokens_day, bob.micro_usd_month), (700, 720));
    let acme = usage(&b, &ScopeKey::tenant("acme"), now).await;
    assert_eq!((acme.tokens_day, acme.micro_usd_month), (700, 720));

    // Redis loses everything: the ledger's sums come back before a grant.
    let mut raw = redis.raw().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let too_much = Charge {
        tokens: 600,
        micro_usd: 0,
    };
    let refused = refusal(b.reserve(&scopes, too_much, now, HOLD).await);
    assert_eq!((refused.used, refused.limit), (500, 1000));
    spend(&a, &scopes, c, now).await;
    assert_eq!(usage(&a, &ScopeKey::user("bob"), now).await.tokens_day, 600);
}

fn conversation_limits() -> BudgetLimits {
    BudgetLimits {
        tokens_per_day: Some(10_000),
        micro_usd_per_day: Some(1_000),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_conversation_counts_its_day_in_its_tenants_slot_and_never_overspends() {
    let (redis, a, b) = two_deny_stores();
    let now = ts(datetime!(2026-12-01 23:00:00));
    let scopes = |tenant: &str| {
        [
            (ScopeKey::user("bob"), BudgetLimits::default()),
            (ScopeKey::tenant(tenant), BudgetLimits::default()),
            (ScopeKey::conversation(tenant, "c-1"), conversation_limits()),
        ]
    };
    let c = Charge {
        tokens: 10,
        micro_usd: 100,
    };
    // 20 calls at once on two instances: exactly 10 fit $0.001 at 100 each.
    let acme = scopes("acme");
    let calls = (0..20).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        store.reserve(&acme, c, now, HOLD)
    });
    let held: Vec<_> = futures::future::join_all(calls).await;
    let (granted, refused): (Vec<_>, Vec<_>) = held.into_iter().partition(Result::is_ok);
    assert_eq!((granted.len(), refused.len()), (10, 10));
    for r in refused {
        let r = refusal(r);
        assert_eq!(
            (r.scope, r.kind),
            (ScopeKey::conversation("acme", "c-1"), LimitKind::UsdPerDay)
        );
    }
    for t in granted.into_iter().flatten() {
        a.settle(t, c, now).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let spent = usage(&a, &ScopeKey::conversation("acme", "c-1"), now).await;
    assert_eq!((spent.tokens_day, spent.micro_usd_day), (100, 1_000));
    assert_eq!((spent.tokens_minute, spent.micro_usd_month), (0, 0));
    // globex's c-1 is another conversation, on globex's slot.
    spend(&b, &scopes("globex"), c, now).await;
    let mut raw = redis.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tg:*:c:*")
        .query_async(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        keys.iter().any(|k| k.starts_with("tg:{globex}:c:c-1:")),
        "{keys:?}"
    );
    // Only the day windows, the holds and the marker; all gone within the
    // day (plus the margin), not the month.
    for key in &keys {
        assert!(!key.contains(":tm:") && !key.contains(":um:"), "{key}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ttl > 0 && ttl <= 3600 + 60 + 5, "{key}: {ttl}");
    }
    // The next day it starts again.
    let tomorrow = now + 3600;
    assert!(a.reserve(&acme, c, tomorrow, HOLD).await.is_ok());
}

#[tokio::test]
async fn a_conversation_redis_lost_is_rebuilt_from_the_ledger() {
    let redis = RedisServer::start();
    let ledger = SpendInWindows {
        tokens_day: 40,
        micro_usd_day: 900,
        ..Default::default()
    };
    let store = redis
        .store(OnStoreError::Deny)
        .with_spend_source(Arc::new(FixedSpend(ledger)));
    let now = NOON;
    let scopes = [
        (ScopeKey::tenant("acme"), BudgetLimits::default()),
        (ScopeKey::conversation("acme", "c-1"), conversation_limits()),
    ];
    let r = refusal(
        store
            .reserve(
                &scopes,
                Charge {
                    tokens: 1,
                    micro_usd: 101,
                },
                now,
                HOLD,
            )
            .await,
    );
    assert_eq!(
        (r.kind, r.used, r.limit),
        (LimitKind::UsdPerDay, 900, 1_000)
    );
}

#[tokio::test]
async fn a_shadow_budget_holds_and_reports_but_never_refuses() {
    let (_redis, store) = deny_store();
    let now = NOON;
    let shadow = BudgetLimits {
        shadow: true,
        ..tokens_per_day(100)
    };
    let enforced = tokens_per_day(1_000);
    let scopes = [
        (ScopeKey::user("bob"), shadow),
        (ScopeKey::tenant("acme"), enforced),
    ];
    spend(&store, &scopes, Charge::tokens(80), now).await;
    let t = store
        .reserve(&scopes, Charge::tokens(80), now, HOLD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = t
        .shadow
        .clone()
        .unwrap_or_else(|| panic!("no shadow refusal"));
    assert_eq!(
        (r.scope, r.kind, r.limit, r.used),
        (ScopeKey::user("bob"), LimitKind::TokensPerDay, 100, 80)
    );
    assert_eq!(t.tokens_in_use.day, Some(160));
    store
        .settle(t, Charge::tokens(80), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        usage(&store, &ScopeKey::user("bob"), now).await.tokens_day,
        160
    );
    let r = refusal(store.reserve(&scopes, Charge::tokens(900), now, HOLD).await);
    assert_eq!(r.scope, ScopeKey::tenant("acme"));
    let fine = store.reserve(&scopes, Charge::tokens(1), now, HOLD).await;
    assert!(fine.is_ok_and(|t| t.shadow.is_some()));
}

/// A budget `limits` for `user` and the same for their tenant `acme`.
fn in_acme(user: &str, limits: BudgetLimits) -> [(ScopeKey, BudgetLimits); 2] {
    [
        (ScopeKey::user(user), limits),
        (ScopeKey::tenant("acme"), limits),
    ]
}

/// Two instances' stores on one fresh redis-server, failing closed.
fn two_deny_stores() -> (RedisServer, RedisStore, RedisStore) {
    let redis = RedisServer::start();
    let (a, b) = (
        redis.store(OnStoreError::Deny),
        redis.store(OnStoreError::Deny),
    );
    (redis, a, b)
}

/// A fresh redis-server and a store on it that fails closed.
fn deny_store() -> (RedisServer, RedisStore) {
    let redis = RedisServer::start();
    let store = redis.store(OnStoreError::Deny);
    (redis, store)
}

/// A denying store, and `user` of acme with `limits` in both scopes.
fn deny_store_in_acme(
    user: &str,
    limits: BudgetLimits,
) -> (RedisServer, RedisStore, [(ScopeKey, BudgetLimits); 2]) {
    let (redis, store) = deny_store();
    (redis, store, in_acme(user, limits))
}
