//! A data-plane thread's own connections to plain `http://` backends: per backend, a stack of
//! idle HTTP/1.1 connections used by that thread only, spoken to by a small hand-written client
//! (requests encoded into one buffer and written with one call, answers parsed by `httparse`).
//! A call takes the most recently used idle connection (or opens one), sends, reads the whole
//! answer and puts the connection back. No lock, no hashing, no shared pool, no connection
//! task: hyper-util's pool costs ~4,600 instructions per request (its checkout, return, lock
//! and two SipHashes of the key), and hyper's client connection a task and two wake-ups per
//! call, neither of which a thread that owns its connections needs (BENCHMARKS.md, "Proxy
//! cost").
//!
//! Answers are framed as RFC 9112 says: `Content-Length`, `Transfer-Encoding: chunked`
//! (decoded, trailers dropped), or until the backend closes; 1xx interim answers are skipped.
//! A connection goes back to the stack only when its answer ended cleanly with nothing after
//! it and neither side asked to close.
//!
//! Only for threads that run one current-thread runtime for their whole life
//! (`cores::DataPlaneThreads`, which calls [`install`] on each): the future of a call never
//! moves to another thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http_util::itoa;

/// Idle connections kept per backend and thread (as the shared pool's
/// `pool_max_idle_per_host`).
const MAX_IDLE: usize = 256;

/// Idle time before TCP keepalive probes (as `backend::connector`'s).
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest answer head read (status line and headers), and the most headers in it.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// Names a backend's endpoint in the thread pools: given once when the backend is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolKey(u64);

impl PoolKey {
    pub fn new() -> PoolKey {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PoolKey(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for PoolKey {
    fn default() -> Self {
        PoolKey::new()
    }
}

/// Why a call failed: before an answer arrived (the request may not have reached the backend),
/// or while its body was read.
#[derive(Debug)]
pub enum ExchangeError {
    Send(String),
    Body(String),
}

/// One kept-alive connection and what was read from it past the last answer (nothing, for a
/// connection in the stack).
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

type Idle = Vec<(PoolKey, Vec<Conn>)>;

thread_local! {
    /// `Some` on a data-plane thread.
    static POOL: RefCell<Option<Idle>> = const { RefCell::new(None) };
}

/// Gives the calling thread its own connections (see the module's documentation).
pub fn install() {
    POOL.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

/// Whether the calling thread has its own connections.
pub fn installed() -> bool {
    POOL.with(|p| p.borrow().is_some())
}

/// The most recently used idle connection that is still open: one the backend closed (or
/// wrote to unasked) while it sat in the stack is dropped. Tokio knows from the last poll
/// whether the socket became readable, so an idle, open connection costs no system call here.
fn take_idle(key: PoolKey) -> Option<Conn> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let idle = pool.as_mut()?;
        let (_, stack) = idle.iter_mut().find(|(k, _)| *k == key)?;
        while let Some(conn) = stack.pop() {
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                // Closed (0), an error, or bytes nobody asked for: not reusable.
                _ => continue,
            }
        }
        None
    })
}

fn put_idle(key: PoolKey, conn: Conn) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let Some(idle) = pool.as_mut() else {
            return;
        };
        match idle.iter_mut().find(|(k, _)| *k == key) {
            Some((_, stack)) if stack.len() < MAX_IDLE => stack.push(conn),
            Some(_) => {}
            None => idle.push((key, vec![conn])),
        }
    });
}

/// Opens a connection to the host and port of `uri` (an `http://` URI).
async fn connect(uri: &hyper::Uri) -> Result<Conn, String> {
    let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
    // An IPv6 literal without its brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("tcp connect error: {e}"))?;
    // Requests are small and answered at once: no Nagle delay. Keepalive probes after 60 s
    // idle, as the shared pool's connector, so a peer gone without a FIN is noticed.
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE));
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(8 * 1024),
    })
}

/// The request as it goes on the wire: request line with an origin-form target (`/path?query`,
/// as HTTP/1.1 servers expect from a client that is not talking to a proxy: uvicorn, behind
/// MLServer, answers an absolute-form target 404), the request's headers but its framing ones,
/// `content-length`, the body.
fn encode(parts: &hyper::http::request::Parts, body: &[u8]) -> BytesMut {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = BytesMut::with_capacity(256 + body.len());
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    crate::http_util::put_header_lines(&mut out, &parts.headers, None);
    out.put_slice(b"content-length: ");
    out.put_slice(itoa(body.len(), &mut [0; 20]));
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
    out
}

/// The part of every POST to `uri` that does not change from call to call: the request line
/// and the `Host` header. Made once per backend, so that a call encodes only its content type,
/// length and body ([`post_wire`]).
pub fn post_head(uri: &hyper::Uri, host: Option<&HeaderValue>) -> Bytes {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = BytesMut::with_capacity(64 + target.len());
    out.put_slice(b"POST ");
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        out.put_slice(b"host: ");
        out.put_slice(host.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// A POST of `body` after `head` (from [`post_head`]): JSON, or with `binary_header` the
/// binary tensor extension's octet stream and its JSON length. Byte for byte what [`encode`]
/// makes of the same request built with `http`'s builder, without building it.
pub fn post_wire(head: &[u8], binary_header: Option<usize>, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(head.len() + 128 + body.len());
    out.put_slice(head);
    match binary_header {
        None => out.put_slice(b"content-type: application/json\r\n"),
        Some(n) => {
            out.put_slice(b"content-type: application/octet-stream\r\n");
            out.put_slice(crate::protocol::BINARY_HEADER.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(itoa(n, &mut [0; 20]));
            out.put_slice(b"\r\n");
        }
    }
    out.put_slice(b"content-length: ");
    out.put_slice(itoa(body.len(), &mut [0; 20]));
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
    out
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A parsed answer head: status, headers, framing, whether the connection may be reused, and
/// the head's length in the buffer.
struct Head {
    parts: hyper::http::response::Parts,
    framing: Framing,
    keep_alive: bool,
    len: usize,
}

/// Parses an answer head from `buf`: `Ok(None)` until it is complete. Of its headers only
/// those named in `keep` go into the head's header map: the gateway forwards none of a
/// backend's headers and reads one or two, and building a map entry for each of the others
/// (`date`, `server`, `content-type`, …) cost ~2,000 instructions per answer (BENCHMARKS.md,
/// "Proxy cost").
fn parse_head(buf: &[u8], head_request: bool, keep: &[HeaderName]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid HTTP answer: {e}")),
    };
    let code = res.code.unwrap_or(0);
    let status = hyper::StatusCode::from_u16(code)
        .map_err(|_| format!("invalid HTTP answer: status {code}"))?;
    let http10 = res.version == Some(0);
    let mut builder = hyper::Response::builder().status(status);
    let mut framing = None;
    let mut keep_alive = !http10;
    for h in res.headers.iter() {
        let is = |name: &HeaderName| h.name.eq_ignore_ascii_case(name.as_str());
        if is(&TRANSFER_ENCODING) {
            // Only chunked is the last coding a client can read (RFC 9112 §6.3).
            if !h.value.trim_ascii().ends_with(b"chunked") {
                return Err(format!(
                    "unsupported transfer-encoding in the answer: {}",
                    String::from_utf8_lossy(h.value)
                ));
            }
            framing = Some(Framing::Chunked);
        } else if is(&CONTENT_LENGTH) && framing != Some(Framing::Chunked) {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| "invalid content-length in the answer".to_string())?;
            if matches!(framing, Some(Framing::Length(m)) if m != n) {
                return Err("conflicting content-length values in the answer".into());
            }
            framing = Some(Framing::Length(n));
        } else if is(&CONNECTION) {
            if crate::http_util::has_token(h.value, "close") {
                keep_alive = false;
            } else if crate::http_util::has_token(h.value, "keep-alive") {
                keep_alive = true;
            }
        }
        if let Some(name) = keep.iter().find(|name| is(name)) {
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| format!("invalid value of {} in the answer", h.name))?;
            if let Some(map) = builder.headers_mut() {
                map.append(name.clone(), value);
            }
        }
    }
    // No body whatever the headers say: an answer to HEAD, 1xx, 204, 304 (RFC 9112 §6.3).
    let framing = if head_request || code < 200 || code == 204 || code == 304 {
        Framing::Length(0)
    } else {
        framing.unwrap_or(Framing::UntilClose)
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let parts = builder
        .body(())
        .map_err(|e| format!("invalid HTTP answer: {e}"))?
        .into_parts()
        .0;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        len,
    }))
}

/// Reads more into `conn.buf`; `Ok(0)` when the backend closed.
async fn fill(conn: &mut Conn) -> std::io::Result<usize> {
    crate::http_util::read_more(&mut conn.stream, &mut conn.buf).await
}

/// The length of the next CRLF-terminated line in `conn.buf` (without its CRLF), reading more
/// until it is there; `what` names the line in errors.
async fn read_line(conn: &mut Conn, max: usize, what: &str) -> Result<usize, String> {
    loop {
        if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(i);
        }
        if conn.buf.len() > max {
            return Err(format!("{what} too long"));
        }
        if fill(conn).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!("closed inside the {what}"));
        }
    }
}

/// Reads one chunked body from `conn.buf` (and the socket): the data, then the trailers
/// (dropped) and the final empty line.
async fn read_chunked(conn: &mut Conn) -> Result<Bytes, String> {
    let mut body = BytesMut::new();
    loop {
        let line_end = read_line(conn, 4096, "chunk size line").await?;
        let size_text = &conn.buf[..line_end];
        let size_text = size_text
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| "invalid chunk size".to_string())?;
        conn.buf.advance(line_end + 2);
        if size == 0 {
            // Trailer fields up to an empty line.
            loop {
                let line_end = read_line(conn, MAX_HEAD, "trailer").await?;
                conn.buf.advance(line_end + 2);
                if line_end == 0 {
                    return Ok(body.freeze());
                }
            }
        }
        while conn.buf.len() < size + 2 {
            if fill(conn).await.map_err(|e| e.to_string())? == 0 {
                return Err("closed inside a chunk".into());
            }
        }
        if &conn.buf[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        body.put_slice(&conn.buf[..size]);
        conn.buf.advance(size + 2);
    }
}

/// Sends `request` over one of this thread's connections to its endpoint and reads the whole
/// answer, keeping of its headers those named in `keep`. A request that an idle connection
/// could not take (the write failed: the backend closed it meanwhile) is sent again on
/// another; one that may have reached the backend is not. Call only where [`installed`] is
/// true.
pub async fn exchange(
    key: PoolKey,
    request: Request<Full<Bytes>>,
    keep: &[HeaderName],
) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let wire = encode(&parts, &body);
    let head_request = parts.method == hyper::Method::HEAD;
    exchange_wire(key, &parts.uri, head_request, &wire, keep).await
}

/// [`exchange`] of a request already encoded (`wire`) for `uri`; `head_request` says it is a
/// `HEAD`, whose answer has no body whatever its length says.
pub async fn exchange_wire(
    key: PoolKey,
    uri: &hyper::Uri,
    head_request: bool,
    wire: &[u8],
    keep: &[HeaderName],
) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
    loop {
        let (mut conn, reused) = match take_idle(key) {
            Some(conn) => (conn, true),
            None => (connect(uri).await.map_err(ExchangeError::Send)?, false),
        };
        if let Err(e) = conn.stream.write_all(wire).await {
            if reused {
                continue;
            }
            return Err(ExchangeError::Send(format!("writing the request: {e}")));
        }
        // The head, skipping interim (1xx) answers.
        let head = loop {
            // Nothing read yet: no head to parse (the header array alone is 3 KB to clear).
            let parsed = if conn.buf.is_empty() {
                None
            } else {
                parse_head(&conn.buf, head_request, keep).map_err(ExchangeError::Send)?
            };
            match parsed {
                Some(head) if head.parts.status.is_informational() => {
                    conn.buf.advance(head.len);
                }
                Some(head) => break head,
                None if conn.buf.len() > MAX_HEAD => {
                    return Err(ExchangeError::Send("answer head too long".into()))
                }
                None => match fill(&mut conn).await {
                    Ok(0) if conn.buf.is_empty() => {
                        return Err(ExchangeError::Send(
                            "connection closed before an answer".into(),
                        ))
                    }
                    Ok(0) => {
                        return Err(ExchangeError::Send(
                            "connection closed inside the answer head".into(),
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(ExchangeError::Send(format!("reading the answer: {e}"))),
                },
            }
        };
        conn.buf.advance(head.len);
        let body = match head.framing {
            Framing::Length(n) => {
                while conn.buf.len() < n {
                    match fill(&mut conn).await {
                        Ok(0) => return Err(ExchangeError::Body("closed inside the body".into())),
                        Ok(_) => {}
                        Err(e) => return Err(ExchangeError::Body(e.to_string())),
                    }
                }
                conn.buf.split_to(n).freeze()
            }
            Framing::Chunked => read_chunked(&mut conn).await.map_err(ExchangeError::Body)?,
            Framing::UntilClose => {
                loop {
                    match fill(&mut conn).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(ExchangeError::Body(e.to_string())),
                    }
                }
                conn.buf.split().freeze()
            }
        };
        // Reused only when the answer ended cleanly with nothing after it.
        if head.keep_alive && conn.buf.is_empty() {
            put_idle(key, conn);
        }
        return Ok((head.parts, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_encoded_with_an_origin_form_target_and_their_own_length() {
        let request = Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:9000/v2/models/m/infer?x=1")
            .header("host", "127.0.0.1:9000")
            .header("content-type", "application/json")
            .header("content-length", "999")
            .header("connection", "close")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let wire = encode(&parts, b"{}");
        assert_eq!(
            std::str::from_utf8(&wire).unwrap(),
            "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_post_is_encoded_as_the_builder_would_have_it() {
        let uri: hyper::Uri = "http://127.0.0.1:9000/v2/models/m/infer?x=1"
            .parse()
            .unwrap();
        let host = HeaderValue::from_static("127.0.0.1:9000");
        for (host, binary) in [(Some(&host), None), (Some(&host), Some(7)), (None, Some(0))] {
            let body = b"{\"inputs\": []}1234567";
            let mut built = Request::builder().method("POST").uri(uri.clone());
            if let Some(h) = host {
                built = built.header("host", h);
            }
            built = match binary {
                None => built.header("content-type", "application/json"),
                Some(n) => built
                    .header("content-type", "application/octet-stream")
                    .header(&crate::protocol::BINARY_HEADER, n),
            };
            let (parts, ()) = built.body(()).unwrap().into_parts();
            assert_eq!(
                post_wire(&post_head(&uri, host), binary, body),
                encode(&parts, body),
                "{host:?} {binary:?}"
            );
        }
    }

    #[test]
    fn answer_heads_give_framing_and_reuse() {
        let keep = [HeaderName::from_static("x-a")];
        let parse =
            |text: &str, head: bool| parse_head(text.as_bytes(), head, &keep).unwrap().unwrap();
        let text =
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nX-B: c\r\nx-a: d\r\n\r\nhello";
        let h = parse(text, false);
        assert_eq!(
            (h.framing, h.keep_alive, h.len),
            (Framing::Length(5), true, text.len() - 5)
        );
        // Only the headers asked for are kept, each of their values in order.
        let kept: Vec<_> = h
            .parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(kept, [("x-a", "b"), ("x-a", "d")]);
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Chunked);
        let h = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let h = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!h.keep_alive);
        let h = parse(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
        let h = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = parse(
            "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Length(0));
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Length(0));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false, &keep)
            .unwrap()
            .is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes(), false, &keep).is_err(), "{bad}");
        }
    }
}
