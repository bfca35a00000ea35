//! The XEP-0357 §5 publish IQ: the `urn:xmpp:push:summary` form wrapped in a pubsub
//! `<publish/>`, with the client's publish-options copied unchanged.
//!
//! Must not: decide what goes in the form (the engine decides sender, body and count) or
//! send anything.

use minidom::rxml::NcName;
use minidom::Element;

use herald_proto::ns;

use crate::engine::RegKey;

/// How urgently the app server should deliver a push (the Tigase priority hint). An app
/// server maps `high` to an alerting / high-priority (VoIP for calls) push and `low` to a
/// silent, batched one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Something a human waits for: a message, an encrypted payload, an incoming call.
    High,
    /// Presence, chat states, receipts, wake-ups without a stanza.
    Low,
}

impl Priority {
    /// The element text.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Low => "low",
        }
    }
}

/// What one notification says (the engine decides each part).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notice {
    /// `message-count`.
    pub count: u32,
    /// `last-message-sender`; left out when `None`.
    pub sender: Option<String>,
    /// `last-message-body`; left out when `None`.
    pub body: Option<String>,
    /// The priority hint; left out when `None`.
    pub priority: Option<Priority>,
}

/// An attribute name known at compile time.
fn nc(name: &'static str) -> NcName {
    // Only called with literal XML names below, which are always valid NCNames.
    NcName::try_from(name).unwrap_or_else(|_| unreachable!("invalid literal NCName {name}"))
}

fn field(var: &'static str, value: &str) -> Element {
    Element::builder("field", ns::DATA_FORMS)
        .attr(nc("var"), var)
        .append(
            Element::builder("value", ns::DATA_FORMS)
                .append(value)
                .build(),
        )
        .build()
}

/// Builds `<iq type='set' from=domain to=key.jid id=iq_id>` publishing one notification.
///
/// The summary form carries `notice`'s count, sender and body; its priority becomes a
/// `<priority xmlns='tigase:push:priority:0'/>` after the form. `publish_options` (the
/// client's `jabber:x:data` form) is copied unchanged into `<publish-options/>` (XEP-0357 §7).
pub fn build_publish(
    domain: &str,
    iq_id: &str,
    key: &RegKey,
    notice: &Notice,
    publish_options: Option<&Element>,
) -> Element {
    let mut form = Element::builder("x", ns::DATA_FORMS)
        .attr(nc("type"), "submit")
        .append(
            Element::builder("field", ns::DATA_FORMS)
                .attr(nc("var"), "FORM_TYPE")
                .attr(nc("type"), "hidden")
                .append(
                    Element::builder("value", ns::DATA_FORMS)
                        .append(ns::PUSH_SUMMARY)
                        .build(),
                )
                .build(),
        )
        .append(field("message-count", &notice.count.to_string()))
        .build();
    if let Some(sender) = &notice.sender {
        form.append_child(field("last-message-sender", sender));
    }
    if let Some(body) = &notice.body {
        form.append_child(field("last-message-body", body));
    }
    let mut notification = Element::builder("notification", ns::PUSH)
        .append(form)
        .build();
    if let Some(p) = notice.priority {
        notification.append_child(
            Element::builder("priority", ns::PUSH_PRIORITY)
                .append(p.as_str())
                .build(),
        );
    }
    let publish = Element::builder("publish", ns::PUBSUB)
        .attr(nc("node"), key.node.as_str())
        .append(
            Element::builder("item", ns::PUBSUB)
                .append(notification)
                .build(),
        )
        .build();
    let mut pubsub = Element::builder("pubsub", ns::PUBSUB)
        .append(publish)
        .build();
    if let Some(options) = publish_options {
        pubsub.append_child(
            Element::builder("publish-options", ns::PUBSUB)
                .append(options.clone())
                .build(),
        );
    }
    Element::builder("iq", ns::CLIENT)
        .attr(nc("type"), "set")
        .attr(nc("from"), domain)
        .attr(nc("to"), key.jid.as_str())
        .attr(nc("id"), iq_id)
        .append(pubsub)
        .build()
}
