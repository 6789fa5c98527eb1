//! Alert delivery to webhooks, without ever blocking the controller.
//!
//! [`AlertSender::send`] is a non-blocking `try_send` into a bounded queue; when the queue is
//! full the alert is dropped, counted and logged. A dispatcher task records each alert in the
//! store ([`ControlStore::record_alert`], on its own connection) and hands one delivery job per
//! admitting webhook to that webhook's own bounded queue and worker, so a slow or dead webhook
//! only ever delays (or, when its queue fills, drops) its own deliveries. Each worker runs a
//! few deliveries at once; a delivery POSTs the alert as JSON, retries failures with
//! exponential backoff and records every attempt ([`ControlStore::record_delivery`]).
//!
//! [`AlertSender::flush`] waits for everything accepted before it to be delivered or given up,
//! without pausing the dispatcher: deliveries belong to an *epoch*, a flush closes the current
//! one, and an epoch is released only after its own deliveries and every older epoch are.
//!
//! `http://` webhooks share one plain connection pool; `https://` ones one TLS pool per CA file
//! (the built-in roots plus the webhook's `ca_file`). A certificate that does not verify is a
//! failed attempt naming the TLS reason, retried like any other. Webhook URLs can carry
//! secrets (Slack-style tokens in the path), so logs show only their scheme, host and port;
//! the store keeps the configured URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use switchyard_core::audit::{Alert, Detail, Severity};
use switchyard_store::{ControlStore, DeliveryRow, StoreError, StoreUrl};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::backend::{Clients, UpstreamClient};
use crate::http_util::error_chain;

/// Capacity of the alert queue (and of each webhook's queue) used by [`AlertSender::spawn`].
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Deliveries in flight at once per webhook.
const PER_WEBHOOK_CONCURRENCY: usize = 8;

/// How much of a webhook's response body is read (to reuse the connection, and to quote in
/// the error of a failed attempt).
const RESPONSE_BODY_LIMIT: usize = 4096;
const ERROR_SNIPPET_CHARS: usize = 200;

/// Where to send alerts, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// Deliver alerts at least this severe (P0 is the most severe).
    pub min_severity: Severity,
    /// `https://` webhooks: PEM certificates trusted besides the built-in roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl WebhookConfig {
    /// Whether an alert of `severity` goes to this webhook.
    pub fn admits(&self, severity: Severity) -> bool {
        severity <= self.min_severity
    }
}

/// How hard to try one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1 is made).
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Limit on one attempt (connect, request and response).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failed`-th failed attempt (1-based).
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[derive(Debug)]
enum Msg {
    Alert(Alert),
    Flush(oneshot::Sender<()>),
}

/// Handle to the alert delivery task. Cloning shares the queue and the counters.
#[derive(Debug, Clone)]
pub struct AlertSender {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
    dropped_deliveries: Arc<AtomicU64>,
}

impl AlertSender {
    /// Starts the delivery task (must be called inside a Tokio runtime). The task opens its own
    /// [`ControlStore`] connection to `store`.
    pub fn spawn(
        webhooks: Vec<WebhookConfig>,
        store: impl Into<StoreUrl>,
        retry: RetryPolicy,
    ) -> Self {
        Self::with_capacity(webhooks, store, retry, DEFAULT_QUEUE_CAPACITY)
    }

    /// [`AlertSender::spawn`] with a given capacity for the alert queue and for each webhook's
    /// queue of deliveries.
    pub fn with_capacity(
        webhooks: Vec<WebhookConfig>,
        store: impl Into<StoreUrl>,
        retry: RetryPolicy,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let dropped_deliveries = Arc::new(AtomicU64::new(0));
        let clients = Clients::new();
        let shared = Arc::new(Shared {
            store: Arc::new(Mutex::new(None)),
            store_url: store.into(),
            retry,
        });
        let hooks = webhooks
            .into_iter()
            .map(|config| {
                if let Err(e) = check_url(&config.url) {
                    tracing::warn!(webhook = %redact(&config.url), "alert webhook will fail: {e}");
                }
                let client = clients
                    .for_url(&config.url, config.ca_file.as_deref())
                    .map_err(|e| format!("TLS set-up: {e}"));
                if let Err(e) = &client {
                    tracing::warn!(webhook = %redact(&config.url), "alert webhook will fail: {e}");
                }
                let (tx, rx) = mpsc::channel(capacity);
                tokio::spawn(webhook_worker(
                    config.url.clone(),
                    client,
                    rx,
                    shared.clone(),
                ));
                Hook { config, tx }
            })
            .collect();
        tokio::spawn(dispatch(rx, hooks, shared, dropped_deliveries.clone()));
        AlertSender {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            dropped_deliveries,
        }
    }

    /// Queues an alert without waiting; when the queue is full the alert is dropped, counted
    /// and logged.
    pub fn send(&self, alert: Alert) {
        let (reason, msg) = match self.tx.try_send(Msg::Alert(alert)) {
            Ok(()) => return,
            Err(TrySendError::Full(msg)) => ("alert queue full", msg),
            Err(TrySendError::Closed(msg)) => ("alert task stopped", msg),
        };
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged at 1, 2, 4, 8, … drops so that a storm does not flood the log.
        if let (true, Msg::Alert(alert)) = (n.is_power_of_two(), msg) {
            tracing::warn!(
                rollout = %alert.rollout,
                kind = %alert.kind,
                severity = alert.severity.as_str(),
                dropped_total = n,
                "{reason}: alert dropped"
            );
        }
    }

    /// Resolves when every alert accepted so far has been delivered or given up on.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_err() {
            return;
        }
        // An error means the dispatcher is gone, and with it everything it held.
        let _ = wait.await;
    }

    /// Alerts dropped because the alert queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Deliveries (one alert to one webhook) dropped because that webhook's queue was full.
    pub fn dropped_deliveries(&self) -> u64 {
        self.dropped_deliveries.load(Ordering::Relaxed)
    }
}

/// What the dispatcher and the delivery tasks share.
struct Shared {
    /// Opened on first use, on a blocking thread; reopened after a failure to open.
    store: Arc<Mutex<Option<ControlStore>>>,
    store_url: StoreUrl,
    retry: RetryPolicy,
}

impl Shared {
    /// Runs `f` on the store on a blocking thread; failures are logged and give `None`.
    async fn with_store<T, F>(&self, what: &'static str, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut ControlStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let url = self.store_url.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = store.lock();
            let store = match guard.as_mut() {
                Some(store) => store,
                None => guard.insert(ControlStore::open(url)?),
            };
            f(store)
        })
        .await;
        match result {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::warn!("cannot {what}: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("cannot {what}: {e}");
                None
            }
        }
    }
}

struct Hook {
    config: WebhookConfig,
    tx: mpsc::Sender<Job>,
}

/// One alert for one webhook.
struct Job {
    /// `None` when the alert could not be recorded (then neither are its attempts).
    alert_seq: Option<u64>,
    body: Bytes,
    rollout: String,
    kind: String,
    _epoch: Arc<Epoch>,
}

/// Deliveries accepted between two flushes. Dropped once its deliveries are done and the
/// previous epoch (which holds it through `next`) has been dropped; dropping it wakes the
/// flushes waiting on it.
#[derive(Default)]
struct Epoch {
    next: Mutex<Option<Arc<Epoch>>>,
    waiters: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Drop for Epoch {
    fn drop(&mut self) {
        for waiter in self.waiters.get_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<Msg>,
    hooks: Vec<Hook>,
    shared: Arc<Shared>,
    dropped_deliveries: Arc<AtomicU64>,
) {
    let mut epoch = Arc::new(Epoch::default());
    let mut jobs_in_epoch = 0usize;
    // The most recently closed epoch, while it is still pending.
    let mut closed: Weak<Epoch> = Weak::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Alert(alert) => {
                let record = alert.clone();
                let alert_seq = shared
                    .with_store("record alert", move |s| s.record_alert(&record))
                    .await;
                let body = payload(&alert, alert_seq);
                for hook in hooks.iter().filter(|h| h.config.admits(alert.severity)) {
                    let job = Job {
                        alert_seq,
                        body: body.clone(),
                        rollout: alert.rollout.clone(),
                        kind: alert.kind.clone(),
                        _epoch: epoch.clone(),
                    };
                    jobs_in_epoch += 1;
                    if let Err(e) = hook.tx.try_send(job) {
                        let n = dropped_deliveries.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            let reason = match e {
                                TrySendError::Full(_) => "webhook queue full",
                                TrySendError::Closed(_) => "webhook worker stopped",
                            };
                            tracing::warn!(
                                webhook = %redact(&hook.config.url),
                                rollout = %alert.rollout,
                                kind = %alert.kind,
                                dropped_total = n,
                                "{reason}: alert delivery dropped"
                            );
                        }
                    }
                }
            }
            Msg::Flush(done) => {
                if jobs_in_epoch == 0 {
                    // Nothing new since the last flush: wait for what that one waits for.
                    match closed.upgrade() {
                        Some(pending) => pending.waiters.lock().push(done),
                        None => {
                            let _ = done.send(());
                        }
                    }
                    continue;
                }
                let next = Arc::new(Epoch::default());
                let old = std::mem::replace(&mut epoch, next.clone());
                *old.next.lock() = Some(next);
                old.waiters.lock().push(done);
                closed = Arc::downgrade(&old);
                jobs_in_epoch = 0;
            }
        }
    }
}

async fn webhook_worker(
    url: String,
    client: Result<UpstreamClient, String>,
    mut rx: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
) {
    let url: Arc<str> = Arc::from(url);
    let client = Arc::new(client);
    let permits = Arc::new(Semaphore::new(PER_WEBHOOK_CONCURRENCY));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        let url = url.clone();
        let client = client.clone();
        tokio::spawn(async move {
            deliver(&shared, &client, &url, &job).await;
            drop(permit);
        });
    }
}

/// How one attempt went.
enum Attempt {
    Delivered(u16),
    /// The webhook answered, but not with 2xx.
    Refused(u16, String),
    /// No answer: connection failure or timeout.
    Failed(String),
    /// The URL cannot work; retrying will not help.
    Invalid(String),
}

async fn deliver(shared: &Shared, client: &Result<UpstreamClient, String>, url: &str, job: &Job) {
    let retry = shared.retry;
    let attempts = retry.attempts.max(1);
    for attempt in 1..=attempts {
        let ts_ms = now_ms();
        let outcome = match client {
            Ok(client) => attempt_once(client, url, job.body.clone(), retry.timeout).await,
            Err(e) => Attempt::Invalid(e.clone()),
        };
        let (status, error, delivered, retryable) = match &outcome {
            Attempt::Delivered(s) => (Some(*s), None, true, false),
            Attempt::Refused(s, e) => (Some(*s), Some(e.clone()), false, true),
            Attempt::Failed(e) => (None, Some(e.clone()), false, true),
            Attempt::Invalid(e) => (None, Some(e.clone()), false, false),
        };
        if let Some(alert_seq) = job.alert_seq {
            let row = DeliveryRow {
                alert_seq,
                url: url.to_string(),
                attempt,
                ts_ms,
                status,
                error: error.clone(),
                delivered,
            };
            shared
                .with_store("record alert delivery", move |s| s.record_delivery(&row))
                .await;
        }
        if delivered {
            tracing::debug!(webhook = %redact(url), rollout = %job.rollout, kind = %job.kind, attempt, "alert delivered");
            return;
        }
        let error = error.unwrap_or_default();
        if !retryable || attempt == attempts {
            tracing::warn!(
                webhook = %redact(url),
                rollout = %job.rollout,
                kind = %job.kind,
                attempts = attempt,
                "alert not delivered, giving up: {error}"
            );
            return;
        }
        tracing::debug!(webhook = %redact(url), attempt, "alert delivery failed, retrying: {error}");
        tokio::time::sleep(retry.backoff(attempt)).await;
    }
}

fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid webhook URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        Some("http" | "https") => Err("invalid webhook URL: no host".into()),
        Some(other) => Err(format!(
            "unsupported webhook scheme {other}: only http:// and https:// webhooks are supported"
        )),
        None => Err("invalid webhook URL: no http:// or https:// scheme".into()),
    }
}

async fn attempt_once(
    client: &UpstreamClient,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Attempt {
    let uri = match check_url(url) {
        Ok(uri) => uri,
        Err(e) => return Attempt::Invalid(e),
    };
    let request = match Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "switchyard")
        .body(Full::new(body))
    {
        Ok(r) => r,
        Err(e) => return Attempt::Invalid(format!("cannot build request: {e}")),
    };
    let call = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        // Read (a bounded part of) the body so the connection can be reused.
        let body = Limited::new(response.into_body(), RESPONSE_BODY_LIMIT)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Attempt::Failed(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Attempt::Failed(e),
        Ok(Ok((status, _))) if status.is_success() => Attempt::Delivered(status.as_u16()),
        Ok(Ok((status, body))) => {
            let snippet: String = String::from_utf8_lossy(&body)
                .chars()
                .take(ERROR_SNIPPET_CHARS)
                .collect();
            let snippet = snippet.trim();
            let error = if snippet.is_empty() {
                format!("HTTP {}", status.as_u16())
            } else {
                format!("HTTP {}: {snippet}", status.as_u16())
            };
            Attempt::Refused(status.as_u16(), error)
        }
    }
}

/// The webhook body: `{"rollout","severity","kind","title","ts_ms","details":{…},"alert_id"}`.
fn payload(alert: &Alert, alert_id: Option<u64>) -> Bytes {
    let details: Map<String, Value> = alert
        .details
        .iter()
        .map(|(name, value)| (name.clone(), detail_value(value)))
        .collect();
    let body = json!({
        "rollout": alert.rollout,
        "severity": alert.severity.as_str(),
        "kind": alert.kind,
        "title": alert.title,
        "ts_ms": alert.ts_ms,
        "details": details,
        "alert_id": alert_id,
    });
    Bytes::from(body.to_string())
}

fn detail_value(detail: &Detail) -> Value {
    match detail {
        Detail::Bool(b) => Value::Bool(*b),
        Detail::Num(x) => serde_json::Number::from_f64(*x)
            .map(Value::Number)
            // JSON has no NaN or infinity.
            .unwrap_or_else(|| Value::String(x.to_string())),
        Detail::Text(s) => Value::String(s.clone()),
    }
}

/// `scheme://host:port` of a URL, for logs: paths and user info may hold secrets.
fn redact(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => {
            let host = uri.host().unwrap_or("?");
            let scheme = uri.scheme_str().unwrap_or("?");
            match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            }
        }
        Err(_) => "<invalid url>".into(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u128> = (1..=7).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn min_severity_admits_more_severe_alerts() {
        let hook = WebhookConfig {
            url: "http://h/".into(),
            min_severity: Severity::P1,
            ca_file: None,
        };
        assert!(hook.admits(Severity::P0));
        assert!(hook.admits(Severity::P1));
        assert!(!hook.admits(Severity::P2));
        assert!(!hook.admits(Severity::P3));
    }

    #[test]
    fn payload_shape() {
        let alert = Alert {
            rollout: "fraud".into(),
            severity: Severity::P0,
            kind: "rollback".into(),
            title: "rolled back".into(),
            ts_ms: 42,
            details: vec![
                ("rate".into(), Detail::Num(0.5)),
                ("nan".into(), Detail::Num(f64::NAN)),
                ("ok".into(), Detail::Bool(false)),
                ("v".into(), Detail::from("v2")),
            ],
        };
        let v: Value = serde_json::from_slice(&payload(&alert, Some(7))).unwrap();
        assert_eq!(
            v,
            json!({
                "rollout": "fraud", "severity": "P0", "kind": "rollback", "title": "rolled back",
                "ts_ms": 42, "details": {"rate": 0.5, "nan": "NaN", "ok": false, "v": "v2"},
                "alert_id": 7
            })
        );
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://hooks.slack.com/services/T/B/secret").is_ok());
        assert!(check_url("ftp://hooks.example/x")
            .unwrap_err()
            .contains("only http:// and https://"));
        assert!(check_url("not a url").is_err());
        assert_eq!(
            redact("http://user:pw@example.com:8080/services/T/B/secret?token=x"),
            "http://example.com:8080"
        );
        assert_eq!(
            redact("https://hooks.slack.com/services/secret"),
            "https://hooks.slack.com"
        );
    }
}
