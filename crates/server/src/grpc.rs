//! The Open Inference Protocol's gRPC endpoint (`inference.GRPCInferenceService` on
//! `grpc_listen`): ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
//! ModelInfer, with the REST surface's semantics.
//!
//! ModelInfer reads the message into the request path's body (`grpc_wire::request_body`) and
//! hands it to [`dataplane::infer`], the same core path as REST: routing, splits, shadows,
//! segments, the prediction log and metrics, and the data plane's auth (a bearer token in the
//! `authorization` metadata). `model_version` pins a version; the request id travels in the
//! `x-request-id` metadata both ways. Errors are gRPC status codes: NotFound for an unknown
//! model or version, InvalidArgument for a bad tensor (naming it), Unauthenticated /
//! PermissionDenied, DeadlineExceeded and Unavailable for a backend that timed out or failed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::backend::BackendError;
use crate::dataplane::{self, InferRequest};
use crate::error::ApiError;
use crate::grpc_wire::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::grpc_wire::inference::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use crate::grpc_wire::{self};
use crate::http_util::request_id;
use crate::protocol::Wire;
use crate::runtime::now_ms;
use crate::state::AppState;

/// The service, over the gateway's shared state.
#[derive(Debug, Clone)]
pub struct GrpcFront {
    state: Arc<AppState>,
}

/// The gRPC status of an error of the REST surface.
pub fn status_of(e: &ApiError) -> Status {
    let message = e.message.clone();
    match e.status {
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Status::invalid_argument(message)
        }
        StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
        StatusCode::FORBIDDEN => Status::permission_denied(message),
        StatusCode::PAYLOAD_TOO_LARGE => Status::resource_exhausted(message),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            Status::deadline_exceeded(message)
        }
        _ => Status::internal(message),
    }
}

/// The gRPC status of a model call that failed.
fn backend_status(e: &BackendError, model: &str, version: &str) -> Status {
    let message = format!("{model} {version}: {e}");
    match e {
        BackendError::Rejected { .. } => Status::invalid_argument(message),
        BackendError::Timeout(_) => Status::deadline_exceeded(message),
        BackendError::Unreachable(_) | BackendError::Status { .. } | BackendError::Malformed(_) => {
            Status::unavailable(message)
        }
        BackendError::Internal(_) => Status::internal(message),
    }
}

fn set(metadata: &mut tonic::metadata::MetadataMap, key: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        metadata.insert(key, v);
    }
}

impl GrpcFront {
    pub fn new(state: Arc<AppState>) -> Self {
        GrpcFront { state }
    }

    async fn infer(
        &self,
        headers: &axum::http::HeaderMap,
        id: &str,
        message: ModelInferRequest,
    ) -> Result<(ModelInferResponse, String, String), Status> {
        let state = &self.state;
        let ts_ms = now_ms();
        let refuse = |e: ApiError| {
            state.metrics.reject(e.code);
            status_of(&e)
        };
        dataplane::authorize(state, headers).map_err(refuse)?;
        let body =
            grpc_wire::request_body(&message).map_err(|e| refuse(dataplane::invalid_body(e)))?;
        let pinned = (!message.model_version.is_empty()).then_some(message.model_version.as_str());
        let served = dataplane::infer(
            state,
            InferRequest {
                wire: Wire::V2,
                model: &message.model_name,
                pinned,
                headers,
                body,
                id,
                ts_ms,
            },
        )
        .await
        .map_err(refuse)?;
        let reply = served
            .result
            .map_err(|e| backend_status(&e, &message.model_name, &served.version))?;
        let mut answer = grpc_wire::grpc_answer(&reply.body, reply.binary_header)
            .map_err(|e| Status::internal(format!("cannot convert the answer: {e}")))?;
        // The gateway's names, as over REST.
        answer.model_name = message.model_name.clone();
        answer.model_version = served.version.clone();
        answer.id = message.id;
        Ok((answer, served.variant, served.version))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcFront {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = crate::oip::not_ready_models(&self.state).await.is_empty();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let version = (!r.version.is_empty()).then_some(r.version.as_str());
        let ready = crate::oip::is_model_ready(&self.state, &r.name, version)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "switchyard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let version = (!r.version.is_empty()).then_some(r.version.as_str());
        let meta = crate::oip::metadata(&self.state, &r.name, version)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(grpc_wire::metadata_grpc(&meta)))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let id = request_id(&headers);
        match self.infer(&headers, &id, request.into_inner()).await {
            Ok((answer, variant, version)) => {
                let mut response = Response::new(answer);
                let m = response.metadata_mut();
                set(m, "x-request-id", &id);
                set(m, "x-switchyard-variant", &variant);
                set(m, "x-switchyard-model-version", &version);
                Ok(response)
            }
            Err(mut status) => {
                set(status.metadata_mut(), "x-request-id", &id);
                Err(status)
            }
        }
    }
}

/// Serves the gRPC endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // A message may be as large as a REST body may.
    let limit = state.max_body_bytes;
    let service =
        GrpcInferenceServiceServer::new(GrpcFront::new(state)).max_decoding_message_size(limit);
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
    {
        tracing::error!(?addr, error = %e, "the gRPC endpoint stopped");
    }
}
