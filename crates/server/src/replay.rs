//! Offline replay: a candidate judged on recorded requests before it sees a live one.
//!
//! The requests come from a CSV file (numeric feature columns, an optional label column), a
//! JSONL file (one OIP v2 or KServe v1 request body per line, with an optional label), or the
//! prediction log (a model's served requests whose bodies `log.capture_inputs` kept, with their
//! feedback labels). Each is sent to the primary and to the candidate, at a bounded rate and
//! concurrency, and the answers become the records the live path writes: a serving record of
//! the primary, a shadow record of the candidate paired with it, the same comparison, segments
//! and outcome accounting. They are folded with their labels into fresh [`Aggregates`], and
//! the report is the live shadow's own, [`shadow_report`] over those aggregates: there is no
//! second implementation of the statistics.
//!
//! A replay writes nothing: no log, no metrics, no routing change. The whole source is read
//! and checked before the first call, so a bad line fails the replay before any backend sees
//! a request.
//!
//! Differences from a live shadow, all on purpose: every request is replayed (the spec's
//! `sample` is not applied), there is no circuit breaker (every candidate call is made and
//! counted), and the spec's `min_labelled` and `min_duration_ms` do not hold the report back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};
use switchyard_core::config::{GatewayConfig, Task};
use switchyard_core::rollout::{shadow_report, RolloutKind, RolloutSpec, ShadowSpec};
use switchyard_core::rollout_config::RawRollout;
use switchyard_core::{Aggregates, Outcome, PairRef, Prediction, PredictionRecord, Role, Truth};
use switchyard_store::{captured_requests_at, CapturedQuery, StoreError, StoreUrl};

use crate::api::{Disagreement, ReplayReport, ShadowAnalysis, VersionStats};
use crate::backend::{Call, Clients, ModelRuntime};
use crate::protocol::{self, JsonBody, Wire};

/// Requests in flight at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Disagreements a replay report shows (the first ones, in the source's order).
const DISAGREEMENTS_SHOWN: usize = 20;
/// The label column of a CSV unless told otherwise.
pub const DEFAULT_LABEL_COLUMN: &str = "label";

/// Why a replay could not run. Nothing was called when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A line of a source file that cannot be replayed (counted from 1, the CSV header is 1).
    #[error("{path} line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{0} holds no requests to replay")]
    NoRows(String),
    #[error("no model named '{model}' (known: {known})")]
    UnknownModel { model: String, known: String },
    /// The shadow spec (or the flags standing for one), every problem.
    #[error("invalid shadow spec: {}", .0.join("; "))]
    Spec(Vec<String>),
    #[error("{0}")]
    Options(String),
    #[error("model {model} version {version}: {reason}")]
    Backend {
        model: String,
        version: String,
        reason: String,
    },
    #[error("reading the prediction log: {0}")]
    Store(#[from] StoreError),
}

/// Where the requests come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A header row, numeric feature columns in the model's order, and optionally a label
    /// column (`label_column`, or `label` when present) and a `request_id` column.
    Csv {
        path: PathBuf,
        label_column: Option<String>,
    },
    /// One request per line (see [`parse_jsonl_line`]).
    Jsonl { path: PathBuf },
    /// The model's served requests whose bodies were captured, in `[since_ms, until_ms)`.
    Log {
        store: StoreUrl,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    },
}

/// How fast a replay goes.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Requests started per second (`None`: as fast as `concurrency` allows).
    pub rate: Option<f64>,
    /// Requests in flight at once (each calls both versions).
    pub concurrency: usize,
    /// The gateway's `shadow.timeout_ms`: a candidate call takes at most this (and its
    /// backend's own timeout), as a live shadow call does.
    pub shadow_timeout: Option<Duration>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rate: None,
            concurrency: DEFAULT_CONCURRENCY,
            shadow_timeout: None,
        }
    }
}

impl ReplayOptions {
    fn check(&self) -> Result<(), ReplayError> {
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ReplayError::Options(format!(
                    "rate must be a positive number of requests per second, got {rate}"
                )));
            }
        }
        if self.concurrency == 0 {
            return Err(ReplayError::Options(
                "concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One request to replay.
#[derive(Debug)]
pub struct ReplayRow {
    pub request_id: String,
    pub wire: Wire,
    pub body: JsonBody,
    /// The model's segment values for this request.
    pub segments: Vec<(String, String)>,
    pub truth: Option<Truth>,
}

/// A source read and checked.
#[derive(Debug)]
pub struct Loaded {
    pub rows: Vec<ReplayRow>,
    /// Log rows left out (cut or not a request body).
    pub skipped: u64,
    /// What the source was, for the report.
    pub description: String,
}

/// Every configured model's backends, built as `serve` builds them (in-process ONNX models
/// loaded now, HTTP backends on one pooled client).
pub fn runtimes(
    config: &GatewayConfig,
) -> Result<switchyard_core::NameMap<ModelRuntime>, ReplayError> {
    let clients = Clients::new();
    let mut models = switchyard_core::NameMap::default();
    for (name, model) in &config.models {
        let runtime = ModelRuntime::build(name, model, &clients).map_err(|(version, e)| {
            ReplayError::Backend {
                model: name.clone(),
                version,
                reason: e.to_string(),
            }
        })?;
        models.insert(name.clone(), runtime);
    }
    Ok(models)
}

/// The shadow spec of a replay: `text` (a shadow rollout spec, YAML or JSON) when given, else
/// a shadow of `candidate` behind `primary` on `model` with the default rules. Checked
/// against the model's versions and segment fields as `apply` checks it; `model`, `primary`
/// and `candidate`, when given beside a spec, must agree with it.
pub fn shadow_spec(
    models: &switchyard_core::NameMap<ModelRuntime>,
    text: Option<&str>,
    model: Option<&str>,
    primary: Option<&str>,
    candidate: Option<&str>,
) -> Result<(String, ShadowSpec), ReplayError> {
    let text = match text {
        Some(t) => t.to_string(),
        None => {
            let mut missing = Vec::new();
            for (name, value) in [
                ("model", model),
                ("primary", primary),
                ("candidate", candidate),
            ] {
                if value.is_none() {
                    missing.push(format!("{name}: give it, or a shadow spec"));
                }
            }
            if !missing.is_empty() {
                return Err(ReplayError::Spec(missing));
            }
            json!({
                "name": "replay",
                "kind": "shadow",
                "model": model,
                "primary": primary,
                "candidate": candidate,
            })
            .to_string()
        }
    };
    let (raw, mut problems): (RawRollout, Vec<String>) =
        crate::config_file::from_yaml_listing_unknown(&text)
            .map_err(|e| ReplayError::Spec(vec![e]))?;
    let runtime = models
        .get(&raw.model)
        .ok_or_else(|| unknown_model(models, &raw.model))?;
    let declared: Vec<&str> = runtime.config.versions.keys().map(String::as_str).collect();
    let segments: Vec<&str> = runtime
        .config
        .segments
        .iter()
        .map(|(f, _)| f.as_str())
        .collect();
    let model_name = raw.model.clone();
    let spec = match raw.validate_for(&declared, Some(&segments)) {
        Ok(spec) => Some(spec),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    let shadow = match spec {
        Some(RolloutSpec {
            kind: RolloutKind::Shadow(s),
            ..
        }) => Some(s),
        Some(other) => {
            problems.push(format!(
                "kind: a replay takes a shadow spec, not {}",
                other.kind_name()
            ));
            None
        }
        None => None,
    };
    if let Some(s) = &shadow {
        for (flag, given, written) in [
            ("model", model, model_name.as_str()),
            ("primary", primary, s.primary.as_str()),
            ("candidate", candidate, s.candidate.as_str()),
        ] {
            if let Some(given) = given.filter(|g| *g != written) {
                problems.push(format!(
                    "{flag}: '{given}' given, but the spec says '{written}'"
                ));
            }
        }
    }
    match shadow {
        Some(s) if problems.is_empty() => Ok((model_name, s)),
        _ => Err(ReplayError::Spec(problems)),
    }
}

fn unknown_model(models: &switchyard_core::NameMap<ModelRuntime>, model: &str) -> ReplayError {
    let mut known: Vec<&str> = models.keys().map(String::as_str).collect();
    known.sort_unstable();
    ReplayError::UnknownModel {
        model: model.to_string(),
        known: known.join(", "),
    }
}

/// Reads and checks a whole source (at most `max_rows` requests) before anything is called.
pub fn load(
    source: &Source,
    runtime: &ModelRuntime,
    max_rows: usize,
) -> Result<Loaded, ReplayError> {
    if max_rows == 0 {
        return Err(ReplayError::Options("max_rows must be at least 1".into()));
    }
    let loaded = match source {
        Source::Csv { path, label_column } => {
            load_csv(path, label_column.as_deref(), runtime, max_rows)?
        }
        Source::Jsonl { path } => load_jsonl(path, runtime, max_rows)?,
        Source::Log {
            store,
            since_ms,
            until_ms,
        } => load_log(store, *since_ms, *until_ms, runtime, max_rows)?,
    };
    if loaded.rows.is_empty() {
        return Err(ReplayError::NoRows(loaded.description));
    }
    Ok(loaded)
}

fn read_text(path: &Path) -> Result<String, ReplayError> {
    std::fs::read_to_string(path).map_err(|source| ReplayError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A CSV cell without its surrounding blanks and double quotes.
fn cell(c: &str) -> &str {
    let c = c.trim();
    c.strip_prefix('"')
        .and_then(|c| c.strip_suffix('"'))
        .unwrap_or(c)
}

/// What a CSV label is: a value when the model is declared a regression or runs in-process
/// regressors (whose answers are values whatever `task` says; its first version is asked),
/// else a class.
fn label_task(runtime: &ModelRuntime) -> Task {
    let regressor = runtime
        .config
        .versions
        .keys()
        .next()
        .and_then(|v| runtime.backends.get(v))
        .and_then(|b| b.onnx_model())
        .is_some_and(|m| matches!(m.kind(), crate::onnx::ModelKind::Regressor));
    if regressor {
        Task::Regression
    } else {
        runtime.config.task
    }
}

/// The truth a label cell (or JSON scalar) stands for: a class for a classifier, a finite
/// value for a regressor.
fn truth_of(task: Task, label: &Value) -> Result<Truth, String> {
    match task {
        Task::Classification => protocol::label_of(label)
            .map(|l| Truth::Labels(vec![l]))
            .ok_or_else(|| format!("label must be a scalar, got {label}")),
        Task::Regression => {
            let v = match label {
                Value::String(s) => s.trim().parse::<f64>().ok(),
                other => other.as_f64(),
            };
            v.filter(|v| v.is_finite())
                .map(|v| Truth::Values(vec![v]))
                .ok_or_else(|| {
                    format!("the label of a regression model must be a finite number, got {label}")
                })
        }
    }
}

fn load_csv(
    path: &Path,
    label_column: Option<&str>,
    runtime: &ModelRuntime,
    max_rows: usize,
) -> Result<Loaded, ReplayError> {
    let text = read_text(path)?;
    let shown = path.display().to_string();
    let line_error = |line: usize, reason: String| ReplayError::Line {
        path: shown.clone(),
        line,
        reason,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_at, header)) = lines.next() else {
        return Err(ReplayError::NoRows(shown));
    };
    let columns: Vec<&str> = header.split(',').map(cell).collect();
    let label_at = match label_column {
        Some(name) => Some(columns.iter().position(|c| *c == name).ok_or_else(|| {
            line_error(
                header_at + 1,
                format!("no column named '{name}' (columns: {})", columns.join(", ")),
            )
        })?),
        None => columns.iter().position(|c| *c == DEFAULT_LABEL_COLUMN),
    };
    let id_at = columns.iter().position(|c| *c == "request_id");
    let task = label_task(runtime);
    if columns.len() <= usize::from(label_at.is_some()) + usize::from(id_at.is_some()) {
        return Err(line_error(
            header_at + 1,
            "no feature column (every column but the label and request_id is a feature)".into(),
        ));
    }
    let mut rows = Vec::new();
    for (at, line) in lines.take(max_rows) {
        let n = at + 1;
        let cells: Vec<&str> = line.split(',').map(cell).collect();
        if cells.len() != columns.len() {
            return Err(line_error(
                n,
                format!(
                    "{} cells where the header has {} columns",
                    cells.len(),
                    columns.len()
                ),
            ));
        }
        let mut features = Vec::with_capacity(cells.len());
        for (i, c) in cells.iter().enumerate() {
            if Some(i) == label_at || Some(i) == id_at {
                continue;
            }
            let x = c
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    line_error(n, format!("column '{}': '{c}' is not a number", columns[i]))
                })?;
            features.push(x);
        }
        let truth = match label_at.map(|i| cells[i]).filter(|l| !l.is_empty()) {
            None => None,
            Some(label) => {
                // A numeric class label is read as a number, so `1.0` and `1` are one class.
                let value = label
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map_or_else(|| json!(label), |f| json!(f));
                Some(truth_of(task, &value).map_err(|e| line_error(n, e))?)
            }
        };
        let request_id = id_at
            .map(|i| cells[i].to_string())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("replay-{n}"));
        let body = JsonBody::from_value(protocol::rows_to_request(Wire::V2, &[features]));
        let segments = segments_of(runtime, &HeaderMap::new(), &body);
        rows.push(ReplayRow {
            request_id,
            wire: Wire::V2,
            body,
            segments,
            truth,
        });
    }
    Ok(Loaded {
        rows,
        skipped: 0,
        description: shown,
    })
}

fn segments_of(
    runtime: &ModelRuntime,
    headers: &dyn crate::http_util::Headers,
    body: &JsonBody,
) -> Vec<(String, String)> {
    crate::dataplane::segment_values(&runtime.config.segments, headers, body)
}

/// A request body as the data plane reads it: `inputs` makes it OIP v2 (its tensors checked),
/// `instances` KServe v1; `protocol` (`v2` or `v1`) says so explicitly.
fn request_body(
    object: Map<String, Value>,
    protocol: Option<&str>,
) -> Result<(Wire, JsonBody), String> {
    let wire = match protocol {
        Some("v2") => Wire::V2,
        Some("v1") => Wire::V1,
        Some(other) => return Err(format!("protocol must be v1 or v2, got '{other}'")),
        None if object.contains_key("inputs") => Wire::V2,
        None if object.contains_key("instances") => Wire::V1,
        None => {
            return Err(
                "the request has neither `inputs` (OIP v2) nor `instances` (KServe v1)".into(),
            )
        }
    };
    let bytes = bytes::Bytes::from(Value::Object(object).to_string());
    let body = match wire {
        Wire::V2 => JsonBody::validate_v2(bytes, None),
        Wire::V1 => JsonBody::validate(bytes),
    }
    .map_err(|e| e.to_string())?;
    Ok((wire, body))
}

/// One JSONL line: either a request body itself (`{"inputs": [...]}` or `{"instances":
/// [...]}`) with optional `label` or `value` members beside it (taken out before the body is
/// sent; a v2 body's own `id` is the request id), or a wrapper
/// `{"request": {...}, "label" | "value": ..., "id": "...", "headers": {...}, "protocol":
/// "v1" | "v2"}` whose `headers` feed header-sourced segment fields.
pub fn parse_jsonl_line(
    line: &str,
    runtime: &ModelRuntime,
    default_id: String,
) -> Result<ReplayRow, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("a line must be a JSON object".into());
    };
    let wrapped = object.contains_key("request");
    let (label, value) = (object.remove("label"), object.remove("value"));
    let mut headers = HeaderMap::new();
    let (request, id, protocol) = if wrapped {
        for key in object.keys() {
            if !matches!(key.as_str(), "request" | "id" | "headers" | "protocol") {
                return Err(format!(
                    "unknown field '{key}' (expected request, label, value, id, headers, protocol)"
                ));
            }
        }
        let Some(Value::Object(request)) = object.remove("request") else {
            return Err("request must be a JSON object (a request body)".into());
        };
        let id = match object.remove("id") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(other) => return Err(format!("id must be a non-empty string, got {other}")),
        };
        match object.remove("headers") {
            None => {}
            Some(Value::Object(h)) => {
                for (name, v) in h {
                    let (Ok(name), Some(Ok(v))) = (
                        HeaderName::try_from(name.as_str()),
                        v.as_str().map(HeaderValue::from_str),
                    ) else {
                        return Err(format!(
                            "headers.{name}: not a header name with a string value"
                        ));
                    };
                    headers.insert(name, v);
                }
            }
            Some(other) => {
                return Err(format!("headers must be an object of strings, got {other}"))
            }
        }
        let protocol = match object.remove("protocol") {
            None => None,
            Some(Value::String(p)) => Some(p),
            Some(other) => return Err(format!("protocol must be v1 or v2, got {other}")),
        };
        (request, id, protocol)
    } else {
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        (object, id, None)
    };
    let request_id = id.unwrap_or(default_id);
    // The label as feedback takes it (`label`: a class or classes, `value`: numbers).
    let truth = match (label, value) {
        (None, None) => None,
        (label, value) => {
            let mut item = json!({ "request_id": request_id });
            if let Some(l) = label {
                item["label"] = l;
            }
            if let Some(v) = value {
                item["value"] = v;
            }
            Some(crate::feedback::parse_item(&item)?.truth)
        }
    };
    let (wire, body) = request_body(request, protocol.as_deref())?;
    let segments = segments_of(runtime, &headers, &body);
    Ok(ReplayRow {
        request_id,
        wire,
        body,
        segments,
        truth,
    })
}

fn load_jsonl(path: &Path, runtime: &ModelRuntime, max_rows: usize) -> Result<Loaded, ReplayError> {
    let text = read_text(path)?;
    let shown = path.display().to_string();
    let mut rows = Vec::new();
    for (at, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(max_rows)
    {
        let row =
            parse_jsonl_line(line, runtime, format!("replay-{}", at + 1)).map_err(|reason| {
                ReplayError::Line {
                    path: shown.clone(),
                    line: at + 1,
                    reason,
                }
            })?;
        rows.push(row);
    }
    Ok(Loaded {
        rows,
        skipped: 0,
        description: shown,
    })
}

fn load_log(
    store: &StoreUrl,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    runtime: &ModelRuntime,
    max_rows: usize,
) -> Result<Loaded, ReplayError> {
    let captured = captured_requests_at(
        store,
        &CapturedQuery {
            model: runtime.name.clone(),
            since_ms,
            until_ms,
            limit: max_rows,
        },
    )?;
    let mut rows = Vec::new();
    let mut skipped = 0;
    for c in captured {
        let body = match serde_json::from_str::<Value>(&c.input) {
            Ok(Value::Object(object)) => request_body(object, None),
            _ => Err(String::new()),
        };
        match body {
            Ok((wire, body)) => rows.push(ReplayRow {
                request_id: c.request_id,
                wire,
                body,
                segments: c.segments,
                truth: c.truth,
            }),
            Err(_) => skipped += 1,
        }
    }
    Ok(Loaded {
        rows,
        skipped,
        description: format!("the prediction log of model '{}' in {store}", runtime.name),
    })
}

/// One version's answer, as the live path records it.
struct Answer {
    outcome: Outcome,
    status: u16,
    output: Prediction,
    latency_us: u64,
}

async fn ask(
    runtime: &ModelRuntime,
    version: &str,
    row: &ReplayRow,
    timeout: Option<Duration>,
) -> Answer {
    let Some(backend) = runtime.backends.get(version) else {
        // Checked by the spec's validation; an internal fault if it happens.
        return Answer {
            outcome: Outcome::UpstreamStatus,
            status: 500,
            output: Prediction::None,
            latency_us: 0,
        };
    };
    let call = Call {
        wire: row.wire,
        model: &runtime.name,
        version,
        body: &row.body,
        task: runtime.config.task,
        classes: runtime.config.classes.as_deref(),
    };
    let limit = timeout.map_or(backend.timeout(), |t| t.min(backend.timeout()));
    let started = Instant::now();
    let result = backend.call(&call, limit).await;
    let latency_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(reply) => Answer {
            outcome: Outcome::Ok,
            status: 200,
            output: reply.prediction,
            latency_us,
        },
        Err(e) => Answer {
            outcome: e.outcome(),
            status: e.client_status().as_u16(),
            output: Prediction::None,
            latency_us,
        },
    }
}

/// Replays `loaded` through the primary and the candidate of `spec` and reports as the live
/// shadow would. `progress` is called with the number of requests done after each one.
pub async fn run(
    runtime: &ModelRuntime,
    spec: &ShadowSpec,
    loaded: Loaded,
    options: &ReplayOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ReplayReport, ReplayError> {
    options.check()?;
    for version in [&spec.primary, &spec.candidate] {
        if !runtime.backends.contains_key(version) {
            return Err(ReplayError::Spec(vec![runtime.unknown_version(version)]));
        }
    }
    let started = Instant::now();
    let model = runtime.name.as_str();
    let Loaded {
        rows,
        skipped,
        description,
    } = loaded;
    let requests = rows.len() as u64;
    // The rate: one request started per tick (a late tick delays the next, never a burst).
    let ticker = options.rate.map(|rate| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let paced = stream::unfold(
        (ticker, rows.into_iter()),
        |(mut ticker, mut rows)| async move {
            let row = rows.next()?;
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            Some((row, (ticker, rows)))
        },
    );
    // In order (`buffered`), so the fold is one pass in the source's order whatever finishes
    // first.
    let answers = paced
        .map(|row| async move {
            let (primary, candidate) = tokio::join!(
                ask(runtime, &spec.primary, &row, None),
                ask(runtime, &spec.candidate, &row, options.shadow_timeout),
            );
            (row, primary, candidate)
        })
        .buffered(options.concurrency);
    let mut answers = std::pin::pin!(answers);
    let mut agg = Aggregates::default();
    let tolerance = spec.rules.agreement_tolerance;
    let mut disagreements = Vec::new();
    let (mut done, mut labelled_requests) = (0u64, 0u64);
    while let Some((row, primary, candidate)) = answers.next().await {
        let serving = PredictionRecord {
            request_id: row.request_id.clone(),
            ts_ms: 0,
            model: model.to_string(),
            epoch: 0,
            variant: "replay".into(),
            role: Role::Serving,
            version: spec.primary.clone(),
            key_hash: None,
            outcome: primary.outcome,
            status: primary.status,
            latency_us: primary.latency_us,
            output: primary.output,
            input: None,
            pair: None,
            segments: row.segments.clone(),
        };
        let shadow = PredictionRecord {
            variant: "shadow".into(),
            role: Role::Shadow,
            version: spec.candidate.clone(),
            outcome: candidate.outcome,
            status: candidate.status,
            latency_us: candidate.latency_us,
            output: candidate.output,
            pair: Some(PairRef {
                version: spec.primary.clone(),
                output: serving.output.clone(),
            }),
            segments: row.segments.clone(),
            ..serving.clone()
        };
        agg.record(&serving);
        agg.record(&shadow);
        if let Some(truth) = &row.truth {
            labelled_requests += 1;
            agg.record_feedback(&[serving.clone(), shadow.clone()], truth, &[]);
        }
        if disagreements.len() < DISAGREEMENTS_SHOWN
            && serving
                .output
                .agreement(&shadow.output, &tolerance)
                .is_some_and(|agree| agree.contains(&false))
        {
            disagreements.push(Disagreement {
                request_id: row.request_id,
                input: Some(row.body.value().clone()),
                primary: prediction_json(&serving.output),
                shadow: prediction_json(&shadow.output),
                truth: row.truth.as_ref().and_then(truth_json),
            });
        }
        done += 1;
        progress(done);
    }
    let declared = runtime.config.classes.as_deref();
    let primary = agg.variant(model, &spec.primary, Role::Serving, |_| true);
    let shadow = agg.variant(model, &spec.candidate, Role::Shadow, |_| true);
    let pair = agg.pair(model, &spec.primary, &spec.candidate, |_| true);
    let mut report = shadow_report(spec, &pair, &primary, &shadow);
    report.transitions = report.transitions.map(|t| t.in_declared_order(declared));
    let primary_stats = VersionStats::with_classes(&primary, declared);
    let shadow_stats = VersionStats::with_classes(&shadow, declared);
    let versions = BTreeMap::from([
        (spec.primary.clone(), primary_stats.clone()),
        (spec.candidate.clone(), shadow_stats.clone()),
    ]);
    Ok(ReplayReport {
        model: model.to_string(),
        primary: spec.primary.clone(),
        candidate: spec.candidate.clone(),
        source: description,
        requests,
        labelled_requests,
        skipped,
        spec: spec.clone(),
        versions,
        analysis: ShadowAnalysis {
            report,
            shadow_stats,
            primary_stats,
            disagreements,
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn prediction_json(p: &Prediction) -> Vec<Value> {
    match p {
        Prediction::Classes(c) => c.iter().map(|x| json!(x)).collect(),
        Prediction::Values(v) => v.iter().map(|x| json!(x)).collect(),
        Prediction::None => Vec::new(),
    }
}

fn truth_json(t: &Truth) -> Option<Vec<Value>> {
    match t {
        Truth::Labels(l) => Some(l.iter().map(|x| json!(x)).collect()),
        Truth::Values(v) => Some(v.iter().map(|x| json!(x)).collect()),
        Truth::None => None,
    }
}
