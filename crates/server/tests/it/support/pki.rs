//! Real TLS for the tests: a CA and server certificates made at test time with rcgen, a TLS
//! server for any router (tokio-rustls, independent of the gateway's own listener), and
//! clients that trust a given CA only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::Reply;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A server certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 and localhost named `cn`, signed by this CA.
    pub fn leaf(&self, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

impl Leaf {
    /// Writes `cert.pem` and `key.pem` (replacing them) under `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Each file is replaced whole (a rename), as a certificate manager would.
        for (path, text) in [(&key, &self.key_pem), (&cert, &self.cert_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (cert, key)
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let chain = vec![self.der.clone()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    }
}

/// Serves `app` over TLS with `leaf` on `127.0.0.1:0` (HTTP/1.1); returns the address.
pub async fn serve_tls(app: Router, leaf: &Leaf) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(leaf.server_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    addr
}

/// A client configuration trusting `roots` only.
pub fn trusting(roots: &[&CertificateDer<'static>]) -> ClientConfig {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// An https client trusting `ca` only.
#[derive(Clone)]
pub struct HttpsClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpsClient {
    pub fn trusting(ca: &Ca) -> HttpsClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(trusting(&[&ca.der]))
            .https_only()
            .enable_http1()
            .build();
        HttpsClient {
            inner: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    /// The answer, or the error's chain as text.
    pub async fn try_send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .inner
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .map_err(|e| chain(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.try_send("GET", url, &[], Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Reply {
        self.try_send(
            "POST",
            url,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }
}

pub fn chain(e: &dyn std::error::Error) -> String {
    switchyard_server::http_util::error_chain(e)
}

/// Opens a new TLS connection to `addr` trusting `ca` and returns the certificate the server
/// presented (its own, first of the chain), or the handshake's error.
pub async fn presented_certificate(
    addr: SocketAddr,
    ca: &Ca,
) -> Result<CertificateDer<'static>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting(&[&ca.der])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| chain(&e))?;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].clone())
}
