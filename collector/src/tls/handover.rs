//! Rotating the collector's generated certificate through a signed hand-over.
//!
//! `yagura tls rotate` makes the next certificate (`tls/next.crt`, `next.key`) and
//! publishes a [`Handover`] signed with the current certificate's key
//! (`tls/handover.json`, served at `GET /api/v1/tls/handover`). Agents fetch it, check it
//! against the certificate they pin, and from then on accept either. `yagura tls
//! activate` makes the next certificate the current one (the old one is kept as
//! `previous.*`); the collector serves it from its next start. The hand-over stays
//! published, so an agent that was offline during the switch can still take it — over a
//! connection to the old certificate's holder only, which is why the signature matters:
//! it lets an agent check the hand-over came from the key it pinned.

use std::path::Path;

use base64::Engine as _;
use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use yagura_shared::tls_handover::{Handover, document};

use super::{TlsError, fingerprint, io, write_file};

/// The published hand-over, in the TLS directory.
pub const HANDOVER_FILE: &str = "handover.json";
/// The current certificate and key once a rotation was activated (see
/// [`super::current_paths`]).
pub const CURRENT: &str = "collector.pem";
/// The certificate and key an activation replaced.
pub const PREVIOUS: &str = "previous.pem";
const NEXT_CERT: &str = "next.crt";
const NEXT_KEY: &str = "next.key";

/// The hand-over published in `tls_dir`, if any.
pub fn published(tls_dir: &Path) -> Result<Option<Handover>, TlsError> {
    let path = tls_dir.join(HANDOVER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TlsError::Pem {
                path: path.display().to_string(),
                what: "hand-over",
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Makes the next certificate and publishes its hand-over, signed by the current key.
/// Refuses while one is staged and not yet activated; a stage cut short by a crash (next
/// files no hand-over names) is cleared and done again.
pub fn stage(tls_dir: &Path, subject_alt_names: &[String]) -> Result<Handover, TlsError> {
    let (cert_path, key_path) = super::current_paths(tls_dir);
    if !cert_path.is_file() {
        return Err(TlsError::Generate(format!(
            "{} does not exist: hand-overs rotate the generated certificate (start the \
             collector once first)",
            cert_path.display()
        )));
    }
    let current = first_certificate(&cert_path)?;
    let next_cert = tls_dir.join(NEXT_CERT);
    if next_cert.exists() || tls_dir.join(NEXT_KEY).exists() {
        let staged = first_certificate(&next_cert).ok().map(|c| fingerprint(&c));
        let named = published(tls_dir)?.map(|h| h.to_fingerprint);
        if staged.is_some() && staged == named {
            return Err(TlsError::Generate(
                "a next certificate is already staged: activate it first (`yagura tls \
                 activate`)"
                    .into(),
            ));
        }
        for name in [NEXT_CERT, NEXT_KEY] {
            let _ = std::fs::remove_file(tls_dir.join(name));
        }
    }
    let current_key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.display().to_string(),
        what: "private key",
        detail: e.to_string(),
    })?;
    let next = rcgen::generate_simple_self_signed(subject_alt_names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let next_der = CertificateDer::from(next.cert.der().to_vec());
    let (from, to) = (fingerprint(&current), fingerprint(&next_der));
    let (scheme, signature) = sign(&current_key, &document(&from, &to))?;
    let handover = Handover {
        from_fingerprint: from,
        to_fingerprint: to,
        from_certificate: pem("CERTIFICATE", &current),
        to_certificate: next.cert.pem(),
        scheme: u16::from(scheme),
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
    };
    // The hand-over last: it is what makes the staged files count.
    replace_file(
        &tls_dir.join(NEXT_KEY),
        next.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    replace_file(&next_cert, next.cert.pem().as_bytes(), 0o644)?;
    let json =
        serde_json::to_vec_pretty(&handover).map_err(|e| TlsError::Generate(e.to_string()))?;
    replace_file(&tls_dir.join(HANDOVER_FILE), &json, 0o644)?;
    sync_dir(tls_dir)?;
    Ok(handover)
}

/// Makes the staged certificate the current one; returns (old, new) fingerprints. The
/// switch is one rename (`collector.pem`, certificate and key together), after the pair
/// it replaces is kept as `previous.pem`; run again after a crash, it finishes the job.
/// The collector serves the new certificate from its next start.
pub fn activate(tls_dir: &Path) -> Result<(String, String), TlsError> {
    let handover = published(tls_dir)?.ok_or_else(|| {
        TlsError::Generate("no hand-over is published: `yagura tls rotate` first".into())
    })?;
    let (cert_path, key_path) = super::current_paths(tls_dir);
    let current = fingerprint(&first_certificate(&cert_path)?);
    if current != handover.to_fingerprint {
        if current != handover.from_fingerprint {
            return Err(TlsError::Generate(format!(
                "the current certificate (sha256 {current}) is not the one the hand-over \
                 replaces: stage a new rotation"
            )));
        }
        let next_cert = tls_dir.join(NEXT_CERT);
        if fingerprint(&first_certificate(&next_cert)?) != handover.to_fingerprint {
            return Err(TlsError::Generate(
                "the staged certificate is not the one the hand-over names: stage a new \
                 rotation"
                    .into(),
            ));
        }
        let read = |path: &Path| std::fs::read(path).map_err(io(path));
        let mut previous = read(&cert_path)?;
        if key_path != cert_path {
            previous.extend_from_slice(&read(&key_path)?);
        }
        replace_file(&tls_dir.join(PREVIOUS), &previous, 0o600)?;
        let mut pair = read(&next_cert)?;
        pair.extend_from_slice(&read(&tls_dir.join(NEXT_KEY))?);
        replace_file(&tls_dir.join(CURRENT), &pair, 0o600)?;
        sync_dir(tls_dir)?;
    }
    // Clean-up: everything now lives in collector.pem and previous.pem.
    for name in [NEXT_CERT, NEXT_KEY, "collector.crt", "collector.key"] {
        let _ = std::fs::remove_file(tls_dir.join(name));
    }
    sync_dir(tls_dir)?;
    Ok((handover.from_fingerprint, handover.to_fingerprint))
}

/// Writes `bytes` to `path` through a temporary file and a rename (fsync'd).
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, bytes, mode)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn first_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let pem_error = |detail: String| TlsError::Pem {
        path: path.display().to_string(),
        what: "certificate",
        detail,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .next()
        .ok_or_else(|| pem_error("empty".into()))?
        .map_err(|e| pem_error(e.to_string()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Signs with the certificate's key, in a scheme TLS 1.3 agents verify.
fn sign(key: &PrivateKeyDer<'_>, message: &[u8]) -> Result<(SignatureScheme, Vec<u8>), TlsError> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key)?;
    let signer = signing
        .choose_scheme(&[
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
        ])
        .ok_or_else(|| {
            TlsError::Generate("the certificate's key signs in no TLS 1.3 scheme".into())
        })?;
    let signature = signer.sign(message)?;
    Ok((signer.scheme(), signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsIdentity;

    #[test]
    fn stage_then_activate_swaps_the_certificate() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = vec!["localhost".to_string()];
        let first = TlsIdentity::load_or_generate(dir.path(), &names).expect("generate");
        assert!(published(dir.path()).expect("read").is_none());
        let handover = stage(dir.path(), &names).expect("stage");
        assert_eq!(handover.from_fingerprint, first.fingerprint);
        assert_eq!(published(dir.path()).expect("read"), Some(handover.clone()));
        let again = stage(dir.path(), &names).expect_err("one at a time");
        assert!(again.to_string().contains("already staged"), "{again}");
        // Until activated, the collector keeps its certificate.
        let still = TlsIdentity::load_or_generate(dir.path(), &names).expect("load");
        assert_eq!(still.fingerprint, first.fingerprint);
        let (from, to) = activate(dir.path()).expect("activate");
        assert_eq!(
            (from.as_str(), to.as_str()),
            (first.fingerprint.as_str(), handover.to_fingerprint.as_str())
        );
        let now = TlsIdentity::load_or_generate(dir.path(), &names).expect("load");
        assert_eq!(now.fingerprint, handover.to_fingerprint);
        // Run again (as after a crash): it finds the work done.
        assert_eq!(
            activate(dir.path()).expect("again").1,
            handover.to_fingerprint
        );
        assert!(dir.path().join(PREVIOUS).is_file());
        assert!(!dir.path().join(NEXT_KEY).exists());

        // A second rotation from the activated pair.
        let second = stage(dir.path(), &names).expect("stage again");
        assert_eq!(second.from_fingerprint, handover.to_fingerprint);
        // A crash between the switch and the clean-up: the switch is whole.
        let pair = [
            std::fs::read(dir.path().join(NEXT_CERT)).expect("crt"),
            std::fs::read(dir.path().join(NEXT_KEY)).expect("key"),
        ]
        .concat();
        replace_file(&dir.path().join(CURRENT), &pair, 0o600).expect("switch");
        let (_, to) = activate(dir.path()).expect("finish");
        assert_eq!(to, second.to_fingerprint);
        let now = TlsIdentity::load_or_generate(dir.path(), &names).expect("load");
        assert_eq!(now.fingerprint, second.to_fingerprint);

        // A lost certificate is not silently replaced once a rotation is recorded.
        std::fs::remove_file(dir.path().join(CURRENT)).expect("lose it");
        let refused = TlsIdentity::load_or_generate(dir.path(), &names).expect_err("refused");
        assert!(
            refused.to_string().contains("rotation is recorded"),
            "{refused}"
        );
    }

    #[test]
    fn a_stage_cut_short_is_done_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = vec!["localhost".to_string()];
        TlsIdentity::load_or_generate(dir.path(), &names).expect("generate");
        std::fs::write(dir.path().join(NEXT_KEY), b"half").expect("partial");
        let handover = stage(dir.path(), &names).expect("stage over the partial files");
        let staged = first_certificate(&dir.path().join(NEXT_CERT)).expect("staged");
        assert_eq!(fingerprint(&staged), handover.to_fingerprint);
    }
}
