//! A PEP test kit shared by pep.rs and bookmarks.rs: logged-in resources ([`Pc`]) that answer
//! the server's XEP-0115 caps queries with their own features, roster and publish helpers.
//! Included with `#[path]`; each test binary uses part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::common::*;
use herald_proto::Element;
use herald_server::xep::pep as xp;
use herald_store::{RosterItem, Subscription};

pub const PW: &str = "pw";
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const CAPS_NODE: &str = "https://herald.test/client";
pub const NODE: &str = "urn:example:mood";

/// Distinct identities, so that each client's caps `ver` is its own (the server asks each
/// unknown `ver` once).
pub static CLIENTS: AtomicU32 = AtomicU32::new(0);

/// A logged-in resource that answers the server's caps queries with its own features.
pub struct Pc {
    pub raw: RawClient,
    pub jid: String,
    pub seq: u32,
    pub seen: VecDeque<Element>,
    pub ver: String,
    /// Features it claims when asked (a liar's differ from `info`).
    pub answer: Element,
    pub answered: u32,
}

pub fn info_query(name: &str, notify: &[&str], extra: &[&str]) -> Element {
    let mut x = format!(
        "<query xmlns='{DISCO_INFO}'><identity category='client' type='pc' name='{name}'/>\
         <feature var='{DISCO_INFO}'/><feature var='http://jabber.org/protocol/caps'/>"
    );
    for n in notify {
        x.push_str(&format!("<feature var='{n}+notify'/>"));
    }
    for f in extra {
        x.push_str(&format!("<feature var='{f}'/>"));
    }
    x.push_str("</query>");
    x.parse().unwrap()
}

impl Pc {
    pub async fn login(s: &TestServer, user: &str, res: &str, notify: &[&str]) -> Pc {
        let raw = RawClient::login(s.c2s(), user, PW, res).await;
        let jid = format!("{user}@localhost/{res}");
        let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
        let info = info_query(&format!("{jid} {n}"), notify, &[]);
        let ver = xp::caps_ver(&info).unwrap();
        Pc {
            raw,
            jid,
            seq: 0,
            seen: VecDeque::new(),
            answer: info,
            ver,
            answered: 0,
        }
    }

    /// Sends available presence with caps and waits until the server asked what they mean
    /// and has the answer (the barrier after it).
    pub async fn online(&mut self) {
        let presence = format!(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
            self.ver
        );
        self.send(&presence).await;
        let before = self.answered;
        let done = tokio::time::timeout(Duration::from_secs(8), async {
            while self.answered == before {
                let el = self.raw.element().await;
                if let Some(el) = self.handle(el).await {
                    self.seen.push_back(el);
                }
            }
        })
        .await;
        assert!(done.is_ok(), "{}: no caps query came", self.jid);
        let got = self.sync().await;
        self.seen.extend(got);
    }

    /// Answers the server's caps query; anything else is returned.
    pub async fn handle(&mut self, el: Element) -> Option<Element> {
        let is_query = el.name() == "iq"
            && el.attr("type") == Some("get")
            && el
                .get_child("query", DISCO_INFO)
                .and_then(|q| q.attr("node"))
                == Some(&format!("{CAPS_NODE}#{}", self.ver));
        if !is_query {
            return Some(el);
        }
        let mut q = self.answer.clone();
        herald_server::stanza::set(&mut q, "node", format!("{CAPS_NODE}#{}", self.ver));
        let reply = format!(
            "<iq type='result' id='{}' to='{}'>{}</iq>",
            el.attr("id").unwrap_or(""),
            el.attr("from").unwrap_or(""),
            xml(&q)
        );
        self.send(&reply).await;
        self.answered += 1;
        None
    }

    pub fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{}", self.seq)
    }

    pub async fn send(&mut self, x: &str) {
        self.raw.send(x).await
    }

    /// Everything that arrived before a barrier through this session's own inbox.
    pub async fn sync(&mut self) -> Vec<Element> {
        let id = self.next_id("sync");
        let jid = self.jid.clone();
        self.send(&format!("<message to='{jid}' type='headline' id='{id}'/>"))
            .await;
        let mut out: Vec<Element> = self.seen.drain(..).collect();
        loop {
            let el = self.raw.element().await;
            if el.name() == "message" && el.attr("id") == Some(id.as_str()) {
                return out;
            }
            if let Some(el) = self.handle(el).await {
                out.push(el);
            }
        }
    }

    /// The PEP notifications among what arrived before a barrier.
    pub async fn events(&mut self) -> Vec<Element> {
        self.sync()
            .await
            .into_iter()
            .filter_map(|m| m.get_child("event", EVENT).cloned())
            .collect()
    }

    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i).unwrap();
        }
        let found = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                let el = self.raw.element().await;
                if let Some(el) = self.handle(el).await {
                    if pred(&el) {
                        return el;
                    }
                    self.seen.push_back(el);
                }
            }
        })
        .await;
        match found {
            Ok(el) => el,
            Err(_) => panic!("{}: timed out waiting for {what}", self.jid),
        }
    }

    /// Sends an IQ (to `to`, or the own account) and returns its result or error.
    pub async fn iq(&mut self, typ: &str, to: Option<&str>, payload: &str) -> Element {
        let id = self.next_id("iq");
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        self.send(&format!("<iq type='{typ}' id='{id}'{to}>{payload}</iq>"))
            .await;
        self.wait(&format!("the reply to {id}"), |e| {
            e.name() == "iq"
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result") | Some("error"))
        })
        .await
    }

    pub async fn publish(
        &mut self,
        node: &str,
        id: &str,
        text: &str,
        options: &[(&str, &str)],
    ) -> Element {
        let item = if id.is_empty() {
            "<item>".to_string()
        } else {
            format!("<item id='{id}'>")
        };
        self.iq(
            "set",
            None,
            &format!(
                "<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}<mood xmlns='{NODE}'><text>{text}</text></mood></item></publish>{}</pubsub>",
                publish_options(options)
            ),
        )
        .await
    }

    /// The item ids (and texts) of `owner`'s node, or the error.
    pub async fn items(
        &mut self,
        owner: &str,
        node: &str,
    ) -> Result<Vec<(String, String)>, Element> {
        let r = self
            .iq(
                "get",
                Some(owner),
                &format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>"),
            )
            .await;
        if r.attr("type") != Some("result") {
            return Err(r);
        }
        Ok(r.get_child("pubsub", PUBSUB)
            .and_then(|p| p.get_child("items", PUBSUB))
            .map(|i| {
                i.children()
                    .map(|it| {
                        (
                            it.attr("id").unwrap_or("").to_string(),
                            it.children()
                                .next()
                                .and_then(|m| m.children().next())
                                .map(|t| t.text())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

pub fn publish_options(options: &[(&str, &str)]) -> String {
    if options.is_empty() {
        return String::new();
    }
    let mut x = format!(
        "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{}</value></field>",
        xp::PUBLISH_OPTIONS
    );
    for (k, v) in options {
        x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    x.push_str("</x></publish-options>");
    x
}

/// (stanza condition, pubsub#errors condition) of an error reply.
pub fn error_of(r: &Element) -> (String, Option<String>) {
    assert_eq!(r.attr("type"), Some("error"), "{}", xml(r));
    let e = r.get_child("error", "jabber:client").unwrap();
    let cond = e
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    let app = e
        .children()
        .find(|c| c.ns() == ERRORS)
        .map(|c| c.name().to_string());
    (cond, app)
}

pub fn ok(r: &Element) {
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(r));
}

/// (node, item ids, retracted ids) of an `<event/>`'s `<items/>`; node and `purge`/`delete`.
pub fn event_summary(ev: &Element) -> String {
    let c = ev.children().next().unwrap();
    let node = c.attr("node").unwrap_or("");
    let mut s = format!("{} {node}", c.name());
    for i in c.children() {
        s.push_str(&format!(" {}:{}", i.name(), i.attr("id").unwrap_or("")));
    }
    s
}

pub fn relate(s: &TestServer, user: &str, contact: &str, sub: Subscription) {
    let item = RosterItem {
        jid: format!("{contact}@localhost"),
        name: None,
        subscription: sub,
        ask: false,
        groups: Vec::new(),
    };
    s.running
        .shared
        .store
        .set_roster_item(&format!("{user}@localhost"), &item)
        .unwrap();
}

pub fn befriend(s: &TestServer, a: &str, b: &str) {
    relate(s, a, b, Subscription::Both);
    relate(s, b, a, Subscription::Both);
}

pub async fn server(users: &[&str]) -> TestServer {
    server_with(users, |_| {}).await
}

pub async fn server_with(users: &[&str], f: impl FnOnce(&mut herald_server::Config)) -> TestServer {
    let s = TestServer::start_with(f).await;
    for u in users {
        s.add_user(u, PW);
    }
    s
}
