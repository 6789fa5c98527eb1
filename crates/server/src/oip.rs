//! The Open Inference Protocol's REST surface around inference, so that a standard OIP client
//! can use the gateway as it would MLServer, Triton or KServe: server metadata (`GET /v2`),
//! health (`/v2/health/{live,ready}`), per-model and per-version readiness and metadata
//! (`/v2/models/{m}[/versions/{v}][/ready]`), and KServe v1's `GET /v1/models/{m}`.
//!
//! Readiness reflects the backends: a model is ready when every version its routing serves
//! answers (an in-process model always does; an HTTP backend is asked, see
//! `Backend::ready`). Metadata comes from the ONNX model or from the backend's own OIP
//! metadata route. Errors here are in the protocol's form, `{"error": "<message>"}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use crate::backend::{Backend, ModelRuntime};
use crate::error::ApiError;
use crate::onnx::ModelKind;
use crate::state::AppState;

/// `GET /v2`.
#[derive(Debug, Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

/// One tensor of a model's metadata.
#[derive(Debug, Clone, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

fn unknown_model(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_model",
        format!("no model named '{model}'"),
    )
    .oip()
}

fn unknown_version(runtime: &ModelRuntime, version: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_version",
        runtime.unknown_version(version),
    )
    .oip()
}

pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "switchyard",
        version: env!("CARGO_PKG_VERSION"),
        extensions: Vec::new(),
    })
}

/// The process answers: live.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// The versions that serve `model` now, as the routing table says.
fn serving_versions(state: &AppState, model: &str) -> Vec<String> {
    state
        .table
        .load()
        .routes
        .get(model)
        .map(|r| {
            r.strategy
                .serving_versions()
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every given version of `runtime` answers.
async fn versions_ready(runtime: &ModelRuntime, versions: &[String]) -> bool {
    for v in versions {
        match runtime.backends.get(v) {
            Some(b) if b.ready().await => {}
            _ => return false,
        }
    }
    !versions.is_empty()
}

/// The models whose serving versions do not all answer (empty: the server is ready).
pub async fn not_ready_models(state: &AppState) -> Vec<String> {
    let mut not_ready = Vec::new();
    let mut names: Vec<&String> = state.models.keys().collect();
    names.sort();
    for name in names {
        let runtime = &state.models[name];
        if !versions_ready(runtime, &serving_versions(state, name)).await {
            not_ready.push(name.clone());
        }
    }
    not_ready
}

/// Whether `model` (or one `version` of it) is ready; unknown models and versions are errors.
pub async fn is_model_ready(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<bool, ApiError> {
    let runtime = state
        .models
        .get(model)
        .ok_or_else(|| unknown_model(model))?;
    match version {
        None => Ok(versions_ready(runtime, &serving_versions(state, model)).await),
        Some(v) if !runtime.backends.contains_key(v) => Err(unknown_version(runtime, v)),
        Some(v) => Ok(versions_ready(runtime, &[v.to_string()]).await),
    }
}

/// The OIP metadata of `model`: of `version`, or of the version serving now (the first, for
/// a split).
pub async fn metadata(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Value, ApiError> {
    let runtime = state
        .models
        .get(model)
        .ok_or_else(|| unknown_model(model))?;
    let version = match version {
        Some(v) => v.to_string(),
        None => serving_versions(state, model)
            .into_iter()
            .next()
            .ok_or_else(|| unknown_model(model))?,
    };
    let backend = runtime
        .backends
        .get(&version)
        .ok_or_else(|| unknown_version(runtime, &version))?;
    Ok(metadata_of(runtime, &version, backend).await)
}

/// Ready when every model is (200); else 400 naming the models that are not, as the protocol
/// wants a 4xx for "false".
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let not_ready = not_ready_models(&state).await;
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        Json(json!({ "ready": not_ready.is_empty(), "not_ready": not_ready })),
    )
        .into_response()
}

fn readiness(model: &str, version: Option<&str>, ready: bool) -> Response {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut body = json!({ "name": model, "ready": ready });
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    (status, Json(body)).into_response()
}

/// `GET /v2/models/{m}/ready`: the versions the routing serves answer.
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let ok = is_model_ready(&state, &model, None).await?;
    Ok(readiness(&model, None, ok))
}

/// `GET /v2/models/{m}/versions/{v}/ready`.
pub async fn version_ready(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ok = is_model_ready(&state, &model, Some(&version)).await?;
    Ok(readiness(&model, Some(&version), ok))
}

/// KServe v1 `GET /v1/models/{m}`: `{"name", "ready"}`, 503 when not ready.
pub async fn v1_model_ready(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let runtime = state.models.get(&model).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no model named '{model}'"),
        )
    })?;
    let ok = versions_ready(runtime, &serving_versions(&state, &model)).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(json!({ "name": model, "ready": ok }))).into_response())
}

/// The OIP metadata of one version of `runtime`.
async fn metadata_of(runtime: &ModelRuntime, version: &str, backend: &Backend) -> Value {
    let versions: Vec<&String> = runtime.config.versions.keys().collect();
    if let Some(m) = backend.onnx_model() {
        let input = TensorMetadata {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![-1, m.n_features() as i64],
        };
        let outputs = match m.kind() {
            ModelKind::Classifier { n_classes } => {
                let numeric = runtime
                    .config
                    .classes
                    .as_ref()
                    .is_none_or(|c| c.iter().all(|x| x.parse::<i64>().is_ok()));
                vec![
                    TensorMetadata {
                        name: "label".into(),
                        datatype: if numeric { "INT64" } else { "BYTES" }.into(),
                        shape: vec![-1],
                    },
                    TensorMetadata {
                        name: "probabilities".into(),
                        datatype: "FP32".into(),
                        shape: vec![-1, n_classes as i64],
                    },
                ]
            }
            ModelKind::Regressor => vec![TensorMetadata {
                name: "label".into(),
                datatype: "FP64".into(),
                shape: vec![-1],
            }],
        };
        return json!({
            "name": runtime.name,
            "versions": versions,
            "platform": "switchyard_onnx",
            "inputs": [input],
            "outputs": outputs,
            "parameters": { "version": version },
        });
    }
    match backend.remote_metadata().await {
        Some(mut remote) if remote.is_object() => {
            // The backend's own tensors, under the gateway's model name and versions.
            remote["name"] = json!(runtime.name);
            remote["versions"] = json!(versions);
            remote
        }
        _ => json!({
            "name": runtime.name,
            "versions": versions,
            "platform": "switchyard_proxy",
            "inputs": [],
            "outputs": [],
            "parameters": { "version": version },
        }),
    }
}

/// `GET /v2/models/{m}`: the metadata of the version serving now (the first, for a split).
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(metadata(&state, &model, None).await?))
}

/// `GET /v2/models/{m}/versions/{v}`.
pub async fn version_metadata(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(metadata(&state, &model, Some(&version)).await?))
}
