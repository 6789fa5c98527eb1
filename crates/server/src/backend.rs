//! Model backends: HTTP model servers (Open Inference Protocol v2, KServe v1, plain JSON) over
//! pooled keep-alive connections, and ONNX models run in-process with tract.
//!
//! A call returns the response body in the *client's* protocol together with the normalised
//! [`Prediction`], or a [`BackendError`] classified by whose fault it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use switchyard_core::config::{BackendSpec, ModelConfig, Protocol, Task};
use switchyard_core::provenance::{Artefact, VersionProvenance};
use switchyard_core::{Outcome, Prediction};

use crate::conn_pool::{self, ExchangeError, PoolKey};
use crate::grpc_wire;
use crate::http_util::error_chain;
use crate::onnx::{OnnxError, OnnxModel, OnnxPrediction};
use crate::protocol::{self, JsonBody, Wire};
use crate::tls::TlsError;

/// A client of a backend's Open Inference Protocol gRPC service.
pub type GrpcClient =
    grpc_wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient<
        tonic::transport::Channel,
    >;

/// Shared HTTP client: one connection pool for every `http://` backend.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client of `https://` servers: one per set of trusted CAs.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector
}

fn pool() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256);
    builder
}

pub fn http_client() -> HttpClient {
    pool().build(connector())
}

/// An `https://`-only client trusting the built-in roots and the certificates of `ca_file`.
pub fn https_client(ca_file: Option<&Path>) -> Result<HttpsClient, TlsError> {
    let mut http = connector();
    // The scheme is checked by the TLS layer.
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(ca_file)?)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(pool().build(https))
}

/// The connector of an `https://` `oip-grpc` backend: the same trust as [`https_client`]
/// (built-in roots and `ca_file`), offering HTTP/2 by ALPN.
fn grpc_tls_connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut http = connector();
    http.enforce_http(false);
    let mut tls = crate::tls::client_config(ca_file)?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let mut https = HttpsConnector::from((http, tls));
    https.enforce_https();
    Ok(https)
}

/// The client of one upstream URL: plain `http://` URLs keep the plain connector (the same
/// pool and the same code path as without TLS); a call is one `match`, no allocation.
#[derive(Debug, Clone)]
pub enum UpstreamClient {
    Http(HttpClient),
    Https(HttpsClient),
}

impl UpstreamClient {
    /// Sends `request` through the shared pool.
    pub fn request(&self, request: Request<Full<Bytes>>) -> ResponseFuture {
        match self {
            UpstreamClient::Http(c) => c.request(request),
            UpstreamClient::Https(c) => c.request(request),
        }
    }

    /// Sends `request` and reads the whole answer. On a data-plane thread
    /// (`runtime.data_plane_threads`) a plain `http://` call goes over that thread's own
    /// connections to the endpoint named by `key` ([`conn_pool`]), which keeps of the answer's
    /// headers only those named in `keep`; anything else through the shared pool, which keeps
    /// them all.
    pub async fn exchange(
        &self,
        key: PoolKey,
        request: Request<Full<Bytes>>,
        keep: &[hyper::header::HeaderName],
    ) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
        if matches!(self, UpstreamClient::Http(_)) && conn_pool::installed() {
            return conn_pool::exchange(key, request, keep).await;
        }
        let response = self
            .request(request)
            .await
            .map_err(|e| ExchangeError::Send(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ExchangeError::Body(error_chain(&e)))?
            .to_bytes();
        Ok((parts, body))
    }
}

/// The gateway's outbound clients: the plain pool, and one TLS pool per `ca_file` (built on
/// first use and shared by every URL that trusts the same file).
#[derive(Debug, Clone)]
pub struct Clients {
    plain: HttpClient,
    https: Arc<parking_lot::Mutex<HashMap<Option<PathBuf>, HttpsClient>>>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    pub fn new() -> Clients {
        Clients {
            plain: http_client(),
            https: Arc::default(),
        }
    }

    pub fn plain(&self) -> &HttpClient {
        &self.plain
    }

    /// The client for `url`: TLS (trusting `ca_file` too) for `https://`, plain otherwise.
    pub fn for_url(&self, url: &str, ca_file: Option<&Path>) -> Result<UpstreamClient, TlsError> {
        if !url.starts_with("https://") {
            return Ok(UpstreamClient::Http(self.plain.clone()));
        }
        let key = ca_file.map(Path::to_path_buf);
        if let Some(client) = self.https.lock().get(&key) {
            return Ok(UpstreamClient::Https(client.clone()));
        }
        let client = https_client(ca_file)?;
        self.https.lock().insert(key, client.clone());
        Ok(UpstreamClient::Https(client))
    }
}

/// Why a backend could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The model or its server: counts against the version.
    Upstream,
    /// The client's request.
    Downstream,
    /// switchyard itself.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model server unreachable: {0}")]
    Unreachable(String),
    #[error("model did not answer within {0:?}")]
    Timeout(Duration),
    #[error("model server answered {status}")]
    Status { status: u16, body: Bytes },
    #[error("model server answered with an unreadable prediction: {0}")]
    Malformed(String),
    /// The request is not valid for this model (bad shape, wrong width, refused with 4xx).
    #[error("request rejected by the model: {message}")]
    Rejected {
        status: u16,
        message: String,
        body: Option<Bytes>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl BackendError {
    pub fn origin(&self) -> Origin {
        match self {
            BackendError::Unreachable(_)
            | BackendError::Timeout(_)
            | BackendError::Status { .. }
            | BackendError::Malformed(_) => Origin::Upstream,
            BackendError::Rejected { .. } => Origin::Downstream,
            BackendError::Internal(_) => Origin::Internal,
        }
    }

    /// Worth retrying on another attempt (the request itself was fine).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BackendError::Unreachable(_) | BackendError::Timeout(_)
        )
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            BackendError::Unreachable(_) | BackendError::Internal(_) => Outcome::Unreachable,
            BackendError::Timeout(_) => Outcome::Timeout,
            BackendError::Status { .. } => Outcome::UpstreamStatus,
            BackendError::Malformed(_) => Outcome::MalformedResponse,
            BackendError::Rejected { .. } => Outcome::ClientError,
        }
    }

    /// Status returned to the client.
    pub fn client_status(&self) -> StatusCode {
        match self {
            BackendError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            BackendError::Rejected { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response body in the client's protocol.
    pub body: Bytes,
    /// For a binary OIP answer (binary tensor data extension): the length of its JSON header,
    /// the response's `Inference-Header-Content-Length`.
    pub binary_header: Option<usize>,
    pub prediction: Prediction,
}

impl Call<'_> {
    /// An OIP v2 answer for this call's client: `answer` as JSON, or with the outputs the
    /// client asked for as raw bytes (binary tensor data extension).
    /// The answer to this call's client built from a prediction (a translated protocol).
    fn v2_or_v1_reply(
        &self,
        prediction: &Prediction,
    ) -> Result<(Bytes, Option<usize>), BackendError> {
        let answer = protocol::prediction_response(
            self.wire,
            prediction,
            None,
            self.model,
            Some(self.version),
        );
        self.v2_reply(&answer)
    }

    fn v2_reply(&self, answer: &Value) -> Result<(Bytes, Option<usize>), BackendError> {
        match self.body.binary_outputs() {
            Some(wanted) if self.wire == Wire::V2 => {
                let (body, header) = protocol::binary_answer(answer, wanted)
                    .map_err(|e| BackendError::Malformed(e.0))?;
                Ok((body, Some(header)))
            }
            _ => Ok((Bytes::from(answer.to_string()), None)),
        }
    }
}

/// One request as the backends see it.
#[derive(Debug)]
pub struct Call<'a> {
    pub wire: Wire,
    pub model: &'a str,
    pub version: &'a str,
    /// The client's body (bytes unchanged; parsed on demand).
    pub body: &'a JsonBody,
    pub task: Task,
    pub classes: Option<&'a [String]>,
}

#[derive(Debug)]
pub enum Backend {
    Http(Box<HttpBackend>),
    Onnx(OnnxBackend),
}

#[derive(Debug)]
pub struct HttpBackend {
    client: UpstreamClient,
    /// The endpoint of every call, parsed once (`Err`: the text that did not parse).
    uri: Result<hyper::Uri, String>,
    /// Where readiness is asked: the OIP model-ready route, KServe v1's model route, or (plain
    /// JSON) the endpoint itself, where any HTTP answer means the server is up.
    ready_uri: Option<hyper::Uri>,
    /// OIP backends: the model-metadata route.
    metadata_uri: Option<hyper::Uri>,
    protocol: Protocol,
    /// The server takes binary requests (OIP binary tensor data extension) as they come.
    binary_data: bool,
    /// `oip-grpc` backends: a client of the server's `inference.GRPCInferenceService` (one
    /// HTTP/2 connection, multiplexed), and the model's name there.
    grpc: Option<(GrpcClient, String)>,
    /// The `Host` header of every call (`host[:port]` of `uri`, the port when not the
    /// scheme's default), made once.
    host: Option<hyper::header::HeaderValue>,
    /// The request line and `Host` of every call to `uri`, encoded once.
    post_head: Option<Bytes>,
    /// Names the endpoint among a data-plane thread's own connections.
    pool_key: PoolKey,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct OnnxBackend {
    model: Arc<OnnxModel>,
    pub timeout: Duration,
}

impl Backend {
    /// Builds the backend of one version; loads ONNX models (and an `https://` backend's CA
    /// file) eagerly so that a bad file is a start-up error, not a request error.
    pub fn build(spec: &BackendSpec, clients: &Clients) -> Result<Backend, BuildError> {
        Ok(match spec {
            BackendSpec::Onnx { path } => Backend::Onnx(OnnxBackend {
                model: Arc::new(OnnxModel::load(path)?),
                timeout: Duration::from_millis(switchyard_core::config::DEFAULT_TIMEOUT_MS),
            }),
            BackendSpec::Http {
                url,
                protocol,
                remote_model,
                timeout_ms,
                ca_file,
                binary_data,
            } => {
                let grpc = match protocol {
                    Protocol::OipGrpc => {
                        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                            .map_err(|e| OnnxError::Load {
                                path: url.into(),
                                message: format!("not a gRPC endpoint URL: {e}"),
                            })?
                            .tcp_nodelay(true)
                            .connect_timeout(PROBE_TIMEOUT);
                        let channel = if url.starts_with("https://") {
                            endpoint.connect_with_connector_lazy(grpc_tls_connector(
                                ca_file.as_deref(),
                            )?)
                        } else {
                            endpoint.connect_lazy()
                        };
                        Some((GrpcClient::new(channel), remote_model.clone()))
                    }
                    _ => None,
                };
                let endpoint = match protocol {
                    Protocol::Oip | Protocol::OipGrpc => {
                        format!("{url}/v2/models/{remote_model}/infer")
                    }
                    Protocol::KserveV1 => format!("{url}/v1/models/{remote_model}:predict"),
                    Protocol::Json { .. } => url.clone(),
                };
                let ready = match protocol {
                    Protocol::Oip | Protocol::OipGrpc => {
                        format!("{url}/v2/models/{remote_model}/ready")
                    }
                    Protocol::KserveV1 => format!("{url}/v1/models/{remote_model}"),
                    Protocol::Json { .. } => url.clone(),
                };
                let metadata = matches!(protocol, Protocol::Oip)
                    .then(|| format!("{url}/v2/models/{remote_model}"));
                let uri: Result<hyper::Uri, String> = endpoint.parse().map_err(|_| endpoint);
                let host = uri.as_ref().ok().and_then(host_header);
                let post_head = uri
                    .as_ref()
                    .ok()
                    .map(|u| conn_pool::post_head(u, host.as_ref()));
                Backend::Http(Box::new(HttpBackend {
                    client: clients.for_url(url, ca_file.as_deref())?,
                    ready_uri: ready.parse().ok(),
                    metadata_uri: metadata.and_then(|m| m.parse().ok()),
                    host,
                    post_head,
                    pool_key: PoolKey::new(),
                    uri,
                    protocol: protocol.clone(),
                    binary_data: *binary_data,
                    grpc,
                    timeout: Duration::from_millis(*timeout_ms),
                }))
            }
        })
    }

    pub fn timeout(&self) -> Duration {
        match self {
            Backend::Http(b) => b.timeout,
            Backend::Onnx(b) => b.timeout,
        }
    }

    /// Calls the model, giving up after `timeout`.
    pub async fn call(&self, call: &Call<'_>, timeout: Duration) -> Result<Reply, BackendError> {
        match tokio::time::timeout(timeout, self.call_inner(call)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(timeout)),
        }
    }

    async fn call_inner(&self, call: &Call<'_>) -> Result<Reply, BackendError> {
        match self {
            Backend::Http(b) => b.call(call).await,
            Backend::Onnx(b) => b.call(call).await,
        }
    }
}

/// How long a readiness or metadata probe of a backend may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Backend {
    /// Whether the backend can serve now: an in-process model always can; an HTTP backend is
    /// asked (its OIP or KServe v1 readiness route answering 200, or a plain JSON endpoint
    /// answering at all) within [`PROBE_TIMEOUT`].
    pub async fn ready(&self) -> bool {
        match self {
            Backend::Onnx(_) => true,
            Backend::Http(b) => b.ready().await,
        }
    }

    /// The backend's own OIP model metadata (HTTP OIP backends), or `None`.
    pub async fn remote_metadata(&self) -> Option<Value> {
        match self {
            Backend::Onnx(_) => None,
            Backend::Http(b) => b.metadata().await,
        }
    }

    /// The in-process model, if this version runs one.
    pub fn onnx_model(&self) -> Option<&OnnxModel> {
        match self {
            Backend::Onnx(b) => Some(&b.model),
            Backend::Http(_) => None,
        }
    }
}

/// The `Host` header hyper-util's client would write for `uri`: the host, and the port when it
/// is not the scheme's default.
fn host_header(uri: &hyper::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let text = match uri.port_u16() {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

impl HttpBackend {
    /// POSTs `body` (JSON, or with `binary_header` the binary extension's octet stream) to
    /// `uri` and reads the whole answer. On a data-plane thread a plain `http://` call is
    /// encoded straight from the backend's [`conn_pool::post_head`], with no `Request` built
    /// (its builder, body and header map cost ~2,000 instructions a call).
    async fn post(
        &self,
        uri: &hyper::Uri,
        binary_header: Option<usize>,
        body: Bytes,
    ) -> Result<(hyper::http::response::Parts, Bytes), BackendError> {
        let keep = [protocol::BINARY_HEADER];
        let unreachable = |e| match e {
            ExchangeError::Send(e) => BackendError::Unreachable(e),
            ExchangeError::Body(e) => BackendError::Unreachable(format!("response body: {e}")),
        };
        if let (UpstreamClient::Http(_), Some(head), true) =
            (&self.client, &self.post_head, conn_pool::installed())
        {
            let wire = conn_pool::post_wire(head, binary_header, &body);
            return conn_pool::exchange_wire(self.pool_key, uri, false, &wire, &keep)
                .await
                .map_err(unreachable);
        }
        let mut request = Request::builder().method(Method::POST).uri(uri.clone());
        if let Some(host) = &self.host {
            // Set here, hyper-util's client does not format one per request.
            request = request.header(hyper::header::HOST, host.clone());
        }
        // Static values: a `&str` would be copied into a new allocation per request.
        request = match binary_header {
            Some(n) => request
                .header(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )
                .header(&protocol::BINARY_HEADER, n),
            None => request.header(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| BackendError::Internal(format!("cannot build a request to {uri}: {e}")))?;
        self.client
            .exchange(self.pool_key, request, &keep)
            .await
            .map_err(unreachable)
    }

    async fn get(&self, uri: &hyper::Uri) -> Option<(hyper::StatusCode, Bytes)> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(uri.clone())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        tokio::time::timeout(PROBE_TIMEOUT, exchange).await.ok()?
    }

    async fn ready(&self) -> bool {
        if let Some((client, model)) = &self.grpc {
            let mut client = client.clone();
            let ask = client.model_ready(grpc_wire::inference::ModelReadyRequest {
                name: model.clone(),
                version: String::new(),
            });
            return matches!(
                tokio::time::timeout(PROBE_TIMEOUT, ask).await,
                Ok(Ok(r)) if r.get_ref().ready
            );
        }
        let Some(uri) = &self.ready_uri else {
            return false;
        };
        match (self.get(uri).await, &self.protocol) {
            (Some(_), Protocol::Json { .. }) => true,
            (Some((status, _)), _) => status.is_success(),
            (None, _) => false,
        }
    }

    async fn metadata(&self) -> Option<Value> {
        if let Some((client, model)) = &self.grpc {
            let mut client = client.clone();
            let ask = client.model_metadata(grpc_wire::inference::ModelMetadataRequest {
                name: model.clone(),
                version: String::new(),
            });
            let answer = tokio::time::timeout(PROBE_TIMEOUT, ask).await.ok()?.ok()?;
            return Some(grpc_wire::metadata_json(answer.get_ref()));
        }
        let (status, body) = self.get(self.metadata_uri.as_ref()?).await?;
        if !status.is_success() {
            return None;
        }
        serde_json::from_slice(&body).ok()
    }

    /// A call to an `oip-grpc` backend: the request as a `ModelInferRequest` (raw tensor
    /// contents), its answer read back into the client's protocol.
    async fn call_grpc(
        &self,
        client: &GrpcClient,
        model: &str,
        call: &Call<'_>,
    ) -> Result<Reply, BackendError> {
        let rejected = |message: String| BackendError::Rejected {
            status: 400,
            message,
            body: None,
        };
        let message = match call.wire {
            Wire::V2 => grpc_wire::grpc_request(call.body, model, None),
            Wire::V1 => {
                let rows = protocol::body_rows(call.wire, call.body).map_err(|e| rejected(e.0))?;
                let v2 = protocol::rows_to_request(Wire::V2, &rows);
                grpc_wire::grpc_request(call.body, model, Some(&v2))
            }
        }
        .map_err(rejected)?;
        let answer = client
            .clone()
            .model_infer(tonic::Request::new(message))
            .await
            .map_err(|status| {
                let message = format!("{:?}: {}", status.code(), status.message());
                match status.code() {
                    tonic::Code::InvalidArgument
                    | tonic::Code::OutOfRange
                    | tonic::Code::FailedPrecondition => rejected(message),
                    tonic::Code::DeadlineExceeded => BackendError::Timeout(self.timeout),
                    tonic::Code::Unavailable => BackendError::Unreachable(message),
                    tonic::Code::NotFound => BackendError::Status {
                        status: 404,
                        body: Bytes::from(message),
                    },
                    _ => BackendError::Status {
                        status: 500,
                        body: Bytes::from(message),
                    },
                }
            })?;
        let answer =
            grpc_wire::answer_json(answer.get_ref()).map_err(|e| BackendError::Malformed(e.0))?;
        let prediction = protocol::normalise_response(Wire::V2, &answer, call.task, call.classes)
            .map_err(|e| BackendError::Malformed(e.0))?;
        let (body, binary_header) = match call.wire {
            Wire::V2 => call.v2_reply(&answer)?,
            Wire::V1 => call.v2_or_v1_reply(&prediction)?,
        };
        Ok(Reply {
            body,
            binary_header,
            prediction,
        })
    }

    async fn call(&self, call: &Call<'_>) -> Result<Reply, BackendError> {
        if let Some((client, model)) = &self.grpc {
            return self.call_grpc(client, model, call).await;
        }
        let backend_wire = match &self.protocol {
            Protocol::Oip | Protocol::OipGrpc => Some(Wire::V2),
            Protocol::KserveV1 => Some(Wire::V1),
            Protocol::Json { .. } => None,
        };
        let uri = self
            .uri
            .as_ref()
            .map_err(|text| BackendError::Internal(format!("bad backend URI {text}")))?;
        let rejected = |message: String| BackendError::Rejected {
            status: 400,
            message,
            body: None,
        };
        let binary = call.body.binary();
        let (body, binary_header) = match backend_wire {
            Some(w) if w != call.wire => {
                let rows = protocol::body_rows(call.wire, call.body).map_err(|e| rejected(e.0))?;
                (
                    Bytes::from(protocol::rows_to_request(w, &rows).to_string()),
                    None,
                )
            }
            // The client's bytes as they came: a JSON request, or a binary one to a server
            // that speaks the extension.
            Some(_) if binary.is_none() || self.binary_data => {
                (call.body.bytes().clone(), binary.map(|b| b.header_len))
            }
            // A binary request to a server that takes JSON only.
            _ if binary.is_some() => {
                let plain = call.body.plain_json().map_err(|e| rejected(e.0))?;
                (Bytes::from(plain.to_string()), None)
            }
            _ => (call.body.bytes().clone(), None),
        };
        let (answer, body) = self.post(uri, binary_header, body).await?;
        let status = answer.status;
        let answer_header = answer
            .headers
            .get(&protocol::BINARY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    BackendError::Malformed(format!(
                        "Inference-Header-Content-Length '{v}' is not a byte count"
                    ))
                })
            })
            .transpose()?;
        if !status.is_success() {
            return Err(match status.as_u16() {
                s @ (400 | 413 | 415 | 422) => BackendError::Rejected {
                    status: s,
                    message: String::from_utf8_lossy(&body).chars().take(500).collect(),
                    body: Some(body),
                },
                s => BackendError::Status { status: s, body },
            });
        }
        match (&self.protocol, backend_wire) {
            (Protocol::Json { output_pointer }, _) => {
                let parsed: Value = serde_json::from_slice(&body)
                    .map_err(|e| BackendError::Malformed(format!("not JSON: {e}")))?;
                let prediction =
                    protocol::normalise_pointer(&parsed, output_pointer, call.task, call.classes)
                        .map_err(|e| BackendError::Malformed(e.0))?;
                Ok(Reply {
                    body,
                    binary_header: None,
                    prediction,
                })
            }
            (_, Some(w)) => {
                let malformed = |e: protocol::BadResponse| BackendError::Malformed(e.0);
                // A binary answer is read as plain JSON; a JSON one straight from its bytes.
                let decoded = answer_header
                    .map(|n| protocol::decode_binary_answer(&body, n))
                    .transpose()
                    .map_err(malformed)?;
                let prediction = match &decoded {
                    Some(answer) => {
                        protocol::normalise_response(w, answer, call.task, call.classes)
                            .map_err(malformed)?
                    }
                    None => protocol::read_answer(w, &body, call.task, call.classes)
                        .map_err(|e| BackendError::Malformed(e.to_string()))?,
                };
                let wants_binary = call.wire == Wire::V2 && call.body.binary_outputs().is_some();
                let (body, binary_header) = if w != call.wire {
                    call.v2_or_v1_reply(&prediction)?
                } else if let Some(answer) = decoded {
                    // A binary answer goes back as it came to a client that asked for one.
                    if wants_binary {
                        (body, answer_header)
                    } else {
                        (Bytes::from(answer.to_string()), None)
                    }
                } else if wants_binary {
                    let answer: Value = serde_json::from_slice(&body)
                        .map_err(|e| BackendError::Malformed(format!("not JSON: {e}")))?;
                    call.v2_reply(&answer)?
                } else {
                    (body, None)
                };
                Ok(Reply {
                    body,
                    binary_header,
                    prediction,
                })
            }
            (_, None) => Err(BackendError::Internal(
                "protocol without wire format".into(),
            )),
        }
    }
}

impl OnnxBackend {
    async fn call(&self, call: &Call<'_>) -> Result<Reply, BackendError> {
        let rows =
            protocol::body_rows(call.wire, call.body).map_err(|e| BackendError::Rejected {
                status: 400,
                message: e.0,
                body: None,
            })?;
        // Small tree-model calls run right here: a thread hand-off would cost more than the
        // model (the rule and its measurements: OnnxModel::runs_inline, BENCHMARKS.md).
        let output = if self.model.runs_inline(rows.len()) {
            self.model.predict(&rows)
        } else {
            let model = self.model.clone();
            tokio::task::spawn_blocking(move || model.predict(&rows))
                .await
                .map_err(|e| BackendError::Internal(format!("inference task failed: {e}")))?
        };
        let output = output.map_err(|e| match e {
            OnnxError::Shape { .. } => BackendError::Rejected {
                status: 400,
                message: e.to_string(),
                body: None,
            },
            other => BackendError::Internal(other.to_string()),
        })?;
        let (prediction, probabilities) = match output {
            OnnxPrediction::Classification {
                class_index,
                probabilities,
            } => {
                let names = class_index
                    .iter()
                    .map(|&i| {
                        call.classes
                            .and_then(|c| c.get(i))
                            .cloned()
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect();
                (Prediction::Classes(names), Some(probabilities))
            }
            OnnxPrediction::Regression { values } => (
                Prediction::Values(values.iter().map(|&v| f64::from(v)).collect()),
                None,
            ),
        };
        let body = protocol::prediction_response(
            call.wire,
            &prediction,
            probabilities.as_deref(),
            call.model,
            Some(call.version),
        );
        let (body, binary_header) = call.v2_reply(&body)?;
        Ok(Reply {
            body,
            binary_header,
            prediction,
        })
    }
}

/// Every version's backend of one model.
#[derive(Debug)]
pub struct ModelRuntime {
    pub name: String,
    pub config: ModelConfig,
    /// The configured class names, shared with shadow jobs.
    pub classes: Option<Arc<[String]>>,
    pub backends: switchyard_core::NameMap<Arc<Backend>>,
    /// Per version, the metric series of its successful serving calls, resolved on first use
    /// (the common outcome skips building label sets on every request).
    pub served_ok: switchyard_core::NameMap<std::sync::OnceLock<crate::metrics::CallHandles>>,
    /// Per version, what it serves: the ONNX file's SHA-256, or the version an HTTP backend
    /// reported (once [`ModelRuntime::ask_backend_versions`] asked), with the configured
    /// `git_sha` and `registry`.
    pub provenance: std::collections::BTreeMap<String, VersionProvenance>,
}

impl ModelRuntime {
    /// `model`'s versions' backends built on `clients` (in-process ONNX models loaded now), as
    /// the gateway and an offline replay both run them. The error names the version.
    pub fn build(
        name: &str,
        model: &ModelConfig,
        clients: &Clients,
    ) -> Result<ModelRuntime, (String, BuildError)> {
        let mut backends = switchyard_core::NameMap::default();
        let mut provenance = std::collections::BTreeMap::new();
        for (version, spec) in &model.versions {
            let backend = Backend::build(spec, clients).map_err(|e| (version.clone(), e))?;
            let info = model.version_info.get(version).cloned().unwrap_or_default();
            provenance.insert(
                version.clone(),
                VersionProvenance {
                    model: name.to_string(),
                    version: version.clone(),
                    artefact: backend
                        .onnx_model()
                        .map_or(Artefact::Unknown, |m| Artefact::Sha256(m.sha256().into())),
                    git_sha: info.git_sha,
                    registry: info.registry,
                },
            );
            backends.insert(version.clone(), Arc::new(backend));
        }
        Ok(ModelRuntime {
            provenance,
            name: name.to_string(),
            classes: model
                .classes
                .as_ref()
                .map(|c| Arc::from(c.clone().into_boxed_slice())),
            config: model.clone(),
            served_ok: backends
                .keys()
                .map(|v| (v.clone(), std::sync::OnceLock::new()))
                .collect(),
            backends,
        })
    }

    /// Asks every HTTP backend (OIP REST or gRPC) for its model metadata, each within
    /// [`PROBE_TIMEOUT`] and all at once, and records the `versions` it reports as the
    /// version's artefact (several are joined with `,`). A backend that does not answer, or
    /// reports none, stays `Unknown`: its artefact cannot be checked at this start.
    pub async fn ask_backend_versions(&mut self) {
        let asks = self
            .backends
            .iter()
            .filter(|(_, b)| matches!(b.as_ref(), Backend::Http(_)))
            .map(|(version, backend)| async move {
                let reported = backend.remote_metadata().await.and_then(|m| {
                    let versions: Vec<String> = m
                        .get("versions")?
                        .as_array()?
                        .iter()
                        .filter_map(|v| match v {
                            Value::String(s) if !s.is_empty() => Some(s.clone()),
                            Value::Number(n) => Some(n.to_string()),
                            _ => None,
                        })
                        .collect();
                    (!versions.is_empty()).then(|| versions.join(","))
                });
                (version.clone(), reported)
            });
        for (version, reported) in futures_util::future::join_all(asks).await {
            if let (Some(reported), Some(p)) = (reported, self.provenance.get_mut(&version)) {
                p.artefact = Artefact::BackendVersion(reported);
            }
        }
    }

    /// Why `version` cannot be served: it is not one of this model's, which are listed.
    pub fn unknown_version(&self, version: &str) -> String {
        let versions: Vec<&str> = self.config.versions.keys().map(String::as_str).collect();
        format!(
            "model '{}' has no version '{version}' (versions: {})",
            self.name,
            versions.join(", ")
        )
    }

    /// Counts one serving call of `version` in the metrics; a successful one through the
    /// series resolved on first use, anything else by label set.
    pub fn count_serving(
        &self,
        metrics: &crate::metrics::Metrics,
        version: &str,
        outcome: Outcome,
        seconds: f64,
    ) {
        let role = switchyard_core::Role::Serving.as_str();
        match self.served_ok.get(version) {
            Some(handles) if outcome == Outcome::Ok => handles
                .get_or_init(|| metrics.call_handles(&self.name, version, role, outcome.as_str()))
                .observe(seconds),
            _ => metrics.call(&self.name, version, role, outcome.as_str(), seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::host_header;

    /// What HTTP/1.1 (RFC 9112 §3.2) and hyper-util's client write: the port only when it is not
    /// the scheme's default.
    #[test]
    fn the_host_header_carries_the_port_only_when_it_is_not_the_default() {
        let host =
            |uri: &str| host_header(&uri.parse().unwrap()).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            host("http://127.0.0.1:8080/v2/models/m/infer").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            host("http://models.internal/v2").unwrap(),
            "models.internal"
        );
        assert_eq!(
            host("http://models.internal:80/v2").unwrap(),
            "models.internal"
        );
        assert_eq!(
            host("https://models.internal:443/v2").unwrap(),
            "models.internal"
        );
        assert_eq!(
            host("https://models.internal:80/v2").unwrap(),
            "models.internal:80"
        );
        assert_eq!(host("http://[::1]:9000/v2").unwrap(), "[::1]:9000");
        assert_eq!(host("/relative/only"), None);
    }
}
