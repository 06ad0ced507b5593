//! rustls client configuration for one cluster, built once when the config loads so that a
//! bad certificate is a start-up error rather than a scrape-time surprise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::file::{ServerTlsFile, TlsFile};
use crate::error::ConfigProblems;

/// What a member connection needs to speak TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    /// Overrides the name checked against the serving certificate.
    pub server_name: Option<ServerName<'static>>,
    /// Without a client certificate configured: counts the handshakes in which a member
    /// asked for one (it runs with `--client-cert-auth`), so that the failure that follows
    /// can say what is missing instead of "broken pipe" or "connection closed".
    pub certificate_requests: Option<Arc<CertificateRequests>>,
}

/// Answers a server's request for a client certificate with none, as a config without
/// `cert_file` does, and counts such requests.
#[derive(Debug, Default)]
pub struct CertificateRequests(AtomicU64);

impl CertificateRequests {
    /// How many times a server has asked so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl ResolvesClientCert for CertificateRequests {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client TLS settings, recording every problem under `key` (for example
/// `clusters[0].tls`). Paths are resolved against `base`, the config file's directory.
pub(crate) fn load(
    tls: &TlsFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<ClientTls> {
    let before = problems.0.len();
    let provider = provider();

    let server_name =
        tls.server_name
            .as_ref()
            .and_then(|name| match ServerName::try_from(name.clone()) {
                Ok(name) => Some(name),
                Err(err) => {
                    problems.push(
                        format!("{key}.server_name"),
                        format!("{name:?} is not a DNS name or IP address: {err}"),
                    );
                    None
                }
            });

    let roots = match &tls.ca_file {
        Some(path) => read_roots(base, path, &format!("{key}.ca_file"), problems),
        None if tls.insecure_skip_verify => Some(RootCertStore::empty()),
        None => system_roots(key, problems),
    };

    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key_file)) => read_identity(base, cert, key_file, key, problems),
        (Some(_), None) => {
            problems.push(
                format!("{key}.key_file"),
                "cert_file is set but key_file is not; a client certificate needs both",
            );
            None
        }
        (None, Some(_)) => {
            problems.push(
                format!("{key}.cert_file"),
                "key_file is set but cert_file is not; a client certificate needs both",
            );
            None
        }
        (None, None) => None,
    };

    if problems.0.len() > before {
        return None;
    }
    let roots = roots?;

    let builder = match ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        Err(err) => {
            problems.push(key.to_string(), format!("TLS set-up failed: {err}"));
            return None;
        }
    };
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate { provider }))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut certificate_requests = None;
    let config = match identity {
        Some((certs, private_key)) => match builder.with_client_auth_cert(certs, private_key) {
            Ok(config) => config,
            Err(err) => {
                problems.push(
                    format!("{key}.key_file"),
                    format!("the key does not match cert_file or is unsupported: {err}"),
                );
                return None;
            }
        },
        None => {
            let requests = Arc::new(CertificateRequests::default());
            certificate_requests = Some(requests.clone());
            builder.with_client_cert_resolver(requests)
        }
    };

    Some(ClientTls {
        config: Arc::new(config),
        server_name,
        certificate_requests,
    })
}

/// What the remediator's listener needs to serve HTTPS.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// The webhook and API need a certificate signed by `client_ca_file` (the handshake
    /// asks for one; `/healthz`, `/readyz` and `/metrics` do without).
    pub requires_client_certificate: bool,
}

/// Builds the serving TLS settings, recording every problem under `key`.
pub fn load_server(
    tls: &ServerTlsFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<ServerTls> {
    let before = problems.0.len();
    let provider = provider();
    let identity = read_identity(base, &tls.cert_file, &tls.key_file, key, problems);
    let client_roots = tls
        .client_ca_file
        .as_ref()
        .and_then(|path| read_roots(base, path, &format!("{key}.client_ca_file"), problems));
    if problems.0.len() > before {
        return None;
    }
    let (certs, private_key) = identity?;

    let builder = match rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        Err(err) => {
            problems.push(key.to_string(), format!("TLS set-up failed: {err}"));
            return None;
        }
    };
    let requires_client_certificate = client_roots.is_some();
    let builder = match client_roots {
        Some(roots) => {
            // Asked for, not required: Kubernetes probes and Prometheus connect without one,
            // and the service refuses webhook and API requests that came without it. One
            // that is presented must still be signed by the CA.
            match rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            {
                Ok(verifier) => builder.with_client_cert_verifier(verifier),
                Err(err) => {
                    problems.push(format!("{key}.client_ca_file"), err.to_string());
                    return None;
                }
            }
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = match builder.with_single_cert(certs, private_key) {
        Ok(config) => config,
        Err(err) => {
            problems.push(
                format!("{key}.key_file"),
                format!("the key does not match cert_file or is unsupported: {err}"),
            );
            return None;
        }
    };
    // The service speaks HTTP/1.1 only (what Alertmanager's webhook client uses).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(ServerTls {
        config: Arc::new(config),
        requires_client_certificate,
    })
}

/// The client TLS settings of a `tls:` block outside the clusters (the remediator's
/// PostgreSQL), every problem recorded under `key`.
pub fn load_client(
    tls: &TlsFile,
    base: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<ClientTls> {
    load(tls, base, key, problems)
}

/// TLS for an `https://` endpoint with no `tls:` block: the system's CA certificates.
pub fn system_default(key: &str, problems: &mut ConfigProblems) -> Option<ClientTls> {
    load(&TlsFile::default(), Path::new("."), key, problems)
}

pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The CA certificates in `path` as trust roots; none usable is a problem under `key`.
fn read_roots(
    base: &Path,
    path: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<RootCertStore> {
    let path = resolve(base, path);
    let certs = read_certificates(&path, key, problems)?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        problems.push(
            key,
            format!(
                "{}: none of its {ignored} certificates is a usable CA",
                path.display()
            ),
        );
        return None;
    }
    Some(roots)
}

/// A certificate chain and its private key; problems under `<key>.cert_file` and
/// `<key>.key_file`.
fn read_identity(
    base: &Path,
    cert_file: &Path,
    key_file: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_path = resolve(base, cert_file);
    let key_path = resolve(base, key_file);
    let certs = read_certificates(&cert_path, &format!("{key}.cert_file"), problems);
    let private_key = match PrivateKeyDer::from_pem_file(&key_path) {
        Ok(private_key) => {
            crate::secret::warn_if_world_readable(&key_path, &format!("{key}.key_file"));
            Some(private_key)
        }
        Err(err) => {
            problems.push(
                format!("{key}.key_file"),
                format!("{}: {}", key_path.display(), pem_error(err)),
            );
            None
        }
    };
    certs.zip(private_key)
}

fn read_certificates(
    path: &Path,
    key: &str,
    problems: &mut ConfigProblems,
) -> Option<Vec<CertificateDer<'static>>> {
    let certs =
        CertificateDer::pem_file_iter(path).and_then(|iter| iter.collect::<Result<Vec<_>, _>>());
    match certs {
        Ok(certs) if certs.is_empty() => {
            problems.push(
                key,
                format!("{}: no PEM certificate in the file", path.display()),
            );
            None
        }
        Ok(certs) => Some(certs),
        Err(err) => {
            problems.push(key, format!("{}: {}", path.display(), pem_error(err)));
            None
        }
    }
}

fn pem_error(err: rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => io_error(&io),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        other => format!("not valid PEM: {other}"),
    }
}

/// `No such file or directory (os error 2)` reads worse in a config error than `no such file`.
pub(crate) fn io_error(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => err.to_string(),
    }
}

fn system_roots(key: &str, problems: &mut ConfigProblems) -> Option<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        problems.push(
            format!("{key}.ca_file"),
            "an https endpoint needs ca_file: this system has no CA certificates to trust",
        );
        return None;
    }
    Some(roots)
}

/// `insecure_skip_verify`: skips the chain and name check but still verifies the handshake
/// signature, so the connection is at least encrypted to whoever holds the key.
#[derive(Debug)]
struct AcceptAnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
