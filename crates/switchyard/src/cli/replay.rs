//! `switchyard replay`: judge a candidate on recorded requests before it sees a live one.
//!
//! The models' backends are built from the gateway's configuration file as `serve` builds them
//! (in-process ONNX models, HTTP backends); no gateway needs to run. The requests come from a
//! CSV or JSONL file (`--input`) or from the prediction log (`--log`: the served requests whose
//! bodies `log.capture_inputs` kept, with their feedback labels). Each is sent to the primary
//! and the candidate at a bounded rate (`--rate`) and concurrency, and the live shadow's report
//! is computed over the answers (`switchyard_server::replay`). A progress bar is drawn on
//! stderr when it is a terminal.
//!
//! Exit codes: 0 when the replay ran (whatever it recommends); with `--exit-code`, 3 when it
//! recommends INVESTIGATE and 4 when it recommends REJECT (PROMOTE and NEUTRAL stay 0). Bad
//! flags or sources exit 2, a failure 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use switchyard_core::rollout::Recommendation;
use switchyard_server::load_config;
use switchyard_server::replay::{self, ReplayError, ReplayOptions, Source};
use switchyard_server::report::{render_replay_markdown, render_replay_text};
use switchyard_store::StoreUrl;

use super::InputError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    Text,
    Md,
    Json,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The gateway's YAML configuration (the models and their backends).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// A shadow rollout spec (YAML or JSON): the model, primary, candidate and the rules.
    /// Without it, --model, --primary and --candidate with the default rules.
    #[arg(long = "spec", short = 'f', value_name = "SPEC")]
    spec: Option<PathBuf>,
    #[arg(long)]
    model: Option<String>,
    /// The version that serves today.
    #[arg(long)]
    primary: Option<String>,
    /// The version to judge.
    #[arg(long)]
    candidate: Option<String>,
    /// Requests from a file: `.csv` (a header row, numeric feature columns, an optional label
    /// column) or `.jsonl` (one request body per line, optionally with `label` or `value`).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "log",
        conflicts_with = "log"
    )]
    input: Option<PathBuf>,
    /// The CSV's label column (default: the column named `label`, if any).
    #[arg(long, value_name = "NAME")]
    label_column: Option<String>,
    /// Requests from the prediction log: the model's served requests whose inputs were
    /// captured (`log.capture_inputs`), with their feedback labels.
    #[arg(long)]
    log: bool,
    /// The log's store by URL (`sqlite:///…` or `postgres://…`); default: the configuration's
    /// data_dir (or ./switchyard-data)/switchyard.sqlite.
    #[arg(
        long,
        env = "SWITCHYARD_STORE",
        requires = "log",
        conflicts_with = "data_dir"
    )]
    store: Option<String>,
    /// The directory of the log's SQLite store.
    #[arg(long, requires = "log")]
    data_dir: Option<PathBuf>,
    /// Only log records at or after this time (milliseconds since the Unix epoch).
    #[arg(long, requires = "log")]
    since_ms: Option<i64>,
    /// Only log records before this time (milliseconds since the Unix epoch).
    #[arg(long, requires = "log")]
    until_ms: Option<i64>,
    /// Most requests replayed (the first ones of the file, the oldest of the log).
    #[arg(long, default_value_t = 100_000)]
    max_rows: usize,
    /// Requests started per second (default: as fast as --concurrency allows).
    #[arg(long)]
    rate: Option<f64>,
    /// Requests in flight at once (each calls both versions).
    #[arg(long, default_value_t = replay::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    format: ReplayFormat,
    /// Write the report to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Exit 3 when the replay recommends INVESTIGATE, 4 when it recommends REJECT.
    #[arg(long)]
    exit_code: bool,
}

/// The recommendation of a replay run with `--exit-code`, when it is not PROMOTE or NEUTRAL.
#[derive(Debug, thiserror::Error)]
#[error("the replay recommends {}", .0.as_str())]
pub struct Verdict(pub Recommendation);

impl Verdict {
    /// 3 for INVESTIGATE, 4 for REJECT.
    pub fn exit_code(&self) -> u8 {
        match self.0 {
            Recommendation::Reject => 4,
            _ => 3,
        }
    }
}

/// A replay error as the CLI reports it: bad input names its flag (exit 2).
fn explain(e: ReplayError, source_flag: &str, spec_flag: &str) -> anyhow::Error {
    match e {
        ReplayError::Read { .. } | ReplayError::Line { .. } | ReplayError::NoRows(_) => {
            InputError::new(source_flag, e.to_string()).into()
        }
        ReplayError::UnknownModel { .. } | ReplayError::Spec(_) => {
            InputError::new(spec_flag, e.to_string()).into()
        }
        ReplayError::Options(_) => {
            InputError::new("--rate/--concurrency/--max-rows", e.to_string()).into()
        }
        ReplayError::Backend { .. } => InputError::new("--config", e.to_string()).into(),
        ReplayError::Store(_) => anyhow::Error::new(e),
    }
}

fn source_of(args: &ReplayArgs, data_dir: Option<&Path>) -> Result<Source> {
    if let Some(path) = &args.input {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        return match ext.as_deref() {
            Some("csv") => Ok(Source::Csv {
                path: path.clone(),
                label_column: args.label_column.clone(),
            }),
            Some("jsonl" | "ndjson") => {
                if args.label_column.is_some() {
                    return Err(InputError::new(
                        "--label-column",
                        "only a CSV has columns; a JSONL line gives `label` or `value`",
                    )
                    .into());
                }
                Ok(Source::Jsonl { path: path.clone() })
            }
            _ => Err(InputError::new(
                "--input",
                format!(
                    "'{}': name a .csv or a .jsonl file (the extension says which)",
                    path.display()
                ),
            )
            .into()),
        };
    }
    let store = match &args.store {
        Some(url) => StoreUrl::parse(url).map_err(|e| InputError::new("--store", e.to_string()))?,
        None => StoreUrl::sqlite(
            args.data_dir
                .clone()
                .or_else(|| data_dir.map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("switchyard-data"))
                .join("switchyard.sqlite"),
        ),
    };
    if let Some(path) = store.sqlite_path().filter(|p| !p.is_file()) {
        return Err(InputError::new(
            if args.data_dir.is_some() {
                "--data-dir"
            } else {
                "--store"
            },
            format!("no prediction log at {}", path.display()),
        )
        .into());
    }
    Ok(Source::Log {
        store,
        since_ms: args.since_ms,
        until_ms: args.until_ms,
    })
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let config =
        load_config(&args.config).map_err(|e| InputError::new("--config", e.to_string()))?;
    let spec_text = match &args.spec {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            InputError::new("--spec", format!("cannot read '{}': {e}", path.display()))
        })?),
        None => None,
    };
    let spec_flag = if args.spec.is_some() {
        "--spec"
    } else {
        "--model/--primary/--candidate"
    };
    let source_flag = if args.input.is_some() {
        "--input"
    } else {
        "--log"
    };
    let source = source_of(&args, config.data_dir.as_deref())?;
    let options = ReplayOptions {
        rate: args.rate,
        concurrency: args.concurrency,
        shadow_timeout: Some(Duration::from_millis(config.shadow.timeout_ms)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let models = replay::runtimes(&config).map_err(|e| explain(e, source_flag, spec_flag))?;
        let (model, spec) = replay::shadow_spec(
            &models,
            spec_text.as_deref(),
            args.model.as_deref(),
            args.primary.as_deref(),
            args.candidate.as_deref(),
        )
        .map_err(|e| explain(e, source_flag, spec_flag))?;
        let model = models
            .get(&model)
            .with_context(|| format!("model '{model}' vanished"))?;
        let loaded = replay::load(&source, model, args.max_rows)
            .map_err(|e| explain(e, source_flag, spec_flag))?;
        let bar = ProgressBar::new(loaded.rows.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "replay {bar:40} {pos}/{len} requests ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let report = replay::run(model, &spec, loaded, &options, &|done| {
            bar.set_position(done)
        })
        .await
        .map_err(|e| explain(e, source_flag, spec_flag))?;
        bar.finish_and_clear();
        anyhow::Ok(report)
    })?;
    let body = match args.format {
        ReplayFormat::Text => render_replay_text(&report),
        ReplayFormat::Md => render_replay_markdown(&report),
        ReplayFormat::Json => {
            serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
        }
    };
    match &args.output {
        Some(file) => std::fs::write(file, &body).map_err(|e| {
            InputError::new(
                "--output",
                format!("cannot write '{}': {e}", file.display()),
            )
        })?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(body.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the report")?;
        }
    }
    let recommendation = report.analysis.report.recommendation;
    if args.exit_code
        && matches!(
            recommendation,
            Recommendation::Investigate | Recommendation::Reject
        )
    {
        return Err(Verdict(recommendation).into());
    }
    Ok(())
}
