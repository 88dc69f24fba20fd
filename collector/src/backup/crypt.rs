//! Backup encryption: the key file, object names, and objects sealed in chunks.
//!
//! Every file of a snapshot is stored as one object: XChaCha20-Poly1305 in the STREAM
//! construction (1 MiB chunks, each with its own tag; the last chunk is marked, so a
//! truncated object fails instead of decrypting short), with the object's name as
//! associated data, so objects swapped or renamed in the store fail too. A random nonce
//! prefix per object means the same plaintext never produces the same ciphertext.
//!
//! Objects are named by a keyed hash (HMAC-SHA-256) of their plaintext's SHA-256: equal
//! files share one object — sealed archive segments and index segment files are stored
//! once across all snapshots (incremental backups) — yet a name tells someone without the
//! key nothing, not even whether a file they know is in the store.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::BackupError;

/// Plaintext bytes per chunk.
const CHUNK: usize = 1 << 20;
/// Poly1305 tag per chunk.
const TAG: usize = 16;
/// XChaCha20's 24-byte nonce minus STREAM's 5 bytes of counter and last-chunk flag.
const NONCE_PREFIX: usize = 19;
/// The first bytes of every object (format version 1).
const MAGIC: &[u8; 8] = b"YGBKOBJ1";

/// The length of the object [`BackupKey::seal`] makes of `plain` bytes.
pub fn sealed_len(plain: u64) -> u64 {
    let chunks = plain.div_ceil(CHUNK as u64).max(1);
    (MAGIC.len() + NONCE_PREFIX) as u64 + plain + chunks * TAG as u64
}

/// The backup key: 32 random bytes, kept in a file apart from the backups.
#[derive(Clone)]
pub struct BackupKey {
    key: [u8; 32],
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl BackupKey {
    /// A new random key.
    pub fn generate() -> Result<Self, BackupError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| BackupError::Crypto(e.to_string()))?;
        Ok(BackupKey { key })
    }

    /// The key file's text: one line of base64.
    pub fn to_file_text(&self) -> String {
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(self.key)
        )
    }

    /// Reads a key file (one line of base64 of 32 bytes).
    pub fn load(path: &Path) -> Result<Self, BackupError> {
        let text = std::fs::read_to_string(path).map_err(BackupError::io(path))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| BackupError::KeyFile(format!("{}: not base64: {e}", path.display())))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            BackupError::KeyFile(format!(
                "{}: {} bytes, a backup key is 32",
                path.display(),
                b.len()
            ))
        })?;
        Ok(BackupKey { key })
    }

    /// A short public name of the key (the first 8 bytes of a keyed hash of nothing), so a
    /// store can say which key it needs without revealing it.
    pub fn id(&self) -> String {
        hex::encode(&self.mac(b"yagura backup key id")[..8])
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The object name of a plaintext with this SHA-256.
    pub fn object_name(&self, plaintext_sha256: &str) -> String {
        let mut input = b"yagura backup object ".to_vec();
        input.extend_from_slice(plaintext_sha256.as_bytes());
        hex::encode(self.mac(&input))
    }

    fn aead(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    /// Encrypts everything `plaintext` yields into `out`, bound to `name`; returns the
    /// plaintext's length and SHA-256.
    pub fn seal(
        &self,
        name: &str,
        plaintext: impl Read,
        mut out: impl Write,
    ) -> Result<(u64, String), BackupError> {
        let mut prefix = [0u8; NONCE_PREFIX];
        getrandom::fill(&mut prefix).map_err(|e| BackupError::Crypto(e.to_string()))?;
        out.write_all(MAGIC).map_err(BackupError::write)?;
        out.write_all(&prefix).map_err(BackupError::write)?;
        let mut encryptor = EncryptorBE32::from_aead(self.aead(), (&prefix).into());
        let mut reader = BufReader::with_capacity(CHUNK, plaintext);
        let mut hash = Sha256::new();
        let mut length = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            chunk.clear();
            (&mut reader)
                .take(CHUNK as u64)
                .read_to_end(&mut chunk)
                .map_err(BackupError::read)?;
            hash.update(&chunk);
            length += chunk.len() as u64;
            // The last chunk is the one after which nothing is left (it may be empty).
            let last =
                chunk.len() < CHUNK || reader.fill_buf().map_err(BackupError::read)?.is_empty();
            let payload = Payload {
                msg: &chunk,
                aad: name.as_bytes(),
            };
            if last {
                let sealed = encryptor
                    .encrypt_last(payload)
                    .map_err(|_| BackupError::Crypto("encryption failed".into()))?;
                out.write_all(&sealed).map_err(BackupError::write)?;
                break;
            }
            let sealed = encryptor
                .encrypt_next(payload)
                .map_err(|_| BackupError::Crypto("encryption failed".into()))?;
            out.write_all(&sealed).map_err(BackupError::write)?;
        }
        out.flush().map_err(BackupError::write)?;
        Ok((length, hex::encode(hash.finalize())))
    }

    /// Decrypts an object sealed under `name` into `out`; returns the plaintext's length
    /// and SHA-256. Any change to the object — a flipped bit, a cut, another object's
    /// bytes — is an error, and nothing after the damaged chunk is written.
    pub fn open(
        &self,
        name: &str,
        sealed: impl Read,
        mut out: impl Write,
    ) -> Result<(u64, String), BackupError> {
        let damaged = |what: &str| BackupError::Damaged(format!("object {name}: {what}"));
        let mut reader = BufReader::with_capacity(CHUNK + TAG, sealed);
        let mut head = [0u8; MAGIC.len() + NONCE_PREFIX];
        reader
            .read_exact(&mut head)
            .map_err(|_| damaged("shorter than its header"))?;
        if &head[..MAGIC.len()] != MAGIC {
            return Err(damaged("not a backup object (bad magic)"));
        }
        let prefix: [u8; NONCE_PREFIX] = head[MAGIC.len()..]
            .try_into()
            .map_err(|_| damaged("header"))?;
        let mut decryptor = DecryptorBE32::from_aead(self.aead(), (&prefix).into());
        let mut hash = Sha256::new();
        let mut length = 0u64;
        let mut chunk = Vec::with_capacity(CHUNK + TAG);
        loop {
            chunk.clear();
            (&mut reader)
                .take((CHUNK + TAG) as u64)
                .read_to_end(&mut chunk)
                .map_err(BackupError::read)?;
            let last = chunk.len() < CHUNK + TAG
                || reader.fill_buf().map_err(BackupError::read)?.is_empty();
            let payload = Payload {
                msg: &chunk,
                aad: name.as_bytes(),
            };
            let undecryptable = |_| damaged("does not decrypt (wrong key, or changed or cut)");
            if last {
                let plain = decryptor.decrypt_last(payload).map_err(undecryptable)?;
                hash.update(&plain);
                length += plain.len() as u64;
                out.write_all(&plain).map_err(BackupError::write)?;
                return Ok((length, hex::encode(hash.finalize())));
            }
            let plain = decryptor.decrypt_next(payload).map_err(undecryptable)?;
            hash.update(&plain);
            length += plain.len() as u64;
            out.write_all(&plain).map_err(BackupError::write)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(key: &BackupKey, plain: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::new();
        let (len, sha) = key.seal("obj", plain, &mut sealed).expect("seal");
        assert_eq!(len, plain.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(plain)));
        let mut opened = Vec::new();
        let (len2, sha2) = key.open("obj", &sealed[..], &mut opened).expect("open");
        assert_eq!((len2, sha2), (len, sha));
        assert_eq!(opened, plain);
        sealed
    }

    #[test]
    fn objects_round_trip_at_chunk_boundaries() {
        let key = BackupKey::generate().expect("key");
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sealed = round_trip(&key, &plain);
            let chunks = size.div_ceil(CHUNK).max(1);
            assert_eq!(
                sealed.len(),
                MAGIC.len() + NONCE_PREFIX + size + chunks * TAG,
                "size {size}"
            );
            assert_eq!(sealed.len() as u64, sealed_len(size as u64));
        }
    }

    #[test]
    fn damage_a_cut_a_wrong_name_or_key_fail() {
        let key = BackupKey::generate().expect("key");
        let plain: Vec<u8> = (0..CHUNK + 100).map(|i| (i % 13) as u8).collect();
        let sealed = round_trip(&key, &plain);
        let fails = |key: &BackupKey, name: &str, bytes: &[u8]| {
            key.open(name, bytes, &mut Vec::new()).is_err()
        };
        let mut flipped = sealed.clone();
        flipped[MAGIC.len() + NONCE_PREFIX + 10] ^= 1;
        assert!(fails(&key, "obj", &flipped), "a flipped bit");
        // Cut at the chunk boundary: what is left is a valid-looking first chunk, but it
        // was not sealed as the last one.
        let cut = &sealed[..MAGIC.len() + NONCE_PREFIX + CHUNK + TAG];
        assert!(fails(&key, "obj", cut), "a cut at a chunk boundary");
        assert!(
            fails(&key, "obj", &sealed[..sealed.len() - 1]),
            "one byte short"
        );
        assert!(fails(&key, "other", &sealed), "another object's name");
        let other = BackupKey::generate().expect("key");
        assert!(fails(&other, "obj", &sealed), "another key");
        assert!(fails(&key, "obj", b"YGBK"), "a stub");
    }

    #[test]
    fn names_and_ids_are_keyed() {
        let a = BackupKey::generate().expect("key");
        let b = BackupKey::generate().expect("key");
        let sha = hex::encode(Sha256::digest(b"same file"));
        assert_eq!(a.object_name(&sha), a.object_name(&sha), "deterministic");
        assert_ne!(a.object_name(&sha), b.object_name(&sha), "keyed");
        assert_ne!(a.object_name(&sha), sha);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 16);

        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("backup.key");
        std::fs::write(&path, a.to_file_text()).expect("write");
        assert_eq!(BackupKey::load(&path).expect("load").id(), a.id());
        std::fs::write(&path, "c2hvcnQ=\n").expect("write");
        let short = BackupKey::load(&path).expect_err("5 bytes");
        assert!(
            short.to_string().contains("5 bytes, a backup key is 32"),
            "{short}"
        );
    }
}
