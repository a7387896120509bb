//! The client address of a request: the peer, or — only when the peer is a
//! trusted proxy — the rightmost untrusted hop of `X-Forwarded-For` (or of
//! `Forwarded: for=`).
//!
//! A hop that is not an IP address (`unknown`, `_hidden`, `2130706433`, a
//! host name, an empty entry) makes the client unknown: it is never taken
//! for loopback, so a forwarded header cannot open the loopback-only routes
//! (docs/operations.md, "TLS and reverse proxies" and "API keys and the
//! loopback-only rule").

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The client address, and whether it may be taken for loopback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// The address used for limits, logs and the connections list (the
    /// peer's when the forwarded client is unknown).
    pub ip: IpAddr,
    /// Whether the client is on this host (never true for a forwarded
    /// request from an untrusted peer, nor for an unknown client).
    pub loopback: bool,
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// Works out the client address from the TCP peer and the headers.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> ClientAddr {
    // A dual-stack listener (`[::]:PORT`) sees IPv4 clients as IPv4-mapped
    // IPv6 (`::ffff:127.0.0.1`), which is neither loopback to `is_loopback`
    // nor inside an IPv4 CIDR of `trusted_proxies`: read them as IPv4.
    let peer = peer.to_canonical();
    let xff = forwarded_for(headers);
    let forwarded = forwarded_nodes(headers);
    if !trusted(peer, proxies) {
        return ClientAddr {
            ip: peer,
            loopback: peer.is_loopback() && xff.is_none() && forwarded.is_none(),
        };
    }
    let found = match (xff, forwarded) {
        (None, None) => Some(peer),
        (Some(hops), None) | (None, Some(hops)) => rightmost_untrusted(&hops, proxies),
        // A proxy sets one of the two; the client may have sent the other
        // itself. Believe them only when they agree.
        (Some(a), Some(b)) => rightmost_untrusted(&a, proxies)
            .filter(|ip| rightmost_untrusted(&b, proxies) == Some(*ip)),
    };
    match found {
        Some(ip) => ClientAddr {
            ip,
            loopback: ip.is_loopback(),
        },
        None => ClientAddr {
            ip: peer,
            loopback: false,
        },
    }
}

/// One hop: its address, or `None` when it is not an IP address.
type Hop = Option<IpAddr>;

/// The client among `hops` (nearest last): the rightmost hop that is not a
/// trusted proxy, or the leftmost when all are; `None` when that hop is
/// not an IP address (or there is none).
fn rightmost_untrusted(hops: &[Hop], proxies: &[IpNet]) -> Option<IpAddr> {
    let deciding = hops
        .iter()
        .rev()
        .find(|hop| !hop.is_some_and(|ip| trusted(ip, proxies)))
        .or_else(|| hops.first())?;
    *deciding
}

/// Every `X-Forwarded-For` entry, in order; `None` without the header.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let values = headers.get_all("x-forwarded-for");
    values.iter().next()?;
    Some(
        values
            .iter()
            .flat_map(|v| match v.to_str() {
                Ok(text) => text.split(',').map(node_ip).collect(),
                Err(_) => vec![None],
            })
            .collect(),
    )
}

/// The `for=` node of every `Forwarded` element (RFC 7239), in order;
/// `None` without the header. An element without `for` is an unknown hop.
fn forwarded_nodes(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let values = headers.get_all(http::header::FORWARDED);
    values.iter().next()?;
    Some(
        values
            .iter()
            .flat_map(|v| match v.to_str() {
                Ok(text) => text.split(',').map(element_for).collect(),
                Err(_) => vec![None],
            })
            .collect(),
    )
}

/// The `for` parameter of one `Forwarded` element, as an address.
fn element_for(element: &str) -> Hop {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| node_ip(value.trim().trim_matches('"')))?
    })
}

/// A node as proxies write it: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
/// Anything else (`unknown`, obfuscated `_names`, a bare integer) is not an
/// address.
fn node_ip(text: &str) -> Hop {
    let text = text.trim();
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })?;
    // A dual-stack proxy writes its IPv4 clients IPv4-mapped, as the
    // router's own listener sees them (see `client_addr`).
    Some(ip.to_canonical())
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_hop_that_is_not_an_address_makes_the_client_unknown() {
        let proxies: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let peer = ip("127.0.0.1");
        let unknown = ClientAddr {
            ip: peer,
            loopback: false,
        };
        for xff in [
            "unknown",
            "_hidden",
            "not-an-ip",
            "2130706433",
            "127.1",
            "localhost",
            "",
            " , ",
            "127.0.0.1, unknown",
            "unknown, 127.0.0.1:80",
        ] {
            assert_eq!(
                client_addr(peer, &headers(xff), &proxies),
                unknown,
                "{xff:?}"
            );
        }
        for forwarded in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"[::1]:x\"",
        ] {
            let mut h = HeaderMap::new();
            h.insert("forwarded", forwarded.parse().unwrap());
            assert_eq!(client_addr(peer, &h, &proxies), unknown, "{forwarded:?}");
        }
    }

    #[test]
    fn ports_and_brackets_are_read_as_their_address() {
        let proxies: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let peer = ip("127.0.0.1");
        for (xff, want) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("[2001:db8::17]:4711", "2001:db8::17"),
            ("[2001:db8::17]", "2001:db8::17"),
            ("2001:db8::17", "2001:db8::17"),
            ("[::1]:9000", "::1"),
        ] {
            let a = client_addr(peer, &headers(xff), &proxies);
            assert_eq!(a.ip, ip(want), "{xff}");
            assert_eq!(a.loopback, a.ip.is_loopback(), "{xff}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            "for=192.0.2.60;proto=http, For=\"[2001:db8:cafe::17]:4711\""
                .parse()
                .unwrap(),
        );
        assert_eq!(client_addr(peer, &h, &proxies).ip, ip("2001:db8:cafe::17"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_read_as_ipv4() {
        // What a dual-stack listener (`[::]:PORT`) sees of an IPv4 client.
        let peer = ip("::ffff:127.0.0.1");
        assert_eq!(
            client_addr(peer, &HeaderMap::new(), &[]),
            ClientAddr {
                ip: ip("127.0.0.1"),
                loopback: true
            }
        );
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let a = client_addr(
            ip("::ffff:10.1.1.1"),
            &headers("203.0.113.9, ::ffff:10.2.2.2"),
            &proxies,
        );
        assert_eq!(a.ip, ip("203.0.113.9"));
        let a = client_addr(
            ip("::ffff:10.1.1.1"),
            &headers("::ffff:127.0.0.1"),
            &proxies,
        );
        assert_eq!(
            a,
            ClientAddr {
                ip: ip("127.0.0.1"),
                loopback: true
            }
        );
    }

    #[test]
    fn both_headers_count_only_when_they_agree() {
        let proxies: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let peer = ip("127.0.0.1");
        let mut h = headers("127.0.0.1");
        h.insert("forwarded", "for=203.0.113.9".parse().unwrap());
        assert_eq!(
            client_addr(peer, &h, &proxies),
            ClientAddr {
                ip: peer,
                loopback: false
            }
        );
        h.insert("forwarded", "for=\"127.0.0.1:80\"".parse().unwrap());
        assert!(client_addr(peer, &h, &proxies).loopback);
    }
}
