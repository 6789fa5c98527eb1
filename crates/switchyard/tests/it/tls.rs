//! `switchyard serve` over TLS as a process: every bad-TLS configuration is reported by
//! `switchyard check` with a clear message and fails `serve` at start-up with the same one; a
//! running gateway reloads its certificate on SIGHUP.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{serve, wait_for};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn config(dir: &Path, name: &str, head: &str, backend: &str) -> PathBuf {
    write(
        dir,
        name,
        &format!(
            "{head}\nmodels:\n  m:\n    versions:\n      v1: {backend}\n    serve: {{ kind: single, version: v1 }}\n"
        ),
    )
}

fn run(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_each_tls_problem_and_serve_fails_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let leaf = ca.leaf("gateway");
    let other = ca.leaf("other");
    let cert = write(d, "cert.pem", &leaf.cert_pem);
    let key = write(d, "key.pem", &leaf.key_pem);
    let other_key = write(d, "other-key.pem", &other.key_pem);
    let garbage = write(d, "garbage.pem", "this is not PEM\n");
    let backend = r#"{ url: "http://127.0.0.1:9" }"#;
    let tls =
        |c: &Path, k: &Path| format!("tls: {{ cert: {}, key: {} }}", c.display(), k.display());
    let cases: Vec<(PathBuf, String)> = vec![
        (
            config(
                d,
                "missing.yaml",
                &tls(&d.join("nowhere.pem"), &key),
                backend,
            ),
            format!("tls.cert: cannot read {}", d.join("nowhere.pem").display()),
        ),
        (
            config(d, "garbage.yaml", &tls(&garbage, &key), backend),
            format!(
                "tls.cert: {} is not a PEM file (no '-----BEGIN CERTIFICATE-----' section)",
                garbage.display()
            ),
        ),
        (
            config(d, "no-cert.yaml", &tls(&key, &key), backend),
            format!(
                "tls.cert: {} holds no certificate (its PEM sections: PRIVATE KEY)",
                key.display()
            ),
        ),
        (
            config(d, "no-key.yaml", &tls(&cert, &cert), backend),
            format!("tls.key: {} holds no private key", cert.display()),
        ),
        (
            config(d, "mismatch.yaml", &tls(&cert, &other_key), backend),
            format!(
                "tls: the private key in {} does not match the certificate in {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            config(
                d,
                "backend-ca.yaml",
                "",
                &format!(
                    r#"{{ url: "https://127.0.0.1:9", ca_file: {} }}"#,
                    d.join("no-ca.pem").display()
                ),
            ),
            format!(
                "models.m.versions.v1.ca_file: cannot read {}",
                d.join("no-ca.pem").display()
            ),
        ),
        (
            config(
                d,
                "webhook-ca.yaml",
                &format!(
                    r#"alerts: {{ webhooks: [{{ url: "https://127.0.0.1:9/hook", ca_file: {} }}] }}"#,
                    garbage.display()
                ),
                backend,
            ),
            format!(
                "alerts.webhooks[0].ca_file: {} is not a PEM file",
                garbage.display()
            ),
        ),
    ];
    for (config, expected) in &cases {
        let (code, stderr) = run(&["check"], config);
        assert_eq!(code, 2, "check {}: {stderr}", config.display());
        assert!(
            stderr.contains(expected),
            "check {}: missing '{expected}' in:\n{stderr}",
            config.display()
        );
        let store = d.join(format!(
            "{}.sqlite",
            config.file_stem().unwrap().to_string_lossy()
        ));
        let (code, stderr) = run(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--store",
                &format!("sqlite://{}", store.display()),
            ],
            config,
        );
        assert_eq!(code, 2, "serve {}: {stderr}", config.display());
        assert!(
            stderr.contains(expected),
            "serve {}: missing '{expected}' in:\n{stderr}",
            config.display()
        );
    }

    let good = config(d, "good.yaml", &tls(&cert, &key), backend);
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tls: ") && stdout.contains("(1 certificate(s))"),
        "{stdout}"
    );
}

/// The certificate a new TLS connection to `addr` is given (the client trusts `ca` only).
fn presented(addr: &str, ca: &Ca) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    // Writing drives the handshake to completion.
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    tls.conn.peer_certificates().unwrap()[0].clone()
}

#[test]
fn serve_over_https_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let first = ca.leaf("gateway one");
    let cert = write(d, "cert.pem", &first.cert_pem);
    let key = write(d, "key.pem", &first.key_pem);
    let config = config(
        d,
        "tls.yaml",
        &format!(
            "tls: {{ cert: {}, key: {} }}",
            cert.display(),
            key.display()
        ),
        r#"{ url: "http://127.0.0.1:9" }"#,
    );
    let store = format!("sqlite://{}", d.join("s.sqlite").display());
    // No polling of the files: only SIGHUP reloads.
    let (mut child, url) = serve(&config, &["--store", &store, "--tls-poll-ms", "0"]);
    let addr = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not an https URL: {url}"))
        .to_string();
    assert_eq!(presented(&addr, &ca), first.der);

    let second = ca.leaf("gateway two");
    std::fs::write(&key, &second.key_pem).unwrap();
    std::fs::write(&cert, &second.cert_pem).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the new certificate", Duration::from_secs(20), || {
        presented(&addr, &ca) == second.der
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the gateway"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
