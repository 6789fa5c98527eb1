//! Mirroring requests to shadow versions without touching the primary's response.
//!
//! The request path only does a non-blocking `try_send` of a [`ShadowJob`] into a bounded
//! queue after the primary has answered; a full queue drops the job and counts it. A
//! dispatcher task runs jobs with bounded concurrency, each with its own timeout, and a
//! per-version circuit breaker stops calling a shadow that keeps failing, probing it again
//! after a cool-down. Shadow failures are logged as records and metrics, never surfaced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchyard_core::config::{ShadowSettings, Task};
use switchyard_core::{Outcome, PairRef, Prediction, PredictionRecord, Role};
use switchyard_store::LogHandle;
use tokio::sync::{mpsc, Semaphore};

use crate::backend::{Backend, Call};
use crate::metrics::{Metrics, ShadowLabels, VersionLabels};
use crate::protocol::JsonBody;
use crate::protocol::Wire;

/// One mirrored call.
#[derive(Debug)]
pub struct ShadowJob {
    pub backend: Arc<Backend>,
    pub request_id: String,
    pub ts_ms: i64,
    pub model: String,
    pub epoch: u64,
    pub version: String,
    pub key_hash: Option<u64>,
    pub wire: Wire,
    /// The client's body, detached from the connection's buffer.
    pub body: Arc<JsonBody>,
    pub task: Task,
    pub classes: Option<Arc<[String]>>,
    pub primary_version: String,
    pub primary_output: Prediction,
    /// The request's segment values (the serving record's).
    pub segments: Vec<(String, String)>,
    /// Whether to write the prediction record (false only when the log is switched off).
    pub record: bool,
}

/// State of one shadow's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe call is in flight.
    HalfOpen,
}

/// Consecutive-failure circuit breaker. Pure: time is passed in.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    pub state: BreakerState,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: BreakerState::Closed { failures: 0 },
            threshold: threshold.max(1),
            open_for,
        }
    }

    /// Whether a call may be made now; an expired open breaker lets one probe through.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    pub fn on_result(&mut self, ok: bool, now: Instant) {
        self.state = match (self.state, ok) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => BreakerState::Open {
                until: now + self.open_for,
            },
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, BreakerState::Closed { .. })
    }
}

/// Handle used by the request path.
#[derive(Debug, Clone)]
pub struct ShadowDispatcher {
    tx: mpsc::Sender<ShadowJob>,
    metrics: Arc<Metrics>,
}

impl ShadowDispatcher {
    /// Starts the dispatcher task.
    pub fn spawn(
        settings: ShadowSettings,
        log: LogHandle,
        metrics: Arc<Metrics>,
    ) -> ShadowDispatcher {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        tokio::spawn(dispatch(rx, settings, log, metrics.clone()));
        ShadowDispatcher { tx, metrics }
    }

    /// Enqueues a job without waiting; a full queue drops it and counts the drop.
    pub fn submit(&self, job: ShadowJob) {
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            self.tx.try_send(job)
        {
            self.metrics
                .shadow_skipped
                .get_or_create(&ShadowLabels {
                    model: job.model,
                    version: job.version,
                    reason: "queue_full".into(),
                })
                .inc();
        }
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<ShadowJob>,
    settings: ShadowSettings,
    log: LogHandle,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let breakers: Arc<Mutex<HashMap<(String, String), Breaker>>> = Arc::default();
    let timeout = Duration::from_millis(settings.timeout_ms);
    while let Some(job) = rx.recv().await {
        // Waiting here lets the queue fill, which drops new jobs instead of piling up calls.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let key = (job.model.clone(), job.version.clone());
        let allowed = breakers
            .lock()
            .entry(key.clone())
            .or_insert_with(|| {
                Breaker::new(
                    settings.breaker_failures,
                    Duration::from_millis(settings.breaker_open_ms),
                )
            })
            .allow(Instant::now());
        if !allowed {
            metrics
                .shadow_skipped
                .get_or_create(&ShadowLabels {
                    model: job.model,
                    version: job.version,
                    reason: "breaker_open".into(),
                })
                .inc();
            continue;
        }
        let (log, metrics, breakers) = (log.clone(), metrics.clone(), breakers.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let ok = run(job, timeout, &log, &metrics).await;
            let mut guard = breakers.lock();
            if let Some(b) = guard.get_mut(&key) {
                let was_open = b.is_open();
                b.on_result(ok, Instant::now());
                if b.is_open() != was_open || !ok {
                    let labels = VersionLabels {
                        model: key.0.clone(),
                        version: key.1.clone(),
                    };
                    metrics
                        .breaker_open
                        .get_or_create(&labels)
                        .set(i64::from(b.is_open()));
                }
            }
        });
    }
}

/// Makes one shadow call and logs it; returns whether the shadow answered well.
async fn run(job: ShadowJob, timeout: Duration, log: &LogHandle, metrics: &Metrics) -> bool {
    let call = Call {
        wire: job.wire,
        model: &job.model,
        version: &job.version,
        body: &job.body,
        task: job.task,
        classes: job.classes.as_deref(),
    };
    let started = Instant::now();
    let result = job
        .backend
        .call(&call, timeout.min(job.backend.timeout()))
        .await;
    let latency = started.elapsed();
    let (outcome, status, output) = match result {
        Ok(reply) => (Outcome::Ok, 200, reply.prediction),
        Err(e) => {
            tracing::debug!(model = %job.model, version = %job.version, error = %e, "shadow call failed");
            (e.outcome(), e.client_status().as_u16(), Prediction::None)
        }
    };
    metrics.call(
        &job.model,
        &job.version,
        Role::Shadow.as_str(),
        outcome.as_str(),
        latency.as_secs_f64(),
    );
    if !job.record {
        return outcome.is_ok();
    }
    log.record(PredictionRecord {
        request_id: job.request_id,
        ts_ms: job.ts_ms,
        model: job.model,
        epoch: job.epoch,
        variant: "shadow".into(),
        role: Role::Shadow,
        version: job.version,
        key_hash: job.key_hash,
        outcome,
        status,
        latency_us: latency.as_micros() as u64,
        output,
        input: None,
        pair: Some(PairRef {
            version: job.primary_version,
            output: job.primary_output,
        }),
        segments: job.segments,
    });
    outcome.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_probes_after_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.allow(t0));
            b.on_result(false, t0);
        }
        assert!(!b.is_open());
        b.on_result(false, t0);
        assert!(b.is_open());
        assert!(!b.allow(t0 + Duration::from_secs(9)));
        // Cool-down over: exactly one probe.
        assert!(b.allow(t0 + Duration::from_secs(10)));
        assert!(!b.allow(t0 + Duration::from_secs(10)));
        // A failed probe re-opens; a good one closes.
        b.on_result(false, t0 + Duration::from_secs(11));
        assert!(!b.allow(t0 + Duration::from_secs(12)));
        assert!(b.allow(t0 + Duration::from_secs(21)));
        b.on_result(true, t0 + Duration::from_secs(21));
        assert_eq!(b.state, BreakerState::Closed { failures: 0 });
    }
}
