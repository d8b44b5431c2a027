//! Cluster mode: the counters of every gateway instance in one Redis.
//!
//! Each decision is one round trip: an atomic Lua script (sent as
//! `EVALSHA`, loaded again on `NOSCRIPT`), or for admission at most two
//! scripts on two hash slots pipelined in one write. An LLM call's
//! admission rides on its reservation (`admit_and_reserve`): the reserve
//! script counts the request rate first, so a call costs two round trips
//! (reserve, settle), not three. Every call is bounded
//! by `store.redis_timeouts`; a failure is handled as `on_store_error` says:
//! `deny` answers 503 at once, `allow` counts in the local counters
//! meanwhile. The connection is redis-rs' `ConnectionManager` (multiplexed,
//! reconnects by itself), so shared counting resumes when Redis returns.

mod keys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, FromRedisValue, Pipeline, RedisError};

use crate::config::schema::OnStoreError;
use crate::limits::budget::{BudgetLimits, BudgetRefusal, Charge, LimitKind, ScopeKey};
use crate::limits::local_counters::LocalCounters;
use crate::limits::rate::{RateDecision, KEY_POLICY};
use crate::limits::types::{
    AdmitQuery, AdmitVerdict, AdmittedReservation, Backend, RateQuery, ReservationTicket,
    ReserveError, ScopeUsage, SettledScope, SpendInWindows, SpendSource, StoreError, TokensInUse,
};
use crate::limits::window::{seconds_to_reset, Window};
use crate::observe::metrics;
use crate::sys::clock;

/// Counter keys outlive their window by this much, so an instance whose
/// clock is a little behind still finds them.
const KEY_TTL_MARGIN_SECS: u64 = 60;
/// After a failed connection attempt, requests fail fast for this long
/// instead of each trying to connect (Redis down must not cost every
/// request a connect timeout).
const RECONNECT_PAUSE_MS: u64 = 200;
/// A scope's marker outlives the longest window (a month): a marker that
/// expires costs one needless rebuild, never a wrong count.
const MARKER_TTL_SECS: u64 = 40 * 86_400;
/// The marker's life when the ledger could not be read: the rebuild is
/// tried again this much later.
const RETRY_REBUILD_SECS: u64 = 60;

/// One Lua script and its SHA-1 (what `EVALSHA` names it by).
struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: redis::Script::new(source).get_hash().to_string(),
        }
    }

    /// `EVALSHA sha nkeys keys… args…` into `pipe`.
    fn call<K: redis::ToRedisArgs, A: redis::ToRedisArgs>(
        &self,
        pipe: &mut Pipeline,
        keys: &[K],
        args: A,
    ) {
        pipe.cmd("EVALSHA")
            .arg(&self.sha)
            .arg(keys.len())
            .arg(keys)
            .arg(args);
    }
}

struct Scripts {
    count: Script,
    reserve: Script,
    settle: Script,
    usage: Script,
    rebuild: Script,
}

impl Scripts {
    fn all(&self) -> [&Script; 5] {
        [
            &self.count,
            &self.reserve,
            &self.settle,
            &self.usage,
            &self.rebuild,
        ]
    }
}

/// What `store` in the config says about Redis, resolved (password read).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub password: Option<String>,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub on_error: OnStoreError,
}

pub struct RedisStore {
    settings: RedisSettings,
    client: redis::Client,
    connection: ArcSwapOption<ConnectionManager>,
    /// Held while connecting, so a burst of requests makes one attempt.
    connecting: tokio::sync::Mutex<()>,
    last_connect_failure_ms: AtomicU64,
    last_warning_secs: AtomicU64,
    scripts: Scripts,
    /// Counts while Redis is unreachable under `on_store_error: allow`.
    fallback: LocalCounters,
    /// Where lost windows are rebuilt from (the shared ledger); without
    /// one they restart at zero, as Redis left them.
    spend_source: Option<Arc<dyn SpendSource>>,
}

impl RedisStore {
    /// Builds the client; connects on first use, so a gateway starts (and
    /// serves, with `allow`) while Redis is still down.
    pub fn new(settings: RedisSettings) -> Result<RedisStore, RedisError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())?;
        if settings.password.is_some() {
            info.redis.password = settings.password.clone();
        }
        Ok(RedisStore {
            client: redis::Client::open(info)?,
            settings,
            connection: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            last_connect_failure_ms: AtomicU64::new(0),
            last_warning_secs: AtomicU64::new(0),
            scripts: Scripts {
                count: Script::new(include_str!("count.lua")),
                reserve: Script::new(include_str!("reserve.lua")),
                settle: Script::new(include_str!("settle.lua")),
                usage: Script::new(include_str!("usage.lua")),
                rebuild: Script::new(include_str!("rebuild.lua")),
            },
            fallback: LocalCounters::default(),
            spend_source: None,
        })
    }

    /// Budget windows Redis lost are rebuilt from `source` before the
    /// next reservation in them is granted.
    pub fn with_spend_source(mut self, source: Arc<dyn SpendSource>) -> RedisStore {
        self.spend_source = Some(source);
        self
    }

    /// Rebuilds `scope`'s windows (rebuild.lua) from the ledger's sums;
    /// instances racing here both apply the larger value, once.
    async fn rebuild(&self, tenant: &str, scope: &ScopeKey, now_unix: u64) -> Result<(), String> {
        let (spend, marker_ttl) = match &self.spend_source {
            Some(source) => match source.spend(scope, now_unix).await {
                Ok(spend) => (spend, MARKER_TTL_SECS),
                // No call fails because the ledger is away: count from
                // what Redis holds, and rebuild again (max, so late is
                // still right) once the short marker expires.
                Err(e) => {
                    metrics::inc(&metrics::STORE_ERRORS, &[Backend::Redis.name()]);
                    tracing::warn!(scope = %scope.id(), error = %e,
                        "budget windows lost by Redis: ledger unreachable, rebuilding later");
                    (SpendInWindows::default(), RETRY_REBUILD_SECS)
                }
            },
            None => (SpendInWindows::default(), MARKER_TTL_SECS),
        };
        let [minute, day, usd_day, month, _] =
            keys::budget_keys(&self.settings.prefix, tenant, scope, now_unix);
        let marker = keys::marker_key(&self.settings.prefix, tenant, scope);
        let ttl = |w: Window| seconds_to_reset(w, now_unix).saturating_add(KEY_TTL_MARGIN_SECS);
        // A conversation lives a day: its marker must not keep a million
        // of them in Redis for 40.
        let marker_ttl = match scope {
            ScopeKey::Conversation { .. } => marker_ttl.min(ttl(Window::Day)),
            _ => marker_ttl,
        };
        let mut pipe = redis::pipe();
        self.scripts.rebuild.call(
            &mut pipe,
            &[minute, day, usd_day, month, marker],
            (
                vec![
                    spend.tokens_minute,
                    spend.tokens_day,
                    spend.micro_usd_day,
                    spend.micro_usd_month,
                ],
                window_ttls(now_unix),
                marker_ttl,
            ),
        );
        let rebuilt: Vec<u8> = self.query(&pipe).await.map_err(|e| e.to_string())?;
        if rebuilt.first() == Some(&1) {
            tracing::info!(scope = %scope.id(), tokens_day = spend.tokens_day,
                "budget windows rebuilt from the ledger after Redis lost them");
        }
        Ok(())
    }

    pub fn fallback(&self) -> &LocalCounters {
        &self.fallback
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(c) = self.connection.load_full() {
            return Ok((*c).clone());
        }
        let paused_until = self
            .last_connect_failure_ms
            .load(Ordering::Relaxed)
            .saturating_add(RECONNECT_PAUSE_MS);
        if now_ms() < paused_until {
            return Err(unreachable_error("not connected (retrying shortly)"));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.connection.load_full() {
            return Ok((*c).clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.settings.connect_timeout)
            .set_response_timeout(self.settings.command_timeout)
            // One attempt per reconnect, no backoff sleeps: a request that
            // finds the connection broken starts the next attempt, so
            // shared counting resumes as soon as Redis answers again, and
            // attempts are bounded by the request rate and one at a time.
            .set_number_of_retries(0)
            .set_max_delay(100);
        let connected = tokio::time::timeout(
            self.settings.connect_timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .unwrap_or_else(|_| Err(unreachable_error("connect timeout")));
        match connected {
            Ok(c) => {
                self.connection.store(Some(std::sync::Arc::new(c.clone())));
                tracing::info!(url = %redacted(&self.settings.url), "connected to redis");
                Ok(c)
            }
            Err(e) => {
                self.last_connect_failure_ms
                    .store(now_ms(), Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Runs `pipe` (see [`Self::query_once`]); a broken connection's error
    /// is answered by one more try on a fresh connection. redis-rs'
    /// `ConnectionManager` hands out the error of its last failed reconnect
    /// once, even when Redis is back by then: measured, the first call on
    /// each instance after a Redis restart answered 503 without this. Our
    /// own timeouts are not retried: they would double a request's wait.
    async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisError> {
        match self.query_once(pipe).await {
            Err(e) if e.is_unrecoverable_error() && !is_ours(&e) => {
                self.connection.store(None);
                self.query_once(pipe).await
            }
            other => other,
        }
    }

    /// Runs `pipe` within the command timeout; on `NOSCRIPT` (Redis
    /// restarted, or `SCRIPT FLUSH`) loads the scripts and runs it again.
    async fn query_once<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisError> {
        let mut con = self.connection().await?;
        match self.timed(pipe.query_async::<T>(&mut con)).await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                let mut load = redis::pipe();
                for script in self.scripts.all() {
                    load.cmd("SCRIPT").arg("LOAD").arg(script.source);
                }
                self.timed(load.query_async::<()>(&mut con)).await?;
                self.timed(pipe.query_async::<T>(&mut con)).await
            }
            other => other,
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        tokio::time::timeout(self.settings.command_timeout, f)
            .await
            .unwrap_or_else(|_| Err(unreachable_error("command timeout")))
    }

    /// Counts the failure and logs it at most once per second.
    fn failed(&self, what: &str, e: &RedisError) {
        metrics::inc(&metrics::STORE_ERRORS, &[Backend::Redis.name()]);
        let now = now_ms() / 1000;
        let last = self.last_warning_secs.load(Ordering::Relaxed);
        if now > last
            && self
                .last_warning_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let fallback = match self.settings.on_error {
                OnStoreError::Deny => "refusing requests (on_store_error: deny)",
                OnStoreError::Allow => "counting locally (on_store_error: allow)",
            };
            tracing::warn!(error = %e, "redis store {what} failed; {fallback}");
        }
    }

    fn allow(&self) -> bool {
        self.settings.on_error == OnStoreError::Allow
    }

    pub async fn admit(
        &self,
        q: &AdmitQuery<'_>,
        now_unix: u64,
    ) -> Result<AdmitVerdict, StoreError> {
        let prefix = &self.settings.prefix;
        let ttl = seconds_to_reset(Window::Minute, now_unix) + KEY_TTL_MARGIN_SECS;
        let mut pipe = redis::pipe();
        self.count_failed_auth(&mut pipe, q, now_unix, ttl);
        let rate = q.rate.and_then(|r| rate_counter(prefix, &r, now_unix));
        let key_rate = q.rate.and_then(|r| key_rate_counter(prefix, &r, now_unix));
        for counter in rate.iter().chain(&key_rate) {
            self.scripts
                .count
                .call(&mut pipe, &[&counter.key], (1u8, ttl));
        }
        if q.failed_auth.is_none() && rate.is_none() && key_rate.is_none() {
            return Ok(AdmitVerdict::default());
        }
        let counts: Vec<u64> = match self.query(&pipe).await {
            Ok(counts) => counts,
            Err(e) => {
                self.failed("admission", &e);
                return match self.allow() {
                    true => Ok(self.fallback.admit(q)),
                    false => Err(StoreError::Unavailable(e.to_string())),
                };
            }
        };
        let mut counts = counts.into_iter();
        let failures = q.failed_auth.and_then(|_| counts.next());
        let blocked_retry_after = lockout(q, failures, now_unix);
        let rate = rate.map(|counter| counter.decision(counts.next().unwrap_or(0) + 1, now_unix));
        let key_rate =
            key_rate.map(|counter| counter.decision(counts.next().unwrap_or(0) + 1, now_unix));
        Ok(AdmitVerdict {
            blocked_retry_after,
            rate,
            key_rate,
        })
    }

    /// The failed-auth counter's script for `q`, if it asks (its own hash
    /// slot: the client address's); `ttl` is the minute counters' expiry.
    fn count_failed_auth(&self, pipe: &mut Pipeline, q: &AdmitQuery<'_>, now_unix: u64, ttl: u64) {
        if let Some(fa) = q.failed_auth {
            let key = keys::failed_auth_key(&self.settings.prefix, fa.ip, now_unix);
            self.scripts
                .count
                .call(pipe, &[key], (u8::from(fa.record), ttl));
        }
    }

    pub async fn reserve(
        &self,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
        hold: Duration,
    ) -> Result<ReservationTicket, ReserveError> {
        let plan = ReservePlan::new(&self.settings.prefix, scopes, charge, now_unix, hold);
        let mut pipe = redis::pipe();
        plan.call(&self.scripts.reserve, &mut pipe, &[]);
        let mut rebuilds = 0;
        let answer = loop {
            let answer: Vec<Vec<i64>> = match self.query(&pipe).await {
                Ok(answer) => answer,
                Err(e) => {
                    self.failed("reserve", &e);
                    if self.allow() {
                        return self.fallback.budgets.reserve(scopes, charge, now_unix);
                    }
                    return Err(ReserveError::Unavailable(e.to_string()));
                }
            };
            match plan.outcome(answer.first().map(Vec::as_slice)) {
                ReserveOutcome::NeedsRebuild(scope) if rebuilds < plan.unique.len() => {
                    // Only Redis itself failing lands here (see `rebuild`).
                    if let Err(e) = self.rebuild_for(&plan, scope).await {
                        if self.allow() {
                            return self.fallback.budgets.reserve(scopes, charge, now_unix);
                        }
                        return Err(ReserveError::Unavailable(e));
                    }
                    rebuilds += 1;
                }
                _ => break answer,
            }
        };
        match plan.outcome(answer.first().map(Vec::as_slice)) {
            ReserveOutcome::Held(ticket, _) => Ok(ticket),
            ReserveOutcome::Refused(refusal, _) => Err(ReserveError::Refused(refusal)),
            ReserveOutcome::RateRefused(_)
            | ReserveOutcome::NeedsRebuild(_)
            | ReserveOutcome::Unexpected => Err(ReserveError::Unavailable(format!(
                "unexpected reserve answer {answer:?}"
            ))),
        }
    }

    /// An LLM call's admission and reservation in one round trip: the
    /// request counter is counted inside the reserve script (same hash
    /// slot), which holds nothing when the rate refuses; the failed-auth
    /// read (another slot) is pipelined beside it. A locked-out caller's
    /// hold, if one was taken, is released before answering.
    pub async fn admit_and_reserve(
        &self,
        q: &AdmitQuery<'_>,
        scopes: &[(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
        hold: Duration,
    ) -> Result<AdmittedReservation, StoreError> {
        let prefix = &self.settings.prefix;
        let ttl = seconds_to_reset(Window::Minute, now_unix) + KEY_TTL_MARGIN_SECS;
        let plan = ReservePlan::new(prefix, scopes, charge, now_unix, hold);
        let rate = q.rate.and_then(|r| rate_counter(prefix, &r, now_unix));
        let key_rate = q.rate.and_then(|r| key_rate_counter(prefix, &r, now_unix));
        let mut pipe = redis::pipe();
        self.count_failed_auth(&mut pipe, q, now_unix, ttl);
        // At most two counters, in this order: the user's, the key's (no
        // allocation for them).
        let counters = [
            rate.as_ref()
                .map(|c| (c.key.as_str(), c.limit, ttl, c.enforced)),
            key_rate
                .as_ref()
                .map(|c| (c.key.as_str(), c.limit, ttl, c.enforced)),
        ];
        plan.call(&self.scripts.reserve, &mut pipe, &counters);
        let mut rebuilds = 0;
        let (failures, reserve) = loop {
            let answers: Vec<redis::Value> = match self.query(&pipe).await {
                Ok(answers) => answers,
                Err(e) => {
                    self.failed("reserve", &e);
                    if !self.allow() {
                        return Err(StoreError::Unavailable(e.to_string()));
                    }
                    return Ok(self.fallback.admit_and_reserve(q, scopes, charge, now_unix));
                }
            };
            let mut answers = answers.iter();
            let failures: Option<u64> = match q.failed_auth {
                Some(_) => answers.next().and_then(|v| redis::from_redis_value(v).ok()),
                None => None,
            };
            let reserve: Option<Vec<i64>> =
                answers.next().and_then(|v| redis::from_redis_value(v).ok());
            match plan.outcome(reserve.as_deref()) {
                // Nothing was counted: rebuild, then ask again.
                ReserveOutcome::NeedsRebuild(scope) if rebuilds < plan.unique.len() => {
                    if let Err(e) = self.rebuild_for(&plan, scope).await {
                        if self.allow() {
                            return Ok(self
                                .fallback
                                .admit_and_reserve(q, scopes, charge, now_unix));
                        }
                        return Err(StoreError::Unavailable(e));
                    }
                    rebuilds += 1;
                }
                _ => break (failures, reserve),
            }
        };
        let blocked_retry_after = lockout(q, failures, now_unix);
        let (counted, reserved) = match plan.outcome(reserve.as_deref()) {
            ReserveOutcome::Held(ticket, seen) => (seen, Some(Ok(ticket))),
            ReserveOutcome::Refused(refusal, seen) => {
                (seen, Some(Err(ReserveError::Refused(refusal))))
            }
            ReserveOutcome::RateRefused(seen) => (seen, None),
            ReserveOutcome::NeedsRebuild(_) | ReserveOutcome::Unexpected => {
                return Err(StoreError::Unavailable(format!(
                    "unexpected reserve answer {reserve:?}"
                )))
            }
        };
        // The counters' values in the order they were passed.
        let mut counted = counted.into_iter();
        let rate = rate.map(|c| c.decision(counted.next().unwrap_or(0), now_unix));
        let key_rate = key_rate.map(|c| c.decision(counted.next().unwrap_or(0), now_unix));
        let verdict = AdmitVerdict {
            blocked_retry_after,
            rate,
            key_rate,
        };
        let reserved = match reserved {
            Some(Ok(ticket)) if blocked_retry_after.is_some() => {
                // Rare (valid credentials from a locked-out address): the
                // hold goes back at once rather than at its expiry.
                if let Err(e) = self.release(ticket).await {
                    tracing::debug!(error = %e, "releasing a locked-out caller's hold");
                }
                None
            }
            other => other,
        };
        Ok(AdmittedReservation { verdict, reserved })
    }

    /// Rebuilds the plan's scope number `index` (see [`Self::rebuild`]).
    async fn rebuild_for(&self, plan: &ReservePlan<'_>, index: usize) -> Result<(), String> {
        let Some((scope, _)) = plan.unique.get(index) else {
            return Err(format!("reserve script named scope {index}"));
        };
        let tenant = hash_tag(plan.unique.iter().map(|s| &s.0));
        self.rebuild(tenant, scope, plan.now_unix)
            .await
            .map_err(|e| {
                metrics::inc(&metrics::STORE_ERRORS, &[Backend::Redis.name()]);
                format!("budget windows lost by Redis cannot be rebuilt from the ledger: {e}")
            })
    }

    /// Settles (or with `actual` zero, releases) a Redis-held reservation.
    pub async fn settle(
        &self,
        ticket: ReservationTicket,
        actual: Charge,
        now_unix: u64,
    ) -> Result<Vec<SettledScope>, StoreError> {
        let tenant = hash_tag(ticket.scopes.iter());
        let mut keys = Vec::with_capacity(ticket.scopes.len() * 5);
        for scope in &ticket.scopes {
            keys.extend(keys::budget_keys(
                &self.settings.prefix,
                tenant,
                scope,
                now_unix,
            ));
        }
        let counts: Vec<String> = ticket.scopes.iter().map(counted_windows).collect();
        let args = (
            member(ticket.id, ticket.charge),
            actual.tokens,
            actual.micro_usd,
            window_ttls(now_unix),
            counts,
        );
        let mut pipe = redis::pipe();
        self.scripts.settle.call(&mut pipe, &keys, args);
        let answer: Vec<Vec<u64>> = self.query(&pipe).await.map_err(|e| {
            // Not failed over: the hold expires by itself in Redis.
            self.failed("settle", &e);
            StoreError::Unavailable(e.to_string())
        })?;
        let spent = answer.into_iter().next().unwrap_or_default();
        let settled = ticket
            .scopes
            .into_iter()
            .enumerate()
            .map(|(i, scope)| {
                let at = |w: usize| spent.get(i * 4 + w).copied().unwrap_or(0);
                SettledScope {
                    scope,
                    limits: ticket.limits.get(i).copied().unwrap_or_default(),
                    spent: SpendInWindows {
                        tokens_minute: at(0),
                        tokens_day: at(1),
                        micro_usd_day: at(2),
                        micro_usd_month: at(3),
                    },
                    added: actual,
                }
            })
            .collect();
        Ok(settled)
    }

    pub async fn release(&self, ticket: ReservationTicket) -> Result<(), StoreError> {
        let now = ticket.reserved_at;
        self.settle(ticket, Charge::default(), now).await.map(drop)
    }

    /// `SET key 1 NX EX ttl` on the tenant's slot: true for the first
    /// claim of `token` (threshold alerts, deduplicated across instances).
    pub async fn claim_once(
        &self,
        tenant: &str,
        token: &str,
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::claim_key(&self.settings.prefix, tenant, token))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs.max(1));
        let answer: Vec<Option<String>> = self.query(&pipe).await.map_err(|e| {
            self.failed("alert claim", &e);
            StoreError::Unavailable(e.to_string())
        })?;
        Ok(answer.first().is_some_and(Option::is_some))
    }

    pub async fn usage(
        &self,
        scope: &ScopeKey,
        tenant: &str,
        now_unix: u64,
    ) -> Result<(ScopeUsage, Backend), StoreError> {
        let tenant = match scope {
            ScopeKey::Tenant(t) | ScopeKey::Conversation { tenant: t, .. } => t.as_str(),
            ScopeKey::User(_) | ScopeKey::Key(_) => tenant,
        };
        let keys = keys::budget_keys(&self.settings.prefix, tenant, scope, now_unix);
        let mut pipe = redis::pipe();
        self.scripts
            .usage
            .call(&mut pipe, &keys, now_unix.saturating_mul(1000));
        match self.query::<Vec<Vec<u64>>>(&pipe).await {
            Ok(rows) => {
                let (tm, td, ud, um, rt, ru) = match rows.first().map(Vec::as_slice) {
                    Some(&[tm, td, ud, um, rt, ru]) => (tm, td, ud, um, rt, ru),
                    _ => (0, 0, 0, 0, 0, 0),
                };
                Ok((
                    ScopeUsage {
                        tokens_minute: tm,
                        tokens_day: td,
                        micro_usd_day: ud,
                        micro_usd_month: um,
                        reserved_tokens: rt,
                        reserved_micro_usd: ru,
                    },
                    Backend::Redis,
                ))
            }
            Err(e) => {
                self.failed("usage", &e);
                match self.allow() {
                    true => Ok((self.fallback.budgets.usage(scope, now_unix), Backend::Local)),
                    false => Err(StoreError::Unavailable(e.to_string())),
                }
            }
        }
    }
}

/// Reads the password named by `redis_password_env` / `redis_password_file`.
pub fn password(config: &crate::config::schema::StoreConfig) -> Result<Option<String>, String> {
    if let Some(var) = &config.redis_password_env {
        return std::env::var(var)
            .map(Some)
            .map_err(|e| format!("store.redis_password_env: {var}: {e}"));
    }
    if let Some(file) = &config.redis_password_file {
        return std::fs::read_to_string(file)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| format!("store.redis_password_file: {file}: {e}"));
    }
    Ok(None)
}

/// The tenant whose hash slot holds these scopes: the tenant scope's id
/// (the gateway always passes one) or a conversation's tenant, else the
/// first scope's id.
fn hash_tag<'a>(mut scopes: impl Iterator<Item = &'a ScopeKey> + Clone) -> &'a str {
    scopes
        .clone()
        .find_map(|s| match s {
            ScopeKey::Tenant(t) | ScopeKey::Conversation { tenant: t, .. } => Some(t.as_str()),
            ScopeKey::User(_) | ScopeKey::Key(_) => None,
        })
        .or_else(|| scopes.next().map(ScopeKey::id))
        .unwrap_or("")
}

/// The TTL of each window key current at `now_unix`, in `LimitKind::ALL`
/// order: its window's end plus a margin.
fn window_ttls(now_unix: u64) -> Vec<u64> {
    LimitKind::ALL
        .iter()
        .map(|kind| seconds_to_reset(kind.window(), now_unix).saturating_add(KEY_TTL_MARGIN_SECS))
        .collect()
}

/// The windows `scope` counts, as settle.lua reads them ('1' counted, in
/// `LimitKind::ALL` order).
fn counted_windows(scope: &ScopeKey) -> String {
    LimitKind::ALL
        .iter()
        .map(|kind| if scope.counts(*kind) { '1' } else { '0' })
        .collect()
}

/// A request counter as the scripts take it, and what its count means.
struct RateCounter<'a> {
    /// `RateLimit-Policy`'s name: the route's, or `default`.
    policy: &'a str,
    key: String,
    limit: u64,
    enforced: bool,
}

impl RateCounter<'_> {
    /// The decision once the counter reads `seen` (this request included).
    fn decision(&self, seen: u64, now_unix: u64) -> RateDecision {
        RateDecision {
            policy: self.policy.to_string(),
            limit: self.limit,
            remaining: self.limit.saturating_sub(seen),
            reset_secs: seconds_to_reset(Window::Minute, now_unix).max(1),
            allowed: seen <= self.limit,
            enforced: self.enforced,
        }
    }
}

/// The route's own counter when it has a `rate_limit`, else the default one.
fn rate_counter<'a>(prefix: &str, r: &RateQuery<'a>, now_unix: u64) -> Option<RateCounter<'a>> {
    let (policy, route, limit) = match (r.route_limit, r.default_limit) {
        (Some(limit), _) => (r.route, Some(r.route), limit),
        (None, Some(limit)) => ("default", None, limit),
        (None, None) => return None,
    };
    Some(RateCounter {
        policy,
        key: keys::rate_key(prefix, r.tenant, r.user, route, now_unix),
        limit: u64::from(limit),
        enforced: r.enforced,
    })
}

/// The key's own counter, when the key has a `rate_limit`.
fn key_rate_counter<'a>(prefix: &str, r: &RateQuery<'a>, now_unix: u64) -> Option<RateCounter<'a>> {
    let k = r.key?;
    Some(RateCounter {
        policy: KEY_POLICY,
        key: keys::key_rate_key(prefix, r.tenant, k.id, now_unix),
        limit: u64::from(k.limit),
        enforced: k.enforced,
    })
}

/// The failed-auth lockout as the counter of `q`'s address reads it.
fn lockout(q: &AdmitQuery<'_>, failures: Option<u64>, now_unix: u64) -> Option<u64> {
    let fa = q.failed_auth?;
    (failures.unwrap_or(0) >= u64::from(fa.limit))
        .then(|| seconds_to_reset(Window::Minute, now_unix).max(1))
}

/// One reserve script call: the scopes (deduplicated, on the tenant's
/// hash slot), their keys and limits, and the hold's id.
struct ReservePlan<'s> {
    unique: Vec<&'s (ScopeKey, BudgetLimits)>,
    keys: Vec<String>,
    limits: Vec<i64>,
    id: u64,
    charge: Charge,
    now_unix: u64,
    hold: Duration,
}

/// What the reserve script answered.
enum ReserveOutcome {
    /// Held; the request counters' values in the order passed (0 for none).
    Held(ReservationTicket, [u64; 2]),
    Refused(BudgetRefusal, [u64; 2]),
    /// A request rate refused the call before any budget was read.
    RateRefused([u64; 2]),
    /// Redis lost this scope's windows (its marker is gone): rebuild them
    /// from the ledger, then ask again. Nothing was counted.
    NeedsRebuild(usize),
    Unexpected,
}

impl<'s> ReservePlan<'s> {
    fn new(
        prefix: &str,
        scopes: &'s [(ScopeKey, BudgetLimits)],
        charge: Charge,
        now_unix: u64,
        hold: Duration,
    ) -> ReservePlan<'s> {
        let mut unique: Vec<&(ScopeKey, BudgetLimits)> = Vec::with_capacity(scopes.len());
        for scope in scopes {
            // A scope listed twice is checked and held once.
            if !unique.iter().any(|s| s.0 == scope.0) {
                unique.push(scope);
            }
        }
        let tenant = hash_tag(unique.iter().map(|s| &s.0));
        let mut keys = Vec::with_capacity(unique.len() * 6 + 1);
        let mut limits = Vec::with_capacity(unique.len() * 5);
        for (scope, scope_limits) in &unique {
            keys.extend(keys::budget_keys(prefix, tenant, scope, now_unix));
            keys.push(keys::marker_key(prefix, tenant, scope));
            for kind in LimitKind::ALL {
                limits.push(scope_limits.limit(kind).map_or(-1, saturating_i64));
            }
            limits.push(i64::from(scope_limits.shadow));
        }
        ReservePlan {
            unique,
            keys,
            limits,
            id: rand::random(),
            charge,
            now_unix,
            hold,
        }
    }

    /// `EVALSHA reserve …` into `pipe`; `counters` (key, limit, TTL in
    /// seconds, whether it refuses; at most two) must be on the scopes'
    /// hash slot: the tenant's.
    fn call(
        &self,
        script: &Script,
        pipe: &mut Pipeline,
        counters: &[Option<(&str, u64, u64, bool)>],
    ) {
        let now = self.now_unix.saturating_mul(1000);
        let head = (
            now,
            now.saturating_add(self.hold.as_millis().try_into().unwrap_or(u64::MAX)),
            member(self.id, self.charge),
            self.charge.tokens,
            self.charge.micro_usd,
        );
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(&script.sha)
            .arg(self.keys.len() + counters.iter().flatten().count())
            .arg(&self.keys);
        for (key, ..) in counters.iter().flatten() {
            cmd.arg(*key);
        }
        cmd.arg(head).arg(&self.limits);
        for (_, limit, ttl, enforced) in counters.iter().flatten() {
            cmd.arg((*limit, *ttl, u8::from(*enforced)));
        }
    }

    fn outcome(&self, answer: Option<&[i64]>) -> ReserveOutcome {
        let seen = |v: i64| v.max(0).unsigned_abs();
        match answer {
            Some(&[-3, scope]) => usize::try_from(scope)
                .map_or(ReserveOutcome::Unexpected, ReserveOutcome::NeedsRebuild),
            Some(&[-2, a, b]) => ReserveOutcome::RateRefused([seen(a), seen(b)]),
            Some(&[-1, minute, day, scope, window, limit, used, a, b]) => ReserveOutcome::Held(
                ReservationTicket {
                    id: self.id,
                    scopes: self.unique.iter().map(|s| s.0.clone()).collect(),
                    limits: self.unique.iter().map(|s| s.1).collect(),
                    charge: self.charge,
                    reserved_at: self.now_unix,
                    backend: Backend::Redis,
                    // -1: a window without a limit, not read by the script.
                    tokens_in_use: TokensInUse {
                        minute: u64::try_from(minute).ok(),
                        day: u64::try_from(day).ok(),
                    },
                    // -1: no shadow-mode limit was passed.
                    shadow: self.refusal(scope, window, limit, used),
                },
                [seen(a), seen(b)],
            ),
            Some(&[scope, window, limit, used, a, b]) => {
                match self.refusal(scope, window, limit, used) {
                    Some(refusal) => ReserveOutcome::Refused(refusal, [seen(a), seen(b)]),
                    None => ReserveOutcome::Unexpected,
                }
            }
            _ => ReserveOutcome::Unexpected,
        }
    }
}

impl ReservePlan<'_> {
    /// The refusal the script named by scope index and window (1-based),
    /// `None` for indexes it cannot have meant (-1: none).
    fn refusal(&self, scope: i64, window: i64, limit: i64, used: i64) -> Option<BudgetRefusal> {
        let scope = usize::try_from(scope)
            .ok()
            .and_then(|i| self.unique.get(i))
            .map(|s| s.0.clone())?;
        let kind = usize::try_from(window - 1)
            .ok()
            .and_then(|i| LimitKind::ALL.get(i).copied())?;
        Some(BudgetRefusal {
            scope,
            kind,
            limit: limit.max(0).unsigned_abs(),
            used: used.max(0).unsigned_abs(),
            retry_after_secs: seconds_to_reset(kind.window(), self.now_unix),
        })
    }
}

/// A reservation in the scope's set: its id and what it holds.
fn member(id: u64, charge: Charge) -> String {
    format!("{id:016x}:{}:{}", charge.tokens, charge.micro_usd)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_ms() -> u64 {
    clock::unix_millis().max(0).unsigned_abs()
}

const UNREACHABLE: &str = "redis unreachable";

fn unreachable_error(why: &'static str) -> RedisError {
    RedisError::from((ErrorKind::IoError, UNREACHABLE, why.to_string()))
}

/// An error this module made (a timeout, the reconnect pause), not one of
/// the connection's.
fn is_ours(e: &RedisError) -> bool {
    e.to_string().contains(UNREACHABLE)
}

/// The URL as logged: any `user:password@` part replaced.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
