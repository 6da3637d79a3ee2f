//! TLS for the server: a rustls (ring provider) configuration from PEM files.

use std::path::Path;
use std::sync::Arc;

use exchange_core::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A rustls server configuration from a PEM certificate chain and a PEM private key (read from
/// the certificate file when `keyfile` is `None`, as Academy does).
pub(crate) fn server_config(certfile: &Path, keyfile: Option<&Path>) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .and_then(|certs| certs.collect())
        .map_err(|e| Error::config(format!("cannot read certificates from {}: {e}", certfile.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!("no certificate in {}", certfile.display())));
    }
    let keyfile = keyfile.unwrap_or(certfile);
    let key = PrivateKeyDer::from_pem_file(keyfile)
        .map_err(|e| Error::config(format!("cannot read a private key from {}: {e}", keyfile.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::config(format!("TLS certificate/key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
