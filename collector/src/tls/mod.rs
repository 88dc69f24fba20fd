//! The collector's TLS identity.
//!
//! On first start a self-signed certificate is made with rcgen and kept in
//! `data_dir/tls/` (key file mode 0600), so it survives restarts. Agents pin the SHA-256
//! fingerprint of this certificate at enrollment; the collector prints it at every start.
//! A user-supplied certificate and key (PEM) take its place when configured.

pub mod handover;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Generate(String),
    #[error("{path}: no usable PEM {what} in it ({detail})")]
    Pem {
        path: String,
        what: &'static str,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server certificate chain and key, plus the fingerprint agents pin.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the end-entity certificate, lowercase hex.
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Where the generated certificate and key are: `collector.pem` (both, as a rotation
/// writes them, in one rename) when it exists, else `collector.crt` and `collector.key`
/// (as first generated).
pub fn current_paths(dir: &Path) -> (PathBuf, PathBuf) {
    let combined = dir.join(handover::CURRENT);
    if combined.is_file() {
        (combined.clone(), combined)
    } else {
        (dir.join("collector.crt"), dir.join("collector.key"))
    }
}

/// The fingerprint of the first certificate in a PEM file (for CLI clients on the
/// collector's own machine, which can read the certificate instead of being told it).
pub fn fingerprint_of_pem_file(path: &Path) -> Result<String, TlsError> {
    let pem_error = |detail: String| TlsError::Pem {
        path: path.display().to_string(),
        what: "certificate",
        detail,
    };
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .next()
        .ok_or_else(|| pem_error("empty".into()))?
        .map_err(|e| pem_error(e.to_string()))?;
    Ok(fingerprint(&first))
}

impl TlsIdentity {
    /// Loads the certificate and key from PEM files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| TlsError::Pem {
                path: cert_path.display().to_string(),
                what: "certificate",
                detail: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem {
                path: cert_path.display().to_string(),
                what: "certificate",
                detail: e.to_string(),
            })?;
        let first = chain.first().ok_or_else(|| TlsError::Pem {
            path: cert_path.display().to_string(),
            what: "certificate",
            detail: "empty".into(),
        })?;
        let fingerprint = fingerprint(first);
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
            path: key_path.display().to_string(),
            what: "private key",
            detail: e.to_string(),
        })?;
        Ok(TlsIdentity {
            chain,
            key,
            fingerprint,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// Loads the generated certificate and key in `dir` ([`current_paths`]), making them
    /// on first use with the given subject alternative names.
    pub fn load_or_generate(dir: &Path, subject_alt_names: &[String]) -> Result<Self, TlsError> {
        let (cert_path, key_path) = current_paths(dir);
        if !cert_path.is_file() {
            // A certificate agents pin must not be replaced by a stranger silently.
            if dir.join(handover::HANDOVER_FILE).exists() || dir.join(handover::PREVIOUS).exists() {
                return Err(TlsError::Generate(format!(
                    "{} is missing although a certificate rotation is recorded in {}: put the \
                     certificate back (from a backup, or `{}`) instead of making one no agent \
                     pins",
                    cert_path.display(),
                    dir.display(),
                    handover::PREVIOUS
                )));
            }
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let certified = rcgen::generate_simple_self_signed(subject_alt_names.to_vec())
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            write_file(
                &key_path,
                certified.signing_key.serialize_pem().as_bytes(),
                0o600,
            )?;
            write_file(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "generated a self-signed collector certificate");
        }
        Self::load(&cert_path, &key_path)
    }

    /// A rustls server configuration with the ring provider, HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_identity_is_kept_and_key_is_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = TlsIdentity::load_or_generate(dir.path(), &names).expect("generate");
        let again = TlsIdentity::load_or_generate(dir.path(), &names).expect("load");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 64);
        let mode = std::fs::metadata(dir.path().join("collector.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        first.server_config().expect("server config");
    }
}
