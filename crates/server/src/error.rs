//! The one error type of the HTTP edge.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorDetail};

/// An error answered to an HTTP client as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub request_id: Option<String>,
    /// Every problem, for validation errors.
    pub problems: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            request_id: None,
            problems: Vec::new(),
        }
    }

    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                problems: self.problems,
            },
            request_id: self.request_id.clone(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(id) = self.request_id.and_then(|id| id.parse().ok()) {
            response.headers_mut().insert("x-request-id", id);
        }
        response
    }
}
