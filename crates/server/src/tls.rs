//! TLS wherever the gateway talks HTTP, with rustls and its `ring` provider.
//!
//! - Listeners: [`TlsAcceptorHandle`] holds the certificate and key of `tls: {cert, key}` and
//!   hands out [`TlsAcceptor`]s that any listener wraps its accepted sockets with (the HTTP/1
//!   listener of `app` asks for ALPN `http/1.1`; another listener asks for its own
//!   protocols with [`TlsAcceptorHandle::acceptor_with_alpn`] and shares the reloads). The pair
//!   is reloaded on [`TlsAcceptorHandle::reload`] (the CLI calls it on SIGHUP) and when either
//!   file changes ([`TlsAcceptorHandle::watch`] polls their contents): new connections get the
//!   new certificate, connections already open keep theirs. A pair that does not load is
//!   refused with an error log and the previous pair keeps serving.
//! - Outbound (`https://` backends and webhooks, the admin client): [`client_config`] trusts
//!   the Mozilla roots compiled in from `webpki-roots` plus the certificates of an optional
//!   `ca_file`. Compiled-in roots behave the same on every host (a slim container image often
//!   has no system store, and a test must not depend on the machine's); a private CA is named
//!   explicitly in the configuration.
//! - [`listener_problems`] and [`ca_file_problem`] are the checks `switchyard check` and start-up
//!   report, with messages naming the file and what is wrong with it.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use switchyard_core::config::TlsFiles;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often [`TlsAcceptorHandle::watch`] looks at the files by default.
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(2);

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not a PEM file (no '-----BEGIN {expected}-----' section)")]
    NotPem {
        path: String,
        expected: &'static str,
    },
    #[error("{path} is not valid PEM: {reason}")]
    BadPem { path: String, reason: String },
    #[error("{path} holds no {wanted} (its PEM sections: {found})")]
    Missing {
        path: String,
        wanted: &'static str,
        found: String,
    },
    #[error(
        "the private key in {key} does not match the certificate in {cert} (the server's own certificate comes first in the file, then its intermediates)"
    )]
    KeyMismatch { cert: String, key: String },
    #[error("{path}: {reason}")]
    Unusable { path: String, reason: String },
}

/// The one crypto provider (explicit, so that another crate turning on rustls's default
/// provider cannot make the choice ambiguous).
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The PEM sections of a file, and the labels of its `-----BEGIN` lines (for messages).
struct Sections {
    found: Vec<(SectionKind, Vec<u8>)>,
    labels: Vec<String>,
}

/// Every PEM section of `bytes`, with the labels of the `-----BEGIN` lines (for messages).
fn sections(path: &Path, bytes: &[u8]) -> Result<Sections, TlsError> {
    let mut reader: &[u8] = bytes;
    let mut found = Vec::new();
    loop {
        match pem::from_buf(&mut reader as &mut dyn BufRead) {
            Ok(Some(section)) => found.push(section),
            Ok(None) => break,
            Err(e) => {
                return Err(TlsError::BadPem {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
    let labels = String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .map(|l| l.trim_end_matches('-').to_string())
        .collect();
    Ok(Sections { found, labels })
}

fn missing(
    path: &Path,
    wanted: &'static str,
    expected: &'static str,
    labels: Vec<String>,
) -> TlsError {
    if labels.is_empty() {
        TlsError::NotPem {
            path: path.display().to_string(),
            expected,
        }
    } else {
        TlsError::Missing {
            path: path.display().to_string(),
            wanted,
            found: labels.join(", "),
        }
    }
}

fn certificates_in(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let Sections { found, labels } = sections(path, bytes)?;
    let certs: Vec<CertificateDer<'static>> = found
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(missing(path, "certificate", "CERTIFICATE", labels));
    }
    Ok(certs)
}

fn private_key_in(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    let Sections { found, labels } = sections(path, bytes)?;
    let key = found.into_iter().find_map(|(kind, der)| match kind {
        SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
        SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
        SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
        _ => None,
    });
    key.ok_or_else(|| {
        missing(
            path,
            "private key (PKCS#8, PKCS#1 or SEC1; encrypted keys are not read)",
            "PRIVATE KEY",
            labels,
        )
    })
}

/// The certificates of a PEM file (a chain: the server's own first).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certificates_in(path, &read(path)?)
}

/// The first private key of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    private_key_in(path, &read(path)?)
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(files: &TlsFiles, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = certificates_in(&files.cert, cert)?;
    let key = private_key_in(&files.key, key)?;
    let signing =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Unusable {
                path: files.key.display().to_string(),
                reason: format!("the private key cannot be used: {e}"),
            })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
        }),
        Err(e) => Err(TlsError::Unusable {
            path: files.cert.display().to_string(),
            reason: format!("the certificate cannot be read: {e}"),
        }),
    }
}

/// Reads and checks a listener's certificate and key.
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    certified_key(files, &read(&files.cert)?, &read(&files.key)?)
}

/// Every problem with a listener's `tls:` files, each prefixed with its field (`tls.cert`,
/// `tls.key`, or `tls` for a pair that does not belong together).
pub fn listener_problems(files: &TlsFiles) -> Vec<String> {
    let mut problems = Vec::new();
    let cert = load_certificates(&files.cert).map_err(|e| problems.push(format!("tls.cert: {e}")));
    let key = load_private_key(&files.key).map_err(|e| problems.push(format!("tls.key: {e}")));
    if cert.is_ok() && key.is_ok() {
        if let Err(e) = load_certified_key(files) {
            problems.push(format!("tls: {e}"));
        }
    }
    problems
}

/// What is wrong with a `ca_file`, if anything.
pub fn ca_file_problem(path: &Path) -> Option<TlsError> {
    client_config(Some(path)).err()
}

/// The client side of every outbound TLS connection: the compiled-in Mozilla roots plus the
/// certificates of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in load_certificates(path)? {
            roots.add(cert).map_err(|e| TlsError::Unusable {
                path: path.display().to_string(),
                reason: format!("a certificate cannot be trusted as a CA: {e}"),
            })?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Unusable {
            path: "(rustls)".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificate every new handshake presents: swapped whole on reload.
#[derive(Debug)]
struct CurrentCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// What the reloads have done so far (watch it with [`TlsAcceptorHandle::status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Pairs installed, the one loaded at start included.
    pub loaded: u64,
    /// Pairs refused (the previous one kept serving).
    pub refused: u64,
    /// Why the last refused pair was refused (cleared by the next successful load).
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    files: TlsFiles,
    current: Arc<CurrentCert>,
    /// For HTTP/1.1 listeners.
    http1: Arc<ServerConfig>,
    /// SHA-256 of the files' contents last tried (loaded or refused): a change is noticed once.
    seen: Mutex<[u8; 32]>,
    status: watch::Sender<ReloadStatus>,
}

/// A listener's certificate and key, reloadable; cheap to clone and share between listeners.
#[derive(Debug, Clone)]
pub struct TlsAcceptorHandle {
    inner: Arc<Inner>,
}

fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_le_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

fn server_config(current: Arc<CurrentCert>, alpn: Vec<Vec<u8>>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Unusable {
            path: "(rustls)".into(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(current);
    config.alpn_protocols = alpn;
    Ok(config)
}

impl TlsAcceptorHandle {
    /// Loads the pair (an error names the file and the problem).
    pub fn load(files: &TlsFiles) -> Result<TlsAcceptorHandle, TlsError> {
        let (cert, key) = (read(&files.cert)?, read(&files.key)?);
        let certified = certified_key(files, &cert, &key)?;
        let current = Arc::new(CurrentCert(ArcSwap::from_pointee(certified)));
        let http1 = Arc::new(server_config(current.clone(), vec![b"http/1.1".to_vec()])?);
        Ok(TlsAcceptorHandle {
            inner: Arc::new(Inner {
                files: files.clone(),
                current,
                http1,
                seen: Mutex::new(fingerprint(&cert, &key)),
                status: watch::Sender::new(ReloadStatus {
                    loaded: 1,
                    ..ReloadStatus::default()
                }),
            }),
        })
    }

    /// The acceptor of an HTTP/1.1 listener (ALPN `http/1.1`).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.http1.clone())
    }

    /// An acceptor offering other ALPN protocols (e.g. `h2`), presenting the same, reloaded,
    /// certificate.
    pub fn acceptor_with_alpn(&self, protocols: Vec<Vec<u8>>) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(Arc::new(server_config(
            self.inner.current.clone(),
            protocols,
        )?)))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// The certificate new connections get (the server's own, first of the chain).
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        self.inner.current.0.load().cert.first().cloned()
    }

    /// Watches the reloads (a test or an operator tool waits on a change instead of sleeping).
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.inner.status.subscribe()
    }

    /// Reads the files again and installs the pair; a pair that does not load is refused
    /// (logged, counted) and the previous one keeps serving.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = &self.inner.files;
        let read_both = read(&files.cert).and_then(|c| Ok((c, read(&files.key)?)));
        let result = read_both.and_then(|(cert, key)| {
            *self.inner.seen.lock() = fingerprint(&cert, &key);
            certified_key(files, &cert, &key)
        });
        match result {
            Ok(certified) => {
                self.inner.current.0.store(Arc::new(certified));
                self.inner.status.send_modify(|s| {
                    s.loaded += 1;
                    s.last_error = None;
                });
                tracing::info!(cert = %files.cert.display(), key = %files.key.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(cert = %files.cert.display(), key = %files.key.display(), error = %e, "TLS certificate reload refused; the previous certificate keeps serving");
                self.inner.status.send_modify(|s| {
                    s.refused += 1;
                    s.last_error = Some(e.to_string());
                });
                Err(e)
            }
        }
    }

    /// Reloads when the files' contents differ from the last pair tried; `None` when they do
    /// not (or cannot be read: a file being replaced is looked at again next time).
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let files = &self.inner.files;
        let (cert, key) = (read(&files.cert).ok()?, read(&files.key).ok()?);
        if *self.inner.seen.lock() == fingerprint(&cert, &key) {
            return None;
        }
        Some(self.reload())
    }

    /// Polls the files every `every` and reloads when they change. Abort the task to stop.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every.max(Duration::from_millis(10)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let h = handle.clone();
                // Small files, but still blocking reads: off the async workers.
                let _ = tokio::task::spawn_blocking(move || h.reload_if_changed()).await;
            }
        })
    }
}

/// Resolves a relative path against the configuration file's directory.
pub fn resolve(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}
