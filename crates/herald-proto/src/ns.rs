//! XML namespace names used by Herald.
//!
//! Only constants live here, so that every crate spells a namespace the same way. It must not
//! grow logic: which namespace a stanza is *in* on the wire is decided by [`crate::stream`].

/// RFC 6120 §4.8.3: content namespace of client-to-server streams (also Herald's internal form).
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 §4.8.3: content namespace of server-to-server streams.
pub const SERVER: &str = "jabber:server";
/// XEP-0114: content namespace of accepted component streams.
pub const COMPONENT: &str = "jabber:component:accept";
/// RFC 6120 §4.8.1: the stream namespace (`stream:` prefix).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 §4.9.2: stream error conditions.
pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3.2: stanza error conditions.
pub const STANZAS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6120 §5: STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6: SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7: resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 / draft-cridland-xmpp-session: legacy session establishment.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XEP-0198: stream management.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352: client state indication.
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0280: message carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297: stanza forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0313: message archive management, current namespace.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0313: message archive management, previous namespace.
pub const MAM1: &str = "urn:xmpp:mam:1";
/// XEP-0059: result set management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0357: push notifications.
pub const PUSH: &str = "urn:xmpp:push:0";
/// Tigase's push priority extension (also Prosody's `mod_cloud_notify_priority_tag`):
/// `<priority>high|low</priority>` inside a XEP-0357 `<notification/>`, advertised on the
/// account's disco#info.
pub const PUSH_PRIORITY: &str = "tigase:push:priority:0";
/// XEP-0060: publish-subscribe.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0030: service discovery, info.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery, items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199: XMPP ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092: software version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0202: entity time.
pub const TIME: &str = "urn:xmpp:time";
/// RFC 6121 §2: roster management.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0191: blocking command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0203: delayed delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0359: unique and stable stanza IDs.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0334: message processing hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0220: server dialback.
pub const DIALBACK: &str = "jabber:server:dialback";
/// RFC 6121 §2.6: roster versioning stream feature.
pub const ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// XEP-0085: chat state notifications.
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0184: message delivery receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0353: Jingle message initiation.
pub const JMI: &str = "urn:xmpp:jingle-message:0";
/// XEP-0357 §5: FORM_TYPE of the push notification summary form.
pub const PUSH_SUMMARY: &str = "urn:xmpp:push:summary";
/// XEP-0384 OMEMO as Conversations first shipped it (the "legacy" namespace).
pub const OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
/// XEP-0384 OMEMO, versions 0.x.
pub const OMEMO_0: &str = "urn:xmpp:omemo:0";
/// XEP-0384 OMEMO, versions 0.8 and later.
pub const OMEMO_2: &str = "urn:xmpp:omemo:2";
/// XEP-0027: legacy OpenPGP encrypted payload.
pub const PGP_ENCRYPTED: &str = "jabber:x:encrypted";
/// XEP-0373: OpenPGP for XMPP (OX).
pub const OPENPGP: &str = "urn:xmpp:openpgp:0";
/// XEP-0054: vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0153: the vCard avatar hash in presence.
pub const VCARD_UPDATE: &str = "vcard-temp:x:update";
/// XEP-0049: private XML storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0077: in-band registration.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077 §8: the in-band registration stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0160: offline message storage, as a disco#info feature.
pub const MSGOFFLINE: &str = "msgoffline";
/// XEP-0115: entity capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0128/XEP-0157: FORM_TYPE of the server's contact addresses form.
pub const SERVERINFO: &str = "http://jabber.org/network/serverinfo";
/// XEP-0401: pre-authenticated roster subscription / registration token.
pub const PARS: &str = "urn:xmpp:pars:0";
/// XEP-0445: pre-authenticated in-band registration (the `<token/>`'s feature).
pub const IBR_TOKEN: &str = "urn:xmpp:ibr-token:0";
/// XEP-0363 HTTP File Upload.
pub const HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// XEP-0215 External Service Discovery.
pub const EXTDISCO: &str = "urn:xmpp:extdisco:2";
/// XEP-0440: the channel-binding types a server supports, in its stream features.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// XEP-0388: extensible SASL profile (SASL2).
pub const SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0386: Bind 2, resource binding inside SASL2.
pub const BIND2: &str = "urn:xmpp:bind:0";
/// XEP-0484: fast authentication streamlining tokens (FAST).
pub const FAST: &str = "urn:xmpp:fast:0";
/// Herald's experimental XEP-0357 enable inline in XEP-0386 Bind2 (crates/herald-push/RULES.md).
pub const PUSH_INLINE: &str = "urn:herald:push:inline:0";
/// XEP-0060 §8: publish-subscribe owner use cases (node configuration, delete, purge).
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 §7: publish-subscribe event notifications.
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 §7.1.3: publish-subscribe application-specific error conditions.
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0045: multi-user chat (the join element, the service and room feature).
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// XEP-0045: occupant information in presence and messages from a room.
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0045: moderator and admin requests (roles, affiliations).
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// XEP-0045: owner requests (room configuration, destruction).
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0421: anonymous unique occupant identifiers.
pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0490: message displayed synchronization, the PEP node and its payload's namespace.
pub const MDS: &str = "urn:xmpp:mds:displayed:0";
/// XEP-0490 §4: the server publishes MDS items from the chat markers its clients send.
pub const MDS_SERVER_ASSIST: &str = "urn:xmpp:mds:server-assist:0";
