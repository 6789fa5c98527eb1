//! The data plane's own HTTP/1.1 loop for the hot route (`POST /v2/models/{m}/infer`) on the
//! data-plane threads, after pingora's: the request head is parsed by `httparse` from one read
//! buffer, the handler is called directly, and the answer is written with one call. A tokio
//! proxy loop without hyper used about half the CPU per request of the same proxy on hyper's
//! server and client (10.3 against 19.8 µs; BENCHMARKS.md, "Proxy cost").
//!
//! Only plain requests take it: HTTP/1.1, `POST` to a plain infer path, one valid
//! `Content-Length` within the body limit, no `Transfer-Encoding`, `Expect` or `Upgrade`. The
//! first request that is anything else (another route, a chunked body, a head over the limit, a
//! malformed head) hands the connection, with every byte read so far, to hyper's server for the
//! rest of its life ([`Outcome::HandOff`]): hyper answers it exactly as it answers every
//! connection that never came here. Timeouts are hyper's: the head within
//! `header_read_timeout_ms` of waiting for it (which also ends an idle kept-alive connection),
//! the body within `body_read_timeout_ms` (408 `body_timeout`, then the connection closes).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::dataplane;
use crate::error::ApiError;
use crate::http_util::{read_more, BodyReadTimeout};
use crate::protocol::Wire;
use crate::state::AppState;

/// The most header fields read in a request head (hyper's default as well).
const MAX_HEADERS: usize = 100;

/// The connection limits this loop applies (the listener's, as hyper's builder has them).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
}

/// How a connection left the loop.
#[derive(Debug)]
pub enum Outcome {
    /// Closed: by the client, an error, a timeout or the gateway's shutdown.
    Closed,
    /// A request this loop does not serve: hyper takes the connection from here.
    HandOff(Rewind),
}

/// A connection with bytes already read from it: reads return those first.
#[derive(Debug)]
pub struct Rewind {
    pre: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request this loop serves, read from the head.
struct Plain {
    model: String,
    head_len: usize,
    body_len: usize,
    close: bool,
    /// Where each header's name and value are in the head.
    fields: Vec<Field>,
}

/// A header field's name and value as byte ranges of the head.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// A request head's header fields where they lie in the head's bytes: `httparse` checked
/// them (names are tokens; values hold no control bytes but tab), and nothing is hashed or
/// copied until the handler asks for a header by name.
#[derive(Debug)]
pub struct RawHead {
    head: Bytes,
    fields: Vec<Field>,
}

impl RawHead {
    fn bytes(&self, (start, end): (u32, u32)) -> &[u8] {
        self.head
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    fn find(&self, name: &[u8]) -> Option<&[u8]> {
        // Lengths first: most names differ in length from the one looked for.
        self.fields
            .iter()
            .find(|f| {
                (f.name.1 - f.name.0) as usize == name.len()
                    && self.bytes(f.name).eq_ignore_ascii_case(name)
            })
            .map(|f| self.bytes(f.value))
    }
}

impl crate::http_util::Headers for RawHead {
    fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        self.find(name.as_str().as_bytes())
    }

    fn first_named(&self, name: &str) -> Option<&[u8]> {
        self.find(name.as_bytes())
    }
}

/// What the head says: serve it here, hand the connection off, or wait for more bytes.
enum Parsed {
    Plain(Box<Plain>),
    HandOff,
    Partial,
}

/// Reads a request head from `buf` (see the module's documentation for what is plain).
fn parse(buf: &[u8], max_body: usize, max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        // hyper answers a head over the limit 431, whole or still arriving.
        Ok(httparse::Status::Complete(n)) if n > max_head => return Parsed::HandOff,
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Parsed::HandOff,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::HandOff,
    };
    if req.version != Some(1) || req.method != Some("POST") {
        return Parsed::HandOff;
    }
    // The route is matched on the path without its query, as the router does.
    let path = req
        .path
        .map(|p| p.split_once('?').map_or(p, |(path, _)| path));
    let Some(model) = path.and_then(dataplane::infer_route_model) else {
        return Parsed::HandOff;
    };
    // What hyper's server would refuse as a URI, hyper refuses here too.
    if req.path.unwrap_or("/").parse::<axum::http::Uri>().is_err() {
        return Parsed::HandOff;
    }
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut body_len = None;
    let mut close = false;
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        (start as u32, (start + part.len()) as u32)
    };
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let is = |known: &HeaderName| name.eq_ignore_ascii_case(known.as_str().as_bytes());
        if is(&header::CONTENT_LENGTH) {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (n, body_len) {
                (Some(n), None) => body_len = Some(n),
                _ => return Parsed::HandOff,
            }
        } else if is(&header::TRANSFER_ENCODING) || is(&header::EXPECT) || is(&header::UPGRADE) {
            return Parsed::HandOff;
        } else if is(&header::CONNECTION) && crate::http_util::has_token(h.value, "close") {
            close = true;
        }
        fields.push(Field {
            name: at(name),
            value: at(h.value),
        });
    }
    let Some(body_len) = body_len.filter(|n| *n <= max_body) else {
        return Parsed::HandOff;
    };
    Parsed::Plain(Box::new(Plain {
        model: model.to_string(),
        head_len,
        body_len,
        close,
        fields,
    }))
}

thread_local! {
    /// The `date` header's value and the second it is for.
    static DATE: std::cell::RefCell<(u64, HeaderValue)> =
        const { std::cell::RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// The current `Date` header value, formatted once per second per thread.
fn date() -> HeaderValue {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != second {
            let text = httpdate::fmt_http_date(now);
            d.1 = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
            d.0 = second;
        }
        d.1.clone()
    })
}

/// The answer as it goes on the wire: status line, the handler's headers but the framing
/// ones, `content-length`, `date`, `connection: close` when the connection ends after it.
fn encode(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    routed: Option<&dataplane::Routed>,
    body: &[u8],
    close: bool,
) {
    out.clear();
    out.reserve(256 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    crate::http_util::put_header_lines(out, headers, Some(&header::DATE));
    for (name, value) in routed.iter().flat_map(|r| r.headers()) {
        crate::http_util::put_header_line(out, &name, value.as_bytes());
    }
    out.put_slice(b"content-length: ");
    out.put_slice(crate::http_util::itoa(body.len(), &mut [0; 20]));
    if close {
        out.put_slice(b"\r\nconnection: close");
    }
    out.put_slice(b"\r\ndate: ");
    out.put_slice(date().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

/// Serves `stream`'s plain requests until it closes, the gateway shuts down (`shutdown` turns
/// true: an idle connection closes at once, a request in flight is answered first) or a
/// request needs hyper.
pub async fn serve(
    mut stream: TcpStream,
    state: Arc<AppState>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = BytesMut::with_capacity(1024);
    loop {
        // The head, within the header timeout of starting to wait for it.
        let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
        let plain = loop {
            // Nothing read yet: no head to parse (the header array alone is 3 KB to clear).
            let parsed = if buf.is_empty() {
                Parsed::Partial
            } else {
                parse(&buf, state.max_body_bytes, limits.max_header_bytes)
            };
            match parsed {
                Parsed::Plain(plain) => break plain,
                Parsed::HandOff => {
                    return Outcome::HandOff(Rewind {
                        pre: buf.freeze(),
                        stream,
                    })
                }
                Parsed::Partial => {}
            }
            if *shutdown.borrow() && buf.is_empty() {
                return Outcome::Closed;
            }
            tokio::select! {
                read = tokio::time::timeout_at(deadline, read_more(&mut stream, &mut buf)) => match read {
                    Ok(Ok(n)) if n > 0 => {}
                    // Closed, failed, or no head in time: hyper closes these silently too.
                    _ => return Outcome::Closed,
                },
                _ = shutdown.changed(), if buf.is_empty() => return Outcome::Closed,
            }
        };
        let Plain {
            model,
            head_len,
            body_len,
            close,
            fields,
        } = *plain;
        // The body, within the body timeout.
        let total = head_len + body_len;
        if buf.len() < total {
            let read_all = async {
                while buf.len() < total {
                    if read_more(&mut stream, &mut buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            match tokio::time::timeout(state.body_read_timeout, read_all).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Outcome::Closed,
                Err(_) => {
                    let answer = ApiError::from(BodyReadTimeout(state.body_read_timeout))
                        .oip()
                        .into_answer();
                    let (parts, body) = answer.into_parts();
                    encode(&mut out, parts.status, &parts.headers, None, &body, true);
                    let _ = stream.write_all(&out).await;
                    return Outcome::Closed;
                }
            }
        }
        let mut message = buf.split_to(total);
        let head = RawHead {
            head: message.split_to(head_len).freeze(),
            fields,
        };
        let body = dataplane::InBody::Whole(message.freeze());
        let answer =
            dataplane::handle_parts(state.clone(), Wire::V2, model, None, &head, body).await;
        let (parts, body) = answer.response.into_parts();
        let close = close || *shutdown.borrow();
        encode(
            &mut out,
            parts.status,
            &parts.headers,
            answer.routed.as_ref(),
            &body,
            close,
        );
        if stream.write_all(&out).await.is_err() || close {
            return Outcome::Closed;
        }
        // Keep the buffer from growing for good after one large request.
        if buf.is_empty() && buf.capacity() > 64 * 1024 {
            buf = BytesMut::with_capacity(8 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_util::Headers;

    fn plain(text: &str) -> Box<Plain> {
        match parse(text.as_bytes(), 1000, 200) {
            Parsed::Plain(p) => p,
            Parsed::HandOff => panic!("handed off: {text}"),
            Parsed::Partial => panic!("partial: {text}"),
        }
    }

    fn handed_off(text: &str) -> bool {
        matches!(parse(text.as_bytes(), 1000, 200), Parsed::HandOff)
    }

    #[test]
    fn plain_infer_requests_are_served_here() {
        let text = "POST /v2/models/yield/infer HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\
                    X-Tester: T1\r\nX-Tester: T2\r\nConnection: keep-alive, close\r\n\r\n{}";
        let p = plain(text);
        assert_eq!(
            (p.model.as_str(), p.head_len, p.body_len),
            ("yield", text.len() - 2, 2)
        );
        assert!(p.close);
        // Headers are read from the head by name, case aside, the first of a repeated one.
        let head = RawHead {
            head: Bytes::copy_from_slice(&text.as_bytes()[..p.head_len]),
            fields: p.fields.clone(),
        };
        assert_eq!(head.fields.len(), 5);
        assert_eq!(head.first_named("x-tester"), Some(&b"T1"[..]));
        assert_eq!(head.first(&header::HOST), Some(&b"gw"[..]));
        assert_eq!(
            head.first(&header::CONNECTION),
            Some(&b"keep-alive, close"[..])
        );
        assert_eq!(head.first_named("x-absent"), None);
        let p = plain("POST /v2/models/m/infer?x=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert_eq!((p.model.as_str(), p.body_len, p.close), ("m", 0, false));
        assert!(matches!(
            parse(
                b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Len",
                1000,
                200
            ),
            Parsed::Partial
        ));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for text in [
            "GET /v2/models/m/infer HTTP/1.1\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
            "POST /v2/models/m/ready HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "POST /v2/models/m/versions/v1/infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",
            "POST /v2/models/m/infer HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n",
            "BLAH\r\n\r\n",
        ] {
            assert!(handed_off(text), "{text}");
        }
        // A whole head over the limit (hyper answers 431).
        let long = format!(
            "POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 2\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(150)
        );
        assert!(handed_off(&long));
        // So is one still arriving once it is past the limit.
        assert!(handed_off(&long[..long.len() - 4]));
    }

    #[test]
    fn answers_carry_their_own_framing() {
        let mut out = BytesMut::new();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        encode(&mut out, StatusCode::OK, &headers, None, b"{}", true);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
                 connection: close\r\ndate: "
            ),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n{}"), "{text}");
    }
}
