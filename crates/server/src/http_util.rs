//! HTTP helpers shared by the handlers (data plane, feedback, admin): request ids, the JSON
//! content-type check, and request bodies read within a size limit and a deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use crate::error::ApiError;
use crate::runtime::now_ms;

/// `x-request-id`, parsed once (a lookup by `&str` parses the name on every call).
pub const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// A request's headers as the data plane reads them, whichever way the request came: a
/// `HeaderMap` (hyper's connections, gRPC metadata, replays) or the hot loop's parsed head
/// (`hot_http1::RawHead`), which builds no map: names hashed and values copied into one cost
/// ~3,000 instructions a request (BENCHMARKS.md, "Proxy cost").
pub trait Headers: Sync + std::fmt::Debug {
    /// The first value of the header `name`.
    fn first(&self, name: &HeaderName) -> Option<&[u8]>;
    /// The same for a name given as text (lowercase), such as a configured routing header.
    fn first_named(&self, name: &str) -> Option<&[u8]>;
}

impl Headers for HeaderMap {
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn first_named(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// A header value as text when it is all visible ASCII (with spaces and tabs), as
/// `HeaderValue::to_str` reads it.
pub fn header_str(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether `value` may be a header value as `HeaderValue` checks it: no control bytes but
/// tab, no DEL.
pub fn is_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// The client's request id when it sent a usable one, else a fresh random id.
pub fn request_id(headers: &dyn Headers) -> String {
    headers
        .first(&X_REQUEST_ID)
        .and_then(header_str)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_string)
}

/// A fresh request id: 32 hex digits, the first 12 the current Unix time in milliseconds and
/// the rest random (the layout of a UUIDv7 without its version bits). Ids that grow with time
/// keep the log's request-id index appending at its right edge instead of touching a random
/// page of it for every record.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let ms = u128::from(now_ms() as u64 & 0xffff_ffff_ffff);
    let id = (ms << 80) | (rand::random::<u128>() & ((1u128 << 80) - 1));
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((id >> ((31 - i) * 4)) & 0xf) as usize];
    }
    // Written as bytes: a `String` collected from chars cost ~20 instructions per digit. Hex
    // digits are ASCII, so the conversion cannot fail.
    String::from_utf8(digits.to_vec()).unwrap_or_default()
}

/// Reads more of `stream` into `buf`, making room first when less than 1 KiB is free; `Ok(0)`
/// when the peer closed. The data plane's HTTP/1.1 loops read through it.
pub(crate) async fn read_more(
    stream: &mut tokio::net::TcpStream,
    buf: &mut bytes::BytesMut,
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8 * 1024);
    }
    stream.read_buf(buf).await
}

/// Whether a comma-separated header value (`Connection`, `Transfer-Encoding`) lists `token`,
/// case-insensitively.
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Writes `headers` as HTTP/1.1 header lines (`name: value\r\n`), leaving out the framing
/// ones (`content-length`, `transfer-encoding`, `connection`) and any in `skip`: the data
/// plane's own HTTP/1.1 code writes those itself.
pub(crate) fn put_header_lines(
    out: &mut bytes::BytesMut,
    headers: &HeaderMap,
    skip: Option<&HeaderName>,
) {
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || Some(name) == skip
        {
            continue;
        }
        put_header_line(out, name, value.as_bytes());
    }
}

/// Writes one header line, `name: value\r\n`.
pub(crate) fn put_header_line(out: &mut bytes::BytesMut, name: &HeaderName, value: &[u8]) {
    use bytes::BufMut;
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf` (lengths on the wire, without a `String`).
pub(crate) fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// The media type of the request's `Content-Type`, parameters and spaces cut off; `None` when
/// there is none or its value is not visible ASCII (as `HeaderValue::to_str` reads it).
fn content_mime(headers: &dyn Headers) -> Option<&[u8]> {
    let value = headers
        .first(&header::CONTENT_TYPE)
        .filter(|v| header_str(v).is_some())?;
    Some(
        value
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii(),
    )
}

/// Whether the request declares `application/octet-stream`.
pub fn is_octet_stream(headers: &dyn Headers) -> bool {
    content_mime(headers).is_some_and(|m| m.eq_ignore_ascii_case(b"application/octet-stream"))
}

pub fn is_json_content_type(headers: &dyn Headers) -> bool {
    let Some(mime) = content_mime(headers) else {
        return true;
    };
    let starts = |prefix: &[u8]| {
        mime.len() >= prefix.len() && mime[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let ends = |suffix: &[u8]| {
        mime.len() >= suffix.len() && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    mime.eq_ignore_ascii_case(b"application/json") || (starts(b"application/") && ends(b"+json"))
}

/// The answer to a body over `limit` bytes.
pub(crate) fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body exceeds {limit} bytes"),
    )
}

/// Reads the body, refusing bodies over `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if let Some(timeout) = find_body_timeout(&e) {
            return timeout.into();
        }
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            body_too_large(limit)
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("cannot read request body: {e}"),
            )
        }
    })
}

/// The error of a request body that did not arrive in time.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request body not received within {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyReadTimeout {}

/// Answered 408, by the body reader and by the data plane's own HTTP/1.1 loop alike.
impl From<BodyReadTimeout> for ApiError {
    fn from(timeout: BodyReadTimeout) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            timeout.to_string(),
        )
    }
}

fn find_body_timeout(e: &(dyn std::error::Error + 'static)) -> Option<BodyReadTimeout> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(t) = err.downcast_ref::<BodyReadTimeout>() {
            return Some(*t);
        }
        current = err.source();
    }
    None
}

/// A request body with a deadline: once `timeout` has passed since it was wrapped, polling it
/// fails with [`BodyReadTimeout`] (frames that are ready are still delivered first). Every
/// request gets one from the router's middleware, so each reader of a body (`read_body`) is
/// bounded without knowing the setting.
///
/// The timer is armed only when the body first has to be waited for: a small body usually
/// arrives with its headers, and registering (then cancelling) a timer for it on every request
/// cost more than reading it.
#[derive(Debug)]
pub struct TimedBody {
    inner: Body,
    timeout: Duration,
    until: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    pub fn new(inner: Body, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            until: tokio::time::Instant::now() + timeout,
            deadline: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let until = this.until;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyReadTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An error and its sources, `: `-separated (a TLS failure's reason is in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 1000, usize::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn header_text_is_read_as_header_value_reads_it() {
        for value in [
            &b"application/json"[..],
            b"a\tb c",
            b"",
            b"caf\xc3\xa9",
            b"\xff",
            b"x\x7f",
            b"~!",
            b"new\nline",
            b"nul\x00",
        ] {
            let by_http = HeaderValue::from_bytes(value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_string));
            assert_eq!(header_str(value).map(str::to_string), by_http, "{value:?}");
            assert_eq!(
                is_header_value(value),
                HeaderValue::from_bytes(value).is_ok(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn json_content_types_are_recognised_in_any_case_with_parameters() {
        let accepts = |ct: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(ct) = ct {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            }
            is_json_content_type(&headers)
        };
        for ok in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some(" application/json "),
            Some("application/vnd.api+json"),
            Some("APPLICATION/PROBLEM+JSON;v=1"),
        ] {
            assert!(accepts(ok), "{ok:?} refused");
        }
        for refused in [
            "text/plain",
            "text/json",
            "application/jsonx",
            "application/",
            "+json",
            "application/xml",
            "",
        ] {
            assert!(!accepts(Some(refused)), "{refused:?} accepted");
        }
    }

    #[test]
    fn new_request_ids_start_with_the_time_and_grow_with_it() {
        let before = now_ms();
        let first = new_request_id();
        let after = now_ms();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
        let ms = i64::from_str_radix(&first[..12], 16).expect("hex prefix");
        assert!(
            (before..=after).contains(&ms),
            "{ms} not in {before}..={after}"
        );
        // Ids of a later millisecond sort after earlier ones; within one they are distinct.
        let later = loop {
            let id = new_request_id();
            if id[..12] != first[..12] {
                break id;
            }
        };
        assert!(later > first, "{later} <= {first}");
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn a_printable_client_request_id_is_kept_and_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("order-42"));
        assert_eq!(request_id(&headers), "order-42");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        let replaced = request_id(&headers);
        assert_eq!(replaced.len(), 32);
        assert_ne!(replaced, "has space");
    }
}
