//! TLS to the collector, pinned by certificate fingerprint.
//!
//! The collector serves a self-signed certificate, so the agent trusts exactly one
//! certificate: the one whose DER encoding hashes (SHA-256) to the fingerprint recorded at
//! enrollment. The handshake signature is still checked against that certificate's key
//! (with the ring provider's algorithms), so only the holder of the pinned certificate's
//! private key can complete a handshake. Names, dates and CAs are not consulted: the pin
//! is the whole identity.
//!
//! Without a pin (trust on first use, at enrollment only) any certificate is accepted and
//! its fingerprint recorded so it can be pinned from then on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::Error;

/// Lowercase hex without separators; accepts `AB:CD:…`, spaces and uppercase.
pub(crate) fn normalize_fingerprint(input: &str) -> Result<String, Error> {
    let hex: String = input
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let invalid = |reason| Error::InvalidFingerprint {
        input: input.to_string(),
        reason,
    };
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid("not hexadecimal"));
    }
    if hex.len() != 64 {
        return Err(invalid("a SHA-256 fingerprint has 64 hex digits"));
    }
    Ok(hex)
}

/// The fingerprint of a DER certificate, as [`normalize_fingerprint`] writes it.
#[cfg(test)]
pub(crate) fn fingerprint_of(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The fingerprint the collector presented, filled in during the handshake.
pub type SeenFingerprint = Arc<Mutex<Option<String>>>;

/// Accepts the server iff its end-entity certificate matches the pin (any, when unpinned).
#[derive(Debug)]
pub(crate) struct PinnedCertVerifier {
    pin: Option<[u8; 32]>,
    seen: SeenFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    /// `pin`: a normalised fingerprint, or `None` to trust on first use.
    pub(crate) fn new(pin: Option<&str>, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let pin = match pin {
            Some(text) => {
                let normalized = normalize_fingerprint(text)?;
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(&normalized, &mut bytes).map_err(|_| {
                    Error::InvalidFingerprint {
                        input: text.to_string(),
                        reason: "not hexadecimal",
                    }
                })?;
                Some(bytes)
            }
            None => None,
        };
        Ok(PinnedCertVerifier {
            pin,
            seen: Arc::new(Mutex::new(None)),
            provider,
        })
    }

    pub(crate) fn seen(&self) -> SeenFingerprint {
        Arc::clone(&self.seen)
    }

    fn matches(&self, digest: &[u8; 32]) -> bool {
        match &self.pin {
            None => true,
            Some(pin) => constant_time_eq(pin, digest),
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(hex::encode(digest));
        }
        if self.matches(&digest) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// An HTTP client that talks TLS only to the pinned collector (`pin: None` = trust on
/// first use), plus the slot where the presented fingerprint is recorded.
pub fn pinned_client(
    pin: Option<&str>,
    request_timeout: Duration,
) -> Result<(reqwest::Client, SeenFingerprint), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertVerifier::new(pin, Arc::clone(&provider))?);
    let seen = verifier.seen();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Client(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("yagura-agent/", env!("CARGO_PKG_VERSION")))
        // The collector never redirects; following one would send batches (and the CLI's
        // API token) wherever a response pointed.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| Error::Client(e.to_string()))?;
    Ok((client, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn fingerprints_are_normalised() {
        assert_eq!(normalize_fingerprint(FP).expect("plain"), FP);
        let colons = FP
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(normalize_fingerprint(&colons).expect("colons"), FP);
        assert_eq!(
            normalize_fingerprint(&format!(" {FP} ")).expect("spaces"),
            FP
        );
        assert!(normalize_fingerprint(&FP[..62]).is_err());
        assert!(normalize_fingerprint(&format!("{}zz", &FP[..62])).is_err());
        assert!(normalize_fingerprint("").is_err());
    }

    #[test]
    fn verifier_accepts_only_the_pinned_certificate() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = CertificateDer::from(b"not really DER but hashed all the same".to_vec());
        let other = CertificateDer::from(b"another certificate".to_vec());
        let pin = fingerprint_of(cert.as_ref());
        let name = ServerName::try_from("collector.invalid").expect("name");
        let now = UnixTime::now();

        let pinned = PinnedCertVerifier::new(Some(&pin.to_uppercase()), Arc::clone(&provider))
            .expect("verifier");
        assert!(
            pinned
                .verify_server_cert(&cert, &[], &name, &[], now)
                .is_ok()
        );
        assert!(
            pinned
                .verify_server_cert(&other, &[], &name, &[], now)
                .is_err()
        );
        let seen = pinned.seen().lock().expect("lock").clone();
        assert_eq!(seen, Some(fingerprint_of(other.as_ref())));

        let tofu = PinnedCertVerifier::new(None, provider).expect("verifier");
        assert!(
            tofu.verify_server_cert(&other, &[], &name, &[], now)
                .is_ok()
        );
        assert_eq!(
            tofu.seen().lock().expect("lock").clone(),
            Some(fingerprint_of(other.as_ref()))
        );
        assert!(!tofu.supported_verify_schemes().is_empty());
    }

    #[test]
    fn client_builds() {
        crate::install_crypto_provider();
        assert!(pinned_client(Some(FP), Duration::from_secs(1)).is_ok());
        assert!(pinned_client(None, Duration::from_secs(1)).is_ok());
    }
}
