//! XEP-0156 host-meta documents (RFC 6415): where a web client finds the XMPP-over-WebSocket
//! endpoint (RFC 7395 §4) of a domain, as XRD XML (`/.well-known/host-meta`) and JSON
//! (`/.well-known/host-meta.json`).
//!
//! Pure: the HTTP side passes the public base URL and serves the text. The endpoint URL is
//! derived from the base URL (`https://` → `wss://`, `http://` → `ws://`) so the advertised
//! link always points at the listener clients were told about, never at a bound address.

/// The XEP-0156 link relation for an RFC 7395 WebSocket endpoint.
pub const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";

/// The path the WebSocket endpoint is served on.
pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";

/// The WebSocket URL for `base_url` (no trailing slash expected, one is tolerated); None if
/// the base URL is neither `https://` nor `http://` (the config validation forbids that).
pub fn websocket_url(base_url: &str) -> Option<String> {
    let base = base_url.trim_end_matches('/');
    let (scheme, rest) = if let Some(rest) = base.strip_prefix("https://") {
        ("wss://", rest)
    } else if let Some(rest) = base.strip_prefix("http://") {
        ("ws://", rest)
    } else {
        return None;
    };
    if rest.is_empty() {
        return None;
    }
    Some(format!("{scheme}{rest}{WEBSOCKET_PATH}"))
}

/// The XRD document listing `websocket` (a URL from [`websocket_url`]) if given.
pub fn xrd(websocket: Option<&str>) -> String {
    let mut out = String::from(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
    );
    if let Some(url) = websocket {
        out.push_str("  <Link rel='");
        out.push_str(REL_WEBSOCKET);
        out.push_str("' href='");
        escape_xml_attr(url, &mut out);
        out.push_str("'/>\n");
    }
    out.push_str("</XRD>\n");
    out
}

/// The JSON form (RFC 6415 appendix A) of the same document.
pub fn json(websocket: Option<&str>) -> String {
    let mut out = String::from("{\"links\":[");
    if let Some(url) = websocket {
        out.push_str("{\"rel\":\"");
        out.push_str(REL_WEBSOCKET);
        out.push_str("\",\"href\":\"");
        escape_json(url, &mut out);
        out.push_str("\"}");
    }
    out.push_str("]}");
    out
}

fn escape_xml_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn escape_json(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_follows_the_base_url_scheme() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "https://example.org",
                Some("wss://example.org/xmpp-websocket"),
            ),
            (
                "https://example.org:5443/",
                Some("wss://example.org:5443/xmpp-websocket"),
            ),
            (
                "http://127.0.0.1:8080",
                Some("ws://127.0.0.1:8080/xmpp-websocket"),
            ),
            (
                "https://example.org/chat",
                Some("wss://example.org/chat/xmpp-websocket"),
            ),
            ("ftp://example.org", None),
            ("https://", None),
            ("", None),
        ];
        for (base, want) in cases {
            assert_eq!(websocket_url(base).as_deref(), *want, "{base}");
        }
    }

    #[test]
    fn xrd_lists_the_link_escaped() {
        assert_eq!(
            xrd(Some("wss://a.example/x?a=1&b='2'")),
            "<?xml version='1.0' encoding='utf-8'?>\n\
             <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
             <Link rel='urn:xmpp:alt-connections:websocket' \
             href='wss://a.example/x?a=1&amp;b=&apos;2&apos;'/>\n</XRD>\n"
        );
        assert!(!xrd(None).contains("<Link"));
    }

    #[test]
    fn json_lists_the_link_escaped() {
        assert_eq!(
            json(Some("wss://a.example/\"x\\")),
            "{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:websocket\",\
             \"href\":\"wss://a.example/\\\"x\\\\\"}]}"
        );
        assert_eq!(json(None), "{\"links\":[]}");
    }
}
