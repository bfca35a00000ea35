//! Test kit: a server on loopback ports chosen by the OS with a temporary data dir, and a raw
//! XML client that speaks bytes and reads back parsed elements (with herald-proto's decoder,
//! the same one the server trusts, so assertions are on structure, not on byte layout).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use herald_proto::stream::{Decoder, Limits, StreamEvent, StreamHeader};
use herald_proto::Element;
use herald_server::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.data_dir = dir.join("data");
    cfg.c2s.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.c2s.direct_tls_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.c2s.require_encryption = false;
    cfg.c2s.auth_failure_delay = herald_server::config::Dur(Duration::from_millis(10));
    cfg.components.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.components
        .component
        .push(herald_server::config::ComponentEntry {
            domain: "push.localhost".into(),
            secret: "s3cret".into(),
        });
    cfg
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        f(&mut cfg);
        let running = herald_server::start(cfg).await.unwrap();
        TestServer { running, dir }
    }

    pub fn c2s(&self) -> SocketAddr {
        self.running.c2s_addr.unwrap()
    }

    pub fn component_addr(&self) -> SocketAddr {
        self.running.component_addr.unwrap()
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let cfg = &self.running.shared.cfg;
        let jid = herald_server::admin::account_jid(cfg, name).unwrap();
        herald_server::admin::add_user(&self.running.shared.store, &jid, password).unwrap();
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    pub decoder: Decoder,
    pub header: Option<StreamHeader>,
    pub closed: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        RawClient {
            stream,
            decoder: Decoder::new(Limits {
                max_stanza_bytes: 1 << 22,
                ..Limits::default()
            }),
            header: None,
            closed: false,
        }
    }

    pub async fn send(&mut self, s: &str) {
        self.stream.write_all(s.as_bytes()).await.unwrap();
    }

    pub async fn open(&mut self, to: &str) {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
        ))
        .await;
    }

    /// Next event from the server, or None at EOF. Panics after WAIT.
    pub async fn event(&mut self) -> Option<StreamEvent> {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.decoder.next_event() {
                    Ok(Some(ev)) => return Some(ev),
                    Ok(None) => {}
                    Err(e) => panic!("server sent bad XML: {e:?}"),
                }
                let mut buf = [0u8; 4096];
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        self.closed = true;
                        return None;
                    }
                    Ok(n) => self.decoder.feed(&buf[..n]),
                }
            }
        })
        .await
        .expect("timed out waiting for the server")
    }

    /// Next element, skipping the header (remembered). Panics on EOF or end.
    pub async fn element(&mut self) -> Element {
        loop {
            match self.event().await {
                Some(StreamEvent::Header(h)) => self.header = Some(h),
                Some(StreamEvent::Stanza(el)) => return el,
                other => panic!("expected an element, got {other:?}"),
            }
        }
    }

    /// Next element named `name`, skipping presence (self-presence, contacts' presence)
    /// unless presence is what is expected.
    pub async fn expect(&mut self, name: &str) -> Element {
        loop {
            let el = self.element().await;
            if el.name() == "presence" && name != "presence" {
                continue;
            }
            assert_eq!(el.name(), name, "got {}", String::from(&el));
            return el;
        }
    }

    /// The stream error condition the server ends with (reads until it).
    pub async fn stream_error(&mut self) -> String {
        loop {
            match self.event().await {
                Some(StreamEvent::Header(h)) => self.header = Some(h),
                Some(StreamEvent::Stanza(el)) if el.name() == "error" => {
                    let cond = el
                        .children()
                        .find(|c| {
                            c.ns() == "urn:ietf:params:xml:ns:xmpp-streams" && c.name() != "text"
                        })
                        .map(|c| c.name().to_string())
                        .unwrap_or_default();
                    return cond;
                }
                Some(StreamEvent::Stanza(_)) => continue,
                other => panic!("expected a stream error, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes the stream or the socket.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.event().await {
                None | Some(StreamEvent::End) => return,
                Some(_) => continue,
            }
        }
    }

    /// Opens a stream and authenticates with PLAIN over plaintext, binds `resource`.
    pub async fn login(addr: SocketAddr, user: &str, password: &str, resource: &str) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        c.open("localhost").await;
        let f = c.expect("features").await;
        assert!(
            f.children().any(|m| m.name() == "mechanisms"),
            "{}",
            String::from(&f)
        );
        let creds =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await;
        let s = c.element().await;
        assert_eq!(s.name(), "success", "{}", String::from(&s));
        c.decoder.reset();
        c.open("localhost").await;
        c.expect("features").await;
        c.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let r = c.expect("iq").await;
        assert_eq!(r.attr("type"), Some("result"), "{}", String::from(&r));
        c
    }
}

pub fn xml(el: &Element) -> String {
    String::from(el)
}

pub fn child<'a>(el: &'a Element, name: &str) -> Option<&'a Element> {
    el.children().find(|c| c.name() == name)
}
