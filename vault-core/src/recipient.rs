//! Handing one-time credentials to the people they belong to: an unseal share (or the root
//! token) encrypted to its holder's age X25519 public key, so that no single caller of init or
//! rekey ever holds a threshold of shares in the clear.
//!
//! A recipient is printable (it is a public key); an identity is not: it has no Debug or
//! Display, and is read from a file only to decrypt one share.

use std::{io::Read, iter, str::FromStr};

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An operator's age X25519 public key (`age1...`).
#[derive(Clone)]
pub struct ShareRecipient(age::x25519::Recipient);

impl std::fmt::Debug for ShareRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareRecipient({})", self.0)
    }
}

impl std::fmt::Display for ShareRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl ShareRecipient {
    /// Parses `age1...`; `field` names the request field in the error.
    pub fn parse(field: &'static str, text: &str) -> Result<ShareRecipient> {
        age::x25519::Recipient::from_str(text.trim())
            .map(ShareRecipient)
            .map_err(|_| Error::invalid(field, "is not an age X25519 recipient (age1...)"))
    }

    /// Parses a list, refusing duplicates: two shares encrypted to one key are one holder.
    pub fn parse_all(field: &'static str, texts: &[String]) -> Result<Vec<ShareRecipient>> {
        let mut parsed: Vec<ShareRecipient> = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let recipient = ShareRecipient::parse(field, text).map_err(|_| {
                Error::invalid(
                    field,
                    format!(
                        "entry {} is not an age X25519 recipient (age1...)",
                        index + 1
                    ),
                )
            })?;
            if parsed
                .iter()
                .any(|r| r.to_string() == recipient.to_string())
            {
                return Err(Error::invalid(
                    field,
                    format!(
                        "entry {} repeats a recipient: each share goes to a different holder",
                        index + 1
                    ),
                ));
            }
            parsed.push(recipient);
        }
        Ok(parsed)
    }

    /// `plaintext` encrypted to this recipient, ASCII-armored.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        age::encrypt_and_armor(&self.0, plaintext)
            .map_err(|_| Error::FailedPrecondition("cannot encrypt to a share recipient".into()))
    }
}

/// A one-time credential as handed out: in the clear, or encrypted to its holder.
pub enum Handout<T> {
    Plain(T),
    /// ASCII-armored age ciphertext.
    Encrypted(String),
}

impl<T> Handout<T> {
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Handout::Encrypted(_))
    }

    /// The credential, if it was handed out in the clear.
    pub fn into_plain(self) -> Option<T> {
        match self {
            Handout::Plain(value) => Some(value),
            Handout::Encrypted(_) => None,
        }
    }

    pub fn as_plain(&self) -> Option<&T> {
        match self {
            Handout::Plain(value) => Some(value),
            Handout::Encrypted(_) => None,
        }
    }
}

/// An operator's age identity (secret key). No Debug, Display or Clone.
pub struct ShareIdentity(age::x25519::Identity);

impl ShareIdentity {
    /// Reads an identity file as `age-keygen` writes it: comment lines and one
    /// `AGE-SECRET-KEY-1...` line.
    pub fn parse_file(text: &str) -> Result<ShareIdentity> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| Error::invalid("identity", "the file holds no age identity"))?;
        age::x25519::Identity::from_str(line)
            .map(ShareIdentity)
            .map_err(|_| {
                Error::invalid(
                    "identity",
                    "is not an age X25519 identity (AGE-SECRET-KEY-1...)",
                )
            })
    }

    /// A new identity; its recipient is [`ShareIdentity::recipient`].
    pub fn generate() -> ShareIdentity {
        ShareIdentity(age::x25519::Identity::generate())
    }

    pub fn recipient(&self) -> ShareRecipient {
        ShareRecipient(self.0.to_public())
    }

    /// The identity in the form [`ShareIdentity::parse_file`] reads.
    pub fn expose_secret(&self) -> Zeroizing<String> {
        use age::secrecy::ExposeSecret;
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }

    /// Decrypts an armored (or binary) age ciphertext made for this identity.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let not_ours = || {
            Error::invalid(
                "share",
                "does not decrypt with this identity (another holder's share, or not an age file)",
            )
        };
        let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(ciphertext))
            .map_err(|_| not_ours())?;
        let mut reader = decryptor
            .decrypt(iter::once(&self.0 as &dyn age::Identity))
            .map_err(|_| not_ours())?;
        let mut plaintext = Zeroizing::new(Vec::new());
        reader.read_to_end(&mut plaintext).map_err(|_| not_ours())?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use static_assertions::assert_not_impl_any;

    use super::*;

    assert_not_impl_any!(ShareIdentity: std::fmt::Debug, std::fmt::Display, Clone);

    #[test]
    fn a_share_decrypts_only_with_its_holders_identity() {
        let alice = ShareIdentity::generate();
        let bob = ShareIdentity::generate();
        let armored = alice.recipient().encrypt(b"share bytes").expect("encrypt");
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        let file = format!("# created by a test\n{}\n", alice.expose_secret().as_str());
        let reread = ShareIdentity::parse_file(&file).expect("identity file");
        assert_eq!(
            reread
                .decrypt(armored.as_bytes())
                .expect("decrypt")
                .as_slice(),
            b"share bytes"
        );
        assert!(bob.decrypt(armored.as_bytes()).is_err());
    }

    #[test]
    fn bad_recipients_name_the_field_and_the_entry() {
        let good = ShareIdentity::generate().recipient().to_string();
        let error =
            ShareRecipient::parse_all("share_recipients", &[good.clone(), "age1nope".into()])
                .expect_err("bad entry");
        assert_eq!(
            error.to_string(),
            "invalid share_recipients: entry 2 is not an age X25519 recipient (age1...)"
        );
        let error = ShareRecipient::parse_all("share_recipients", &[good.clone(), good])
            .expect_err("duplicate");
        assert!(error.to_string().contains("entry 2 repeats a recipient"));
    }
}
