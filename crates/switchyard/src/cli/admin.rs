//! The operator commands over the gateway's admin API (`/admin/v1/...`): `apply`, `status`,
//! `promote`/`rollback`/`pause`/`resume`/`approve`/`abort`, `events`, `report` and
//! `audit verify`.
//!
//! Every command takes `--url` (default `http://127.0.0.1:8080`, or `SWITCHYARD_URL`) and sends
//! the bearer token from `SWITCHYARD_ADMIN_TOKEN` when it is set; the token is never printed.
//! Requests go through hyper's client on a current-thread runtime, one command at a time.
//!
//! Exit codes (decided in `main`): a refusal by the gateway (4xx: invalid spec, conflict,
//! unknown rollout, missing token) is a [`InputError`] and exits 2; an unreachable gateway,
//! a server error or a broken audit chain exits 1.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use switchyard_store::StoreUrl;

use super::InputError;

/// Where the gateway listens when neither `--url` nor `SWITCHYARD_URL` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The environment variable holding the admin bearer token.
pub const TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";
/// Sent as `x-switchyard-actor`, so audit events read `admin:cli`.
const ACTOR: &str = "cli";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the gateway.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the gateway (its admin API is under /admin/v1). The admin bearer token, if
    /// the gateway wants one, is read from SWITCHYARD_ADMIN_TOKEN.
    #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL, value_name = "URL")]
    url: String,
}

/// The operator commands (flattened into the top-level command list).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Start a rollout from a YAML (or JSON) spec, or only validate it with --dry-run.
    Apply(ApplyArgs),
    /// Show every rollout as a table, or one rollout.
    Status(StatusArgs),
    /// Promote the candidate now: it serves all traffic and the rollout completes.
    Promote(ActionArgs),
    /// Roll back now: the current version serves all traffic again.
    Rollback(ActionArgs),
    /// Pause a rollout: traffic stays as it is until `resume`.
    Pause(ActionArgs),
    /// Resume a paused rollout.
    Resume(ActionArgs),
    /// Approve the step or conclusion a rollout is waiting for.
    Approve(ActionArgs),
    /// Abort a rollout: the current version serves all traffic again.
    Abort(ActionArgs),
    /// The audit events of a rollout, oldest first.
    Events(EventsArgs),
    /// A rollout's report (summary, statistics per version, events, analysis).
    Report(ReportArgs),
    /// The hash-chained audit trail.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The rollout spec (YAML or JSON).
    #[arg(long = "file", short = 'f', value_name = "SPEC")]
    file: PathBuf,
    /// Only validate the spec against the gateway's models and active rollouts.
    #[arg(long)]
    dry_run: bool,
    /// Print the gateway's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One rollout (default: all of them).
    name: Option<String>,
    /// Print the gateway's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The rollout.
    name: String,
    /// Print the rollout's new state as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The rollout.
    name: String,
    /// Print the gateway's JSON instead of one line per event.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Md,
    Html,
}

impl ReportFormat {
    fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Text => "text",
            ReportFormat::Json => "json",
            ReportFormat::Md => "md",
            ReportFormat::Html => "html",
        }
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The rollout.
    name: String,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Write the report to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of every audit event and report the first break.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Read the store in DIR/switchyard.sqlite directly (works with the gateway stopped)
    /// instead of asking the gateway; takes precedence over --url.
    #[arg(long, value_name = "DIR", conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// Read the store at this URL directly (`postgres://…` for replicas, or `sqlite:///…`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Connection,
}

pub fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Apply(args) => apply(args),
        AdminCommand::Status(args) => status(args),
        AdminCommand::Promote(args) => action("promote", args),
        AdminCommand::Rollback(args) => action("rollback", args),
        AdminCommand::Pause(args) => action("pause", args),
        AdminCommand::Resume(args) => action("resume", args),
        AdminCommand::Approve(args) => action("approve", args),
        AdminCommand::Abort(args) => action("abort", args),
        AdminCommand::Events(args) => events(args),
        AdminCommand::Report(args) => report(args),
        AdminCommand::Audit(AuditArgs {
            command: AuditCommand::Verify(args),
        }) => audit_verify(args),
    }
}

// ---------------------------------------------------------------------------------------------
// Commands.

fn apply(args: ApplyArgs) -> Result<()> {
    let file = args.file.display().to_string();
    let spec = std::fs::read_to_string(&args.file)
        .map_err(|e| InputError::new("--file", format!("cannot read '{file}': {e}")))?;
    let api = Api::new(&args.conn)?;
    let path = if args.dry_run {
        "/rollouts?dry_run=true"
    } else {
        "/rollouts"
    };
    let reply = api.send(Method::POST, path, Some(spec))?;
    if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
        let err = reply.error();
        let problems = if err.problems.is_empty() {
            vec![err.message]
        } else {
            err.problems
        };
        let count = match problems.len() {
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        };
        return Err(InputError::new(
            file,
            format!(
                "invalid rollout spec ({count}):\n  - {}",
                problems.join("\n  - ")
            ),
        )
        .into());
    }
    let body = api.expect_json(&reply, &file)?;
    if args.json {
        return emit(&compact(&body));
    }
    if args.dry_run {
        let spec = &body["spec"];
        emit(&format!(
            "{file}: valid {} rollout '{}' of model '{}' (dry run: nothing started)",
            text(&spec["kind"]),
            text(&spec["name"]),
            text(&spec["model"]),
        ))
    } else {
        emit(&format!(
            "started {} rollout '{}' of model '{}' ({}): {}, traffic {}",
            text(&body["kind"]),
            text(&body["name"]),
            text(&body["model"]),
            versions(&body),
            text(&body["phase"]),
            traffic(&body["strategy"]),
        ))
    }
}

fn status(args: StatusArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let (path, subject) = match &args.name {
        Some(name) => (format!("/rollouts/{}", segment(name)?), name.as_str()),
        None => ("/rollouts".to_string(), "status"),
    };
    let reply = api.send(Method::GET, &path, None)?;
    let body = api.expect_json(&reply, subject)?;
    if args.json {
        return emit(&compact(&body));
    }
    let mut rollouts: Vec<&Value> = match &args.name {
        Some(_) => vec![&body],
        None => body["rollouts"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
    };
    if rollouts.is_empty() {
        return emit("no rollouts");
    }
    rollouts.sort_by(|a, b| text(&a["name"]).cmp(&text(&b["name"])));
    let mut rows = vec![[
        "NAME", "MODEL", "KIND", "PHASE", "STEP", "VERSIONS", "TRAFFIC", "REASON",
    ]
    .map(String::from)
    .to_vec()];
    for r in rollouts {
        rows.push(vec![
            text(&r["name"]),
            text(&r["model"]),
            text(&r["kind"]),
            text(&r["phase"]),
            step(r),
            versions(r),
            traffic(&r["strategy"]),
            text(&r["reason"]),
        ]);
    }
    emit(&table(&rows))
}

fn action(verb: &'static str, args: ActionArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let path = format!("/rollouts/{}/{verb}", segment(&args.name)?);
    let reply = api.send(Method::POST, &path, None)?;
    let view = api.expect_json(&reply, verb)?;
    if args.json {
        return emit(&compact(&view));
    }
    let mut line = format!(
        "{}: {} (traffic {})",
        text(&view["name"]),
        text(&view["phase"]),
        traffic(&view["strategy"])
    );
    if let Some(reason) = view["reason"].as_str() {
        line.push_str(&format!("; {reason}"));
    }
    emit(&line)
}

fn events(args: EventsArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let path = format!("/rollouts/{}/events", segment(&args.name)?);
    let reply = api.send(Method::GET, &path, None)?;
    let body = api.expect_json(&reply, &args.name)?;
    if args.json {
        return emit(&compact(&body));
    }
    let events = body["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        return emit(&format!("{}: no events", args.name));
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let mut message = text(&e["message"]);
            if let Some(details) = e["details"].as_object().filter(|d| !d.is_empty()) {
                let pairs: Vec<String> = details
                    .iter()
                    .map(|(k, v)| format!("{k}={}", detail(v)))
                    .collect();
                message = format!("{message}  {}", pairs.join(" "));
            }
            vec![
                text(&e["seq"]),
                e["ts_ms"].as_i64().map_or_else(|| "-".into(), rfc3339_utc),
                text(&e["kind"]),
                text(&e["actor"]),
                message,
            ]
        })
        .collect();
    emit(&table(&rows))
}

fn report(args: ReportArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let path = format!(
        "/rollouts/{}/report?format={}",
        segment(&args.name)?,
        args.format.as_str()
    );
    let reply = api.send(Method::GET, &path, None)?;
    api.check(&reply, &args.name)?;
    match &args.output {
        Some(file) => std::fs::write(file, &reply.body).map_err(|e| {
            InputError::new(
                "--output",
                format!("cannot write '{}': {e}", file.display()),
            )
            .into()
        }),
        None => emit(&String::from_utf8_lossy(&reply.body)),
    }
}

fn audit_verify(args: VerifyArgs) -> Result<()> {
    let direct = match (&args.data_dir, &args.store) {
        (Some(dir), _) => Some((
            "--data-dir",
            StoreUrl::sqlite(dir.join("switchyard.sqlite")),
        )),
        (None, Some(url)) => Some((
            "--store",
            StoreUrl::parse(url).map_err(|e| InputError::new("--store", e.to_string()))?,
        )),
        (None, None) => None,
    };
    let report = match direct {
        Some((flag, url)) => {
            if let Some(path) = url.sqlite_path().filter(|p| !p.is_file()) {
                return Err(
                    InputError::new(flag, format!("no store at '{}'", path.display())).into(),
                );
            }
            let store = switchyard_store::ControlStore::open(&url)
                .with_context(|| format!("opening the store at '{url}'"))?;
            let r = store
                .verify_chain()
                .with_context(|| format!("reading the audit trail in '{url}'"))?;
            json!({ "events": r.events, "ok": r.ok, "first_bad_seq": r.first_bad_seq, "problem": r.problem })
        }
        None => {
            let api = Api::new(&args.conn)?;
            let reply = api.send(Method::GET, "/audit/verify", None)?;
            api.expect_json(&reply, "audit verify")?
        }
    };
    let ok = report["ok"].as_bool() == Some(true);
    if args.json {
        emit(&compact(&report))?;
    } else if ok {
        emit(&format!(
            "audit chain OK: {} events",
            text(&report["events"])
        ))?;
    } else {
        emit(&format!(
            "audit chain BROKEN at seq {}: {}",
            text(&report["first_bad_seq"]),
            text(&report["problem"])
        ))?;
    }
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the audit trail does not verify: an event was edited, removed or moved"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// A client of one gateway's admin API. Deliberately not `Debug`: it holds the token.
struct Api {
    base: String,
    token: Option<HeaderValue>,
    runtime: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Reply {
    status: StatusCode,
    body: Bytes,
}

/// The `error` object of a refusal.
struct ApiFailure {
    code: String,
    message: String,
    problems: Vec<String>,
}

impl Reply {
    fn error(&self) -> ApiFailure {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let err = &body["error"];
        let message = err["message"].as_str().map_or_else(
            || {
                let raw = String::from_utf8_lossy(&self.body);
                let raw = raw.trim();
                if raw.is_empty() {
                    self.status
                        .canonical_reason()
                        .unwrap_or("no message")
                        .to_string()
                } else {
                    raw.chars().take(300).collect()
                }
            },
            str::to_string,
        );
        ApiFailure {
            code: err["code"].as_str().unwrap_or("").to_string(),
            message,
            problems: err["problems"]
                .as_array()
                .map(|p| p.iter().map(text).collect())
                .unwrap_or_default(),
        }
    }
}

impl Api {
    fn new(conn: &Connection) -> Result<Api> {
        let mut base = conn.url.trim().trim_end_matches('/').to_string();
        if !base.contains("://") {
            base = format!("http://{base}");
        }
        let uri: Uri = base
            .parse()
            .map_err(|_| InputError::new("--url", format!("'{base}' is not a URL")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(InputError::new(
                "--url",
                format!("'{base}' is not an http:// URL (https is not supported)"),
            )
            .into());
        }
        let token = match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.is_empty() => {
                let mut value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    InputError::new(TOKEN_ENV, "holds characters an HTTP header cannot carry")
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(InputError::new(TOKEN_ENV, "is not valid UTF-8").into())
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Api {
            base,
            token,
            runtime,
            client,
        })
    }

    /// Sends a request to `/admin/v1{path}`. Only transport failures are errors here.
    fn send(&self, method: Method, path: &str, body: Option<String>) -> Result<Reply> {
        let url = format!("{}/admin/v1{path}", self.base);
        let uri: Uri = url
            .parse()
            .map_err(|_| InputError::new("--url", format!("'{url}' is not a URL")))?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-switchyard-actor", ACTOR);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/yaml");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        let base = &self.base;
        self.runtime.block_on(async {
            let exchange = async {
                let response = self.client.request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, anyhow::Error>(Reply { status, body })
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(transport_error(base, &e)),
                Err(_) => Err(anyhow!(
                    "the gateway at {base} did not answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )),
            }
        })
    }

    /// Turns a non-2xx answer into an error: 4xx is a refusal (exit 2) concerning `subject`,
    /// anything else a failure (exit 1).
    fn check(&self, reply: &Reply, subject: &str) -> Result<()> {
        if reply.status.is_success() {
            return Ok(());
        }
        let err = reply.error();
        let status = reply.status.as_u16();
        if reply.status == StatusCode::UNAUTHORIZED {
            let reason = if self.token.is_some() {
                format!("unauthorized: the gateway refused the admin token in {TOKEN_ENV}")
            } else {
                format!("unauthorized: the gateway requires an admin token; set {TOKEN_ENV}")
            };
            return Err(InputError::new(TOKEN_ENV, reason).into());
        }
        if reply.status == StatusCode::NOT_FOUND && (err.code.is_empty() || err.code == "not_found")
        {
            return Err(InputError::new(
                "--url",
                format!(
                    "{} has no switchyard admin API (404: {})",
                    self.base, err.message
                ),
            )
            .into());
        }
        let mut message = err.message;
        if !err.problems.is_empty() && !message.contains(&err.problems[0]) {
            message = format!("{message}:\n  - {}", err.problems.join("\n  - "));
        }
        if reply.status.is_client_error() {
            Err(InputError::new(subject, message).into())
        } else {
            let code = if err.code.is_empty() {
                String::new()
            } else {
                format!(" {}", err.code)
            };
            Err(anyhow!(
                "the gateway at {} failed ({status}{code}): {message}",
                self.base
            ))
        }
    }

    /// The JSON body of a successful answer.
    fn expect_json(&self, reply: &Reply, subject: &str) -> Result<Value> {
        self.check(reply, subject)?;
        serde_json::from_slice(&reply.body).map_err(|e| {
            anyhow!(
                "the gateway at {} answered with something that is not JSON ({e})",
                self.base
            )
        })
    }
}

/// A transport failure, naming the URL (never the token, which only travels in a header).
fn transport_error(base: &str, err: &anyhow::Error) -> anyhow::Error {
    let mut causes = Vec::new();
    let mut refused = false;
    let mut connect = false;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= e.is_connect();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        causes.push(cause.to_string());
    }
    let detail = if refused {
        "connection refused".to_string()
    } else {
        causes.last().cloned().unwrap_or_default()
    };
    if connect || refused {
        anyhow!(
            "cannot reach the gateway at {base}: {detail}\n  is it running? start one with \
             `switchyard serve -c <config.yaml>`, or point --url (or SWITCHYARD_URL) at it"
        )
    } else {
        anyhow!("talking to the gateway at {base}: {}", causes.join(": "))
    }
}

/// A rollout name as one URL path segment.
fn segment(name: &str) -> Result<String, InputError> {
    if name.is_empty() {
        return Err(InputError::new("<name>", "is empty"));
    }
    let all_dots = name.chars().all(|c| c == '.');
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || (matches!(b, b'-' | b'_' | b'.' | b'~') && !all_dots) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Writes `text` and a newline to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let result = if text.ends_with('\n') {
        out.write_all(text.as_bytes())
    } else {
        writeln!(out, "{text}")
    }
    .and_then(|()| out.flush());
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A JSON value as plain text: strings unquoted, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A detail value of an event: integers without `.0`, strings with spaces quoted.
fn detail(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        Value::String(s) if s.is_empty() || s.chars().any(char::is_whitespace) => {
            format!("{s:?}")
        }
        other => text(other),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn versions(view: &Value) -> String {
    format!("{}→{}", text(&view["current"]), text(&view["candidate"]))
}

/// `2/4` for a canary (current step of all steps), the bare step otherwise.
fn step(view: &Value) -> String {
    match (view["step"].as_u64(), view["spec"]["steps"].as_array()) {
        (Some(step), Some(steps)) => format!("{step}/{}", steps.len()),
        (Some(step), None) => step.to_string(),
        _ => "-".into(),
    }
}

/// Basis points as a percentage: `5%`, `12.5%`.
fn percent(bp: &Value) -> String {
    let Some(bp) = bp.as_u64() else {
        return "?%".into();
    };
    if bp % 100 == 0 {
        format!("{}%", bp / 100)
    } else {
        let s = format!("{:.2}", bp as f64 / 100.0);
        format!("{}%", s.trim_end_matches('0'))
    }
}

/// Who gets traffic under a routing strategy (as serialised by `switchyard_core::Strategy`).
fn traffic(strategy: &Value) -> String {
    let empty = Vec::new();
    match strategy["kind"].as_str() {
        Some("single") => format!("{} 100%", text(&strategy["version"])),
        Some("split") => strategy["arms"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|a| format!("{} {}", text(&a["version"]), percent(&a["weight"])))
            .collect::<Vec<_>>()
            .join(" / "),
        Some("shadow") => {
            let shadows: Vec<String> = strategy["shadows"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|s| format!("{} {}", text(&s["version"]), percent(&s["sample"])))
                .collect();
            format!(
                "{} 100% (mirrored to {})",
                text(&strategy["primary"]),
                shadows.join(", ")
            )
        }
        Some("blue_green") => {
            let active = text(&strategy["active"]);
            format!("{} 100% ({active})", text(&strategy[active.as_str()]))
        }
        _ => "-".into(),
    }
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC timestamp, e.g.
/// `2023-11-14T22:13:20.000Z`.
pub fn rfc3339_utc(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn traffic_of_each_strategy() {
        let split = json!({"kind": "split", "arms": [
            {"variant": "canary", "version": "v2", "weight": 500},
            {"variant": "stable", "version": "v1", "weight": 9500}]});
        assert_eq!(traffic(&split), "v2 5% / v1 95%");
        assert_eq!(
            traffic(&json!({"kind": "single", "version": "v1"})),
            "v1 100%"
        );
        assert_eq!(
            traffic(
                &json!({"kind": "shadow", "primary": "v1", "shadows": [{"version": "v2", "sample": 1250}]})
            ),
            "v1 100% (mirrored to v2 12.5%)"
        );
        assert_eq!(
            traffic(&json!({"kind": "blue_green", "blue": "v1", "green": "v2", "active": "green"})),
            "v2 100% (green)"
        );
    }

    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(segment("m-canary_1.2").ok(), Some("m-canary_1.2".into()));
        assert_eq!(segment("a/b c").ok(), Some("a%2Fb%20c".into()));
        assert_eq!(segment("..").ok(), Some("%2E%2E".into()));
        assert!(segment("").is_err());
    }
}
