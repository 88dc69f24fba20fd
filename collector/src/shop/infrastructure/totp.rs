//! Second factor: TOTP after RFC 6238 (SHA-1, 30-second steps, 6 digits — what every
//! authenticator app speaks), accepting one step of clock drift either way, and never
//! the same step twice (a code seen once — by a shoulder-surfer too — is spent). Plus
//! one-time recovery codes, stored as SHA-256 hashes: they are 80-bit random values, so
//! a fast hash suffices, as for API tokens.

use sha2::{Digest as _, Sha256};
use totp_rs::{Algorithm, TOTP};

const DIGITS: usize = 6;
const STEP_SECONDS: u64 = 30;
/// Secret length: 160 bits, RFC 4226's recommendation.
const SECRET_BYTES: usize = 20;
/// Recovery codes issued at enrollment.
pub const RECOVERY_CODES: usize = 10;
/// Base32 without padding, as authenticator apps and the recovery codes use it.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("random source: {0}")]
    Random(String),
    #[error("TOTP: {0}")]
    Totp(String),
}

/// A user's TOTP secret (never printed).
pub struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(***)")
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TotpError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| TotpError::Random(e.to_string()))?;
    Ok(bytes)
}

impl TotpSecret {
    pub fn generate() -> Result<Self, TotpError> {
        Ok(TotpSecret(random_bytes::<SECRET_BYTES>()?.to_vec()))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        TotpSecret(bytes)
    }

    /// The raw secret, for storing (encrypted) and nothing else.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self, issuer: &str, account: &str) -> Result<TOTP, TotpError> {
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            1,
            STEP_SECONDS,
            self.0.clone(),
            Some(issuer.replace(':', "")),
            account.replace(':', ""),
        )
        .map_err(|e| TotpError::Totp(e.to_string()))
    }

    /// The `otpauth://totp/…` URI an authenticator app enrolls from (shown as a QR code).
    pub fn provisioning_uri(&self, issuer: &str, account: &str) -> Result<String, TotpError> {
        Ok(self.totp(issuer, account)?.get_url())
    }

    /// The code for the step holding `unix_seconds` (for tests and the enrollment check).
    pub fn code_at(&self, unix_seconds: u64) -> Result<String, TotpError> {
        Ok(self.totp("yagura", "user")?.generate(unix_seconds))
    }

    /// The step `code` is valid for at `now` (this step or one either side), if it is
    /// after `last_used` — the caller records the step as used. `None`: refuse.
    pub fn verify(&self, code: &str, now: u64, last_used: Option<u64>) -> Option<u64> {
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp("yagura", "user").ok()?;
        let current = now / STEP_SECONDS;
        let mut found = None;
        // Every candidate is compared (constant time over the three), none skipped early.
        for step in [current.saturating_sub(1), current, current + 1] {
            let expected = totp.generate(step * STEP_SECONDS);
            let same = expected
                .bytes()
                .zip(code.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same && last_used.is_none_or(|used| step > used) && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// Fresh recovery codes (four groups of four base32 characters, e.g. `K7QF-2MZA-P4TD-W6HX`;
/// 80 random bits each), shown once, and their hashes, stored.
pub fn recovery_codes() -> Result<(Vec<String>, Vec<String>), TotpError> {
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let bytes = random_bytes::<16>()?;
        let chars: Vec<char> = bytes
            .iter()
            .map(|b| BASE32[usize::from(b % 32)] as char)
            .collect();
        let code = chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("-");
        codes.push(code);
    }
    let hashes = codes.iter().map(|c| recovery_code_hash(c)).collect();
    Ok((codes, hashes))
}

/// The stored form of a recovery code as typed: case, spaces and dashes do not matter.
pub fn recovery_code_hash(typed: &str) -> String {
    let normal: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex::encode(Sha256::digest(normal.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1: the secret "12345678901234567890" at T = 59 s gives
    /// 94287082 (8 digits); the 6-digit code is its last six.
    #[test]
    fn codes_follow_rfc_6238() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(secret.code_at(59).expect("code"), "287082");
        assert_eq!(secret.code_at(1_111_111_109).expect("code"), "081804");
        assert_eq!(secret.code_at(2_000_000_000).expect("code"), "279037");
    }

    #[test]
    fn one_step_of_drift_is_accepted_and_a_used_code_is_refused() {
        let secret = TotpSecret::generate().expect("secret");
        let now = 1_764_064_800;
        let code = secret.code_at(now).expect("code");
        let step = secret.verify(&code, now, None).expect("valid now");
        assert_eq!(step, now / 30);
        assert_eq!(secret.verify(&code, now, Some(step)), None, "replayed");
        assert!(
            secret.verify(&code, now + 30, None).is_some(),
            "a step late"
        );
        assert!(
            secret.verify(&code, now - 30, None).is_some(),
            "a step early"
        );
        assert_eq!(secret.verify(&code, now + 90, None), None, "too late");
        let previous = secret.code_at(now - 30).expect("code");
        assert_eq!(
            secret.verify(&previous, now, Some(step)),
            None,
            "an older step after a newer one was used"
        );
        for bad in ["", "12345", "1234567", "abcdef", " 12 34 "] {
            assert_eq!(secret.verify(bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn provisioning_uri_names_issuer_and_account() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let uri = secret
            .provisioning_uri("Yagura shop", "alice@example.org")
            .expect("uri");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("issuer=Yagura%20shop"), "{uri}");
        assert!(!format!("{secret:?}").contains("GEZ"));
    }

    #[test]
    fn recovery_codes_are_random_and_stored_hashed() {
        let (codes, hashes) = recovery_codes().expect("codes");
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 19 && c.matches('-').count() == 3)
        );
        assert_eq!(
            recovery_code_hash(&codes[0].to_lowercase().replace('-', " ")),
            hashes[0]
        );
        assert!(
            !hashes
                .iter()
                .any(|h| codes.iter().any(|c| h.contains(c.as_str())))
        );
    }
}
