//! The operator commands over the gateway's admin API (`/admin/v1/...`): `apply`, `status`,
//! `promote`/`rollback`/`pause`/`resume`/`approve`/`abort`, `events`, `report` and
//! `audit verify`.
//!
//! Every command takes `--url` (default `http://127.0.0.1:8080`, or `SWITCHYARD_URL`) and sends
//! the bearer token from `SWITCHYARD_ADMIN_TOKEN` when it is set (a credential's token: the
//! gateway records that credential's name as the actor); the token is never printed.
//! Requests go through the gateway's own admin client (`switchyard_server::client`), typed by
//! `switchyard_server::api`, on a current-thread runtime, one command at a time.
//!
//! Exit codes (decided in `main`): a refusal by the gateway (4xx: invalid spec, conflict,
//! unknown rollout, missing token, missing role) is a [`InputError`] and exits 2; an unreachable gateway,
//! a server error or a broken audit chain exits 1.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use hyper::StatusCode;
use switchyard_core::audit::Detail;
use switchyard_core::rollout::RolloutKind;
use switchyard_core::routing::Colour;
use switchyard_core::Strategy;
use switchyard_server::api::{ChainCheck, RolloutView};
use switchyard_server::client::{AdminClient, ClientError};
use switchyard_store::StoreUrl;

use super::InputError;

/// Where the gateway listens when neither `--url` nor `SWITCHYARD_URL` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The environment variable holding the bearer token of a credential.
pub const TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";
/// Sent as `x-switchyard-actor`, so audit events of a gateway in open mode read `admin:cli`
/// (with credentials, the credential's name).
const ACTOR: &str = "cli";

/// How to reach the gateway.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the gateway (its admin API is under /admin/v1). The bearer token of a
    /// credential, if the gateway wants one, is read from SWITCHYARD_ADMIN_TOKEN.
    #[arg(long, env = "SWITCHYARD_URL", default_value = DEFAULT_URL, value_name = "URL")]
    url: String,
    /// For an https:// gateway whose certificate a private CA signed: that CA's certificates
    /// (PEM), trusted besides the built-in roots.
    #[arg(long, env = "SWITCHYARD_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
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
    let invalid = |e: ClientError| match e {
        ClientError::Refused { status, error } if status == StatusCode::UNPROCESSABLE_ENTITY => {
            let problems = if error.problems.is_empty() {
                vec![error.message]
            } else {
                error.problems
            };
            let count = match problems.len() {
                1 => "1 problem".to_string(),
                n => format!("{n} problems"),
            };
            Err(InputError::new(
                file.clone(),
                format!(
                    "invalid rollout spec ({count}):\n  - {}",
                    problems.join("\n  - ")
                ),
            )
            .into())
        }
        other => Err(api.explain(other, &file)),
    };
    if args.dry_run {
        let checked = match api.block(api.client.dry_run(&spec)) {
            Ok(d) => d,
            Err(e) => return invalid(e),
        };
        if args.json {
            return emit(&compact(&checked));
        }
        let s = &checked.spec;
        return emit(&format!(
            "{file}: valid {} rollout '{}' of model '{}' (dry run: nothing started)",
            s.kind_name(),
            s.name,
            s.model,
        ));
    }
    let view = match api.block(api.client.apply(&spec)) {
        Ok(v) => v,
        Err(e) => return invalid(e),
    };
    if args.json {
        return emit(&compact(&view));
    }
    emit(&format!(
        "started {} rollout '{}' of model '{}' ({}): {}, traffic {}",
        view.kind,
        view.name,
        view.model,
        versions(&view),
        view.phase.as_str(),
        traffic(&view.strategy),
    ))
}

fn status(args: StatusArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let mut rollouts = match &args.name {
        Some(name) => {
            let view = api.call(name, api.client.rollout(named(name)?))?;
            if args.json {
                return emit(&compact(&view));
            }
            vec![view]
        }
        None => {
            let list = api.call("status", api.client.rollouts())?;
            if args.json {
                return emit(&compact(&list));
            }
            list.rollouts
        }
    };
    if rollouts.is_empty() {
        return emit("no rollouts");
    }
    rollouts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = vec![[
        "NAME", "MODEL", "KIND", "PHASE", "STEP", "VERSIONS", "TRAFFIC", "REASON",
    ]
    .map(String::from)
    .to_vec()];
    for r in &rollouts {
        rows.push(vec![
            r.name.clone(),
            r.model.clone(),
            r.kind.clone(),
            r.phase.as_str().to_string(),
            step(r),
            versions(r),
            traffic(&r.strategy),
            match (&r.reason, approvals_note(r)) {
                (Some(reason), Some(note)) => format!("{reason}; {note}"),
                (None, Some(note)) => note,
                (Some(reason), None) => reason.clone(),
                (None, None) => "-".into(),
            },
        ]);
    }
    emit(&table(&rows))
}

fn action(verb: &'static str, args: ActionArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let view = api.call(verb, api.client.command(named(&args.name)?, verb))?;
    if args.json {
        return emit(&compact(&view));
    }
    let mut line = format!(
        "{}: {} (traffic {})",
        view.name,
        view.phase.as_str(),
        traffic(&view.strategy)
    );
    if let Some(reason) = &view.reason {
        line.push_str(&format!("; {reason}"));
    }
    if let Some(note) = approvals_note(&view) {
        line.push_str(&format!("; {note}"));
    }
    emit(&line)
}

/// Who approved so far, when a rollout waits for several approvers.
fn approvals_note(view: &RolloutView) -> Option<String> {
    if let (Some(needed), false) = (view.approvals_needed, view.approved_by.is_empty()) {
        return Some(format!(
            "approved by {} ({} of {needed})",
            view.approved_by.join(", "),
            view.approved_by.len()
        ));
    }
    (!view.promote_requested_by.is_empty()).then(|| {
        format!(
            "promotion asked by {} ({} of {})",
            view.promote_requested_by.join(", "),
            view.promote_requested_by.len(),
            view.spec.promote_approvals()
        )
    })
}

fn events(args: EventsArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let body = api.call(&args.name, api.client.events(named(&args.name)?))?;
    if args.json {
        return emit(&compact(&body));
    }
    if body.events.is_empty() {
        return emit(&format!("{}: no events", args.name));
    }
    let rows: Vec<Vec<String>> = body
        .events
        .iter()
        .map(|e| {
            let mut message = e.message.clone();
            if !e.details.is_empty() {
                let pairs: Vec<String> = e
                    .details
                    .iter()
                    .map(|(k, v)| format!("{k}={}", detail(v)))
                    .collect();
                message = format!("{message}  {}", pairs.join(" "));
            }
            vec![
                e.seq.to_string(),
                rfc3339_utc(e.ts_ms),
                e.kind.clone(),
                e.actor.clone(),
                message,
            ]
        })
        .collect();
    emit(&table(&rows))
}

fn report(args: ReportArgs) -> Result<()> {
    let api = Api::new(&args.conn)?;
    let body = api.call(
        &args.name,
        api.client
            .report_as(named(&args.name)?, args.format.as_str()),
    )?;
    match &args.output {
        Some(file) => std::fs::write(file, &body).map_err(|e| {
            InputError::new(
                "--output",
                format!("cannot write '{}': {e}", file.display()),
            )
            .into()
        }),
        None => emit(&String::from_utf8_lossy(&body)),
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
    let report: ChainCheck = match direct {
        Some((flag, url)) => {
            if let Some(path) = url.sqlite_path().filter(|p| !p.is_file()) {
                return Err(
                    InputError::new(flag, format!("no store at '{}'", path.display())).into(),
                );
            }
            let store = switchyard_store::ControlStore::open(&url)
                .with_context(|| format!("opening the store at '{url}'"))?;
            store
                .verify_chain()
                .with_context(|| format!("reading the audit trail in '{url}'"))?
                .into()
        }
        None => {
            let api = Api::new(&args.conn)?;
            api.call("audit verify", api.client.audit_verify())?
        }
    };
    if args.json {
        emit(&compact(&report))?;
    } else if report.ok {
        emit(&format!("audit chain OK: {} events", report.events))?;
    } else {
        emit(&format!(
            "audit chain BROKEN at seq {}: {}",
            report
                .first_bad_seq
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
            report.problem.as_deref().unwrap_or("-")
        ))?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the audit trail does not verify: an event was edited, removed or moved"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// The admin client on a current-thread runtime, one command at a time.
struct Api {
    client: AdminClient,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    fn new(conn: &Connection) -> Result<Api> {
        let client = AdminClient::new(&conn.url)
            .map_err(|e| InputError::new("--url", e.to_string()))?
            .with_actor(ACTOR);
        let client = match &conn.ca_file {
            Some(path) => client
                .with_ca_file(path)
                .map_err(|e| InputError::new("--ca-file", e.to_string()))?,
            None => client,
        };
        let client = match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.is_empty() => client.with_token(&t).map_err(|_| {
                InputError::new(TOKEN_ENV, "holds characters an HTTP header cannot carry")
            })?,
            Ok(_) | Err(std::env::VarError::NotPresent) => client,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(InputError::new(TOKEN_ENV, "is not valid UTF-8").into())
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Api { client, runtime })
    }

    fn block<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        self.runtime.block_on(call)
    }

    /// Runs one call; a refusal concerns `subject`.
    fn call<T>(
        &self,
        subject: &str,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T> {
        self.block(call).map_err(|e| self.explain(e, subject))
    }

    /// A failed call as the CLI reports it: a 4xx is a refusal (exit 2) concerning
    /// `subject`, anything else a failure (exit 1).
    fn explain(&self, e: ClientError, subject: &str) -> anyhow::Error {
        let base = self.client.base();
        match e {
            ClientError::Refused { status, error } => {
                if status == StatusCode::FORBIDDEN {
                    return InputError::new(TOKEN_ENV, format!("forbidden: {}", error.message))
                        .into();
                }
                if status == StatusCode::UNAUTHORIZED {
                    let reason = if self.client.has_token() {
                        format!("unauthorized: the gateway refused the admin token in {TOKEN_ENV}")
                    } else {
                        format!(
                            "unauthorized: the gateway requires an admin token; set {TOKEN_ENV}"
                        )
                    };
                    return InputError::new(TOKEN_ENV, reason).into();
                }
                if status == StatusCode::NOT_FOUND
                    && (error.code.is_empty() || error.code == "not_found")
                {
                    return InputError::new(
                        "--url",
                        format!(
                            "{base} has no switchyard admin API (404: {})",
                            error.message
                        ),
                    )
                    .into();
                }
                let mut message = error.message;
                if !error.problems.is_empty() && !message.contains(&error.problems[0]) {
                    message = format!("{message}:\n  - {}", error.problems.join("\n  - "));
                }
                if status.is_client_error() {
                    InputError::new(subject, message).into()
                } else {
                    let code = if error.code.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", error.code)
                    };
                    anyhow!(
                        "the gateway at {base} failed ({}{code}): {message}",
                        status.as_u16()
                    )
                }
            }
            e @ ClientError::Unreachable { .. } => anyhow!(
                "{e}\n  is it running? start one with `switchyard serve -c <config.yaml>`, or \
                 point --url (or SWITCHYARD_URL) at it"
            ),
            other => anyhow!(other),
        }
    }
}

/// A rollout name given on the command line: never empty.
fn named(name: &str) -> Result<&str, InputError> {
    if name.is_empty() {
        Err(InputError::new("<name>", "is empty"))
    } else {
        Ok(name)
    }
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

fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A detail value of an event: integers without `.0`, strings with spaces quoted.
fn detail(v: &Detail) -> String {
    match v {
        Detail::Num(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Detail::Num(f) => format!("{f}"),
        Detail::Text(s) if s.is_empty() || s.chars().any(char::is_whitespace) => {
            format!("{s:?}")
        }
        Detail::Text(s) => s.clone(),
        Detail::Bool(b) => b.to_string(),
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

fn versions(view: &RolloutView) -> String {
    if view.arms.is_empty() {
        format!("{}→{}", view.current, view.candidate)
    } else {
        // A/B/n and bandit: every arm, control first.
        view.arms.join("|")
    }
}

/// `2/4` for a canary (current step of all steps), the bare step otherwise.
fn step(view: &RolloutView) -> String {
    match &view.spec.kind {
        RolloutKind::Canary(c) => format!("{}/{}", view.step, c.steps.len()),
        _ => view.step.to_string(),
    }
}

/// Basis points as a percentage: `5%`, `12.5%`.
fn percent(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        let s = format!("{:.2}", f64::from(bp) / 100.0);
        format!("{}%", s.trim_end_matches('0'))
    }
}

/// Who gets traffic under a routing strategy.
fn traffic(strategy: &Strategy) -> String {
    match strategy {
        Strategy::Single { version } => format!("{version} 100%"),
        Strategy::Split { arms, .. } => arms
            .iter()
            .map(|a| format!("{} {}", a.version, percent(a.weight)))
            .collect::<Vec<_>>()
            .join(" / "),
        Strategy::Shadow { primary, shadows } => {
            let shadows: Vec<String> = shadows
                .iter()
                .map(|s| format!("{} {}", s.version, percent(s.sample)))
                .collect();
            format!("{primary} 100% (mirrored to {})", shadows.join(", "))
        }
        Strategy::BlueGreen {
            blue,
            green,
            active,
        } => {
            let serving = match active {
                Colour::Blue => blue,
                Colour::Green => green,
            };
            format!("{serving} 100% ({})", active.as_str())
        }
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
    use switchyard_core::routing::ShadowTarget;

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
        assert_eq!(
            traffic(&Strategy::canary("v1", "v2", 500)),
            "v2 5% / v1 95%"
        );
        assert_eq!(
            traffic(&Strategy::Single {
                version: "v1".into()
            }),
            "v1 100%"
        );
        assert_eq!(
            traffic(&Strategy::Shadow {
                primary: "v1".into(),
                shadows: vec![ShadowTarget {
                    version: "v2".into(),
                    sample: 1250
                }]
            }),
            "v1 100% (mirrored to v2 12.5%)"
        );
        assert_eq!(
            traffic(&Strategy::BlueGreen {
                blue: "v1".into(),
                green: "v2".into(),
                active: Colour::Green
            }),
            "v2 100% (green)"
        );
    }
}
