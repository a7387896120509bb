//! The client address of a request: the peer, or — only when the peer is a
//! trusted proxy — the rightmost untrusted `X-Forwarded-For` entry.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The client address, and whether it may be taken for loopback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// The address used for limits, logs and the connections list.
    pub ip: IpAddr,
    /// Whether the client is on this host (never true for a forwarded
    /// request from an untrusted peer).
    pub loopback: bool,
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// Works out the client address from the TCP peer and the headers.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> ClientAddr {
    let forwarded = headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
    if !trusted(peer, proxies) {
        return ClientAddr {
            ip: peer,
            loopback: peer.is_loopback() && !forwarded,
        };
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ip = hops
        .iter()
        .rev()
        .copied()
        .find(|ip| !trusted(*ip, proxies))
        .or_else(|| hops.first().copied())
        .unwrap_or(peer);
    ClientAddr {
        ip,
        loopback: ip.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peers_are_taken_as_they_are() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let a = client_addr(peer, &HeaderMap::new(), &[]);
        assert_eq!(
            a,
            ClientAddr {
                ip: peer,
                loopback: true
            }
        );
        let a = client_addr(peer, &headers("203.0.113.9"), &[]);
        assert_eq!(
            a,
            ClientAddr {
                ip: peer,
                loopback: false
            },
            "a local reverse proxy must not open admin routes"
        );
    }

    #[test]
    fn trusted_proxies_give_the_rightmost_untrusted_hop() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let a = client_addr(
            peer,
            &headers("198.51.100.7, 203.0.113.9, 10.2.2.2"),
            &proxies,
        );
        assert_eq!(a.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert!(!a.loopback);
    }
}
