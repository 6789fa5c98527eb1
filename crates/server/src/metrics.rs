//! Prometheus metrics, named `switchyard_<name>_<unit>[_total]`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub model: String,
    pub version: String,
    pub role: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub model: String,
    pub version: String,
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub model: String,
    pub version: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Calls to model versions by outcome (serving and shadow).
    pub calls: Family<CallLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Requests refused before routing (the client's fault), by reason.
    pub rejected: Family<ReasonLabels, Counter>,
    /// Shadow calls not made: queue full, breaker open.
    pub shadow_skipped: Family<ShadowLabels, Counter>,
    /// 1 while a shadow's circuit breaker is open.
    pub breaker_open: Family<VersionLabels, Gauge>,
    pub log_queue_depth: Gauge,
    pub log_dropped: Counter,
    pub log_snapshots: Counter,
    pub log_pruned: Counter,
    pub log_written: Counter,
    pub log_batches: Counter,
    pub feedback: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "switchyard_model_calls",
            "Calls to model versions by role and outcome",
            calls.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "switchyard_model_latency_seconds",
            "Model call latency",
            latency.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "switchyard_rejected_requests",
            "Requests refused before routing, by reason",
            rejected.clone(),
        );
        let shadow_skipped = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "switchyard_shadow_skipped",
            "Shadow calls not made (queue full, breaker open)",
            shadow_skipped.clone(),
        );
        let breaker_open = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "switchyard_shadow_breaker_open",
            "1 while the shadow circuit breaker is open",
            breaker_open.clone(),
        );
        let log_queue_depth = Gauge::default();
        registry.register(
            "switchyard_log_queue_depth",
            "Prediction records waiting for the writer",
            log_queue_depth.clone(),
        );
        let log_dropped = Counter::default();
        registry.register(
            "switchyard_log_dropped_records",
            "Prediction records dropped (queue full or write error)",
            log_dropped.clone(),
        );
        let log_written = Counter::default();
        registry.register(
            "switchyard_log_written_records",
            "Prediction records committed to the store",
            log_written.clone(),
        );
        let log_batches = Counter::default();
        registry.register(
            "switchyard_log_batches",
            "Transactions committed by the log writer (written records / batches = mean batch)",
            log_batches.clone(),
        );
        let log_snapshots = Counter::default();
        registry.register(
            "switchyard_log_snapshots",
            "Aggregate snapshots saved (a start-up replays only what came after the newest)",
            log_snapshots.clone(),
        );
        let log_pruned = Counter::default();
        registry.register(
            "switchyard_log_pruned_records",
            "Prediction records deleted by the retention policy",
            log_pruned.clone(),
        );
        let feedback = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "switchyard_feedback_items",
            "Feedback items by result",
            feedback.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            rejected,
            shadow_skipped,
            breaker_open,
            log_queue_depth,
            log_dropped,
            log_written,
            log_batches,
            log_snapshots,
            log_pruned,
            feedback,
        }
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn call(&self, model: &str, version: &str, role: &str, outcome: &str, seconds: f64) {
        self.call_handles(model, version, role, outcome)
            .observe(seconds);
    }

    /// The series of one (model, version, role, outcome), resolved once so that a hot path can
    /// count without building label sets (see `backend::ModelRuntime::served_ok`).
    pub fn call_handles(
        &self,
        model: &str,
        version: &str,
        role: &str,
        outcome: &str,
    ) -> CallHandles {
        CallHandles {
            count: self
                .calls
                .get_or_create(&CallLabels {
                    model: model.into(),
                    version: version.into(),
                    role: role.into(),
                    outcome: outcome.into(),
                })
                .clone(),
            latency: self
                .latency
                .get_or_create(&LatencyLabels {
                    model: model.into(),
                    version: version.into(),
                    role: role.into(),
                })
                .clone(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A call counter and latency histogram of one label set; clones share the series.
#[derive(Debug, Clone)]
pub struct CallHandles {
    count: Counter,
    latency: Histogram,
}

impl CallHandles {
    pub fn observe(&self, seconds: f64) {
        self.count.inc();
        self.latency.observe(seconds);
    }
}
