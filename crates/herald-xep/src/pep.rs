//! XEP-0163 Personal Eventing Protocol on the XEP-0060 subset clients use, and the XEP-0115
//! entity capabilities that decide who gets notifications.
//!
//! This module parses pubsub requests, holds node configuration (with `publish-options`
//! preconditions, XEP-0060 §7.1.5), decides who may read a node (its access model), builds
//! results and event notifications, and computes and checks XEP-0115 verification strings.
//! It must not read or write nodes, know rosters (callers pass a [`Relation`]) or send
//! anything: the server's `pep` feature does.

use std::collections::BTreeSet;

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::{ns, Element};

use crate::stanza;

/// XEP-0060 §16.4: FORM_TYPE of node configuration forms.
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// XEP-0060 §7.1.5: FORM_TYPE of publish options.
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// The suffix a client adds to a node name in its caps features to ask for notifications
/// (XEP-0163 §4).
pub const NOTIFY_SUFFIX: &str = "+notify";
/// Longest node name accepted (node names are stored and echoed in every notification).
pub const MAX_NODE_NAME: usize = 1024;
/// Longest item id accepted.
pub const MAX_ITEM_ID: usize = 256;
/// Most item ids one `items` or `retract` request may name.
pub const MAX_IDS: usize = 256;

/// Who may read a node's items and get its notifications (XEP-0060 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessModel {
    /// Anyone, including entities on other servers.
    Open,
    /// The owner and contacts with a presence subscription to the owner (`from` or `both`).
    Presence,
    /// The owner and anyone in the owner's roster (every group: no group selection).
    Roster,
    /// The owner only (no affiliation list can be edited, so the whitelist is the owner).
    Whitelist,
}

impl AccessModel {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<AccessModel> {
        match s {
            "open" => Some(AccessModel::Open),
            "presence" => Some(AccessModel::Presence),
            "roster" => Some(AccessModel::Roster),
            "whitelist" => Some(AccessModel::Whitelist),
            _ => None,
        }
    }
}

/// When the last published item is sent (XEP-0060 `pubsub#send_last_published_item`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    /// Never.
    Never,
    /// When an entity subscribes (in PEP: when its +notify interest is first seen).
    OnSub,
    /// Also whenever an interested resource becomes available (XEP-0163 §4.3.2).
    OnSubAndPresence,
}

impl SendLast {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    /// Parses a form value.
    pub fn parse(s: &str) -> Option<SendLast> {
        match s {
            "never" => Some(SendLast::Never),
            "on_sub" => Some(SendLast::OnSub),
            "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }
}

/// A node's configuration: the options this server implements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// `pubsub#persist_items`: items are stored (false: notifications only, nothing kept).
    pub persist_items: bool,
    /// `pubsub#max_items`: items kept, oldest dropped first (never above the server's cap).
    pub max_items: u32,
    /// `pubsub#access_model`.
    pub access_model: AccessModel,
    /// `pubsub#send_last_published_item`.
    pub send_last: SendLast,
    /// `pubsub#notify_retract`: a retraction is notified.
    pub notify_retract: bool,
}

impl Default for NodeConfig {
    /// XEP-0163 §4: PEP nodes default to the presence access model and send the last item
    /// on presence; one item kept, as most PEP payloads (moods, avatars metadata) are state.
    fn default() -> Self {
        NodeConfig {
            persist_items: true,
            max_items: 1,
            access_model: AccessModel::Presence,
            send_last: SendLast::OnSubAndPresence,
            notify_retract: true,
        }
    }
}

/// One option a form asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Opt {
    PersistItems(bool),
    MaxItems(u32),
    Access(AccessModel),
    SendLast(SendLast),
    NotifyRetract(bool),
}

/// Why a form cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormError {
    /// A known field has a value this server does not accept (or beyond `max_items_cap`).
    BadValue(String),
    /// The form is not a data form of the expected FORM_TYPE.
    WrongType,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The options a `jabber:x:data` form asks for. Unknown fields are ignored (as Prosody does:
/// clients send options such as `pubsub#title` or `pubsub#deliver_payloads` that change
/// nothing here); known fields with a value outside what is served are an error. `max`
/// and numbers above `max_items_cap` mean the cap for a configuration, but for a
/// precondition (`exact_max`) a number above the cap cannot be met.
fn form_options(
    form: &Element,
    form_type: &str,
    max_items_cap: u32,
    exact_max: bool,
) -> Result<Vec<Opt>, FormError> {
    if !form.is("x", ns::DATA_FORMS) {
        return Err(FormError::WrongType);
    }
    let mut out = Vec::new();
    for field in crate::children_named(form, "field", ns::DATA_FORMS) {
        let var = field.attr("var").unwrap_or("");
        let value = crate::children_named(field, "value", ns::DATA_FORMS)
            .next()
            .map(|v| v.text())
            .unwrap_or_default();
        let value = value.trim();
        let bad = || FormError::BadValue(var.to_string());
        let opt = match var {
            "FORM_TYPE" => {
                if value != form_type {
                    return Err(FormError::WrongType);
                }
                continue;
            }
            "pubsub#persist_items" => Opt::PersistItems(parse_bool(value).ok_or_else(bad)?),
            "pubsub#notify_retract" => Opt::NotifyRetract(parse_bool(value).ok_or_else(bad)?),
            "pubsub#access_model" => Opt::Access(AccessModel::parse(value).ok_or_else(bad)?),
            "pubsub#send_last_published_item" => {
                Opt::SendLast(SendLast::parse(value).ok_or_else(bad)?)
            }
            "pubsub#max_items" => {
                let n = if value == "max" {
                    max_items_cap
                } else {
                    let n: u32 = value.parse().map_err(|_| bad())?;
                    if n == 0 {
                        return Err(bad());
                    }
                    if n > max_items_cap {
                        if exact_max {
                            return Err(bad());
                        }
                        max_items_cap
                    } else {
                        n
                    }
                };
                Opt::MaxItems(n)
            }
            _ => continue,
        };
        out.push(opt);
    }
    Ok(out)
}

impl NodeConfig {
    fn apply(&mut self, opts: &[Opt]) {
        for o in opts {
            match *o {
                Opt::PersistItems(b) => self.persist_items = b,
                Opt::MaxItems(n) => self.max_items = n,
                Opt::Access(a) => self.access_model = a,
                Opt::SendLast(s) => self.send_last = s,
                Opt::NotifyRetract(b) => self.notify_retract = b,
            }
        }
    }

    fn satisfies(&self, opts: &[Opt]) -> bool {
        let mut c = self.clone();
        c.apply(opts);
        c == *self
    }

    /// The defaults within the server's cap.
    pub fn default_capped(max_items_cap: u32) -> NodeConfig {
        let mut c = NodeConfig::default();
        c.max_items = c.max_items.min(max_items_cap);
        c
    }

    /// This configuration changed by a submitted `pubsub#node_config` form (XEP-0060
    /// §8.2.4): `max` and larger numbers become the cap.
    pub fn configured(&self, form: &Element, max_items_cap: u32) -> Result<NodeConfig, FormError> {
        let opts = form_options(form, NODE_CONFIG, max_items_cap, false)?;
        let mut c = self.clone();
        c.apply(&opts);
        Ok(c)
    }

    /// The configuration of a node auto-created by a publish with these options (XEP-0060
    /// §7.1.5: the default merged with them), or the precondition failure.
    pub fn created_with(
        options: Option<&Element>,
        max_items_cap: u32,
    ) -> Result<NodeConfig, Precondition> {
        let mut c = NodeConfig::default_capped(max_items_cap);
        if let Some(form) = options {
            let opts = form_options(form, PUBLISH_OPTIONS, max_items_cap, true)
                .map_err(|_| Precondition)?;
            c.apply(&opts);
        }
        Ok(c)
    }

    /// XEP-0060 §7.1.5: whether an existing node meets a publish's options; each option must
    /// equal the node's value (`max` stands for the cap, which is what a node set to `max`
    /// holds).
    pub fn check_preconditions(
        &self,
        options: &Element,
        max_items_cap: u32,
    ) -> Result<(), Precondition> {
        let opts = form_options(options, PUBLISH_OPTIONS, max_items_cap, true)
            .map_err(|_| Precondition)?;
        if self.satisfies(&opts) {
            Ok(())
        } else {
            Err(Precondition)
        }
    }

    /// The configuration as a `pubsub#node_config` form of type `form` (XEP-0060 §8.2.1).
    pub fn to_form(&self, max_items_cap: u32) -> Element {
        let mut x = stanza::new("x", ns::DATA_FORMS, &[("type", "form")]);
        let field = |var: &str, typ: &str, value: &str| {
            let mut f = stanza::new("field", ns::DATA_FORMS, &[("var", var), ("type", typ)]);
            f.append_child(stanza::text("value", ns::DATA_FORMS, value));
            f
        };
        let bool_s = |b: bool| if b { "1" } else { "0" };
        x.append_child(field("FORM_TYPE", "hidden", NODE_CONFIG));
        x.append_child(field(
            "pubsub#persist_items",
            "boolean",
            bool_s(self.persist_items),
        ));
        let mut max = field(
            "pubsub#max_items",
            "text-single",
            &self.max_items.to_string(),
        );
        // XEP-0122 bound so a client knows the cap.
        let mut validate = stanza::new(
            "validate",
            "http://jabber.org/protocol/xdata-validate",
            &[("datatype", "xs:integer")],
        );
        validate.append_child(stanza::new(
            "range",
            "http://jabber.org/protocol/xdata-validate",
            &[("min", "1"), ("max", &max_items_cap.to_string())],
        ));
        max.append_child(validate);
        x.append_child(max);
        let mut access = field(
            "pubsub#access_model",
            "list-single",
            self.access_model.as_str(),
        );
        for a in ["open", "presence", "roster", "whitelist"] {
            let mut o = Element::bare("option", ns::DATA_FORMS);
            o.append_child(stanza::text("value", ns::DATA_FORMS, a));
            access.append_child(o);
        }
        x.append_child(access);
        let mut send = field(
            "pubsub#send_last_published_item",
            "list-single",
            self.send_last.as_str(),
        );
        for a in ["never", "on_sub", "on_sub_and_presence"] {
            let mut o = Element::bare("option", ns::DATA_FORMS);
            o.append_child(stanza::text("value", ns::DATA_FORMS, a));
            send.append_child(o);
        }
        x.append_child(send);
        x.append_child(field(
            "pubsub#notify_retract",
            "boolean",
            bool_s(self.notify_retract),
        ));
        x
    }
}

impl NodeConfig {
    /// The configuration as the store keeps it: `key=value` pairs separated by `;`.
    pub fn to_stored(&self) -> String {
        format!(
            "persist_items={};max_items={};access_model={};send_last={};notify_retract={}",
            u8::from(self.persist_items),
            self.max_items,
            self.access_model.as_str(),
            self.send_last.as_str(),
            u8::from(self.notify_retract)
        )
    }

    /// Reads what [`NodeConfig::to_stored`] wrote; keys it does not know (written by a later
    /// version) are skipped, missing ones keep their defaults. None if a value is unreadable.
    pub fn from_stored(s: &str) -> Option<NodeConfig> {
        let mut c = NodeConfig::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            match k {
                "persist_items" => c.persist_items = parse_bool(v)?,
                "max_items" => c.max_items = v.parse().ok().filter(|n| *n > 0)?,
                "access_model" => c.access_model = AccessModel::parse(v)?,
                "send_last" => c.send_last = SendLast::parse(v)?,
                "notify_retract" => c.notify_retract = parse_bool(v)?,
                _ => {}
            }
        }
        Some(c)
    }
}

/// XEP-0060 §6.5.9: the refusal of an items request by someone the access model excludes.
pub fn access_denied(model: AccessModel) -> PepError {
    match model {
        AccessModel::Presence => PepError::app(
            StanzaErrorCondition::NotAuthorized,
            "presence-subscription-required",
        ),
        AccessModel::Roster => {
            PepError::app(StanzaErrorCondition::NotAuthorized, "not-in-roster-group")
        }
        AccessModel::Whitelist | AccessModel::Open => {
            PepError::app(StanzaErrorCondition::NotAllowed, "closed-node")
        }
    }
}

/// A `publish-options` precondition that the node does not meet (or cannot meet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precondition;

/// How the requester stands to the node's owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relation {
    /// The requester is the owner (any of its resources).
    pub owner: bool,
    /// The owner's roster has the requester with subscription `from` or `both` (it sees the
    /// owner's presence).
    pub presence_subscribed: bool,
    /// The requester is in the owner's roster at all.
    pub in_roster: bool,
}

/// Whether an entity standing in `rel` to the owner may read items of (and be notified
/// about) a node with `model`.
pub fn may_read(model: AccessModel, rel: Relation) -> bool {
    rel.owner
        || match model {
            AccessModel::Open => true,
            AccessModel::Presence => rel.presence_subscribed,
            AccessModel::Roster => rel.in_roster,
            AccessModel::Whitelist => false,
        }
}

/// An item to publish or as stored: its id and its payload (one element).
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The item id.
    pub id: String,
    /// The payload.
    pub payload: Element,
}

/// A PEP request, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// XEP-0060 §7.1: publish one item (id generated by the server when absent).
    Publish {
        /// The node.
        node: String,
        /// The item id the client gave.
        id: Option<String>,
        /// The payload.
        payload: Element,
        /// The `publish-options` form, if any.
        options: Option<Element>,
    },
    /// XEP-0060 §7.2: retract items.
    Retract {
        /// The node.
        node: String,
        /// Item ids.
        ids: Vec<String>,
        /// `notify='true'`: tell subscribers.
        notify: bool,
    },
    /// XEP-0060 §6.5: retrieve items (all, these ids, or the `max` most recent).
    Items {
        /// The node.
        node: String,
        /// Requested ids (empty: all).
        ids: Vec<String>,
        /// `max_items`.
        max: Option<u32>,
    },
    /// XEP-0060 §6.1: an explicit subscription (in PEP subscriptions follow presence).
    Subscribe {
        /// The node.
        node: String,
        /// The JID to subscribe.
        jid: String,
    },
    /// XEP-0060 §6.2.
    Unsubscribe {
        /// The node.
        node: String,
        /// The JID to unsubscribe.
        jid: String,
    },
    /// XEP-0060 §8.1: create a node, optionally configured.
    Create {
        /// The node.
        node: String,
        /// The `pubsub#node_config` form, if any.
        config: Option<Element>,
    },
    /// XEP-0060 §8.2: get a node's configuration form.
    ConfigureGet {
        /// The node.
        node: String,
    },
    /// XEP-0060 §8.2.4: submit a node's configuration.
    ConfigureSet {
        /// The node.
        node: String,
        /// The submitted form.
        form: Element,
    },
    /// XEP-0060 §8.3: the default node configuration.
    Default,
    /// XEP-0060 §8.4: delete a node (subscribers are told).
    Delete {
        /// The node.
        node: String,
    },
    /// XEP-0060 §8.5: purge a node's items.
    Purge {
        /// The node.
        node: String,
    },
}

/// A refusal: the stanza error condition, its type and the XEP-0060 application condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepError {
    /// The RFC 6120 condition.
    pub condition: StanzaErrorCondition,
    /// Its type (None: the condition's default).
    pub kind: Option<ErrorType>,
    /// The `pubsub#errors` element name, if any (e.g. `precondition-not-met`).
    pub app: Option<&'static str>,
}

impl PepError {
    /// A plain condition.
    pub fn plain(condition: StanzaErrorCondition) -> PepError {
        PepError {
            condition,
            kind: None,
            app: None,
        }
    }

    /// A condition with a `pubsub#errors` element.
    pub fn app(condition: StanzaErrorCondition, app: &'static str) -> PepError {
        PepError {
            condition,
            kind: None,
            app: Some(app),
        }
    }

    /// XEP-0060 §7.1.5: `conflict` + `precondition-not-met`.
    pub fn precondition() -> PepError {
        PepError::app(StanzaErrorCondition::Conflict, "precondition-not-met")
    }

    /// The error reply to `iq` (None if `iq` is itself an error).
    pub fn reply(&self, iq: &Element) -> Option<Element> {
        let mut r = stanza::error_typed(
            iq,
            self.condition,
            self.kind.unwrap_or_else(|| self.condition.default_type()),
            None,
        )?;
        if let Some(e) = r
            .children_mut()
            .find(|c| c.name() == "error" && c.ns() == iq.ns())
        {
            if let Some(code) = legacy_code(self.condition) {
                stanza::set(e, "code", code);
            }
            if let Some(app) = self.app {
                e.append_child(Element::bare(app, ns::PUBSUB_ERRORS));
            }
        }
        Some(r)
    }
}

/// The XEP-0086 legacy error code of a condition, carried next to it in PEP errors: OMEMO
/// clients still read it (profanity 0.13 publishes its first OMEMO device list only when
/// fetching its own list fails with `code='404'`; on a bare `item-not-found` it never
/// publishes and nobody can encrypt to it). ejabberd sends these codes too.
pub fn legacy_code(c: StanzaErrorCondition) -> Option<&'static str> {
    use StanzaErrorCondition as C;
    Some(match c {
        C::BadRequest | C::JidMalformed | C::UnexpectedRequest => "400",
        C::NotAuthorized => "401",
        C::Forbidden => "403",
        C::ItemNotFound | C::RecipientUnavailable | C::RemoteServerNotFound => "404",
        C::NotAllowed => "405",
        C::NotAcceptable => "406",
        C::RegistrationRequired | C::SubscriptionRequired => "407",
        C::Conflict => "409",
        C::InternalServerError | C::ResourceConstraint | C::UndefinedCondition => "500",
        C::FeatureNotImplemented => "501",
        C::ServiceUnavailable => "503",
        C::RemoteServerTimeout => "504",
        _ => return None,
    })
}

fn bad_request() -> PepError {
    PepError::plain(StanzaErrorCondition::BadRequest)
}

fn node_of(el: &Element) -> Result<String, PepError> {
    match el.attr("node") {
        Some(n) if !n.is_empty() && n.len() <= MAX_NODE_NAME => Ok(n.to_string()),
        Some(n) if n.len() > MAX_NODE_NAME => {
            Err(PepError::plain(StanzaErrorCondition::NotAcceptable))
        }
        // XEP-0060 §6.5.9.3 / §7.1.3.3: node id required.
        _ => Err(PepError::app(
            StanzaErrorCondition::BadRequest,
            "nodeid-required",
        )),
    }
}

fn item_ids(el: &Element, pubsub_ns: &str) -> Result<Vec<String>, PepError> {
    let mut ids = Vec::new();
    for item in crate::children_named(el, "item", pubsub_ns) {
        match item.attr("id") {
            Some(id) if !id.is_empty() && id.len() <= MAX_ITEM_ID => {
                if !ids.iter().any(|i: &String| i == id) {
                    ids.push(id.to_string());
                }
            }
            _ => {
                return Err(PepError::app(
                    StanzaErrorCondition::BadRequest,
                    "item-required",
                ))
            }
        }
        if ids.len() > MAX_IDS {
            return Err(PepError::plain(StanzaErrorCondition::PolicyViolation));
        }
    }
    Ok(ids)
}

/// Parses the payload of a `get`/`set` in the `pubsub` or `pubsub#owner` namespace
/// (`set` says which). Anything not served is `feature-not-implemented` with the XEP-0060
/// `unsupported` condition naming nothing (the caller may refine), malformed requests
/// `bad-request`.
pub fn parse(payload: &Element, set: bool) -> Result<Request, PepError> {
    let unsupported = || PepError::app(StanzaErrorCondition::FeatureNotImplemented, "unsupported");
    if payload.is("pubsub", ns::PUBSUB) {
        let mut children = payload.children();
        let first = children.next().ok_or_else(bad_request)?;
        match (set, first.name()) {
            (true, "publish") => {
                let node = node_of(first)?;
                let mut items = crate::children_named(first, "item", ns::PUBSUB);
                let item = items.next().ok_or_else(|| {
                    PepError::app(StanzaErrorCondition::BadRequest, "item-required")
                })?;
                if items.next().is_some() {
                    // XEP-0060 §7.1.3.6: one item per publish.
                    return Err(PepError::app(
                        StanzaErrorCondition::BadRequest,
                        "invalid-payload",
                    ));
                }
                let mut payloads = item.children();
                let content = payloads
                    .next()
                    .ok_or_else(|| {
                        PepError::app(StanzaErrorCondition::BadRequest, "payload-required")
                    })?
                    .clone();
                if payloads.next().is_some() {
                    return Err(PepError::app(
                        StanzaErrorCondition::BadRequest,
                        "invalid-payload",
                    ));
                }
                let id = match item.attr("id") {
                    Some(id) if id.len() > MAX_ITEM_ID => {
                        return Err(PepError::plain(StanzaErrorCondition::NotAcceptable))
                    }
                    Some("") | None => None,
                    Some(id) => Some(id.to_string()),
                };
                let options = payload_options(payload)?;
                Ok(Request::Publish {
                    node,
                    id,
                    payload: content,
                    options,
                })
            }
            (true, "retract") => {
                let node = node_of(first)?;
                let ids = item_ids(first, ns::PUBSUB)?;
                if ids.is_empty() {
                    return Err(PepError::app(
                        StanzaErrorCondition::BadRequest,
                        "item-required",
                    ));
                }
                let notify = first.attr("notify").and_then(parse_bool).unwrap_or(false);
                Ok(Request::Retract { node, ids, notify })
            }
            (true, "subscribe") | (true, "unsubscribe") => {
                let node = node_of(first)?;
                let jid = first
                    .attr("jid")
                    .and_then(crate::normalize_jid)
                    .ok_or_else(|| PepError::app(StanzaErrorCondition::BadRequest, "invalid-jid"))?
                    .to_string();
                Ok(if first.name() == "subscribe" {
                    Request::Subscribe { node, jid }
                } else {
                    Request::Unsubscribe { node, jid }
                })
            }
            (true, "create") => {
                let node = node_of(first)?;
                let config = payload
                    .get_child("configure", ns::PUBSUB)
                    .and_then(|c| c.get_child("x", ns::DATA_FORMS))
                    .cloned();
                Ok(Request::Create { node, config })
            }
            (false, "items") => {
                let node = node_of(first)?;
                let ids = item_ids(first, ns::PUBSUB)?;
                let max = match first.attr("max_items") {
                    None => None,
                    Some(m) => Some(m.trim().parse::<u32>().map_err(|_| bad_request())?),
                };
                Ok(Request::Items { node, ids, max })
            }
            _ => Err(unsupported()),
        }
    } else if payload.is("pubsub", ns::PUBSUB_OWNER) {
        let first = payload.children().next().ok_or_else(bad_request)?;
        match (set, first.name()) {
            (false, "configure") => Ok(Request::ConfigureGet {
                node: node_of(first)?,
            }),
            (true, "configure") => {
                let node = node_of(first)?;
                let form = first
                    .get_child("x", ns::DATA_FORMS)
                    .cloned()
                    .ok_or_else(bad_request)?;
                Ok(Request::ConfigureSet { node, form })
            }
            (false, "default") => Ok(Request::Default),
            (true, "delete") => Ok(Request::Delete {
                node: node_of(first)?,
            }),
            (true, "purge") => Ok(Request::Purge {
                node: node_of(first)?,
            }),
            _ => Err(unsupported()),
        }
    } else {
        Err(bad_request())
    }
}

fn payload_options(pubsub: &Element) -> Result<Option<Element>, PepError> {
    let Some(po) = pubsub.get_child("publish-options", ns::PUBSUB) else {
        return Ok(None);
    };
    // An empty `<publish-options/>` asks for nothing.
    Ok(po.get_child("x", ns::DATA_FORMS).cloned())
}

/// `<pubsub><publish node=N><item id=ID/></publish></pubsub>`: the result of a publish
/// (XEP-0060 §7.1.2), telling the client the id the item got.
pub fn publish_result(node: &str, id: &str) -> Element {
    let mut pubsub = Element::bare("pubsub", ns::PUBSUB);
    let mut publish = stanza::new("publish", ns::PUBSUB, &[("node", node)]);
    publish.append_child(stanza::new("item", ns::PUBSUB, &[("id", id)]));
    pubsub.append_child(publish);
    pubsub
}

fn item_element(item: &Item, item_ns: &str) -> Element {
    let mut el = stanza::new("item", item_ns, &[("id", &item.id)]);
    el.append_child(item.payload.clone());
    el
}

/// `<pubsub><items node=N>…</items></pubsub>`: an items result (XEP-0060 §6.5.2).
pub fn items_result(node: &str, items: &[Item]) -> Element {
    let mut pubsub = Element::bare("pubsub", ns::PUBSUB);
    let mut list = stanza::new("items", ns::PUBSUB, &[("node", node)]);
    for i in items {
        list.append_child(item_element(i, ns::PUBSUB));
    }
    pubsub.append_child(list);
    pubsub
}

/// `<pubsub xmlns=…#owner><configure node=N><x/></configure></pubsub>` (XEP-0060 §8.2.1).
pub fn configure_result(node: Option<&str>, cfg: &NodeConfig, max_items_cap: u32) -> Element {
    let mut pubsub = Element::bare("pubsub", ns::PUBSUB_OWNER);
    let mut c = match node {
        Some(n) => stanza::new("configure", ns::PUBSUB_OWNER, &[("node", n)]),
        None => Element::bare("default", ns::PUBSUB_OWNER),
    };
    c.append_child(cfg.to_form(max_items_cap));
    pubsub.append_child(c);
    pubsub
}

/// What a notification says happened to a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Items published (XEP-0060 §7.1.2.1).
    Items(Vec<Item>),
    /// Items retracted (XEP-0060 §7.2.2.1).
    Retract(Vec<String>),
    /// The node was purged (XEP-0060 §8.5.2).
    Purge,
    /// The node was deleted (XEP-0060 §8.4.2).
    Delete,
}

/// The `<event xmlns='…#event'>` payload of a notification about `node`.
pub fn event(node: &str, ev: &Event) -> Element {
    let mut event = Element::bare("event", ns::PUBSUB_EVENT);
    let child = match ev {
        Event::Items(items) => {
            let mut el = stanza::new("items", ns::PUBSUB_EVENT, &[("node", node)]);
            for i in items {
                el.append_child(item_element(i, ns::PUBSUB_EVENT));
            }
            el
        }
        Event::Retract(ids) => {
            let mut el = stanza::new("items", ns::PUBSUB_EVENT, &[("node", node)]);
            for id in ids {
                el.append_child(stanza::new("retract", ns::PUBSUB_EVENT, &[("id", id)]));
            }
            el
        }
        Event::Purge => stanza::new("purge", ns::PUBSUB_EVENT, &[("node", node)]),
        Event::Delete => stanza::new("delete", ns::PUBSUB_EVENT, &[("node", node)]),
    };
    event.append_child(child);
    event
}

/// A notification message (XEP-0060 §7.1.2.1; `headline`, as Prosody sends them: never
/// stored offline nor archived, and unimportant for push).
pub fn notification(from: &str, to: &str, id: &str, node: &str, ev: &Event) -> Element {
    let mut m = stanza::new(
        "message",
        herald_proto::stream::INTERNAL_NS,
        &[("from", from), ("to", to), ("type", "headline"), ("id", id)],
    );
    m.append_child(event(node, ev));
    m
}

/// XEP-0115 `<c/>` of a presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The client's software URI.
    pub node: String,
    /// The verification string.
    pub ver: String,
}

/// The XEP-0115 caps a presence announces, if any with the `sha-1` hash (the only one
/// verified here; the legacy format without `hash` is ignored, XEP-0115 §8.4).
pub fn caps_of(presence: &Element) -> Option<Caps> {
    let c = presence.get_child("c", ns::CAPS)?;
    if c.attr("hash") != Some("sha-1") {
        return None;
    }
    let node = c.attr("node")?;
    let ver = c.attr("ver")?;
    if node.is_empty() || ver.is_empty() || node.len() > MAX_NODE_NAME || ver.len() > 64 {
        return None;
    }
    Some(Caps {
        node: node.to_string(),
        ver: ver.to_string(),
    })
}

/// A disco#info query for a caps `node#ver` (XEP-0115 §6.2).
pub fn caps_query(caps: &Caps) -> Element {
    stanza::new(
        "query",
        ns::DISCO_INFO,
        &[("node", &format!("{}#{}", caps.node, caps.ver))],
    )
}

/// Why a disco#info answer cannot be trusted for a caps hash (XEP-0115 §5.4).
pub type CapsError = crate::caps::Invalid;

/// The XEP-0115 §5.1 verification string of a disco#info `<query/>`, hashed with SHA-1 and
/// base64-encoded, after the §5.4 well-formedness checks ([`crate::caps::ver_of_info`],
/// which also hashes the server's own disco#info).
pub fn caps_ver(info: &Element) -> Result<String, CapsError> {
    if !info.is("query", ns::DISCO_INFO) {
        return Err(CapsError::NotInfo);
    }
    crate::caps::ver_of_info(info)
}

/// The features of a disco#info `<query/>`, once it is verified to hash to `ver`; None if it
/// does not (a forged or stale hash must not be cached under that name).
pub fn verified_features(info: &Element, ver: &str) -> Option<Vec<String>> {
    if caps_ver(info).ok()? != ver {
        return None;
    }
    Some(
        crate::children_named(info, "feature", ns::DISCO_INFO)
            .filter_map(|f| f.attr("var"))
            .map(str::to_string)
            .collect(),
    )
}

/// The nodes `features` ask notifications for (`NODE+notify`, XEP-0163 §4).
pub fn notify_nodes(features: &[String]) -> BTreeSet<String> {
    features
        .iter()
        .filter_map(|f| f.strip_suffix(NOTIFY_SUFFIX))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    const PS: &str = "http://jabber.org/protocol/pubsub";

    fn options(fields: &[(&str, &str)]) -> Element {
        let mut x = format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBLISH_OPTIONS}</value></field>"
        );
        for (k, v) in fields {
            x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
        }
        x.push_str("</x>");
        el(&x)
    }

    #[test]
    fn errors_carry_the_legacy_code_next_to_the_condition() {
        let iq = el("<iq xmlns='jabber:client' type='get' id='d' to='a@x' from='a@x/r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'/></pubsub></iq>");
        for (e, code, app) in [
            (
                PepError::plain(StanzaErrorCondition::ItemNotFound),
                Some("404"),
                None,
            ),
            (
                PepError::precondition(),
                Some("409"),
                Some("precondition-not-met"),
            ),
            (
                PepError::plain(StanzaErrorCondition::PolicyViolation),
                None,
                None,
            ),
        ] {
            let r = e.reply(&iq).unwrap();
            let error = r.children().find(|c| c.name() == "error").unwrap();
            assert_eq!(error.attr("code"), code, "{e:?}");
            assert!(
                error.has_child(e.condition.as_str(), ns::STANZAS_ERR),
                "{e:?}"
            );
            if let Some(a) = app {
                assert!(error.has_child(a, ns::PUBSUB_ERRORS), "{e:?}");
            }
        }
    }

    #[test]
    fn parses_publish_with_options() {
        let p = el(&format!(
            "<pubsub xmlns='{PS}'><publish node='n'><item id='i'><x xmlns='p'/></item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'/></publish-options></pubsub>"
        ));
        match parse(&p, true).unwrap() {
            Request::Publish {
                node, id, options, ..
            } => {
                assert_eq!(node, "n");
                assert_eq!(id.as_deref(), Some("i"));
                assert!(options.is_some());
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn malformed_requests_get_their_xep0060_condition() {
        use StanzaErrorCondition::*;
        for (xml, set, cond, app) in [
            (format!("<pubsub xmlns='{PS}'><publish><item><x xmlns='p'/></item></publish></pubsub>"), true, BadRequest, Some("nodeid-required")),
            (format!("<pubsub xmlns='{PS}'><publish node='n'/></pubsub>"), true, BadRequest, Some("item-required")),
            (format!("<pubsub xmlns='{PS}'><publish node='n'><item/></publish></pubsub>"), true, BadRequest, Some("payload-required")),
            (format!("<pubsub xmlns='{PS}'><publish node='n'><item><a xmlns='p'/><b xmlns='p'/></item></publish></pubsub>"), true, BadRequest, Some("invalid-payload")),
            (format!("<pubsub xmlns='{PS}'><retract node='n'/></pubsub>"), true, BadRequest, Some("item-required")),
            (format!("<pubsub xmlns='{PS}'><items node='n' max_items='x'/></pubsub>"), false, BadRequest, None),
            (format!("<pubsub xmlns='{PS}'><affiliations/></pubsub>"), false, FeatureNotImplemented, Some("unsupported")),
            (format!("<pubsub xmlns='{PS}'><items node='n'/></pubsub>"), true, FeatureNotImplemented, Some("unsupported")),
        ] {
            let e = parse(&el(&xml), set).unwrap_err();
            assert_eq!((e.condition, e.app), (cond, app), "{xml}");
        }
    }

    #[test]
    fn parses_items_retract_and_owner_requests() {
        let r = parse(&el(&format!("<pubsub xmlns='{PS}'><items node='n' max_items='2'><item id='a'/><item id='a'/></items></pubsub>")), false).unwrap();
        assert_eq!(
            r,
            Request::Items {
                node: "n".into(),
                ids: vec!["a".into()],
                max: Some(2)
            }
        );
        let r = parse(&el(&format!("<pubsub xmlns='{PS}'><retract node='n' notify='1'><item id='a'/></retract></pubsub>")), true).unwrap();
        assert_eq!(
            r,
            Request::Retract {
                node: "n".into(),
                ids: vec!["a".into()],
                notify: true
            }
        );
        let o = "http://jabber.org/protocol/pubsub#owner";
        assert_eq!(
            parse(
                &el(&format!("<pubsub xmlns='{o}'><delete node='n'/></pubsub>")),
                true
            )
            .unwrap(),
            Request::Delete { node: "n".into() }
        );
        assert_eq!(
            parse(
                &el(&format!("<pubsub xmlns='{o}'><purge node='n'/></pubsub>")),
                true
            )
            .unwrap(),
            Request::Purge { node: "n".into() }
        );
        assert_eq!(
            parse(
                &el(&format!(
                    "<pubsub xmlns='{o}'><configure node='n'/></pubsub>"
                )),
                false
            )
            .unwrap(),
            Request::ConfigureGet { node: "n".into() }
        );
    }

    #[test]
    fn publish_options_create_and_check() {
        // (options, existing node config, expected outcome)
        let cap = 10;
        let whitelist = NodeConfig {
            access_model: AccessModel::Whitelist,
            ..NodeConfig::default()
        };
        let max = NodeConfig {
            max_items: cap,
            ..NodeConfig::default()
        };
        for (opts, node, ok) in [
            (
                vec![("pubsub#access_model", "whitelist")],
                whitelist.clone(),
                true,
            ),
            (
                vec![("pubsub#access_model", "open")],
                whitelist.clone(),
                false,
            ),
            (vec![("pubsub#max_items", "max")], max.clone(), true),
            (vec![("pubsub#max_items", "10")], max.clone(), true),
            (vec![("pubsub#max_items", "1")], max.clone(), false),
            // Above the cap it can never hold.
            (vec![("pubsub#max_items", "11")], max.clone(), false),
            (
                vec![("pubsub#persist_items", "true")],
                NodeConfig::default(),
                true,
            ),
            (
                vec![("pubsub#persist_items", "0")],
                NodeConfig::default(),
                false,
            ),
            (
                vec![("pubsub#access_model", "bogus")],
                NodeConfig::default(),
                false,
            ),
            // Unknown fields do not matter (Prosody ignores them too).
            (vec![("pubsub#title", "x")], NodeConfig::default(), true),
        ] {
            let form = options(&opts);
            assert_eq!(node.check_preconditions(&form, cap).is_ok(), ok, "{opts:?}");
        }
        let created = NodeConfig::created_with(
            Some(&options(&[
                ("pubsub#access_model", "open"),
                ("pubsub#max_items", "max"),
            ])),
            cap,
        )
        .unwrap();
        assert_eq!(
            created,
            NodeConfig {
                access_model: AccessModel::Open,
                max_items: cap,
                ..NodeConfig::default()
            }
        );
        assert_eq!(
            NodeConfig::created_with(Some(&options(&[("pubsub#max_items", "11")])), cap),
            Err(Precondition)
        );
        // A form of another type is not publish-options.
        let wrong = el("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>");
        assert_eq!(
            NodeConfig::default().check_preconditions(&wrong, cap),
            Err(Precondition)
        );
    }

    #[test]
    fn configuration_round_trips_through_its_form() {
        let cap = 50;
        let c = NodeConfig {
            persist_items: false,
            max_items: 7,
            access_model: AccessModel::Roster,
            send_last: SendLast::Never,
            notify_retract: false,
        };
        let mut form = c.to_form(cap);
        stanza::set(&mut form, "type", "submit");
        assert_eq!(NodeConfig::default().configured(&form, cap).unwrap(), c);
        // In a configuration `max` and larger numbers mean the cap.
        let big = el(&format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{NODE_CONFIG}</value></field><field var='pubsub#max_items'><value>9999</value></field></x>"));
        assert_eq!(
            NodeConfig::default()
                .configured(&big, cap)
                .unwrap()
                .max_items,
            cap
        );
        let bad = el(&format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{NODE_CONFIG}</value></field><field var='pubsub#access_model'><value>authorize</value></field></x>"));
        assert_eq!(
            NodeConfig::default().configured(&bad, cap),
            Err(FormError::BadValue("pubsub#access_model".into()))
        );
    }

    #[test]
    fn stored_configuration_round_trips() {
        let c = NodeConfig {
            persist_items: false,
            max_items: 9,
            access_model: AccessModel::Open,
            send_last: SendLast::OnSub,
            notify_retract: false,
        };
        assert_eq!(NodeConfig::from_stored(&c.to_stored()), Some(c));
        assert_eq!(NodeConfig::from_stored(""), Some(NodeConfig::default()));
        assert_eq!(
            NodeConfig::from_stored("later_key=x;max_items=3").map(|c| c.max_items),
            Some(3)
        );
        assert_eq!(NodeConfig::from_stored("max_items=0"), None);
        assert_eq!(NodeConfig::from_stored("access_model=authorize"), None);
    }

    #[test]
    fn access_decisions() {
        let stranger = Relation::default();
        let roster_only = Relation {
            in_roster: true,
            ..Relation::default()
        };
        let subscribed = Relation {
            in_roster: true,
            presence_subscribed: true,
            owner: false,
        };
        let owner = Relation {
            owner: true,
            ..Relation::default()
        };
        use AccessModel::*;
        for (model, rel, ok) in [
            (Open, stranger, true),
            (Presence, stranger, false),
            (Presence, roster_only, false),
            (Presence, subscribed, true),
            (Roster, stranger, false),
            (Roster, roster_only, true),
            (Whitelist, subscribed, false),
            (Whitelist, owner, true),
            (Presence, owner, true),
        ] {
            assert_eq!(may_read(model, rel), ok, "{model:?} {rel:?}");
        }
    }

    #[test]
    fn precondition_error_carries_pubsub_errors_element() {
        let iq = el("<iq xmlns='jabber:client' type='set' id='1' from='a@b/c'><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>");
        let r = PepError::precondition().reply(&iq).unwrap();
        let e = r.get_child("error", "jabber:client").unwrap();
        assert_eq!(e.attr("type"), Some("cancel"));
        assert!(e.get_child("conflict", ns::STANZAS_ERR).is_some());
        assert!(e
            .get_child("precondition-not-met", ns::PUBSUB_ERRORS)
            .is_some());
    }

    /// XEP-0115 §5.2 and §5.3: the simple and the complex example.
    #[test]
    fn caps_ver_is_the_caps_modules_on_a_disco_info_query_only() {
        // The hash itself is tested against the XEP's examples in `crate::caps`.
        let info =
            el("<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/></query>");
        assert_eq!(caps_ver(&info), crate::caps::ver_of_info(&info));
        let other = el("<query xmlns='jabber:iq:version'/>");
        assert_eq!(caps_ver(&other), Err(CapsError::NotInfo));
    }

    #[test]
    fn caps_and_notify_nodes() {
        let p = el("<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://x' ver='abc='/></presence>");
        assert_eq!(
            caps_of(&p),
            Some(Caps {
                node: "http://x".into(),
                ver: "abc=".into()
            })
        );
        let legacy = el("<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' node='http://x' ver='1.0' ext='a'/></presence>");
        assert_eq!(caps_of(&legacy), None);
        let f: Vec<String> = [
            "urn:xmpp:avatar:metadata+notify",
            "+notify",
            "urn:x",
            "a+notify",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            notify_nodes(&f).into_iter().collect::<Vec<_>>(),
            ["a", "urn:xmpp:avatar:metadata"]
        );
    }

    #[test]
    fn notification_shape() {
        let item = Item {
            id: "i".into(),
            payload: el("<data xmlns='urn:xmpp:avatar:data'>AA==</data>"),
        };
        let m = notification(
            "a@b",
            "c@d/r",
            "x",
            "urn:xmpp:avatar:data",
            &Event::Items(vec![item]),
        );
        assert_eq!(m.attr("type"), Some("headline"));
        let items = m
            .get_child("event", ns::PUBSUB_EVENT)
            .unwrap()
            .get_child("items", ns::PUBSUB_EVENT)
            .unwrap();
        assert_eq!(items.attr("node"), Some("urn:xmpp:avatar:data"));
        assert_eq!(
            items
                .get_child("item", ns::PUBSUB_EVENT)
                .unwrap()
                .attr("id"),
            Some("i")
        );
    }
}
