//! Password hashing with Argon2id at OWASP's minimum or above (m = 19 MiB, t = 2, p = 1
//! by default, tunable). Hashes are PHC strings, so their parameters travel with them:
//! a hash made with weaker parameters verifies and is reported for rehashing at the next
//! login. An unknown account is verified against a dummy hash, so it costs the same time
//! as a wrong password and does not tell an attacker which accounts exist.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Argon2id cost: memory in KiB, iterations, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    /// OWASP's minimum for Argon2id.
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing parameters: {0}")]
    Params(String),
    #[error("password hashing: {0}")]
    Hash(String),
}

pub struct PasswordHasher {
    argon2: Argon2<'static>,
    cost: HashCost,
}

impl PasswordHasher {
    /// A hasher at `cost`, refused below OWASP's minimum.
    pub fn new(cost: HashCost) -> Result<Self, HashError> {
        let minimum = HashCost::default();
        if cost.memory_kib < minimum.memory_kib || cost.iterations < minimum.iterations {
            return Err(HashError::Params(format!(
                "Argon2id below OWASP's minimum (m = {} KiB, t = {})",
                minimum.memory_kib, minimum.iterations
            )));
        }
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| HashError::Params(e.to_string()))?;
        Ok(PasswordHasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            cost,
        })
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a random 128-bit salt.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| HashError::Hash(format!("random source: {e}")))?;
        let salt = SaltString::encode_b64(&random).map_err(|e| HashError::Hash(e.to_string()))?;
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Hash(e.to_string()))
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown account), a
    /// dummy hash is verified instead, so both take the same time, and the answer is no.
    pub fn verify(&self, stored: Option<&str>, password: &str) -> bool {
        let dummy;
        let phc = match stored {
            Some(phc) => phc,
            None => {
                dummy = self.dummy();
                dummy.as_str()
            }
        };
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let matches = self
            .argon2
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        matches && stored.is_some()
    }

    /// Whether `stored` was made with other parameters than this hasher's (rehash it at
    /// the next successful login).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != "argon2id"
            || params.m_cost() != self.cost.memory_kib
            || params.t_cost() != self.cost.iterations
            || params.p_cost() != self.cost.parallelism
    }

    /// A hash of a random password at this cost, made once.
    fn dummy(&self) -> String {
        static DUMMY: OnceLock<String> = OnceLock::new();
        DUMMY
            .get_or_init(|| {
                let mut random = [0u8; 32];
                let _ = getrandom::fill(&mut random);
                self.hash(&hex::encode(random)).unwrap_or_default()
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let hasher = PasswordHasher::new(HashCost::default()).expect("hasher");
        let stored = hasher.hash("correct horse battery staple").expect("hash");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(hasher.verify(Some(&stored), "correct horse battery staple"));
        assert!(!hasher.verify(Some(&stored), "correct horse battery stapl"));
        assert!(!hasher.verify(None, "correct horse battery staple"));
        assert!(!hasher.verify(Some("not a hash"), "x"));
        assert_ne!(
            stored,
            hasher.hash("correct horse battery staple").expect("hash"),
            "salted"
        );
        assert!(!hasher.needs_rehash(&stored));
        let stronger = PasswordHasher::new(HashCost {
            memory_kib: 32 * 1024,
            ..HashCost::default()
        })
        .expect("hasher");
        assert!(stronger.needs_rehash(&stored));
        assert!(
            stronger.verify(Some(&stored), "correct horse battery staple"),
            "old hashes still verify"
        );
    }

    #[test]
    fn costs_below_the_minimum_are_refused() {
        let weak = HashCost {
            memory_kib: 4096,
            ..HashCost::default()
        };
        assert!(PasswordHasher::new(weak).is_err());
    }

    /// An unknown account costs what a wrong password costs (no account enumeration by
    /// timing): both within a factor of two of each other.
    #[test]
    fn an_unknown_account_takes_as_long_as_a_wrong_password() {
        let hasher = PasswordHasher::new(HashCost::default()).expect("hasher");
        let stored = hasher.hash("correct horse battery staple").expect("hash");
        let _ = hasher.verify(None, "warm up the dummy");
        let time = |stored: Option<&str>| {
            let start = std::time::Instant::now();
            let _ = hasher.verify(stored, "wrong password");
            start.elapsed()
        };
        // The fastest of several alternating runs: what the work costs, not what other
        // processes on the machine cost it.
        let (mut known, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..5 {
            known = known.min(time(Some(&stored)));
            unknown = unknown.min(time(None));
        }
        let ratio = known.as_secs_f64() / unknown.as_secs_f64();
        assert!(
            (0.5..2.0).contains(&ratio),
            "known {known:?}, unknown {unknown:?}"
        );
    }
}
