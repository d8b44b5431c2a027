//! The sender: takes alerts off the queue, claims each crossing once
//! (Redis across instances, else this process), and POSTs it signed, with
//! retries and backoff, several at a time, so a receiver that is down or
//! slow delays only its own alerts — never a request.

use super::{Alert, Alerts};
use crate::limits::store::Store;
use crate::observe::metrics;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Deliveries in flight at once (each may be waiting out a backoff).
const IN_FLIGHT: usize = 64;
/// The first retry comes this soon; each next one twice as late, up to
/// `MAX_BACKOFF`, so a receiver that recovers gets its alerts within
/// that much of recovering.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Local claims kept before expired ones are swept.
const SWEEP_ABOVE: usize = 4096;

pub struct AlertSender {
    alerts: Arc<Alerts>,
    store: Arc<Store>,
    /// Claims made in this process: every claim in local mode, and in
    /// Redis mode the fallback while Redis is unreachable. Keyed by a
    /// digest of the claim; the value is its expiry (unix seconds).
    local_claims: Mutex<HashMap<[u8; 16], u64>>,
    client: reqwest::Client,
}

impl AlertSender {
    pub fn new(alerts: Arc<Alerts>, store: Arc<Store>) -> AlertSender {
        AlertSender {
            alerts,
            store,
            local_claims: Mutex::new(HashMap::new()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    /// True when this crossing is ours to send (no instance sent it yet).
    async fn claim(&self, alert: &Alert) -> bool {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(alert.claim.as_bytes());
        let token = hex::encode(&digest[..16]);
        match self
            .store
            .claim_once(&alert.event.tenant, &token, alert.claim_ttl_secs)
            .await
        {
            Ok(Some(first)) => first,
            Ok(None) => self.claim_locally(&digest, alert.claim_ttl_secs),
            Err(e) => {
                tracing::warn!(error = %e, "alert claim: redis unreachable, claimed in this process only");
                self.claim_locally(&digest, alert.claim_ttl_secs)
            }
        }
    }

    fn claim_locally(&self, digest: &[u8], ttl_secs: u64) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let now = crate::limits::window::now_unix();
        let mut claims = self
            .local_claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if claims.len() > SWEEP_ABOVE {
            claims.retain(|_, expires| *expires > now);
        }
        match claims.get(&key) {
            Some(expires) if *expires > now => false,
            _ => {
                claims.insert(key, now.saturating_add(ttl_secs));
                true
            }
        }
    }
}

/// POSTs until a 2xx answer or `retry_for` has passed (then dropped).
async fn deliver(client: reqwest::Client, alert: Alert) {
    let body = match serde_json::to_vec(&alert.event) {
        Ok(body) => body,
        Err(_) => return,
    };
    let signature = alert.webhook.sign(&body);
    let give_up = Instant::now() + alert.webhook.retry_for;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let sent = client
            .post(alert.webhook.url())
            .timeout(alert.webhook.timeout)
            .header("content-type", "application/json")
            .header("x-tollgate-signature", &signature)
            .header("x-tollgate-event", "budget_threshold")
            .body(body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(resp) if resp.status().is_success() => {
                metrics::inc(&metrics::ALERTS, &["sent"]);
                return;
            }
            Ok(resp) => format!("answered {}", resp.status().as_u16()),
            // Without the URL: it may hold the receiver's credential.
            Err(e) => describe(&e),
        };
        if Instant::now() + backoff > give_up {
            metrics::inc(&metrics::ALERTS, &["dropped"]);
            tracing::warn!(webhook = %alert.webhook.id, failure,
                    "budget alert dropped: the webhook did not take it in time");
            return;
        }
        metrics::inc(&metrics::ALERTS, &["retried"]);
        tracing::debug!(webhook = %alert.webhook.id, failure, "budget alert: retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[async_trait]
impl BackgroundService for AlertSender {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut inbox) = self.alerts.take_inbox() else {
            return;
        };
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut deliveries = tokio::task::JoinSet::new();
        loop {
            let alert = tokio::select! {
                alert = inbox.recv() => alert,
                _ = shutdown.changed() => None,
            };
            let Some(alert) = alert else {
                break;
            };
            // Waiting for a slot leaves later alerts in the bounded queue.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            if !self.claim(&alert).await {
                continue;
            }
            let client = self.client.clone();
            deliveries.spawn(async move {
                deliver(client, alert).await;
                drop(slot);
            });
            while deliveries.try_join_next().is_some() {}
        }
    }
}
