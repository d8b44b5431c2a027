//! Budget threshold alerts (DESIGN §3 `alerts`, §4 "Alerts"): when a
//! settlement carries a budget across a threshold (say 0.8 of a window's
//! limit), a signed JSON event is POSTed to each webhook watching that
//! scope.
//!
//! Off the request path: settling only compares numbers it already has
//! (the store returns each scope's spend after the settle) and, on a
//! crossing, offers the event to a bounded queue without waiting; a full
//! queue drops it (counted). The sender (worker.rs) claims each crossing
//! once per threshold, window and budget — in Redis across instances,
//! else in this process — and delivers it with retries and backoff.

pub mod webhook;
pub mod worker;

use crate::limits::budget::{LimitKind, ScopeKey};
use crate::limits::types::SettledScope;
use crate::limits::window::{seconds_to_reset, window_id};
use crate::llm::pricing::MICRO_USD_PER_USD;
use crate::observe::metrics;
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;
use webhook::Webhook;

/// Events waiting for the sender; more are dropped (counted).
pub const QUEUE_CAPACITY: usize = 1024;

/// The JSON body of one threshold crossing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetThreshold {
    pub event: &'static str,
    pub scope: &'static str,
    pub id: String,
    pub tenant: String,
    /// The limit crossed: `tokens_per_minute`, `tokens_per_day`,
    /// `usd_per_day` or `usd_per_month` (its unit and window).
    pub window: LimitKind,
    /// Tokens, or USD as a decimal number.
    pub limit: Value,
    pub spent: Value,
    pub threshold: f64,
    pub time: String,
    /// `false` for a budget in shadow mode (nothing was refused).
    pub enforce: bool,
}

/// One crossing on its way to one webhook.
#[derive(Debug, Clone)]
pub struct Alert {
    pub webhook: Arc<Webhook>,
    pub event: BudgetThreshold,
    /// Names the crossing (webhook, budget, window, threshold) for the
    /// once-only claim.
    pub claim: String,
    /// The claim lasts until the window ends (plus a margin).
    pub claim_ttl_secs: u64,
}

/// A claim outlives its window by this much (clocks of instances differ).
const CLAIM_MARGIN_SECS: u64 = 120;

/// The queue between settlements and the sender.
pub struct Alerts {
    queue: mpsc::Sender<Alert>,
    inbox: Mutex<Option<mpsc::Receiver<Alert>>>,
}

impl Default for Alerts {
    fn default() -> Self {
        Self::with_capacity(QUEUE_CAPACITY)
    }
}

impl Alerts {
    pub fn with_capacity(capacity: usize) -> Alerts {
        let (queue, inbox) = mpsc::channel(capacity.max(1));
        Alerts {
            queue,
            inbox: Mutex::new(Some(inbox)),
        }
    }

    /// The receiving end, once (the sender takes it when it starts).
    pub fn take_inbox(&self) -> Option<mpsc::Receiver<Alert>> {
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Queues an alert for every threshold a settlement carried a budget
    /// across; never waits.
    pub fn observe(
        &self,
        webhooks: &[Arc<Webhook>],
        settled: &[SettledScope],
        tenant: &str,
        now_unix: u64,
    ) {
        if webhooks.is_empty() {
            return;
        }
        for alert in crossings(webhooks, settled, tenant, now_unix) {
            if self.queue.try_send(alert).is_err() {
                metrics::inc(&metrics::ALERTS, &["dropped"]);
                tracing::warn!("alert queue full: a budget threshold alert was dropped");
            }
        }
    }
}

/// Every (webhook, threshold) a settlement crossed: spend before it below
/// the threshold's share of a limit, after it at or above.
pub fn crossings(
    webhooks: &[Arc<Webhook>],
    settled: &[SettledScope],
    tenant: &str,
    now_unix: u64,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for s in settled {
        let watching: Vec<&Arc<Webhook>> = webhooks
            .iter()
            .filter(|w| w.watches(s.scope.kind()))
            .collect();
        if watching.is_empty() {
            continue;
        }
        for kind in LimitKind::ALL {
            let Some(limit) = s.limits.limit(kind).filter(|l| *l > 0) else {
                continue;
            };
            if !s.scope.counts(kind) {
                continue;
            }
            let after = s.spent.of(kind);
            let before = after.saturating_sub(s.added.amount(kind));
            for webhook in &watching {
                for &threshold in &webhook.thresholds {
                    let mark = (threshold * limit as f64).ceil() as u64;
                    if before < mark && after >= mark {
                        out.push(alert(
                            webhook, s, tenant, kind, limit, after, threshold, now_unix,
                        ));
                    }
                }
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn alert(
    webhook: &Arc<Webhook>,
    s: &SettledScope,
    tenant: &str,
    kind: LimitKind,
    limit: u64,
    spent: u64,
    threshold: f64,
    now_unix: u64,
) -> Alert {
    let window = kind.window();
    let amount = |v: u64| -> Value {
        if kind.is_usd() {
            serde_json::Number::from_f64(v as f64 / MICRO_USD_PER_USD as f64)
                .map_or(Value::Null, Value::Number)
        } else {
            Value::from(v)
        }
    };
    let tenant = match &s.scope {
        ScopeKey::Tenant(t) | ScopeKey::Conversation { tenant: t, .. } => t.clone(),
        ScopeKey::User(_) | ScopeKey::Key(_) => tenant.to_string(),
    };
    let claim = format!(
        "{}|{}|{:?}|{}|{}",
        webhook.id,
        s.scope,
        kind,
        window_id(window, now_unix),
        (threshold * 1000.0).round() as u64
    );
    Alert {
        webhook: Arc::clone(webhook),
        event: BudgetThreshold {
            event: "budget_threshold",
            scope: s.scope.kind(),
            id: s.scope.id().to_string(),
            tenant,
            window: kind,
            limit: amount(limit),
            spent: amount(spent),
            threshold,
            time: rfc3339(now_unix),
            enforce: !s.limits.shadow,
        },
        claim,
        claim_ttl_secs: seconds_to_reset(window, now_unix).saturating_add(CLAIM_MARGIN_SECS),
    }
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{BudgetScope, WebhookConfig};
    use crate::config::secret::Secret;
    use crate::limits::budget::{BudgetLimits, Charge};
    use crate::limits::types::SpendInWindows;

    const NOW: u64 = 1_796_126_400; // 2026-12-01 12:00 UTC

    fn hook(thresholds: &[f64], scopes: &[BudgetScope]) -> Arc<Webhook> {
        std::env::set_var("TOLLGATE_TEST_ALERT_SECRET", "k");
        let config = WebhookConfig {
            url: Secret::new("http://127.0.0.1:1/hook".into()),
            secret_env: "TOLLGATE_TEST_ALERT_SECRET".into(),
            scopes: scopes.to_vec(),
            thresholds: thresholds.to_vec(),
            retry_for_seconds: 1,
            timeout_ms: 100,
        };
        Arc::new(Webhook::compile(&config).unwrap_or_else(|e| panic!("{e}")))
    }

    fn settled(scope: ScopeKey, usd_before: u64, usd_added: u64) -> SettledScope {
        SettledScope {
            scope,
            limits: BudgetLimits {
                micro_usd_per_day: Some(2_000_000),
                ..Default::default()
            },
            spent: SpendInWindows {
                micro_usd_day: usd_before + usd_added,
                ..Default::default()
            },
            added: Charge {
                tokens: 0,
                micro_usd: usd_added,
            },
        }
    }

    #[test]
    fn each_threshold_crossed_is_one_alert_and_a_settle_below_none() {
        let w = hook(&[1.0, 0.5, 0.8], &[BudgetScope::Conversation]);
        let c = ScopeKey::conversation("acme", "c-1");
        // The alerts of one settle of the conversation, before + added.
        let cross = |before, added| {
            let scope = settled(c.clone(), before, added);
            crossings(std::slice::from_ref(&w), &[scope], "acme", NOW)
        };
        // 0.9 -> 1.7 of 2.0: crosses 0.5 (1.0) and 0.8 (1.6), not 1.0.
        let got = cross(900_000, 800_000);
        let thresholds: Vec<f64> = got.iter().map(|a| a.event.threshold).collect();
        assert_eq!(thresholds, [0.5, 0.8]);
        let e = &got[0].event;
        assert_eq!(
            (e.scope, e.id.as_str(), e.tenant.as_str(), e.window),
            ("conversation", "c-1", "acme", LimitKind::UsdPerDay)
        );
        assert_eq!(
            (e.limit.clone(), e.spent.clone()),
            (Value::from(2.0), Value::from(1.7))
        );
        assert_eq!(e.time, "2026-12-01T12:00:00Z");
        assert!(e.enforce);
        assert_ne!(got[0].claim, got[1].claim);
        // Below every threshold, or already past them: nothing.
        for (before, added) in [(100, 100), (1_700_000, 200_000)] {
            assert!(cross(before, added).is_empty(), "{before} + {added}");
        }
        // Exactly reaching the limit crosses 1.0.
        let got = cross(1_900_000, 100_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.threshold, 1.0);
        // A scope the webhook does not watch: nothing.
        let user = settled(ScopeKey::user("bob"), 0, 2_000_000);
        assert!(crossings(&[w], &[user], "acme", NOW).is_empty());
    }

    #[test]
    fn the_same_crossing_tomorrow_is_another_claim() {
        let w = hook(&[0.5], &[BudgetScope::User]);
        let s = settled(ScopeKey::user("bob"), 0, 1_500_000);
        let mut s2 = s.clone();
        s2.limits = BudgetLimits {
            micro_usd_per_month: Some(2_000_000),
            shadow: true,
            ..Default::default()
        };
        s2.spent.micro_usd_month = 1_500_000;
        let today = crossings(
            std::slice::from_ref(&w),
            std::slice::from_ref(&s2),
            "acme",
            NOW,
        );
        let tomorrow = crossings(&[w], &[s2], "acme", NOW + 86_400);
        assert_eq!(today.len(), 1);
        assert_eq!(today[0].event.tenant, "acme");
        assert!(!today[0].event.enforce);
        // Same month: the same claim, so it is sent once.
        assert_eq!(today[0].claim, tomorrow[0].claim);
        let _ = s;
    }

    #[test]
    fn a_keys_budget_alerts_webhooks_watching_keys_with_its_tenant() {
        let watching = hook(&[0.5], &[BudgetScope::Key]);
        let others = hook(&[0.5], &[BudgetScope::User, BudgetScope::Tenant]);
        let mut s = settled(ScopeKey::key("bob-1"), 0, 1_500_000);
        s.limits = BudgetLimits {
            micro_usd_per_month: Some(2_000_000),
            ..Default::default()
        };
        s.spent.micro_usd_month = 1_500_000;
        let got = crossings(&[watching, others], std::slice::from_ref(&s), "acme", NOW);
        assert_eq!(got.len(), 1, "only the webhook watching keys");
        let e = &got[0].event;
        assert_eq!(
            (e.scope, e.id.as_str(), e.tenant.as_str(), e.window),
            ("key", "bob-1", "acme", LimitKind::UsdPerMonth)
        );
        // Every scope is watched by default, keys included.
        let all: WebhookConfig = serde_saphyr::from_str(
            "{ url: \"http://127.0.0.1:1/h\", secret_env: X, thresholds: [0.5] }",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(all.scopes.contains(&BudgetScope::Key));
    }

    #[test]
    fn a_full_queue_drops_without_waiting() {
        let alerts = Alerts::with_capacity(1);
        let w = hook(&[0.5, 1.0], &[BudgetScope::Tenant]);
        let s = SettledScope {
            scope: ScopeKey::tenant("acme"),
            limits: BudgetLimits {
                tokens_per_day: Some(10),
                ..Default::default()
            },
            spent: SpendInWindows {
                tokens_day: 10,
                ..Default::default()
            },
            added: Charge::tokens(10),
        };
        alerts.observe(&[w], &[s], "acme", NOW);
        let mut inbox = alerts.take_inbox().unwrap_or_else(|| panic!("no inbox"));
        assert!(inbox.try_recv().is_ok());
        assert!(inbox.try_recv().is_err(), "the second was dropped");
        assert!(alerts.take_inbox().is_none());
    }
}
