//! TLS with real certificates made at test time (a CA and server certificates it signed): the
//! gateway's listener over https, its certificate reloads, https backends and webhooks.

use std::path::Path;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use serde_json::json;
use switchyard_core::audit::{Alert, Severity};
use switchyard_server::alerts::{AlertSender, RetryPolicy, WebhookConfig};
use switchyard_server::client::AdminClient;
use switchyard_server::tls::ReloadStatus;
use switchyard_store::ControlStore;
use tokio::sync::watch;

use crate::support::pki::{presented_certificate, serve_tls, Ca, HttpsClient};
use crate::support::webhook::WebhookReceiver;
use crate::support::{oip_row, MockModel, TestGateway};

fn tls_yaml(model_url: &str, cert: &Path, key: &Path) -> String {
    format!(
        r#"
tls: {{ cert: "{cert}", key: "{key}" }}
models:
  m:
    versions:
      v1: {{ url: "{model_url}" }}
    serve: {{ kind: single, version: v1 }}
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

/// Waits (bounded) until the reload status satisfies `done`.
async fn wait_status(
    rx: &mut watch::Receiver<ReloadStatus>,
    done: impl FnMut(&ReloadStatus) -> bool,
) -> ReloadStatus {
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(done))
        .await
        .expect("no reload in time")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_https_to_clients_that_trust_its_ca_and_only_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    let (cert, key) = ca.leaf("gateway").write(dir.path());
    let ca_file = ca.write(dir.path(), "ca.pem");
    let model = MockModel::start(1).await;
    let tg = TestGateway::start(&tls_yaml(&model.url(), &cert, &key)).await;
    let base = tg.gateway.url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");

    let client = HttpsClient::trusting(&ca);
    // Inference.
    let r = client
        .post_json(&format!("{base}/v2/models/m/infer"), &oip_row(&[1.0]))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outputs"][0]["data"], json!([1]));
    // Readiness.
    let r = client.get(&format!("{base}/readyz")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ready"], json!(true));
    // The admin API, through the admin client trusting the CA file.
    let admin = AdminClient::new(&base)
        .unwrap()
        .with_ca_file(&ca_file)
        .unwrap();
    let routes = admin.routes().await.unwrap();
    assert!(routes.routes.contains_key("m"), "{routes:?}");

    // A client trusting another CA (or only the built-in roots) fails the handshake.
    let stranger = Ca::new("another CA");
    let err = HttpsClient::trusting(&stranger)
        .try_send("GET", &format!("{base}/readyz"), &[], "")
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let err = AdminClient::new(&base).unwrap().routes().await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Plain HTTP is not served on the TLS port.
    let plain = tg
        .client
        .send_checked("GET", &format!("http://{}/readyz", tg.gateway.addr))
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    tg.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_served_to_new_connections_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    let first = ca.leaf("gateway one");
    let (cert, key) = first.write(dir.path());
    let model = MockModel::start(1).await;
    let tg = TestGateway::start_with(
        &tls_yaml(&model.url(), &cert, &key),
        None,
        tempfile::tempdir().unwrap(),
        |o| o.tls_reload_poll = Some(Duration::from_millis(20)),
    )
    .await;
    let addr = tg.gateway.addr;
    let tls = tg.gateway.tls().unwrap().clone();
    let mut status = tls.status();
    assert_eq!(presented_certificate(addr, &ca).await.unwrap(), first.der);
    // A connection made before the change, kept alive.
    let client = HttpsClient::trusting(&ca);
    let base = tg.gateway.url();
    assert_eq!(client.get(&format!("{base}/healthz")).await.status, 200);

    // The files change: the next connection gets the new certificate.
    let second = ca.leaf("gateway two");
    second.write(dir.path());
    let s = wait_status(&mut status, |_| {
        tls.certificate().as_ref() == Some(&second.der)
    })
    .await;
    assert!(s.loaded >= 2, "{s:?}");
    assert_eq!(presented_certificate(addr, &ca).await.unwrap(), second.der);
    assert_eq!(client.get(&format!("{base}/healthz")).await.status, 200);

    // A certificate whose key is not in the key file: refused, the second keeps serving.
    // (Replacing the two files one after the other may itself have been refused once, in
    // between: count from here.)
    let refused = status.borrow().refused;
    let third = ca.leaf("gateway three");
    std::fs::write(&cert, &third.cert_pem).unwrap();
    let s = wait_status(&mut status, |s| s.refused > refused).await;
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not match the certificate")),
        "{s:?}"
    );
    assert_eq!(presented_certificate(addr, &ca).await.unwrap(), second.der);
    // A file that is not PEM at all: refused too.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let s = wait_status(&mut status, |s| s.refused > refused + 1).await;
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("is not a PEM file")),
        "{s:?}"
    );
    assert_eq!(presented_certificate(addr, &ca).await.unwrap(), second.der);
    let r = client
        .post_json(&format!("{base}/v2/models/m/infer"), &oip_row(&[1.0]))
        .await;
    assert_eq!(r.status, 200);
    tg.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_demand_reads_the_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    let first = ca.leaf("gateway one");
    let (cert, key) = first.write(dir.path());
    let model = MockModel::start(1).await;
    // No polling: only an explicit reload (what SIGHUP calls) changes the certificate.
    let tg = TestGateway::start_with(
        &tls_yaml(&model.url(), &cert, &key),
        None,
        tempfile::tempdir().unwrap(),
        |o| o.tls_reload_poll = None,
    )
    .await;
    let second = ca.leaf("gateway two");
    second.write(dir.path());
    assert_eq!(
        presented_certificate(tg.gateway.addr, &ca).await.unwrap(),
        first.der
    );
    tg.gateway.reload_tls().unwrap().unwrap();
    assert_eq!(
        presented_certificate(tg.gateway.addr, &ca).await.unwrap(),
        second.der
    );
    // A bad pair on demand: the error, and the second keeps serving.
    std::fs::write(
        &key,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = tg.gateway.reload_tls().unwrap().unwrap_err().to_string();
    assert!(err.contains("holds no private key"), "{err}");
    assert_eq!(
        presented_certificate(tg.gateway.addr, &ca).await.unwrap(),
        second.der
    );
    tg.gateway.shutdown().await.unwrap();
}

/// An OIP v2 model server over https, answering class 7.
async fn https_model(leaf: &crate::support::pki::Leaf) -> String {
    let app = Router::new().route(
        "/v2/models/{m}/infer",
        post(|| async {
            axum::Json(json!({"model_name": "m", "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [7]}]}))
        }),
    );
    format!("https://{}", serve_tls(app, leaf).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_is_reached_with_its_ca_file_and_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("model server CA");
    let ca_file = ca.write(dir.path(), "models-ca.pem");
    let url = https_model(&ca.leaf("model server")).await;
    let yaml = format!(
        r#"
models:
  trusted:
    versions:
      v1: {{ url: "{url}", ca_file: "{ca}" }}
    serve: {{ kind: single, version: v1 }}
  untrusted:
    versions:
      v1: {{ url: "{url}" }}
    serve: {{ kind: single, version: v1 }}
"#,
        ca = ca_file.display()
    );
    let tg = TestGateway::start(&yaml).await;
    let r = tg
        .client
        .post_json(&tg.url("/v2/models/trusted/infer"), &[], &oip_row(&[1.0]))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outputs"][0]["data"], json!([7]));

    let r = tg
        .client
        .post_json(&tg.url("/v2/models/untrusted/infer"), &[], &oip_row(&[1.0]))
        .await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["code"], json!("upstream_unreachable"), "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );
    tg.gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_receives_alerts_with_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("hooks CA");
    let ca_file = ca.write(dir.path(), "hooks-ca.pem");
    let hook = WebhookReceiver::start_tls(&ca.leaf("hooks")).await;
    assert!(hook.url().starts_with("https://"));
    let store = dir.path().join("switchyard.db");
    let retry = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
    };
    let sender = AlertSender::spawn(
        vec![
            WebhookConfig {
                url: hook.url(),
                min_severity: Severity::P3,
                ca_file: Some(ca_file),
            },
            // The same receiver without its CA: every attempt fails on the certificate.
            WebhookConfig {
                url: hook.url().replace("/hook", "/hook?untrusted"),
                min_severity: Severity::P3,
                ca_file: None,
            },
        ],
        store.clone(),
        retry,
    );
    sender.send(Alert {
        rollout: "r".into(),
        severity: Severity::P1,
        kind: "rollback".into(),
        title: "r: rolled back".into(),
        ts_ms: 1_700_000_000_000,
        details: vec![],
    });
    sender.flush().await;
    assert_eq!(hook.kinds(), [("P1".to_string(), "rollback".to_string())]);
    let deliveries = ControlStore::open(store.clone())
        .unwrap()
        .deliveries()
        .unwrap();
    let untrusted: Vec<_> = deliveries
        .iter()
        .filter(|d| d.url.contains("untrusted"))
        .collect();
    assert_eq!(untrusted.len(), 2, "{deliveries:?}");
    for d in untrusted {
        assert!(!d.delivered);
        let error = d.error.as_deref().unwrap_or("");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }
}
