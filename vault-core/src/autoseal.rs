//! Auto seal: the unseal key wrapped by something outside the vault's own stores, so that a
//! node unseals itself at start instead of waiting for a threshold of operators.
//!
//! The vault keeps the root key sealed under its unseal key as always; with an auto seal the
//! unseal key itself is not split into shares but wrapped by the seal (another vault's named
//! key, over gRPC with TLS: `vault_client::TransitSeal`; or, for tests only, a key in a file:
//! [`FileSeal`]), and the wrapped form is kept in the seal configuration. The Shamir shares
//! become *recovery shares*: a threshold of them proves the operators agree (rekey,
//! generate-root, seal migration, unsealing again after an operator sealed), but they open
//! nothing in the current key store. Whoever holds the key store alone holds neither the unseal
//! key nor anything that opens it without the seal.
//!
//! A migration from Shamir keeps the shares (they become recovery shares, as in Vault), so a
//! copy of the key store from before the migration (a key backup, a disk snapshot) still opens
//! with a threshold of them; a rekey of the recovery shares after the migration ends that for
//! the shares, not for the copies.
//!
//! Every wrap binds the unseal key's version: a wrapped key from another configuration does
//! not unwrap as this one's.

use ring::digest;

use crate::{
    crypto::{self, Context, KeyKind, KeyRef, Purpose},
    error::{Error, Result},
    secret::SecretKey,
};

/// What wraps and unwraps the unseal key. Implementations name themselves (never by a key) and
/// report failures as [`Error::SealUnavailable`] naming the seal.
pub trait AutoSeal: Send + Sync {
    /// `transit` or `danger-file`, as `--seal` says.
    fn kind(&self) -> &'static str;
    /// What identifies the wrapping key (a transit seal's tenant and key name, a file key's
    /// fingerprint), kept with the wrapped key: a server started with another seal is told so
    /// instead of failing to unwrap.
    fn id(&self) -> String;
    /// Wraps `key`, the unseal key of version `version`.
    fn wrap(&self, key: &SecretKey, version: u32) -> Result<String>;
    /// Unwraps what [`AutoSeal::wrap`] made for `version`.
    fn unwrap(&self, wrapped: &str, version: u32) -> Result<SecretKey>;
}

/// Wraps `key` with `seal` and unwraps the result again, so that nothing is committed that
/// the seal cannot open later (a token that may encrypt but not decrypt, a key that does not
/// round-trip): with an auto seal, a wrapped unseal key that does not unwrap would leave the
/// vault unable to unseal at its next start.
pub fn wrap_checked(seal: &dyn AutoSeal, key: &SecretKey, version: u32) -> Result<String> {
    use subtle::ConstantTimeEq;
    let wrapped = seal.wrap(key, version)?;
    let back = seal.unwrap(&wrapped, version).map_err(|error| {
        Error::SealUnavailable(format!(
            "the {} seal wrapped the unseal key but cannot unwrap it again ({error}); nothing \
             was changed (can its token decrypt as well as encrypt?)",
            seal.kind()
        ))
    })?;
    if !bool::from(back.expose_secret().ct_eq(key.expose_secret())) {
        return Err(Error::SealUnavailable(format!(
            "the {} seal returned another key than the one it wrapped; nothing was changed",
            seal.kind()
        )));
    }
    Ok(wrapped)
}

/// The context a wrapped unseal key binds.
const UNSEAL_KEY_PATH: &str = "unseal-key";

fn unseal_key_context(version: u32) -> Context<'static> {
    Context {
        purpose: Purpose::UnsealKey,
        tenant: None,
        path: UNSEAL_KEY_PATH,
        version: u64::from(version),
    }
}

/// A seal whose key is 32 bytes (64 hex digits) in a file: `--danger-seal-key-file`. Anyone
/// who can read the file and the key store has every key, so it is for tests only.
pub struct FileSeal {
    key: SecretKey,
    fingerprint: String,
}

impl FileSeal {
    /// Reads the key from `path` (64 hex digits, surrounding whitespace ignored).
    pub fn from_file(path: &std::path::Path) -> Result<FileSeal> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "danger_seal_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?);
        let bytes = zeroize::Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
            Error::invalid(
                "danger_seal_key_file",
                format!("{} does not hold 64 hex digits", path.display()),
            )
        })?);
        let key = SecretKey::from_bytes(bytes).ok_or_else(|| {
            Error::invalid(
                "danger_seal_key_file",
                format!(
                    "{} must hold 32 bytes (64 hex digits), e.g. from `openssl rand -hex 32`",
                    path.display()
                ),
            )
        })?;
        let mut fingerprint = digest::Context::new(&digest::SHA256);
        fingerprint.update(b"vault.file-seal.fingerprint.v1");
        fingerprint.update(key.expose_secret());
        let fingerprint = hex::encode(&fingerprint.finish().as_ref()[..8]);
        Ok(FileSeal { key, fingerprint })
    }
}

impl AutoSeal for FileSeal {
    fn kind(&self) -> &'static str {
        "danger-file"
    }

    fn id(&self) -> String {
        format!("file key {}", self.fingerprint)
    }

    fn wrap(&self, key: &SecretKey, version: u32) -> Result<String> {
        use base64::Engine;
        let sealed = crypto::seal(
            &self.key,
            KeyRef {
                kind: KeyKind::SealKey,
                version: 1,
            },
            &unseal_key_context(version),
            key.expose_secret(),
        )?;
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    fn unwrap(&self, wrapped: &str, version: u32) -> Result<SecretKey> {
        use base64::Engine;
        let refused = || {
            Error::SealUnavailable(format!(
                "the {} does not open the wrapped unseal key (version {version})",
                self.id()
            ))
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(wrapped)
            .map_err(|_| refused())?;
        let bytes = crypto::open(&self.key, &unseal_key_context(version), &blob, &|| {
            "the wrapped unseal key".into()
        })
        .map_err(|_| refused())?;
        SecretKey::from_bytes(bytes).ok_or_else(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_in(dir: &tempfile::TempDir, hex_key: &str) -> Result<FileSeal> {
        let path = dir.path().join("seal.key");
        std::fs::write(&path, hex_key).map_err(|e| Error::invalid("test", e.to_string()))?;
        FileSeal::from_file(&path)
    }

    #[test]
    fn file_seal_wraps_and_binds_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seal = seal_in(&dir, &format!("{}\n", "ab".repeat(32))).expect("seal");
        let key = SecretKey::generate().expect("key");
        let wrapped = seal.wrap(&key, 3).expect("wrap");
        let back = seal.unwrap(&wrapped, 3).expect("unwrap");
        assert_eq!(back.expose_secret(), key.expose_secret());
        assert!(matches!(
            seal.unwrap(&wrapped, 4),
            Err(Error::SealUnavailable(_))
        ));
        let other = seal_in(&dir, &"cd".repeat(32)).expect("other seal");
        assert_ne!(other.id(), seal.id());
        assert!(matches!(
            other.unwrap(&wrapped, 3),
            Err(Error::SealUnavailable(_))
        ));
    }

    #[test]
    fn file_seal_refuses_a_bad_file_naming_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "xyz", &"ab".repeat(16)] {
            let error = seal_in(&dir, bad).err().expect("refused").to_string();
            assert!(error.contains("danger_seal_key_file"), "{error}");
        }
    }
}
