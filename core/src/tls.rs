//! Serving `wss://` and `https://` directly (rustls), when `server.tls`
//! names a certificate chain and a key. The files are read at start and on
//! every reload, so a renewed certificate takes effect without a restart.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::files;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the right kind.
    #[error("cannot read {what} from {path}: {why}")]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file.
        path: String,
        /// The parser's reason.
        why: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

fn pem_error(what: &'static str, path: &Path, why: impl ToString) -> TlsError {
    TlsError::Pem {
        what,
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The bytes of a PEM file, through the checks every named file gets.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    files::read_bytes(path, files::MAX_KEY_FILE_BYTES).map_err(|e| pem_error(what, path, e))
}

/// Builds an acceptor from `server.tls`, reading its files now.
pub fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let chain = read("certificate chain", &tls.cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error("certificate chain", &tls.cert_file, e))?;
    if certs.is_empty() {
        return Err(pem_error(
            "certificate chain",
            &tls.cert_file,
            "no CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("private key", &tls.key_file)?)
        .map_err(|e| pem_error("private key", &tls.key_file, e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
