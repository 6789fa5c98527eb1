//! The dashboard at `/ui`: one HTML page, one script and one stylesheet, embedded in the
//! binary with `include_str!` (no build step, nothing fetched from elsewhere).
//!
//! The assets hold no data and need no token: the page reads everything from the admin API
//! under `/admin/v1` with the operator's bearer token (kept in `sessionStorage`, sent as
//! `Authorization: Bearer`), polls it every second and draws its charts as SVG.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The page.
pub const HTML: &str = include_str!("../assets/ui.html");
/// Its script: fetching, polling, rendering and SVG charts, in plain JavaScript.
pub const JS: &str = include_str!("../assets/ui.js");
/// Its stylesheet.
pub const CSS: &str = include_str!("../assets/ui.css");

/// Only the gateway's own origin, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response();
    if content_type.starts_with("text/html") {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// `GET /ui` and `GET /ui/`: the dashboard page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

/// `GET /ui/{file}`: the script and the stylesheet.
pub async fn file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "ui.js" => asset("text/javascript; charset=utf-8", JS),
        "ui.css" => asset("text/css; charset=utf-8", CSS),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dashboard file '{file}'"),
        )
        .into_response(),
    }
}
