//! RFC 6238 time-based one-time codes: HMAC-SHA1, 6 digits, 30-second steps, the parameters
//! every authenticator app supports.
//!
//! Invariant: the shared secret lives only in a [`TotpSecret`], which zeroizes on drop and
//! cannot be printed, cloned or serialized; a presented code is compared in constant time against
//! all three steps of the window before anything is decided, and a step at or before the last
//! one used is never accepted again.

use ring::hmac;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Length of a time step.
pub const STEP_SECONDS: u64 = 30;
/// Length of a generated secret: 160 bits, the HMAC-SHA1 output size RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;

/// Shortest secret accepted (RFC 4226 §4: at least 128 bits).
const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted.
const MAX_SECRET_LEN: usize = 64;
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why a presented code was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// The code is not exactly six ASCII digits.
    #[error("mfa code must be 6 digits")]
    Malformed,
    /// The code matches no step of the window.
    #[error("mfa code does not match")]
    Wrong,
    /// The code matches only steps at or before the last one used.
    #[error("mfa code was already used")]
    Replayed,
}

/// The shared secret; zeroized on drop; no Debug, Clone, Display or Serialize.
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    /// A fresh secret of [`SECRET_LEN`] bytes from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_LEN]);
        getrandom::fill(&mut bytes).map_err(|_| Error::Rng)?;
        Ok(TotpSecret(bytes))
    }

    /// Takes a stored secret of 16..=64 bytes; `None` (and the buffer zeroized) otherwise.
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Option<Self> {
        (MIN_SECRET_LEN..=MAX_SECRET_LEN)
            .contains(&bytes.len())
            .then(|| TotpSecret(bytes))
    }

    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// The secret in RFC 4648 base32, upper case, no padding: what authenticator apps accept
    /// for manual entry.
    pub fn base32(&self) -> Zeroizing<String> {
        base32(&self.0)
    }

    /// The enrolment URI for QR codes (Google Authenticator's key URI format):
    /// `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=SHA1&digits=6&period=30`,
    /// with issuer and account percent-encoded.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let issuer = percent_encode(issuer);
        let account = percent_encode(account);
        let secret = self.base32();
        let parameters = format!("&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}");
        let parts = [
            "otpauth://totp/",
            &issuer,
            ":",
            &account,
            "?secret=",
            &secret,
            "&issuer=",
            &issuer,
            &parameters,
        ];
        // Sized up front: growing the buffer would leave an unzeroized copy of the secret.
        let mut uri = Zeroizing::new(String::with_capacity(parts.iter().map(|p| p.len()).sum()));
        for part in parts {
            uri.push_str(part);
        }
        uri
    }
}

/// The code for time step `step` (HOTP over the step counter, RFC 4226 dynamic truncation).
pub fn code_at(secret: &TotpSecret, step: u64) -> u32 {
    hotp(secret.expose_secret(), step, DIGITS)
}

/// The time step containing `unix_seconds` (times before the epoch are in step 0).
pub fn step_of(unix_seconds: i64) -> u64 {
    u64::try_from(unix_seconds).unwrap_or(0) / STEP_SECONDS
}

/// Checks a presented code against steps now-1, now, now+1 (constant-time comparison of the
/// digits), refusing any step <= `last_used_step` (replay).
///
/// Returns the step that matched, which the caller stores as the new last used step. All three
/// steps are computed and compared before anything is decided, so the time taken does not tell
/// which one matched. If two fresh steps match (codes collide), the later one is returned, so
/// that neither can be used again.
pub fn check(
    secret: &TotpSecret,
    code: &str,
    now_unix: i64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    let presented: [u8; DIGITS as usize] = code
        .as_bytes()
        .try_into()
        .map_err(|_| TotpError::Malformed)?;
    if !presented.iter().all(u8::is_ascii_digit) {
        return Err(TotpError::Malformed);
    }
    let now = step_of(now_unix);
    let mut fresh_match = subtle::Choice::from(0);
    let mut stale_match = subtle::Choice::from(0);
    let mut matched_step = 0u64;
    for step in [now.saturating_sub(1), now, now.saturating_add(1)] {
        let equal = digits(code_at(secret, step)).ct_eq(&presented);
        // Whether a step is stale depends only on public values, not on the code.
        let stale = subtle::Choice::from(u8::from(last_used_step.is_some_and(|last| step <= last)));
        let fresh = equal & !stale;
        matched_step = u64::conditional_select(&matched_step, &step, fresh);
        fresh_match |= fresh;
        stale_match |= equal & stale;
    }
    if bool::from(fresh_match) {
        Ok(matched_step)
    } else if bool::from(stale_match) {
        Err(TotpError::Replayed)
    } else {
        Err(TotpError::Wrong)
    }
}

/// `code` as [`DIGITS`] ASCII digits with leading zeros.
fn digits(mut code: u32) -> [u8; DIGITS as usize] {
    let mut out = [b'0'; DIGITS as usize];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (code % 10) as u8;
        code /= 10;
    }
    out
}

/// HOTP (RFC 4226): HMAC-SHA1 of the big-endian counter, dynamically truncated to 31 bits,
/// reduced to `digits` decimal digits.
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let tag = tag.as_ref();
    let offset = usize::from(tag[tag.len() - 1] & 0x0f);
    let truncated = u32::from_be_bytes([
        tag[offset] & 0x7f,
        tag[offset + 1],
        tag[offset + 2],
        tag[offset + 3],
    ]);
    // The modulus is at most u32::MAX + 1 for sane digit counts, so the result fits a u32.
    (u64::from(truncated) % 10u64.saturating_pow(digits)) as u32
}

/// RFC 4648 base32, upper case, no padding, written into a buffer that never reallocates.
fn base32(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(5) * 8));
    let mut buffer = 0u16;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[usize::from((buffer >> bits) & 0x1f)],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    buffer.zeroize();
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, byte by byte of UTF-8.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use static_assertions::assert_not_impl_any;

    use super::*;

    // The invariant of this module, checked by the compiler.
    assert_not_impl_any!(TotpSecret: std::fmt::Debug, std::fmt::Display, Clone, serde::Serialize);

    const RFC_KEY: &[u8] = b"12345678901234567890";

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(Zeroizing::new(RFC_KEY.to_vec())).unwrap()
    }

    /// RFC 4226 Appendix D.
    #[test]
    fn hotp_matches_rfc_4226_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), code, "counter {counter}");
            assert_eq!(code_at(&rfc_secret(), counter as u64), code);
        }
    }

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits).
    #[test]
    fn totp_matches_rfc_6238_vectors() {
        for (time, code) in [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(RFC_KEY, step_of(time), 8), code, "time {time}");
        }
        assert_eq!(step_of(59), 1);
        assert_eq!(step_of(1111111109), 0x23523EC);
        assert_eq!(step_of(20000000000), 0x27BC86AA);
        assert_eq!(step_of(-1), 0);
        assert_eq!(digits(7081804 % 1_000_000), *b"081804");
        assert_eq!(digits(5), *b"000005");
    }

    /// RFC 4648 §10.
    #[test]
    fn base32_matches_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()).as_str(), output, "{input}");
        }
        assert_eq!(base32(&[0xff; 5]).as_str(), "77777777");
        assert_eq!(base32(&[0; 6]).as_str(), "AAAAAAAAAA");
        assert_eq!(
            rfc_secret().base32().as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn otpauth_uri_has_the_key_uri_shape() {
        let uri = rfc_secret().otpauth_uri("Acme Vault", "alice@example.com");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Acme%20Vault:alice%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Vault\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(uri.capacity(), uri.len());
        let uri = rfc_secret().otpauth_uri("a:b/c?d&e=f#", "j\u{f6}rg~x_y.z-1");
        assert!(uri.starts_with("otpauth://totp/a%3Ab%2Fc%3Fd%26e%3Df%23:j%C3%B6rg~x_y.z-1?"));
        assert!(uri.contains("&issuer=a%3Ab%2Fc%3Fd%26e%3Df%23&"));
    }

    #[test]
    fn secrets_are_random_and_length_checked() {
        let a = TotpSecret::generate().unwrap();
        let b = TotpSecret::generate().unwrap();
        assert_eq!(a.expose_secret().len(), SECRET_LEN);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.base32().len(), 32);
        for len in [0, 15, 65] {
            assert!(
                TotpSecret::from_bytes(Zeroizing::new(vec![1; len])).is_none(),
                "{len}"
            );
        }
        for len in [16, 20, 64] {
            assert!(
                TotpSecret::from_bytes(Zeroizing::new(vec![1; len])).is_some(),
                "{len}"
            );
        }
    }

    #[test]
    fn the_window_is_one_step_either_side() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let step = step_of(now);
        let code = |step: u64| String::from_utf8(digits(code_at(&secret, step)).to_vec()).unwrap();
        for accepted in [step - 1, step, step + 1] {
            assert_eq!(
                check(&secret, &code(accepted), now, None).unwrap(),
                accepted
            );
        }
        for refused in [step - 2, step + 2, step - 10] {
            assert!(matches!(
                check(&secret, &code(refused), now, None),
                Err(TotpError::Wrong)
            ));
        }
        // Leading zeros are part of the code (RFC 6238 vector 1111111109 truncates to 081804).
        let at = 1_111_111_109;
        assert_eq!(check(&secret, "081804", at, None).unwrap(), step_of(at));
        assert!(matches!(
            check(&secret, "81804 ", at, None),
            Err(TotpError::Malformed)
        ));
        // Times before the epoch and at step 0 have no step -1 and do not wrap around.
        assert_eq!(check(&secret, &code(0), -5, None).unwrap(), 0);
        assert_eq!(check(&secret, &code(1), 0, None).unwrap(), 1);
        assert!(matches!(
            check(&secret, &code(u64::MAX), 0, None),
            Err(TotpError::Wrong)
        ));
    }

    #[test]
    fn used_steps_are_refused() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = step_of(now);
        let code = |step: u64| String::from_utf8(digits(code_at(&secret, step)).to_vec()).unwrap();
        let used = check(&secret, &code(step), now, None).unwrap();
        assert_eq!(used, step);
        assert!(matches!(
            check(&secret, &code(step), now, Some(used)),
            Err(TotpError::Replayed)
        ));
        // An earlier code of the window, after a later one was used.
        assert!(matches!(
            check(&secret, &code(step - 1), now, Some(used)),
            Err(TotpError::Replayed)
        ));
        // The next step is still fresh.
        assert_eq!(
            check(&secret, &code(step + 1), now, Some(used)).unwrap(),
            step + 1
        );
        assert_eq!(
            check(&secret, &code(step), now, Some(step - 1)).unwrap(),
            step
        );
        // A wrong code is wrong, not replayed, even when everything is used.
        let wrong = if code(step) == "000000" {
            "000001"
        } else {
            "000000"
        };
        if [step - 1, step, step + 1].iter().all(|s| code(*s) != wrong) {
            assert!(matches!(
                check(&secret, wrong, now, Some(step + 1)),
                Err(TotpError::Wrong)
            ));
        }
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = rfc_secret();
        for code in [
            "",
            "12345",
            "1234567",
            "12a456",
            " 123456",
            "123456 ",
            "12345\u{661}",
            "-12345",
            "+12345",
        ] {
            assert!(
                matches!(
                    check(&secret, code, 1_111_111_111, None),
                    Err(TotpError::Malformed)
                ),
                "{code:?}"
            );
        }
    }

    /// Prints every variant so the wording is reviewed in one place.
    #[test]
    fn every_message_is_lower_case() {
        let printed: Vec<String> = [TotpError::Malformed, TotpError::Wrong, TotpError::Replayed]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            printed,
            [
                "mfa code must be 6 digits",
                "mfa code does not match",
                "mfa code was already used"
            ]
        );
    }
}
