//! A real Prometheus server (Debian's `prometheus` package, installed by `.ci/run`) on
//! `127.0.0.1`, scraping given targets at a short interval, with its storage in a temp dir.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::HttpClient;

/// The `prometheus` binary: `SWITCHYARD_PROMETHEUS`, else the first on `PATH`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PROMETHEUS") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let candidate = dir.join("prometheus");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the external gate test needs a Prometheus server, and no `prometheus` was found on PATH. \
         Install Debian's package: apt-get install -y --no-install-recommends prometheus \
         (.ci/run does), or set SWITCHYARD_PROMETHEUS to the binary"
    );
}

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) every 200 ms and
    /// waits until it is ready.
    pub async fn start(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        // Prometheus does not say which port it took when given port 0: take a free one
        // first (the window between closing it and Prometheus binding it is tiny).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let mut me = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = HttpClient::new();
        let ready = format!("{}/-/ready", me.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if client.send_checked("GET", &ready).await == Ok(200) {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", me.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What Prometheus wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query that returns one sample, `None` otherwise.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let reply = HttpClient::new()
            .get(&format!("{}/api/v1/query?query={encoded}", self.url))
            .await;
        let v: Value = serde_json::from_slice(&reply.body).ok()?;
        match v["data"]["result"].as_array()?.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Polls `query` until its value satisfies `check` (a deadline, not a fixed sleep).
    pub async fn wait_for(&self, query: &str, what: &str, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.value(query).await.filter(|v| check(*v)) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus never showed {what} for {query} (last: {:?}):\n{}",
                self.value(query).await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
