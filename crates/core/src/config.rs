//! The gateway's configuration: one YAML file → raw serde types → [`RawConfig::validate`],
//! which returns *every* problem at once → a typed [`GatewayConfig`].
//!
//! Unknown fields are problems too: the edge that parses the YAML deserializes through
//! `serde_ignored` and adds one problem per unknown field path, so a typo does not hide the
//! other mistakes (with `deny_unknown_fields` serde would stop at the first one).
//!
//! Parsing the YAML text is the caller's job (the server crate); this module only defines the
//! shapes and the rules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::access::AccessRole;
use crate::routing::{Arm, Colour, ShadowTarget, Strategy};
use crate::segments::MAX_SEGMENT_FIELDS;

// ---------------------------------------------------------------------------------------------
// Raw shapes, as written in YAML.

#[derive(Debug, Clone, Deserialize)]
pub struct RawConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// `{cert, key}`: serve HTTPS only on `listen`, with this certificate (chain) and key.
    pub tls: Option<RawTls>,
    /// Address of the Open Inference Protocol's gRPC endpoint, e.g. `127.0.0.1:8081` (none
    /// when absent).
    pub grpc_listen: Option<String>,
    /// Directory of the SQLite store.
    pub data_dir: Option<PathBuf>,
    /// Name of the environment variable holding the admin bearer token. The token itself
    /// never appears in the file.
    pub admin_token_env: Option<String>,
    /// Named credentials with roles, and whether the data plane wants one.
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub shadow: RawShadow,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub controller: RawController,
    #[serde(default)]
    pub runtime: RawRuntime,
}

/// How the process runs its work.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRuntime {
    /// Threads that serve client connections, each with its own current-thread runtime and
    /// backend pool (default: one per core, or `TOKIO_WORKER_THREADS`); 0 serves them on the
    /// shared multi-threaded runtime instead.
    pub data_plane_threads: Option<u64>,
}

/// The listener's certificate and key, PEM files (relative paths: to the configuration file).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawTls {
    /// The certificate, followed by any intermediate certificates.
    pub cert: Option<PathBuf>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawAuth {
    #[serde(default)]
    pub credentials: Vec<RawCredential>,
    #[serde(default)]
    pub data_plane: RawDataPlane,
}

/// A named credential: the SHA-256 of its bearer token (never the token), from exactly one of
/// the file itself, an environment variable or a file, and its roles.
#[derive(Debug, Clone, Deserialize)]
pub struct RawCredential {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// 64 hex digits.
    pub token_sha256: Option<String>,
    /// Name of an environment variable holding the 64 hex digits.
    pub token_sha256_env: Option<String>,
    /// A file holding the 64 hex digits (relative to the configuration file).
    pub token_sha256_file: Option<PathBuf>,
    /// With the `feedback` role: the only models whose requests it may label.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawDataPlane {
    /// Inference needs a credential with the `inference` role (default `false`).
    pub require: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawAlerts {
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawWebhook {
    pub url: String,
    /// Least severe alert delivered: P0 (only critical) .. P3 (everything, the default).
    pub min_severity: Option<String>,
    /// `https://` webhooks: PEM certificates trusted besides the built-in roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawController {
    /// How often rollouts are evaluated.
    pub tick_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawLimits {
    pub max_body_bytes: Option<u64>,
    /// Time a client has to send a request's line and headers (also the idle time allowed
    /// between requests on a kept-alive connection); the connection is closed after it.
    pub header_read_timeout_ms: Option<u64>,
    /// Time a client has to send a request's body once its headers arrived (408 after it).
    pub body_read_timeout_ms: Option<u64>,
    /// Largest request line plus headers accepted (431 above it).
    pub max_header_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawLog {
    pub queue_capacity: Option<u64>,
    pub batch_size: Option<u64>,
    /// Group commit: how long the log writer lets records gather after a partial batch
    /// (milliseconds; 0 commits as soon as its queue is empty).
    pub commit_interval_ms: Option<u64>,
    /// Fraction of requests whose input body is stored (0 = off, the default).
    pub capture_inputs: Option<f64>,
    pub max_input_bytes: Option<u64>,
    /// `false` records no predictions at all (no log, no statistics, so no rollout can
    /// decide): only for measuring what the log costs (`bench/run.sh`). Default `true`.
    pub enabled: Option<bool>,
    /// `group` (default) or `sync`: see [`Durability`].
    pub durability: Option<String>,
    /// Records and labels between two snapshots of the aggregates (0: none; default 100 000).
    pub snapshot_every: Option<u64>,
    /// `{max_age_hours, max_records, batch}`: what the log keeps (everything by default).
    pub retention: Option<RawRetention>,
    /// SQLite: the largest the log's database may grow, in MB (a quota; no limit by default).
    pub max_size_mb: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRetention {
    pub max_age_hours: Option<f64>,
    pub max_records: Option<u64>,
    /// Records deleted per step (default 5 000).
    pub batch: Option<u64>,
}

/// What the prediction log keeps: records older than `max_age_ms` or beyond the newest
/// `max_records` go, `batch` at a time, once a snapshot covers them (see the store's
/// retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionSettings {
    pub max_age_ms: Option<u64>,
    pub max_records: Option<u64>,
    pub batch: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawShadow {
    pub queue_capacity: Option<u64>,
    pub concurrency: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub breaker_failures: Option<u64>,
    pub breaker_open_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawModel {
    pub task: Option<String>,
    pub routing_key: Option<RawKey>,
    pub versions: BTreeMap<String, RawBackend>,
    pub serve: RawStrategy,
    /// Class names by index, for models whose output is probabilities or class indices.
    pub classes: Option<Vec<String>>,
    /// Request fields whose values split the statistics (`tester: {header: x-tester}`).
    pub segments: Option<BTreeMap<String, RawKey>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawKey {
    pub header: Option<String>,
    /// JSON pointer into the request body, e.g. `/parameters/wafer_id`.
    pub json_pointer: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawBackend {
    /// Path of an ONNX model run in-process.
    pub onnx: Option<PathBuf>,
    /// Base URL of an HTTP model server.
    pub url: Option<String>,
    /// `oip` (Open Inference Protocol v2), `oip-grpc` (its gRPC service), `kserve_v1`, or
    /// `json`.
    pub protocol: Option<String>,
    /// Model name on the remote server (defaults to the gateway's model name).
    pub remote_model: Option<String>,
    pub timeout_ms: Option<u64>,
    /// For `json` backends: JSON pointer of the prediction in the response.
    pub output_pointer: Option<String>,
    /// `https://` backends: PEM certificates trusted besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// For `oip` backends: the server speaks the binary tensor data extension, so a binary
    /// request is passed through as it came (default false: its binary inputs are decoded into
    /// JSON `data` first).
    pub binary_data: Option<bool>,
    /// The commit the model was built from (free text, recorded with the version's artefact).
    pub git_sha: Option<String>,
    /// The model registry's reference, e.g. `mlflow:yield/7` (free text, recorded likewise).
    pub registry: Option<String>,
    /// What 1,000 predictions of this version cost, in any unit the operator chooses (no
    /// currency): reports put it beside latency and accuracy.
    pub cost_per_1k: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawStrategy {
    pub kind: String,
    pub version: Option<String>,
    pub primary: Option<String>,
    #[serde(default)]
    pub shadows: Vec<RawShadowTarget>,
    #[serde(default)]
    pub arms: Vec<RawArm>,
    pub stable: Option<String>,
    pub canary: Option<String>,
    /// Percent of traffic to the canary.
    pub weight: Option<f64>,
    pub blue: Option<String>,
    pub green: Option<String>,
    pub active: Option<String>,
    pub salt: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawShadowTarget {
    pub version: String,
    /// Percent of requests mirrored (default 100).
    pub sample: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawArm {
    pub variant: Option<String>,
    pub version: String,
    /// Percent of traffic.
    pub weight: f64,
}

// ---------------------------------------------------------------------------------------------
// Typed configuration.

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayConfig {
    pub listen: Option<String>,
    /// HTTPS on the listener.
    pub tls: Option<TlsFiles>,
    pub grpc_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub admin_token_env: Option<String>,
    pub auth: AuthConfig,
    pub max_body_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub log: LogSettings,
    pub shadow: ShadowSettings,
    pub models: BTreeMap<String, ModelConfig>,
    pub webhooks: Vec<Webhook>,
    pub tick_ms: u64,
    /// `runtime.data_plane_threads`: `None` for the default (one per core), `Some(0)` for the
    /// shared runtime.
    pub data_plane_threads: Option<usize>,
}

/// A certificate (chain) and its private key, PEM files, as configured (the server reads and
/// checks them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Credentials and the data plane's access. No credential and no `admin_token_env`: open mode
/// (anyone who reaches the gateway may do anything).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AuthConfig {
    pub credentials: Vec<CredentialConfig>,
    /// Inference needs a credential with the `inference` role.
    pub data_plane_require: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialConfig {
    pub name: String,
    pub roles: Vec<AccessRole>,
    pub token_sha256: TokenHash,
    /// Feedback only for these models (`None`: any model).
    pub models: Option<Vec<String>>,
}

/// Where a credential's token hash is read (by the server, at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenHash {
    /// 64 lowercase hex digits, written in the file.
    Hex(String),
    /// An environment variable holding them.
    Env(String),
    /// A file holding them.
    File(PathBuf),
}

/// The name the credential of `admin_token_env` takes.
pub const ADMIN_TOKEN_CREDENTIAL: &str = "admin";

/// Whether `text` is a SHA-256 in hex (64 digits, either case).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RawAuth {
    fn validate(
        self,
        admin_token_env: Option<&str>,
        models: &BTreeMap<String, RawModel>,
        problems: &mut Vec<String>,
    ) -> AuthConfig {
        let mut credentials: Vec<CredentialConfig> = Vec::new();
        for (i, c) in self.credentials.into_iter().enumerate() {
            let at = format!("auth.credentials[{i}]");
            if !valid_name(&c.name) {
                problems.push(format!(
                    "{at}.name: '{}' must use letters, digits, '-', '_' and '.'",
                    c.name
                ));
            }
            if credentials.iter().any(|o| o.name == c.name) {
                problems.push(format!("{at}.name: '{}' is used twice", c.name));
            }
            if admin_token_env.is_some() && c.name == ADMIN_TOKEN_CREDENTIAL {
                problems.push(format!(
                    "{at}.name: '{ADMIN_TOKEN_CREDENTIAL}' is the name of admin_token_env's credential"
                ));
            }
            if c.roles.is_empty() {
                problems.push(format!(
                    "{at}.roles: give at least one of viewer, operator, approver, feedback, inference, admin"
                ));
            }
            let mut roles = Vec::new();
            for r in &c.roles {
                match AccessRole::parse(r) {
                    Some(role) if !roles.contains(&role) => roles.push(role),
                    Some(_) => {}
                    None => problems.push(format!(
                        "{at}.roles: '{r}' is not viewer, operator, approver, feedback, inference or admin"
                    )),
                }
            }
            let token_sha256 = match (c.token_sha256, c.token_sha256_env, c.token_sha256_file) {
                (Some(hex), None, None) => {
                    if !is_sha256_hex(&hex) {
                        problems.push(format!(
                            "{at}.token_sha256: must be 64 hex digits (the SHA-256 of the token, as `switchyard token hash` prints it), never the token"
                        ));
                    }
                    TokenHash::Hex(hex.to_ascii_lowercase())
                }
                (None, Some(var), None) => {
                    if var.is_empty() {
                        problems.push(format!("{at}.token_sha256_env: empty variable name"));
                    }
                    TokenHash::Env(var)
                }
                (None, None, Some(path)) => TokenHash::File(path),
                _ => {
                    problems.push(format!(
                        "{at}: give exactly one of token_sha256, token_sha256_env or token_sha256_file"
                    ));
                    TokenHash::Hex(String::new())
                }
            };
            if let Some(limit) = &c.models {
                if !roles.contains(&AccessRole::Feedback) {
                    problems.push(format!(
                        "{at}.models: limits the feedback role, which '{}' does not hold",
                        c.name
                    ));
                }
                if limit.is_empty() {
                    problems.push(format!(
                        "{at}.models: empty list (leave it out for every model)"
                    ));
                }
                for m in limit {
                    if !models.contains_key(m) {
                        problems.push(format!("{at}.models: unknown model '{m}'"));
                    }
                }
            }
            credentials.push(CredentialConfig {
                name: c.name,
                roles,
                token_sha256,
                models: c.models,
            });
        }
        let data_plane_require = self.data_plane.require.unwrap_or(false);
        if data_plane_require && credentials.is_empty() && admin_token_env.is_none() {
            problems.push(
                "auth.data_plane.require: no credential is configured to call it with".into(),
            );
        }
        AuthConfig {
            credentials,
            data_plane_require,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub url: String,
    pub min_severity: crate::audit::Severity,
    /// Extra trusted CA certificates for an `https://` URL.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogSettings {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub commit_interval_ms: u64,
    pub capture_inputs: f64,
    pub max_input_bytes: usize,
    /// Whether predictions are recorded (see [`RawLog::enabled`]).
    pub enabled: bool,
    pub durability: Durability,
    /// Records and labels between two snapshots of the aggregates; 0 = none.
    pub snapshot_every: u64,
    pub retention: Option<RetentionSettings>,
    /// SQLite: the largest the log's database may grow (bytes).
    pub max_size_bytes: Option<u64>,
}

/// When an answered prediction is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The response goes out at once; its record commits with the next group commit (a few
    /// milliseconds later). A crash loses the records of that window, and a full queue drops
    /// records (counted) rather than slow the data plane.
    #[default]
    Group,
    /// The response waits until its record is committed (group commit still batches the
    /// records of concurrent requests); a full queue makes requests wait; a record that
    /// cannot be committed turns the answer into a 503. Every answered prediction is on disk.
    Sync,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            queue_capacity: 65_536,
            batch_size: 4_096,
            commit_interval_ms: 5,
            capture_inputs: 0.0,
            max_input_bytes: 4_096,
            enabled: true,
            durability: Durability::Group,
            snapshot_every: 100_000,
            retention: None,
            max_size_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShadowSettings {
    pub queue_capacity: usize,
    pub concurrency: usize,
    pub timeout_ms: u64,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        ShadowSettings {
            queue_capacity: 4_096,
            concurrency: 64,
            timeout_ms: 2_000,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    Header(String),
    JsonPointer(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Oip,
    /// The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`) over
    /// HTTP/2.
    OipGrpc,
    KserveV1,
    Json {
        output_pointer: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendSpec {
    Onnx {
        path: PathBuf,
    },
    Http {
        url: String,
        protocol: Protocol,
        remote_model: String,
        timeout_ms: u64,
        /// Extra trusted CA certificates for an `https://` URL.
        ca_file: Option<PathBuf>,
        /// The server takes binary requests of the OIP binary tensor data extension as they
        /// come (`oip` backends).
        binary_data: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub task: Task,
    pub routing_key: Option<KeySource>,
    pub classes: Option<Vec<String>>,
    /// BucketRange fields by name and where each is read from.
    pub segments: Vec<(String, KeySource)>,
    pub versions: BTreeMap<String, BackendSpec>,
    /// Per declared version: its `git_sha`, `registry` and `cost_per_1k` (each optional).
    pub version_info: BTreeMap<String, VersionInfo>,
    pub strategy: Strategy,
    pub salt: String,
}

/// What the configuration says about a version besides its backend: where it came from and
/// what it costs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VersionInfo {
    pub git_sha: Option<String>,
    pub registry: Option<String>,
    /// Cost of 1,000 predictions, a non-negative number in the operator's unit.
    pub cost_per_1k: Option<f64>,
}

/// Longest `git_sha` accepted (a SHA-256 object name is 64 hex digits).
pub const MAX_GIT_SHA_CHARS: usize = 64;
/// Longest `registry` reference accepted.
pub const MAX_REGISTRY_CHARS: usize = 256;

/// Default per-backend timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default time a client has to send its request line and headers.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default time a client has to send a request body.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// Default largest request line plus headers.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Bounds of `limits.max_header_bytes` (the HTTP server's read buffer cannot be smaller than
/// 8 KiB; more than 1 MiB of headers is never legitimate here).
pub const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<u64> = 8 * 1024..=1024 * 1024;

fn percent_to_bp(path: &str, value: f64, problems: &mut Vec<String>) -> u32 {
    if !(value.is_finite() && (0.0..=100.0).contains(&value)) {
        problems.push(format!(
            "{path}: must be a percentage in [0, 100], got {value}"
        ));
        return 0;
    }
    (value * 100.0).round() as u32
}

fn positive(path: &str, value: Option<u64>, default: u64, problems: &mut Vec<String>) -> u64 {
    match value {
        Some(0) => {
            problems.push(format!("{path}: must be greater than 0"));
            default
        }
        Some(v) => v,
        None => default,
    }
}

/// An outbound URL (a backend's, a webhook's): `http://` or `https://` and a host; a `ca_file`
/// only with `https://`.
fn check_url(at: &str, url: &str, has_ca_file: bool, problems: &mut Vec<String>) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
            if has_ca_file && url.starts_with("http://") {
                problems.push(format!(
                    "{at}.ca_file: applies to https:// URLs only, and '{url}' is http://"
                ));
            }
        }
        _ => problems.push(format!(
            "{at}.url: '{url}' must be an http:// or https:// URL"
        )),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl RawConfig {
    /// Checks everything and returns the typed configuration or the list of all problems,
    /// each prefixed with the path of the offending field.
    pub fn validate(self) -> Result<GatewayConfig, Vec<String>> {
        let mut problems = Vec::new();
        let max_body_bytes = positive(
            "limits.max_body_bytes",
            self.limits.max_body_bytes,
            1 << 20,
            &mut problems,
        );
        let data_plane_threads = match self.runtime.data_plane_threads {
            Some(n) if n > 1024 => {
                problems.push(format!(
                    "runtime.data_plane_threads: must be between 0 and 1024, got {n}"
                ));
                None
            }
            n => n.map(|n| n as usize),
        };
        let header_read_timeout_ms = positive(
            "limits.header_read_timeout_ms",
            self.limits.header_read_timeout_ms,
            DEFAULT_HEADER_READ_TIMEOUT_MS,
            &mut problems,
        );
        let body_read_timeout_ms = positive(
            "limits.body_read_timeout_ms",
            self.limits.body_read_timeout_ms,
            DEFAULT_BODY_READ_TIMEOUT_MS,
            &mut problems,
        );
        let max_header_bytes = match self.limits.max_header_bytes {
            Some(v) if !MAX_HEADER_BYTES_RANGE.contains(&v) => {
                problems.push(format!(
                    "limits.max_header_bytes: must be between {} and {}, got {v}",
                    MAX_HEADER_BYTES_RANGE.start(),
                    MAX_HEADER_BYTES_RANGE.end()
                ));
                DEFAULT_MAX_HEADER_BYTES
            }
            Some(v) => v,
            None => DEFAULT_MAX_HEADER_BYTES,
        };
        let defaults = LogSettings::default();
        let capture_inputs = self.log.capture_inputs.unwrap_or(0.0);
        if !(capture_inputs.is_finite() && (0.0..=1.0).contains(&capture_inputs)) {
            problems.push(format!(
                "log.capture_inputs: must be a fraction in [0, 1], got {capture_inputs}"
            ));
        }
        let durability = match self.log.durability.as_deref() {
            None | Some("group") => Durability::Group,
            Some("sync") => Durability::Sync,
            Some(other) => {
                problems.push(format!(
                    "log.durability: must be group or sync, got '{other}'"
                ));
                Durability::Group
            }
        };
        let log = LogSettings {
            queue_capacity: positive(
                "log.queue_capacity",
                self.log.queue_capacity,
                defaults.queue_capacity as u64,
                &mut problems,
            ) as usize,
            batch_size: positive(
                "log.batch_size",
                self.log.batch_size,
                defaults.batch_size as u64,
                &mut problems,
            ) as usize,
            // With `sync` the requests wait for the commit anyway, and records of concurrent
            // requests gather while one commits: waiting longer only adds latency.
            commit_interval_ms: self.log.commit_interval_ms.unwrap_or(match durability {
                Durability::Group => defaults.commit_interval_ms,
                Durability::Sync => 0,
            }),
            capture_inputs,
            max_input_bytes: self
                .log
                .max_input_bytes
                .unwrap_or(defaults.max_input_bytes as u64) as usize,
            enabled: self.log.enabled.unwrap_or(defaults.enabled),
            durability,
            snapshot_every: self.log.snapshot_every.unwrap_or(defaults.snapshot_every),
            retention: None,
            max_size_bytes: match self.log.max_size_mb {
                Some(mb) if mb.is_finite() && mb > 0.0 => Some((mb * 1_000_000.0) as u64),
                Some(mb) => {
                    problems.push(format!(
                        "log.max_size_mb: must be a positive number of megabytes, got {mb}"
                    ));
                    None
                }
                None => None,
            },
        };
        let mut log = log;
        if let Some(r) = &self.log.retention {
            let max_age_ms = match r.max_age_hours {
                Some(h) if h.is_finite() && h > 0.0 => Some((h * 3_600_000.0) as u64),
                Some(h) => {
                    problems.push(format!(
                        "log.retention.max_age_hours: must be a positive number of hours, got {h}"
                    ));
                    None
                }
                None => None,
            };
            let max_records = match r.max_records {
                Some(0) => {
                    problems.push("log.retention.max_records: must be greater than 0".into());
                    None
                }
                other => other,
            };
            if r.max_age_hours.is_none() && r.max_records.is_none() {
                problems.push(
                    "log.retention: give max_age_hours, max_records or both (or leave retention out to keep everything)"
                        .into(),
                );
            }
            if log.snapshot_every == 0 {
                problems.push(
                    "log.retention: needs snapshots (log.snapshot_every > 0): only what a snapshot covers is deleted"
                        .into(),
                );
            }
            log.retention = Some(RetentionSettings {
                max_age_ms,
                max_records,
                batch: positive("log.retention.batch", r.batch, 5_000, &mut problems),
            });
        }
        let sd = ShadowSettings::default();
        let shadow = ShadowSettings {
            queue_capacity: positive(
                "shadow.queue_capacity",
                self.shadow.queue_capacity,
                sd.queue_capacity as u64,
                &mut problems,
            ) as usize,
            concurrency: positive(
                "shadow.concurrency",
                self.shadow.concurrency,
                sd.concurrency as u64,
                &mut problems,
            ) as usize,
            timeout_ms: positive(
                "shadow.timeout_ms",
                self.shadow.timeout_ms,
                sd.timeout_ms,
                &mut problems,
            ),
            breaker_failures: positive(
                "shadow.breaker_failures",
                self.shadow.breaker_failures,
                u64::from(sd.breaker_failures),
                &mut problems,
            )
            .min(u64::from(u32::MAX)) as u32,
            breaker_open_ms: positive(
                "shadow.breaker_open_ms",
                self.shadow.breaker_open_ms,
                sd.breaker_open_ms,
                &mut problems,
            ),
        };
        let tls = self.tls.as_ref().and_then(|t| match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => {
                problems.push(
                    "tls: give both cert and key (PEM files; leave tls out for plain HTTP)".into(),
                );
                None
            }
        });
        if let Some(listen) = &self.listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "listen: '{listen}' is not an address like 127.0.0.1:8080"
                ));
            }
        }
        if let Some(listen) = &self.grpc_listen {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "grpc_listen: '{listen}' is not an address like 127.0.0.1:8081"
                ));
            }
        }
        if self.models.is_empty() {
            problems.push("models: at least one model is required".into());
        }
        let auth = self
            .auth
            .validate(self.admin_token_env.as_deref(), &self.models, &mut problems);
        let mut models = BTreeMap::new();
        for (name, raw) in self.models {
            if let Some(model) = raw.validate(&name, &mut problems) {
                models.insert(name, model);
            }
        }
        let mut webhooks = Vec::new();
        for (i, w) in self.alerts.webhooks.iter().enumerate() {
            let at = format!("alerts.webhooks[{i}]");
            check_url(&at, &w.url, w.ca_file.is_some(), &mut problems);
            let min_severity = match w.min_severity.as_deref() {
                None => crate::audit::Severity::P3,
                Some(s) => crate::audit::Severity::parse(s).unwrap_or_else(|| {
                    problems.push(format!(
                        "alerts.webhooks[{i}].min_severity: '{s}' is not P0, P1, P2 or P3"
                    ));
                    crate::audit::Severity::P3
                }),
            };
            webhooks.push(Webhook {
                url: w.url.clone(),
                min_severity,
                ca_file: w.ca_file.clone(),
            });
        }
        let tick_ms = positive(
            "controller.tick_ms",
            self.controller.tick_ms,
            1_000,
            &mut problems,
        );
        if problems.is_empty() {
            Ok(GatewayConfig {
                webhooks,
                tick_ms,
                data_plane_threads,
                listen: self.listen,
                tls,
                grpc_listen: self.grpc_listen,
                data_dir: self.data_dir,
                admin_token_env: self.admin_token_env,
                auth,
                max_body_bytes: max_body_bytes as usize,
                header_read_timeout_ms,
                body_read_timeout_ms,
                max_header_bytes: max_header_bytes as usize,
                log,
                shadow,
                models,
            })
        } else {
            Err(problems)
        }
    }
}

impl RawModel {
    fn validate(self, name: &str, problems: &mut Vec<String>) -> Option<ModelConfig> {
        let at = format!("models.{name}");
        let before = problems.len();
        if !valid_name(name) {
            problems.push(format!(
                "{at}: model names use letters, digits, '-', '_' and '.'"
            ));
        }
        let task = match self.task.as_deref() {
            None | Some("classification") => Task::Classification,
            Some("regression") => Task::Regression,
            Some(other) => {
                problems.push(format!(
                    "{at}.task: '{other}' is not classification or regression"
                ));
                Task::Classification
            }
        };
        let routing_key = self
            .routing_key
            .and_then(|k| k.validate(&format!("{at}.routing_key"), problems));
        let mut segments = Vec::new();
        let raw_segments = self.segments.unwrap_or_default();
        if raw_segments.len() > MAX_SEGMENT_FIELDS {
            problems.push(format!(
                "{at}.segments: at most {MAX_SEGMENT_FIELDS} fields, got {}",
                raw_segments.len()
            ));
        }
        for (field, key) in raw_segments {
            let fat = format!("{at}.segments.{field}");
            if !valid_name(&field) {
                problems.push(format!(
                    "{fat}: segment names use letters, digits, '-', '_' and '.'"
                ));
            }
            if let Some(source) = key.validate(&fat, problems) {
                segments.push((field, source));
            }
        }
        if self.versions.is_empty() {
            problems.push(format!("{at}.versions: at least one version is required"));
        }
        let declared: Vec<String> = self.versions.keys().cloned().collect();
        let mut versions = BTreeMap::new();
        let mut version_info = BTreeMap::new();
        for (version, backend) in self.versions {
            let vat = format!("{at}.versions.{version}");
            if !valid_name(&version) {
                problems.push(format!(
                    "{vat}: version names use letters, digits, '-', '_' and '.'"
                ));
            }
            version_info.insert(version.clone(), backend.info(&vat, problems));
            if let Some(spec) = backend.validate(&vat, name, problems) {
                versions.insert(version, spec);
            }
        }
        let strategy = self.serve.validate(&format!("{at}.serve"), problems);
        if let Some(strategy) = &strategy {
            for v in strategy.versions() {
                if !declared.iter().any(|d| d == v) {
                    problems.push(format!(
                        "{at}.serve: unknown version '{v}' (declared: {})",
                        declared.join(", ")
                    ));
                }
            }
        }
        if let Some(classes) = &self.classes {
            if classes.is_empty() {
                problems.push(format!("{at}.classes: empty list"));
            }
            if task == Task::Regression {
                problems.push(format!(
                    "{at}.classes: a regression model has no classes (task: regression)"
                ));
            }
            for (i, class) in classes.iter().enumerate() {
                if class.trim().is_empty() {
                    problems.push(format!("{at}.classes[{i}]: empty class name"));
                } else if classes[..i].contains(class) {
                    problems.push(format!(
                        "{at}.classes[{i}]: '{class}' is declared twice (labels are matched by name)"
                    ));
                }
            }
        }
        let salt = self.serve.salt.clone().unwrap_or_else(|| name.to_string());
        (problems.len() == before).then_some(ModelConfig {
            task,
            routing_key,
            classes: self.classes,
            segments,
            versions,
            version_info,
            strategy: strategy?,
            salt,
        })
    }
}

impl RawKey {
    /// Where a routing key or a segment value is read from: exactly one of a header or a JSON
    /// pointer.
    fn validate(self, at: &str, problems: &mut Vec<String>) -> Option<KeySource> {
        match self {
            RawKey {
                header: Some(h),
                json_pointer: None,
            } if !h.is_empty() => Some(KeySource::Header(h.to_ascii_lowercase())),
            RawKey {
                header: None,
                json_pointer: Some(p),
            } if p.starts_with('/') => Some(KeySource::JsonPointer(p)),
            _ => {
                problems.push(format!(
                    "{at}: give exactly one of header or json_pointer (a pointer starts with '/')"
                ));
                None
            }
        }
    }
}

/// A free-text provenance field: present, not blank, at most `max` characters, one line.
fn free_text(at: &str, value: &Option<String>, max: usize, problems: &mut Vec<String>) {
    let Some(v) = value else { return };
    if v.trim().is_empty() {
        problems.push(format!("{at}: empty (leave the field out instead)"));
    } else if v.chars().count() > max {
        problems.push(format!(
            "{at}: at most {max} characters, got {}",
            v.chars().count()
        ));
    } else if v.chars().any(char::is_control) {
        problems.push(format!("{at}: one line of text without control characters"));
    }
}

impl RawBackend {
    /// The version's `git_sha`, `registry` and `cost_per_1k`, checked.
    fn info(&self, at: &str, problems: &mut Vec<String>) -> VersionInfo {
        free_text(
            &format!("{at}.git_sha"),
            &self.git_sha,
            MAX_GIT_SHA_CHARS,
            problems,
        );
        free_text(
            &format!("{at}.registry"),
            &self.registry,
            MAX_REGISTRY_CHARS,
            problems,
        );
        if let Some(cost) = self.cost_per_1k {
            if !(cost.is_finite() && cost >= 0.0) {
                problems.push(format!(
                    "{at}.cost_per_1k: must be a finite number ≥ 0 (the cost of 1,000 predictions), got {cost}"
                ));
            }
        }
        VersionInfo {
            git_sha: self.git_sha.clone(),
            registry: self.registry.clone(),
            cost_per_1k: self.cost_per_1k,
        }
    }

    fn validate(self, at: &str, model: &str, problems: &mut Vec<String>) -> Option<BackendSpec> {
        match (self.onnx, self.url) {
            (Some(path), None) => {
                if self.protocol.is_some()
                    || self.remote_model.is_some()
                    || self.output_pointer.is_some()
                    || self.ca_file.is_some()
                    || self.binary_data.is_some()
                {
                    problems.push(format!("{at}: protocol, remote_model, output_pointer, ca_file and binary_data apply to url backends only"));
                }
                Some(BackendSpec::Onnx { path })
            }
            (None, Some(url)) => {
                let before = problems.len();
                check_url(at, &url, self.ca_file.is_some(), problems);
                let timeout_ms = positive(
                    &format!("{at}.timeout_ms"),
                    self.timeout_ms,
                    DEFAULT_TIMEOUT_MS,
                    problems,
                );
                let protocol = match self.protocol.as_deref() {
                    None | Some("oip") | Some("v2") => Protocol::Oip,
                    Some("oip-grpc") | Some("grpc") => Protocol::OipGrpc,
                    Some("kserve_v1") | Some("v1") => Protocol::KserveV1,
                    Some("json") => match self.output_pointer {
                        Some(p) if p.starts_with('/') => Protocol::Json {
                            output_pointer: p.clone(),
                        },
                        _ => {
                            problems.push(format!("{at}.output_pointer: json backends need a JSON pointer such as /prediction"));
                            Protocol::Oip
                        }
                    },
                    Some(other) => {
                        problems.push(format!(
                            "{at}.protocol: '{other}' is not oip, oip-grpc, kserve_v1 or json"
                        ));
                        Protocol::Oip
                    }
                };
                if self.binary_data == Some(true) && protocol != Protocol::Oip {
                    problems.push(format!(
                        "{at}.binary_data: only oip backends take binary requests"
                    ));
                }
                (problems.len() == before).then(|| BackendSpec::Http {
                    url: url.trim_end_matches('/').to_string(),
                    protocol,
                    remote_model: self.remote_model.unwrap_or_else(|| model.to_string()),
                    timeout_ms,
                    ca_file: self.ca_file,
                    binary_data: self.binary_data.unwrap_or(false),
                })
            }
            _ => {
                problems.push(format!(
                    "{at}: give exactly one of onnx (a file) or url (a model server)"
                ));
                None
            }
        }
    }
}

impl RawStrategy {
    /// Validates a strategy given on its own (through the admin API) against the model's
    /// declared versions.
    pub fn validate_for<'a>(
        &self,
        at: &str,
        versions: impl IntoIterator<Item = &'a str>,
    ) -> Result<Strategy, Vec<String>> {
        let known: Vec<&str> = versions.into_iter().collect();
        let mut problems = Vec::new();
        let strategy = self.validate(at, &mut problems);
        if let Some(strategy) = &strategy {
            for v in strategy.versions() {
                if !known.contains(&v) {
                    problems.push(format!(
                        "{at}: unknown version '{v}' (declared: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        match strategy {
            Some(s) if problems.is_empty() => Ok(s),
            _ => Err(problems),
        }
    }

    fn validate(&self, at: &str, problems: &mut Vec<String>) -> Option<Strategy> {
        let need = |field: &Option<String>, name: &str, problems: &mut Vec<String>| -> String {
            match field {
                Some(v) => v.clone(),
                None => {
                    problems.push(format!("{at}.{name}: required for kind '{}'", self.kind));
                    String::new()
                }
            }
        };
        let strategy = match self.kind.as_str() {
            "single" => Strategy::Single {
                version: need(&self.version, "version", problems),
            },
            "shadow" => Strategy::Shadow {
                primary: need(&self.primary, "primary", problems),
                shadows: self
                    .shadows
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ShadowTarget {
                        version: s.version.clone(),
                        sample: percent_to_bp(
                            &format!("{at}.shadows[{i}].sample"),
                            s.sample.unwrap_or(100.0),
                            problems,
                        ),
                    })
                    .collect(),
            },
            "ab" => Strategy::Split {
                layout: Vec::new(),
                salt: None,
                target: None,
                arms: self
                    .arms
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Arm {
                        variant: a
                            .variant
                            .clone()
                            .unwrap_or_else(|| ((b'a' + (i % 26) as u8) as char).to_string()),
                        version: a.version.clone(),
                        weight: percent_to_bp(
                            &format!("{at}.arms[{i}].weight"),
                            a.weight,
                            problems,
                        ),
                    })
                    .collect(),
            },
            "canary" => {
                let weight = percent_to_bp(
                    &format!("{at}.weight"),
                    self.weight.unwrap_or(0.0),
                    problems,
                );
                Strategy::canary(
                    &need(&self.stable, "stable", problems),
                    &need(&self.canary, "canary", problems),
                    weight,
                )
            }
            "blue_green" => {
                let active = match self.active.as_deref() {
                    None | Some("blue") => Colour::Blue,
                    Some("green") => Colour::Green,
                    Some(other) => {
                        problems.push(format!("{at}.active: '{other}' is not blue or green"));
                        Colour::Blue
                    }
                };
                Strategy::BlueGreen {
                    blue: need(&self.blue, "blue", problems),
                    green: need(&self.green, "green", problems),
                    active,
                }
            }
            other => {
                problems.push(format!(
                    "{at}.kind: '{other}' is not one of single, shadow, ab, canary, blue_green"
                ));
                return None;
            }
        };
        for p in strategy.problems() {
            problems.push(format!("{at}: {p}"));
        }
        // Returned even when invalid, so the caller can also check its versions.
        Some(strategy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn model(serve: RawStrategy) -> RawModel {
        let backend = |url: &str| RawBackend {
            onnx: None,
            url: Some(url.into()),
            protocol: None,
            remote_model: None,
            timeout_ms: None,
            output_pointer: None,
            ca_file: None,
            binary_data: None,
            git_sha: None,
            registry: None,
            cost_per_1k: None,
        };
        RawModel {
            task: None,
            routing_key: None,
            versions: [
                ("v1".to_string(), backend("http://127.0.0.1:1")),
                ("v2".to_string(), backend("http://127.0.0.1:2")),
            ]
            .into(),
            serve,
            classes: None,
            segments: None,
        }
    }

    fn strategy(kind: &str) -> RawStrategy {
        RawStrategy {
            kind: kind.into(),
            version: None,
            primary: None,
            shadows: vec![],
            arms: vec![],
            stable: None,
            canary: None,
            weight: None,
            blue: None,
            green: None,
            active: None,
            salt: None,
        }
    }

    fn config(models: Vec<(&str, RawModel)>) -> RawConfig {
        RawConfig {
            listen: None,
            tls: None,
            grpc_listen: None,
            data_dir: None,
            admin_token_env: None,
            auth: RawAuth::default(),
            limits: RawLimits::default(),
            log: RawLog::default(),
            shadow: RawShadow::default(),
            models: models
                .into_iter()
                .map(|(n, m)| (n.to_string(), m))
                .collect(),
            alerts: RawAlerts::default(),
            controller: RawController::default(),
            runtime: RawRuntime::default(),
        }
    }

    #[test]
    fn tls_and_outbound_urls_are_checked() {
        let backend = |url: &str, ca: Option<&str>| RawBackend {
            onnx: None,
            url: Some(url.into()),
            protocol: None,
            remote_model: None,
            timeout_ms: None,
            output_pointer: None,
            ca_file: ca.map(PathBuf::from),
            binary_data: None,
            git_sha: None,
            registry: None,
            cost_per_1k: None,
        };
        let with = |versions: Vec<(&str, RawBackend)>| {
            let mut m = model(strategy_single());
            m.versions = versions
                .into_iter()
                .map(|(v, b)| (v.to_string(), b))
                .collect();
            m
        };
        let webhook = |url: &str, ca: Option<&str>| RawWebhook {
            url: url.into(),
            min_severity: None,
            ca_file: ca.map(PathBuf::from),
        };
        // Good: https with and without a CA file, a listener with both files.
        let mut good = config(vec![(
            "m",
            with(vec![
                (
                    "v1",
                    backend("https://models.internal:8443", Some("ca.pem")),
                ),
                ("v2", backend("http://127.0.0.1:2", None)),
            ]),
        )]);
        good.tls = Some(RawTls {
            cert: Some("cert.pem".into()),
            key: Some("key.pem".into()),
        });
        good.alerts.webhooks = vec![webhook("https://hooks.example/x", Some("ca.pem"))];
        let valid = good.validate().unwrap();
        assert_eq!(
            valid.tls,
            Some(TlsFiles {
                cert: "cert.pem".into(),
                key: "key.pem".into()
            })
        );
        assert!(matches!(
            &valid.models["m"].versions["v1"],
            BackendSpec::Http { url, ca_file: Some(ca), .. }
                if url == "https://models.internal:8443" && ca == Path::new("ca.pem")
        ));
        assert_eq!(valid.webhooks[0].ca_file, Some(PathBuf::from("ca.pem")));

        let mut bad = config(vec![(
            "m",
            with(vec![
                ("v1", backend("http://127.0.0.1:1", Some("ca.pem"))),
                ("v2", backend("ftp://models", None)),
                ("v3", backend("https://", None)),
            ]),
        )]);
        bad.tls = Some(RawTls {
            cert: Some("cert.pem".into()),
            key: None,
        });
        bad.alerts.webhooks = vec![
            webhook("http://hooks.example/x", Some("ca.pem")),
            webhook("hooks.example/x", None),
        ];
        let problems = bad.validate().unwrap_err();
        for expected in [
            "tls: give both cert and key",
            "models.m.versions.v1.ca_file: applies to https:// URLs only",
            "models.m.versions.v2.url: 'ftp://models' must be an http:// or https:// URL",
            "models.m.versions.v3.url: 'https://' must be an http:// or https:// URL",
            "alerts.webhooks[0].ca_file: applies to https:// URLs only",
            "alerts.webhooks[1].url: 'hooks.example/x' must be an http:// or https:// URL",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "missing '{expected}' in {problems:#?}"
            );
        }
    }

    #[test]
    fn every_problem_is_listed() {
        let mut ab = strategy("ab");
        ab.arms = vec![
            RawArm {
                variant: None,
                version: "v1".into(),
                weight: 70.0,
            },
            RawArm {
                variant: None,
                version: "v9".into(),
                weight: 130.0,
            },
        ];
        let mut bad_shadow = strategy("shadow");
        bad_shadow.primary = Some("v1".into());
        let mut bins = model(strategy_single());
        bins.classes = Some(vec![
            "pass".into(),
            "edge".into(),
            " ".into(),
            "pass".into(),
        ]);
        let mut times = model(strategy_single());
        times.task = Some("regression".into());
        times.classes = Some(vec!["fast".into()]);
        times.segments = Some(BTreeMap::from([
            (
                "tester".to_string(),
                RawKey {
                    header: Some("X-Tester".into()),
                    json_pointer: None,
                },
            ),
            (
                "lot id".to_string(),
                RawKey {
                    header: None,
                    json_pointer: Some("parameters/lot".into()),
                },
            ),
        ]));
        let mut c = config(vec![
            ("yield", model(ab)),
            ("other", model(bad_shadow)),
            ("x y", model(strategy("nope"))),
            ("bins", bins),
            ("times", times),
        ]);
        c.listen = Some("localhost".into());
        c.log.capture_inputs = Some(2.0);
        c.log.durability = Some("always".into());
        c.log.snapshot_every = Some(0);
        c.log.max_size_mb = Some(0.0);
        c.log.retention = Some(RawRetention {
            max_age_hours: Some(-1.0),
            max_records: Some(0),
            batch: Some(0),
        });
        c.limits.header_read_timeout_ms = Some(0);
        c.limits.body_read_timeout_ms = Some(0);
        c.limits.max_header_bytes = Some(100);
        c.runtime.data_plane_threads = Some(5000);
        let problems = c.validate().unwrap_err();
        let expect = [
            "listen",
            "log.capture_inputs",
            "log.durability: must be group or sync, got 'always'",
            "log.retention.max_age_hours: must be a positive number of hours, got -1",
            "log.retention.max_records: must be greater than 0",
            "log.retention.batch: must be greater than 0",
            "log.retention: needs snapshots",
            "log.max_size_mb: must be a positive number of megabytes, got 0",
            "limits.header_read_timeout_ms: must be greater than 0",
            "limits.body_read_timeout_ms: must be greater than 0",
            "limits.max_header_bytes: must be between 8192 and 1048576",
            "runtime.data_plane_threads: must be between 0 and 1024, got 5000",
            "models.yield.serve.arms[1].weight",
            "unknown version 'v9'",
            "models.other.serve: shadow strategy needs at least one shadow",
            "models.x y: model names",
            "models.x y.serve.kind",
            "models.bins.classes[2]: empty class name",
            "models.bins.classes[3]: 'pass' is declared twice",
            "models.times.classes: a regression model has no classes",
            "models.times.segments.lot id: segment names use",
            "models.times.segments.lot id: give exactly one of header or json_pointer",
        ];
        for e in expect {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "missing '{e}' in {problems:#?}"
            );
        }
    }

    #[test]
    fn segments_are_read_from_a_header_or_a_json_pointer() {
        let mut m = model(strategy_single());
        m.segments = Some(BTreeMap::from([
            (
                "tester".to_string(),
                RawKey {
                    header: Some("X-Tester".into()),
                    json_pointer: None,
                },
            ),
            (
                "lot".to_string(),
                RawKey {
                    header: None,
                    json_pointer: Some("/parameters/lot".into()),
                },
            ),
        ]));
        let c = config(vec![("yield", m)]).validate().unwrap();
        assert_eq!(
            c.models["yield"].segments,
            [
                (
                    "lot".into(),
                    KeySource::JsonPointer("/parameters/lot".into())
                ),
                ("tester".into(), KeySource::Header("x-tester".into())),
            ]
        );
    }

    #[test]
    fn canary_percent_becomes_basis_points() {
        let mut canary = strategy("canary");
        canary.stable = Some("v1".into());
        canary.canary = Some("v2".into());
        canary.weight = Some(5.0);
        let c = config(vec![("yield", model(canary))]).validate().unwrap();
        assert_eq!(
            c.models["yield"].strategy,
            Strategy::canary("v1", "v2", 500)
        );
    }

    #[test]
    fn server_limits_have_defaults() {
        let c = config(vec![("yield", model(strategy_single()))])
            .validate()
            .unwrap();
        assert_eq!(c.header_read_timeout_ms, 10_000);
        assert_eq!(c.body_read_timeout_ms, 30_000);
        assert_eq!(c.max_header_bytes, 64 * 1024);
        assert!(
            c.log.enabled,
            "the prediction log is on unless switched off"
        );
    }

    #[test]
    fn prediction_log_can_be_switched_off() {
        let mut raw = config(vec![("yield", model(strategy_single()))]);
        raw.log.enabled = Some(false);
        assert!(!raw.validate().unwrap().log.enabled);
    }

    #[test]
    fn provenance_and_cost_fields_are_checked_in_both_written_forms() {
        // The flow form (`v2: { onnx: …, git_sha: … }`) and the block form read the same.
        let yaml = r#"
models:
  yield:
    versions:
      v1:
        onnx: models/yield_v1.onnx
        git_sha: 3f2c1ab
        registry: "mlflow:yield/6"
        cost_per_1k: 0.1
      v2: { onnx: models/yield_v2.onnx, git_sha: 9e8d7c6, registry: "mlflow:yield/7", cost_per_1k: 0.40 }
      v3: { url: "http://127.0.0.1:9000" }
    serve: { kind: single, version: v1 }
"#;
        let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
        let config = raw.validate().unwrap();
        let info = &config.models["yield"].version_info;
        assert_eq!(
            info["v1"],
            VersionInfo {
                git_sha: Some("3f2c1ab".into()),
                registry: Some("mlflow:yield/6".into()),
                cost_per_1k: Some(0.1),
            }
        );
        assert_eq!(info["v2"].cost_per_1k, Some(0.40));
        assert_eq!(info["v2"].registry.as_deref(), Some("mlflow:yield/7"));
        assert_eq!(info["v3"], VersionInfo::default());

        let bad = r#"
models:
  yield:
    versions:
      v1: { onnx: a.onnx, git_sha: "  ", registry: "", cost_per_1k: -0.5 }
      v2: { url: "http://127.0.0.1:9000", cost_per_1k: .nan, git_sha: "line\tbreak" }
      v3: { url: "http://127.0.0.1:9001", cost_per_1k: .inf }
    serve: { kind: single, version: v1 }
"#;
        let mut raw: RawConfig = serde_yaml::from_str(bad).unwrap();
        let v4 = RawBackend {
            registry: Some("r".repeat(MAX_REGISTRY_CHARS + 1)),
            git_sha: Some("a".repeat(MAX_GIT_SHA_CHARS + 1)),
            cost_per_1k: None,
            ..raw.models["yield"].versions["v3"].clone()
        };
        raw.models
            .get_mut("yield")
            .unwrap()
            .versions
            .insert("v4".into(), v4);
        let problems = raw.validate().unwrap_err();
        for e in [
            "models.yield.versions.v1.git_sha: empty (leave the field out instead)",
            "models.yield.versions.v1.registry: empty",
            "models.yield.versions.v1.cost_per_1k: must be a finite number ≥ 0 (the cost of 1,000 predictions), got -0.5",
            "models.yield.versions.v2.cost_per_1k: must be a finite number ≥ 0 (the cost of 1,000 predictions), got NaN",
            "models.yield.versions.v2.git_sha: one line of text without control characters",
            "models.yield.versions.v3.cost_per_1k: must be a finite number ≥ 0 (the cost of 1,000 predictions), got inf",
            "models.yield.versions.v4.git_sha: at most 64 characters, got 65",
            "models.yield.versions.v4.registry: at most 256 characters, got 257",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 8, "{problems:#?}");
    }

    fn credential(name: &str, roles: &[&str]) -> RawCredential {
        RawCredential {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            token_sha256: Some("ab".repeat(32)),
            token_sha256_env: None,
            token_sha256_file: None,
            models: None,
        }
    }

    #[test]
    fn credentials_are_validated_with_every_other_problem() {
        let mut raw = config(vec![("yield", model(strategy_single()))]);
        raw.admin_token_env = Some("ADMIN".into());
        let mut plaintext = credential("alice", &["approver", "root"]);
        plaintext.token_sha256 = Some("hunter2".into());
        let mut two_sources = credential("bob", &[]);
        two_sources.token_sha256_env = Some("BOB".into());
        let mut scoped = credential("labeller", &["viewer"]);
        scoped.models = Some(vec!["yield".into(), "nope".into()]);
        raw.auth.credentials = vec![
            plaintext,
            two_sources,
            credential("alice", &["viewer"]),
            credential("admin", &["admin"]),
            credential("x y", &["viewer"]),
            scoped,
        ];
        let problems = raw.validate().unwrap_err();
        for e in [
            "auth.credentials[0].roles: 'root' is not viewer",
            "auth.credentials[0].token_sha256: must be 64 hex digits",
            "auth.credentials[1].roles: give at least one",
            "auth.credentials[1]: give exactly one of token_sha256, token_sha256_env or token_sha256_file",
            "auth.credentials[2].name: 'alice' is used twice",
            "auth.credentials[3].name: 'admin' is the name of admin_token_env's credential",
            "auth.credentials[4].name: 'x y' must use letters",
            "auth.credentials[5].models: limits the feedback role",
            "auth.credentials[5].models: unknown model 'nope'",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "missing '{e}' in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 9, "{problems:#?}");

        let mut open = config(vec![("yield", model(strategy_single()))]);
        open.auth.data_plane.require = Some(true);
        let problems = open.validate().unwrap_err();
        assert!(
            problems[0].contains("auth.data_plane.require"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_valid_credential_keeps_its_roles_models_and_lowercased_hash() {
        let mut raw = config(vec![("yield", model(strategy_single()))]);
        let mut c = credential("labeller", &["feedback", "feedback", "inference"]);
        c.token_sha256 = Some("AB".repeat(32));
        c.models = Some(vec!["yield".into()]);
        let mut env = credential("ops", &["operator"]);
        env.token_sha256 = None;
        env.token_sha256_env = Some("OPS_SHA".into());
        raw.auth.credentials = vec![c, env];
        raw.auth.data_plane.require = Some(true);
        let auth = raw.validate().unwrap().auth;
        assert!(auth.data_plane_require);
        assert_eq!(
            auth.credentials[0],
            CredentialConfig {
                name: "labeller".into(),
                roles: vec![AccessRole::Feedback, AccessRole::Inference],
                token_sha256: TokenHash::Hex("ab".repeat(32)),
                models: Some(vec!["yield".into()]),
            }
        );
        assert_eq!(
            auth.credentials[1].token_sha256,
            TokenHash::Env("OPS_SHA".into())
        );
    }

    fn strategy_single() -> RawStrategy {
        let mut s = strategy("single");
        s.version = Some("v1".into());
        s
    }
}
