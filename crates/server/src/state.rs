//! The gateway's shared state: the routing table, the models, the log handle and the metrics,
//! everything a request handler may touch. It knows nothing of the controller or the router:
//! handlers and the controller depend on it, never the other way round.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_core::config::LogSettings;
use switchyard_core::{Aggregates, RoutingTable, Strategy};
use switchyard_store::{Cluster, LogHandle, StoreError, StoreUrl};

use crate::backend::ModelRuntime;
use crate::metrics::Metrics;
use crate::shadow::ShadowDispatcher;

/// Everything a request handler may touch.
#[derive(Debug)]
pub struct AppState {
    /// The routing table: loaded once per request, replaced whole.
    pub table: ArcSwap<RoutingTable>,
    pub models: switchyard_core::NameMap<ModelRuntime>,
    pub log: LogHandle,
    pub shadow: ShadowDispatcher,
    pub metrics: Arc<Metrics>,
    /// Credentials and roles (empty: open mode).
    pub auth: crate::auth::Auth,
    pub max_body_bytes: usize,
    /// Time a client has to send a request body once its headers arrived.
    pub body_read_timeout: Duration,
    pub log_settings: LogSettings,
    /// The store (reports open their own read connection).
    pub store: StoreUrl,
    /// This gateway's name among replicas (`local` for a single gateway).
    pub replica: String,
    /// With a shared PostgreSQL store: the other replicas, the shared routing table and the
    /// controller lock.
    pub cluster: Option<Cluster>,
    /// The other replicas' latest published aggregates, merged (empty for a single gateway).
    pub remote_aggregates: parking_lot::Mutex<Aggregates>,
    /// Forwards admin commands to the controller replica (`https://` when its advertised URL
    /// is, trusting the built-in roots and `peer_ca_file`).
    pub admin_client: crate::backend::Clients,
    pub peer_ca_file: Option<std::path::PathBuf>,
}

impl AppState {
    /// Installs a new strategy for `model`, advancing the epoch; takes effect for the next
    /// request. Concurrent swaps are serialised by `rcu`; with replicas, by the shared routing
    /// table's row lock, and the other replicas install the new table within one sync interval.
    pub fn swap_strategy(
        &self,
        model: &str,
        strategy: Strategy,
    ) -> Result<Arc<RoutingTable>, StoreError> {
        self.swap_strategies(vec![(model.to_string(), strategy)])
    }

    /// [`AppState::swap_strategy`] for several models at once: one new table, one epoch, so
    /// no request sees some of them moved and others not (a rollout group).
    pub fn swap_strategies(
        &self,
        routes: Vec<(String, Strategy)>,
    ) -> Result<Arc<RoutingTable>, StoreError> {
        let models: Vec<&str> = routes.iter().map(|(m, _)| m.as_str()).collect();
        let model = models.join(",");
        let Some(cluster) = &self.cluster else {
            return Ok(self.swap_local(&model, &routes));
        };
        let local = self.table.load_full();
        let (_, body) = crate::runtime::off_the_request_path(|| {
            cluster.update_routing(crate::runtime::now_ms(), move |current| {
                let base = match current {
                    Some((_, body)) => decode_table(&body)?,
                    None => (*local).clone(),
                };
                let next = base.with_strategies(&routes);
                let body = serde_json::to_string(&next).map_err(|e| e.to_string())?;
                Ok(Some((next.epoch, body)))
            })
        })?;
        let table = decode_table(&body).map_err(|reason| StoreError::Corrupt {
            what: "routing table",
            reason,
        })?;
        let installed = self.install_newer(table);
        tracing::info!(
            model = %model,
            epoch = installed.epoch,
            "shared routing table swapped"
        );
        Ok(installed)
    }

    /// Installs `table` unless the one in place is at least as new; returns what is in place.
    pub fn install_newer(&self, table: RoutingTable) -> Arc<RoutingTable> {
        let table = Arc::new(table);
        let mut installed = table.clone();
        self.table.rcu(|current| {
            installed = if current.epoch >= table.epoch {
                current.clone()
            } else {
                table.clone()
            };
            installed.clone()
        });
        installed
    }

    fn swap_local(&self, model: &str, routes: &[(String, Strategy)]) -> Arc<RoutingTable> {
        let mut installed = None;
        self.table.rcu(|current| {
            let next = Arc::new(current.with_strategies(routes));
            installed = Some(next.clone());
            next
        });
        let installed = installed.unwrap_or_else(|| self.table.load_full());
        tracing::info!(model, epoch = installed.epoch, "routing table swapped");
        installed
    }
}

pub(crate) fn decode_table(body: &str) -> Result<RoutingTable, String> {
    serde_json::from_str(body).map_err(|e| format!("shared routing table: {e}"))
}
