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

/// The certificate fingerprints a client accepts, shared by every client built on it, so a
/// verified hand-over takes effect on connections already configured.
#[derive(Debug, Clone, Default)]
pub struct Pins(Arc<std::sync::RwLock<Vec<[u8; 32]>>>);

impl Pins {
    /// Pins to these fingerprints (hex, colons and case ignored).
    pub fn new<S: AsRef<str>>(fingerprints: &[S]) -> Result<Self, Error> {
        let pins = Pins::default();
        pins.set(fingerprints)?;
        Ok(pins)
    }

    /// Replaces the accepted fingerprints.
    pub fn set<S: AsRef<str>>(&self, fingerprints: &[S]) -> Result<(), Error> {
        let parsed = fingerprints
            .iter()
            .map(|f| pin_bytes(f.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        Ok(())
    }

    fn matches(&self, digest: &[u8; 32]) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|pin| constant_time_eq(pin, digest))
    }
}

fn pin_bytes(text: &str) -> Result<[u8; 32], Error> {
    let normalized = normalize_fingerprint(text)?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&normalized, &mut bytes).map_err(|_| Error::InvalidFingerprint {
        input: text.to_string(),
        reason: "not hexadecimal",
    })?;
    Ok(bytes)
}

/// Accepts the server iff its end-entity certificate matches a pin (any, when unpinned).
#[derive(Debug)]
pub(crate) struct PinnedCertVerifier {
    pins: Option<Pins>,
    seen: SeenFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    /// `pin`: a fingerprint, or `None` to trust on first use.
    #[cfg(test)]
    pub(crate) fn new(pin: Option<&str>, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let pins = pin.map(|p| Pins::new(&[p])).transpose()?;
        Ok(Self::with_pins(pins, provider))
    }

    fn with_pins(pins: Option<Pins>, provider: Arc<CryptoProvider>) -> Self {
        PinnedCertVerifier {
            pins,
            seen: Arc::new(Mutex::new(None)),
            provider,
        }
    }

    pub(crate) fn seen(&self) -> SeenFingerprint {
        Arc::clone(&self.seen)
    }

    fn matches(&self, digest: &[u8; 32]) -> bool {
        match &self.pins {
            None => true,
            Some(pins) => pins.matches(digest),
        }
    }
}

/// Checks a certificate hand-over against the fingerprint pinned now: the certificate it
/// replaces must be the pinned one, both fingerprints must be those of the certificates
/// it carries, and its signature must verify under the pinned certificate's key.
pub fn verify_handover(
    handover: &yagura_shared::tls_handover::Handover,
    pinned: &str,
) -> Result<(), String> {
    let pinned = normalize_fingerprint(pinned).map_err(|e| e.to_string())?;
    let der = |pem: &str, what: &str| {
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("{what}: {e}"))
    };
    let from = der(&handover.from_certificate, "the certificate replaced")?;
    let to = der(&handover.to_certificate, "the next certificate")?;
    let from_fingerprint = hex::encode(Sha256::digest(from.as_ref()));
    if from_fingerprint != pinned
        || normalize_fingerprint(&handover.from_fingerprint).ok() != Some(pinned.clone())
    {
        return Err("it replaces a certificate this agent does not pin".into());
    }
    if normalize_fingerprint(&handover.to_fingerprint).ok()
        != Some(hex::encode(Sha256::digest(to.as_ref())))
    {
        return Err("its next fingerprint is not its next certificate's".into());
    }
    let signature = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(handover.signature.trim())
            .map_err(|e| format!("signature: {e}"))?
    };
    let message =
        yagura_shared::tls_handover::document(&from_fingerprint, &handover.to_fingerprint);
    let cert = webpki::EndEntityCert::try_from(&from).map_err(|e| format!("certificate: {e}"))?;
    let scheme = SignatureScheme::from(handover.scheme);
    let provider = rustls::crypto::ring::default_provider();
    let algorithms = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .ok_or_else(|| format!("unsupported signature scheme {scheme:?}"))?;
    if algorithms
        .iter()
        .any(|alg| cert.verify_signature(*alg, &message, &signature).is_ok())
    {
        Ok(())
    } else {
        Err("its signature does not verify under the pinned certificate's key".into())
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
    let pins = pin.map(|p| Pins::new(&[p])).transpose()?;
    pinned_client_with(pins, request_timeout)
}

/// [`pinned_client`] accepting any fingerprint of a shared [`Pins`] (`None`: trust on
/// first use).
pub fn pinned_client_with(
    pins: Option<Pins>,
    request_timeout: Duration,
) -> Result<(reqwest::Client, SeenFingerprint), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertVerifier::with_pins(pins, Arc::clone(&provider)));
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

    /// A self-signed certificate: (PEM, fingerprint, signer of its key).
    fn certificate() -> (String, String, Arc<dyn rustls::sign::SigningKey>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .expect("key");
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).expect("signer");
        (made.cert.pem(), fingerprint_of(made.cert.der()), signer)
    }

    fn handover(
        from: &(String, String, Arc<dyn rustls::sign::SigningKey>),
        to: &(String, String, Arc<dyn rustls::sign::SigningKey>),
        signed_by: &Arc<dyn rustls::sign::SigningKey>,
    ) -> yagura_shared::tls_handover::Handover {
        use base64::Engine as _;
        let signer = signed_by
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .expect("scheme");
        let message = yagura_shared::tls_handover::document(&from.1, &to.1);
        yagura_shared::tls_handover::Handover {
            from_fingerprint: from.1.clone(),
            to_fingerprint: to.1.clone(),
            from_certificate: from.0.clone(),
            to_certificate: to.0.clone(),
            scheme: u16::from(signer.scheme()),
            signature: base64::engine::general_purpose::STANDARD
                .encode(signer.sign(&message).expect("sign")),
        }
    }

    #[test]
    fn a_handover_must_come_from_the_pinned_key() {
        let (old, next, stranger) = (certificate(), certificate(), certificate());
        let genuine = handover(&old, &next, &old.2);
        verify_handover(&genuine, &old.1).expect("signed by the pinned key");
        verify_handover(&genuine, &old.1.to_uppercase()).expect("any spelling of the pin");

        // Signed by another key, though it names the pinned certificate.
        let forged = handover(&old, &next, &stranger.2);
        assert!(
            verify_handover(&forged, &old.1)
                .expect_err("forged")
                .contains("does not verify")
        );
        // From a certificate this agent does not pin.
        let foreign = handover(&stranger, &next, &stranger.2);
        assert!(
            verify_handover(&foreign, &old.1)
                .expect_err("foreign")
                .contains("does not pin")
        );
        // The next fingerprint swapped for another certificate's.
        let mut swapped = genuine.clone();
        swapped.to_fingerprint = stranger.1.clone();
        assert!(verify_handover(&swapped, &old.1).is_err());
        // The signature over one hand-over reused for another next certificate.
        let mut reused = handover(&old, &stranger, &old.2);
        reused.signature = genuine.signature.clone();
        assert!(verify_handover(&reused, &old.1).is_err());
        let mut garbage = genuine;
        garbage.signature = "not base64!".into();
        assert!(verify_handover(&garbage, &old.1).is_err());
    }

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
