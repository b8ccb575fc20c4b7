//! Who the client is, for per-client limits.
//!
//! Behind a proxy every request comes from the proxy's address, and the
//! client's is in `X-Forwarded-For`. But any client can send that header, so
//! it is believed only when the request comes from a proxy the operator
//! named (`TRUSTED_PROXIES`), and only as far back as the chain of trusted
//! proxies goes: each proxy appends the address it saw, so the rightmost
//! address that is not itself a trusted proxy is the client.

use std::{
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

/// An address block, `10.0.0.0/8` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(net)), self.prefix, 32) == mask(u128::from(u32::from(ip)), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(net), self.prefix, 128) == mask(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 { 0 } else { bits >> (width - prefix) }
}

/// IPv4 mapped into IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket
/// reports) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let net: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let net = canonical(net);
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {width}"))?,
        };
        Ok(Self { net, prefix })
    }
}

/// The proxies whose `X-Forwarded-For` is believed; none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses and CIDR blocks.
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect::<Result<Vec<_>, _>>().map(Self)
    }
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer` with this
    /// `X-Forwarded-For` (all of its values, joined by commas).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else { return peer };
        let mut client = peer;
        for hop in chain.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // A hop we cannot read: stop at the last one we could.
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The key a client's limits are counted under: its address, or for IPv6
/// its /64, since one subscriber is usually handed a whole /64 and could
/// otherwise step through it.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let block: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains(ip("10.200.1.1")) && !block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.1.2.3")), "v4-mapped v6 is v4");
        let one: Cidr = "192.168.1.5".parse().unwrap();
        assert!(one.contains(ip("192.168.1.5")) && !one.contains(ip("192.168.1.6")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"), "a client cannot name itself");
        let proxies: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        assert_eq!(proxies.client(ip("127.0.0.1"), Some("198.51.100.7")), ip("198.51.100.7"));
        // A client-supplied first hop is skipped: the rightmost untrusted one wins.
        assert_eq!(proxies.client(ip("127.0.0.1"), Some("6.6.6.6, 198.51.100.7, 10.1.1.1")), ip("198.51.100.7"));
        assert_eq!(proxies.client(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(proxies.client(ip("127.0.0.1"), Some("garbage")), ip("127.0.0.1"));
        assert_eq!(proxies.client(ip("203.0.113.9"), Some("1.2.3.4")), ip("203.0.113.9"), "not from a proxy");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), limit_key(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
