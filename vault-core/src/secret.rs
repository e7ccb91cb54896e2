//! Types that hold keys, shares, tokens and secret values.
//!
//! Invariant: none of these implements Debug, Display, Clone or Serialize (checked at compile
//! time below), all of them zeroize their memory on drop, and their bytes are read only through
//! an explicit `expose_secret()`. [`crate::shamir::UnsealShare`] and [`crate::token::Token`]
//! follow the same rule and are in the same compile-time assertion.
//!
//! What does not zeroize (honestly): ring's HMAC key (token hashing) and Ed25519 key pair
//! (audit checkpoints) keep their expanded state in ring's own types, which do not zeroize on
//! drop; they are dropped on seal. ring's key pairs and HMAC keys built for one named-key
//! operation are dropped at the end of the call, also without zeroizing. Buffers owned by the
//! transport do not zeroize either: tonic and prost decode request bytes into `Vec<u8>`s that
//! the server moves (not copies) into [`SecretBytes`], but the HTTP/2 receive buffers and the
//! encoded response are freed without zeroization. The CLI's copies live for one command.

use std::collections::BTreeMap;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Length of every symmetric key in the hierarchy (AES-256).
pub const KEY_LEN: usize = 32;

/// A 256-bit symmetric key: the unseal key, the root key, a KEK version or a DEK.
///
/// Boxed so that moving the key does not leave copies of it on the stack.
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut key = Box::new([0u8; KEY_LEN]);
        getrandom::fill(key.as_mut_slice()).map_err(|_| Error::Rng)?;
        Ok(SecretKey(key))
    }

    /// Takes a key from a buffer of exactly [`KEY_LEN`] bytes; the buffer is zeroized either way.
    pub fn from_bytes(mut bytes: Zeroizing<Vec<u8>>) -> Option<Self> {
        let key = (bytes.len() == KEY_LEN).then(|| {
            // Copied straight into the heap: no stack copy of the key is left behind.
            let mut key = Box::new([0u8; KEY_LEN]);
            key.copy_from_slice(&bytes);
            SecretKey(key)
        });
        bytes.zeroize();
        key
    }

    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Arbitrary secret bytes: a secret field's value, a share, a plaintext blob.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields of one secret version: field name (not secret) to value (secret).
///
/// All fields of a version are sealed together as one blob, so fields cannot be swapped between
/// versions or secrets.
#[derive(Default)]
pub struct SecretData {
    fields: BTreeMap<String, SecretBytes>,
}

impl SecretData {
    pub fn new() -> Self {
        SecretData::default()
    }

    pub fn insert(&mut self, name: String, value: SecretBytes) {
        self.fields.insert(name, value);
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Field names with their values.
    pub fn expose_secret(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose_secret()))
    }

    /// Takes the fields out, name by name (for handing to a transport that owns its buffers).
    pub fn into_fields(self) -> impl Iterator<Item = (String, SecretBytes)> {
        self.fields.into_iter()
    }

    /// The canonical plaintext encoding that is sealed: for each field in name order,
    /// u32 name length, name, u32 value length, value (big-endian lengths).
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let size: usize = self
            .fields
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum();
        let mut out = Zeroizing::new(Vec::with_capacity(4 + size));
        out.extend_from_slice(&(self.fields.len() as u32).to_be_bytes());
        for (name, value) in &self.fields {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.expose_secret());
        }
        out
    }

    /// Inverse of [`SecretData::encode`]; `None` if the bytes are not such an encoding.
    pub(crate) fn decode(bytes: &[u8]) -> Option<SecretData> {
        fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if input.len() < n {
                return None;
            }
            let (head, tail) = input.split_at(n);
            *input = tail;
            Some(head)
        }
        fn take_len(input: &mut &[u8]) -> Option<usize> {
            let raw = take(input, 4)?;
            Some(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
        }
        let mut input = bytes;
        let count = take_len(&mut input)?;
        let mut data = SecretData::new();
        for _ in 0..count {
            let name_len = take_len(&mut input)?;
            let name = std::str::from_utf8(take(&mut input, name_len)?)
                .ok()?
                .to_owned();
            let value_len = take_len(&mut input)?;
            let value = take(&mut input, value_len)?.to_vec();
            data.insert(name, SecretBytes::new(value));
        }
        input.is_empty().then_some(data)
    }
}

#[cfg(test)]
mod tests {
    use static_assertions::assert_not_impl_any;

    use super::*;
    use crate::{shamir::UnsealShare, token::Token};

    // The invariant of this module, checked by the compiler.
    assert_not_impl_any!(SecretKey: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);
    assert_not_impl_any!(SecretBytes: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);
    assert_not_impl_any!(SecretData: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);
    assert_not_impl_any!(UnsealShare: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);
    assert_not_impl_any!(Token: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);

    #[test]
    fn encoding_round_trips_and_rejects_trailing_bytes() {
        let mut data = SecretData::new();
        data.insert("user".into(), SecretBytes::new(b"app".to_vec()));
        data.insert("password".into(), SecretBytes::new(vec![0, 1, 2, 255]));
        let encoded = data.encode();
        let decoded = SecretData::decode(&encoded).expect("decodes");
        let fields: Vec<(&str, &[u8])> = decoded.expose_secret().collect();
        assert_eq!(
            fields,
            [("password", &[0u8, 1, 2, 255][..]), ("user", &b"app"[..])]
        );
        let mut longer = encoded.to_vec();
        longer.push(0);
        assert!(SecretData::decode(&longer).is_none());
        assert!(SecretData::decode(&encoded[..encoded.len() - 1]).is_none());
    }
}
