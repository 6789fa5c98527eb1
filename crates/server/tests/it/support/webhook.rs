//! A webhook receiver on `127.0.0.1:0` that records what it is sent (alert delivery and
//! rollout tests).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Semaphore;

/// A webhook receiver that records what it is sent.
#[derive(Clone)]
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    /// Bodies of the requests it answered with 200.
    pub bodies: Arc<Mutex<Vec<Value>>>,
    pub content_types: Arc<Mutex<Vec<String>>>,
    /// Every request, including failed ones.
    pub hits: Arc<AtomicU32>,
    /// Requests answered with 500 before it starts accepting.
    fail_first: u32,
    /// Requests wait for a permit before being answered.
    pub gate: Option<Arc<Semaphore>>,
    /// Served over https.
    tls: bool,
}

impl WebhookReceiver {
    /// Answers 500 to the first `fail_first` requests; with `gated`, each request waits for a
    /// permit added to `gate`.
    pub async fn start(fail_first: u32, gated: bool) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self::new(listener.local_addr().unwrap(), fail_first, gated, false);
        let app = me.router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me
    }

    /// A receiver over https with `leaf`'s certificate.
    pub async fn start_tls(leaf: &super::pki::Leaf) -> WebhookReceiver {
        let mut me = Self::new(SocketAddr::from(([127, 0, 0, 1], 0)), 0, false, true);
        me.addr = super::pki::serve_tls(me.router(), leaf).await;
        me
    }

    fn new(addr: SocketAddr, fail_first: u32, gated: bool, tls: bool) -> WebhookReceiver {
        WebhookReceiver {
            addr,
            bodies: Arc::default(),
            content_types: Arc::default(),
            hits: Arc::default(),
            fail_first,
            gate: gated.then(|| Arc::new(Semaphore::new(0))),
            tls,
        }
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/hook", post(receive))
            .with_state(self.clone())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/hook", self.addr)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().clone()
    }

    /// `(severity, kind)` of every alert received.
    pub fn kinds(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .iter()
            .map(|a| {
                (
                    a["severity"].as_str().unwrap_or("").to_string(),
                    a["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

async fn receive(State(l): State<WebhookReceiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = l.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(gate) = &l.gate {
        gate.acquire().await.unwrap().forget();
    }
    if n <= l.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    l.content_types.lock().push(content_type);
    l.bodies.lock().push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}
