//! The one client of the admin API, used by the CLI, the demo and the tests: typed methods
//! over hyper, answers read into the types of [`crate::api`].
//!
//! Refusals (non-2xx) come back as [`ClientError::Refused`] with the gateway's error body;
//! transport failures name the URL, never the token (it only travels in a header).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::backend::UpstreamClient;

use crate::api::{
    ChainCheck, ClusterView, DryRun, ErrorBody, ErrorDetail, ModelStats, ReplayReport,
    ReplayRequest, Report, RolloutEvents, RolloutHistory, RolloutList, RolloutView, RouteChanged,
    RoutesView,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to the admin API did not give an answer of the expected type.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("'{0}' is not an http:// or https:// URL")]
    BadUrl(String),
    /// The CA file to trust cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the admin token holds characters an HTTP header cannot carry")]
    BadToken,
    /// The connection could not be made.
    #[error("cannot reach the gateway at {base}: {detail}")]
    Unreachable { base: String, detail: String },
    /// The connection broke during the exchange.
    #[error("talking to the gateway at {base}: {detail}")]
    Transport { base: String, detail: String },
    #[error("the gateway at {base} did not answer within {secs} s")]
    Timeout { base: String, secs: u64 },
    /// The gateway answered with a non-success status.
    #[error("{status}: {}", error.message)]
    Refused {
        status: StatusCode,
        error: ErrorDetail,
    },
    /// A success whose body is not what the API promises.
    #[error("the gateway at {base} answered with something that is not a {what} ({detail})")]
    Malformed {
        base: String,
        what: &'static str,
        detail: String,
    },
}

/// An answer as received.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The error body of a refusal; a body that is not one becomes the message.
    pub fn error(&self) -> ErrorDetail {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(&self.body) {
            return body.error;
        }
        let raw = String::from_utf8_lossy(&self.body);
        let raw = raw.trim();
        let message = if raw.is_empty() {
            self.status
                .canonical_reason()
                .unwrap_or("no message")
                .to_string()
        } else {
            raw.chars().take(300).collect()
        };
        ErrorDetail {
            code: String::new(),
            message,
            problems: Vec::new(),
        }
    }
}

/// A client of one gateway's admin API. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: Option<HeaderValue>,
    actor: Option<HeaderValue>,
    client: UpstreamClient,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client of the gateway at `base` (`http://host:port` or `https://host:port`, whose
    /// certificate must verify against the built-in roots, see [`AdminClient::with_ca_file`];
    /// a bare `host:port` is taken as http).
    pub fn new(base: &str) -> Result<AdminClient, ClientError> {
        let mut base = base.trim().trim_end_matches('/').to_string();
        if !base.contains("://") {
            base = format!("http://{base}");
        }
        let uri: Uri = base
            .parse()
            .map_err(|_| ClientError::BadUrl(base.clone()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ClientError::BadUrl(base));
        }
        let client = Self::client(&base, None)?;
        Ok(AdminClient {
            base,
            token: None,
            actor: None,
            client,
        })
    }

    fn client(base: &str, ca_file: Option<&Path>) -> Result<UpstreamClient, ClientError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let builder = Client::builder(TokioExecutor::new());
        if !base.starts_with("https://") {
            return Ok(UpstreamClient::Http(builder.build(connector)));
        }
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(ca_file)?)
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        Ok(UpstreamClient::Https(builder.build(https)))
    }

    /// Trusts the certificates of `ca_file` (PEM) besides the built-in roots, for a gateway
    /// whose certificate a private CA signed. Without effect on an `http://` gateway.
    pub fn with_ca_file(mut self, ca_file: &Path) -> Result<AdminClient, ClientError> {
        self.client = Self::client(&self.base, Some(ca_file))?;
        Ok(self)
    }

    /// Sends `Authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: &str) -> Result<AdminClient, ClientError> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::BadToken)?;
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// Names the caller in `x-switchyard-actor`: in open mode audit events read `admin:<actor>`;
    /// with credentials the header is ignored and they read the credential's name.
    pub fn with_actor(mut self, actor: &str) -> AdminClient {
        self.actor = HeaderValue::from_str(actor).ok();
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Sends a request to `/admin/v1{path}` and returns the answer whatever its status; only
    /// transport failures are errors here.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Reply, ClientError> {
        let url = format!("{}/admin/v1{path}", self.base);
        let uri: Uri = url.parse().map_err(|_| ClientError::BadUrl(url.clone()))?;
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(actor) = &self.actor {
            request = request.header("x-switchyard-actor", actor.clone());
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/yaml");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::BadUrl(format!("{url} ({e})")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.transport(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.transport(&e))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                base: self.base.clone(),
                secs: REQUEST_TIMEOUT.as_secs(),
            })?
    }

    fn transport(&self, err: &(dyn std::error::Error + 'static)) -> ClientError {
        let mut causes = Vec::new();
        let mut refused = false;
        let mut connect = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cause {
            if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                connect |= e.is_connect();
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            }
            causes.push(e.to_string());
            cause = e.source();
        }
        let base = self.base.clone();
        if refused {
            ClientError::Unreachable {
                base,
                detail: "connection refused".into(),
            }
        } else if connect {
            ClientError::Unreachable {
                base,
                detail: causes.last().cloned().unwrap_or_default(),
            }
        } else {
            ClientError::Transport {
                base,
                detail: causes.join(": "),
            }
        }
    }

    /// A successful answer, or the refusal.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Reply, ClientError> {
        let reply = self.send(method, path, body).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(ClientError::Refused {
                status: reply.status,
                error: reply.error(),
            })
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let reply = self.call(method, path, body).await?;
        serde_json::from_slice(&reply.body).map_err(|e| ClientError::Malformed {
            base: self.base.clone(),
            what,
            detail: e.to_string(),
        })
    }

    pub async fn routes(&self) -> Result<RoutesView, ClientError> {
        self.json(Method::GET, "/routes", None, "routing table")
            .await
    }

    /// Replaces a model's strategy (YAML, the shape of `serve:` in the config file).
    pub async fn put_route(&self, model: &str, yaml: &str) -> Result<RouteChanged, ClientError> {
        let path = format!("/routes/{}", segment(model));
        self.json(Method::PUT, &path, Some(yaml.to_string()), "route")
            .await
    }

    pub async fn model_stats(
        &self,
        model: &str,
        epoch: Option<u64>,
    ) -> Result<ModelStats, ClientError> {
        let mut path = format!("/models/{}/stats", segment(model));
        if let Some(e) = epoch {
            path.push_str(&format!("?epoch={e}"));
        }
        self.json(Method::GET, &path, None, "model's statistics")
            .await
    }

    /// Starts a rollout from a YAML or JSON spec.
    pub async fn apply(&self, spec: &str) -> Result<RolloutView, ClientError> {
        self.json(Method::POST, "/rollouts", Some(spec.to_string()), "rollout")
            .await
    }

    /// Validates a spec without starting it.
    pub async fn dry_run(&self, spec: &str) -> Result<DryRun, ClientError> {
        self.json(
            Method::POST,
            "/rollouts?dry_run=true",
            Some(spec.to_string()),
            "validation",
        )
        .await
    }

    pub async fn rollouts(&self) -> Result<RolloutList, ClientError> {
        self.json(Method::GET, "/rollouts", None, "rollout list")
            .await
    }

    pub async fn rollout(&self, name: &str) -> Result<RolloutView, ClientError> {
        let path = format!("/rollouts/{}", segment(name));
        self.json(Method::GET, &path, None, "rollout").await
    }

    /// `promote`, `rollback`, `pause`, `resume`, `approve` or `abort`.
    pub async fn command(&self, name: &str, verb: &str) -> Result<RolloutView, ClientError> {
        let path = format!("/rollouts/{}/{}", segment(name), segment(verb));
        self.json(Method::POST, &path, None, "rollout").await
    }

    pub async fn events(&self, name: &str) -> Result<RolloutEvents, ClientError> {
        let path = format!("/rollouts/{}/events", segment(name));
        self.json(Method::GET, &path, None, "event list").await
    }

    pub async fn history(&self, name: &str) -> Result<RolloutHistory, ClientError> {
        let path = format!("/rollouts/{}/history", segment(name));
        self.json(Method::GET, &path, None, "history").await
    }

    /// The report as data.
    pub async fn report(&self, name: &str) -> Result<Report, ClientError> {
        let path = format!("/rollouts/{}/report?format=json", segment(name));
        self.json(Method::GET, &path, None, "report").await
    }

    /// The report rendered by the gateway: `json`, `text`, `md` or `html`.
    pub async fn report_as(&self, name: &str, format: &str) -> Result<Bytes, ClientError> {
        let path = format!(
            "/rollouts/{}/report?format={}",
            segment(name),
            segment(format)
        );
        Ok(self.call(Method::GET, &path, None).await?.body)
    }

    pub async fn audit_verify(&self) -> Result<ChainCheck, ClientError> {
        self.json(Method::GET, "/audit/verify", None, "chain check")
            .await
    }

    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.json(Method::GET, "/cluster", None, "cluster view")
            .await
    }

    /// Replays recorded requests through the gateway's backends (`POST /replay`).
    pub async fn replay(&self, request: &ReplayRequest) -> Result<ReplayReport, ClientError> {
        let body = serde_json::to_string(request).map_err(|e| ClientError::Malformed {
            base: self.base().to_string(),
            what: "replay request",
            detail: e.to_string(),
        })?;
        self.json(Method::POST, "/replay", Some(body), "replay report")
            .await
    }
}

/// A name as one URL path segment (every byte but unreserved ones percent-encoded; a name of
/// dots only is encoded whole, so it cannot climb the path).
pub fn segment(name: &str) -> String {
    let all_dots = name.chars().all(|c| c == '.');
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || (matches!(b, b'-' | b'_' | b'.' | b'~') && !all_dots) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(segment("m-canary_1.2"), "m-canary_1.2");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment(".."), "%2E%2E");
    }

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(AdminClient::new("127.0.0.1:8080").is_ok());
        assert!(AdminClient::new("https://example.com").is_ok());
        assert_eq!(
            AdminClient::new("http://127.0.0.1:8080/")
                .map(|c| c.base().to_string())
                .ok(),
            Some("http://127.0.0.1:8080".to_string())
        );
        assert!(matches!(
            AdminClient::new("ftp://example.com"),
            Err(ClientError::BadUrl(_))
        ));
        assert!(matches!(
            AdminClient::new("not a url"),
            Err(ClientError::BadUrl(_))
        ));
    }

    #[test]
    fn refusals_read_the_error_body_or_fall_back_to_the_text() {
        let r = Reply {
            status: StatusCode::CONFLICT,
            body: Bytes::from_static(
                br#"{"error":{"code":"rollout_conflict","message":"busy","problems":["a"]}}"#,
            ),
        };
        let e = r.error();
        assert_eq!(
            (e.code.as_str(), e.message.as_str(), e.problems.len()),
            ("rollout_conflict", "busy", 1)
        );
        let r = Reply {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::from_static(b"  upstream down \n"),
        };
        assert_eq!(r.error().message, "upstream down");
        let r = Reply {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::new(),
        };
        assert_eq!(r.error().message, "Bad Gateway");
    }
}
