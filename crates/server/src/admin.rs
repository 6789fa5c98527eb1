//! The admin API under `/admin/v1`: routing table and live statistics. Unless the gateway is in
//! open mode, every route needs `Authorization: Bearer <token>` of a credential holding the
//! role [`crate::auth::ADMIN_ROUTES`] names for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use axum::Json;
use switchyard_core::config::RawStrategy;
use switchyard_core::record::Tolerance;
use switchyard_core::{Role, VariantStats};

use crate::api::{
    ChainCheck, ClusterView, DryRun, EventView, LeaderView, ModelStats, PairView, ReplicaView,
    RolloutEvents, RolloutHistory, RolloutList, RolloutView, RouteChanged, RoutesView, SeriesView,
    VersionStats,
};

use crate::auth::{admin_route_role, Caller};
use crate::controller::Controller;
use crate::error::ApiError;
use crate::state::AppState;

/// What the admin handlers work on: the shared state and the controller (the router holds the
/// two side by side; neither holds the other).
#[derive(Debug, Clone)]
pub struct AdminState {
    pub app: Arc<AppState>,
    pub controller: Arc<Controller>,
}

/// Middleware: refuses an admin call without a credential holding the role the route needs
/// (401 without a known token, 403 naming the role), and hands the [`Caller`] to the handler.
pub async fn require_role(
    State(admin): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    let path = path.strip_prefix("/admin/v1").unwrap_or(path).to_string();
    let needed = admin_route_role(request.method(), &path);
    let what = format!("{} /admin/v1{path}", request.method());
    let caller = admin.app.auth.check(request.headers(), needed, &what)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

pub async fn get_routes(State(admin): State<AdminState>) -> Json<RoutesView> {
    let table = admin.app.table.load();
    Json(RoutesView {
        epoch: table.epoch,
        routes: table
            .routes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Replaces a model's strategy (same shape as `serve:` in the config file).
pub async fn put_route(
    State(admin): State<AdminState>,
    Path(model): Path<String>,
    body: String,
) -> Result<Json<RouteChanged>, ApiError> {
    let (raw, unknown): (RawStrategy, Vec<String>) =
        crate::config_file::from_yaml_listing_unknown(&body)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_strategy", e))?;
    if !unknown.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_strategy",
            unknown.join("; "),
        ));
    }
    let runtime = admin.app.models.get(&model).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no model named '{model}'"),
        )
    })?;
    let strategy = raw
        .validate_for(
            &format!("models.{model}.serve"),
            runtime.config.versions.keys().map(String::as_str),
        )
        .map_err(|problems| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_strategy",
                problems.join("; "),
            )
        })?;
    let next = admin.app.swap_strategy(&model, strategy).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the routing change was not made: {e}"),
        )
    })?;
    Ok(Json(RouteChanged {
        epoch: next.epoch,
        route: next.routes.get(&model).cloned(),
    }))
}

/// Live statistics of one model over all epochs (or `?epoch=N`). Regression pairs agree within
/// the shadow spec's default tolerance (5% of the primary's output); a shadow rollout's report
/// uses its own.
pub async fn model_stats(
    State(admin): State<AdminState>,
    Path(model): Path<String>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Result<Json<ModelStats>, ApiError> {
    if !admin.app.models.contains_key(&model) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("no model named '{model}'"),
        ));
    }
    let epoch: Option<u64> = match q.get("epoch") {
        Some(e) => Some(e.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "epoch must be an integer",
            )
        })?),
        None => None,
    };
    let keep = |e: u64| epoch.is_none_or(|want| want == e);
    let agg = admin.app.log.aggregates().lock().clone();
    let mut variants: BTreeMap<(String, String, Role), VariantStats> = BTreeMap::new();
    for (k, v) in agg
        .series
        .iter()
        .filter(|(k, _)| k.model == model && keep(k.epoch))
    {
        variants
            .entry((k.version.clone(), k.variant.clone(), k.role))
            .or_default()
            .merge(v);
    }
    let mut pairs: BTreeMap<(String, String), switchyard_core::PairStats> = BTreeMap::new();
    for (k, v) in agg
        .pairs
        .iter()
        .filter(|(k, _)| k.model == model && keep(k.epoch))
    {
        pairs
            .entry((k.primary.clone(), k.shadow.clone()))
            .or_default()
            .merge(v);
    }
    let declared = admin
        .app
        .models
        .get(&model)
        .and_then(|m| m.config.classes.as_deref());
    let variants = variants
        .iter()
        .map(|((version, variant, role), s)| SeriesView {
            version: version.clone(),
            variant: variant.clone(),
            role: *role,
            stats: VersionStats::with_classes(s, declared),
        })
        .collect();
    let pairs = pairs
        .iter()
        .map(|((primary, shadow), p)| PairView::of(primary, shadow, p, Tolerance::DEFAULT))
        .collect();
    Ok(Json(ModelStats {
        model,
        epoch,
        variants,
        pairs,
    }))
}

// ---------------------------------------------------------------------------------------------
// Rollouts.

use crate::controller::ControlError;
use axum::extract::OriginalUri;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use switchyard_core::rollout::Command;
use switchyard_store::Leader;

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let (status, code) = match &e {
            ControlError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rollout"),
            ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "unknown_rollout"),
            ControlError::Conflict { .. } => (StatusCode::CONFLICT, "rollout_conflict"),
            ControlError::Command(_) => (StatusCode::CONFLICT, "invalid_transition"),
            ControlError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
            ControlError::NotLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_controller"),
        };
        let mut err = ApiError::new(status, code, e.to_string());
        if let ControlError::Invalid(problems) = e {
            err.problems = problems;
        }
        err
    }
}

pub async fn list_rollouts(State(admin): State<AdminState>) -> Json<RolloutList> {
    Json(RolloutList {
        rollouts: admin.controller.list(),
    })
}

/// Marks a command forwarded by another replica (a forwarded command is never forwarded again).
const FORWARDED_BY: &str = "x-switchyard-forwarded-by";

/// Sends a command that reached a replica which is not the controller to the replica that is,
/// and answers with its answer.
async fn forward(
    state: &AppState,
    leader: &Leader,
    uri: &Uri,
    headers: &HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let unavailable = |message: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller_unreachable",
            message,
        )
    };
    if headers.contains_key(FORWARDED_BY) {
        return Err(unavailable(format!(
            "replica '{}' is not the controller either; retry shortly",
            state.replica
        )));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", leader.admin_url.trim_end_matches('/'));
    let mut request = hyper::Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(FORWARDED_BY, state.replica.as_str());
    for name in [
        header::AUTHORIZATION.as_str(),
        header::CONTENT_TYPE.as_str(),
        "x-switchyard-actor",
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| unavailable(format!("cannot forward to {url}: {e}")))?;
    let client = state
        .admin_client
        .for_url(&url, state.peer_ca_file.as_deref())
        .map_err(|e| unavailable(format!("cannot forward to {url}: {e}")))?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| unavailable(format!("the controller at {url} did not answer in time")))?
        .map_err(|e| {
            unavailable(format!(
                "the controller at {url} is unreachable: {}",
                crate::http_util::error_chain(&e)
            ))
        })?;
    let (parts, body) = answer.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| unavailable(format!("the controller's answer broke off: {e}")))?
        .to_bytes();
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Ok(v) = leader.replica.parse() {
        response.headers_mut().insert("x-switchyard-controller", v);
    }
    Ok(response)
}

/// Starts a rollout from a YAML or JSON spec; `?dry_run=true` only validates it. On a replica
/// that is not the controller, the command is forwarded to the one that is.
pub async fn apply_rollout(
    State(admin): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
    body: String,
) -> Result<Response, ApiError> {
    let c = admin.controller;
    if q.get("dry_run").is_some_and(|v| v == "true" || v == "1") {
        let spec = c.dry_run(&body)?;
        return Ok(Json(DryRun { valid: true, spec }).into_response());
    }
    match c.apply(&body, &caller.actor(&headers)).await {
        Ok(view) => Ok((StatusCode::CREATED, Json(view)).into_response()),
        Err(ControlError::NotLeader(Some(leader))) => {
            forward(&admin.app, &leader, &uri, &headers, body).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn get_rollout(
    State(admin): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    admin
        .controller
        .view(&name)
        .map(Json)
        .ok_or_else(|| ControlError::NotFound(name).into())
}

pub async fn rollout_command(
    State(admin): State<AdminState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let cmd = Command::parse(&action).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_action",
            format!("'{action}' is not promote, rollback, pause, resume, approve or abort"),
        )
    })?;
    match admin
        .controller
        .command(&name, cmd, &caller.actor(&headers))
        .await
    {
        Ok(view) => Ok(Json(view).into_response()),
        Err(ControlError::NotLeader(Some(leader))) => {
            forward(&admin.app, &leader, &uri, &headers, String::new()).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn rollout_events(
    State(admin): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<RolloutEvents>, ApiError> {
    let c = admin.controller;
    if c.view(&name).is_none() {
        return Err(ControlError::NotFound(name).into());
    }
    let events = c.events(Some(&name)).map_err(ControlError::from)?;
    Ok(Json(RolloutEvents {
        rollout: name,
        events: events.iter().map(EventView::from).collect(),
    }))
}

pub async fn rollout_report(
    State(admin): State<AdminState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let c = admin.controller;
    let report = crate::report::build(&admin.app, &c, &name)
        .ok_or_else(|| ApiError::from(ControlError::NotFound(name.clone())))?;
    let format = q.get("format").map_or("json", String::as_str);
    let (content_type, body) = match format {
        "json" => (
            "application/json",
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        ),
        "text" => (
            "text/plain; charset=utf-8",
            crate::report::render_text(&report),
        ),
        "md" | "markdown" => (
            "text/markdown; charset=utf-8",
            crate::report::render_markdown(&report),
        ),
        "html" => (
            "text/html; charset=utf-8",
            crate::report::render_html(&report),
        ),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_format",
                format!("format '{other}' is not json, text, md or html"),
            ))
        }
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

pub async fn audit_verify(State(admin): State<AdminState>) -> Result<Json<ChainCheck>, ApiError> {
    let report = admin
        .controller
        .verify_chain()
        .map_err(ControlError::from)?;
    Ok(Json(ChainCheck::from(report)))
}

/// Snapshots of a rollout's statistics over time (for charts).
pub async fn rollout_history(
    State(admin): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<RolloutHistory>, ApiError> {
    let c = admin.controller;
    if c.view(&name).is_none() {
        return Err(ControlError::NotFound(name).into());
    }
    let points = c.history(&name);
    Ok(Json(RolloutHistory {
        rollout: name,
        points,
    }))
}

/// This replica, the controller, the shared routing epoch and every replica's published
/// window (a single gateway reports itself as its own controller).
pub async fn cluster(State(admin): State<AdminState>) -> Result<Json<ClusterView>, ApiError> {
    let is_controller = admin.controller.is_leader();
    let epoch = admin.app.table.load().epoch;
    let Some(cluster) = admin.app.cluster.clone() else {
        return Ok(Json(ClusterView {
            replica: admin.app.replica.clone(),
            store: admin.app.store.to_string(),
            is_controller,
            controller: None,
            routing_epoch: epoch,
            replicas: Vec::new(),
        }));
    };
    let (leader, windows) = tokio::task::spawn_blocking(move || {
        Ok::<_, switchyard_store::StoreError>((cluster.leader()?, cluster.aggregate_windows()?))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    })?;
    let replicas = windows
        .iter()
        .map(|(name, updated_ms, agg)| ReplicaView {
            replica: name.clone(),
            updated_ms: *updated_ms,
            serving_requests: agg
                .series
                .iter()
                .filter(|(k, _)| k.role == Role::Serving)
                .map(|(_, v)| v.requests)
                .sum(),
        })
        .collect();
    Ok(Json(ClusterView {
        replica: admin.app.replica.clone(),
        store: admin.app.store.to_string(),
        is_controller,
        controller: leader.map(|l| LeaderView {
            replica: l.replica,
            admin_url: l.admin_url,
            term: l.term,
            since_ms: l.since_ms,
        }),
        routing_epoch: epoch,
        replicas,
    }))
}

// ---------------------------------------------------------------------------------------------
// Replay.

use crate::api::{ReplayReport, ReplayRequest, ReplaySource};
use crate::replay::{ReplayError, ReplayOptions, Source};

/// Requests an admin replay reads unless told otherwise, and at most.
pub const REPLAY_DEFAULT_ROWS: u64 = 1_000;
pub const REPLAY_MAX_ROWS: u64 = 10_000;
/// How long an admin replay may run (under the admin client's 60 s).
pub const REPLAY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(50);

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        let (status, code) = match &e {
            ReplayError::Read { .. } | ReplayError::Line { .. } | ReplayError::NoRows(_) => {
                (StatusCode::BAD_REQUEST, "invalid_source")
            }
            ReplayError::Options(_) => (StatusCode::BAD_REQUEST, "invalid_replay"),
            ReplayError::UnknownModel { .. } => (StatusCode::NOT_FOUND, "unknown_model"),
            ReplayError::Spec(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec"),
            ReplayError::Backend { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "no_backend"),
            ReplayError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        let mut err = ApiError::new(status, code, e.to_string());
        if let ReplayError::Spec(problems) = e {
            err.problems = problems;
        }
        err
    }
}

/// Replays a file on the gateway's host, or the gateway's own prediction log, through this
/// gateway's backends of the spec's primary and candidate, and answers the shadow analysis.
/// Bounded: at most [`REPLAY_MAX_ROWS`] requests and [`REPLAY_DEADLINE`]; nothing is recorded.
pub async fn replay(
    State(admin): State<AdminState>,
    body: String,
) -> Result<Json<ReplayReport>, ApiError> {
    let request: ReplayRequest = serde_json::from_str(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_replay",
            format!("not a replay request: {e}"),
        )
    })?;
    let max_rows = request.max_rows.unwrap_or(REPLAY_DEFAULT_ROWS);
    if !(1..=REPLAY_MAX_ROWS).contains(&max_rows) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_replay",
            format!("max_rows must be in [1, {REPLAY_MAX_ROWS}], got {max_rows}"),
        ));
    }
    let options = ReplayOptions {
        rate: request.rate,
        concurrency: request
            .concurrency
            .unwrap_or(crate::replay::DEFAULT_CONCURRENCY),
        shadow_timeout: None,
    };
    let (model, spec) = crate::replay::shadow_spec(
        &admin.app.models,
        request.spec.as_deref(),
        request.model.as_deref(),
        request.primary.as_deref(),
        request.candidate.as_deref(),
    )?;
    let runtime = admin
        .app
        .models
        .get(&model)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_model", model.clone()))?;
    let source = match request.source {
        ReplaySource::Csv { path, label_column } => Source::Csv {
            path: admin.controller.resolve(&path),
            label_column,
        },
        ReplaySource::Jsonl { path } => Source::Jsonl {
            path: admin.controller.resolve(&path),
        },
        ReplaySource::Log { since_ms, until_ms } => Source::Log {
            store: admin.app.store.clone(),
            since_ms,
            until_ms,
        },
    };
    let loaded = crate::runtime::off_the_request_path(|| {
        crate::replay::load(&source, runtime, max_rows as usize)
    })?;
    if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
        let needs = loaded.rows.len() as f64 / rate;
        if needs > REPLAY_DEADLINE.as_secs_f64() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_replay",
                format!(
                    "{} requests at {rate}/s take {needs:.0} s, more than the {} s an admin replay may run; lower max_rows or raise rate (or use `switchyard replay`)",
                    loaded.rows.len(),
                    REPLAY_DEADLINE.as_secs()
                ),
            ));
        }
    }
    let run = crate::replay::run(runtime, &spec, loaded, &options, &|_| {});
    match tokio::time::timeout(REPLAY_DEADLINE, run).await {
        Ok(report) => Ok(Json(report?)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "replay_timeout",
            format!(
                "the replay did not finish within {} s; replay fewer rows or at a higher rate",
                REPLAY_DEADLINE.as_secs()
            ),
        )),
    }
}
