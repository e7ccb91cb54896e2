//! The cryptography of named keys (encryption as a service): key types, key generation, the
//! AEADs, signatures and MACs, what every ciphertext binds, and the printable `vault:vN:` form.
//!
//! Invariants:
//! - Nonces come only from [`crate::crypto::random_nonce`] (the OS CSPRNG); no function here
//!   takes one from a caller.
//! - Every ciphertext binds, as associated data: a domain string, the tenant id, the key's name,
//!   its version and type, and the caller's encryption context. A ciphertext presented with
//!   another context, under another key, version or tenant fails to open.
//! - Key material is held in [`SecretBytes`] (zeroized on drop). ring's signing key pairs are
//!   built from it for one operation and dropped; their expanded state is not zeroized (see
//!   [`crate::secret`]).
//!
//! Ciphertext body (inside the base64 of `vault:vN:...`): nonce (12 bytes, 24 for XChaCha20),
//! ciphertext, 16-byte tag.

use std::collections::{BTreeMap, BTreeSet};

use aes_gcm::{
    Aes256Gcm,
    aead::{AeadInOut, KeyInit, Nonce, Tag},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use ring::{
    rand::SystemRandom,
    signature::{
        self, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        UnparsedPublicKey,
    },
};
use zeroize::Zeroizing;

use crate::{
    crypto::random_nonce,
    error::{Error, Result},
    names::TenantId,
    secret::{KEY_LEN, SecretBytes},
};

/// Domain separation for the associated data of named-key ciphertexts.
const AAD_DOMAIN: &[u8] = b"vault.kms.v1";
const TAG_LEN: usize = 16;
/// Most entries in one encryption context, and most bytes of its names and values together.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
pub const MAX_CONTEXT_BYTES: usize = 4096;
/// Longest key name.
pub const MAX_KEY_NAME_LEN: usize = 128;

/// The types of named keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Aes256Gcm,
    ChaCha20Poly1305,
    XChaCha20Poly1305,
    Ed25519,
    EcdsaP256,
    HmacSha256,
}

/// What a key type is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Encryption,
    Signing,
    Mac,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::Aes256Gcm,
        KeyType::ChaCha20Poly1305,
        KeyType::XChaCha20Poly1305,
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::HmacSha256,
    ];

    /// Parses a type name; empty is the default, `aes256-gcm`.
    pub fn parse(text: &str) -> Result<KeyType> {
        if text.is_empty() {
            return Ok(KeyType::Aes256Gcm);
        }
        KeyType::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| {
                Error::invalid(
                    "type",
                    format!(
                        "unknown key type {text:?} (aes256-gcm, chacha20-poly1305, \
                         xchacha20-poly1305, ed25519, ecdsa-p256, hmac-sha256)"
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm => "aes256-gcm",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::XChaCha20Poly1305 => "xchacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::HmacSha256 => "hmac-sha256",
        }
    }

    pub fn usage(self) -> Usage {
        match self {
            KeyType::Aes256Gcm | KeyType::ChaCha20Poly1305 | KeyType::XChaCha20Poly1305 => {
                Usage::Encryption
            }
            KeyType::Ed25519 | KeyType::EcdsaP256 => Usage::Signing,
            KeyType::HmacSha256 => Usage::Mac,
        }
    }

    /// Whether the type uses random 96-bit nonces, so that a version must stop at an invocation
    /// budget (NIST SP 800-38D's 2^32 bound applies to ChaCha20-Poly1305 with random 96-bit
    /// nonces just the same). XChaCha20's 192-bit nonces make collisions negligible.
    pub fn needs_budget(self) -> bool {
        matches!(self, KeyType::Aes256Gcm | KeyType::ChaCha20Poly1305)
    }

    fn nonce_len(self) -> usize {
        match self {
            KeyType::XChaCha20Poly1305 => 24,
            _ => 12,
        }
    }

    fn byte(self) -> u8 {
        match self {
            KeyType::Aes256Gcm => 1,
            KeyType::ChaCha20Poly1305 => 2,
            KeyType::XChaCha20Poly1305 => 3,
            KeyType::Ed25519 => 4,
            KeyType::EcdsaP256 => 5,
            KeyType::HmacSha256 => 6,
        }
    }
}

/// A named key's name: 1 to 128 of `A-Z a-z 0-9 - _ .`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(name: &str) -> Result<KeyName> {
        let field = "key";
        if name.is_empty() || name.len() > MAX_KEY_NAME_LEN {
            return Err(Error::invalid(
                field,
                format!("must be 1 to {MAX_KEY_NAME_LEN} bytes"),
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Error::invalid(
                field,
                "may contain only A-Z, a-z, 0-9, '-', '_' and '.'",
            ));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(Error::invalid(field, "must start with a letter or digit"));
        }
        Ok(KeyName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path policies match for this key: `keys/<name>`.
    pub fn policy_path(&self) -> String {
        format!("keys/{}", self.0)
    }
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller's encryption context: name/value pairs bound to a ciphertext as associated data
/// (like an AWS KMS encryption context). Decryption must present the same pairs. Names marked
/// sensitive keep their values out of the audit log and out of Debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext {
    entries: BTreeMap<String, String>,
    sensitive: BTreeSet<String>,
}

impl EncryptionContext {
    /// Validates a context; `field` names it in errors (e.g. `items[3].context`).
    pub fn new(
        field: &str,
        entries: impl IntoIterator<Item = (String, String)>,
        sensitive: impl IntoIterator<Item = String>,
    ) -> Result<EncryptionContext> {
        let entries: BTreeMap<String, String> = entries.into_iter().collect();
        let invalid = |reason: String| Error::invalid("context", format!("{field}: {reason}"));
        if entries.len() > MAX_CONTEXT_ENTRIES {
            return Err(invalid(format!(
                "{} entries, over the limit of {MAX_CONTEXT_ENTRIES}",
                entries.len()
            )));
        }
        let size: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_CONTEXT_BYTES {
            return Err(invalid(format!(
                "{size} bytes of names and values, over the limit of {MAX_CONTEXT_BYTES}"
            )));
        }
        if let Some(name) = entries.keys().find(|k| k.is_empty()) {
            return Err(invalid(format!("empty name {name:?}")));
        }
        let sensitive: BTreeSet<String> = sensitive.into_iter().collect();
        if let Some(name) = sensitive.iter().find(|s| !entries.contains_key(*s)) {
            return Err(invalid(format!(
                "sensitive name {name:?} is not a name of the context"
            )));
        }
        Ok(EncryptionContext { entries, sensitive })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn append_to(&self, aad: &mut Vec<u8>) {
        aad.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (name, value) in &self.entries {
            aad.extend_from_slice(&(name.len() as u32).to_be_bytes());
            aad.extend_from_slice(name.as_bytes());
            aad.extend_from_slice(&(value.len() as u32).to_be_bytes());
            aad.extend_from_slice(value.as_bytes());
        }
    }

    /// What the audit record may say: every name, and the values not marked sensitive.
    pub fn audit_summary(&self) -> String {
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(name, value)| {
                if self.sensitive.contains(name) {
                    format!("{name:?}=(sensitive)")
                } else {
                    format!("{name:?}={value:?}")
                }
            })
            .collect();
        parts.join(", ")
    }
}

impl std::fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.audit_summary())
    }
}

/// Everything a named-key ciphertext is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub tenant: TenantId,
    pub key: &'a KeyName,
    pub version: u32,
    pub key_type: KeyType,
    pub context: &'a EncryptionContext,
}

fn associated_data(binding: &Binding<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + binding.key.as_str().len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(binding.tenant.to_hex().as_bytes());
    aad.extend_from_slice(&(binding.key.as_str().len() as u32).to_be_bytes());
    aad.extend_from_slice(binding.key.as_str().as_bytes());
    aad.extend_from_slice(&binding.version.to_be_bytes());
    aad.push(binding.key_type.byte());
    binding.context.append_to(&mut aad);
    aad
}

/// Fresh key material: 32 random bytes for symmetric types, a PKCS#8 document for signing types.
pub fn generate(key_type: KeyType) -> Result<SecretBytes> {
    let rng = SystemRandom::new();
    match key_type {
        KeyType::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|doc| SecretBytes::new(doc.as_ref().to_vec()))
            .map_err(|_| Error::Rng),
        KeyType::EcdsaP256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map(|doc| SecretBytes::new(doc.as_ref().to_vec()))
            .map_err(|_| Error::Rng),
        _ => {
            let mut bytes = vec![0u8; KEY_LEN];
            getrandom::fill(&mut bytes).map_err(|_| Error::Rng)?;
            Ok(SecretBytes::new(bytes))
        }
    }
}

fn bad_material() -> Error {
    Error::Integrity("a named key's material".into())
}

/// The public key of a signing key (raw: 32 bytes for Ed25519, the uncompressed SEC1 point for
/// ECDSA P-256); `None` for other types.
pub fn public_key(key_type: KeyType, material: &SecretBytes) -> Result<Option<Vec<u8>>> {
    Ok(match key_type {
        KeyType::Ed25519 => Some(
            Ed25519KeyPair::from_pkcs8(material.expose_secret())
                .map_err(|_| bad_material())?
                .public_key()
                .as_ref()
                .to_vec(),
        ),
        KeyType::EcdsaP256 => Some(
            EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                material.expose_secret(),
                &SystemRandom::new(),
            )
            .map_err(|_| bad_material())?
            .public_key()
            .as_ref()
            .to_vec(),
        ),
        _ => None,
    })
}

/// A raw public key as a PEM SubjectPublicKeyInfo (what OpenSSL and most libraries read).
pub fn public_key_pem(key_type: KeyType, raw: &[u8]) -> Option<String> {
    // The fixed DER prefixes of SubjectPublicKeyInfo for these two key types (RFC 8410, RFC 5480).
    const ED25519_SPKI: &[u8] = &[
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    const P256_SPKI: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let prefix = match (key_type, raw.len()) {
        (KeyType::Ed25519, 32) => ED25519_SPKI,
        (KeyType::EcdsaP256, 65) => P256_SPKI,
        _ => return None,
    };
    let der = [prefix, raw].concat();
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    Some(format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    ))
}

fn seal_with<C: KeyInit + AeadInOut>(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let cipher = C::new_from_slice(key).map_err(|_| bad_material())?;
    let nonce_array = Nonce::<C>::try_from(nonce).map_err(|_| bad_material())?;
    let mut out = Vec::with_capacity(nonce.len() + plaintext.len() + TAG_LEN);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(&nonce_array, aad, (&mut out[nonce.len()..]).into())
        .map_err(|_| Error::invalid("plaintext", "too large for the cipher"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn open_with<C: KeyInit + AeadInOut>(
    key: &[u8],
    nonce_len: usize,
    aad: &[u8],
    body: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if body.len() < nonce_len + TAG_LEN {
        return None;
    }
    let cipher = C::new_from_slice(key).ok()?;
    let (nonce, rest) = body.split_at(nonce_len);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = Nonce::<C>::try_from(nonce).ok()?;
    let tag = Tag::<C>::try_from(tag).ok()?;
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
        .ok()?;
    Some(plaintext)
}

/// Encrypts under an encryption key's version, with a fresh random nonce; returns nonce,
/// ciphertext and tag.
pub fn encrypt(material: &SecretBytes, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
    let aad = associated_data(binding);
    let key = material.expose_secret();
    match binding.key_type {
        KeyType::Aes256Gcm => seal_with::<Aes256Gcm>(key, &random_nonce::<12>()?, &aad, plaintext),
        KeyType::ChaCha20Poly1305 => {
            seal_with::<ChaCha20Poly1305>(key, &random_nonce::<12>()?, &aad, plaintext)
        }
        KeyType::XChaCha20Poly1305 => {
            seal_with::<XChaCha20Poly1305>(key, &random_nonce::<24>()?, &aad, plaintext)
        }
        other => Err(Error::invalid(
            "key",
            format!("a {} key cannot encrypt", other.as_str()),
        )),
    }
}

/// Opens what [`encrypt`] made; `None` if it was tampered with, truncated, or made under another
/// key, version, tenant or context.
pub fn decrypt(
    material: &SecretBytes,
    binding: &Binding<'_>,
    body: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let aad = associated_data(binding);
    let key = material.expose_secret();
    let nonce_len = binding.key_type.nonce_len();
    match binding.key_type {
        KeyType::Aes256Gcm => open_with::<Aes256Gcm>(key, nonce_len, &aad, body),
        KeyType::ChaCha20Poly1305 => open_with::<ChaCha20Poly1305>(key, nonce_len, &aad, body),
        KeyType::XChaCha20Poly1305 => open_with::<XChaCha20Poly1305>(key, nonce_len, &aad, body),
        _ => None,
    }
}

/// Signs `message` (Ed25519; ECDSA P-256 with SHA-256, DER-encoded signature).
pub fn sign(key_type: KeyType, material: &SecretBytes, message: &[u8]) -> Result<Vec<u8>> {
    match key_type {
        KeyType::Ed25519 => Ok(Ed25519KeyPair::from_pkcs8(material.expose_secret())
            .map_err(|_| bad_material())?
            .sign(message)
            .as_ref()
            .to_vec()),
        KeyType::EcdsaP256 => {
            let rng = SystemRandom::new();
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                material.expose_secret(),
                &rng,
            )
            .map_err(|_| bad_material())?;
            pair.sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| Error::Rng)
        }
        other => Err(Error::invalid(
            "key",
            format!("a {} key cannot sign", other.as_str()),
        )),
    }
}

/// Whether `signature` is a valid signature of `message` under the raw `public_key`.
pub fn verify(key_type: KeyType, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let algorithm: &dyn signature::VerificationAlgorithm = match key_type {
        KeyType::Ed25519 => &signature::ED25519,
        KeyType::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
        _ => return false,
    };
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, signature)
        .is_ok()
}

/// HMAC-SHA256 of `message`.
pub fn hmac(material: &SecretBytes, message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material.expose_secret());
    ring::hmac::sign(&key, message).as_ref().to_vec()
}

/// Whether `tag` is the HMAC-SHA256 of `message` (compared in constant time).
pub fn hmac_verify(material: &SecretBytes, message: &[u8], tag: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material.expose_secret());
    ring::hmac::verify(&key, message, tag).is_ok()
}

/// The printable form of a ciphertext, signature or MAC: `vault:v<version>:<base64>`.
pub fn format_versioned(version: u32, body: &[u8]) -> String {
    format!("vault:v{version}:{}", STANDARD.encode(body))
}

/// Parses [`format_versioned`]; `field` names the request field in errors.
pub fn parse_versioned(field: &'static str, text: &str) -> Result<(u32, Vec<u8>)> {
    let malformed = || {
        Error::invalid(
            field,
            "must look like vault:v<version>:<base64> (as encrypt, sign or hmac returned it)",
        )
    };
    let rest = text.strip_prefix("vault:v").ok_or_else(malformed)?;
    let (version, body) = rest.split_once(':').ok_or_else(malformed)?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let version: u32 = version.parse().map_err(|_| malformed())?;
    if version == 0 {
        return Err(Error::invalid(field, "key version 0 does not exist"));
    }
    let body = STANDARD
        .decode(body.trim_end())
        .map_err(|_| Error::invalid(field, "the part after vault:vN: is not base64"))?;
    Ok((version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(byte: u8) -> TenantId {
        TenantId::parse_hex(&hex::encode([byte; 8])).expect("tenant id")
    }

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(
            "context",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Vec::new(),
        )
        .expect("context")
    }

    const ENCRYPTION: [KeyType; 3] = [
        KeyType::Aes256Gcm,
        KeyType::ChaCha20Poly1305,
        KeyType::XChaCha20Poly1305,
    ];

    #[test]
    fn every_aead_round_trips_and_binds_everything() {
        let name = KeyName::parse("orders").expect("name");
        let other_name = KeyName::parse("orders2").expect("name");
        let ctx = context(&[("table", "orders"), ("row", "7")]);
        let other_ctx = context(&[("table", "orders"), ("row", "8")]);
        let empty = EncryptionContext::default();
        for key_type in ENCRYPTION {
            let material = generate(key_type).expect("key");
            let binding = Binding {
                tenant: tenant(1),
                key: &name,
                version: 3,
                key_type,
                context: &ctx,
            };
            let body = encrypt(&material, &binding, b"card 4111").expect("encrypt");
            assert_eq!(body.len(), key_type.nonce_len() + 9 + TAG_LEN);
            assert_eq!(
                decrypt(&material, &binding, &body)
                    .expect("opens")
                    .as_slice(),
                b"card 4111"
            );
            assert_ne!(
                body,
                encrypt(&material, &binding, b"card 4111").expect("again")
            );
            let moved = [
                Binding {
                    tenant: tenant(2),
                    ..binding
                },
                Binding {
                    key: &other_name,
                    ..binding
                },
                Binding {
                    version: 4,
                    ..binding
                },
                Binding {
                    context: &other_ctx,
                    ..binding
                },
                Binding {
                    context: &empty,
                    ..binding
                },
            ];
            for moved in moved {
                assert!(decrypt(&material, &moved, &body).is_none(), "{moved:?}");
            }
            assert!(decrypt(&generate(key_type).expect("key"), &binding, &body).is_none());
            for byte in 0..body.len() {
                let mut tampered = body.clone();
                tampered[byte] ^= 0x01;
                assert!(
                    decrypt(&material, &binding, &tampered).is_none(),
                    "byte {byte}"
                );
            }
            for length in 0..body.len() {
                assert!(decrypt(&material, &binding, &body[..length]).is_none());
            }
        }
    }

    #[test]
    fn a_ciphertext_of_one_type_does_not_open_as_another() {
        let name = KeyName::parse("k").expect("name");
        let ctx = EncryptionContext::default();
        let material = generate(KeyType::ChaCha20Poly1305).expect("key");
        let binding = Binding {
            tenant: tenant(1),
            key: &name,
            version: 1,
            key_type: KeyType::ChaCha20Poly1305,
            context: &ctx,
        };
        let body = encrypt(&material, &binding, b"x").expect("encrypt");
        let as_aes = Binding {
            key_type: KeyType::Aes256Gcm,
            ..binding
        };
        assert!(decrypt(&material, &as_aes, &body).is_none());
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        for key_type in [KeyType::Ed25519, KeyType::EcdsaP256] {
            let material = generate(key_type).expect("key");
            let public = public_key(key_type, &material)
                .expect("public key")
                .expect("signing key");
            let signature = sign(key_type, &material, b"release 1.2.3").expect("sign");
            assert!(verify(key_type, &public, b"release 1.2.3", &signature));
            assert!(!verify(key_type, &public, b"release 1.2.4", &signature));
            let other = public_key(key_type, &generate(key_type).expect("key"))
                .expect("public key")
                .expect("signing key");
            assert!(!verify(key_type, &other, b"release 1.2.3", &signature));
            let pem = public_key_pem(key_type, &public).expect("pem");
            assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        }
        assert!(
            sign(
                KeyType::Aes256Gcm,
                &generate(KeyType::Aes256Gcm).expect("key"),
                b"m"
            )
            .is_err()
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_and_verifies_in_constant_time() {
        // RFC 4231 test case 2.
        let key = SecretBytes::new(b"Jefe".to_vec());
        let tag = hmac(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_verify(&key, b"what do ya want for nothing?", &tag));
        assert!(!hmac_verify(&key, b"what do ya want for nothing!", &tag));
        assert!(!hmac_verify(
            &key,
            b"what do ya want for nothing?",
            &tag[..31]
        ));
    }

    #[test]
    fn printable_form_round_trips_and_names_the_field() {
        let text = format_versioned(12, b"\x00\x01abc");
        assert!(text.starts_with("vault:v12:"));
        assert_eq!(
            parse_versioned("ciphertext", &text).expect("parse"),
            (12, b"\x00\x01abc".to_vec())
        );
        for bad in [
            "",
            "vault:v:AA==",
            "vault:vx:AA==",
            "vault:v1",
            "v1:AA==",
            "vault:v1:%%",
            "vault:v0:AA==",
        ] {
            let error = parse_versioned("ciphertext", bad)
                .expect_err(bad)
                .to_string();
            assert!(error.starts_with("invalid ciphertext:"), "{bad}: {error}");
        }
    }

    #[test]
    fn context_limits_and_audit_summary() {
        let ctx = EncryptionContext::new(
            "context",
            [
                ("user".to_string(), "alice".to_string()),
                ("ssn".to_string(), "123".to_string()),
            ],
            ["ssn".to_string()],
        )
        .expect("context");
        assert_eq!(ctx.audit_summary(), r#""ssn"=(sensitive), "user"="alice""#);
        assert!(!format!("{ctx:?}").contains("123"));
        let too_many = (0..=MAX_CONTEXT_ENTRIES).map(|i| (format!("k{i}"), String::new()));
        assert!(
            EncryptionContext::new("items[2].context", too_many, Vec::new())
                .expect_err("too many")
                .to_string()
                .contains("items[2].context")
        );
        let unknown = EncryptionContext::new("context", Vec::new(), ["x".to_string()]);
        assert!(unknown.is_err());
        assert!(KeyName::parse("a/b").is_err());
        assert!(KeyName::parse("-a").is_err());
        assert_eq!(
            KeyName::parse("orders.v2").expect("name").policy_path(),
            "keys/orders.v2"
        );
    }
}
