//! Where a request came from, for the audit log (docs/audit.md): the client's address (the
//! connection's peer, or what a trusted proxy says it forwarded for), its user agent and the
//! request id, put in the request's extensions by [`origin`] for every route.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::middleware::RequestId;

/// Longest user agent kept (longer ones are cut).
const USER_AGENT_MAX: usize = 256;

/// Where a request came from: the client's address (the connection's peer, or what a trusted
/// proxy says it forwarded for, [`origin`]), its user agent and the request id.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// The proxies whose `X-Forwarded-For` is believed (`CORE_TRUSTED_PROXIES`; none by default: a
/// header anyone can send names nobody).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// A comma-separated list of addresses and networks (`10.0.0.0/8, 192.0.2.1`).
    pub fn parse(list: &str) -> std::result::Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is neither an address nor a network (CIDR)"))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then `X-Forwarded-For`
    /// read from the right (each proxy appends the address it was called from), hop by hop while
    /// the hop is a trusted proxy: the first hop that is not one is the client. A hop that does not
    /// parse ends the walk at the last good one (whatever a client wrote to the left of its own
    /// address is its own to forge, and cannot hide that address). IPv4-mapped IPv6 addresses are
    /// read as IPv4.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer?.to_canonical();
        if !self.trusts(client) {
            return Some(client);
        }
        let hops: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = std::str::from_utf8(hop).ok().and_then(|h| h.trim().parse::<IpAddr>().ok()) else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

/// Puts the request's [`Origin`] in its extensions (after the request id is known).
pub(crate) async fn origin(State(trusted): State<TrustedProxies>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|ua| {
        let mut ua = ua.to_owned();
        if ua.len() > USER_AGENT_MAX {
            let mut end = USER_AGENT_MAX;
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua.truncate(end);
        }
        ua
    });
    let origin = Origin {
        ip: trusted.client(peer, req.headers()),
        user_agent,
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
    };
    req.extensions_mut().insert(origin);
    next.run(req).await
}

/// The request's origin (empty where the middleware did not run).
impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Origin>().cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwarded_for_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = TrustedProxies::default();
        let lb = TrustedProxies::parse("10.0.0.0/8, 192.0.2.1").unwrap();
        // Nobody trusted: the header is anyone's to send, and names nobody.
        assert_eq!(none.client(Some(ip("10.1.1.1")), &headers(&["203.0.113.7"])), Some(ip("10.1.1.1")));
        // A trusted proxy: the nearest address that is not one of ours.
        assert_eq!(lb.client(Some(ip("10.1.1.1")), &headers(&["203.0.113.7"])), Some(ip("203.0.113.7")));
        assert_eq!(
            lb.client(Some(ip("10.1.1.1")), &headers(&["198.51.100.9, 203.0.113.7, 10.2.2.2"])),
            Some(ip("203.0.113.7")),
            "a spoofed address to the left of the client's is not believed"
        );
        assert_eq!(
            lb.client(Some(ip("192.0.2.1")), &headers(&["203.0.113.7", "10.3.3.3"])),
            Some(ip("203.0.113.7"))
        );
        // An untrusted peer's header is ignored; a malformed one from a trusted peer too.
        assert_eq!(lb.client(Some(ip("198.51.100.1")), &headers(&["203.0.113.7"])), Some(ip("198.51.100.1")));
        assert_eq!(lb.client(Some(ip("10.1.1.1")), &headers(&["not-an-ip"])), Some(ip("10.1.1.1")));
        // Garbage a client writes to the left of its own address cannot hide that address.
        assert_eq!(
            lb.client(Some(ip("10.1.1.1")), &headers(&["garbage, 203.0.113.7"])),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            lb.client(Some(ip("10.1.1.1")), &headers(&["\u{e9}t\u{e9}", "203.0.113.7"])),
            Some(ip("203.0.113.7"))
        );
        // An IPv4-mapped peer is its IPv4 address (trusted or not as such).
        assert_eq!(
            lb.client(Some(ip("::ffff:10.1.1.1")), &headers(&["203.0.113.7"])),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(none.client(Some(ip("::ffff:198.51.100.1")), &headers(&[])), Some(ip("198.51.100.1")));
        // Only proxies in the chain: the farthest.
        assert_eq!(lb.client(Some(ip("10.1.1.1")), &headers(&["10.9.9.9"])), Some(ip("10.9.9.9")));
        assert_eq!(lb.client(None, &headers(&["203.0.113.7"])), None);
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
    }
}
