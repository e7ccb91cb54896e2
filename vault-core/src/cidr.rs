//! Network restrictions: CIDR blocks that a token (or tenant) may be used from, checked against
//! the call's source: the connection's peer, or, when the peer is a proxy the operator trusts
//! (`--trusted-proxy`), the client address it forwarded in `x-forwarded-for`. From any other
//! peer that header is ignored.

use std::{fmt, net::IpAddr, str::FromStr};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr> {
        let invalid = || {
            Error::invalid(
                "cidr",
                format!("{text:?} is not a CIDR block like 10.0.0.0/8 or fd00::/8"),
            )
        };
        let (address, prefix) = text.trim().split_once('/').ok_or_else(invalid)?;
        let network = IpAddr::from_str(address).map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Cidr { network, prefix })
    }

    /// Whether a stored allowlist admits `source`: an empty list admits anyone; otherwise the
    /// source must be known and inside one block. An entry that does not parse admits nobody
    /// (stored lists were validated on the way in, so that is corruption: fail closed).
    pub fn allows(list: &[String], source: Option<IpAddr>) -> bool {
        list.is_empty()
            || source.is_some_and(|address| {
                list.iter()
                    .filter_map(|c| Cidr::parse(c).ok())
                    .any(|c| c.contains(address))
            })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 peer seen through an IPv6 socket (::ffff:a.b.c.d) is compared as IPv4.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_what_they_should() {
        let cases = [
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.1/32", "127.0.0.2", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("::1/128", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("10.0.0.0/8", "::ffff:10.0.0.7", true),
            ("10.0.0.0/8", "::1", false),
        ];
        for (block, address, expected) in cases {
            let cidr = Cidr::parse(block).expect("cidr");
            assert_eq!(
                cidr.contains(address.parse().expect("ip")),
                expected,
                "{block} vs {address}"
            );
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "::/129", "host/8", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
