//! Where to connect for a remote domain: a static `[s2s.routes]` entry first, else DNS SRV
//! (`_xmpps-server._tcp` for direct TLS, `_xmpp-server._tcp` for STARTTLS, merged by
//! priority and weight as XEP-0368 §3 asks), else the domain's A/AAAA records on port 5269
//! (RFC 6120 §3.2.2). Produces candidates only; it must not connect.

use std::net::SocketAddr;

use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

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

/// Orders SRV answers: priority ascending, then weight descending, direct TLS first on ties
/// (it saves a round trip). RFC 2782's weighted random choice is replaced by a stable order:
/// with one server per priority, which is the common case, both agree. A lone "." target means
/// the service is decidedly not available (RFC 2782), and yields nothing.
pub fn order_srv(mut records: Vec<SrvRecord>) -> Vec<Target> {
    records.retain(|r| !r.target.is_empty() && r.target != ".");
    records.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.weight.cmp(&a.weight))
            .then(b.direct_tls.cmp(&a.direct_tls))
    });
    records
        .into_iter()
        .map(|r| Target {
            host: r.target.trim_end_matches('.').to_string(),
            port: r.port,
            direct_tls: r.direct_tls,
        })
        .collect()
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

    #[test]
    fn srv_order_is_priority_then_weight_then_direct_tls() {
        let r = |p, w, t: &str, d| SrvRecord {
            priority: p,
            weight: w,
            target: t.into(),
            port: 1,
            direct_tls: d,
        };
        let got: Vec<_> = order_srv(vec![
            r(20, 0, "c.example.", false),
            r(10, 5, "b.example.", false),
            r(10, 5, "a.example.", true),
            r(10, 50, "w.example.", false),
            r(5, 0, ".", false),
        ])
        .into_iter()
        .map(|t| (t.host, t.direct_tls))
        .collect();
        assert_eq!(
            got,
            vec![
                ("w.example".to_string(), false),
                ("a.example".to_string(), true),
                ("b.example".to_string(), false),
                ("c.example".to_string(), false),
            ]
        );
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
