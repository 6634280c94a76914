//! Webhook deliveries: each event POSTed as JSON to its subscription's URL
//! with `X-Twinflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" under the subscription's secret>` (the receiver recomputes it
//! and rejects old timestamps), `X-Twinflow-Event` (its kind) and
//! `X-Twinflow-Delivery` (`<subscription>:<epoch>:<kind>`, the same on every
//! try, for deduplication). A delivery that fails (no answer within the
//! timeout, or not 2xx) is tried again after `webhook_backoff`, doubling, up
//! to `webhook_attempts` tries; then it is logged and counted as dropped.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use twinflow_schemas::api::SubscriptionEvent;
use twinflow_schemas::config::SubscriptionsConfig;

use super::Webhook;
use crate::Failure;
use crate::failure::Context;

/// One event on its way to one URL.
#[derive(Debug)]
struct Delivery {
    due: Instant,
    attempt: u32,
    url: String,
    secret: String,
    body: Arc<String>,
    kind: &'static str,
    id: String,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Delivery {}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delivery {
    /// The soonest due first out of the (max-)heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.due.cmp(&self.due)
    }
}

/// The queue of deliveries and its thread.
#[derive(Debug)]
pub(super) struct Deliveries {
    queue: crossbeam_channel::Sender<Delivery>,
}

impl Deliveries {
    pub(super) fn start(config: &SubscriptionsConfig) -> Result<Self, Failure> {
        let (queue, incoming) = crossbeam_channel::unbounded();
        let (attempts, backoff, timeout) =
            (config.webhook_attempts.max(1), config.webhook_backoff, config.webhook_timeout);
        // The blocking client runs a runtime of its own: built (and dropped) on this
        // thread, never inside a caller's async context.
        std::thread::Builder::new()
            .name("twinflow-webhooks".into())
            .spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build();
                match client {
                    Ok(client) => deliver(&client, &incoming, attempts, backoff),
                    Err(e) => {
                        tracing::error!(error = %e, "the webhooks' HTTP client could not be built; no webhook is called");
                        for delivery in incoming.iter() {
                            tracing::warn!(url = %delivery.url, delivery = %delivery.id, "webhook delivery dropped");
                        }
                    }
                }
            })
            .context("cannot start the webhooks' thread")?;
        Ok(Self { queue })
    }

    /// Queues `event` for `webhook`.
    pub(super) fn send(&self, webhook: &Webhook, event: &SubscriptionEvent) {
        let body = match serde_json::to_string(event) {
            Ok(body) => Arc::new(body),
            Err(e) => {
                tracing::error!(error = %e, "a subscription event could not be encoded for its webhook");
                return;
            }
        };
        let kind = event.kind.as_str();
        let _ = self.queue.send(Delivery {
            due: Instant::now(),
            attempt: 1,
            url: webhook.url.clone(),
            secret: webhook.secret.clone(),
            body,
            kind,
            id: format!("{}:{}:{kind}", event.subscription, event.epoch),
        });
    }
}

/// `t=<seconds>,v1=<hex>` for `body` signed with `secret` at `seconds`.
pub fn signature(secret: &str, seconds: u64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{seconds}.").as_bytes());
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={seconds},v1={hex}")
}

fn deliver(
    client: &reqwest::blocking::Client,
    incoming: &crossbeam_channel::Receiver<Delivery>,
    attempts: u32,
    backoff: Duration,
) {
    let mut waiting: BinaryHeap<Delivery> = BinaryHeap::new();
    loop {
        let wait = waiting.peek().map(|d| d.due.saturating_duration_since(Instant::now()));
        let received = match wait {
            Some(wait) => incoming.recv_timeout(wait),
            None => incoming.recv().map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(delivery) => waiting.push(delivery),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) if waiting.is_empty() => return,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(wait.unwrap_or_default());
            }
        }
        while waiting.peek().is_some_and(|d| d.due <= Instant::now()) {
            let Some(mut delivery) = waiting.pop() else { break };
            match post(client, &delivery) {
                Ok(()) => metrics::counter!("twinflow_webhook_deliveries_total", "result" => "delivered").increment(1),
                Err(reason) if delivery.attempt < attempts => {
                    let delay = backoff * 2u32.saturating_pow(delivery.attempt - 1);
                    tracing::debug!(url = %delivery.url, attempt = delivery.attempt, %reason, ?delay, "webhook delivery failed; retrying");
                    metrics::counter!("twinflow_webhook_deliveries_total", "result" => "retried").increment(1);
                    delivery.attempt += 1;
                    delivery.due = Instant::now() + delay;
                    waiting.push(delivery);
                }
                Err(reason) => {
                    tracing::warn!(url = %delivery.url, delivery = %delivery.id, attempts, %reason, "webhook delivery given up");
                    metrics::counter!("twinflow_webhook_deliveries_total", "result" => "dropped").increment(1);
                }
            }
        }
    }
}

fn post(client: &reqwest::blocking::Client, delivery: &Delivery) -> Result<(), String> {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let response = client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("x-twinflow-signature", signature(&delivery.secret, seconds, &delivery.body))
        .header("x-twinflow-event", delivery.kind)
        .header("x-twinflow-delivery", &delivery.id)
        .body(delivery.body.as_str().to_owned())
        .send()
        .map_err(|e| e.to_string())?;
    if response.status().is_success() { Ok(()) } else { Err(format!("answered {}", response.status())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signed = signature("Jefe", 0, "what do ya want for nothing?");
        // The data signed is "0." followed by the body, so the digest is not the RFC's.
        assert!(signed.starts_with("t=0,v1="));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let rfc: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(rfc, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_ne!(&signed[7..], rfc);
        assert_eq!(signed.len(), "t=0,v1=".len() + 64);
    }
}
