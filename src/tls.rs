//! TLS for `tcps://`: rustls (ring provider) on both the client and the embedded server.
//!
//! # The model
//!
//! A `tcps://` URI means "TLS or nothing": the client never falls back to plaintext. The client
//! verifies the server's certificate against the trust roots of a [`TlsClientConfig`] (PEM files,
//! PEM bytes, or an in-memory [`RootCertStore`]; the system store is not consulted) and checks
//! it was issued for the URI's host: a DNS name, or an IP address for a numeric host. A
//! `tcps://` URI with no [`TlsClientConfig`] configured fails every attempt with
//! [`ConnectError::TlsUnavailable`](crate::error::ConnectError::TlsUnavailable); a failed
//! handshake (unknown CA, wrong name, a peer that does not speak TLS) is
//! [`ConnectError::Tls`](crate::error::ConnectError::Tls) and goes through the normal
//! reconnect backoff.
//!
//! The embedded server, given a certificate chain and a private key
//! ([`ServerConfig::tls`](crate::server::ServerConfig::tls)), speaks only TLS on its listener:
//! a plaintext client fails the handshake and is never served in clear. Handshakes are bounded
//! by a timeout so a silent peer cannot hold a connection open.
//!
//! The crypto provider is always rustls' `ring` provider, passed explicitly: nothing depends on
//! a process-wide default provider being installed. TLS 1.2 and 1.3 are enabled.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
#[cfg(feature = "server")]
use rustls_pki_types::PrivateKeyDer;

pub use rustls::RootCertStore;

use crate::error::TlsError;

/// The crypto provider every TLS configuration of this crate uses (rustls' `ring` provider).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where PEM data came from, for error messages.
fn origin_of(path: &Path) -> String {
    path.display().to_string()
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in `pem` (at least one).
pub(crate) fn parse_certs(
    pem: &[u8],
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            origin: origin.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1).
#[cfg(feature = "server")]
pub(crate) fn parse_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            origin: origin.to_owned(),
        },
        // The message of a PEM error never contains key material, only positions and markers.
        other => TlsError::Pem {
            origin: origin.to_owned(),
            message: other.to_string(),
        },
    })
}

/// The client side of `tcps://`: which certificate authorities to trust.
///
/// Here a throwaway certificate authority (made with `rcgen`) signs the embedded server's
/// certificate for `127.0.0.1`; the client trusts that authority and nothing else. A real
/// deployment loads its CA with [`TlsClientConfig::from_pem_file`].
///
/// ```
/// use std::time::Duration;
/// use actix_amps::client::{ClientConfig, Publish, PublishFlush};
/// use actix_amps::server::{Server, ServerConfig};
/// use actix_amps::tls::TlsClientConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
/// # let ca_key = KeyPair::generate()?;
/// # let mut ca = CertificateParams::new(Vec::<String>::new())?;
/// # ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
/// # ca.distinguished_name.push(DnType::CommonName, "doc CA");
/// # let ca = ca.self_signed(&ca_key)?;
/// # let key = KeyPair::generate()?;
/// # let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &ca, &ca_key)?;
/// # let (ca_pem, cert_pem, key_pem) = (ca.pem(), cert.pem(), key.serialize_pem());
/// let dir = tempfile::tempdir()?;
/// let server = Server::start(ServerConfig::new(dir.path()).tls_pem(cert_pem, key_pem))?;
/// assert!(server.uri().starts_with("tcps://"));
/// actix::System::new().block_on(async {
///     let client = ClientConfig::new("tls-doc")
///         .uri(&server.uri())?
///         .tls(TlsClientConfig::from_pem(ca_pem.as_bytes())?)
///         .start()?;
///     client.send(Publish::new("orders", r#"{"id":1}"#)).await??;
///     client.send(PublishFlush { timeout: Duration::from_secs(10) }).await??;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsClientConfig {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig").finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Trusts exactly the certificate authorities in `roots` (no client certificate).
    pub fn from_root_store(roots: RootCertStore) -> Result<TlsClientConfig, TlsError> {
        if roots.is_empty() {
            return Err(TlsError::NoCertificates {
                origin: "root certificate store".into(),
            });
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClientConfig {
            config: Arc::new(config),
        })
    }

    /// Trusts every certificate in PEM bytes (one or several `CERTIFICATE` sections).
    pub fn from_pem(pem: &[u8]) -> Result<TlsClientConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        add_roots(&mut roots, pem, "PEM bytes")?;
        TlsClientConfig::from_root_store(roots)
    }

    /// Trusts every certificate in a PEM file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<TlsClientConfig, TlsError> {
        TlsClientConfig::from_pem_files([path])
    }

    /// Trusts every certificate in each of these PEM files.
    pub fn from_pem_files<P: AsRef<Path>>(
        paths: impl IntoIterator<Item = P>,
    ) -> Result<TlsClientConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        for path in paths {
            let path = path.as_ref();
            add_roots(&mut roots, &read_file(path)?, &origin_of(path))?;
        }
        TlsClientConfig::from_root_store(roots)
    }

    /// Uses a complete rustls configuration as is (client certificates, custom verifiers, ...).
    /// Build it with a crypto provider of your own choosing
    /// (`rustls::ClientConfig::builder_with_provider`).
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> TlsClientConfig {
        TlsClientConfig { config }
    }

    /// The rustls configuration used for handshakes.
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

fn add_roots(roots: &mut RootCertStore, pem: &[u8], origin: &str) -> Result<(), TlsError> {
    for cert in parse_certs(pem, origin)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Where the embedded server's certificate chain and private key come from.
#[derive(Clone)]
#[non_exhaustive]
pub enum TlsIdentity {
    /// PEM files, read when the server starts.
    Files {
        /// The certificate chain (leaf first).
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// PEM bytes already in memory.
    Pem {
        /// The certificate chain (leaf first).
        cert: Vec<u8>,
        /// The private key (never printed).
        key: Vec<u8>,
    },
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsIdentity::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            TlsIdentity::Pem { cert, .. } => f
                .debug_struct("Pem")
                .field("cert_bytes", &cert.len())
                .field("key", &"***")
                .finish(),
        }
    }
}

impl TlsIdentity {
    /// Loads and checks the identity into a rustls server configuration.
    #[cfg(feature = "server")]
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let (certs, key) = match self {
            TlsIdentity::Files { cert, key } => (
                parse_certs(&read_file(cert)?, &origin_of(cert))?,
                parse_key(&read_file(key)?, &origin_of(key))?,
            ),
            TlsIdentity::Pem { cert, key } => (
                parse_certs(cert, "certificate PEM bytes")?,
                parse_key(key, "private key PEM bytes")?,
            ),
        };
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsError::Rustls)?;
        Ok(Arc::new(config))
    }
}
