//! Splitting the unseal key into shares and combining them, over GF(256).
//!
//! The field arithmetic is vsss-rs's `Gf256` (`split_bytes`, `combine_bytes`), which is
//! constant-time (no log/exp tables). Every buffer this module creates holding a share or the
//! key is zeroized on drop.
//!
//! Why vsss-rs 6 and not the `shamir` crate (2.0.0): `shamir` splits UTF-8 strings (a random
//! 32-byte key is not one), does GF(256) with log/exp table lookups (memory access that depends
//! on the secret), zeroizes nothing, prints recovered bytes on failure, and is dormant. vsss-rs
//! works on bytes, is constant time, zeroizes field elements (feature `zeroize`), fails with
//! errors only, and is maintained and tested.
//!
//! Known residue: vsss-rs's internal polynomial buffer in `split_bytes` is not zeroized when
//! dropped. Splitting happens only at init and rekey, and reading a running server's memory is
//! out of scope (DESIGN.md). Threshold 1 (dev mode) is handled here: every share carries the
//! key itself, as a degree-0 polynomial would.
//!
//! A share is one identifier byte (the x coordinate, 1..=255) followed by one byte per key byte;
//! operators see it as standard base64.

use std::convert::Infallible;

use base64::{Engine, engine::general_purpose::STANDARD};
use rand_core::{TryCryptoRng, TryRng};
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use crate::{
    error::{Error, Result},
    secret::{KEY_LEN, SecretKey},
};

/// Most shares an unseal key can be split into (GF(256) has 255 non-zero x coordinates).
pub const MAX_SHARES: u32 = 255;

/// One operator's share of the unseal key.
pub struct UnsealShare(Zeroizing<Vec<u8>>);

impl UnsealShare {
    /// Parses a share as printed by init; the error names the field and never echoes the input.
    pub fn parse(text: &str) -> Result<UnsealShare> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| Error::invalid("share", "not base64"))?,
        );
        if bytes.len() != 1 + KEY_LEN {
            return Err(Error::invalid(
                "share",
                format!("must decode to {} bytes", 1 + KEY_LEN),
            ));
        }
        if bytes[0] == 0 {
            return Err(Error::invalid("share", "identifier 0 is not a valid share"));
        }
        Ok(UnsealShare(bytes))
    }

    /// The share's x coordinate.
    pub fn identifier(&self) -> u8 {
        self.0[0]
    }

    /// The share as operators see it (base64).
    pub fn expose_secret(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }

    /// The share's bytes (identifier, then one byte per key byte), for commitments.
    pub(crate) fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Compares two shares in constant time.
    pub fn same_as(&self, other: &UnsealShare) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

/// Splits `key` into `shares` shares, any `threshold` of which recombine it.
pub fn split(key: &SecretKey, shares: u32, threshold: u32) -> Result<Vec<UnsealShare>> {
    check_parameters(shares, threshold)?;
    if threshold == 1 {
        // A degree-0 polynomial: every share carries the key itself. Only sensible for one
        // operator (dev mode); vsss-rs requires a threshold of at least 2.
        return (1..=shares)
            .map(|x| {
                let mut share = Zeroizing::new(Vec::with_capacity(1 + KEY_LEN));
                share.push(x as u8);
                share.extend_from_slice(key.expose_secret());
                Ok(UnsealShare(share))
            })
            .collect();
    }
    let mut rng = OsRng { failed: false };
    let raw = Gf256::split_bytes(
        threshold as usize,
        shares as usize,
        key.expose_secret(),
        &mut rng,
    )
    .map_err(|e| Error::invalid("shares", format!("cannot split: {e:?}")))?;
    let shares: Vec<UnsealShare> = raw
        .into_iter()
        .map(|share| UnsealShare(Zeroizing::new(share)))
        .collect();
    if rng.failed {
        return Err(Error::Rng);
    }
    Ok(shares)
}

/// Combines shares into a candidate unseal key. A wrong or foreign share yields a wrong key,
/// which the caller detects when the root key fails to open.
pub fn combine(shares: &[UnsealShare]) -> Result<SecretKey> {
    let Some(first) = shares.first() else {
        return Err(Error::UnsealFailed);
    };
    let key = if shares.len() == 1 {
        Zeroizing::new(first.0[1..].to_vec())
    } else {
        let raw: Zeroizing<Vec<Vec<u8>>> =
            Zeroizing::new(shares.iter().map(|share| share.0.to_vec()).collect());
        Zeroizing::new(Gf256::combine_bytes(raw.as_slice()).map_err(|_| Error::UnsealFailed)?)
    };
    SecretKey::from_bytes(key).ok_or(Error::UnsealFailed)
}

pub fn check_parameters(shares: u32, threshold: u32) -> Result<()> {
    if shares == 0 || shares > MAX_SHARES {
        return Err(Error::invalid(
            "shares",
            format!("must be between 1 and {MAX_SHARES}"),
        ));
    }
    if threshold == 0 || threshold > shares {
        return Err(Error::invalid(
            "threshold",
            "must be between 1 and the number of shares",
        ));
    }
    if threshold == 1 && shares > 1 {
        return Err(Error::invalid(
            "threshold",
            "must be at least 2 when there is more than one share",
        ));
    }
    Ok(())
}

/// The OS CSPRNG as vsss-rs's infallible `CryptoRng`. An OS failure is recorded (and the
/// split's result discarded) instead of panicking.
struct OsRng {
    failed: bool,
}

impl TryRng for OsRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for OsRng {}

impl OsRng {
    fn fill(&mut self, dst: &mut [u8]) {
        if getrandom::fill(dst).is_err() {
            self.failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subset of `shares` of size `size`, as index lists.
    fn subsets(shares: usize, size: usize) -> Vec<Vec<usize>> {
        (0u32..(1 << shares))
            .filter(|mask| mask.count_ones() as usize == size)
            .map(|mask| (0..shares).filter(|i| mask & (1 << i) != 0).collect())
            .collect()
    }

    fn reparse(shares: &[UnsealShare], pick: &[usize]) -> Vec<UnsealShare> {
        pick.iter()
            .map(|&i| UnsealShare::parse(&shares[i].expose_secret()).expect("parses"))
            .collect()
    }

    #[test]
    fn every_threshold_subset_reconstructs_and_fewer_do_not() {
        for (threshold, count) in [(2u32, 3u32), (3, 5), (5, 10)] {
            let key = SecretKey::generate().expect("rng");
            let shares = split(&key, count, threshold).expect("split");
            assert_eq!(shares.len(), count as usize);
            let mut checked = 0;
            for pick in subsets(count as usize, threshold as usize) {
                let combined = combine(&reparse(&shares, &pick)).expect("combine");
                assert_eq!(
                    combined.expose_secret(),
                    key.expose_secret(),
                    "({threshold},{count}) {pick:?}"
                );
                checked += 1;
            }
            assert!(checked >= count as usize);
            for pick in subsets(count as usize, threshold as usize - 1) {
                if let Ok(combined) = combine(&reparse(&shares, &pick)) {
                    assert_ne!(
                        combined.expose_secret(),
                        key.expose_secret(),
                        "({threshold},{count}) {pick:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn single_share_is_the_key() {
        let key = SecretKey::generate().expect("rng");
        let shares = split(&key, 1, 1).expect("split");
        assert_eq!(
            combine(&shares).expect("combine").expose_secret(),
            key.expose_secret()
        );
    }

    #[test]
    fn bad_parameters_and_shares_are_named() {
        let key = SecretKey::generate().expect("rng");
        let message = |r: Result<Vec<UnsealShare>>| r.err().map(|e| e.to_string());
        assert_eq!(
            message(split(&key, 0, 0)).as_deref(),
            Some("invalid shares: must be between 1 and 255")
        );
        assert_eq!(
            message(split(&key, 3, 4)).as_deref(),
            Some("invalid threshold: must be between 1 and the number of shares")
        );
        assert_eq!(
            message(split(&key, 3, 1)).as_deref(),
            Some("invalid threshold: must be at least 2 when there is more than one share")
        );
        assert!(UnsealShare::parse("not base64!").is_err());
        assert!(UnsealShare::parse(&STANDARD.encode([1u8; 10])).is_err());
        assert!(UnsealShare::parse(&STANDARD.encode([0u8; 33])).is_err());
    }
}
