//! XEP-0163 Personal Eventing Protocol on every account: the account's nodes (publish with
//! auto-create and `publish-options`, retract, items, configuration, delete, purge), who
//! gets their notifications, and the XEP-0115 caps that say who wants which node.
//!
//! This module owns the PEP requests to an account's bare JID (from its own clients and
//! from anyone else, including other servers), the recipients of each account's
//! notifications (the full JIDs whose available presence the account receives, and its own
//! resources, with their caps `ver`), the cache of verified caps (`ver` → the nodes its
//! features ask `+notify` for) and the disco#info queries that fill it. Rules (parsing,
//! configuration, preconditions, access models, hashes) are `herald_xep::pep`'s; items live
//! in the store's `Pep` role. It does not deliver presence (`crate::features::presence`
//! tells it about its own resources' presence; the `presence_to_local` hook shows it the
//! rest, and it passes every presence on).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_proto::error::{ErrorType, StanzaErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::{ns, Element};
use herald_store::{roles, PepItem, PepLimits, PepPublish, StoreError, Subscription};
use herald_xep::pep::{self as xp, AccessModel, Event, NodeConfig, PepError, Relation, Request};

use crate::features::blocking;
use crate::features::iq::Reply;
use crate::routing::hooks::{self, Fut, PepPublished, PresenceToLocal, ToServer};
use crate::stanza;
use crate::{routing, Shared};

/// The prefix of the ids of the disco#info queries this module sends (their answers come
/// back to the server's domain and are taken by [`to_server`]).
const CAPS_ID_PREFIX: &str = "pep-caps-";
/// How long a caps query may go unanswered before the `ver` is asked again.
const CAPS_QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Resources waiting on one caps query (the rest learn the answer with their next presence).
const MAX_WAITERS: usize = 64;

/// A caps query in flight.
struct Pending {
    ver: String,
    /// Who was asked (the answer must come from there).
    asked: String,
    sent: Instant,
    /// (owner, full JID) whose last items are due once the `ver` is known.
    waiters: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    /// Verified caps: `ver` → the nodes it asks notifications for.
    caps: HashMap<String, Arc<BTreeSet<String>>>,
    /// Insertion order of `caps`, for eviction at `max_caps`.
    caps_order: VecDeque<String>,
    /// Caps queries in flight by IQ id.
    pending: HashMap<String, Pending>,
    /// Per owner: full JID → caps `ver` of the resources that get its notifications.
    recipients: HashMap<String, HashMap<String, String>>,
}

/// PEP's in-memory state (recipients and caps). Bounded by `[pep] max_caps` and
/// `max_recipients_per_user`.
#[derive(Default)]
pub struct Pep {
    state: Mutex<State>,
}

impl Pep {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what is remembered of an account (removed).
    pub fn forget_user(&self, bare: &str) {
        self.lock().recipients.remove(bare);
    }

    /// Cluster mode: what another node observed (where the presence arrived): `full` gets
    /// `owner`'s notifications for caps `ver`, or no longer (None). The other node sent the
    /// last items and asked the caps; this one only records, so a publish on any node
    /// reaches every recipient.
    pub fn record(&self, owner: &str, full: &str, ver: Option<&str>, max_recipients: usize) {
        let mut st = self.lock();
        match ver {
            None => {
                if let Some(r) = st.recipients.get_mut(owner) {
                    r.remove(full);
                    if r.is_empty() {
                        st.recipients.remove(owner);
                    }
                }
            }
            Some(v) => {
                let r = st.recipients.entry(owner.to_string()).or_default();
                if r.contains_key(full) || r.len() < max_recipients {
                    r.insert(full.to_string(), v.to_string());
                }
            }
        }
    }

    /// Cluster mode: caps `ver` another node verified, meaning notifications for `nodes`.
    pub fn learn_caps(&self, ver: &str, nodes: BTreeSet<String>, max_caps: usize) {
        let mut st = self.lock();
        if st.caps.contains_key(ver) {
            return;
        }
        while st.caps.len() >= max_caps {
            match st.caps_order.pop_front() {
                Some(old) => {
                    st.caps.remove(&old);
                }
                None => break,
            }
        }
        st.caps_order.push_back(ver.to_string());
        st.caps.insert(ver.to_string(), Arc::new(nodes));
    }
}

/// Whether `full` gets `owner`'s notifications (for operators' and tests' eyes).
pub fn is_recipient(shared: &Shared, owner: &str, full: &str) -> bool {
    shared
        .pep
        .lock()
        .recipients
        .get(owner)
        .is_some_and(|r| r.contains_key(full))
}

/// Cluster mode: tells the other nodes about a recipient change (see [`Pep::record`]).
fn share_recipient(shared: &Shared, owner: &str, full: &str, ver: Option<&str>) {
    if let Some(c) = shared.cluster.get() {
        c.share_state(format!("r\n{owner}\n{full}\n{}", ver.unwrap_or_default()));
    }
}

fn cap(shared: &Shared) -> u32 {
    shared.cfg.pep.max_items_per_node
}

fn err(iq: &Element, e: PepError) -> Element {
    e.reply(iq).unwrap_or_else(|| stanza::iq_result(iq, None))
}

fn plain(iq: &Element, c: StanzaErrorCondition) -> Element {
    err(iq, PepError::plain(c))
}

fn internal(iq: &Element, e: &StoreError) -> Element {
    tracing::error!(error = %e, "pep store call failed");
    let (condition, kind) = crate::features::ctx::store_condition(e);
    err(
        iq,
        PepError {
            condition,
            kind: Some(kind),
            app: None,
        },
    )
}

/// How `who` (a bare JID) stands to `owner`: read from the owner's roster.
async fn relation(shared: &Arc<Shared>, owner: &str, who: &str) -> Relation {
    if who == owner {
        return Relation {
            owner: true,
            ..Relation::default()
        };
    }
    let (o, w) = (owner.to_string(), who.to_string());
    match shared
        .db(move |s: &roles::Roster| s.roster_item(&o, &w))
        .await
    {
        Ok(Some(item)) => Relation {
            owner: false,
            presence_subscribed: matches!(
                item.subscription,
                Subscription::From | Subscription::Both
            ),
            in_roster: true,
        },
        Ok(None) => Relation::default(),
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            Relation::default()
        }
    }
}

async fn node_config(
    shared: &Arc<Shared>,
    owner: &str,
    node: &str,
) -> Result<Option<NodeConfig>, StoreError> {
    let (o, n) = (owner.to_string(), node.to_string());
    let stored = shared.db(move |s: &roles::Pep| s.pep_node(&o, &n)).await?;
    Ok(stored.map(|c| {
        NodeConfig::from_stored(&c).unwrap_or_else(|| {
            tracing::warn!(%owner, %node, "unreadable PEP node configuration; defaults used");
            NodeConfig::default_capped(cap(shared))
        })
    }))
}

/// The IQ table's handler for every PEP request to `owner`'s bare JID, from its own clients
/// or anyone else.
pub fn handle<'a>(
    shared: &'a Arc<Shared>,
    iq: &'a Element,
    payload: &'a Element,
    owner: &'a str,
) -> Reply<'a> {
    Box::pin(answer(shared, iq, payload, owner))
}

async fn answer(shared: &Arc<Shared>, iq: &Element, payload: &Element, owner: &str) -> Element {
    let Ok(Some(from)) = stanza::from(iq) else {
        return plain(iq, StanzaErrorCondition::BadRequest);
    };
    let requester = from.to_bare().to_string();
    let is_owner = requester == owner;
    // XEP-0191 §3.3: a blocked entity gets nothing from the account, its PEP included.
    if !is_owner && blocking::inbound_blocked(shared, owner, &from).await {
        return plain(iq, StanzaErrorCondition::ServiceUnavailable);
    }
    let req = match xp::parse(payload, stanza::typ(iq) == "set") {
        Ok(r) => r,
        Err(e) => return err(iq, e),
    };
    match req {
        Request::Items { node, ids, max } => {
            items(shared, iq, owner, &requester, node, ids, max).await
        }
        // XEP-0163 §4: subscriptions follow presence and caps; explicit ones are not kept.
        Request::Subscribe { .. } | Request::Unsubscribe { .. } => err(
            iq,
            PepError::app(StanzaErrorCondition::FeatureNotImplemented, "unsupported"),
        ),
        // Everything else changes the account's nodes: its own clients only.
        _ if !is_owner => plain(iq, StanzaErrorCondition::Forbidden),
        Request::Publish {
            node,
            id,
            payload,
            options,
        } => publish(shared, iq, owner, node, id, payload, options).await,
        Request::Retract { node, ids, notify } => {
            retract(shared, iq, owner, node, ids, notify).await
        }
        Request::Create { node, config } => create(shared, iq, owner, node, config).await,
        Request::ConfigureGet { node } => match node_config(shared, owner, &node).await {
            Ok(Some(c)) => {
                stanza::iq_result(iq, Some(xp::configure_result(Some(&node), &c, cap(shared))))
            }
            Ok(None) => plain(iq, StanzaErrorCondition::ItemNotFound),
            Err(e) => internal(iq, &e),
        },
        Request::ConfigureSet { node, form } => configure(shared, iq, owner, node, form).await,
        Request::Default => stanza::iq_result(
            iq,
            Some(xp::configure_result(
                None,
                &NodeConfig::default_capped(cap(shared)),
                cap(shared),
            )),
        ),
        Request::Delete { node } => {
            let cfg = match node_config(shared, owner, &node).await {
                Ok(Some(c)) => c,
                Ok(None) => return plain(iq, StanzaErrorCondition::ItemNotFound),
                Err(e) => return internal(iq, &e),
            };
            let (o, n) = (owner.to_string(), node.clone());
            match shared.db(move |s: &roles::Pep| s.pep_delete(&o, &n)).await {
                Ok(_) => {
                    notify(shared, owner, &node, &cfg, &Event::Delete).await;
                    stanza::iq_result(iq, None)
                }
                Err(e) => internal(iq, &e),
            }
        }
        Request::Purge { node } => {
            let cfg = match node_config(shared, owner, &node).await {
                Ok(Some(c)) => c,
                Ok(None) => return plain(iq, StanzaErrorCondition::ItemNotFound),
                Err(e) => return internal(iq, &e),
            };
            let (o, n) = (owner.to_string(), node.clone());
            match shared.db(move |s: &roles::Pep| s.pep_purge(&o, &n)).await {
                Ok(()) => {
                    notify(shared, owner, &node, &cfg, &Event::Purge).await;
                    stanza::iq_result(iq, None)
                }
                Err(e) => internal(iq, &e),
            }
        }
    }
}

async fn items(
    shared: &Arc<Shared>,
    iq: &Element,
    owner: &str,
    requester: &str,
    node: String,
    ids: Vec<String>,
    max: Option<u32>,
) -> Element {
    let cfg = match node_config(shared, owner, &node).await {
        Ok(Some(c)) => c,
        Ok(None) => return plain(iq, StanzaErrorCondition::ItemNotFound),
        Err(e) => return internal(iq, &e),
    };
    // XEP-0060 §6.5.9: those the access model excludes learn why, not the items.
    if !xp::may_read(cfg.access_model, relation(shared, owner, requester).await) {
        return err(iq, xp::access_denied(cfg.access_model));
    }
    let max = max.map(|m| m.min(cap(shared)) as usize);
    let (o, n) = (owner.to_string(), node.clone());
    let stored = match shared
        .db(move |s: &roles::Pep| s.pep_items(&o, &n, &ids, max))
        .await
    {
        Ok(i) => i,
        Err(e) => return internal(iq, &e),
    };
    let items: Vec<xp::Item> = stored.iter().filter_map(thaw).collect();
    stanza::iq_result(iq, Some(xp::items_result(&node, &items)))
}

fn thaw(i: &PepItem) -> Option<xp::Item> {
    match i.xml.parse::<Element>() {
        Ok(payload) => Some(xp::Item {
            id: i.id.clone(),
            payload,
        }),
        Err(e) => {
            tracing::warn!(error = %e, id = %i.id, "unreadable PEP item skipped");
            None
        }
    }
}

fn limits(shared: &Shared) -> PepLimits {
    PepLimits {
        max_nodes: shared.cfg.pep.max_nodes_per_user,
        max_bytes: shared.cfg.pep.max_bytes_per_user,
    }
}

fn too_many_nodes() -> PepError {
    PepError::app(StanzaErrorCondition::PolicyViolation, "max-nodes-exceeded")
}

fn over_quota(iq: &Element) -> Element {
    stanza::error_typed(
        iq,
        StanzaErrorCondition::ResourceConstraint,
        ErrorType::Wait,
        Some("PEP storage of this account is full"),
    )
    .unwrap_or_else(|| stanza::iq_result(iq, None))
}

async fn publish(
    shared: &Arc<Shared>,
    iq: &Element,
    owner: &str,
    node: String,
    id: Option<String>,
    payload: Element,
    options: Option<Element>,
) -> Element {
    let Some(xml) = stanza::to_xml(&payload) else {
        return plain(iq, StanzaErrorCondition::BadRequest);
    };
    if xml.len() > shared.cfg.pep.max_item_bytes {
        return err(
            iq,
            PepError::app(StanzaErrorCondition::NotAcceptable, "payload-too-big"),
        );
    }
    let (cfg, create) = match node_config(shared, owner, &node).await {
        Ok(Some(c)) => {
            if let Some(o) = &options {
                if c.check_preconditions(o, cap(shared)).is_err() {
                    return err(iq, PepError::precondition());
                }
            }
            (c, None)
        }
        // XEP-0060 §7.1.5: a new node takes the default merged with the options.
        Ok(None) => match NodeConfig::created_with(options.as_ref(), cap(shared)) {
            Ok(c) => {
                let stored = c.to_stored();
                (c, Some(stored))
            }
            Err(_) => return err(iq, PepError::precondition()),
        },
        Err(e) => return internal(iq, &e),
    };
    let id = id.unwrap_or_else(|| uuid_like(shared));
    let item = PepItem {
        id: id.clone(),
        xml,
    };
    let (o, n, lim) = (owner.to_string(), node.clone(), limits(shared));
    let keep = cfg.max_items as usize;
    let persist = cfg.persist_items;
    let stored_item = item.clone();
    let outcome = shared
        .db(move |s: &roles::Pep| {
            s.pep_publish(
                &o,
                &n,
                create.as_deref(),
                persist.then_some(&stored_item),
                keep,
                lim,
            )
        })
        .await;
    match outcome {
        Ok(PepPublish::Stored { .. }) => {}
        Ok(PepPublish::TooManyNodes) => return err(iq, too_many_nodes()),
        Ok(PepPublish::OverQuota) => return over_quota(iq),
        // The node was deleted between the two calls: as if it never existed.
        Ok(PepPublish::NoNode) => return plain(iq, StanzaErrorCondition::ItemNotFound),
        Err(e) => return internal(iq, &e),
    }
    // After storing, so a feature reacting to the item sees what a fetch would return.
    let published = PepPublished {
        user: owner.to_owned(),
        node: node.clone(),
        id: id.clone(),
        payload: payload.clone(),
    };
    let ev = Event::Items(vec![xp::Item {
        id: id.clone(),
        payload,
    }]);
    notify(shared, owner, &node, &cfg, &ev).await;
    hooks::run(&shared.hooks.pep_published, shared, published).await;
    stanza::iq_result(iq, Some(xp::publish_result(&node, &id)))
}

/// A server-generated item id: unique within the process run and across restarts (time
/// plus a counter).
fn uuid_like(shared: &Shared) -> String {
    format!(
        "{:x}-{:x}",
        herald_xep::delay::now_micros(),
        shared.next_id()
    )
}

async fn retract(
    shared: &Arc<Shared>,
    iq: &Element,
    owner: &str,
    node: String,
    ids: Vec<String>,
    notify_asked: bool,
) -> Element {
    let cfg = match node_config(shared, owner, &node).await {
        Ok(Some(c)) => c,
        Ok(None) => return plain(iq, StanzaErrorCondition::ItemNotFound),
        Err(e) => return internal(iq, &e),
    };
    let (o, n) = (owner.to_string(), node.clone());
    let gone = match shared
        .db(move |s: &roles::Pep| s.pep_retract(&o, &n, &ids))
        .await
    {
        Ok(g) => g,
        Err(e) => return internal(iq, &e),
    };
    if gone.is_empty() {
        // XEP-0060 §7.2.3.5.
        return plain(iq, StanzaErrorCondition::ItemNotFound);
    }
    if notify_asked || cfg.notify_retract {
        notify(shared, owner, &node, &cfg, &Event::Retract(gone)).await;
    }
    stanza::iq_result(iq, None)
}

async fn create(
    shared: &Arc<Shared>,
    iq: &Element,
    owner: &str,
    node: String,
    config: Option<Element>,
) -> Element {
    let base = NodeConfig::default_capped(cap(shared));
    let cfg = match &config {
        Some(form) => match base.configured(form, cap(shared)) {
            Ok(c) => c,
            Err(_) => return plain(iq, StanzaErrorCondition::NotAcceptable),
        },
        None => base,
    };
    let (o, n, c, max) = (
        owner.to_string(),
        node,
        cfg.to_stored(),
        shared.cfg.pep.max_nodes_per_user,
    );
    match shared
        .db(move |s: &roles::Pep| s.pep_create(&o, &n, &c, max))
        .await
    {
        Ok(true) => stanza::iq_result(iq, None),
        // XEP-0060 §8.1.3.4: the node exists.
        Ok(false) => plain(iq, StanzaErrorCondition::Conflict),
        Err(StoreError::QuotaExceeded) => err(iq, too_many_nodes()),
        Err(e) => internal(iq, &e),
    }
}

async fn configure(
    shared: &Arc<Shared>,
    iq: &Element,
    owner: &str,
    node: String,
    form: Element,
) -> Element {
    let old = match node_config(shared, owner, &node).await {
        Ok(Some(c)) => c,
        Ok(None) => return plain(iq, StanzaErrorCondition::ItemNotFound),
        Err(e) => return internal(iq, &e),
    };
    // A cancelled form changes nothing (XEP-0004 §3.1).
    if form.attr("type") == Some("cancel") {
        return stanza::iq_result(iq, None);
    }
    let cfg = match old.configured(&form, cap(shared)) {
        Ok(c) => c,
        // XEP-0060 §8.2.5.4.
        Err(_) => return plain(iq, StanzaErrorCondition::NotAcceptable),
    };
    let keep = if cfg.persist_items {
        cfg.max_items as usize
    } else {
        0
    };
    let (o, n, c) = (owner.to_string(), node, cfg.to_stored());
    match shared
        .db(move |s: &roles::Pep| s.pep_configure(&o, &n, &c, keep))
        .await
    {
        Ok(_) => stanza::iq_result(iq, None),
        Err(StoreError::NotFound) => plain(iq, StanzaErrorCondition::ItemNotFound),
        Err(e) => internal(iq, &e),
    }
}

/// disco#items on an account: its nodes that the requester may read (XEP-0163 §7).
pub fn disco_items<'a>(
    shared: &'a Arc<Shared>,
    iq: &'a Element,
    payload: &'a Element,
    owner: &'a str,
) -> Reply<'a> {
    Box::pin(async move {
        if payload.attr("node").is_some() {
            return plain(iq, StanzaErrorCondition::ItemNotFound);
        }
        let Ok(Some(from)) = stanza::from(iq) else {
            return plain(iq, StanzaErrorCondition::BadRequest);
        };
        let rel = relation(shared, owner, from.to_bare().as_str()).await;
        let o = owner.to_string();
        let nodes = match shared.db(move |s: &roles::Pep| s.pep_nodes(&o)).await {
            Ok(n) => n,
            Err(e) => return internal(iq, &e),
        };
        let mut q = Element::bare("query", ns::DISCO_ITEMS);
        for (node, c) in nodes {
            let model =
                NodeConfig::from_stored(&c).map_or(AccessModel::Whitelist, |c| c.access_model);
            if xp::may_read(model, rel) {
                q.append_child(stanza::new(
                    "item",
                    ns::DISCO_ITEMS,
                    &[("jid", owner), ("node", &node)],
                ));
            }
        }
        stanza::iq_result(iq, Some(q))
    })
}

/// The domain part of a bare JID (the server's address for an account's queries).
fn domain_of(bare: &str) -> &str {
    bare.rsplit_once('@').map_or(bare, |(_, d)| d)
}

/// Sends `ev` about `owner`'s `node` to every recipient whose verified caps ask for it and
/// whom the access model admits.
async fn notify(shared: &Arc<Shared>, owner: &str, node: &str, cfg: &NodeConfig, ev: &Event) {
    let targets: Vec<String> = {
        let st = shared.pep.lock();
        let Some(r) = st.recipients.get(owner) else {
            return;
        };
        r.iter()
            .filter(|(_, ver)| st.caps.get(*ver).is_some_and(|n| n.contains(node)))
            .map(|(full, _)| full.clone())
            .collect()
    };
    if targets.is_empty() {
        return;
    }
    let mut relations: HashMap<String, Relation> = HashMap::new();
    for full in targets {
        let Ok(jid) = Jid::new(&full) else {
            continue;
        };
        // XEP-0191 §3.3: nothing goes to a blocked entity.
        if blocking::outbound_blocked(shared, owner, &jid).await {
            continue;
        }
        let bare = jid.to_bare().to_string();
        let rel = match relations.get(&bare) {
            Some(r) => *r,
            None => {
                let r = relation(shared, owner, &bare).await;
                relations.insert(bare, r);
                r
            }
        };
        if !xp::may_read(cfg.access_model, rel) {
            continue;
        }
        let id = uuid_like(shared);
        routing::route(shared, xp::notification(owner, &full, &id, node, ev)).await;
    }
}

/// Notifies `items` of `owner`'s `node` as if they had been published there with
/// configuration `cfg`, without storing anything: for a view the server derives from another
/// node (XEP-0411's `storage:bookmarks`, computed from the XEP-0402 node).
pub async fn notify_items(
    shared: &Arc<Shared>,
    owner: &str,
    node: &str,
    cfg: &NodeConfig,
    items: Vec<xp::Item>,
) {
    notify(shared, owner, node, cfg, &Event::Items(items)).await;
}

/// Sends the last item of each of `owner`'s nodes that `full` asks notifications for
/// (verified caps) and may read, where the node sends its last item on presence.
async fn send_last_items(shared: &Arc<Shared>, owner: &str, full: &str, wanted: &BTreeSet<String>) {
    if wanted.is_empty() {
        return;
    }
    let o = owner.to_string();
    let nodes = match shared.db(move |s: &roles::Pep| s.pep_nodes(&o)).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "pep nodes read failed");
            return;
        }
    };
    let Ok(jid) = Jid::new(full) else {
        return;
    };
    if blocking::outbound_blocked(shared, owner, &jid).await {
        return;
    }
    let bare = jid.to_bare().to_string();
    let mut rel = None;
    for (node, c) in nodes {
        if !wanted.contains(&node) {
            continue;
        }
        let Some(cfg) = NodeConfig::from_stored(&c) else {
            continue;
        };
        if cfg.send_last == xp::SendLast::Never || !cfg.persist_items {
            continue;
        }
        let r = match rel {
            Some(r) => r,
            None => {
                let r = relation(shared, owner, &bare).await;
                rel = Some(r);
                r
            }
        };
        if !xp::may_read(cfg.access_model, r) {
            continue;
        }
        let (o, n) = (owner.to_string(), node.clone());
        let last = match shared
            .db(move |s: &roles::Pep| s.pep_items(&o, &n, &[], Some(1)))
            .await
        {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "pep items read failed");
                continue;
            }
        };
        let items: Vec<xp::Item> = last.iter().filter_map(thaw).collect();
        if items.is_empty() {
            continue;
        }
        let id = uuid_like(shared);
        let m = xp::notification(owner, full, &id, &node, &Event::Items(items));
        routing::route(shared, m).await;
    }
}

/// What a presence says about a recipient of `owner`'s notifications.
enum Seen {
    /// Available, with these caps (None: no usable `<c/>`, which changes nothing).
    Available(Option<xp::Caps>),
    /// Gone.
    Unavailable,
}

/// Records that `full` sent `owner` (or is, for the owner's own resources) the presence
/// `seen`, and sends the last items it asks for when it newly becomes a recipient or its
/// caps change, querying unknown caps first.
async fn observe(shared: &Arc<Shared>, owner: &str, full: &str, seen: Seen) {
    let caps = match seen {
        // A presence without caps (a directed presence some clients send bare, a status
        // change) says nothing new about what the resource wants: what is known stays.
        Seen::Available(None) => return,
        Seen::Unavailable => {
            {
                let mut st = shared.pep.lock();
                if let Some(r) = st.recipients.get_mut(owner) {
                    r.remove(full);
                    if r.is_empty() {
                        st.recipients.remove(owner);
                    }
                }
            }
            share_recipient(shared, owner, full, None);
            return;
        }
        Seen::Available(Some(c)) => c,
    };
    let max_recipients = shared.cfg.pep.max_recipients_per_user;
    let known_ver = shared
        .pep
        .lock()
        .recipients
        .get(owner)
        .and_then(|r| r.get(full).cloned());
    match known_ver {
        // A presence update of a known recipient (status, priority): nothing new.
        Some(v) if v == caps.ver => return,
        Some(_) => {}
        None => {
            // XEP-0163 §4: notifications follow the owner's roster. A stranger's directed
            // presence does not make it a recipient, so strangers cannot fill the account's
            // `max_recipients_per_user` places (they may still read open nodes' items).
            let bare = Jid::new(full).map(|j| j.to_bare().to_string());
            let Ok(bare) = bare else {
                return;
            };
            let rel = relation(shared, owner, &bare).await;
            if !rel.owner && !rel.in_roster {
                return;
            }
        }
    }
    let known = {
        let mut st = shared.pep.lock();
        let r = st.recipients.entry(owner.to_string()).or_default();
        if !r.contains_key(full) && r.len() >= max_recipients {
            // Bounded: beyond the limit a resource gets no notifications.
            return;
        }
        r.insert(full.to_string(), caps.ver.clone());
        st.caps.get(&caps.ver).cloned()
    };
    share_recipient(shared, owner, full, Some(&caps.ver));
    match known {
        Some(nodes) => send_last_items(shared, owner, full, &nodes).await,
        None => query_caps(shared, owner, full, &caps).await,
    }
}

/// Asks `full` what its caps `ver` means, unless a query for it is already out (then `full`
/// waits on that one).
async fn query_caps(shared: &Arc<Shared>, owner: &str, full: &str, caps: &xp::Caps) {
    let id = {
        let mut st = shared.pep.lock();
        let now = Instant::now();
        st.pending
            .retain(|_, p| now.duration_since(p.sent) < CAPS_QUERY_TIMEOUT);
        if let Some(p) = st.pending.values_mut().find(|p| p.ver == caps.ver) {
            if p.waiters.len() < MAX_WAITERS {
                p.waiters.push((owner.to_string(), full.to_string()));
            }
            return;
        }
        // Bounded like the cache: a flood of made-up hashes cannot grow it.
        if st.pending.len() >= shared.cfg.pep.max_caps {
            return;
        }
        let id = format!("{CAPS_ID_PREFIX}{}", shared.next_id());
        st.pending.insert(
            id.clone(),
            Pending {
                ver: caps.ver.clone(),
                asked: full.to_string(),
                sent: now,
                waiters: vec![(owner.to_string(), full.to_string())],
            },
        );
        id
    };
    let mut iq = stanza::new(
        "iq",
        INTERNAL_NS,
        &[
            ("type", "get"),
            ("id", &id),
            ("from", domain_of(owner)),
            ("to", full),
        ],
    );
    iq.append_child(xp::caps_query(caps));
    routing::route(shared, iq).await;
}

/// The answer to a caps query: cached if it verifies, then the waiters get their last items.
async fn caps_answer(shared: &Arc<Shared>, el: &Element, id: &str) {
    let Some(p) = shared.pep.lock().pending.remove(id) else {
        return;
    };
    let from_ok = stanza::from(el)
        .ok()
        .flatten()
        .is_some_and(|f| f.as_str() == p.asked);
    let info = el.get_child("query", ns::DISCO_INFO);
    let features = match (from_ok, stanza::typ(el), info) {
        (true, "result", Some(q)) => xp::verified_features(q, &p.ver),
        _ => None,
    };
    let Some(features) = features else {
        tracing::debug!(ver = %p.ver, "caps not verified");
        return;
    };
    let nodes = Arc::new(xp::notify_nodes(&features));
    {
        let mut st = shared.pep.lock();
        if !st.caps.contains_key(&p.ver) {
            while st.caps.len() >= shared.cfg.pep.max_caps {
                match st.caps_order.pop_front() {
                    Some(old) => {
                        st.caps.remove(&old);
                    }
                    None => break,
                }
            }
            st.caps_order.push_back(p.ver.clone());
            st.caps.insert(p.ver.clone(), nodes.clone());
        }
    }
    if let Some(c) = shared.cluster.get() {
        let mut msg = format!("c\n{}", p.ver);
        for n in nodes.iter() {
            msg.push('\n');
            msg.push_str(n);
        }
        c.share_state(msg);
    }
    for (owner, full) in p.waiters {
        let still = shared
            .pep
            .lock()
            .recipients
            .get(&owner)
            .and_then(|r| r.get(&full))
            .is_some_and(|v| *v == p.ver);
        if still {
            send_last_items(shared, &owner, &full, &nodes).await;
        }
    }
}

/// The `to_server` hook: takes the answers to this module's caps queries, passes the rest.
pub fn to_server(shared: &Arc<Shared>, ev: ToServer) -> Fut<'_, Option<ToServer>> {
    Box::pin(async move {
        let is_answer = stanza::kind(&ev.el) == Some(stanza::Kind::Iq)
            && matches!(stanza::typ(&ev.el), "result" | "error");
        match ev.el.attr("id") {
            Some(id) if is_answer && id.starts_with(CAPS_ID_PREFIX) => {
                let id = id.to_string();
                caps_answer(shared, &ev.el, &id).await;
                None
            }
            _ => Some(ev),
        }
    })
}

/// Cluster mode: applies what another node shared (`r`: a recipient, `c`: verified caps).
pub fn apply_shared(shared: &Shared, msg: &str) {
    let mut parts = msg.split('\n');
    match parts.next() {
        Some("r") => {
            let (Some(owner), Some(full), Some(ver)) = (parts.next(), parts.next(), parts.next())
            else {
                return;
            };
            let ver = (!ver.is_empty()).then_some(ver);
            shared
                .pep
                .record(owner, full, ver, shared.cfg.pep.max_recipients_per_user);
        }
        Some("c") => {
            let Some(ver) = parts.next() else {
                return;
            };
            let nodes = parts.map(str::to_string).collect();
            shared.pep.learn_caps(ver, nodes, shared.cfg.pep.max_caps);
        }
        _ => {}
    }
}

/// The `presence_to_local` hook: a contact's resource's available or unavailable presence
/// makes it a recipient of the account's notifications (or no longer one). Every presence is
/// passed on.
pub fn presence_in(shared: &Arc<Shared>, ev: PresenceToLocal) -> Fut<'_, Option<PresenceToLocal>> {
    Box::pin(async move {
        let seen = match stanza::typ(&ev.el) {
            "" => Some(Seen::Available(xp::caps_of(&ev.el))),
            "unavailable" => Some(Seen::Unavailable),
            _ => None,
        };
        if let (Some(seen), Ok(Some(from))) = (seen, stanza::from(&ev.el)) {
            if from.resource().is_some() {
                // In line, so that what it sends (a caps query, the last items) is queued
                // before anything the sender's next stanza causes.
                observe(shared, &ev.bare, from.as_str(), seen).await;
            }
        }
        Some(ev)
    })
}

/// The account's own resource `full` sent available presence `el` (`None`: it became
/// unavailable or ended): it gets the account's notifications its caps ask for, and, when
/// new, the last items (XEP-0163 §4.3.2).
pub async fn own_presence(shared: &Arc<Shared>, owner: &str, full: &str, el: Option<&Element>) {
    let seen = match el {
        Some(p) => Seen::Available(xp::caps_of(p)),
        None => Seen::Unavailable,
    };
    observe(shared, owner, full, seen).await;
}

/// Why a write the server makes to an account's node on its behalf (XEP-0402 bookmarks
/// written through XEP-0049) was refused; nothing was changed by the failing step.
#[derive(Debug)]
pub enum WriteError {
    /// More items than the node may keep (`[pep] max_items_per_node`).
    TooManyItems,
    /// An item is larger than `[pep] max_item_bytes`.
    ItemTooBig,
    /// The account has `[pep] max_nodes_per_user` nodes already.
    TooManyNodes,
    /// The account's PEP storage (`[pep] max_bytes_per_user`) is full.
    OverQuota,
    /// The store failed.
    Store(StoreError),
}

/// The items of `owner`'s `node`, oldest first, as the owner reads them; `None` when the
/// node does not exist.
pub async fn node_items(
    shared: &Arc<Shared>,
    owner: &str,
    node: &str,
) -> Result<Option<Vec<xp::Item>>, StoreError> {
    if node_config(shared, owner, node).await?.is_none() {
        return Ok(None);
    }
    let (o, n) = (owner.to_string(), node.to_string());
    let stored = shared
        .db(move |s: &roles::Pep| s.pep_items(&o, &n, &[], None))
        .await?;
    Ok(Some(stored.iter().filter_map(thaw).collect()))
}

/// Makes `owner`'s `node` hold exactly `items`: those new or changed are published and the
/// others retracted, each notified to the owner's and contacts' interested resources as a
/// client's publish or retract would be. The node is created, or reconfigured, to
/// `config` (as Prosody's mod_bookmarks does: XEP-0402 requires its configuration). Checked
/// against the `[pep]` limits before anything is written, so that an oversized set is
/// refused whole rather than silently losing its oldest items.
pub async fn replace_items(
    shared: &Arc<Shared>,
    owner: &str,
    node: &str,
    config: NodeConfig,
    items: Vec<xp::Item>,
) -> Result<(), WriteError> {
    write_items(shared, owner, node, config, items, true).await
}

/// Publishes `items` to `owner`'s `node` on the owner's behalf (those unchanged are not
/// published again), notified as a client's publish would be. An existing node keeps its
/// configuration (the owner may have chosen another access model); a new one gets `config`.
pub async fn publish_items(
    shared: &Arc<Shared>,
    owner: &str,
    node: &str,
    config: NodeConfig,
    items: Vec<xp::Item>,
) -> Result<(), WriteError> {
    write_items(shared, owner, node, config, items, false).await
}

async fn write_items(
    shared: &Arc<Shared>,
    owner: &str,
    node: &str,
    wanted_config: NodeConfig,
    items: Vec<xp::Item>,
    exact: bool,
) -> Result<(), WriteError> {
    let existing = node_config(shared, owner, node)
        .await
        .map_err(WriteError::Store)?;
    // Nothing to hold and no node: nothing to create either.
    if existing.is_none() && items.is_empty() {
        return Ok(());
    }
    let config = match &existing {
        Some(c) if !exact => c.clone(),
        _ => wanted_config,
    };
    if items.len() > config.max_items as usize {
        return Err(WriteError::TooManyItems);
    }
    let mut frozen = Vec::with_capacity(items.len());
    for i in &items {
        let xml = stanza::to_xml(&i.payload).ok_or(WriteError::ItemTooBig)?;
        if xml.len() > shared.cfg.pep.max_item_bytes {
            return Err(WriteError::ItemTooBig);
        }
        frozen.push(PepItem {
            id: i.id.clone(),
            xml,
        });
    }
    let wanted: BTreeSet<String> = items.iter().map(|i| i.id.clone()).collect();
    let mut create = None;
    match existing {
        Some(c) if c == config => {}
        Some(_) => {
            let (o, n, c, keep) = (
                owner.to_string(),
                node.to_string(),
                config.to_stored(),
                config.max_items as usize,
            );
            shared
                .db(move |s: &roles::Pep| s.pep_configure(&o, &n, &c, keep))
                .await
                .map_err(WriteError::Store)?;
        }
        None => create = Some(config.to_stored()),
    }
    let current: HashMap<String, String> = if create.is_some() {
        HashMap::new()
    } else {
        let (o, n) = (owner.to_string(), node.to_string());
        shared
            .db(move |s: &roles::Pep| s.pep_items(&o, &n, &[], None))
            .await
            .map_err(WriteError::Store)?
            .into_iter()
            .map(|i| (i.id, i.xml))
            .collect()
    };
    // Retractions first: the node keeps at most `max_items`, and publishing before the
    // unwanted items are gone could push out wanted ones.
    let gone: Vec<String> = current
        .keys()
        .filter(|id| exact && !wanted.contains(*id))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let (o, n) = (owner.to_string(), node.to_string());
        let gone = shared
            .db(move |s: &roles::Pep| s.pep_retract(&o, &n, &gone))
            .await
            .map_err(WriteError::Store)?;
        if !gone.is_empty() {
            notify(shared, owner, node, &config, &Event::Retract(gone)).await;
        }
    }
    let keep = config.max_items as usize;
    for (item, stored) in items.into_iter().zip(frozen) {
        if current.get(&item.id) == Some(&stored.xml) {
            continue;
        }
        let (o, n, lim, c) = (
            owner.to_string(),
            node.to_string(),
            limits(shared),
            create.take(),
        );
        let outcome = shared
            .db(move |s: &roles::Pep| s.pep_publish(&o, &n, c.as_deref(), Some(&stored), keep, lim))
            .await
            .map_err(WriteError::Store)?;
        match outcome {
            PepPublish::Stored { .. } => {}
            PepPublish::TooManyNodes => return Err(WriteError::TooManyNodes),
            PepPublish::OverQuota => return Err(WriteError::OverQuota),
            PepPublish::NoNode => return Err(WriteError::Store(StoreError::NotFound)),
        }
        // As after a client's publish: features reacting to items (push and XEP-0490
        // markers) see what the server wrote on the owner's behalf too.
        let published = PepPublished {
            user: owner.to_owned(),
            node: node.to_owned(),
            id: item.id.clone(),
            payload: item.payload.clone(),
        };
        notify(shared, owner, node, &config, &Event::Items(vec![item])).await;
        hooks::run(&shared.hooks.pep_published, shared, published).await;
    }
    Ok(())
}
