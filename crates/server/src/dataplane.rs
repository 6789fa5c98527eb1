//! The request path: `POST /v2/models/{m}/infer` and `POST /v1/models/{m}:predict`.
//!
//! Phases, in order (after pingora's `ProxyHttp`): **read** the body within limits and parse
//! it, after checking the caller's `inference` role when `auth.data_plane.require` is on
//! (client errors end here and never count against a model) → **route**: find the model's
//! route in the current table (one atomic load) → **pick** the variant from the routing key →
//! **forward** to the chosen version → **mirror** to shadows (non-blocking enqueue) →
//! **record** the prediction into the log queue (non-blocking) → respond. Recording happens on
//! every path that reached a model, success or failure.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use switchyard_core::access::AccessRole;
use switchyard_core::config::{Durability, KeySource};
use switchyard_core::routing::{key_hash, BUCKETS, PINNED_VARIANT};
use switchyard_core::segments::clip_value;
use switchyard_core::{Prediction, PredictionRecord, Role};

use crate::backend::{BackendError, Call, Reply};
use crate::error::ApiError;
use crate::http_util::{is_json_content_type, is_octet_stream, read_body, request_id, Headers};
use crate::protocol::{InvalidBody, JsonBody, Wire, BINARY_HEADER};
use crate::runtime::now_ms;
use crate::shadow::ShadowJob;
use crate::state::AppState;

/// The answer's routing headers, parsed once.
const X_VARIANT: HeaderName = HeaderName::from_static("x-switchyard-variant");
const X_MODEL_VERSION: HeaderName = HeaderName::from_static("x-switchyard-model-version");

// The handlers take the whole request rather than `HeaderMap` and `Body` extractors: axum's
// `HeaderMap` extractor clones the map, an allocation per header on every call.
pub async fn infer_v2(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    request: Request,
) -> Response {
    handle(state, Wire::V2, model, None, request).await
}

/// `POST /v2/models/{m}/versions/{v}/infer`: the version the client names serves, whatever the
/// routing says; no shadow gets a copy, and the record's variant is `pinned` (the controller
/// leaves pinned traffic out of every rollout's statistics).
pub async fn infer_v2_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    handle(state, Wire::V2, model, Some(version), request).await
}

pub async fn predict_v1(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    request: Request,
) -> Response {
    match segment.strip_suffix(":predict") {
        Some(model) => handle(state, Wire::V1, model.to_string(), None, request).await,
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

/// The model of a `/v2/models/{m}/infer` path, when it is one plainly (a percent-encoded name is
/// left to the router, which decodes it).
pub(crate) fn infer_route_model(path: &str) -> Option<&str> {
    let model = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    (!model.is_empty() && !model.contains(['/', '%'])).then_some(model)
}

fn routing_key(
    source: Option<&KeySource>,
    headers: &dyn Headers,
    body: &JsonBody,
) -> Option<Vec<u8>> {
    match source? {
        KeySource::Header(name) => headers
            .first_named(name)
            .map(<[u8]>::to_vec)
            .filter(|k| !k.is_empty()),
        KeySource::JsonPointer(pointer) => match body.value().pointer(pointer)? {
            Value::String(s) if !s.is_empty() => Some(s.as_bytes().to_vec()),
            Value::Number(n) => Some(n.to_string().into_bytes()),
            _ => None,
        },
    }
}

/// The request's value of each segment field the model declares (empty when absent), cut to
/// the longest value kept.
pub(crate) fn segment_values(
    fields: &[(String, KeySource)],
    headers: &dyn Headers,
    body: &JsonBody,
) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(field, source)| {
            let value = match source {
                KeySource::Header(name) => headers
                    .first_named(name)
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                KeySource::JsonPointer(pointer) => match body.value().pointer(pointer) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                    _ => None,
                },
            };
            let mut value = value.unwrap_or_default();
            value.truncate(clip_value(&value).len());
            (field.clone(), value)
        })
        .collect()
}

/// A request's body: read whole already (the hot loop's, within the size limit), or still to
/// be read from hyper's stream.
pub(crate) enum InBody {
    Whole(bytes::Bytes),
    Stream(Body),
}

impl InBody {
    async fn read(self, limit: usize) -> Result<bytes::Bytes, ApiError> {
        match self {
            // Handed over as it is: collecting a whole body through axum's `Body` cost ~650
            // instructions per request (BENCHMARKS.md, "Proxy cost").
            InBody::Whole(bytes) if bytes.len() <= limit => Ok(bytes),
            InBody::Whole(_) => Err(crate::http_util::body_too_large(limit)),
            InBody::Stream(body) => read_body(body, limit).await,
        }
    }
}

pub(crate) async fn handle(
    state: Arc<AppState>,
    wire: Wire,
    model: String,
    pinned: Option<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    handle_parts(
        state,
        wire,
        model,
        pinned,
        &parts.headers,
        InBody::Stream(body),
    )
    .await
    .into_response()
    .map(Body::from)
}

/// An answer of the data plane with its whole body (none is streamed).
#[derive(Debug)]
pub(crate) struct Answer {
    pub response: axum::http::Response<bytes::Bytes>,
    /// For a request a model answered (or failed): the headers naming what served it, kept out
    /// of `response`'s map until hyper needs them there; the hot loop writes them as they are
    /// (three map entries, their values copied and checked, cost ~1,500 instructions).
    pub routed: Option<Routed>,
}

/// `x-request-id`, `x-variant` and `x-model-version` of an answer, and its `content-type`
/// when it is a model's JSON answer.
#[derive(Debug)]
pub(crate) struct Routed {
    pub json: bool,
    pub id: String,
    pub variant: String,
    pub version: String,
}

impl Routed {
    /// The headers, each when its value is a valid header value (a variant or version named
    /// with a control character is left out, as `HeaderValue` would refuse it).
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, &str)> {
        let content_type = self
            .json
            .then_some((header::CONTENT_TYPE, "application/json"));
        content_type.into_iter().chain(
            [
                (crate::http_util::X_REQUEST_ID, self.id.as_str()),
                (X_VARIANT, self.variant.as_str()),
                (X_MODEL_VERSION, self.version.as_str()),
            ]
            .into_iter()
            .filter(|(_, v)| crate::http_util::is_header_value(v.as_bytes())),
        )
    }
}

impl Answer {
    /// The answer with every header in its map, for hyper to write.
    pub fn into_response(self) -> axum::http::Response<bytes::Bytes> {
        let mut response = self.response;
        for (name, value) in self.routed.iter().flat_map(Routed::headers) {
            if let Ok(v) = HeaderValue::from_str(value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

/// [`handle`] for a request already split into its head and body; the answer's body whole,
/// for the hot loop to write as it is.
pub(crate) async fn handle_parts(
    state: Arc<AppState>,
    wire: Wire,
    model: String,
    pinned: Option<String>,
    headers: &dyn Headers,
    body: InBody,
) -> Answer {
    let id = request_id(headers);
    match serve(&state, wire, &model, pinned.as_deref(), headers, body, &id).await {
        Ok((response, mut routed)) => {
            routed.id = id;
            Answer {
                response,
                routed: Some(routed),
            }
        }
        Err(e) => {
            state.metrics.reject(e.code);
            let e = e.with_request_id(&id);
            let response = match wire {
                Wire::V2 => e.oip().into_answer(),
                Wire::V1 => e.into_answer(),
            };
            Answer {
                response,
                routed: None,
            }
        }
    }
}

async fn serve(
    state: &Arc<AppState>,
    wire: Wire,
    model: &str,
    pinned: Option<&str>,
    headers: &dyn Headers,
    body: InBody,
    id: &str,
) -> Result<(axum::http::Response<bytes::Bytes>, Routed), ApiError> {
    let ts_ms = now_ms();
    // Phase: read. Everything wrong here is the client's.
    authorize(state, headers)?;
    // The binary tensor data extension: the first N bytes are the JSON, raw tensors follow.
    let binary_header = match wire {
        Wire::V2 => binary_header_len(headers)?,
        Wire::V1 => None,
    };
    let binary_octets = binary_header.is_some() && is_octet_stream(headers);
    if !(is_json_content_type(headers) || binary_octets) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json (or application/octet-stream with Inference-Header-Content-Length)",
        ));
    }
    let bytes = body.read(state.max_body_bytes).await?;
    let body = match wire {
        Wire::V2 => JsonBody::validate_v2(bytes, binary_header),
        Wire::V1 => JsonBody::validate(bytes),
    }
    .map_err(invalid_body)?;

    let served = infer(
        state,
        InferRequest {
            wire,
            model,
            pinned,
            headers,
            body,
            id,
            ts_ms,
        },
    )
    .await?;

    let json = matches!(&served.result, Ok(reply) if reply.binary_header.is_none());
    let response = match served.result {
        Ok(reply) => {
            let mut response = axum::http::Response::new(reply.body);
            // A JSON answer's content type goes with the routed headers (`Routed::json`).
            if let Some(n) = reply.binary_header {
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                h.insert(BINARY_HEADER, HeaderValue::from(n));
            }
            response
        }
        Err(e) => {
            let status = e.client_status();
            match &e {
                BackendError::Rejected { body: Some(b), .. } => {
                    let mut r = axum::http::Response::new(b.clone());
                    *r.status_mut() = status;
                    r
                }
                _ => {
                    let error = ApiError::new(
                        status,
                        error_code(&e),
                        format!("{} {}: {e}", model, served.version),
                    );
                    match wire {
                        Wire::V2 => error.oip().into_answer(),
                        Wire::V1 => error.into_answer(),
                    }
                }
            }
        }
    };
    // The id is the caller's to move in.
    let routed = Routed {
        json,
        id: String::new(),
        variant: served.variant,
        version: served.version,
    };
    Ok((response, routed))
}

/// With `auth.data_plane.require` on, the caller must hold the `inference` role (a bearer
/// token in `authorization`: an HTTP header, or gRPC metadata).
pub fn authorize(state: &AppState, headers: &dyn Headers) -> Result<(), ApiError> {
    if state.auth.data_plane_required() {
        state
            .auth
            .check(headers, AccessRole::Inference, "call the data plane")?;
    }
    Ok(())
}

/// The client error of a body that did not validate.
pub fn invalid_body(e: InvalidBody) -> ApiError {
    let code = match e {
        InvalidBody::NotJson(_) => "invalid_json",
        InvalidBody::NotAnObject => "invalid_request",
        InvalidBody::BadTensor(_) => "invalid_tensor",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

/// One validated inference request, whichever front end (REST or gRPC) read it.
#[derive(Debug)]
pub struct InferRequest<'a> {
    pub wire: Wire,
    pub model: &'a str,
    /// The version the client named (`/versions/{v}/infer`, gRPC `model_version`).
    pub pinned: Option<&'a str>,
    /// The HTTP headers or gRPC metadata: header routing keys and segments are read here.
    pub headers: &'a dyn Headers,
    pub body: JsonBody,
    pub id: &'a str,
    pub ts_ms: i64,
}

/// What the request path did with a request that reached a model.
#[derive(Debug)]
pub struct Served {
    pub variant: String,
    pub version: String,
    /// The model's answer in the client's protocol, or why there is none.
    pub result: Result<Reply, BackendError>,
}

/// The request path shared by every front end, after the request was read and validated:
/// **route** → **pick** → **forward** → **mirror** to shadows → **record** → the answer.
/// Errors are the client's (unknown model or version) or a record that could not be made
/// durable; a model's failure is in [`Served::result`], recorded like any answer.
pub async fn infer(state: &Arc<AppState>, request: InferRequest<'_>) -> Result<Served, ApiError> {
    let InferRequest {
        wire,
        model,
        pinned,
        headers,
        body,
        id,
        ts_ms,
    } = request;
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
    let segments = segment_values(&runtime.config.segments, headers, &body);
    let decision = match pinned {
        None => route.decide_for(key.as_deref(), rand::random::<u32>() % BUCKETS, &segments),
        Some(version) => {
            let Some((version, _)) = runtime.backends.get_key_value(version) else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_version",
                    runtime.unknown_version(version),
                ));
            };
            switchyard_core::Decision {
                variant: PINNED_VARIANT,
                version: version.as_str(),
                shadows: Vec::new(),
            }
        }
    };
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

    let mut result = result;
    // The prediction moves into the record (the answer's body is what the client gets).
    let (outcome, status, output) = match &mut result {
        Ok(reply) => (
            switchyard_core::Outcome::Ok,
            StatusCode::OK,
            std::mem::replace(&mut reply.prediction, Prediction::None),
        ),
        Err(e) => {
            if e.origin() != crate::backend::Origin::Downstream {
                tracing::warn!(model, version = decision.version, request_id = id, error = %e, "model call failed");
            }
            (e.outcome(), e.client_status(), Prediction::None)
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
                segments: segments.clone(),
                record: state.log_settings.enabled,
            });
        }
    }

    // Phase: record (unless the log is switched off for a benchmark).
    let log_on = state.log_settings.enabled;
    let input = (log_on
        && state.log_settings.capture_inputs > 0.0
        && rand::random::<f64>() < state.log_settings.capture_inputs)
        .then(|| captured_input(&body, state.log_settings.max_input_bytes));
    runtime.count_serving(
        &state.metrics,
        decision.version,
        outcome,
        latency.as_secs_f64(),
    );
    if log_on {
        let record = PredictionRecord {
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
            segments,
        };
        match state.log_settings.durability {
            Durability::Group => {
                state.log.record(record);
            }
            // The answer waits for its record's commit; one that is not on disk is not given.
            Durability::Sync => {
                if let Err(e) = state.log.record_durable(record).await {
                    tracing::error!(model, request_id = id, error = %e, "prediction not recorded");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_recorded",
                        format!("the prediction could not be recorded ({e}); with log.durability sync it is not answered"),
                    ));
                }
            }
        }
    }

    Ok(Served {
        variant: decision.variant.to_string(),
        version: decision.version.to_string(),
        result,
    })
}

/// The input kept in a record (`log.capture_inputs`): the body's first `max` bytes. A binary
/// request is kept as the JSON request it stands for (its raw tensors decoded into `data`), so
/// a captured binary request reads like a JSON one.
fn captured_input(body: &JsonBody, max: usize) -> String {
    let cut = |bytes: &[u8]| String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if body.binary().is_none() {
        return cut(body.bytes());
    }
    match body.plain_json() {
        Ok(plain) => cut(plain.to_string().as_bytes()),
        Err(e) => cut(format!("(binary request not decoded: {e})").as_bytes()),
    }
}

/// The request's `Inference-Header-Content-Length`, when it has one.
fn binary_header_len(headers: &dyn Headers) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.first(&BINARY_HEADER) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value);
    text.trim().parse::<usize>().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_binary_header",
            format!("Inference-Header-Content-Length '{text}' is not a byte count"),
        )
    })
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
    use super::{infer_route_model, InBody};

    #[tokio::test]
    async fn a_whole_body_is_handed_over_within_the_limit_and_refused_over_it() {
        let body = bytes::Bytes::from_static(b"{\"inputs\": []}");
        let read = InBody::Whole(body.clone()).read(body.len()).await;
        assert_eq!(read.ok(), Some(body.clone()));
        let refused = InBody::Whole(body.clone())
            .read(body.len() - 1)
            .await
            .expect_err("over the limit");
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (413, "body_too_large")
        );
        // The same answer as a streamed body over the limit.
        let streamed = InBody::Stream(axum::body::Body::from(body.clone()))
            .read(body.len() - 1)
            .await
            .expect_err("over the limit");
        assert_eq!(
            (streamed.status, streamed.code, streamed.message),
            (refused.status, refused.code, refused.message)
        );
    }

    #[test]
    fn only_a_plain_infer_path_takes_the_direct_route() {
        assert_eq!(infer_route_model("/v2/models/yield/infer"), Some("yield"));
        assert_eq!(
            infer_route_model("/v2/models/y.v-2_x/infer"),
            Some("y.v-2_x")
        );
        for other in [
            "/v2/models//infer",
            "/v2/models/yield/versions/v1/infer",
            "/v2/models/yi%65ld/infer",
            "/v2/models/yield/infer/",
            "/v2/models/yield",
            "/v1/models/yield:predict",
        ] {
            assert_eq!(infer_route_model(other), None, "{other}");
        }
    }
}
