//! XMPP over WebSocket (RFC 7395) for the bench: a connection task bridges the byte stream
//! the rest of the bench speaks to WebSocket text messages, one per top-level element, so every
//! scenario runs unchanged over either transport.
//!
//! Outbound, the bench's stream header becomes `<open/>`, its `</stream:stream>` a `<close/>`,
//! and each element one message (with `xmlns='jabber:client'` added where the element has no
//! namespace of its own, since a WebSocket message has no enclosing stream to inherit it from).
//! Inbound, `<open/>` becomes a stream header and `<close/>` the stream's end. The hop through
//! the task costs one in-process channel copy each way, included in the WebSocket figures.

use crate::error::{BenchError, Result};
use crate::xml::{Event, Framer};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// Bytes buffered between the bench and the connection task, each way.
const PIPE_BYTES: usize = 256 * 1024;

/// Where a WebSocket URL points: `(host, port)`, for the TCP connection under it.
pub fn endpoint(url: &str) -> Result<(String, u16)> {
    let req = url
        .into_client_request()
        .map_err(|e| BenchError::Io(std::io::Error::other(format!("websocket url: {e}"))))?;
    let uri = req.uri();
    if uri.scheme_str() != Some("ws") {
        return Err(BenchError::Io(std::io::Error::other(
            "only ws:// URLs (a plain listener on loopback) are supported",
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| BenchError::Io(std::io::Error::other("websocket url without host")))?;
    Ok((
        host.trim_matches(['[', ']']).to_string(),
        uri.port_u16().unwrap_or(80),
    ))
}

/// Upgrades `tcp` to a WebSocket with the `xmpp` subprotocol and returns the bench's end of
/// the byte bridge; the bridge task ends when either side closes.
pub async fn connect(url: &str, tcp: TcpStream, domain: &str) -> Result<DuplexStream> {
    let mut req = url
        .into_client_request()
        .map_err(|e| BenchError::Io(std::io::Error::other(format!("websocket url: {e}"))))?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("xmpp"));
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| BenchError::Io(std::io::Error::other(format!("websocket upgrade: {e}"))))?;
    // RFC 7395 §3.1: a server that did not agree to `xmpp` is not speaking XMPP to us.
    if resp.headers().get("Sec-WebSocket-Protocol") != Some(&HeaderValue::from_static("xmpp")) {
        return Err(BenchError::NotOffered("the xmpp WebSocket subprotocol"));
    }
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(bridge(ws, theirs, domain.to_string()));
    Ok(ours)
}

async fn bridge(ws: WebSocketStream<TcpStream>, mut local: DuplexStream, domain: String) {
    let (mut sink, mut stream) = ws.split();
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = local.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                // A stream restart (after SASL): the bench writes a fresh header and expects a
                // fresh stream, so the outbound framer starts over too. The bench writes the
                // header alone, after the server's <success/>, so it starts a chunk.
                if is_header(chunk) {
                    framer = Framer::new();
                }
                framer.push(chunk);
                let mut out = Vec::new();
                loop {
                    match framer.next_event() {
                        Ok(Some(Event::StreamOpen(_))) => out.push(open_message(&domain)),
                        Ok(Some(Event::Element(r))) => out.push(with_client_ns(framer.slice(r))),
                        Ok(Some(Event::StreamClose)) => {
                            out.push(format!("<close xmlns='{FRAMING_NS}'/>"))
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                for m in out {
                    if sink.send(Message::text(m)).await.is_err() {
                        return;
                    }
                }
            }
            m = stream.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) | Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if local.write_all(inbound(text.as_str()).as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    }
    // Both ends learn the stream is over: the bench reads EOF, the server a close frame.
    let _ = local.shutdown().await;
    let _ = sink.close().await;
}

fn is_header(chunk: &[u8]) -> bool {
    let t = chunk.trim_ascii_start();
    t.starts_with(b"<?xml") || t.starts_with(b"<stream:stream")
}

fn open_message(domain: &str) -> String {
    format!("<open xmlns='{FRAMING_NS}' to='{domain}' version='1.0'/>")
}

/// RFC 7395 §3.3.3: each message is a complete element in its namespace; the bench writes
/// stanzas bare, relying on the TCP stream's default namespace.
fn with_client_ns(elem: &[u8]) -> String {
    let s = String::from_utf8_lossy(elem);
    let tag_end = s.find(['>', '/']).unwrap_or(s.len());
    if s[..tag_end].contains("xmlns=") {
        return s.into_owned();
    }
    let name_end = s[1..]
        .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
        .map_or(s.len(), |i| i + 1);
    format!("{} xmlns='jabber:client'{}", &s[..name_end], &s[name_end..])
}

/// Turns the framing elements back into the stream header and end the framer expects.
fn inbound(text: &str) -> String {
    let t = text.trim_start();
    if t.starts_with("<open") && t.contains(FRAMING_NS) {
        return "<stream:stream xmlns='jabber:client' \
                xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
            .to_string();
    }
    if t.starts_with("<close") && t.contains(FRAMING_NS) {
        return "</stream:stream>".to_string();
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_stanzas_get_the_client_namespace() {
        assert_eq!(
            with_client_ns(b"<message to='a@b'><body>x</body></message>"),
            "<message xmlns='jabber:client' to='a@b'><body>x</body></message>"
        );
        assert_eq!(with_client_ns(b"<r/>"), "<r xmlns='jabber:client'/>");
        assert_eq!(
            with_client_ns(b"<r xmlns='urn:xmpp:sm:3'/>"),
            "<r xmlns='urn:xmpp:sm:3'/>"
        );
        assert_eq!(
            with_client_ns(
                b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>x</auth>"
            ),
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>x</auth>"
        );
    }

    #[test]
    fn framing_elements_become_the_stream_edges() {
        assert!(inbound(&format!(
            "<open xmlns='{FRAMING_NS}' from='d' id='1' version='1.0'/>"
        ))
        .starts_with("<stream:stream "));
        assert_eq!(
            inbound(&format!("<close xmlns='{FRAMING_NS}'/>")),
            "</stream:stream>"
        );
        assert_eq!(inbound("<message/>"), "<message/>");
        assert!(is_header(b"<?xml version='1.0'?><stream:stream>"));
        assert!(!is_header(b"<message/>"));
    }

    #[test]
    fn endpoint_of_a_url() {
        assert_eq!(
            endpoint("ws://127.0.0.1:5280/xmpp-websocket").ok(),
            Some(("127.0.0.1".to_string(), 5280))
        );
        assert!(endpoint("wss://127.0.0.1/xmpp-websocket").is_err());
    }
}
