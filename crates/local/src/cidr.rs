//! IPv4 address ranges (`10.88.0.0/24`) for pod and service addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub network: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// A malformed range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 range like 10.88.0.0/24")]
pub struct CidrError(pub String);

impl Cidr {
    /// The usable host addresses, in order (network and broadcast excluded
    /// for prefixes shorter than /31).
    pub fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.network);
        let size: u64 = 1u64 << (32 - u32::from(self.prefix));
        let (first, last) = if size <= 2 { (0, size) } else { (1, size - 1) };
        (first..last).map(move |i| Ipv4Addr::from(base.wrapping_add(i as u32)))
    }

    /// The first host address (the bridge's).
    pub fn gateway(self) -> Ipv4Addr {
        self.hosts().next().unwrap_or(self.network)
    }

    /// Whether `ip` is inside the range.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        let mask = mask(self.prefix);
        u32::from(ip) & mask == u32::from(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = ip.trim().parse().map_err(|_| err())?;
        let prefix: u8 = prefix.trim().parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        })
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
    fn parses_and_iterates() {
        let c: Cidr = "10.88.0.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.88.0.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(c.hosts().count(), 254);
        assert!(c.contains(Ipv4Addr::new(10, 88, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 88, 1, 1)));
        for bad in ["10.88.0.0", "10.88.0.0/33", "x/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let tiny: Cidr = "10.0.0.0/30".parse().unwrap();
        assert_eq!(tiny.hosts().count(), 2);
    }
}
