//! The control plane's driver: runs the pure rollout state machines of `switchyard-core`
//! against live statistics and carries out their actions.
//!
//! Each tick (or operator command) builds [`Observations`] from the aggregates, calls
//! `tick`/`command`, then: swaps the routing table for `SetStrategy` (recording the new epoch
//! in the state), persists the new state together with its audit events in one transaction,
//! hands alerts to the webhook sender (which never blocks), starts blue-green validations in
//! the background, and starts chained rollouts. Time comes from a [`Clock`], so tests and the
//! demo can drive it explicitly.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::api::{HistoryPoint, RolloutView};
use switchyard_core::audit::{Alert, AuditEvent, Detail, Details, Severity};
use switchyard_core::rollout::{
    self, Action, Command, Observations, Phase, RolloutKind, RolloutSpec, RolloutState, Validation,
};
use switchyard_core::rollout_config::RawRollout;
use switchyard_core::routing::PINNED_VARIANT;
use switchyard_core::{Aggregates, Role};
use switchyard_store::{ControlStore, Leader, StoreError, StoreUrl, StoredEvent};

use crate::alerts::AlertSender;
use crate::state::AppState;

mod clock;
mod external;
mod history;
mod validation;

pub use clock::{Clock, ManualClock, ScaledClock, SystemClock};
use history::History;
pub use validation::read_validation_set;
use validation::validate;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid rollout spec:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    #[error("no rollout named '{0}'")]
    NotFound(String),
    #[error("model '{model}' already has an active rollout '{rollout}'")]
    Conflict { model: String, rollout: String },
    #[error(transparent)]
    Command(#[from] rollout::CommandError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Another replica runs the controller (commands are forwarded to it).
    #[error("this replica is not the controller{}", match .0 { Some(l) => format!(" (replica '{}' at {} is)", l.replica, l.admin_url), None => " and no replica is right now; retry shortly".into() })]
    NotLeader(Option<Leader>),
}

#[derive(Debug, Clone)]
struct Entry {
    spec: RolloutSpec,
    state: RolloutState,
}

/// The rollout controller. One per gateway.
#[derive(Debug)]
pub struct Controller {
    app: Arc<AppState>,
    store: Mutex<ControlStore>,
    rollouts: Mutex<BTreeMap<String, Entry>>,
    /// Finished blue-green validations, filled by background tasks.
    validations: Arc<Mutex<HashMap<String, Validation>>>,
    /// External gates' latest readings, taken by background queries.
    external: Arc<external::Readings>,
    /// Recent snapshots of each rollout's statistics, for the dashboard's charts.
    history: Mutex<HashMap<String, History>>,
    alerts: AlertSender,
    clock: Arc<dyn Clock>,
    /// Serialises ticks and commands so each sees the previous one's result.
    turn: tokio::sync::Mutex<()>,
    base_dir: PathBuf,
    /// With replicas: whether this one holds the controller lock (as of the last tick).
    leading: AtomicBool,
    /// Where this replica's admin API answers, recorded when it becomes the controller.
    admin_url: String,
    /// Whether running rollouts are held because the prediction log cannot be written.
    log_held: AtomicBool,
    /// Finished rollouts whose statistics the store keeps (their reports read those).
    results: Mutex<std::collections::HashSet<String>>,
    /// Routing epochs before this one are folded together in the aggregates.
    compacted_before: std::sync::atomic::AtomicU64,
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Controller {
    /// Opens the control store and resumes every rollout that had not finished, re-installing
    /// its recorded strategy in the routing table. With replicas, the store is the cluster's
    /// session (the one that takes the controller lock), the shared routing table already holds
    /// the strategies, and rollouts resume when this replica becomes the controller.
    pub fn open(
        app: Arc<AppState>,
        store: &StoreUrl,
        alerts: AlertSender,
        clock: Arc<dyn Clock>,
        base_dir: PathBuf,
        admin_url: String,
    ) -> Result<Arc<Controller>, StoreError> {
        let store = match &app.cluster {
            Some(cluster) => cluster.control_store(),
            None => ControlStore::open(store)?,
        };
        let rollouts = load_rollouts(&store)?;
        let results = store.result_names()?.into_iter().collect();
        if app.cluster.is_none() {
            for e in rollouts.values() {
                let models = e.spec.models();
                if models.iter().all(|m| app.models.contains_key(*m))
                    && !e.state.phase.is_terminal()
                {
                    // A group's members too, in the same swap.
                    app.swap_strategies(e.spec.routes(&e.state.strategy))?;
                    tracing::info!(rollout = %e.spec.name, phase = e.state.phase.as_str(), step = e.state.step, "resumed rollout");
                }
            }
        }
        Ok(Arc::new(Controller {
            app,
            store: Mutex::new(store),
            rollouts: Mutex::new(rollouts),
            validations: Arc::default(),
            external: Arc::default(),
            history: Mutex::new(HashMap::new()),
            alerts,
            clock,
            turn: tokio::sync::Mutex::new(()),
            base_dir,
            leading: AtomicBool::new(false),
            admin_url,
            log_held: AtomicBool::new(false),
            results: Mutex::new(results),
            compacted_before: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Whether this gateway decides: always for a single gateway; with replicas, while it
    /// holds the controller lock.
    pub fn is_leader(&self) -> bool {
        self.app.cluster.is_none() || self.leading.load(Ordering::SeqCst)
    }

    /// The replica that runs the controller, when it is not this one.
    fn not_leader(&self) -> ControlError {
        let leader = self
            .app
            .cluster
            .as_ref()
            .and_then(|c| c.leader().ok().flatten())
            .filter(|l| l.replica != self.app.replica);
        ControlError::NotLeader(leader)
    }

    /// With replicas: takes or confirms the controller lock, and re-reads the rollouts from the
    /// store (a new controller continues each from its recorded state; the others keep their
    /// views current). Returns whether this replica leads.
    fn campaign(&self) -> bool {
        let Some(cluster) = &self.app.cluster else {
            return true;
        };
        let leads = match cluster.try_lead(&self.admin_url, self.clock.now_ms()) {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the shared store to take the controller lock");
                false
            }
        };
        let was = self.leading.swap(leads, Ordering::SeqCst);
        match (was, leads) {
            (false, true) => {
                tracing::info!(replica = %self.app.replica, "this replica is now the controller")
            }
            (true, false) => {
                tracing::warn!(replica = %self.app.replica, "this replica lost the controller lock")
            }
            _ => {}
        }
        if !leads || !was {
            self.reload();
        }
        leads
    }

    /// Replaces the in-memory rollouts with the stored ones.
    fn reload(&self) {
        match load_rollouts(&self.store.lock()) {
            Ok(rollouts) => *self.rollouts.lock() = rollouts,
            Err(e) => tracing::warn!(error = %e, "cannot read rollouts from the store"),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn alerts(&self) -> &AlertSender {
        &self.alerts
    }

    /// Runs ticks every `tick_ms` until the returned handle is aborted.
    pub fn spawn_loop(self: &Arc<Self>, tick_ms: u64) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut interval =
                tokio::time::interval(std::time::Duration::from_millis(tick_ms.max(1)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                me.tick_all().await;
            }
        })
    }

    /// Parses and validates a spec (YAML or JSON text) against the gateway's models.
    pub fn parse_spec(&self, text: &str) -> Result<RolloutSpec, ControlError> {
        let (raw, mut problems): (RawRollout, Vec<String>) =
            crate::config_file::from_yaml_listing_unknown(text)
                .map_err(|e| ControlError::Invalid(vec![e]))?;
        let Some(model) = self.app.models.get(&raw.model) else {
            let known: Vec<&str> = self.app.models.keys().map(String::as_str).collect();
            problems.push(format!(
                "model: unknown model '{}' (known: {})",
                raw.model,
                known.join(", ")
            ));
            if let Err(more) = raw.validate(&[]) {
                problems.extend(more.into_iter().filter(|p| !p.contains("unknown version")));
            }
            return Err(ControlError::Invalid(problems));
        };
        let declared: Vec<&str> = model.config.versions.keys().map(String::as_str).collect();
        let segments: Vec<&str> = model
            .config
            .segments
            .iter()
            .map(|(f, _)| f.as_str())
            .collect();
        let spec = match raw.validate_for(&declared, Some(&segments)) {
            Ok(spec) if problems.is_empty() => spec,
            Ok(_) => return Err(ControlError::Invalid(problems)),
            Err(more) => {
                return Err(ControlError::Invalid(
                    problems.into_iter().chain(more).collect(),
                ))
            }
        };
        if let RolloutKind::Canary(c) = &spec.kind {
            let problems = self.group_problems(&spec.model, &c.group);
            if !problems.is_empty() {
                return Err(ControlError::Invalid(problems));
            }
        }
        if let RolloutKind::BlueGreen(b) = &spec.kind {
            if let Some(path) = &b.validation_set {
                if !self.resolve(path).is_file() {
                    return Err(ControlError::Invalid(vec![format!(
                        "validation_set: no file at {}",
                        self.resolve(path).display()
                    )]));
                }
            }
        }
        Ok(spec)
    }

    /// A group's members against the configuration: each an other model the gateway serves,
    /// once, with its versions declared.
    fn group_problems(&self, lead: &str, group: &[rollout::GroupMember]) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = vec![lead];
        for (i, m) in group.iter().enumerate() {
            if seen.contains(&m.model.as_str()) {
                problems.push(format!(
                    "group[{i}].model: '{}' is already in the rollout",
                    m.model
                ));
                continue;
            }
            seen.push(&m.model);
            let Some(model) = self.app.models.get(&m.model) else {
                let known: Vec<&str> = self.app.models.keys().map(String::as_str).collect();
                problems.push(format!(
                    "group[{i}].model: unknown model '{}' (known: {})",
                    m.model,
                    known.join(", ")
                ));
                continue;
            };
            for (field, v) in [("stable", &m.stable), ("candidate", &m.candidate)] {
                if !model.config.versions.contains_key(v) {
                    let declared: Vec<&str> =
                        model.config.versions.keys().map(String::as_str).collect();
                    problems.push(format!(
                        "group[{i}].{field}: unknown version '{v}' of model '{}' (declared: {})",
                        m.model,
                        declared.join(", ")
                    ));
                }
            }
        }
        problems
    }

    /// A path of a spec or an admin request: relative ones against the configuration's
    /// directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    fn conflict(&self, spec: &RolloutSpec) -> Option<ControlError> {
        let rollouts = self.rollouts.lock();
        if rollouts
            .get(&spec.name)
            .is_some_and(|e| !e.state.phase.is_terminal())
        {
            return Some(ControlError::Conflict {
                model: spec.model.clone(),
                rollout: spec.name.clone(),
            });
        }
        // One running rollout per model, counting a group's members.
        let wanted = spec.models();
        rollouts
            .values()
            .filter(|e| !e.state.phase.is_terminal() && e.spec.name != spec.name)
            .find_map(|e| {
                let busy = e.spec.models();
                wanted
                    .iter()
                    .find(|m| busy.contains(m))
                    .map(|m| ControlError::Conflict {
                        model: m.to_string(),
                        rollout: e.spec.name.clone(),
                    })
            })
    }

    /// Validates a spec without starting it.
    pub fn dry_run(&self, text: &str) -> Result<RolloutSpec, ControlError> {
        let spec = self.parse_spec(text)?;
        match self.conflict(&spec) {
            Some(e) => Err(e),
            None => Ok(spec),
        }
    }

    /// Starts a rollout.
    pub async fn apply(&self, text: &str, actor: &str) -> Result<RolloutView, ControlError> {
        let spec = self.parse_spec(text)?;
        self.start(spec, actor).await
    }

    async fn start(&self, spec: RolloutSpec, actor: &str) -> Result<RolloutView, ControlError> {
        let _turn = self.turn.lock().await;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.start_locked(spec, actor)
    }

    fn start_locked(&self, spec: RolloutSpec, actor: &str) -> Result<RolloutView, ControlError> {
        if let Some(e) = self.conflict(&spec) {
            return Err(e);
        }
        let now = self.clock.now_ms();
        let (state, actions) = rollout::start(&spec, now, actor);
        let name = spec.name.clone();
        self.carry_out(spec, state, actions, true)?;
        self.view(&name).ok_or(ControlError::NotFound(name))
    }

    /// Applies an operator command.
    pub async fn command(
        &self,
        name: &str,
        cmd: Command,
        actor: &str,
    ) -> Result<RolloutView, ControlError> {
        let _turn = self.turn.lock().await;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let entry = self
            .rollouts
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(name.to_string()))?;
        let (state, actions) =
            rollout::command(&entry.spec, &entry.state, cmd, actor, self.clock.now_ms())?;
        self.carry_out(entry.spec, state, actions, false)?;
        self.view(name)
            .ok_or_else(|| ControlError::NotFound(name.to_string()))
    }

    /// Evaluates every active rollout once.
    pub async fn tick_all(&self) {
        let _turn = self.turn.lock().await;
        if !self.campaign() {
            return;
        }
        let active: Vec<Entry> = self
            .rollouts
            .lock()
            .values()
            .filter(|e| !e.state.phase.is_terminal())
            .cloned()
            .collect();
        // The log's retention keeps every record a running rollout may still take a label
        // for: those of its epochs.
        self.app
            .log
            .protect_from_epoch(active.iter().map(|e| e.state.start_epoch).min());
        if self.hold_for_log(&active) {
            return;
        }
        self.compact(&active);
        for entry in active {
            let now = self.clock.now_ms();
            let obs = self.observe(&entry.spec, &entry.state);
            self.sample(&entry.spec, &entry.state, &obs, now);
            let (state, actions) = rollout::tick(&entry.spec, &entry.state, &obs, now);
            if state == entry.state && actions.is_empty() {
                self.external.schedule(&entry.spec, &state, now);
                continue;
            }
            let name = entry.spec.name.clone();
            match self.carry_out(entry.spec.clone(), state.clone(), actions, false) {
                // The gates the new state reads (none once it has ended) are queried when due.
                Ok(_) => self.external.schedule(&entry.spec, &state, now),
                Err(e) => {
                    tracing::error!(rollout = %name, error = %e, "controller could not record a transition")
                }
            }
        }
    }

    /// While the prediction log cannot be written, records are lost and the statistics are
    /// partial: no rollout decides anything. Says so once per rollout when the hold starts (an
    /// event and a P1 alert) and once when it ends. Returns whether to hold.
    fn hold_for_log(&self, active: &[Entry]) -> bool {
        let failing = self.app.log.failing();
        let was_held = self.log_held.swap(failing.is_some(), Ordering::Relaxed);
        let now = self.clock.now_ms();
        let note = |entry: &Entry, kind: &str, message: String, alert: bool| {
            let mut actions = vec![Action::Event(AuditEvent {
                rollout: entry.spec.name.clone(),
                ts_ms: now,
                kind: kind.into(),
                actor: "controller".into(),
                message: message.clone(),
                details: vec![],
            })];
            if alert {
                actions.push(Action::Alert {
                    severity: Severity::P1,
                    kind: "log_failing".into(),
                    title: format!("{}: {message}", entry.spec.name),
                    details: vec![],
                });
            }
            let name = entry.spec.name.clone();
            if let Err(e) = self.carry_out(entry.spec.clone(), entry.state.clone(), actions, false)
            {
                tracing::error!(rollout = %name, error = %e, "controller could not record the hold");
            }
        };
        match (&failing, was_held) {
            (Some(reason), false) => active.iter().for_each(|e| {
                note(
                    e,
                    "held",
                    format!("held: the prediction log cannot be written ({reason}); no decision while records are lost"),
                    true,
                )
            }),
            (None, true) => active.iter().for_each(|e| {
                note(
                    e,
                    "hold_lifted",
                    "the prediction log is written again; deciding resumes".into(),
                    false,
                )
            }),
            _ => {}
        }
        failing.is_some()
    }

    /// Records a snapshot for the charts (see `history`).
    fn sample(&self, spec: &RolloutSpec, state: &RolloutState, obs: &Observations, now: i64) {
        self.history
            .lock()
            .entry(spec.name.clone())
            .or_default()
            .sample(spec, state, obs, now);
    }

    /// The snapshots recorded for a rollout, oldest first.
    pub fn history(&self, name: &str) -> Vec<HistoryPoint> {
        self.history
            .lock()
            .get(name)
            .map(History::points)
            .unwrap_or_default()
    }

    /// Merged statistics of the rollout's model: this gateway's, and with replicas the
    /// others' latest published windows.
    /// Every replica's aggregates: this one's, merged with the others' windows when there are
    /// replicas.
    fn with_aggregates<R>(&self, f: impl FnOnce(&Aggregates) -> R) -> R {
        let local = self.app.log.aggregates().lock();
        let remote = self.app.remote_aggregates.lock();
        if remote.series.is_empty() && remote.pairs.is_empty() {
            f(&local)
        } else {
            let mut all = local.clone();
            all.merge(&remote);
            drop(remote);
            drop(local);
            f(&all)
        }
    }

    fn observe(&self, spec: &RolloutSpec, state: &RolloutState) -> Observations {
        let mut obs = self.with_aggregates(|agg| {
            let mut obs = observe_in(agg, spec, state);
            // A group's members: each model's own statistics over the same epochs.
            for model in spec.models().into_iter().skip(1) {
                let member = RolloutSpec {
                    model: model.to_string(),
                    ..spec.clone()
                };
                obs.members
                    .insert(model.to_string(), observe_in(agg, &member, state));
            }
            obs
        });
        obs.validation = self.validations.lock().get(&spec.name).cloned();
        obs.external = self.external.latest(&spec.name);
        obs
    }

    /// Keeps a finished rollout's statistics in the store, once.
    fn keep_result(&self, spec: &RolloutSpec, state: &RolloutState) {
        if self.results.lock().contains(&spec.name) {
            return;
        }
        let subset = self.with_aggregates(|agg| agg.of_model_from(&spec.model, state.start_epoch));
        match self.store.lock().save_result(&spec.name, &subset) {
            Ok(()) => {
                self.results.lock().insert(spec.name.clone());
            }
            Err(e) => {
                tracing::warn!(rollout = %spec.name, error = %e, "could not keep the finished rollout's statistics")
            }
        }
    }

    /// Folds the aggregates' routing epochs older than every running rollout's first one (and
    /// than the current one) together, once every finished rollout's statistics are kept in the
    /// store: memory no longer grows with routing changes.
    fn compact(&self, active: &[Entry]) {
        let current = self.app.table.load().epoch;
        let floor = active
            .iter()
            .map(|e| e.state.start_epoch)
            .min()
            .unwrap_or(current)
            .min(current);
        if floor <= self.compacted_before.load(Ordering::Relaxed) {
            return;
        }
        let finished: Vec<Entry> = self
            .rollouts
            .lock()
            .values()
            .filter(|e| e.state.phase.is_terminal())
            .cloned()
            .collect();
        for e in &finished {
            self.keep_result(&e.spec, &e.state);
        }
        let unkept = finished
            .iter()
            .any(|e| !self.results.lock().contains(&e.spec.name));
        if unkept {
            return;
        }
        let folded = self.app.log.aggregates().lock().compact_before(floor);
        self.compacted_before.store(floor, Ordering::Relaxed);
        if folded > 0 {
            tracing::debug!(floor, folded, "folded old routing epochs");
        }
    }

    /// Carries out actions, then persists the state with its events in one transaction.
    /// What each of `versions` serves, as audit details: `artefact.<version>` (the full
    /// SHA-256 or the backend's reported version), and `git_sha.<version>` and
    /// `registry.<version>` when configured.
    fn artefact_details(&self, model: &str, versions: &[&str]) -> Details {
        let Some(runtime) = self.app.models.get(model) else {
            return Vec::new();
        };
        let mut details = Vec::new();
        for v in versions {
            let Some(p) = runtime.provenance.get(*v) else {
                continue;
            };
            details.push((format!("artefact.{v}"), Detail::Text(p.artefact.full())));
            if let Some(g) = &p.git_sha {
                details.push((format!("git_sha.{v}"), Detail::Text(g.clone())));
            }
            if let Some(r) = &p.registry {
                details.push((format!("registry.{v}"), Detail::Text(r.clone())));
            }
        }
        details
    }

    fn carry_out(
        &self,
        spec: RolloutSpec,
        mut state: RolloutState,
        actions: Vec<Action>,
        first: bool,
    ) -> Result<Vec<StoredEvent>, ControlError> {
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut alerts = Vec::new();
        let mut chained = Vec::new();
        // The swap's timing, epoch and the artefacts it now routes to go with the event that
        // follows it (the one naming it).
        let mut swap: Option<(u64, u64)> = None;
        let mut routed: Details = Vec::new();
        for action in actions {
            match action {
                Action::SetStrategy(_) | Action::SetStrategies(_) => {
                    let routes = match action {
                        Action::SetStrategies(routes) => routes,
                        Action::SetStrategy(strategy) => vec![(spec.model.clone(), strategy)],
                        _ => Vec::new(),
                    };
                    // The rollout's own model's versions by name; a group member's prefixed
                    // with its model.
                    routed = Vec::new();
                    for (i, (model, strategy)) in routes.iter().enumerate() {
                        let details = self.artefact_details(model, &strategy.versions());
                        routed.extend(details.into_iter().map(|(k, v)| {
                            if i == 0 {
                                (k, v)
                            } else {
                                (format!("{model}.{k}"), v)
                            }
                        }));
                    }
                    let started = Instant::now();
                    let table = self.app.swap_strategies(routes)?;
                    swap = Some((started.elapsed().as_micros() as u64, table.epoch));
                    state.step_epoch = table.epoch;
                    if first && state.start_epoch == 0 {
                        state.start_epoch = table.epoch;
                    }
                }
                Action::Event(mut e) => {
                    if self.app.cluster.is_some() {
                        // Which replica decided: the trail spans controller takeovers.
                        e.details
                            .push(("replica".into(), Detail::Text(self.app.replica.clone())));
                    }
                    if let Some((us, epoch)) = swap.take() {
                        e.details
                            .push(("routing_swap_us".into(), Detail::Num(us as f64)));
                        e.details.push(("epoch".into(), Detail::Num(epoch as f64)));
                        e.details.append(&mut routed);
                    }
                    events.push(e);
                }
                Action::Alert {
                    severity,
                    kind,
                    title,
                    details,
                } => {
                    alerts.push(Alert {
                        rollout: spec.name.clone(),
                        severity,
                        kind,
                        title,
                        ts_ms: self.clock.now_ms(),
                        details,
                    });
                }
                Action::Validate { version } => self.spawn_validation(&spec, &version),
                Action::Chain(next) => chained.push(*next),
            }
        }
        let stored = crate::runtime::off_the_request_path(|| {
            self.store.lock().save(
                &spec.name,
                &encode(&spec),
                &encode(&state),
                self.clock.now_ms(),
                &events,
            )
        })?;
        for e in &events {
            tracing::info!(rollout = %e.rollout, kind = %e.kind, "{}", e.message);
        }
        if state.phase.is_terminal() {
            self.keep_result(&spec, &state);
            self.external.forget(&spec.name);
        }
        let name = spec.name.clone();
        self.rollouts.lock().insert(name, Entry { spec, state });
        for alert in alerts {
            self.alerts.send(alert);
        }
        for next in chained {
            if let Err(e) = self.start_locked(next, "controller") {
                tracing::error!(error = %e, "chained rollout could not start");
            }
        }
        Ok(stored)
    }

    fn spawn_validation(&self, spec: &RolloutSpec, version: &str) {
        let RolloutKind::BlueGreen(b) = &spec.kind else {
            return;
        };
        let Some(runtime) = self.app.models.get(&spec.model) else {
            return;
        };
        let Some(backend) = runtime.backends.get(version).cloned() else {
            return;
        };
        let path = b.validation_set.as_deref().map(|p| self.resolve(p));
        let (min_accuracy, max_p95_ms, smoke) = (b.min_accuracy, b.max_p95_ms, b.smoke_requests);
        let load_test = b.load_test.clone();
        let (name, model, version) = (spec.name.clone(), spec.model.clone(), version.to_string());
        let (task, classes) = (runtime.config.task, runtime.config.classes.clone());
        let results = self.validations.clone();
        tokio::spawn(async move {
            let result = validate(
                &backend,
                &model,
                &version,
                task,
                classes.as_deref(),
                path.as_deref(),
                smoke,
                min_accuracy,
                max_p95_ms,
                load_test.as_ref(),
            )
            .await;
            results.lock().insert(name, result);
        });
    }

    /// A JSON view of one rollout.
    pub fn view(&self, name: &str) -> Option<RolloutView> {
        let entry = self.rollouts.lock().get(name).cloned()?;
        Some(self.view_entry(&entry))
    }

    fn view_entry(&self, e: &Entry) -> RolloutView {
        let (current, candidate) = e.spec.versions();
        RolloutView {
            name: e.spec.name.clone(),
            model: e.spec.model.clone(),
            kind: e.spec.kind_name().to_string(),
            current: current.to_string(),
            candidate: candidate.to_string(),
            phase: e.state.phase,
            step: e.state.step + 1,
            strategy: e.state.strategy.clone(),
            recommendation: e.state.recommendation,
            reason: e.state.reason.clone(),
            started_ms: e.state.started_ms,
            approved_by: e.state.approved_by.clone(),
            approvals_needed: (e.state.phase == Phase::AwaitingApproval)
                .then(|| e.spec.approvals_needed(&e.state)),
            promote_requested_by: e.state.promote_requested_by.clone(),
            spec: e.spec.clone(),
            arms: match &e.spec.kind {
                RolloutKind::Ab(a) if rollout::is_extended(a) => rollout::arms_of(a)
                    .into_iter()
                    .map(|arm| arm.version)
                    .collect(),
                _ => Vec::new(),
            },
        }
    }

    pub fn list(&self) -> Vec<RolloutView> {
        let entries: Vec<Entry> = self.rollouts.lock().values().cloned().collect();
        entries.iter().map(|e| self.view_entry(e)).collect()
    }

    pub fn phase(&self, name: &str) -> Option<Phase> {
        self.rollouts.lock().get(name).map(|e| e.state.phase)
    }

    pub fn state(&self, name: &str) -> Option<(RolloutSpec, RolloutState)> {
        self.rollouts
            .lock()
            .get(name)
            .map(|e| (e.spec.clone(), e.state.clone()))
    }

    pub fn events(&self, name: Option<&str>) -> Result<Vec<StoredEvent>, StoreError> {
        self.store.lock().events(name)
    }

    pub fn verify_chain(&self) -> Result<switchyard_store::ChainReport, StoreError> {
        self.store.lock().verify_chain()
    }

    /// Statistics the report needs, over the whole rollout.
    /// A rollout's observations: live while it runs, as it ended once it has (from the
    /// statistics kept in the store, when they are).
    pub fn observations(&self, name: &str) -> Option<(RolloutSpec, RolloutState, Observations)> {
        let (spec, state) = self.state(name)?;
        let kept = (state.phase.is_terminal() && self.results.lock().contains(name))
            .then(|| self.store.lock().result(name))
            .and_then(|r| {
                r.map_err(
                    |e| tracing::warn!(rollout = name, error = %e, "kept statistics unreadable"),
                )
                .ok()
                .flatten()
            });
        let obs = match kept {
            Some(agg) => {
                let mut obs = observe_in(&agg, &spec, &state);
                obs.validation = self.validations.lock().get(&spec.name).cloned();
                obs
            }
            None => self.observe(&spec, &state),
        };
        Some((spec, state, obs))
    }
}

/// A rollout's observations in `agg`: serving statistics per version since its step's and its
/// own first routing epoch, and for a shadow its pair.
fn observe_in(agg: &Aggregates, spec: &RolloutSpec, state: &RolloutState) -> Observations {
    let mut obs = Observations::default();
    // Pinned requests chose their version themselves: not a sample of any split.
    for (k, v) in agg
        .series
        .iter()
        .filter(|(k, _)| k.model == spec.model && k.variant != PINNED_VARIANT)
    {
        if k.role == Role::Serving {
            if k.epoch >= state.step_epoch {
                obs.step.entry(k.version.clone()).or_default().merge(v);
            }
            if k.epoch >= state.start_epoch {
                obs.total.entry(k.version.clone()).or_default().merge(v);
                *obs.by_variant.entry(k.variant.clone()).or_default() += v.requests;
            }
        }
    }
    if let RolloutKind::Shadow(s) = &spec.kind {
        obs.shadow = Some(agg.variant(&spec.model, &s.candidate, Role::Shadow, |e| {
            e >= state.start_epoch
        }));
        obs.pair = Some(agg.pair(&spec.model, &s.primary, &s.candidate, |e| {
            e >= state.start_epoch
        }));
    }
    obs
}

/// Every stored rollout with its spec and state.
fn load_rollouts(store: &ControlStore) -> Result<BTreeMap<String, Entry>, StoreError> {
    let mut rollouts = BTreeMap::new();
    for row in store.rollouts()? {
        let spec: RolloutSpec =
            serde_json::from_str(&row.spec).map_err(|e| StoreError::Corrupt {
                what: "rollout spec",
                reason: e.to_string(),
            })?;
        let state: RolloutState =
            serde_json::from_str(&row.state).map_err(|e| StoreError::Corrupt {
                what: "rollout state",
                reason: e.to_string(),
            })?;
        rollouts.insert(row.name, Entry { spec, state });
    }
    Ok(rollouts)
}
