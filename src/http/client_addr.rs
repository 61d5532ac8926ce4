//! The client's address: the TCP peer, or — when the peer is one of the
//! configured `trusted_proxies` — the address that proxy says it forwarded
//! for (`X-Forwarded-For`, else RFC 7239 `Forwarded: for=`). The login and
//! API limiter, the clicks' IP hash and the logs all read it through
//! `ClientAddr`, so that behind a reverse proxy strangers are not all one
//! address, and a header sent by anyone else is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use super::AppState;

/// The client's address (`None` when the server runs without connect info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(peer.map(|p| {
            client_addr(p, &parts.headers, &state.tracker.config().trusted_proxies)
        })))
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = canonical(ip);
    proxies.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack listener
/// reports IPv4 peers) are compared and keyed as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address for a request from `peer`: the peer itself unless
/// it is a trusted proxy; then the right-most forwarded address that is not
/// a trusted proxy (addresses further left were written by whoever sent the
/// request to the first proxy and prove nothing). When a forwarded entry
/// cannot be read, the peer is kept: nothing left of it can be believed.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    let chain = forwarded_for(headers, "x-forwarded-for", parse_xff_entry)
        .or_else(|| forwarded_for(headers, "forwarded", parse_forwarded_element));
    let Some(chain) = chain else {
        return peer;
    };
    let mut leftmost = peer;
    for entry in chain.iter().rev() {
        match entry {
            Some(ip) if trusted(*ip, proxies) => leftmost = *ip,
            Some(ip) => return canonical(*ip),
            None => return peer,
        }
    }
    // Every hop is a trusted proxy: the first of them is the client.
    leftmost
}

/// The addresses of every `name` header, in order (several headers count as
/// one list, RFC 9110 5.3); `None` when there is no such header. An entry
/// that is not an address (`unknown`, an obfuscated name, garbage) is
/// `Some(None)`.
fn forwarded_for(
    headers: &HeaderMap,
    name: &str,
    parse: fn(&str) -> Option<Option<IpAddr>>,
) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut chain = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            chain.push(None);
            continue;
        };
        chain.extend(text.split(',').filter_map(parse));
    }
    Some(chain)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`
/// or `[2001:db8::1]:5678`. Empty entries are skipped.
fn parse_xff_entry(entry: &str) -> Option<Option<IpAddr>> {
    let entry = entry.trim();
    if entry.is_empty() {
        return None;
    }
    Some(parse_node(entry))
}

/// One element of `Forwarded` (`for=…;proto=…;by=…`): its `for` node.
/// Elements without `for` are skipped.
fn parse_forwarded_element(element: &str) -> Option<Option<IpAddr>> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))
    })
}

/// An address with or without a port, IPv6 possibly in brackets.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (v6, _) = rest.split_once(']')?;
        return v6.parse().ok();
    }
    node.parse::<SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| crate::config::parse_trusted_proxy(n).expect("net"))
            .collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(client_addr(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
        assert_eq!(
            client_addr(ip("203.0.113.9"), &h, &nets(&["127.0.0.1/32"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() {
        let proxies = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(client_addr(peer, &h, &proxies), ip("198.51.100.7"));
        // Several headers are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_addr(peer, &h, &proxies), ip("198.51.100.7"));
        // Ports and brackets are dropped.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711")]);
        assert_eq!(client_addr(peer, &h, &proxies), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "198.51.100.7:4711")]);
        assert_eq!(client_addr(peer, &h, &proxies), ip("198.51.100.7"));
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = nets(&["127.0.0.1"]);
        let peer = ip("127.0.0.1");
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6;proto=https, For=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1",
        )]);
        assert_eq!(client_addr(peer, &h, &proxies), ip("2001:db8:cafe::17"));
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_addr(peer, &h, &proxies), ip("198.51.100.7"));
    }

    #[test]
    fn an_unreadable_hop_or_no_header_leaves_the_peer() {
        let proxies = nets(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        assert_eq!(client_addr(peer, &HeaderMap::new(), &proxies), peer);
        let h = headers(&[("x-forwarded-for", "198.51.100.7, garbage")]);
        assert_eq!(client_addr(peer, &h, &proxies), peer);
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_addr(peer, &h, &proxies), peer);
        // Only proxies in the chain: the first of them is the client.
        let h = headers(&[("x-forwarded-for", "127.0.0.1")]);
        assert_eq!(client_addr(peer, &h, &proxies), peer);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let proxies = nets(&["127.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_addr(ip("::ffff:127.0.0.1"), &h, &proxies),
            ip("198.51.100.7")
        );
    }
}
