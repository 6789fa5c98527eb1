//! Runs the operator commands (`apply`, `status`, `pause`…, `events`, `report`, `audit verify`)
//! as a process against a real gateway started in-process on `127.0.0.1:0`, serving two
//! in-process ONNX versions of the yield model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchyard_server::{parse_config, Gateway, StartOptions};

const CONFIG: &str = r#"
models:
  yield:
    versions:
      v1: { onnx: models/yield_v1.onnx }
      v2: { onnx: models/yield_v2.onnx }
    serve: { kind: single, version: v1 }
"#;

const CANARY: &str = r#"
name: yield-canary
model: yield
kind: canary
stable: v1
candidate: v2
min_requests: 20
min_duration_ms: 60000
gate: { min_labelled: 15 }
"#;

/// Four problems at once: a bad name, a missing field, an out-of-range weight and an unknown
/// version.
const INVALID: &str = r#"
name: "bad name!"
model: yield
kind: canary
candidate: v9
steps: [{ weight: 150 }]
"#;

const TOKEN: &str = "tok-8f3a1c9e-very-secret";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Running {
    gateway: Gateway,
    dir: tempfile::TempDir,
    url: String,
}

impl Running {
    async fn start(token: Option<&str>) -> Running {
        Self::start_with(CONFIG, token).await
    }

    async fn start_with(config: &str, token: Option<&str>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = parse_config(config, &repo_root(), "test config").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut options = StartOptions::new(dir.path().join("switchyard.sqlite"));
        options.controller_loop = false;
        options.admin_token = token.map(str::to_string);
        options.base_dir = repo_root();
        let gateway = Gateway::start(config, listener, options).await.unwrap();
        let url = gateway.url();
        Running { gateway, dir, url }
    }

    /// Writes `text` to a file in the gateway's temp dir.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Runs the CLI with `--url` pointing at this gateway.
    async fn cli(&self, args: &[&str]) -> Out {
        let mut all = args.to_vec();
        all.extend(["--url", &self.url]);
        run(&all, &[]).await
    }
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        &self.stdout
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    #[track_caller]
    fn fails(&self, code: i32, needle: &str) -> &str {
        assert_eq!(self.code, code, "{self:?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:?}"
        );
        &self.stderr
    }
}

/// Runs the binary on a blocking thread (the gateway keeps serving on the runtime's workers),
/// with a clean environment for the admin variables.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .args(&args)
            .env_remove("SWITCHYARD_URL")
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .env_remove("SWITCHYARD_LOG");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// `2023-11-14T22:13:20.123Z`
fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && s.chars().enumerate().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == '.',
            23 => c == 'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_validates_dry_runs_and_lists_every_problem() {
    let gw = Running::start(None).await;
    let canary = gw.file("canary.yaml", CANARY);
    let invalid = gw.file("invalid.yaml", INVALID);

    let out = gw.cli(&["apply", "-f", &canary, "--dry-run"]).await;
    let text = out.ok();
    assert!(
        text.contains("valid canary rollout 'yield-canary' of model 'yield'"),
        "{text}"
    );
    assert!(text.contains("nothing started"), "{text}");
    assert_eq!(gw.cli(&["status"]).await.ok().trim(), "no rollouts");

    // Every problem, one per line, and exit 2.
    let out = gw.cli(&["apply", "-f", &invalid]).await;
    let stderr = out.fails(2, "invalid rollout spec");
    let problems: Vec<&str> = stderr.lines().filter(|l| l.starts_with("  - ")).collect();
    assert!(problems.len() >= 3, "{stderr}");
    for needle in ["name:", "stable: required", "steps[0].weight", "v9"] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {stderr}"
        );
    }
    // --dry-run reports the same problems.
    gw.cli(&["apply", "-f", &invalid, "--dry-run"])
        .await
        .fails(2, "stable: required");
    // YAML that is not a spec at all.
    let garbage = gw.file("garbage.yaml", "this: [is not: a spec");
    gw.cli(&["apply", "-f", &garbage])
        .await
        .fails(2, "invalid rollout spec (1 problem)");

    let text = gw.cli(&["apply", "-f", &canary]).await.ok().to_string();
    assert!(
        text.contains("started canary rollout 'yield-canary' of model 'yield' (v1→v2): running"),
        "{text}"
    );
    assert!(text.contains("traffic v2 5% / v1 95%"), "{text}");
    // The same spec again, or its dry run: the model already has an active rollout (409).
    gw.cli(&["apply", "-f", &canary])
        .await
        .fails(2, "already has an active rollout 'yield-canary'");
    gw.cli(&["apply", "-f", &canary, "--dry-run"])
        .await
        .fails(2, "already has an active rollout");
    let view = gw.cli(&["status", "yield-canary", "--json"]).await.json();
    assert_eq!(view["phase"], "running");

    // A missing file is bad input, named by its flag.
    gw.cli(&["apply", "-f", "/nonexistent/spec.yaml"])
        .await
        .fails(2, "--file: cannot read '/nonexistent/spec.yaml'");
    gw.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_commands_and_events_drive_a_canary() {
    let gw = Running::start(None).await;
    let canary = gw.file("canary.yaml", CANARY);
    gw.cli(&["apply", "-f", &canary]).await.ok();

    let table = gw.cli(&["status"]).await.ok().to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in [
        "NAME", "MODEL", "KIND", "PHASE", "STEP", "VERSIONS", "TRAFFIC", "REASON",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    let row: Vec<&str> = lines[1].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        row.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            "yield-canary",
            "yield",
            "canary",
            "running",
            "1/4",
            "v1→v2",
            "v2 5% / v1 95%",
            "-"
        ],
        "{table}"
    );
    let list = gw.cli(&["status", "--json"]).await.json();
    assert_eq!(list["rollouts"][0]["name"], "yield-canary", "{list}");
    assert_eq!(list["rollouts"][0]["strategy"]["kind"], "split", "{list}");
    // One rollout, via SWITCHYARD_URL instead of --url.
    let one = run(
        &["status", "yield-canary"],
        &[("SWITCHYARD_URL", gw.url.as_str())],
    )
    .await;
    assert!(one.ok().contains("yield-canary"), "{one:?}");
    gw.cli(&["status", "nope"])
        .await
        .fails(2, "no rollout named 'nope'");

    let out = gw.cli(&["pause", "yield-canary"]).await;
    assert!(
        out.ok()
            .starts_with("yield-canary: paused (traffic v2 5% / v1 95%)"),
        "{out:?}"
    );
    gw.cli(&["pause", "yield-canary"])
        .await
        .fails(2, "cannot pause rollout 'yield-canary' while it is paused");
    let out = gw.cli(&["resume", "yield-canary"]).await;
    assert!(out.ok().starts_with("yield-canary: running"), "{out:?}");
    // Nothing awaits approval: the server's 409 message, exit 2.
    gw.cli(&["approve", "yield-canary"]).await.fails(
        2,
        "cannot approve rollout 'yield-canary' while it is running",
    );
    let out = gw.cli(&["rollback", "yield-canary"]).await;
    let text = out.ok();
    assert!(
        text.starts_with("yield-canary: rolled_back (traffic v1 100%)"),
        "{text}"
    );
    assert!(text.contains("manual rollback by admin:cli"), "{text}");
    gw.cli(&["promote", "yield-canary"])
        .await
        .fails(2, "while it is rolled_back");
    gw.cli(&["abort", "nope"])
        .await
        .fails(2, "no rollout named 'nope'");
    let view = gw.cli(&["status", "yield-canary", "--json"]).await.json();
    assert_eq!(view["phase"], "rolled_back", "{view}");

    // Events: one line each, with an RFC 3339 UTC time, kind, actor, message and details.
    let out = gw.cli(&["events", "yield-canary"]).await;
    let text = out.ok().to_string();
    let mut kinds = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(cells.len() >= 5, "{line}");
        assert!(cells[0].parse::<u64>().is_ok(), "{line}");
        assert!(is_utc_timestamp(cells[1]), "{line}");
        kinds.push(cells[2].to_string());
    }
    for kind in ["started", "paused", "resumed", "rolled_back"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind}: {text}");
    }
    let rolled_back = text.lines().find(|l| l.contains("rolled_back")).unwrap();
    assert!(rolled_back.contains("admin:cli"), "{rolled_back}");
    assert!(rolled_back.contains("actor=admin:cli"), "{rolled_back}");
    let json = gw.cli(&["events", "yield-canary", "--json"]).await.json();
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), kinds.len(), "{json}");
    assert_eq!(events[0]["kind"], "started", "{json}");
    gw.cli(&["events", "nope"])
        .await
        .fails(2, "no rollout named 'nope'");
    gw.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_in_every_format_to_stdout_or_a_file() {
    let gw = Running::start(None).await;
    let canary = gw.file("canary.yaml", CANARY);
    gw.cli(&["apply", "-f", &canary]).await.ok();
    gw.cli(&["rollback", "yield-canary"]).await.ok();

    let text = gw.cli(&["report", "yield-canary"]).await.ok().to_string();
    assert!(text.contains("yield-canary"), "{text}");
    let explicit = gw
        .cli(&["report", "yield-canary", "--format", "text"])
        .await;
    assert_eq!(explicit.ok(), text);
    let json = gw
        .cli(&["report", "yield-canary", "--format", "json"])
        .await
        .json();
    assert!(json.is_object(), "{json}");
    assert!(json.to_string().contains("yield-canary"), "{json}");
    let md = gw
        .cli(&["report", "yield-canary", "--format", "md"])
        .await
        .ok()
        .to_string();
    assert!(md.contains('#') && md.contains('|'), "{md}");

    let file = gw.dir.path().join("report.html");
    let file_arg = file.display().to_string();
    let out = gw
        .cli(&[
            "report",
            "yield-canary",
            "--format",
            "html",
            "-o",
            &file_arg,
        ])
        .await;
    assert_eq!(out.ok(), "", "the report goes to the file only");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("<table"), "{html}");
    assert!(html.contains("yield-canary"), "{html}");

    gw.cli(&["report", "yield-canary", "--format", "pdf"])
        .await
        .fails(2, "pdf");
    gw.cli(&["report", "nope"])
        .await
        .fails(2, "no rollout named 'nope'");
    gw.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_over_http_and_from_the_data_dir() {
    let gw = Running::start(None).await;
    let canary = gw.file("canary.yaml", CANARY);
    gw.cli(&["apply", "-f", &canary]).await.ok();
    gw.cli(&["pause", "yield-canary"]).await.ok();
    gw.cli(&["abort", "yield-canary"]).await.ok();

    let text = gw.cli(&["audit", "verify"]).await.ok().trim().to_string();
    let n: u64 = text
        .strip_prefix("audit chain OK: ")
        .and_then(|t| t.strip_suffix(" events"))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!(n >= 3, "{text}");
    let json = gw.cli(&["audit", "verify", "--json"]).await.json();
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["events"], n, "{json}");

    // With the gateway stopped, straight from the store.
    let Running { gateway, dir, .. } = gw;
    gateway.shutdown().await.unwrap();
    let data_dir = dir.path().display().to_string();
    let offline = run(&["audit", "verify", "--data-dir", &data_dir], &[]).await;
    assert_eq!(offline.ok().trim(), format!("audit chain OK: {n} events"));

    // Someone with write access drops the append-only trigger and edits an event.
    let conn = switchyard_store::open(&dir.path().join("switchyard.sqlite")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_events_no_update;
         UPDATE audit_events SET message = 'nothing to see here' WHERE seq = 2;",
    )
    .unwrap();
    drop(conn);
    let broken = run(&["audit", "verify", "--data-dir", &data_dir], &[]).await;
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken
            .stdout
            .starts_with("audit chain BROKEN at seq 2: event 2 was modified"),
        "{broken:?}"
    );
    let json = run(&["audit", "verify", "--data-dir", &data_dir, "--json"], &[]).await;
    assert_eq!(json.code, 1, "{json:?}");
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["first_bad_seq"], 2, "{json}");

    // No store there: bad input, and nothing is created.
    let empty = tempfile::tempdir().unwrap();
    let empty_arg = empty.path().display().to_string();
    run(&["audit", "verify", "--data-dir", &empty_arg], &[])
        .await
        .fails(2, "--data-dir: no store at");
    assert!(!empty.path().join("switchyard.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protected_gateway_wants_the_token_and_it_is_never_printed() {
    let gw = Running::start(Some(TOKEN)).await;
    let canary = gw.file("canary.yaml", CANARY);
    let url = gw.url.clone();
    let mut outputs = Vec::new();

    let out = run(&["status", "--url", &url], &[]).await;
    out.fails(2, "unauthorized");
    assert!(out.stderr.contains("SWITCHYARD_ADMIN_TOKEN"), "{out:?}");
    outputs.push(out);
    let out = run(
        &["apply", "-f", &canary, "--url", &url],
        &[("SWITCHYARD_ADMIN_TOKEN", "wrong-token")],
    )
    .await;
    out.fails(2, "unauthorized");
    outputs.push(out);

    let with_token = [("SWITCHYARD_ADMIN_TOKEN", TOKEN)];
    for args in [
        vec!["apply", "-f", &canary],
        vec!["status"],
        vec!["status", "yield-canary", "--json"],
        vec!["pause", "yield-canary"],
        vec!["events", "yield-canary"],
        vec!["report", "yield-canary", "--format", "md"],
        vec!["audit", "verify"],
    ] {
        let mut all = args.clone();
        all.extend(["--url", &url]);
        let out = run(&all, &with_token).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        outputs.push(out);
    }
    // Refusals and failures with the token set do not echo it either.
    let out = run(&["approve", "yield-canary", "--url", &url], &with_token).await;
    out.fails(2, "cannot approve");
    outputs.push(out);
    let out = run(&["status", "--url", "http://127.0.0.1:1"], &with_token).await;
    assert_eq!(out.code, 1, "{out:?}");
    outputs.push(out);
    for out in &outputs {
        assert!(
            !out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN),
            "the token leaked: {out:?}"
        );
    }
    gw.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_named_with_a_hint() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    let out = run(&["status", "--url", &url], &[]).await;
    let stderr = out.fails(1, &url);
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains("switchyard serve"), "{stderr}");
    assert_eq!(out.stdout, "");
    // The same for a command that changes something.
    run(&["rollback", "x", "--url", &url], &[])
        .await
        .fails(1, "switchyard serve");
    // A URL that is neither http:// nor https:// is bad input.
    run(&["status", "--url", "ftp://example.invalid"], &[])
        .await
        .fails(2, "--url");
    // Something that answers but is not a switchyard gateway.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || plain_404(&listener));
    run(&["status", "--url", &other], &[])
        .await
        .fails(2, "has no switchyard admin API");
}

/// A tiny HTTP server answering 404 with a plain body to every request.
fn plain_404(listener: &std::net::TcpListener) {
    use std::io::{Read, Write};
    for mut socket in listener.incoming().flatten() {
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf);
        let _ = socket.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found",
        );
    }
}

/// Runs the binary with `stdin` as its standard input.
async fn run_with_stdin(args: &[&str], stdin: &str) -> Out {
    use std::io::Write as _;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The value after `label` on its line of `token new`'s output.
fn field(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {label} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_credentials_from_token_new_act_under_their_names_and_roles() {
    let approver = run(
        &["token", "new", "--name", "alice", "--roles", "approver"],
        &[],
    )
    .await;
    let approver_out = approver.ok().to_string();
    let alice_token = field(&approver_out, "token ");
    let alice_hash = field(&approver_out, "token_sha256 ");
    assert!(
        alice_token.starts_with("sy_") && alice_token.len() == 67,
        "{approver_out}"
    );
    assert!(
        approver_out.contains(&format!(
            "- {{ name: alice, roles: [approver], token_sha256: \"{alice_hash}\" }}"
        )),
        "{approver_out}"
    );
    // `token hash` reads the token from stdin and prints the same hash.
    let hashed = run_with_stdin(&["token", "hash"], &format!("{alice_token}\n")).await;
    assert_eq!(hashed.ok().trim(), alice_hash);
    run(&["token", "new", "--roles", "root"], &[])
        .await
        .fails(2, "--roles: 'root' is not viewer");

    let ops = run(
        &[
            "token",
            "new",
            "--name",
            "ops",
            "--roles",
            "operator,viewer",
        ],
        &[],
    )
    .await;
    let ops_out = ops.ok().to_string();
    let ops_token = field(&ops_out, "token ");
    let ops_hash = field(&ops_out, "token_sha256 ");
    let config = format!(
        "{CONFIG}auth:\n  credentials:\n    - {{ name: alice, roles: [approver], token_sha256: \"{alice_hash}\" }}\n    - {{ name: ops, roles: [operator], token_sha256: \"{ops_hash}\" }}\n"
    );
    let gw = Running::start_with(&config, None).await;
    let canary = gw.file("canary.yaml", CANARY);
    let url = gw.url.clone();

    // The approver may not start a rollout: the refusal names the role it lacks.
    let out = run(
        &["apply", "-f", &canary, "--url", &url],
        &[("SWITCHYARD_ADMIN_TOKEN", &alice_token)],
    )
    .await;
    out.fails(2, "forbidden");
    assert!(out.stderr.contains("needs role `operator`"), "{out:?}");
    assert!(!out.stderr.contains(&alice_token) && !out.stdout.contains(&alice_token));

    run(
        &["apply", "-f", &canary, "--url", &url],
        &[("SWITCHYARD_ADMIN_TOKEN", &ops_token)],
    )
    .await
    .ok();
    let out = run(
        &["pause", "yield-canary", "--url", &url],
        &[("SWITCHYARD_ADMIN_TOKEN", &alice_token)],
    )
    .await;
    out.fails(2, "needs role `operator`");
    run(
        &["pause", "yield-canary", "--url", &url],
        &[("SWITCHYARD_ADMIN_TOKEN", &ops_token)],
    )
    .await
    .ok();
    // Events show who did what: the credentials' names, not the CLI's actor header.
    let events = run(
        &["events", "yield-canary", "--json", "--url", &url],
        &[("SWITCHYARD_ADMIN_TOKEN", &alice_token)],
    )
    .await
    .json();
    let actors: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        actors,
        vec![
            ("started".to_string(), "ops".to_string()),
            ("paused".to_string(), "ops".to_string())
        ]
    );
    gw.gateway.shutdown().await.unwrap();
}
