//! A data-plane thread's own connections to plain `http://` backends: per backend, a stack of
//! idle HTTP/1 connections (hyper's `client::conn::http1`), used by that thread only. A call
//! takes the most recently used idle connection (or opens one), sends, reads the whole answer
//! and puts the connection back. No lock, no hashing, no shared pool: hyper-util's pool costs
//! ~4,600 instructions per request (its checkout, return, lock and two SipHashes of the key),
//! which a thread that owns its connections does not need (BENCHMARKS.md, "Proxy cost").
//!
//! Only for threads that run one current-thread runtime for their whole life
//! (`cores::DataPlaneThreads`, which calls [`install`] on each): a connection is driven by a task on that runtime, and the
//! future of a call never moves to another thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Idle connections kept per backend and thread (as the shared pool's
/// `pool_max_idle_per_host`).
const MAX_IDLE: usize = 256;

/// Idle time before TCP keepalive probes (as `backend::connector`'s).
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

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

type Idle = Vec<(PoolKey, Vec<SendRequest<Full<Bytes>>>)>;

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

fn take_idle(key: PoolKey) -> Option<SendRequest<Full<Bytes>>> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let idle = pool.as_mut()?;
        let (_, stack) = idle.iter_mut().find(|(k, _)| *k == key)?;
        stack.pop()
    })
}

fn put_idle(key: PoolKey, sender: SendRequest<Full<Bytes>>) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let Some(idle) = pool.as_mut() else {
            return;
        };
        match idle.iter_mut().find(|(k, _)| *k == key) {
            Some((_, stack)) if stack.len() < MAX_IDLE => stack.push(sender),
            Some(_) => {}
            None => idle.push((key, vec![sender])),
        }
    });
}

/// Opens a connection to the host and port of `uri` (an `http://` URI) and starts its task on
/// this thread.
async fn connect(uri: &hyper::Uri) -> Result<SendRequest<Full<Bytes>>, String> {
    let host = uri.host().ok_or_else(|| format!("no host in {uri}"))?;
    // An IPv6 literal without its brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("tcp connect error: {e}"))?;
    // Requests are small and answered at once: no Nagle delay. Keepalive probes after 60 s
    // idle, as the shared pool's connector, so a peer gone without a FIN is noticed.
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE));
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| crate::http_util::error_chain(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends `request` over one of this thread's connections to its endpoint and reads the whole
/// answer. A request that an idle connection could not take (the backend closed it meanwhile)
/// is sent again on another; one that may have reached the backend is not. Call only where
/// [`installed`] is true.
pub async fn exchange(
    key: PoolKey,
    mut request: Request<Full<Bytes>>,
) -> Result<(hyper::http::response::Parts, Bytes), ExchangeError> {
    // Where to connect, then the request line's target in origin form (`/path?query`), as
    // HTTP/1.1 servers expect from a client that is not talking to a proxy (uvicorn, behind
    // MLServer, answers an absolute-form target 404).
    let full = request.uri().clone();
    if let Some(target) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = hyper::Uri::from(target);
    }
    loop {
        let (mut sender, reused) = match take_idle(key) {
            Some(sender) => (sender, true),
            None => (connect(&full).await.map_err(ExchangeError::Send)?, false),
        };
        if sender.ready().await.is_err() {
            if reused {
                continue;
            }
            return Err(ExchangeError::Send("the new connection closed".into()));
        }
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // Not sent: the connection was closed under us; another one takes it.
                Some(unsent) if reused => {
                    request = unsent;
                    continue;
                }
                _ => {
                    return Err(ExchangeError::Send(crate::http_util::error_chain(
                        e.error(),
                    )))
                }
            },
        };
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ExchangeError::Body(crate::http_util::error_chain(&e)))?
            .to_bytes();
        // The answer is read whole: the connection takes the next request once its task
        // has seen that (`ready` above waits for it).
        if !sender.is_closed() {
            put_idle(key, sender);
        }
        return Ok((parts, body));
    }
}
