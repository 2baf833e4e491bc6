//! Where an endpoint may point: guards against server-side request forgery (docs/webhooks.md).
//!
//! An organizer names a URL and the core calls it, from inside the operator's network. So an
//! endpoint is `https://` with a host name or a public address, no credentials in it, and every
//! address it resolves to, at each delivery (not only at registration: DNS can change), must be
//! a public unicast one. A host that resolves to a loopback, private, link-local (the cloud's
//! metadata service), shared, documentation or reserved address is refused. Redirects are not
//! followed. `CORE_WEBHOOK_ALLOW_PRIVATE` (development mode only) lifts these rules for local
//! receivers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Longest endpoint URL.
pub const URL_MAX: usize = 2048;

/// Checks an endpoint's URL: the reason it may not be one, or the URL.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > URL_MAX {
        return Err(format!("must be at most {URL_MAX} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err("must be https (a partner's endpoint receives buyers' data)".into()),
        _ => return Err("must be an https URL".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (the signature authenticates the sender)".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    let host = url.host().ok_or("must name a host")?;
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.');
            if !allow_private && (d == "localhost" || d.ends_with(".localhost") || !d.contains('.')) {
                return Err("must name a public host".into());
            }
            None
        }
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public(ip) {
            return Err(format!("must not point at a private or reserved address ({ip})"));
        }
    }
    Ok(url)
}

/// Networks that are not public unicast (IANA's special-purpose registries, RFC 6890 and after).
fn reserved() -> &'static [IpNet] {
    static NETS: std::sync::OnceLock<Vec<IpNet>> = std::sync::OnceLock::new();
    NETS.get_or_init(|| {
        [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "240.0.0.0/4",
            "64:ff9b:1::/48",
            "::/128",
            "::1/128",
            "100::/64",
            "2001::/23",
            "2001:db8::/32",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
            "ff00::/8",
        ]
        .iter()
        .map(|n| n.parse().expect("a network"))
        .collect()
    })
}

/// True for a public unicast address. An IPv6 address that carries an IPv4 one (mapped,
/// compatible, NAT64, 6to4) is judged by the IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => public_v4(v4),
            None => !reserved().iter().any(|n| n.contains(&IpAddr::V6(v6))),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    !reserved().iter().any(|n| n.contains(&IpAddr::V4(ip)))
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let nat64: Ipv6Net = "64:ff9b::/96".parse().expect("a network");
    let compatible = s[..6].iter().all(|x| *x == 0) && !(s[6] == 0 && s[7] <= 1);
    if nat64.contains(&ip) || compatible {
        let o = ip.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if s[0] == 0x2002 {
        let o = ip.octets();
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The dispatcher's resolver: the system's, keeping only public addresses (none left: the
/// attempt fails, naming why). Used for every connection, so a name that changes to a private
/// address between registration and delivery is refused too.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = if found.is_empty() {
                    format!("{host} has no address").into()
                } else {
                    format!("{host} resolves only to private or reserved addresses").into()
                };
                return Err(err);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_https_urls_without_credentials_are_endpoints() {
        for ok in
            ["https://hooks.example.com/in", "https://93.184.215.14:8443/x?y=1", "https://[2606:4700::1111]/"]
        {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/in",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#x",
            "https://localhost/",
            "https://intranet/",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[fd00::1]/",
            "https://0.0.0.0/",
            "https://100.64.0.1/",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://a.example/{}", "x".repeat(URL_MAX)), false).is_err());
        // Development mode's local receivers.
        assert!(check_url("http://127.0.0.1:9999/hook", true).is_ok());
        assert!(check_url("https://u:p@127.0.0.1/", true).is_err(), "credentials never");
    }

    #[test]
    fn addresses_carrying_a_private_ipv4_one_are_private() {
        for private in [
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "::10.0.0.1",
            "fe80::1",
            "64:ff9b:1::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_loopback_addresses() {
        let err = PublicOnly.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        assert!(err.to_string().contains("private or reserved"), "{err}");
    }
}
