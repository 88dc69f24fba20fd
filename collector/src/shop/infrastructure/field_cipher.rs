//! Field-level encryption at rest: the fields that locate a person (see
//! `SensitiveField`) are stored as XChaCha20-Poly1305 ciphertexts, so a copied database
//! file or backup holds no phone numbers or addresses without the keyring beside it.
//!
//! XChaCha20-Poly1305 because its 192-bit nonce can be drawn at random for every value
//! with no counter to keep and no realistic chance of a repeat, and because it
//! authenticates: a changed byte is refused, not decrypted into garbage. Each value
//! carries the id of the key that sealed it, so keys can be rotated: a new key seals,
//! the old ones still open what they sealed until it is re-encrypted.
//!
//! A stored value reads `xc1.<key_id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The
//! caller's associated data (e.g. `form:<submission-id>:phone`) is authenticated with
//! it, so a value copied into another row or field does not decrypt there.
//!
//! The keyring's text form, in a file or an environment variable, is one key a line,
//! `key_id:base64(32 bytes)`, the first one active; blank lines and `#` comments are
//! ignored.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// A key's length: XChaCha20's 256 bits.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// The format's version: a later scheme gets another prefix, and this one stays readable.
const PREFIX: &str = "xc1";
/// Longest key id.
const MAX_KEY_ID_CHARS: usize = 32;
/// A keyring file's mode: the owner's only.
const FILE_MODE: u32 = 0o600;
/// The head of a keyring file this module writes.
const FILE_HEADER: &str = "\
# Yagura shop field-encryption keys: one `key_id:base64(32 bytes)` a line; the first
# one encrypts, the others only decrypt. Keep this file mode 0600 and back it up:
# values encrypted with a lost key cannot be read again.
";

/// Why a keyring could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The text is not a keyring; `origin` is the file or `environment`, `line` the
    /// 1-based line (or `;`-separated entry) at fault. Never quotes key material.
    #[error("{origin}:{line}: {message}")]
    Parse {
        origin: String,
        line: usize,
        message: String,
    },
    #[error(
        "{}: mode {mode:04o} lets group or others read the keyring; `chmod 600` it",
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{}: already exists; a keyring is never overwritten", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("random source: {0}")]
    Random(String),
}

/// Why a stored value did not decrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("not an encrypted field value")]
    Malformed,
    #[error("encrypted with key {0:?}, which the keyring does not hold")]
    UnknownKey(String),
    /// Tampered with, moved to another row or field, or sealed by another key of the
    /// same id: AEAD cannot tell which, and need not.
    #[error("the value does not authenticate (altered, moved, or another key)")]
    Authentication,
}

struct FieldKey {
    id: String,
    key: Zeroizing<[u8; KEY_BYTES]>,
}

/// The keys that seal and open sensitive fields; the first one seals. Key bytes are
/// wiped from memory when the keyring is dropped, and never printed.
pub struct FieldKeyring {
    /// Never empty; ids are distinct.
    keys: Vec<FieldKey>,
}

impl std::fmt::Debug for FieldKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldKeyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, KeyringError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(&mut bytes[..]).map_err(|e| KeyringError::Random(e.to_string()))?;
    Ok(bytes)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FieldKeyring {
    /// Reads the text form (see the module's documentation); `origin` names where the
    /// text came from in errors, as `origin:line: message`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyringError> {
        let error = |line: usize, message: String| KeyringError::Parse {
            origin: origin.to_string(),
            line,
            message,
        };
        let mut keys: Vec<FieldKey> = Vec::new();
        let mut last_line = 0;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            last_line = number;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line is not quoted in errors: it may be a key pasted on its own.
            let Some((id, encoded)) = line.split_once(':') else {
                return Err(error(number, "expected `key_id:base64 key`".into()));
            };
            let id = id.trim();
            if !valid_key_id(id) {
                return Err(error(
                    number,
                    format!(
                        "a key id is 1 to {MAX_KEY_ID_CHARS} characters of A-Z, a-z, 0-9, _ and -"
                    ),
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(error(number, format!("key id {id:?} appears twice")));
            }
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| error(number, "the key is not standard base64".into()))?,
            );
            let key: [u8; KEY_BYTES] = bytes[..].try_into().map_err(|_| {
                error(
                    number,
                    format!("the key is {} bytes; {KEY_BYTES} are needed", bytes.len()),
                )
            })?;
            keys.push(FieldKey {
                id: id.to_string(),
                key: Zeroizing::new(key),
            });
        }
        if keys.is_empty() {
            return Err(error(
                last_line.max(1),
                "no keys (one `key_id:base64 key` line is needed)".into(),
            ));
        }
        Ok(FieldKeyring { keys })
    }

    /// Reads the text form from an environment variable's value, where lines may also
    /// be separated by `;` (errors name the entry as `environment:N`).
    pub fn from_env_value(value: &str) -> Result<Self, KeyringError> {
        let text = Zeroizing::new(value.replace(';', "\n"));
        Self::parse(&text, "environment")
    }

    /// Reads a keyring file, refusing one whose mode lets group or others read it: a
    /// key anyone on the host can read protects nothing.
    pub fn load_file(path: &Path) -> Result<Self, KeyringError> {
        let text = read_private(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Makes a new keyring file (mode 0600) with one fresh key, refusing to replace an
    /// existing file: that would lose the keys to everything already stored.
    pub fn create_file(path: &Path) -> Result<Self, KeyringError> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(KeyringError::Exists {
                path: path.to_path_buf(),
            });
        }
        let keyring = FieldKeyring {
            keys: vec![new_key(&[])?],
        };
        let mut text = Zeroizing::new(FILE_HEADER.to_string());
        text.push_str(&keyring.keys[0].line());
        write_atomically(path, &text, Replace::Never)?;
        Ok(keyring)
    }

    /// Puts a fresh key first in the keyring file (it seals from now on) and keeps the
    /// others, so what they sealed stays readable until re-encrypted (see
    /// [`FieldKeyring::needs_reencryption`]). The file's comments are kept; it is
    /// replaced atomically, mode 0600. One rotation at a time: two at once would keep
    /// only one of the new keys.
    pub fn rotate_file(path: &Path) -> Result<Self, KeyringError> {
        let old_text = read_private(path)?;
        let old = Self::parse(&old_text, &path.display().to_string())?;
        let key = new_key(&old.keys)?;
        // The new line goes before the first key line, after any header comments.
        let mut text = Zeroizing::new(String::with_capacity(old_text.len() + 128));
        let mut placed = false;
        for line in old_text.lines() {
            let trimmed = line.trim();
            if !placed && !trimmed.is_empty() && !trimmed.starts_with('#') {
                text.push_str(&key.line());
                placed = true;
            }
            text.push_str(line);
            text.push('\n');
        }
        write_atomically(path, &text, Replace::Existing)?;
        let mut keys = vec![key];
        keys.extend(old.keys);
        Ok(FieldKeyring { keys })
    }

    /// The id of the key that seals new values.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every key's id, the active one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` with the active key and a fresh random nonce, bound to `aad`
    /// (say which row and field it belongs to, e.g. `b"form:<submission-id>:phone"`).
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails: without it there is no safe
    /// nonce, and no value may be stored unencrypted instead.
    pub fn encrypt(&self, plaintext: &str, aad: &[u8]) -> String {
        let active = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source failed: no nonce to encrypt with");
        let sealed = active
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message under 256 GiB");
        let mut body = Vec::with_capacity(NONCE_BYTES + sealed.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        format!("{PREFIX}.{}.{}", active.id, URL_SAFE_NO_PAD.encode(&body))
    }

    /// Opens a value [`FieldKeyring::encrypt`] made, with the same `aad`. Any input is
    /// safe to pass: what is not such a value, or was altered, is an error.
    pub fn decrypt(&self, stored: &str, aad: &[u8]) -> Result<String, CipherError> {
        let (id, body) = split_stored(stored).ok_or(CipherError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CipherError::UnknownKey(id.to_string()))?;
        // Canonical base64 only (no padding, no stray trailing bits), so one sealed value
        // has one spelling.
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CipherError::Malformed)?;
        if body.len() < NONCE_BYTES + TAG_BYTES {
            return Err(CipherError::Malformed);
        }
        let (nonce, sealed) = body.split_at(NONCE_BYTES);
        let plain = key
            .cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| CipherError::Authentication)?;
        // Authenticated, so sealed by `encrypt` from a `&str`: always UTF-8.
        String::from_utf8(plain).map_err(|_| CipherError::Malformed)
    }

    /// Whether `stored` was sealed by a key other than the active one, so a
    /// re-encryption pass should open and seal it again. A value that is not an
    /// encrypted field value at all gives `false`; [`FieldKeyring::decrypt`] says why.
    pub fn needs_reencryption(&self, stored: &str) -> bool {
        split_stored(stored).is_some_and(|(id, _)| id != self.active_key_id())
    }
}

/// The key id and the encoded body of `xc1.<key_id>.<body>`, if it has that shape.
fn split_stored(stored: &str) -> Option<(&str, &str)> {
    let rest = stored.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let (id, body) = rest.split_once('.')?;
    valid_key_id(id).then_some((id, body))
}

impl FieldKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.key).into())
    }

    /// The key's line in the text form.
    fn line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}:{}\n", self.id, STANDARD.encode(&self.key[..])))
    }
}

/// A fresh random key whose id (`k` and 8 hex digits) is none of `existing`'s.
fn new_key(existing: &[FieldKey]) -> Result<FieldKey, KeyringError> {
    loop {
        let id = format!("k{}", hex::encode(*random_bytes::<4>()?));
        if existing.iter().all(|k| k.id != id) {
            return Ok(FieldKey {
                id,
                key: random_bytes::<KEY_BYTES>()?,
            });
        }
    }
}

/// A keyring file's text, after checking on the open file (not the path, which could
/// change in between) that only its owner can read it.
fn read_private(path: &Path) -> Result<Zeroizing<String>, KeyringError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let meta = file.metadata().map_err(io_error(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    // Sized up front so reading does not reallocate and leave unwiped copies behind.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut text = Zeroizing::new(String::with_capacity(capacity));
    file.read_to_string(&mut text).map_err(io_error(path))?;
    Ok(text)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Fail if the target exists, even if it appears after the check.
    Never,
    /// Replace the target.
    Existing,
}

/// Writes `text` to a temporary file (mode 0600) beside `path`, flushes it to disk, and
/// puts it in place in one step, so a crash leaves the old keyring or the new one, never
/// half of one. `Replace::Never` links instead of renaming, which fails rather than
/// replace a file that appeared meanwhile.
fn write_atomically(path: &Path, text: &str, replace: Replace) -> Result<(), KeyringError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| KeyringError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(*random_bytes::<6>()?)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        // Exactly 0600, whatever the umask took away.
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_error(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        match replace {
            Replace::Existing => std::fs::rename(&tmp, path).map_err(io_error(path)),
            Replace::Never => {
                let linked = std::fs::hard_link(&tmp, path);
                let _ = std::fs::remove_file(&tmp);
                linked.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        KeyringError::Exists {
                            path: path.to_path_buf(),
                        }
                    } else {
                        io_error(path)(e)
                    }
                })
            }
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY_A: [u8; KEY_BYTES] = [7; KEY_BYTES];
    const KEY_B: [u8; KEY_BYTES] = [9; KEY_BYTES];

    fn keyring(entries: &[(&str, [u8; KEY_BYTES])]) -> FieldKeyring {
        let text: String = entries
            .iter()
            .map(|(id, key)| format!("{id}:{}\n", STANDARD.encode(key)))
            .collect();
        FieldKeyring::parse(&text, "test").expect("keyring")
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn values_round_trip() {
        let ring = keyring(&[("a", KEY_A)]);
        for plain in [
            "",
            "+44 20 7946 0958",
            "東京都千代田区 1-1; <b>'x'</b>",
            "é\n\t\u{0}",
        ] {
            let stored = ring.encrypt(plain, b"form:1:phone");
            assert!(stored.starts_with("xc1.a."), "{stored}");
            assert!(!stored.contains(plain) || plain.is_empty());
            assert_eq!(
                ring.decrypt(&stored, b"form:1:phone").expect("decrypt"),
                plain
            );
        }
        let once = ring.encrypt("same", b"x");
        let twice = ring.encrypt("same", b"x");
        assert_ne!(once, twice, "a fresh nonce every time");
    }

    #[test]
    fn a_value_does_not_decrypt_in_another_row_or_field() {
        let ring = keyring(&[("a", KEY_A)]);
        let stored = ring.encrypt("1 High Street", b"form:1:address");
        for aad in [&b"form:2:address"[..], b"form:1:phone", b""] {
            assert_eq!(ring.decrypt(&stored, aad), Err(CipherError::Authentication));
        }
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let ring = keyring(&[("a", KEY_A)]);
        let stored = ring.encrypt("+44 20 7946 0958", b"aad");
        for i in 0..stored.len() {
            for flip in [0x01u8, 0x02, 0x20] {
                let mut bytes = stored.clone().into_bytes();
                bytes[i] ^= flip;
                let Ok(altered) = String::from_utf8(bytes) else {
                    continue;
                };
                assert!(
                    ring.decrypt(&altered, b"aad").is_err(),
                    "byte {i} ^ {flip:#x}: {altered}"
                );
            }
        }
        // A value sealed by another key of the same id does not open either.
        let impostor = keyring(&[("a", KEY_B)]).encrypt("x", b"aad");
        assert_eq!(
            ring.decrypt(&impostor, b"aad"),
            Err(CipherError::Authentication)
        );
        // Cut short, or lengthened.
        for cut in 1..8 {
            assert!(ring.decrypt(&stored[..stored.len() - cut], b"aad").is_err());
        }
        assert!(ring.decrypt(&format!("{stored}AAAA"), b"aad").is_err());
    }

    #[test]
    fn malformed_values_and_unknown_keys() {
        let ring = keyring(&[("a", KEY_A)]);
        let stored = keyring(&[("old", KEY_B)]).encrypt("x", b"aad");
        assert_eq!(
            ring.decrypt(&stored, b"aad"),
            Err(CipherError::UnknownKey("old".into()))
        );
        for bad in [
            "",
            "+44 20 7946 0958",
            "xc1",
            "xc1.",
            "xc1.a",
            "xc1.a.",
            "xc1.a.AAAA",
            "xc2.a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "xc1..AAAA",
            "xc1.a b.AAAA",
            "xc1.a.!!!!",
            "xc1.a.AAAA.AAAA",
        ] {
            assert_eq!(
                ring.decrypt(bad, b"aad"),
                Err(CipherError::Malformed),
                "{bad:?}"
            );
            assert!(!ring.needs_reencryption(bad), "{bad:?}");
        }
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("field.keys");
        let first = FieldKeyring::create_file(&path).expect("create");
        let old_id = first.active_key_id().to_string();
        let stored = first.encrypt("+44 20 7946 0958", b"form:1:phone");
        assert!(!first.needs_reencryption(&stored));

        let rotated = FieldKeyring::rotate_file(&path).expect("rotate");
        assert_ne!(rotated.active_key_id(), old_id);
        assert_eq!(rotated.key_ids().nth(1), Some(old_id.as_str()));
        assert_eq!(mode(&path), 0o600);
        let reloaded = FieldKeyring::load_file(&path).expect("load");
        assert_eq!(
            reloaded.key_ids().collect::<Vec<_>>(),
            rotated.key_ids().collect::<Vec<_>>()
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# Yagura"), "comments are kept: {text}");

        for ring in [&rotated, &reloaded] {
            assert_eq!(
                ring.decrypt(&stored, b"form:1:phone").expect("old value"),
                "+44 20 7946 0958"
            );
            assert!(ring.needs_reencryption(&stored));
        }
        let again = reloaded.encrypt(
            &reloaded.decrypt(&stored, b"form:1:phone").expect("decrypt"),
            b"form:1:phone",
        );
        assert!(again.starts_with(&format!("xc1.{}.", reloaded.active_key_id())));
        assert!(!reloaded.needs_reencryption(&again));
        assert_eq!(
            first.decrypt(&again, b"form:1:phone"),
            Err(CipherError::UnknownKey(reloaded.active_key_id().into()))
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, ["field.keys"], "no temporary files left");
    }

    #[test]
    fn create_file_is_private_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("field.keys");
        let ring = FieldKeyring::create_file(&path).expect("create");
        assert_eq!(mode(&path), 0o600);
        let id = ring.active_key_id();
        assert_eq!(id.len(), 9);
        assert!(id.starts_with('k'));
        assert!(id[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        let before = std::fs::read(&path).expect("read");
        assert!(matches!(
            FieldKeyring::create_file(&path),
            Err(KeyringError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&path).expect("read"), before, "untouched");
        let loaded = FieldKeyring::load_file(&path).expect("load");
        let stored = ring.encrypt("x", b"aad");
        assert_eq!(loaded.decrypt(&stored, b"aad").expect("decrypt"), "x");
    }

    #[test]
    fn load_file_refuses_a_readable_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("field.keys");
        std::fs::write(&path, format!("a:{}\n", STANDARD.encode(KEY_A))).expect("write");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        let error = FieldKeyring::load_file(&path).expect_err("too open");
        assert!(matches!(error, KeyringError::TooOpen { mode: 0o644, .. }));
        assert!(error.to_string().contains("chmod 600"), "{error}");
        assert!(error.to_string().contains("0644"), "{error}");
        assert!(matches!(
            FieldKeyring::rotate_file(&path),
            Err(KeyringError::TooOpen { .. })
        ));
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            FieldKeyring::load_file(&path)
                .expect("private")
                .active_key_id(),
            "a"
        );
        assert!(matches!(
            FieldKeyring::load_file(&dir.path().join("missing")),
            Err(KeyringError::Io { .. })
        ));
    }

    #[test]
    fn parse_errors_name_origin_and_line() {
        let good = STANDARD.encode(KEY_A);
        let short = STANDARD.encode([1u8; 31]);
        let cases = [
            (format!("# keys\n\nnew:{good}\nold:not base64!\n"), 4),
            (format!("a:{short}\n"), 1),
            (format!("a:{good}\nbad.id:{good}\n"), 2),
            (format!("{}:{good}\n", "x".repeat(33)), 1),
            (format!(":{good}\n"), 1),
            (format!("a:{good}\n# again\na:{good}\n"), 3),
            (good.clone(), 1),
            ("# only a comment\n\n".to_string(), 2),
            (String::new(), 1),
        ];
        for (text, line) in cases {
            let error = FieldKeyring::parse(&text, "keys.txt").expect_err(&text);
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("keys.txt:{line}: ")),
                "{text:?}: {message}"
            );
            assert!(!message.contains(&good), "no key material: {message}");
        }
        let ring = FieldKeyring::parse(
            &format!(
                "  # comment\n new : {good} \n\nold:{}\n",
                STANDARD.encode(KEY_B)
            ),
            "keys.txt",
        )
        .expect("spaces around the parts are fine");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["new", "old"]);
    }

    #[test]
    fn environment_values_may_use_semicolons() {
        let value = format!(
            "new:{};old:{}",
            STANDARD.encode(KEY_B),
            STANDARD.encode(KEY_A)
        );
        let ring = FieldKeyring::from_env_value(&value).expect("env");
        assert_eq!(ring.active_key_id(), "new");
        let stored = keyring(&[("old", KEY_A)]).encrypt("x", b"aad");
        assert_eq!(ring.decrypt(&stored, b"aad").expect("old key"), "x");
        let error = FieldKeyring::from_env_value(&format!("new:{};oops", STANDARD.encode(KEY_B)))
            .expect_err("bad entry");
        assert!(error.to_string().starts_with("environment:2: "), "{error}");
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let ring = keyring(&[("new", KEY_B), ("old", KEY_A)]);
        let shown = format!("{ring:?}");
        assert!(shown.contains("new") && shown.contains("old"), "{shown}");
        for key in [KEY_A, KEY_B] {
            assert!(!shown.contains(&STANDARD.encode(key)), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &key[..4])), "{shown}");
        }
    }

    proptest! {
        /// Whatever is stored in the database, decrypting it returns, never panics.
        #[test]
        fn decrypt_never_panics(
            stored in prop_oneof![
                ".{0,200}",
                "xc1\\.(a|b|zz|)\\.[A-Za-z0-9_=+/-]{0,120}",
                "xc1\\.a\\.[A-Za-z0-9_-]{54,60}",
            ],
            aad in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let ring = keyring(&[("a", KEY_A), ("b", KEY_B)]);
            let _ = ring.decrypt(&stored, &aad);
            let _ = ring.needs_reencryption(&stored);
        }
    }
}
