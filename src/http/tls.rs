//! HTTPS for a listener (`TLS_CERT`/`TLS_KEY`, `METRICS_TLS_CERT`/`METRICS_TLS_KEY`): the
//! certificate chain and key read from PEM files, and read again on SIGHUP.
//!
//! Each new connection takes the configuration current at its handshake, so a reload swaps the
//! certificate for new connections while open ones keep theirs. A reload that fails (a missing
//! or mismatched file halfway through a renewal) keeps the previous certificate and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A listener's certificate files and the server configuration last read from them.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Reads `cert` (a PEM chain, leaf first) and `key` (a PEM private key); the error says which
    /// file is wrong and why.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(server_config(cert, key)?),
        })
    }

    /// Reads the files again; on an error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = server_config(&self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// An acceptor for the next connection, with the certificate current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_pair_loads_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let tls = Tls::load(&cert, &key).unwrap();

        let missing = dir.path().join("missing.pem");
        let err = Tls::load(&missing, &key).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        let err = Tls::load(&key, &key).unwrap_err();
        assert!(err.contains("a.key"), "{err}");
        // A key that does not match the certificate.
        let (_, other_key) = write_pair(dir.path(), "b");
        assert!(Tls::load(&cert, &other_key).is_err());

        // A failed reload keeps the certificate in use.
        let before = tls.current.load_full();
        std::fs::write(&cert, "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current.load_full()));
    }
}
