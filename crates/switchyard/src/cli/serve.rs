//! `switchyard serve` and `switchyard check`: run the gateway from a configuration file, or
//! only validate the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use switchyard_core::config::BackendSpec;
use switchyard_core::provenance::{Artefact, VersionProvenance};
use switchyard_server::onnx::OnnxModel;
use switchyard_server::{load_config, Gateway, StartOptions};
use switchyard_store::{StoreError, StoreUrl};

use super::InputError;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The gateway's YAML configuration.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Address to listen on (overrides `listen:` in the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the SQLite store (overrides `data_dir:`; default ./switchyard-data).
    #[arg(long, conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// The store by URL: `sqlite:///path/to/file.sqlite`, or `postgres://user:pass@host/db`
    /// for several replicas sharing one database.
    #[arg(long, env = "SWITCHYARD_STORE")]
    store: Option<String>,
    /// This replica's name among replicas sharing a PostgreSQL store (keep it stable across
    /// restarts; default: $HOSTNAME).
    #[arg(long, env = "SWITCHYARD_REPLICA")]
    replica: Option<String>,
    /// The URL at which the other replicas reach this one's admin API (default:
    /// http://<listen address>, https:// with `tls:`).
    #[arg(long, env = "SWITCHYARD_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// PEM certificates trusted (besides the built-in roots) when forwarding admin commands to
    /// the controller replica over https: the CA of the replicas' certificates.
    #[arg(long, env = "SWITCHYARD_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// With `tls:`: how often the certificate and key files are looked at for a change, in
    /// milliseconds (0: only on SIGHUP).
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    tls_poll_ms: u64,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The gateway's YAML configuration.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Directory of the SQLite store whose recorded artefacts are checked (overrides
    /// `data_dir:`; default ./switchyard-data; a store that does not exist is not created).
    #[arg(long, conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// The store by URL (as `serve --store`), to check the recorded artefacts against.
    #[arg(long, env = "SWITCHYARD_STORE")]
    store: Option<String>,
}

/// The store `serve` would open: `--store`, else the SQLite file under `--data-dir`, the
/// configuration's `data_dir` or ./switchyard-data.
fn store_url(
    store: Option<&str>,
    data_dir: Option<PathBuf>,
    config_data_dir: Option<&PathBuf>,
) -> Result<StoreUrl> {
    Ok(match store {
        Some(url) => StoreUrl::parse(url).map_err(|e| InputError::new("--store", e.to_string()))?,
        None => StoreUrl::sqlite(
            data_dir
                .or_else(|| config_data_dir.cloned())
                .unwrap_or_else(|| PathBuf::from("switchyard-data"))
                .join("switchyard.sqlite"),
        ),
    })
}

/// Validates a configuration file and prints every problem.
#[allow(clippy::print_stdout)]
pub fn check(args: CheckArgs) -> Result<()> {
    let config =
        load_config(&args.config).map_err(|e| InputError::new("--config", e.to_string()))?;
    // Load every in-process model the way `serve` would, so a bad file is reported here.
    let mut problems = Vec::new();
    let mut loaded = Vec::new();
    // Each version as `serve` would record it (HTTP backends are not asked for their version
    // here: only their configured git_sha and registry are checked).
    let mut provenance = Vec::new();
    for (name, model) in &config.models {
        for (version, spec) in &model.versions {
            let info = model.version_info.get(version).cloned().unwrap_or_default();
            let mut artefact = Artefact::Unknown;
            if let BackendSpec::Onnx { path } = spec {
                match OnnxModel::load(path) {
                    Ok(m) => {
                        artefact = Artefact::Sha256(m.sha256().to_string());
                        loaded.push(format!(
                            "  {name}/{version}: {} ({:?}, {:?}, {} features, {})",
                            path.display(),
                            m.engine(),
                            m.kind(),
                            m.n_features(),
                            artefact.short()
                        ))
                    }
                    Err(e) => problems.push(format!("model {name} version {version}: {e}")),
                }
            }
            provenance.push(VersionProvenance {
                model: name.clone(),
                version: version.clone(),
                artefact,
                git_sha: info.git_sha,
                registry: info.registry,
            });
        }
    }
    if !problems.is_empty() {
        return Err(InputError::new("--config", problems.join("; ")).into());
    }
    let store = store_url(
        args.store.as_deref(),
        args.data_dir,
        config.data_dir.as_ref(),
    )?;
    match switchyard_store::check_artefacts_at(&store, &provenance) {
        Ok(()) => {}
        Err(e @ StoreError::ArtefactChanged(_)) => {
            return Err(InputError::new("--config", format!("the store at {store}: {e}")).into())
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("reading the store at {store}")))
        }
    }
    println!(
        "{}: ok ({} model(s): {})",
        args.config.display(),
        config.models.len(),
        config.models.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    for line in loaded {
        println!("{line}");
    }
    if let Some(tls) = &config.tls {
        let chain = switchyard_server::tls::load_certificates(&tls.cert)
            .map(|c| c.len())
            .unwrap_or(0);
        println!(
            "  tls: {} ({chain} certificate(s)) with the key in {}",
            tls.cert.display(),
            tls.key.display()
        );
    }
    Ok(())
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let config =
        load_config(&args.config).map_err(|e| InputError::new("--config", e.to_string()))?;
    let admin_token = match &config.admin_token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            InputError::new(
                "--config",
                format!("admin_token_env names {var}, which is not set in the environment"),
            )
        })?),
        None => None,
    };
    let listen: SocketAddr = match (args.listen, &config.listen) {
        (Some(addr), _) => addr,
        (None, Some(text)) => text.parse().map_err(|_| {
            InputError::new("--config", format!("listen: '{text}' is not an address"))
        })?,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let config_dir = args
        .config
        .parent()
        .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
    let store = store_url(
        args.store.as_deref(),
        args.data_dir,
        config.data_dir.as_ref(),
    )?;
    if args.replica.is_some() && !store.is_postgres() {
        return Err(InputError::new(
            "--replica",
            "replicas share a postgres:// store; a SQLite file belongs to one gateway",
        )
        .into());
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let mut options = StartOptions::new(store.clone());
        options.admin_token = admin_token;
        options.base_dir = config_dir;
        options.replica = args.replica;
        options.advertise_url = args.advertise_url;
        options.peer_ca_file = args.ca_file;
        options.tls_reload_poll =
            (args.tls_poll_ms > 0).then(|| std::time::Duration::from_millis(args.tls_poll_ms));
        let gateway = Gateway::start(config, listener, options).await?;
        // Before the line that says the gateway listens: a SIGHUP sent once it is read must find
        // the handler (SIGHUP's default action ends the process).
        let reload = reload_on_sighup(&gateway);
        eprintln!(
            "switchyard listening on {} (store: {}, replica: {})",
            gateway.url(),
            store,
            gateway.state.replica
        );
        if let Some(grpc) = gateway.grpc_addr {
            let tls = if gateway.tls().is_some() { ", TLS" } else { "" };
            eprintln!("switchyard gRPC (Open Inference Protocol) listening on {grpc}{tls}");
        }
        eprintln!("access: {}", gateway.state.auth.describe());
        if let Some(tls) = gateway.tls() {
            eprintln!(
                "tls: {} and {} (reloaded on SIGHUP and when they change)",
                tls.files().cert.display(),
                tls.files().key.display()
            );
        }
        shutdown_signal().await;
        if let Some(task) = reload {
            task.abort();
        }
        eprintln!("shutting down: finishing requests in flight and committing the log");
        gateway.shutdown().await
    })
}

/// With `tls:`, reloads the listener's certificate and key on every SIGHUP (a refused pair is
/// logged and the previous one keeps serving).
fn reload_on_sighup(gateway: &Gateway) -> Option<tokio::task::JoinHandle<()>> {
    let tls = gateway.tls()?.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => Some(tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    let tls = tls.clone();
                    // Errors are logged by the reload itself.
                    let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
                }
            })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; the certificate files are still watched");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        None
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
