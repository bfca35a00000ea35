//! Where to connect for a remote domain: a static `[s2s.routes]` entry first, else DNS SRV
//! (`_xmpps-server._tcp` for direct TLS, `_xmpp-server._tcp` for STARTTLS, merged by
//! priority and weight as XEP-0368 §3 asks), else the domain's A/AAAA records on port 5269
//! (RFC 6120 §3.2.2). Produces candidates only; it must not connect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_resolver::proto::rr::RData;
pub use hickory_resolver::TokioResolver;

/// RFC 6120 §3.2.2: the fallback port when there are no SRV records.
pub const DEFAULT_PORT: u16 = 5269;

/// One place to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// XEP-0368: TLS from the first byte instead of STARTTLS.
    pub direct_tls: bool,
}

/// Parses a static route value: `"host:port"` (STARTTLS) or `"tls://host:port"` (direct TLS).
pub fn parse_route(value: &str) -> Option<Target> {
    let (direct_tls, rest) = match value.strip_prefix("tls://") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    if host.is_empty() {
        return None;
    }
    Some(Target {
        host: host.to_string(),
        port,
        direct_tls,
    })
}

/// One SRV answer, kept for ordering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Among equal priorities, higher is preferred.
    pub weight: u16,
    /// Target host.
    pub target: String,
    /// Port.
    pub port: u16,
    /// From `_xmpps-server` (direct TLS).
    pub direct_tls: bool,
}

/// Orders SRV answers as RFC 2782 asks: by priority, and within a priority by weighted random
/// draws, so that servers of one priority share the load in proportion to their weights
/// (XEP-0368 §3: `_xmpps-server` and `_xmpp-server` answers form one list). A lone "." target
/// means the service is decidedly not available (RFC 2782), and yields nothing.
pub fn order_srv(records: Vec<SrvRecord>) -> Vec<Target> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    order_srv_with(records, |total| rng.gen_range(0..=total))
}

/// [`order_srv`] with the draw given: `draw(total)` is uniform in `0..=total`.
fn order_srv_with(mut records: Vec<SrvRecord>, mut draw: impl FnMut(u32) -> u32) -> Vec<Target> {
    records.retain(|r| !r.target.is_empty() && r.target != ".");
    // RFC 2782: weight 0 first within a priority (they are picked only when the draw is 0);
    // direct TLS next, so that on a draw of 0 among equals it wins (it saves a round trip).
    records.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then((a.weight > 0).cmp(&(b.weight > 0)))
            .then(b.direct_tls.cmp(&a.direct_tls))
    });
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == group[0].priority) {
            group.push(r);
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let n = draw(total);
            let mut running = 0;
            let pick = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= n
                })
                .unwrap_or(group.len() - 1);
            let r = group.remove(pick);
            out.push(Target {
                host: r.target.trim_end_matches('.').to_string(),
                port: r.port,
                direct_tls: r.direct_tls,
            });
        }
    }
    out
}

/// The DNS resolver of the system configuration, `None` (logged) if it cannot be built: then
/// [`targets`] and [`addrs`] fall back to the domain itself and the system lookup.
pub fn system_resolver() -> Option<TokioResolver> {
    match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver; s2s uses the system lookup");
            None
        }
    }
}

/// The targets for `domain`, in the order to try them.
pub async fn targets(
    routes: &std::collections::BTreeMap<String, String>,
    resolver: Option<&TokioResolver>,
    domain: &str,
) -> Vec<Target> {
    if let Some(route) = routes
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(domain))
        .and_then(|(_, v)| parse_route(v))
    {
        return vec![route];
    }
    // An address literal as the domain has no SRV records to ask DNS for (and no DNS
    // question about it should leave the machine).
    if literal_ip(domain).is_some() {
        return vec![Target {
            host: domain
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: DEFAULT_PORT,
            direct_tls: false,
        }];
    }
    let Some(resolver) = resolver else {
        return vec![Target {
            host: domain.to_string(),
            port: DEFAULT_PORT,
            direct_tls: false,
        }];
    };
    let mut records = Vec::new();
    let mut any_srv = false;
    for (service, direct_tls) in [("_xmpps-server._tcp", true), ("_xmpp-server._tcp", false)] {
        let name = format!("{service}.{domain}.");
        if let Ok(lookup) = resolver.srv_lookup(name.as_str()).await {
            for rec in lookup.answers() {
                if let RData::SRV(srv) = &rec.data {
                    any_srv = true;
                    records.push(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        target: srv.target.to_ascii(),
                        port: srv.port,
                        direct_tls,
                    });
                }
            }
        }
    }
    if any_srv {
        return order_srv(records);
    }
    vec![Target {
        host: domain.to_string(),
        port: DEFAULT_PORT,
        direct_tls: false,
    }]
}

/// `domain` as an IP address when it is an address literal (IPv6 in brackets or not).
pub fn literal_ip(domain: &str) -> Option<IpAddr> {
    domain
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `ip` is a public unicast address, one a remote XMPP server may have. Refused:
/// unspecified, loopback, private (RFC 1918, IPv6 unique local), shared (RFC 6598),
/// link-local, multicast, broadcast, documentation and benchmarking ranges, IETF protocol
/// assignments (192.0.0.0/24), 0.0.0.0/8 and 240.0.0.0/4; an IPv4-mapped or NAT64-free
/// IPv4-compatible IPv6 address is judged as the IPv4 address it carries. Without this a
/// user could make the server connect into its own network by naming a domain whose DNS
/// points there.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global_v4(v4);
            }
            let s = v6.segments();
            // ::/96 (IPv4-compatible, deprecated) covers :: and ::1 as well.
            if s[..6].iter().all(|x| *x == 0) {
                return false;
            }
            let unique_local = s[0] & 0xfe00 == 0xfc00;
            let link_local = s[0] & 0xffc0 == 0xfe80;
            let site_local = s[0] & 0xffc0 == 0xfec0;
            let multicast = s[0] & 0xff00 == 0xff00;
            let documentation = s[0] == 0x2001 && s[1] == 0x0db8 || s[0] & 0xfff0 == 0x3ff0;
            let benchmarking = s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0;
            // 64:ff9b:1::/48 is the local-use NAT64 prefix (RFC 8215).
            let local_nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1;
            let discard = s[0] == 0x0100 && s[1..4].iter().all(|x| *x == 0);
            !(unique_local
                || link_local
                || site_local
                || multicast
                || documentation
                || benchmarking
                || local_nat64
                || discard)
        }
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let this_network = o[0] == 0;
    let shared = o[0] == 100 && (o[1] & 0xc0) == 64;
    let ietf = o[0] == 192 && o[1] == 0 && o[2] == 0;
    let benchmarking = o[0] == 198 && (o[1] & 0xfe) == 18;
    let reserved = o[0] >= 240;
    !(this_network
        || ip.is_loopback()
        || ip.is_private()
        || shared
        || ip.is_link_local()
        || ietf
        || ip.is_documentation()
        || benchmarking
        || ip.is_multicast()
        || reserved)
}

/// The socket addresses of a target (an IP literal is used as is).
pub async fn addrs(resolver: Option<&TokioResolver>, t: &Target) -> Vec<SocketAddr> {
    if let Ok(ip) = t.host.parse::<std::net::IpAddr>() {
        return vec![SocketAddr::new(ip, t.port)];
    }
    match resolver {
        Some(r) => match r.lookup_ip(format!("{}.", t.host).as_str()).await {
            Ok(l) => l.iter().map(|ip| SocketAddr::new(ip, t.port)).collect(),
            Err(e) => {
                tracing::debug!(host = %t.host, error = %e, "address lookup failed");
                Vec::new()
            }
        },
        None => tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map(|i| i.collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_with_and_without_direct_tls() {
        assert_eq!(
            parse_route("127.0.0.1:25269"),
            Some(Target {
                host: "127.0.0.1".into(),
                port: 25269,
                direct_tls: false
            })
        );
        assert_eq!(
            parse_route("tls://[::1]:5270"),
            Some(Target {
                host: "::1".into(),
                port: 5270,
                direct_tls: true
            })
        );
        assert_eq!(parse_route("host"), None);
        assert_eq!(parse_route(":5269"), None);
        assert_eq!(parse_route("h:0"), None);
    }

    fn rec(p: u16, w: u16, t: &str, d: bool) -> SrvRecord {
        SrvRecord {
            priority: p,
            weight: w,
            target: t.into(),
            port: 1,
            direct_tls: d,
        }
    }

    fn hosts(t: Vec<Target>) -> Vec<(String, bool)> {
        t.into_iter().map(|t| (t.host, t.direct_tls)).collect()
    }

    #[test]
    fn srv_order_is_by_priority_then_by_weighted_draws() {
        let records = vec![
            rec(20, 0, "c.example.", false),
            rec(10, 10, "b.example.", false),
            rec(10, 30, "w.example.", false),
            rec(10, 0, "z.example.", true),
            rec(5, 0, ".", false),
        ];
        // Draws at the top of each range: the last of the running sums wins, so weight 30
        // before 10, and weight 0 only last. Priority 20 comes after all of priority 10.
        let got = hosts(order_srv_with(records.clone(), |total| total));
        assert_eq!(
            got,
            vec![
                ("w.example".to_string(), false),
                ("b.example".to_string(), false),
                ("z.example".to_string(), true),
                ("c.example".to_string(), false),
            ]
        );
        // A draw of 0 picks a weight-0 record first (RFC 2782: "a very small chance").
        let got = hosts(order_srv_with(records.clone(), |_| 0));
        assert_eq!(got[0], ("z.example".to_string(), true));
        // A draw of 11 falls past b's running sum (10): w.
        let mut draws = vec![11u32, 0, 0, 0].into_iter();
        let got = hosts(order_srv_with(records, |_| draws.next().unwrap_or(0)));
        assert_eq!(got[0].0, "w.example");
    }

    #[test]
    fn equal_priority_servers_share_by_weight() {
        let records = vec![
            rec(10, 1, "a.example", false),
            rec(10, 3, "b.example", false),
        ];
        let n = 4000;
        let b_first = (0..n)
            .filter(|_| order_srv(records.clone())[0].host == "b.example")
            .count();
        // RFC 2782 draws from 0 to the sum inclusive and takes the first running sum >= the
        // draw: of the draws 0..=4, b gets 2, 3 and 4, so 3/5. The bounds are nine standard
        // deviations away.
        assert!((2100..2700).contains(&b_first), "{b_first} of {n}");
    }

    #[test]
    fn equal_priority_and_weight_prefers_direct_tls_on_a_zero_draw() {
        let got = hosts(order_srv_with(
            vec![
                rec(10, 0, "a.example", false),
                rec(10, 0, "t.example", true),
            ],
            |_| 0,
        ));
        assert_eq!(got[0], ("t.example".to_string(), true));
    }

    #[test]
    fn only_global_addresses_are_global() {
        let table: &[(&str, bool)] = &[
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("192.0.2.1", false),    // TEST-NET-1
            ("198.51.100.7", false), // TEST-NET-2
            ("203.0.113.9", false),  // TEST-NET-3
            ("127.0.0.1", false),    // loopback
            ("127.255.0.1", false),  // loopback
            ("10.1.2.3", false),     // RFC 1918
            ("172.16.0.1", false),   // RFC 1918
            ("172.32.0.1", true),    // just outside 172.16/12
            ("192.168.1.1", false),  // RFC 1918
            ("100.64.0.1", false),   // shared (CGNAT)
            ("100.128.0.1", true),   // just outside 100.64/10
            ("169.254.1.1", false),  // link-local
            ("0.0.0.0", false),      // unspecified
            ("0.1.2.3", false),      // this network
            ("224.0.0.1", false),    // multicast
            ("255.255.255.255", false),
            ("240.0.0.1", false),  // reserved
            ("198.18.0.1", false), // benchmarking
            ("192.0.0.8", false),  // IETF protocol assignments
            ("2001:4860:4860::8888", true),
            ("2a00:1450::1", true),
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false), // IPv4-mapped loopback
            ("::ffff:10.0.0.1", false),  // IPv4-mapped private
            ("::ffff:8.8.8.8", true),    // IPv4-mapped public
            ("::127.0.0.1", false),      // IPv4-compatible
            ("fc00::1", false),          // unique local
            ("fd12:3456::1", false),     // unique local
            ("fe80::1", false),          // link-local
            ("fec0::1", false),          // site-local (deprecated)
            ("ff02::1", false),          // multicast
            ("2001:db8::1", false),      // documentation
            ("3fff::1", false),          // documentation (RFC 9637)
            ("2001:2::1", false),        // benchmarking
            ("64:ff9b:1::1", false),     // local-use NAT64
            ("100::1", false),           // discard-only
        ];
        for (ip, want) in table {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(is_global(addr), *want, "{ip}");
        }
    }

    #[tokio::test]
    async fn address_literal_domains_need_no_dns() {
        let routes = std::collections::BTreeMap::new();
        let t = targets(&routes, None, "[::1]").await;
        assert_eq!(t[0].host, "::1");
        assert_eq!(
            literal_ip("[::1]"),
            Some(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(literal_ip("10.0.0.1"), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(literal_ip("example.org"), None);
    }

    #[tokio::test]
    async fn static_route_wins_and_is_case_insensitive() {
        let mut routes = std::collections::BTreeMap::new();
        routes.insert("Example.ORG".to_string(), "tls://127.0.0.1:7".to_string());
        let t = targets(&routes, None, "example.org").await;
        assert_eq!(t.len(), 1);
        assert!(t[0].direct_tls);
        let t = targets(&routes, None, "other.org").await;
        assert_eq!(t[0].port, DEFAULT_PORT);
        assert_eq!(t[0].host, "other.org");
    }
}
