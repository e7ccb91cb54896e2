//! Bearer tokens: 256 random bits with a recognizable prefix, stored only as a keyed hash
//! (HMAC-SHA256 under a key the vault keeps sealed), with a public accessor for audit records.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::hmac;
use zeroize::Zeroizing;

use crate::{
    error::{Error, Result},
    secret::SecretKey,
};

/// Every token starts with this, so scanners and humans can recognize a leaked one.
pub const TOKEN_PREFIX: &str = "vt.";
/// Every accessor starts with this.
pub const ACCESSOR_PREFIX: &str = "va.";
/// Longest string accepted as a token before any work is done on it.
const MAX_TOKEN_LEN: usize = 128;

/// A bearer token as presented by a caller or just created.
pub struct Token(Zeroizing<String>);

/// What a bearer credential is for; each kind has its own prefix, so one is never accepted as
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An access token (`vt.`), presented on every call.
    Access,
    /// A refresh token (`vr.`), exchanged once for a new access and refresh token.
    Refresh,
    /// An AppRole secret id (`vs.`), presented with a role id to log in.
    SecretId,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Access => TOKEN_PREFIX,
            TokenKind::Refresh => "vr.",
            TokenKind::SecretId => "vs.",
        }
    }
}

impl Token {
    pub fn generate() -> Result<Token> {
        Token::generate_kind(TokenKind::Access)
    }

    pub fn generate_kind(kind: TokenKind) -> Result<Token> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| Error::Rng)?;
        // Encoded straight into a zeroizing buffer of the final size: no unzeroized copy.
        let prefix = kind.prefix();
        let mut text = Zeroizing::new(String::with_capacity(prefix.len() + 43));
        text.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut text);
        Ok(Token(text))
    }

    /// Takes a presented token. Only the shape is checked here; whether it is valid is a lookup.
    pub fn from_presented(text: String) -> Result<Token> {
        Token::from_presented_kind(text, TokenKind::Access)
    }

    /// [`Token::from_presented`] for a credential of `kind`.
    pub fn from_presented_kind(text: String, kind: TokenKind) -> Result<Token> {
        let text = Zeroizing::new(text);
        if text.is_empty() {
            return Err(Error::Unauthenticated);
        }
        if text.len() > MAX_TOKEN_LEN || !text.starts_with(kind.prefix()) {
            return Err(Error::PermissionDenied);
        }
        Ok(Token(text))
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

/// The keyed hash under which a token is stored; it is the storage key of the token record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Compares (in constant time) with a hash stored as hex; `None` if the stored text is not
    /// a hash at all (a corrupt record).
    pub fn matches_hex(&self, stored: &str) -> Option<bool> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(stored, &mut bytes).ok()?;
        Some(TokenHash(bytes).same_as(self))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison, so a lookup that matches on a prefix leaks nothing.
    pub fn same_as(&self, other: &TokenHash) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

/// The key tokens are hashed under; kept in the keyring, sealed under the root key.
pub struct TokenHasher(hmac::Key);

impl TokenHasher {
    pub fn new(key: &SecretKey) -> Self {
        TokenHasher(hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()))
    }

    pub fn hash(&self, token: &Token) -> TokenHash {
        let tag = hmac::sign(&self.0, token.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        TokenHash(out)
    }
}

/// A new random accessor: safe to log, names a token without granting anything.
pub fn new_accessor() -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|_| Error::Rng)?;
    Ok(format!("{ACCESSOR_PREFIX}{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed_under_the_key() {
        let a = Token::generate().expect("rng");
        let b = Token::generate().expect("rng");
        assert!(a.expose_secret().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose_secret().len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
        let hasher = TokenHasher::new(&SecretKey::generate().expect("rng"));
        let other = TokenHasher::new(&SecretKey::generate().expect("rng"));
        assert!(hasher.hash(&a).same_as(&hasher.hash(&a)));
        assert!(!hasher.hash(&a).same_as(&hasher.hash(&b)));
        assert!(!hasher.hash(&a).same_as(&other.hash(&a)));
    }

    #[test]
    fn presented_tokens_are_shape_checked() {
        assert!(matches!(
            Token::from_presented(String::new()),
            Err(Error::Unauthenticated)
        ));
        assert!(matches!(
            Token::from_presented("hvs.abc".into()),
            Err(Error::PermissionDenied)
        ));
        assert!(matches!(
            Token::from_presented(format!("vt.{}", "a".repeat(200))),
            Err(Error::PermissionDenied)
        ));
        assert!(Token::from_presented("vt.abc".into()).is_ok());
    }
}
