//! The one error type of the HTTP edge.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::{ErrorBody, ErrorDetail};

/// An error answered to an HTTP client: `{"error": {"code", "message"}}` on switchyard's own
/// routes, `{"error": "<message>", "code": ...}` on the Open Inference Protocol's (`/v2/...`),
/// whose clients read `error` as a string.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub request_id: Option<String>,
    /// Every problem, for validation errors.
    pub problems: Vec<String>,
    pub style: ErrorStyle,
}

/// The shape of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorStyle {
    /// `{"error": {"code", "message", "problems"?}, "request_id"?}`.
    #[default]
    Switchyard,
    /// The Open Inference Protocol's `{"error": "<message>"}`, with `code` and `request_id`
    /// as extra fields.
    Oip,
}

/// The OIP error body.
#[derive(Debug, Serialize)]
struct OipErrorBody<'a> {
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            request_id: None,
            problems: Vec::new(),
            style: ErrorStyle::Switchyard,
        }
    }

    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    /// Answered in the Open Inference Protocol's form.
    pub fn oip(mut self) -> Self {
        self.style = ErrorStyle::Oip;
        self
    }

    /// The answer with its whole body: what [`IntoResponse`] gives, before the body becomes
    /// a stream (the data plane's hot loop writes it as it is).
    pub fn into_answer(self) -> axum::http::Response<bytes::Bytes> {
        let body = match self.style {
            ErrorStyle::Switchyard => serde_json::to_vec(&ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_string(),
                    message: self.message,
                    problems: self.problems,
                },
                request_id: self.request_id.clone(),
            }),
            ErrorStyle::Oip => {
                let message = if self.problems.is_empty() {
                    self.message
                } else {
                    format!("{}: {}", self.message, self.problems.join("; "))
                };
                serde_json::to_vec(&OipErrorBody {
                    error: &message,
                    code: self.code,
                    request_id: self.request_id.as_deref(),
                })
            }
        }
        // Plain structs of strings: serialising them cannot fail.
        .unwrap_or_default();
        let mut response = axum::http::Response::new(bytes::Bytes::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        if let Some(id) = self.request_id.and_then(|id| id.parse().ok()) {
            headers.insert("x-request-id", id);
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_answer().map(axum::body::Body::from)
    }
}
