//! Test kit: a fake clock and readers for the engine's actions.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use herald_push::classify::{Importance, Summary};
use herald_push::engine::{Action, Engine, PushConfig, RegKey, Registration, StanzaInfo};
use minidom::Element;

pub const USER: &str = "juliet";

/// A fake clock: instants are `base + offset`.
pub struct Clock {
    pub base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }
    pub fn at(&self, secs: f64) -> Instant {
        self.base + Duration::from_secs_f64(secs)
    }
}

pub fn key(jid: &str, node: &str) -> RegKey {
    RegKey {
        jid: jid.to_owned(),
        node: node.to_owned(),
    }
}

pub fn reg(node: &str, enabled_at: i64, resource: &str) -> Registration {
    Registration {
        key: key("push.example.net", node),
        publish_options: None,
        enabled_at,
        resource: Some(resource.to_owned()),
        lang: None,
        error_count: 0,
    }
}

pub fn stanza(id: u64, importance: Importance) -> StanzaInfo {
    StanzaInfo {
        id,
        importance,
        summary: Summary {
            sender: Some("romeo@example.com".to_owned()),
            body: match importance {
                Importance::Unimportant => None,
                _ => Some(format!("body {id}")),
            },
        },
        own: false,
        at: 0,
    }
}

pub fn imp(id: u64) -> StanzaInfo {
    stanza(id, Importance::Important)
}
pub fn unimp(id: u64) -> StanzaInfo {
    stanza(id, Importance::Unimportant)
}
pub fn urgent(id: u64) -> StanzaInfo {
    stanza(id, Importance::Urgent)
}

pub fn engine(cfg: PushConfig) -> Engine {
    let mut e = Engine::new(PushConfig {
        domain: "example.com".to_owned(),
        ..cfg
    });
    e.load_user(USER, Vec::new());
    e
}

/// One publish as the app server would read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    pub iq_id: String,
    pub user: String,
    pub node: String,
    pub count: u32,
    pub sender: Option<String>,
    pub body: Option<String>,
}

fn field(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.name() == "field" && f.attr("var") == Some(var))
        .and_then(|f| f.get_child("value", "jabber:x:data"))
        .map(|v| v.text())
}

pub fn form_of(iq: &Element) -> Element {
    iq.get_child("pubsub", "http://jabber.org/protocol/pubsub")
        .unwrap()
        .get_child("publish", "http://jabber.org/protocol/pubsub")
        .unwrap()
        .get_child("item", "http://jabber.org/protocol/pubsub")
        .unwrap()
        .get_child("notification", "urn:xmpp:push:0")
        .unwrap()
        .get_child("x", "jabber:x:data")
        .unwrap()
        .clone()
}

pub fn pushes(actions: &[Action]) -> Vec<Push> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish {
                iq_id,
                user,
                key,
                iq,
            } => {
                assert_eq!(iq.attr("id"), Some(iq_id.as_str()));
                assert_eq!(iq.attr("to"), Some(key.jid.as_str()));
                let form = form_of(iq);
                Some(Push {
                    iq_id: iq_id.clone(),
                    user: user.clone(),
                    node: key.node.clone(),
                    count: field(&form, "message-count").unwrap().parse().unwrap(),
                    sender: field(&form, "last-message-sender"),
                    body: field(&form, "last-message-body"),
                })
            }
            _ => None,
        })
        .collect()
}

pub fn nodes(actions: &[Action]) -> Vec<String> {
    let mut n: Vec<String> = pushes(actions).into_iter().map(|p| p.node).collect();
    n.sort();
    n
}

pub fn expiries(actions: &[Action]) -> Vec<(u64, Instant)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetSessionExpiry { session, at } => Some((*session, *at)),
            _ => None,
        })
        .collect()
}

pub fn deletions(actions: &[Action]) -> Vec<RegKey> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DeleteRegistration { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}
