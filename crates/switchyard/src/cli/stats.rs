//! `switchyard stats …`: the statistics engine on the command line.
//!
//! Human-readable output by default; `--json` prints one JSON object whose keys are a stable
//! interface for scripts. Every input problem is reported with the flag it concerns.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use switchyard_stats::{
    bayes, chi2, mann_whitney, mcnemar, power, proportions, ttest, Proportion, StatsError,
};

use super::InputError;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    test: StatsCommand,
}

#[derive(Debug, Subcommand)]
enum StatsCommand {
    /// McNemar's test on discordant pairs (shadow mode: b = only the primary right,
    /// c = only the shadow right).
    Mcnemar {
        #[arg(long, value_parser = count, allow_hyphen_values = true)]
        b: u64,
        #[arg(long, value_parser = count, allow_hyphen_values = true)]
        c: u64,
    },
    /// Two-proportion z-test of B against A, with Wald and Newcombe intervals.
    Ztest {
        #[command(flatten)]
        counts: ArmCounts,
        /// Significance level of the intervals.
        #[arg(long, default_value_t = 0.05, allow_hyphen_values = true)]
        alpha: f64,
    },
    /// Required sample size per arm to detect an absolute change of a proportion.
    SampleSize {
        /// Baseline rate, e.g. 0.90.
        #[arg(long, allow_hyphen_values = true)]
        baseline: f64,
        /// Minimum detectable effect, absolute (0.02 = two points; may be negative).
        #[arg(long, allow_hyphen_values = true)]
        mde: f64,
        #[arg(long, default_value_t = 0.05, allow_hyphen_values = true)]
        alpha: f64,
        #[arg(long, default_value_t = 0.8, allow_hyphen_values = true)]
        power: f64,
    },
    /// Paired t-test from summary statistics of the differences or from a CSV of pairs.
    TtestPaired {
        #[arg(long, allow_hyphen_values = true, conflicts_with = "file")]
        mean_diff: Option<f64>,
        #[arg(long, allow_hyphen_values = true, conflicts_with = "file")]
        sd_diff: Option<f64>,
        #[arg(long, value_parser = count, allow_hyphen_values = true, conflicts_with = "file")]
        n: Option<u64>,
        /// CSV with two numeric columns (a, b) per line; an optional header is skipped.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Welch's unequal-variance t-test of two samples (one number per line).
    Welch {
        #[arg(long)]
        file_a: PathBuf,
        #[arg(long)]
        file_b: PathBuf,
    },
    /// Mann-Whitney U test of two samples (one number per line).
    MannWhitney {
        #[arg(long)]
        file_a: PathBuf,
        #[arg(long)]
        file_b: PathBuf,
    },
    /// Chi-square test of independence on a contingency table.
    Chi2 {
        /// Rows separated by ';', cells by ',', e.g. "50,30;20,40".
        #[arg(long, allow_hyphen_values = true)]
        table: String,
    },
    /// Sample-ratio mismatch: observed traffic per arm against the configured weights.
    Srm {
        /// Counts per arm, e.g. 5100,4900.
        #[arg(long, allow_hyphen_values = true)]
        observed: String,
        /// Configured weights, summing to 1, e.g. 0.5,0.5.
        #[arg(long, allow_hyphen_values = true)]
        weights: String,
        /// p-value below which the split is declared broken.
        #[arg(long, default_value_t = chi2::DEFAULT_SRM_THRESHOLD, allow_hyphen_values = true)]
        threshold: f64,
    },
    /// Bayesian A/B with Beta(1,1) priors: P(B > A) and the expected loss of each choice.
    Bayes {
        #[command(flatten)]
        counts: ArmCounts,
    },
}

#[derive(Debug, Args)]
struct ArmCounts {
    #[arg(long, value_parser = count, allow_hyphen_values = true)]
    successes_a: u64,
    #[arg(long, value_parser = count, allow_hyphen_values = true)]
    trials_a: u64,
    #[arg(long, value_parser = count, allow_hyphen_values = true)]
    successes_b: u64,
    #[arg(long, value_parser = count, allow_hyphen_values = true)]
    trials_b: u64,
}

impl ArmCounts {
    fn arms(&self) -> (Proportion, Proportion) {
        (
            Proportion {
                successes: self.successes_a,
                trials: self.trials_a,
            },
            Proportion {
                successes: self.successes_b,
                trials: self.trials_b,
            },
        )
    }
}

/// clap value parser for counts: a clear message for negative or fractional input.
fn count(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("must be a non-negative whole number, got '{text}'"))
}

/// Maps a statistics error to the flag the user typed.
fn flagged(err: StatsError, flag_of: impl Fn(&str) -> String) -> anyhow::Error {
    match err {
        StatsError::InvalidInput { field, reason } => {
            InputError::new(flag_of(field), reason).into()
        }
        StatsError::Undefined(reason) => InputError::new("input", reason).into(),
    }
}

fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

pub fn run(args: StatsArgs) -> Result<()> {
    let out = match args.test {
        StatsCommand::Mcnemar { b, c } => {
            let r = mcnemar::mcnemar(b, c);
            Output::new(
                format!("McNemar's test (b = {b}, c = {c})"),
                vec![
                    ("chi-square (continuity corrected)", fmt(r.statistic)),
                    ("p-value", fmt_p(r.p_value)),
                    ("exact binomial p-value", fmt_p(r.exact_p_value)),
                ],
                &r,
            )
        }
        StatsCommand::Ztest { counts, alpha } => {
            let (a, b) = counts.arms();
            let r = proportions::two_proportion_ztest(a, b, alpha).map_err(|e| flagged(e, flag))?;
            let level = (1.0 - alpha) * 100.0;
            Output::new(
                format!(
                    "Two-proportion z-test: A {}/{} = {:.4}, B {}/{} = {:.4}",
                    a.successes, a.trials, r.p_a, b.successes, b.trials, r.p_b
                ),
                vec![
                    ("difference (B − A)", fmt(r.diff)),
                    ("z (pooled)", fmt(r.z)),
                    ("p-value (two-sided)", fmt_p(r.p_value)),
                    (
                        "Wald CI",
                        format!("[{}, {}] at {level:.0}%", fmt(r.ci_low), fmt(r.ci_high)),
                    ),
                    (
                        "Newcombe CI",
                        format!(
                            "[{}, {}] at {level:.0}%",
                            fmt(r.newcombe_low),
                            fmt(r.newcombe_high)
                        ),
                    ),
                    (
                        "relative lift",
                        r.relative_lift.map_or("undefined (A is 0)".into(), |l| {
                            format!("{:+.2}%", l * 100.0)
                        }),
                    ),
                ],
                &r,
            )
        }
        StatsCommand::SampleSize {
            baseline,
            mde,
            alpha,
            power: target,
        } => {
            let r = power::sample_size_two_proportions(baseline, mde, alpha, target)
                .map_err(|e| flagged(e, flag))?;
            let value = json!({
                "per_variant": r.per_variant,
                "total": r.total,
                "baseline": baseline,
                "target": baseline + mde,
                "alpha": alpha,
                "power": target,
            });
            Output::new(
                format!(
                    "Sample size to detect {baseline} → {} (alpha {alpha}, power {target})",
                    fmt(baseline + mde)
                ),
                vec![
                    ("per variant", r.per_variant.to_string()),
                    ("total", r.total.to_string()),
                ],
                &value,
            )
        }
        StatsCommand::TtestPaired {
            mean_diff,
            sd_diff,
            n,
            file,
        } => {
            let r = match (file, mean_diff, sd_diff, n) {
                (Some(path), ..) => {
                    let (a, b) = read_pairs(&path, "--file")?;
                    ttest::paired(&a, &b).map_err(|e| flagged(e, |_| "--file".into()))?
                }
                (None, Some(mean), Some(sd), Some(n)) => {
                    ttest::paired_from_summary(mean, sd, n).map_err(|e| flagged(e, flag))?
                }
                _ => {
                    return Err(InputError::new(
                        "--mean-diff/--sd-diff/--n",
                        "give all three, or --file with the pairs",
                    )
                    .into())
                }
            };
            t_output("Paired t-test (a − b)", &r)
        }
        StatsCommand::Welch { file_a, file_b } => {
            let a = read_values(&file_a, "--file-a")?;
            let b = read_values(&file_b, "--file-b")?;
            let r = ttest::welch(&a, &b).map_err(|e| flagged(e, file_flag))?;
            t_output("Welch's t-test (a − b)", &r)
        }
        StatsCommand::MannWhitney { file_a, file_b } => {
            let a = read_values(&file_a, "--file-a")?;
            let b = read_values(&file_b, "--file-b")?;
            let r = mann_whitney::mann_whitney_u(&a, &b).map_err(|e| flagged(e, file_flag))?;
            Output::new(
                format!("Mann-Whitney U test ({} vs {} values)", a.len(), b.len()),
                vec![
                    ("U (sample a)", fmt(r.u)),
                    ("z", fmt(r.z)),
                    ("p-value (two-sided)", fmt_p(r.p_value)),
                    ("P(a > b) + ½ P(a = b)", fmt(r.common_language)),
                ],
                &r,
            )
        }
        StatsCommand::Chi2 { table } => {
            let rows = parse_table(&table)?;
            let r = chi2::contingency(&rows).map_err(|e| flagged(e, |_| "--table".into()))?;
            let value = json!({ "statistic": r.statistic, "p_value": r.p_value, "dof": r.dof, "expected": r.expected });
            Output::new(
                format!(
                    "Chi-square test of independence ({}×{} table)",
                    rows.len(),
                    rows[0].len()
                ),
                vec![
                    ("chi-square", fmt(r.statistic)),
                    ("degrees of freedom", r.dof.to_string()),
                    ("p-value", fmt_p(r.p_value)),
                ],
                &value,
            )
        }
        StatsCommand::Srm {
            observed,
            weights,
            threshold,
        } => {
            let observed: Vec<u64> = parse_list(&observed, "--observed", count)?;
            let weights: Vec<f64> = parse_list(&weights, "--weights", |t| {
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("'{t}' is not a number"))
            })?;
            let r = chi2::sample_ratio_mismatch(&observed, &weights, threshold)
                .map_err(|e| flagged(e, flag))?;
            let verdict = if r.mismatch {
                "MISMATCH: the traffic split is broken"
            } else {
                "ok"
            };
            Output::new(
                format!("Sample-ratio mismatch check (threshold p < {threshold})"),
                vec![
                    ("chi-square", fmt(r.statistic)),
                    ("p-value", fmt_p(r.p_value)),
                    ("verdict", verdict.into()),
                ],
                &r,
            )
        }
        StatsCommand::Bayes { counts } => {
            let (a, b) = counts.arms();
            let r = bayes::beta_binomial_ab(a, b).map_err(|e| flagged(e, flag))?;
            Output::new(
                "Bayesian A/B, Beta(1,1) priors".to_string(),
                vec![
                    ("P(B > A)", format!("{:.4}", r.prob_b_beats_a)),
                    ("expected loss of keeping A", fmt(r.expected_loss_a)),
                    ("expected loss of choosing B", fmt(r.expected_loss_b)),
                ],
                &r,
            )
        }
    };
    out.print(args.json)
}

fn file_flag(field: &str) -> String {
    format!("--file-{field}")
}

fn t_output(title: &str, r: &ttest::TTest) -> Output {
    Output::new(
        title.to_string(),
        vec![
            ("mean difference", fmt(r.mean_diff)),
            ("t", fmt(r.t)),
            ("degrees of freedom", fmt(r.df)),
            ("p-value (two-sided)", fmt_p(r.p_value)),
        ],
        r,
    )
}

/// What a subcommand prints: a titled table for people, a JSON object for scripts.
struct Output {
    title: String,
    rows: Vec<(&'static str, String)>,
    json: serde_json::Value,
}

impl Output {
    fn new(title: String, rows: Vec<(&'static str, String)>, value: &impl Serialize) -> Self {
        let json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        Output { title, rows, json }
    }

    #[allow(clippy::print_stdout)]
    fn print(&self, as_json: bool) -> Result<()> {
        if as_json {
            println!("{}", serde_json::to_string(&self.json)?);
            return Ok(());
        }
        println!("{}", self.title);
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, value) in &self.rows {
            println!("  {key:<width$}  {value}");
        }
        Ok(())
    }
}

fn fmt(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-4 || x.abs() >= 1e6) {
        format!("{x:.4e}")
    } else {
        format!("{x:.4}")
    }
}

fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.3e}")
    } else {
        format!("{p:.4}")
    }
}

fn parse_list<T>(
    text: &str,
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, InputError> {
    if text.trim().is_empty() {
        return Err(InputError::new(flag, "is empty"));
    }
    text.split(',')
        .enumerate()
        .map(|(i, item)| {
            parse(item).map_err(|e| InputError::new(flag, format!("item {}: {e}", i + 1)))
        })
        .collect()
}

fn parse_table(text: &str) -> Result<Vec<Vec<u64>>, InputError> {
    let rows: Vec<Vec<u64>> = text
        .split(';')
        .enumerate()
        .map(|(i, row)| {
            parse_list(row, "--table", count)
                .map_err(|e| InputError::new("--table", format!("row {}: {}", i + 1, e.reason)))
        })
        .collect::<Result<_, _>>()?;
    if let Some(i) = rows.iter().position(|r| r.len() != rows[0].len()) {
        return Err(InputError::new(
            "--table",
            format!(
                "ragged table: row {} has {} cells but row 1 has {}",
                i + 1,
                rows[i].len(),
                rows[0].len()
            ),
        ));
    }
    Ok(rows)
}

fn read_text(path: &Path, flag: &str) -> Result<String, InputError> {
    std::fs::read_to_string(path)
        .map_err(|e| InputError::new(flag, format!("cannot read '{}': {e}", path.display())))
}

/// Numeric lines of a file: blank lines and `#` comments skipped, a non-numeric first line
/// taken as a header.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .filter(|(k, (_, l))| {
            !(*k == 0
                && l.split(',')
                    .next()
                    .is_some_and(|c| c.trim().parse::<f64>().is_err()))
        })
        .map(|(_, line)| line)
}

fn number(text: &str, flag: &str, line: usize) -> Result<f64, InputError> {
    let value: f64 = text.trim().parse().map_err(|_| {
        InputError::new(
            flag,
            format!("line {line}: '{}' is not a number", text.trim()),
        )
    })?;
    if !value.is_finite() {
        return Err(InputError::new(
            flag,
            format!("line {line}: '{}' is not finite", text.trim()),
        ));
    }
    Ok(value)
}

fn read_values(path: &Path, flag: &str) -> Result<Vec<f64>, InputError> {
    let text = read_text(path, flag)?;
    let values = data_lines(&text)
        .map(|(n, l)| number(l, flag, n))
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() {
        return Err(InputError::new(
            flag,
            format!("'{}' holds no values", path.display()),
        ));
    }
    Ok(values)
}

fn read_pairs(path: &Path, flag: &str) -> Result<(Vec<f64>, Vec<f64>), InputError> {
    let text = read_text(path, flag)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (n, line) in data_lines(&text) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != 2 {
            return Err(InputError::new(
                flag,
                format!("line {n}: expected 2 columns (a,b), found {}", cells.len()),
            ));
        }
        a.push(number(cells[0], flag, n)?);
        b.push(number(cells[1], flag, n)?);
    }
    if a.is_empty() {
        return Err(InputError::new(
            flag,
            format!("'{}' holds no pairs", path.display()),
        ));
    }
    Ok((a, b))
}
