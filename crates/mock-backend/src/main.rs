//! A tiny model server for benchmarks: it answers every Open Inference Protocol v2 inference
//! call with the same ~110-byte response, so that what a load test measures is the proxy in
//! front of it, not a model.
//!
//! - `POST /v2/models/{name}/infer` → 200 with a fixed OIP v2 response (one `label` output,
//!   which switchyard's protocol parser reads as class `1`), after `--delay-ms`; a fraction
//!   `--fail-rate` of calls is answered 500 instead.
//! - `GET /v2/health/live`, `/v2/health/ready`, `/v2/models/{name}/ready` → 200.
//! - `GET /stats` → `{"infer": N, "failed": M}`: calls answered so far (the bench harness uses
//!   it to check that mirrors really reached a shadow).
//!
//! With `--proxy-to URL` it is instead the thinnest proxy the gateway's stack allows: every
//! request is forwarded, body and content type unchanged, through the same hyper server and
//! pooled hyper-util client switchyard uses, and the answer returned as it came. No JSON, no
//! routing, no log: the load test's `hyper` arm, the floor under switchyard's own costs.
//!
//! The bound address (`--listen 127.0.0.1:0` picks a free port) is printed on stdout as
//! `http://ADDR`, one line, once the socket accepts connections.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use switchyard_server::backend::HttpClient as Client;
use tokio::net::TcpListener;

/// The fixed inference response: OIP v2, one INT64 `label` output holding class 1.
const INFER_RESPONSE: &[u8] = br#"{"model_name":"mock","model_version":"1","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[1]}]}"#;
const FAILURE_RESPONSE: &[u8] = br#"{"error":"mock-backend: injected failure"}"#;

#[derive(Debug, Parser)]
#[command(
    name = "mock-backend",
    about = "A tiny OIP v2 model server for benchmarks"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Delay before every inference answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Fraction of inference calls answered 500 (0.0 ..= 1.0).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// Forward every request to this base URL (e.g. `http://127.0.0.1:9000`) instead of
    /// answering it.
    #[arg(long)]
    proxy_to: Option<String>,
    /// One current-thread runtime per thread (`--threads` of them), each accepting on its own
    /// `SO_REUSEPORT` listener on the same address and, with `--proxy-to`, with its own
    /// upstream pool: no work stealing and no cross-thread wake-ups. Without it, one
    /// multi-threaded runtime with `--threads` workers and one listener.
    #[arg(long)]
    per_core: bool,
    /// With `--proxy-to` and `--per-core`: forward with a hand-written HTTP/1.1 loop on
    /// `httparse` instead of hyper (one upstream connection per client connection, requests
    /// and answers with `Content-Length` only). Not a product: the floor a tokio proxy without
    /// hyper's machinery reaches, for the load test's comparison.
    #[arg(long, requires_all = ["proxy_to", "per_core"])]
    raw: bool,
}

/// What the server does with a request.
#[derive(Debug, Clone)]
enum Mode {
    Answer(Arc<Behaviour>),
    /// Boxed: the client is much larger than the answer mode's `Arc`.
    Proxy {
        client: Box<Client>,
        base: Arc<str>,
    },
}

#[derive(Debug, Default)]
struct Counters {
    infer: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug)]
struct Behaviour {
    delay: Duration,
    fail_rate: f64,
    counters: Counters,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fail_rate),
        "--fail-rate must be between 0 and 1, got {}",
        args.fail_rate
    );
    if args.per_core {
        return serve_per_core(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        announce(listener.local_addr()?)?;
        serve(listener, mode(&args)?).await
    })
}

fn announce(addr: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "http://{addr}")?;
    out.flush()?;
    Ok(())
}

/// `--per-core`: thread 0 binds (a port of 0 becomes a real one), the others bind the same
/// address; the kernel spreads new connections over the listeners.
fn serve_per_core(args: Args) -> anyhow::Result<()> {
    let args = Arc::new(args);
    // One answering behaviour (its counters are the server's), one upstream pool per thread.
    let answer = match args.proxy_to {
        None => Some(mode(&args)?),
        Some(_) => None,
    };
    let mut threads = Vec::new();
    let mut addr = args.listen;
    for i in 0..args.threads.max(1) {
        let (tx, rx) = std::sync::mpsc::channel();
        let args = args.clone();
        let answer = answer.clone();
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(async move {
                let bound = (|| -> std::io::Result<TcpListener> {
                    let socket = match addr {
                        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    socket.set_reuseport(true)?;
                    socket.set_reuseaddr(true)?;
                    socket.bind(addr)?;
                    socket.listen(1024)
                })();
                let listener = match bound {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(format!("binding {addr}: {e}")));
                        return Ok(());
                    }
                };
                let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
                if args.raw {
                    return raw::serve(listener, raw::upstream(args.proxy_to.as_deref())?).await;
                }
                let mode = match answer {
                    Some(m) => m,
                    None => mode(&args)?,
                };
                serve(listener, mode).await
            })
        }));
        addr = rx
            .recv()
            .context("a server thread ended before binding")?
            .map_err(anyhow::Error::msg)?;
        if i == 0 {
            announce(addr)?;
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a server thread panicked"))??;
    }
    Ok(())
}

fn mode(args: &Args) -> anyhow::Result<Mode> {
    Ok(match &args.proxy_to {
        Some(base) => {
            let base = base.trim_end_matches('/');
            anyhow::ensure!(
                base.starts_with("http://"),
                "--proxy-to must be an http:// URL, got {base}"
            );
            // switchyard's own backend client (pool and socket settings).
            let client = switchyard_server::backend::http_client();
            Mode::Proxy {
                client: Box::new(client),
                base: base.into(),
            }
        }
        None => Mode::Answer(Arc::new(Behaviour {
            delay: Duration::from_millis(args.delay_ms),
            fail_rate: args.fail_rate,
            counters: Counters::default(),
        })),
    })
}

/// The next connection, without Nagle's delay. A failed accept (out of file descriptors and
/// the like) backs off instead of spinning.
async fn accept(listener: &TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                eprintln!("mock-backend: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve(listener: TcpListener, mode: Mode) -> anyhow::Result<()> {
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    loop {
        let stream = accept(&listener).await;
        let mode = mode.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| {
                let mode = mode.clone();
                async move {
                    match mode {
                        Mode::Answer(behaviour) => handle(request, behaviour).await,
                        Mode::Proxy { client, base } => Ok(forward(request, &client, &base).await),
                    }
                }
            }),
        );
        tokio::spawn(async move {
            // Clients hanging up mid-request are not the mock's business.
            let _ = conn.await;
        });
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    request: Request<Incoming>,
    behaviour: Arc<Behaviour>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let is_infer = request.method() == Method::POST
        && path.starts_with("/v2/models/")
        && path.ends_with("/infer");
    if is_infer {
        // Read the whole request, as a model server would, so the connection stays reusable.
        if request.into_body().collect().await.is_err() {
            return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new()));
        }
        if !behaviour.delay.is_zero() {
            tokio::time::sleep(behaviour.delay).await;
        }
        let counters = &behaviour.counters;
        counters.infer.fetch_add(1, Ordering::Relaxed);
        if behaviour.fail_rate > 0.0 && rand::random::<f64>() < behaviour.fail_rate {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from_static(FAILURE_RESPONSE),
            ));
        }
        return Ok(reply(StatusCode::OK, Bytes::from_static(INFER_RESPONSE)));
    }
    let response = match (request.method(), path) {
        (&Method::GET, "/v2/health/live" | "/v2/health/ready" | "/healthz") => {
            reply(StatusCode::OK, Bytes::from_static(b"{\"ready\":true}"))
        }
        (&Method::GET, p) if p.starts_with("/v2/models/") && p.ends_with("/ready") => {
            reply(StatusCode::OK, Bytes::from_static(b"{\"ready\":true}"))
        }
        (&Method::GET, "/stats") => {
            let c = &behaviour.counters;
            reply(
                StatusCode::OK,
                Bytes::from(format!(
                    "{{\"infer\":{},\"failed\":{}}}",
                    c.infer.load(Ordering::Relaxed),
                    c.failed.load(Ordering::Relaxed)
                )),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"error\":\"not found\"}"),
        ),
    };
    Ok(response)
}

/// Forwards one request to `base` and returns the answer (502 when the upstream fails).
async fn forward(request: Request<Incoming>, client: &Client, base: &str) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = Request::new(Full::new(body));
    *upstream.method_mut() = parts.method;
    match format!("{base}{path}").parse() {
        Ok(uri) => *upstream.uri_mut() = uri,
        Err(_) => return reply(StatusCode::BAD_REQUEST, Bytes::new()),
    }
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        upstream.headers_mut().insert(CONTENT_TYPE, ct.clone());
    }
    let answer = match client.request(upstream).await {
        Ok(response) => response,
        Err(_) => return reply(StatusCode::BAD_GATEWAY, Bytes::new()),
    };
    let status = answer.status();
    match answer.into_body().collect().await {
        Ok(body) => reply(status, body.to_bytes()),
        Err(_) => reply(StatusCode::BAD_GATEWAY, Bytes::new()),
    }
}

/// `--raw`: the proxy loop without hyper.
mod raw {
    use std::io;
    use std::net::SocketAddr;

    use anyhow::Context;
    use bytes::{BufMut, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub fn upstream(base: Option<&str>) -> anyhow::Result<SocketAddr> {
        let base = base.context("--raw needs --proxy-to")?;
        let authority = base
            .strip_prefix("http://")
            .context("--proxy-to must be an http:// URL")?
            .trim_end_matches('/');
        authority
            .parse()
            .with_context(|| format!("--raw needs an IP:port upstream, got {authority}"))
    }

    pub async fn serve(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
        loop {
            let stream = super::accept(&listener).await;
            tokio::spawn(async move {
                let _ = connection(stream, upstream).await;
            });
        }
    }

    fn bad(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what.to_string())
    }

    /// The head's length and the body's (`Content-Length`), once the head is complete.
    fn content_length(headers: &[httparse::Header<'_>]) -> io::Result<usize> {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map_or(Ok(0), |h| {
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| bad("bad content-length"))
            })
    }

    /// Reads until `buf` holds one whole message; returns (head length, body length).
    async fn read_message(
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        request: bool,
    ) -> io::Result<Option<(usize, usize)>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let parsed = if request {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(buf).map_err(|_| bad("bad request head"))? {
                    httparse::Status::Complete(n) => Some((n, content_length(req.headers)?)),
                    httparse::Status::Partial => None,
                }
            } else {
                let mut res = httparse::Response::new(&mut headers);
                match res.parse(buf).map_err(|_| bad("bad response head"))? {
                    httparse::Status::Complete(n) => Some((n, content_length(res.headers)?)),
                    httparse::Status::Partial => None,
                }
            };
            if let Some((head, body)) = parsed {
                while buf.len() < head + body {
                    if stream.read_buf(buf).await? == 0 {
                        return Err(bad("closed mid-message"));
                    }
                }
                return Ok(Some((head, body)));
            }
            if stream.read_buf(buf).await? == 0 {
                return if buf.is_empty() {
                    Ok(None)
                } else {
                    Err(bad("closed mid-head"))
                };
            }
        }
    }

    /// Ends a head being written: the content type as received, our own length, the blank line.
    fn end_head(out: &mut BytesMut, headers: &[httparse::Header<'_>], body_len: usize) {
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-type") {
                out.put_slice(b"\r\ncontent-type: ");
                out.put_slice(h.value);
            }
        }
        out.put_slice(b"\r\ncontent-length: ");
        out.put_slice(body_len.to_string().as_bytes());
        out.put_slice(b"\r\n\r\n");
    }

    async fn connection(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
        let mut up = TcpStream::connect(upstream).await?;
        up.set_nodelay(true)?;
        let host = upstream.to_string();
        let (mut cbuf, mut ubuf, mut out) = (
            BytesMut::with_capacity(8192),
            BytesMut::with_capacity(8192),
            BytesMut::with_capacity(8192),
        );
        loop {
            let Some((head, body)) = read_message(&mut client, &mut cbuf, true).await? else {
                return Ok(());
            };
            // The upstream request: method and target as received, a Host of its own, the
            // content type and length, the body untouched.
            {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                req.parse(&cbuf[..head])
                    .map_err(|_| bad("bad request head"))?;
                out.clear();
                out.put_slice(req.method.unwrap_or("GET").as_bytes());
                out.put_u8(b' ');
                out.put_slice(req.path.unwrap_or("/").as_bytes());
                out.put_slice(b" HTTP/1.1\r\nhost: ");
                out.put_slice(host.as_bytes());
                end_head(&mut out, req.headers, body);
            }
            out.put_slice(&cbuf[head..head + body]);
            let _ = cbuf.split_to(head + body);
            up.write_all(&out).await?;
            let Some((rhead, rbody)) = read_message(&mut up, &mut ubuf, false).await? else {
                return Err(bad("upstream closed"));
            };
            // The answer: status line and content type as received, our own length.
            {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut res = httparse::Response::new(&mut headers);
                res.parse(&ubuf[..rhead])
                    .map_err(|_| bad("bad response head"))?;
                out.clear();
                out.put_slice(b"HTTP/1.1 ");
                out.put_slice(res.code.unwrap_or(502).to_string().as_bytes());
                out.put_u8(b' ');
                out.put_slice(res.reason.unwrap_or("").as_bytes());
                end_head(&mut out, res.headers, rbody);
            }
            out.put_slice(&ubuf[rhead..rhead + rbody]);
            let _ = ubuf.split_to(rhead + rbody);
            client.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_response_is_small_oip_json() {
        let text = std::str::from_utf8(INFER_RESPONSE).unwrap();
        assert!((90..=130).contains(&text.len()), "{} bytes", text.len());
        assert!(text.starts_with('{') && text.contains("\"outputs\":[{\"name\":\"label\""));
    }
}
