//! The XEP-0357 §5 publish IQ: the `urn:xmpp:push:summary` form wrapped in a pubsub
//! `<publish/>`, with the client's publish-options copied unchanged.
//!
//! Must not: decide what goes in the form (the engine decides sender, body and count) or
//! send anything.

use minidom::rxml::NcName;
use minidom::Element;

use crate::classify::NS_CLIENT;
use crate::engine::RegKey;

/// XEP-0060 pubsub.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0357 push.
pub const NS_PUSH: &str = "urn:xmpp:push:0";
/// XEP-0004 data forms.
pub const NS_DATA: &str = "jabber:x:data";
/// XEP-0357 §5: FORM_TYPE of the notification summary.
pub const PUSH_SUMMARY: &str = "urn:xmpp:push:summary";

/// An attribute name known at compile time.
fn nc(name: &'static str) -> NcName {
    // Only called with literal XML names below, which are always valid NCNames.
    NcName::try_from(name).unwrap_or_else(|_| unreachable!("invalid literal NCName {name}"))
}

fn field(var: &'static str, value: &str) -> Element {
    Element::builder("field", NS_DATA)
        .attr(nc("var"), var)
        .append(Element::builder("value", NS_DATA).append(value).build())
        .build()
}

/// Builds `<iq type='set' from=domain to=key.jid id=iq_id>` publishing one notification.
///
/// `sender` becomes `last-message-sender`, `body` becomes `last-message-body`; each is left
/// out when `None`. `publish_options` (the client's `jabber:x:data` form) is copied
/// unchanged into `<publish-options/>` (XEP-0357 §7).
pub fn build_publish(
    domain: &str,
    iq_id: &str,
    key: &RegKey,
    count: u32,
    sender: Option<&str>,
    body: Option<&str>,
    publish_options: Option<&Element>,
) -> Element {
    let mut form = Element::builder("x", NS_DATA)
        .attr(nc("type"), "submit")
        .append(
            Element::builder("field", NS_DATA)
                .attr(nc("var"), "FORM_TYPE")
                .attr(nc("type"), "hidden")
                .append(
                    Element::builder("value", NS_DATA)
                        .append(PUSH_SUMMARY)
                        .build(),
                )
                .build(),
        )
        .append(field("message-count", &count.to_string()))
        .build();
    if let Some(sender) = sender {
        form.append_child(field("last-message-sender", sender));
    }
    if let Some(body) = body {
        form.append_child(field("last-message-body", body));
    }
    let notification = Element::builder("notification", NS_PUSH)
        .append(form)
        .build();
    let publish = Element::builder("publish", NS_PUBSUB)
        .attr(nc("node"), key.node.as_str())
        .append(
            Element::builder("item", NS_PUBSUB)
                .append(notification)
                .build(),
        )
        .build();
    let mut pubsub = Element::builder("pubsub", NS_PUBSUB)
        .append(publish)
        .build();
    if let Some(options) = publish_options {
        pubsub.append_child(
            Element::builder("publish-options", NS_PUBSUB)
                .append(options.clone())
                .build(),
        );
    }
    Element::builder("iq", NS_CLIENT)
        .attr(nc("type"), "set")
        .attr(nc("from"), domain)
        .attr(nc("to"), key.jid.as_str())
        .attr(nc("id"), iq_id)
        .append(pubsub)
        .build()
}
