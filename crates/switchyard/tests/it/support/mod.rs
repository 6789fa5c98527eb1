//! What the tests that run `switchyard serve` as a process share: starting it, a minimal
//! HTTP/1.1 client over std (no async runtime needed), metrics and yield requests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Starts `switchyard serve --listen 127.0.0.1:0 --config CONFIG ARGS…` and reads the address
/// it prints; stderr keeps being drained so the child never blocks on a full pipe.
pub fn serve(config: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("switchyard listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

pub fn http(method: &str, url: &str, body: &str) -> (u16, BTreeMap<String, String>, Value) {
    http_with(method, url, body, "")
}

/// A minimal HTTP/1.1 exchange (`extra` holds more header lines, each ending in CRLF): status,
/// lower-cased headers, JSON (or text) body.
pub fn http_with(
    method: &str,
    url: &str,
    body: &str,
    extra: &str,
) -> (u16, BTreeMap<String, String>, Value) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let (head, payload) = response.split_once("\r\n\r\n").unwrap();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let payload = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    let value = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    (status, headers, value)
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn get(url: &str) -> Value {
    http("GET", url, "").2
}

pub fn metric(url: &str, name: &str) -> f64 {
    get(&format!("{url}/metrics"))
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn request_body(i: u64) -> String {
    let row = [
        1.0 + (i % 7) as f64 * 0.01,
        50.0 - (i % 5) as f64,
        2.0,
        40.0 + (i % 30) as f64,
        (i % 9) as f64 - 4.0,
        (i % 11) as f64 - 5.0,
        1.0,
        1000.0,
    ];
    json!({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": row}]})
        .to_string()
}

/// Sends `n` requests to `replica`, each answered 200.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The admin API of a gateway process, through the gateway's own client (the one the CLI
/// uses), on a runtime of its own so that these std tests stay blocking.
pub struct Admin {
    client: switchyard_server::client::AdminClient,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    pub fn new(url: &str) -> Admin {
        Admin {
            client: switchyard_server::client::AdminClient::new(url)
                .unwrap()
                .with_actor("test"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Runs one call and returns its answer or its error.
    pub fn try_call<'a, T, F>(
        &'a self,
        call: impl FnOnce(&'a switchyard_server::client::AdminClient) -> F,
    ) -> Result<T, switchyard_server::client::ClientError>
    where
        F: std::future::Future<Output = Result<T, switchyard_server::client::ClientError>>,
    {
        self.runtime.block_on(call(&self.client))
    }

    /// Runs one call that must succeed.
    pub fn call<'a, T, F>(
        &'a self,
        call: impl FnOnce(&'a switchyard_server::client::AdminClient) -> F,
    ) -> T
    where
        F: std::future::Future<Output = Result<T, switchyard_server::client::ClientError>>,
    {
        self.try_call(call)
            .unwrap_or_else(|e| panic!("{}: {e}", self.client.base()))
    }
}
