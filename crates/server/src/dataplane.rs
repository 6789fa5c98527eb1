//! The request path: `POST /v2/models/{m}/infer` and `POST /v1/models/{m}:predict`.
//!
//! Phases, in order (after pingora's `ProxyHttp`): **read** the body within limits and parse
//! it (client errors end here and never count against a model) → **route**: find the model's
//! route in the current table (one atomic load) → **pick** the variant from the routing key →
//! **forward** to the chosen version → **mirror** to shadows (non-blocking enqueue) →
//! **record** the prediction into the log queue (non-blocking) → respond. Recording happens on
//! every path that reached a model, success or failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use serde_json::Value;
use switchyard_core::config::KeySource;
use switchyard_core::routing::{key_hash, BUCKETS};
use switchyard_core::{Prediction, PredictionRecord, Role};

use crate::app::AppState;
use crate::backend::{BackendError, Call};
use crate::error::ApiError;
use crate::protocol::{InvalidBody, JsonBody, Wire};
use crate::shadow::ShadowJob;

// The handlers take the whole request rather than `HeaderMap` and `Body` extractors: axum's
// `HeaderMap` extractor clones the map, an allocation per header on every call.
pub async fn infer_v2(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    request: Request,
) -> Response {
    handle(state, Wire::V2, model, request).await
}

pub async fn predict_v1(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    request: Request,
) -> Response {
    match segment.strip_suffix(":predict") {
        Some(model) => handle(state, Wire::V1, model.to_string(), request).await,
        None => {
            state.metrics.reject("not_found");
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route /v1/models/{segment}; use /v1/models/{{model}}:predict"),
            )
            .into_response()
        }
    }
}

/// The client's request id when it sent a usable one, else a fresh random id.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_string)
}

/// A fresh request id: 32 hex digits, the first 12 the current Unix time in milliseconds and
/// the rest random (the layout of a UUIDv7 without its version bits). Ids that grow with time
/// keep the log's request-id index appending at its right edge instead of touching a random
/// page of it for every record.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let ms = u128::from(now_ms() as u64 & 0xffff_ffff_ffff);
    let id = (ms << 80) | (rand::random::<u128>() & ((1u128 << 80) - 1));
    (0..32)
        .rev()
        .map(|digit| char::from(HEX[((id >> (digit * 4)) & 0xf) as usize]))
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim().as_bytes();
            let starts = |prefix: &[u8]| {
                mime.len() >= prefix.len() && mime[..prefix.len()].eq_ignore_ascii_case(prefix)
            };
            let ends = |suffix: &[u8]| {
                mime.len() >= suffix.len()
                    && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            };
            mime.eq_ignore_ascii_case(b"application/json")
                || (starts(b"application/") && ends(b"+json"))
        }
    }
}

/// Reads the body, refusing bodies over `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if let Some(timeout) = find_body_timeout(&e) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "request body not received within {} ms",
                    timeout.0.as_millis()
                ),
            );
        }
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body exceeds {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("cannot read request body: {e}"),
            )
        }
    })
}

/// The error of a request body that did not arrive in time.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request body not received within {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyReadTimeout {}

fn find_body_timeout(e: &(dyn std::error::Error + 'static)) -> Option<BodyReadTimeout> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(t) = err.downcast_ref::<BodyReadTimeout>() {
            return Some(*t);
        }
        current = err.source();
    }
    None
}

/// A request body with a deadline: once `timeout` has passed since it was wrapped, polling it
/// fails with [`BodyReadTimeout`] (frames that are ready are still delivered first). Every
/// request gets one from the router's middleware, so each reader of a body (`read_body`) is
/// bounded without knowing the setting.
///
/// The timer is armed only when the body first has to be waited for: a small body usually
/// arrives with its headers, and registering (then cancelling) a timer for it on every request
/// cost more than reading it.
#[derive(Debug)]
pub struct TimedBody {
    inner: Body,
    timeout: Duration,
    until: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            until: tokio::time::Instant::now() + timeout,
            deadline: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let until = this.until;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyReadTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn routing_key(
    source: Option<&KeySource>,
    headers: &HeaderMap,
    body: &JsonBody,
) -> Option<Vec<u8>> {
    match source? {
        KeySource::Header(name) => headers
            .get(name.as_str())
            .map(|v| v.as_bytes().to_vec())
            .filter(|k| !k.is_empty()),
        KeySource::JsonPointer(pointer) => match body.value().pointer(pointer)? {
            Value::String(s) if !s.is_empty() => Some(s.as_bytes().to_vec()),
            Value::Number(n) => Some(n.to_string().into_bytes()),
            _ => None,
        },
    }
}

async fn handle(state: Arc<AppState>, wire: Wire, model: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let id = request_id(&parts.headers);
    match serve(&state, wire, &model, &parts.headers, body, &id).await {
        Ok(response) => response,
        Err(e) => {
            state.metrics.reject(e.code);
            e.with_request_id(&id).into_response()
        }
    }
}

async fn serve(
    state: &Arc<AppState>,
    wire: Wire,
    model: &str,
    headers: &HeaderMap,
    body: Body,
    id: &str,
) -> Result<Response, ApiError> {
    let ts_ms = now_ms();
    // Phase: read. Everything wrong here is the client's.
    if !is_json_content_type(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    let bytes = read_body(body, state.max_body_bytes).await?;
    let body = JsonBody::validate(bytes).map_err(|e| {
        let code = match e {
            InvalidBody::NotJson(_) => "invalid_json",
            InvalidBody::NotAnObject => "invalid_request",
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })?;

    // Phase: route.
    let table = state.table.load();
    let (Some(route), Some(runtime)) = (table.routes.get(model), state.models.get(model)) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no model named '{model}'"),
        ));
    };

    // Phase: pick.
    let key = routing_key(runtime.config.routing_key.as_ref(), headers, &body);
    let decision = route.decide(key.as_deref(), rand::random::<u32>() % BUCKETS);
    let Some(backend) = runtime.backends.get(decision.version) else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_backend",
            format!("version '{}' has no backend", decision.version),
        ));
    };

    // Phase: forward.
    let classes = runtime.config.classes.as_deref();
    let call = Call {
        wire,
        model,
        version: decision.version,
        body: &body,
        task: runtime.config.task,
        classes,
    };
    let started = Instant::now();
    let result = backend.call(&call, backend.timeout()).await;
    let latency = started.elapsed();

    let (outcome, status, output, response) = match result {
        Ok(reply) => {
            let mut response = Response::new(Body::from(reply.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (
                switchyard_core::Outcome::Ok,
                StatusCode::OK,
                reply.prediction,
                response,
            )
        }
        Err(e) => {
            let status = e.client_status();
            if e.origin() != crate::backend::Origin::Downstream {
                tracing::warn!(model, version = decision.version, request_id = id, error = %e, "model call failed");
            }
            let response = match &e {
                BackendError::Rejected { body: Some(b), .. } => {
                    let mut r = Response::new(Body::from(b.clone()));
                    *r.status_mut() = status;
                    r
                }
                _ => ApiError::new(
                    status,
                    error_code(&e),
                    format!("{} {}: {e}", model, decision.version),
                )
                .into_response(),
            };
            (e.outcome(), status, Prediction::None, response)
        }
    };

    // Phase: mirror. After the primary answered; never waits.
    let key_hash = key.as_deref().map(key_hash);
    // A detached copy for the shadow queue: the body can be a slice of the connection's read
    // buffer (8 KiB or more), which every queued job would otherwise keep alive (a full queue
    // of 4,096 jobs held ~30 MB).
    let shadow_body = (!decision.shadows.is_empty()).then(|| Arc::new(body.detached()));
    for shadow in &decision.shadows {
        if let (Some(shadow_backend), Some(shadow_body)) =
            (runtime.backends.get(*shadow), &shadow_body)
        {
            state.shadow.submit(ShadowJob {
                backend: shadow_backend.clone(),
                request_id: id.to_string(),
                ts_ms,
                model: model.to_string(),
                epoch: table.epoch,
                version: (*shadow).to_string(),
                key_hash,
                wire,
                body: shadow_body.clone(),
                task: runtime.config.task,
                classes: runtime.classes.clone(),
                primary_version: decision.version.to_string(),
                primary_output: output.clone(),
                record: state.log_settings.enabled,
            });
        }
    }

    // Phase: record (unless the log is switched off for a benchmark).
    let log_on = state.log_settings.enabled;
    let input = (log_on
        && state.log_settings.capture_inputs > 0.0
        && rand::random::<f64>() < state.log_settings.capture_inputs)
        .then(|| {
            let bytes = body.bytes();
            String::from_utf8_lossy(&bytes[..bytes.len().min(state.log_settings.max_input_bytes)])
                .into_owned()
        });
    runtime.count_serving(
        &state.metrics,
        decision.version,
        outcome,
        latency.as_secs_f64(),
    );
    if log_on {
        state.log.record(PredictionRecord {
            request_id: id.to_string(),
            ts_ms,
            model: model.to_string(),
            epoch: table.epoch,
            variant: decision.variant.to_string(),
            role: Role::Serving,
            version: decision.version.to_string(),
            key_hash,
            outcome,
            status: status.as_u16(),
            latency_us: latency.as_micros() as u64,
            output,
            input,
            pair: None,
        });
    }

    let mut response = response;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(decision.variant) {
        h.insert("x-switchyard-variant", v);
    }
    if let Ok(v) = HeaderValue::from_str(decision.version) {
        h.insert("x-switchyard-model-version", v);
    }
    Ok(response)
}

fn error_code(e: &BackendError) -> &'static str {
    match e {
        BackendError::Unreachable(_) => "upstream_unreachable",
        BackendError::Timeout(_) => "upstream_timeout",
        BackendError::Status { .. } => "upstream_error",
        BackendError::Malformed(_) => "upstream_malformed",
        BackendError::Rejected { .. } => "rejected_by_model",
        BackendError::Internal(_) => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_in_any_case_with_parameters() {
        let accepts = |ct: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(ct) = ct {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            }
            is_json_content_type(&headers)
        };
        for ok in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some(" application/json "),
            Some("application/vnd.api+json"),
            Some("APPLICATION/PROBLEM+JSON;v=1"),
        ] {
            assert!(accepts(ok), "{ok:?} refused");
        }
        for refused in [
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/",
            "+json",
            "application/xml",
            "",
        ] {
            assert!(!accepts(Some(refused)), "{refused:?} accepted");
        }
    }

    #[test]
    fn new_request_ids_start_with_the_time_and_grow_with_it() {
        let before = now_ms();
        let first = new_request_id();
        let after = now_ms();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        let ms = i64::from_str_radix(&first[..12], 16).expect("hex prefix");
        assert!(
            (before..=after).contains(&ms),
            "{ms} not in {before}..={after}"
        );
        // Ids of a later millisecond sort after earlier ones; within one they are distinct.
        let later = loop {
            let id = new_request_id();
            if id[..12] != first[..12] {
                break id;
            }
        };
        assert!(later > first, "{later} <= {first}");
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn a_printable_client_request_id_is_kept_and_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("order-42"));
        assert_eq!(request_id(&headers), "order-42");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        let replaced = request_id(&headers);
        assert_eq!(replaced.len(), 32);
        assert_ne!(replaced, "has space");
    }
}
