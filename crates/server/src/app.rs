//! Assembling the gateway: shared state, the router, start and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use switchyard_core::config::GatewayConfig;
use switchyard_core::{Aggregates, ModelRoute, RoutingTable};
use switchyard_store::{spawn_log_writer, Cluster, LogWriterConfig, StoreError, StoreUrl};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::alerts::{AlertSender, RetryPolicy, WebhookConfig};
use crate::auth::Auth;
use crate::backend::{Clients, ModelRuntime};
use crate::controller::{Clock, Controller, SystemClock};
use crate::cores::DataPlaneThreads;
use crate::metrics::Metrics;
use crate::shadow::ShadowDispatcher;
use crate::state::{decode_table, AppState};
use crate::tls::{TlsAcceptorHandle, TlsError};
use crate::{admin, dataplane, feedback, oip};
use tokio_rustls::TlsAcceptor;

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    /// The gRPC endpoint's address (`grpc_listen`), when it has one.
    pub grpc_addr: Option<SocketAddr>,
    grpc: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    pub state: Arc<AppState>,
    pub controller: Arc<Controller>,
    controller_loop: Option<tokio::task::JoinHandle<()>>,
    cluster_sync: Option<tokio::task::JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    /// The threads serving client connections (`runtime.data_plane_threads`), when not the
    /// shared runtime.
    cores: Option<Arc<DataPlaneThreads>>,
    /// The listener's certificate with `tls:`, and the task watching its files.
    tls: Option<TlsAcceptorHandle>,
    tls_watch: Option<tokio::task::JoinHandle<()>>,
}

/// Options that do not come from the configuration file.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The store: a SQLite file (one gateway) or a PostgreSQL database (replicas).
    pub store: StoreUrl,
    /// This replica's name: its rows in the shared log, its aggregate window. Keep it stable
    /// across restarts (a restarted replica rebuilds its window from its own rows).
    pub replica: Option<String>,
    /// Where this replica's admin API is reachable by the other replicas (commands sent to a
    /// replica that is not the controller are forwarded there); default `http://<bound addr>`.
    pub advertise_url: Option<String>,
    /// How often a replica polls the shared routing table and publishes its aggregates.
    pub cluster_sync_ms: u64,
    /// The token of `admin_token_env` (already read from the environment): an `admin`
    /// credential named `admin`, beside the configuration's `auth.credentials`.
    pub admin_token: Option<String>,
    /// Time for the controller; wall-clock by default.
    pub clock: Option<Arc<dyn Clock>>,
    /// Run the controller loop every `tick_ms` (tests drive ticks themselves).
    pub controller_loop: bool,
    /// Directory relative paths in rollout specs resolve against.
    pub base_dir: PathBuf,
    /// Retry policy of alert webhooks.
    pub retry: RetryPolicy,
    /// How often the listener's certificate and key files are looked at for a change
    /// (`None`: only [`Gateway::reload_tls`], e.g. on SIGHUP).
    pub tls_reload_poll: Option<Duration>,
    /// CA certificates trusted (besides the built-in roots) when forwarding admin commands to
    /// the controller replica's `https://` URL.
    pub peer_ca_file: Option<PathBuf>,
}

impl StartOptions {
    pub fn new(store: impl Into<StoreUrl>) -> Self {
        StartOptions {
            store: store.into(),
            replica: None,
            advertise_url: None,
            cluster_sync_ms: 200,
            admin_token: None,
            clock: None,
            controller_loop: true,
            base_dir: PathBuf::from("."),
            retry: RetryPolicy::default(),
            tls_reload_poll: Some(crate::tls::DEFAULT_RELOAD_POLL),
            peer_ca_file: None,
        }
    }
}

impl Gateway {
    /// Loads every backend, opens the store and serves on `listener`.
    pub async fn start(
        config: GatewayConfig,
        listener: TcpListener,
        options: StartOptions,
    ) -> anyhow::Result<Gateway> {
        let auth = Auth::load(&config.auth, options.admin_token.as_deref())
            .context("reading the credentials")?;
        let tls = match &config.tls {
            Some(files) => Some(TlsAcceptorHandle::load(files).context("tls")?),
            None => None,
        };
        if auth.is_open() {
            tracing::warn!("{}", auth.describe());
        } else {
            tracing::info!("{}", auth.describe());
        }
        let clients = Clients::new();
        let mut models = switchyard_core::NameMap::default();
        let mut routes = switchyard_core::NameMap::default();
        for (name, model) in &config.models {
            let mut runtime =
                ModelRuntime::build(name, model, &clients).map_err(|(version, e)| {
                    anyhow::Error::new(e).context(format!("model {name} version {version}"))
                })?;
            runtime.ask_backend_versions().await;
            routes.insert(
                name.clone(),
                ModelRoute {
                    salt: model.salt.clone(),
                    strategy: model.strategy.clone(),
                },
            );
            models.insert(name.clone(), runtime);
        }
        let replica = match (&options.replica, options.store.is_postgres()) {
            (Some(name), _) => name.clone(),
            (None, false) => "local".to_string(),
            (None, true) => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("replica-{}", std::process::id())),
        };
        let cluster = match &options.store {
            StoreUrl::Postgres(_) => Some(
                Cluster::open(&options.store, &replica)
                    .with_context(|| format!("opening the shared store at {}", options.store))?,
            ),
            StoreUrl::Sqlite(_) => None,
        };
        let (log, _writer) = spawn_log_writer(LogWriterConfig {
            store: options.store.clone(),
            replica: replica.clone(),
            queue_capacity: config.log.queue_capacity,
            batch_size: config.log.batch_size,
            commit_interval: Duration::from_millis(config.log.commit_interval_ms),
            snapshot_every: config.log.snapshot_every,
            retention: config.log.retention.map(|r| switchyard_store::Retention {
                max_age_ms: r.max_age_ms,
                max_records: r.max_records,
                batch: r.batch as usize,
            }),
            max_size_bytes: config.log.max_size_bytes,
            versions: models
                .values()
                .flat_map(|m| m.provenance.values().cloned())
                .collect(),
        })
        .with_context(|| format!("opening the store at {}", options.store))?;
        for m in models.values() {
            for p in m.provenance.values() {
                tracing::info!(model = %p.model, version = %p.version, artefact = %p.describe(), "serving");
            }
        }
        let metrics = Arc::new(Metrics::new());
        let shadow = ShadowDispatcher::spawn(config.shadow, log.clone(), metrics.clone());
        // Epochs continue after a restart, so statistics of a resumed step stay separate.
        let epoch = log
            .aggregates()
            .lock()
            .series
            .keys()
            .map(|k| k.epoch)
            .max()
            .unwrap_or(0)
            + 1;
        let mut table = RoutingTable { epoch, routes };
        if let Some(cluster) = &cluster {
            table =
                adopt_shared_table(cluster, table).context("joining the shared routing table")?;
        }
        let state = Arc::new(AppState {
            table: ArcSwap::from_pointee(table),
            models,
            log,
            shadow,
            metrics,
            auth,
            max_body_bytes: config.max_body_bytes,
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            log_settings: config.log,
            store: options.store.clone(),
            replica,
            cluster,
            remote_aggregates: parking_lot::Mutex::new(Aggregates::default()),
            admin_client: clients.clone(),
            peer_ca_file: options.peer_ca_file.clone(),
        });
        let webhooks = config
            .webhooks
            .iter()
            .map(|w| WebhookConfig {
                url: w.url.clone(),
                min_severity: w.min_severity,
                ca_file: w.ca_file.clone(),
            })
            .collect();
        let alerts = AlertSender::spawn(webhooks, options.store.clone(), options.retry);
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise = options
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let controller = Controller::open(
            state.clone(),
            &options.store,
            alerts,
            clock,
            options.base_dir.clone(),
            advertise,
        )
        .context("opening the rollout store")?;
        let controller_loop = options
            .controller_loop
            .then(|| controller.spawn_loop(config.tick_ms));
        let cluster_sync = state
            .cluster
            .is_some()
            .then(|| spawn_cluster_sync(state.clone(), options.cluster_sync_ms));
        let cores = match config.data_plane_threads {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(crate::cores::default_threads()),
        }
        .map(DataPlaneThreads::start)
        .transpose()
        .context("starting the data-plane threads")?
        .map(Arc::new);
        let app = Front {
            state: state.clone(),
            app: TowerToHyperService::new(router(state.clone(), controller.clone())),
            rest: cores.is_some().then(tokio::runtime::Handle::current),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let http = http1_builder(&config);
        let acceptor = tls.as_ref().map(TlsAcceptorHandle::acceptor);
        let handshake_timeout = Duration::from_millis(config.header_read_timeout_ms);
        let hot = crate::hot_http1::Limits {
            max_header_bytes: config.max_header_bytes,
            header_read_timeout: handshake_timeout,
        };
        let server = tokio::spawn(serve(
            listener,
            app,
            http,
            acceptor.map(|a| (a, handshake_timeout)),
            cores.clone().map(|c| (c, hot)),
            rx,
        ));
        let tls_watch = match (&tls, options.tls_reload_poll) {
            (Some(t), Some(every)) => Some(t.watch(every)),
            _ => None,
        };
        tracing::info!(url = %format!("{scheme}://{addr}"), "switchyard gateway listening");
        let (grpc_addr, grpc) = match &config.grpc_listen {
            Some(at) => {
                let grpc_listener = TcpListener::bind(at.as_str())
                    .await
                    .with_context(|| format!("cannot listen on {at} (grpc_listen)"))?;
                let grpc_addr = grpc_listener.local_addr()?;
                let (tx, rx) = oneshot::channel::<()>();
                let acceptor = match &tls {
                    Some(t) => Some((
                        t.acceptor_with_alpn(vec![b"h2".to_vec()])
                            .context("tls (grpc_listen)")?,
                        handshake_timeout,
                    )),
                    None => None,
                };
                let task = tokio::spawn(crate::grpc::serve(
                    grpc_listener,
                    state.clone(),
                    acceptor,
                    async {
                        let _ = rx.await;
                    },
                ));
                tracing::info!(addr = %grpc_addr, tls = tls.is_some(), "switchyard gRPC endpoint listening");
                (Some(grpc_addr), Some((tx, task)))
            }
            None => (None, None),
        };
        Ok(Gateway {
            addr,
            grpc_addr,
            grpc,
            state,
            controller,
            controller_loop,
            cluster_sync,
            shutdown: Some(tx),
            server,
            cores,
            tls,
            tls_watch,
        })
    }

    /// Stops accepting requests, finishes those in flight and commits the log.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await.context("server task")?;
        if let Some(cores) = self.cores.take().and_then(Arc::into_inner) {
            tokio::task::spawn_blocking(move || cores.stop())
                .await
                .context("stopping the data-plane threads")?;
        }
        if let Some((tx, task)) = self.grpc.take() {
            let _ = tx.send(());
            task.await.context("gRPC server task")?;
        }
        if let Some(l) = self.controller_loop.take() {
            l.abort();
        }
        if let Some(w) = self.tls_watch.take() {
            w.abort();
        }
        if let Some(s) = self.cluster_sync.take() {
            s.abort();
        }
        self.controller.alerts().flush().await;
        self.state
            .log
            .flush()
            .await
            .context("flushing the prediction log")?;
        if let Some(cluster) = self.state.cluster.clone() {
            // Leave a final window and hand the controller lock over at once.
            let agg = self.state.log.aggregates().lock().clone();
            let now = crate::runtime::now_ms();
            tokio::task::spawn_blocking(move || {
                cluster.publish_aggregates(now, &agg)?;
                cluster.resign()
            })
            .await
            .context("leaving the cluster")?
            .context("leaving the cluster")?;
        }
        Ok(())
    }

    /// `https://<addr>` with `tls:`, `http://<addr>` without.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The listener's certificate (with `tls:`): to reload it or watch its reloads.
    pub fn tls(&self) -> Option<&TlsAcceptorHandle> {
        self.tls.as_ref()
    }

    /// Reads the listener's certificate and key again (SIGHUP); `None` without `tls:`. A pair
    /// that does not load is refused and the previous one keeps serving.
    pub fn reload_tls(&self) -> Option<Result<(), TlsError>> {
        self.tls.as_ref().map(TlsAcceptorHandle::reload)
    }
}

/// Joins the shared routing table: adopts it when it exists (adding any model of this
/// replica's configuration that it lacks), or seeds it with this replica's table.
fn adopt_shared_table(cluster: &Cluster, local: RoutingTable) -> anyhow::Result<RoutingTable> {
    let seed = local.clone();
    let (_, body) = cluster.update_routing(crate::runtime::now_ms(), move |current| {
        let Some((_, body)) = current else {
            let body = serde_json::to_string(&seed).map_err(|e| e.to_string())?;
            return Ok(Some((seed.epoch, body)));
        };
        let mut shared = decode_table(&body)?;
        let missing: Vec<_> = seed
            .routes
            .iter()
            .filter(|(model, _)| !shared.routes.contains_key(*model))
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        for (model, route) in missing {
            shared.routes.insert(model.clone(), route.clone());
        }
        shared.epoch += 1;
        let body = serde_json::to_string(&shared).map_err(|e| e.to_string())?;
        Ok(Some((shared.epoch, body)))
    })?;
    let shared = decode_table(&body).map_err(anyhow::Error::msg)?;
    let unknown: Vec<&String> = shared
        .routes
        .keys()
        .filter(|m| !local.routes.contains_key(*m))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the shared routing table has models this replica does not serve"
        );
    }
    Ok(shared)
}

/// A replica's share of the cluster's work, every `every_ms`: install a newer shared routing
/// table, publish this replica's aggregates, and fetch the others'.
fn spawn_cluster_sync(state: Arc<AppState>, every_ms: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(every_ms.max(10)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let state = state.clone();
            let result = tokio::task::spawn_blocking(move || sync_once(&state)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "replica sync failed; retrying"),
                Err(e) => tracing::warn!(error = %e, "replica sync task failed"),
            }
        }
    })
}

fn sync_once(state: &AppState) -> Result<(), StoreError> {
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    let started = Instant::now();
    if let Some((epoch, body)) = cluster.routing()? {
        if epoch > state.table.load().epoch {
            match decode_table(&body) {
                Ok(table) => {
                    let installed = state.install_newer(table);
                    tracing::info!(
                        epoch = installed.epoch,
                        "installed the shared routing table"
                    );
                }
                Err(e) => tracing::error!(error = %e, "cannot read the shared routing table"),
            }
        }
    }
    let mine = state.log.aggregates().lock().clone();
    cluster.publish_aggregates(crate::runtime::now_ms(), &mine)?;
    let mut others = Aggregates::default();
    for (replica, _, agg) in cluster.aggregate_windows()? {
        if replica != state.replica {
            others.merge(&agg);
        }
    }
    *state.remote_aggregates.lock() = others;
    tracing::trace!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "replica sync"
    );
    Ok(())
}

/// hyper's own default read-buffer limit (8 KiB + 100 × 4 KiB).
const DEFAULT_MAX_BUF_SIZE: usize = 8192 + 4096 * 100;

/// The HTTP/1 connection settings that protect the data plane from slow and abusive clients:
/// a client must send its request line and headers within `header_read_timeout_ms` (this also
/// bounds how long a kept-alive connection may sit idle), and headers above `max_header_bytes`
/// are answered 431 and the connection closed.
fn http1_builder(config: &GatewayConfig) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
        .max_header_size(config.max_header_bytes)
        // The read buffer must hold the largest accepted head (hyper's minimum is 8 KiB).
        .max_buf_size((config.max_header_bytes + 8192).max(DEFAULT_MAX_BUF_SIZE));
    http
}

/// The accept loop: one task per connection, each watched for graceful shutdown, on the
/// data-plane threads when there are some (the stream moves to that thread's runtime), else on
/// the current runtime. Once
/// `shutdown` fires (or its sender is dropped), the listener is closed, idle connections are
/// closed, and requests in flight are finished before this returns. With `tls`, each
/// connection's task first completes the TLS handshake within the timeout (a client that does
/// not finish it is dropped, as one that sends no headers); without, connections are served as
/// before, with no TLS code on their path. A plain connection on a data-plane thread starts on
/// the hot route's own loop ([`crate::hot_http1`]), which hands it to hyper at its first request
/// for anything else.
async fn serve(
    listener: TcpListener,
    app: Front,
    http: http1::Builder,
    tls: Option<(TlsAcceptor, Duration)>,
    cores: Option<(Arc<DataPlaneThreads>, crate::hot_http1::Limits)>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    // What the hot loop watches (hyper's connections watch `graceful`).
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        // On a data-plane thread the stream must be registered with that thread's runtime.
        let (stream, spawn): (Stream, &dyn Fn(ConnectionTask)) = match &cores {
            Some((cores, _)) => match stream.into_std() {
                Ok(s) => (Stream::Moving(s), &|task| cores.spawn(task)),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot hand the connection over");
                    continue;
                }
            },
            None => (Stream::Here(stream), &|task| {
                tokio::spawn(task);
            }),
        };
        if let Some((acceptor, timeout)) = &tls {
            let (acceptor, timeout) = (acceptor.clone(), *timeout);
            let (http, app) = (http.clone(), app.clone());
            let watcher = graceful.watcher();
            spawn(Box::pin(async move {
                let Some(stream) = stream.register(peer) else {
                    return;
                };
                let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake not finished in time");
                        return;
                    }
                };
                serve_with_hyper(&http, stream, app, watcher, peer).await;
            }));
            continue;
        }
        let (http, app) = (http.clone(), app.clone());
        let watcher = graceful.watcher();
        let hot = cores.as_ref().map(|(_, limits)| (*limits, closing.clone()));
        spawn(Box::pin(async move {
            let Some(stream) = stream.register(peer) else {
                return;
            };
            let Some((limits, closing)) = hot else {
                serve_with_hyper(&http, stream, app, watcher, peer).await;
                return;
            };
            // `watcher` is held until the connection ends, so the shutdown waits for it.
            let state = app.state.clone();
            match crate::hot_http1::serve(stream, state, limits, closing).await {
                crate::hot_http1::Outcome::Closed => drop(watcher),
                crate::hot_http1::Outcome::HandOff(stream) => {
                    serve_with_hyper(&http, stream, app, watcher, peer).await;
                }
            }
        }));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    graceful.shutdown().await;
}

/// Serves one connection with hyper's HTTP/1 server, watched for graceful shutdown. Header
/// timeouts, oversized heads and resets end here: the client's problem.
async fn serve_with_hyper<I>(
    http: &http1::Builder,
    io: I,
    app: Front,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), app);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

type ConnectionTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An accepted connection: registered with the accepting runtime, or on its way to a
/// data-plane thread's.
enum Stream {
    Here(tokio::net::TcpStream),
    Moving(std::net::TcpStream),
}

impl Stream {
    /// The stream on the runtime the caller runs on (`None`, logged, if it cannot be).
    fn register(self, peer: SocketAddr) -> Option<tokio::net::TcpStream> {
        match self {
            Stream::Here(s) => Some(s),
            Stream::Moving(s) => match tokio::net::TcpStream::from_std(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot register the connection");
                    None
                }
            },
        }
    }
}

/// Gives every request body a deadline of `body_read_timeout` from when its headers arrived;
/// [`crate::http_util::read_body`] answers 408 when it passes.
async fn body_deadline(State(state): State<Arc<AppState>>, request: Request) -> Request {
    with_body_deadline(&state, request)
}

fn with_body_deadline(state: &AppState, request: Request) -> Request {
    use axum::body::HttpBody;
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| {
        axum::body::Body::new(crate::http_util::TimedBody::new(
            body,
            state.body_read_timeout,
        ))
    })
}

/// What the listener serves: `POST /v2/models/{m}/infer`, the data plane's hot route, goes
/// straight to its handler (the same one, with the same body deadline the router's layer
/// gives); everything else goes through the router. The router's matching, its path extractor
/// and its middleware stack cost about as much per request as the routing decision itself
/// (BENCHMARKS.md, "Proxy cost").
#[derive(Clone)]
struct Front {
    state: Arc<AppState>,
    app: TowerToHyperService<Router>,
    /// With data-plane threads, the runtime that serves every other route (admin calls may
    /// wait on the store; they must not hold a data-plane thread).
    rest: Option<tokio::runtime::Handle>,
}

type FrontFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>>
            + Send,
    >,
>;

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = FrontFuture;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if request.method() == hyper::Method::POST {
            if let Some(model) = dataplane::infer_route_model(request.uri().path()) {
                let model = model.to_string();
                let state = self.state.clone();
                let request = with_body_deadline(&state, request.map(axum::body::Body::new));
                return Box::pin(async move {
                    Ok(
                        dataplane::handle(state, crate::protocol::Wire::V2, model, None, request)
                            .await,
                    )
                });
            }
        }
        match &self.rest {
            None => Box::pin(self.app.call(request)),
            Some(rest) => {
                let answer = rest.spawn(self.app.call(request));
                Box::pin(async move {
                    answer.await.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "a request's task failed");
                        Ok(crate::error::ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "the request's task failed",
                        )
                        .into_response())
                    })
                })
            }
        }
    }
}

/// All routes of the gateway.
pub fn router(state: Arc<AppState>, controller: Arc<Controller>) -> Router {
    let admin_state = admin::AdminState {
        app: state.clone(),
        controller,
    };
    let admin = Router::new()
        .route("/routes", get(admin::get_routes))
        .route("/routes/{model}", put(admin::put_route))
        .route("/models/{model}/stats", get(admin::model_stats))
        .route(
            "/rollouts",
            get(admin::list_rollouts).post(admin::apply_rollout),
        )
        .route("/rollouts/{name}", get(admin::get_rollout))
        .route("/rollouts/{name}/events", get(admin::rollout_events))
        .route("/rollouts/{name}/report", get(admin::rollout_report))
        .route("/rollouts/{name}/history", get(admin::rollout_history))
        .route("/rollouts/{name}/{action}", post(admin::rollout_command))
        .route("/audit/verify", get(admin::audit_verify))
        .route("/cluster", get(admin::cluster))
        .route("/replay", post(admin::replay))
        .route_layer(axum::middleware::from_fn_with_state(
            admin_state.clone(),
            admin::require_role,
        ))
        .with_state(admin_state);
    Router::new()
        .route("/v2/models/{model}/infer", post(dataplane::infer_v2))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(dataplane::infer_v2_version),
        )
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{model}", get(oip::model_metadata))
        .route("/v2/models/{model}/ready", get(oip::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(oip::version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(oip::version_ready),
        )
        .route(
            "/v1/models/{model}",
            post(dataplane::predict_v1).get(oip::v1_model_ready),
        )
        .route("/v1/feedback", post(feedback::post_feedback))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/ui", get(crate::ui::page))
        .route("/ui/", get(crate::ui::page))
        .route("/ui/{file}", get(crate::ui::file))
        .nest("/admin/v1", admin)
        .fallback(|uri: axum::http::Uri| async move {
            let e = crate::error::ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such route: {}", uri.path()),
            );
            // The inference protocol's clients read `error` as a string.
            if uri.path() == "/v2" || uri.path().starts_with("/v2/") {
                e.oip()
            } else {
                e
            }
        })
        .layer(axum::middleware::map_request_with_state(
            state.clone(),
            body_deadline,
        ))
        .with_state(state)
}

fn sync_log_metrics(state: &AppState) {
    let m = &state.metrics;
    let stats = state.log.stats();
    m.log_queue_depth.set(state.log.queue_depth() as i64);
    let catch_up = |counter: &prometheus_client::metrics::counter::Counter, total: u64| {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    };
    catch_up(&m.log_dropped, stats.dropped.load(Ordering::Relaxed));
    catch_up(&m.log_written, stats.written.load(Ordering::Relaxed));
    catch_up(&m.log_batches, stats.batches.load(Ordering::Relaxed));
    catch_up(&m.log_snapshots, stats.snapshots.load(Ordering::Relaxed));
    catch_up(&m.log_pruned, stats.pruned.load(Ordering::Relaxed));
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    sync_log_metrics(&state);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Ready unless the prediction log is saturated: above 90% of its queue, records are about to
/// be dropped.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let depth = state.log.queue_depth();
    let capacity = state.log.queue_capacity();
    let dropped = state.log.stats().dropped.load(Ordering::Relaxed);
    let saturated = depth * 10 > capacity * 9;
    // Serving goes on while the log cannot be written (records are dropped and counted), but
    // the replica is not ready: a load balancer should prefer one that records.
    let failing = state.log.failing();
    let ready = !saturated && failing.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "ready": ready, "log_queue_depth": depth, "log_queue_capacity": capacity, "log_dropped": dropped });
    if let Some(e) = failing {
        body["log_error"] = json!(format!("the prediction log cannot be written: {e}"));
    }
    (status, Json(body))
}
