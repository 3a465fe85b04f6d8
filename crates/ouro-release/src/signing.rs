//! The instance's release signing key: Ed25519, generated on first use and kept in
//! `DATA_DIR/keys/release-signing.key` (the 32-byte secret seed as hex, mode 0600). The file is
//! created atomically (written to a temporary file, then linked into place without replacing
//! anything), so two servers starting at once agree on one key and an existing key is never
//! overwritten. A key file that cannot be read or parsed is an error, never a reason to make a
//! new key: bundles signed before must stay verifiable against the published public key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer};
use ouro_core::{ErrorCode, OuroError};
use rand::RngCore;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// Where the key lives under the data dir.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("release-signing.key")
}

fn unavailable(path: &Path, why: impl std::fmt::Display) -> OuroError {
    tracing::error!(path = %path.display(), error = %why, "release signing key unavailable");
    OuroError::new(
        ErrorCode::ReleaseSigningKeyUnavailable,
        format!("the release signing key (DATA_DIR/keys/release-signing.key) is unusable: {why}"),
    )
}

/// Parses the key file's text: 64 hex digits (surrounding whitespace ignored).
pub fn parse_key_file(text: &str) -> Result<SigningKey, String> {
    let t = text.trim();
    let bytes = hex::decode(t).map_err(|_| "the key file is not hex".to_string())?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the key file does not hold 32 bytes".to_string())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads the signing key, creating it first when the file does not exist.
pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, OuroError> {
    let path = key_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(text) => return parse_key_file(&text).map_err(|e| unavailable(&path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unavailable(&path, e)),
    }
    match create(&path) {
        Ok(key) => Ok(key),
        // Another process created it in between: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(|e| unavailable(&path, e))?;
            parse_key_file(&text).map_err(|e| unavailable(&path, e))
        }
        Err(e) => Err(unavailable(&path, e)),
    }
}

/// Makes a new key and links it into place; `AlreadyExists` when a key file is there.
fn create(path: &Path) -> io::Result<SigningKey> {
    let dir = path.parent().expect("key path has a parent");
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let mut seed = [0u8; 32];
    // ThreadRng: a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    // NamedTempFile is created with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    writeln!(tmp, "{}", hex::encode(seed))?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(key)
}

/// The public key as 64 lowercase hex digits.
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

/// Signs `bytes`: the signature as 128 lowercase hex digits.
pub fn sign_hex(key: &SigningKey, bytes: &[u8]) -> String {
    hex::encode(key.sign(bytes).to_bytes())
}

/// Parses a public key given as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "the public key is not hex".to_string())?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the public key is not 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&arr).map_err(|_| "not a valid Ed25519 public key".to_string())
}

/// Checks a hex signature of `bytes` against `key`.
pub fn verify_hex(key: &VerifyingKey, bytes: &[u8], sig_hex: &str) -> bool {
    let Ok(raw) = hex::decode(sig_hex.trim()) else {
        return false;
    };
    let Ok(arr) = <[u8; 64]>::try_from(raw.as_slice()) else {
        return false;
    };
    key.verify_strict(bytes, &Signature::from_bytes(&arr))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(public_key_hex(&a), public_key_hex(&b));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sig = sign_hex(&a, b"hello");
        let pk = parse_public_key(&public_key_hex(&a)).unwrap();
        assert!(verify_hex(&pk, b"hello", &sig));
        assert!(!verify_hex(&pk, b"hellO", &sig));
    }

    #[test]
    fn a_broken_key_file_is_an_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "not a key").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ReleaseSigningKeyUnavailable);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key");
    }
}
