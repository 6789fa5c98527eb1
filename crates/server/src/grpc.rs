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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tonic::metadata::MetadataValue;
use tonic::transport::server::{Connected, TcpConnectInfo};
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

/// Serves the gRPC endpoint on `listener` until `shutdown` resolves. With `tls` (the
/// listener's certificate, offering `h2` by ALPN, and the handshake's deadline) every
/// connection is a TLS one: handshakes run concurrently, off the accept loop, and a client that
/// does not finish one in time is dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<(TlsAcceptor, Duration)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    // A message may be as large as a REST body may.
    let limit = state.max_body_bytes;
    let service =
        GrpcInferenceServiceServer::new(GrpcFront::new(state)).max_decoding_message_size(limit);
    let server = tonic::transport::Server::builder().add_service(service);
    let served = match tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some((acceptor, timeout)) => {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(64);
            let accepting = tokio::spawn(accept_tls(listener, acceptor, timeout, tx));
            let incoming = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let served = server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            accepting.abort();
            served
        }
    };
    if let Err(e) = served {
        tracing::error!(?addr, error = %e, "the gRPC endpoint stopped");
    }
}

/// Accepts connections and hands each one, once its TLS handshake is done, to the server.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    ready: tokio::sync::mpsc::Sender<std::io::Result<TlsConn>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: back off rather than spin.
                tracing::warn!(error = %e, "accepting a gRPC connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // The server has stopped taking connections when this fails.
                    let _ = ready.send(Ok(TlsConn(stream))).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
            }
        });
    }
}

/// A TLS connection of the gRPC listener, with its TCP peer as tonic's connection info.
struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
