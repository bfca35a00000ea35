//! XEP-0313 message archive management payloads (`urn:xmpp:mam:2`, also `urn:xmpp:mam:1`)
//! with XEP-0059 result set management and XEP-0004 query forms; XEP-0359 stanza ids.
//!
//! This module parses queries and preferences, decides whether a message is archivable and
//! whether preferences allow archiving it, and builds results. It must not query or write
//! the archive, nor look up rosters (callers pass `contact_in_roster`).

use herald_proto::error::StanzaErrorCondition;
use herald_proto::stream::INTERNAL_NS;
use herald_proto::{ns, Element};
use herald_store::{ArchiveQuery, MamPrefs};

use crate::stanza;

/// RSM page size when the client asks for none (before clamping to the server's maximum).
pub const DEFAULT_PAGE: usize = 50;
/// XEP-0313 §6.1: the disco feature (and accepted form type) for the extended fields
/// `before-id`, `after-id` and `ids`.
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0384 OMEMO, legacy namespace (Conversations and most deployed clients).
const OMEMO_LEGACY: &str = "eu.siacs.conversations.axolotl";
/// XEP-0384 OMEMO 0.8+.
const OMEMO_2: &str = "urn:xmpp:omemo:2";
/// XEP-0027: legacy OpenPGP.
const PGP_LEGACY: &str = "jabber:x:encrypted";
/// XEP-0373: OpenPGP for XMPP.
const OX: &str = "urn:xmpp:openpgp:0";
/// XEP-0424: message retraction (changes what the archive shows, so it is kept).
const RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0444: message reactions.
const REACTIONS: &str = "urn:xmpp:reactions:0";
/// XEP-0122: data form validation.
const XDATA_VALIDATE: &str = "http://jabber.org/protocol/xdata-validate";

/// A parsed archive query.
#[derive(Debug, Clone, PartialEq)]
pub struct MamRequest {
    /// The namespace the client used ([`ns::MAM`] or [`ns::MAM1`]); replies use it too.
    pub ns: &'static str,
    /// The `queryid` to echo in each `<result/>`.
    pub queryid: Option<String>,
    /// Filters and paging, `max` already clamped to the server's maximum page.
    pub query: ArchiveQuery,
    /// `<flip-page/>` (XEP-0313 §4.1.4): return the page in reverse order.
    pub flip: bool,
}

type ParseError = (StanzaErrorCondition, String);

/// The server's bounds on one query (`[mam]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Most results per page: a larger RSM `<max/>` is clamped (XEP-0313 §4.1.3 lets the
    /// server return fewer than asked).
    pub max_page: usize,
    /// Most distinct ids in the `ids` field.
    pub max_ids: usize,
    /// RSM `<count/>` only up to this many matches (see [`ArchiveQuery::count_limit`]).
    pub max_count: usize,
}

fn bad(text: impl Into<String>) -> ParseError {
    (StanzaErrorCondition::BadRequest, text.into())
}

/// How many results an IQ asks some archive for: `Some(page)` for a MAM query set (RSM
/// `<max/>`, else [`DEFAULT_PAGE`], clamped to `max_page`; an unreadable `<max/>` counts as
/// the default, the archive will refuse it), `None` for anything else. The client's session
/// charges this against its inbound rate when the query goes to another archive (a room):
/// the results then reach it as routed messages it cannot tell from others, so the page is
/// charged when asked rather than when written.
pub fn page_asked(iq: &Element, max_page: usize) -> Option<usize> {
    if iq.name() != "iq" || iq.attr("type") != Some("set") {
        return None;
    }
    let query = iq
        .children()
        .find(|c| c.is("query", ns::MAM) || c.is("query", ns::MAM1))?;
    let asked = query
        .get_child("set", ns::RSM)
        .and_then(|set| set.get_child("max", ns::RSM))
        .and_then(|m| m.text().trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_PAGE);
    Some(asked.min(max_page))
}

/// Parses `<query xmlns='urn:xmpp:mam:2'>` (or `:1`): the data form fields `with`, `start`,
/// `end`, `before-id`, `after-id`, `ids` and the RSM `<set/>` (`max`, `after`, `before`).
///
/// Errors, each with a human-readable text: `bad-request` for a wrong namespace, a
/// `FORM_TYPE` that is not MAM's, an invalid JID or date, an empty id, a non-numeric `max`;
/// `feature-not-implemented` for a form field or RSM `<index/>` this server does not
/// support (a silently ignored filter would return messages the client did not ask for).
///
/// The page size is `max` clamped to `limits.max_page` (default [`DEFAULT_PAGE`], also
/// clamped); `max` 0 asks for the count only. An `ids` field with more than `limits.max_ids`
/// distinct ids is `policy-violation` (XEP-0313 §4.1.5 lets the server limit them); repeated
/// ids count once. The `after-id`/`before-id` form fields and RSM
/// `<after/>`/`<before/>` share the store's cursors: RSM wins when both are given, which is
/// the later cursor when a client pages through a filtered range (XEP-0313 §4.1.3 allows
/// both together).
pub fn parse_query(query: &Element, limits: &QueryLimits) -> Result<MamRequest, ParseError> {
    let max_page = limits.max_page;
    let qns: &'static str = if query.is("query", ns::MAM) {
        ns::MAM
    } else if query.is("query", ns::MAM1) {
        ns::MAM1
    } else {
        return Err(bad("not a MAM query"));
    };
    let mut q = ArchiveQuery {
        max: DEFAULT_PAGE.min(max_page),
        count_limit: limits.max_count,
        ..ArchiveQuery::default()
    };
    let mut form_after = None;
    let mut form_before = None;
    if let Some(form) = query.get_child("x", ns::DATA_FORMS) {
        for field in super::children_named(form, "field", ns::DATA_FORMS) {
            let var = field.attr("var").unwrap_or("");
            let mut values =
                super::children_named(field, "value", ns::DATA_FORMS).map(|v| v.text());
            // Single-valued fields take the first value; an empty field is no filter.
            let first = values.next();
            match var {
                "FORM_TYPE" => {
                    let t = first.unwrap_or_default();
                    if t != ns::MAM && t != ns::MAM1 && t != MAM_EXTENDED {
                        return Err(bad(format!("unknown FORM_TYPE '{t}'")));
                    }
                }
                "with" => {
                    if let Some(w) = first {
                        let jid = super::normalize_jid(&w)
                            .ok_or_else(|| bad("'with' is not a valid JID"))?;
                        q.with = Some(jid.to_string());
                    }
                }
                "start" | "end" => {
                    if let Some(s) = first {
                        let t = super::delay::parse_stamp(&s)
                            .ok_or_else(|| bad(format!("'{var}' is not an XEP-0082 DateTime")))?;
                        if var == "start" {
                            q.start = Some(t);
                        } else {
                            q.end = Some(t);
                        }
                    }
                }
                "after-id" | "before-id" => {
                    if let Some(id) = first {
                        if id.is_empty() {
                            return Err(bad(format!("'{var}' is empty")));
                        }
                        if var == "after-id" {
                            form_after = Some(id);
                        } else {
                            form_before = Some(id);
                        }
                    }
                }
                "ids" => {
                    // A set: linear in the ids sent (the form as a whole is bounded by the
                    // stanza size), and the cap applies to distinct ids.
                    let mut seen = std::collections::HashSet::new();
                    let mut ids: Vec<String> = Vec::new();
                    for id in first.into_iter().chain(values) {
                        if id.is_empty() {
                            return Err(bad("empty id in 'ids'"));
                        }
                        if seen.insert(id.clone()) {
                            if ids.len() == limits.max_ids {
                                return Err((
                                    StanzaErrorCondition::PolicyViolation,
                                    format!("at most {} ids per query", limits.max_ids),
                                ));
                            }
                            ids.push(id);
                        }
                    }
                    q.ids = Some(ids);
                }
                other => {
                    return Err((
                        StanzaErrorCondition::FeatureNotImplemented,
                        format!("unsupported field '{other}'"),
                    ))
                }
            }
        }
    }
    let mut rsm_after = None;
    let mut rsm_before = None;
    if let Some(set) = query.get_child("set", ns::RSM) {
        for c in set.children().filter(|c| c.has_ns(ns::RSM)) {
            match c.name() {
                "max" => {
                    let m: usize = c
                        .text()
                        .trim()
                        .parse()
                        .map_err(|_| bad("RSM <max/> is not a number"))?;
                    q.max = m.min(max_page);
                }
                "after" => {
                    let a = c.text();
                    if a.is_empty() {
                        return Err(bad("RSM <after/> is empty"));
                    }
                    rsm_after = Some(a);
                }
                // XEP-0059 §2.5: an empty <before/> asks for the last page.
                "before" => rsm_before = Some(c.text()),
                "index" => {
                    return Err((
                        StanzaErrorCondition::FeatureNotImplemented,
                        "RSM <index/> is not supported".to_owned(),
                    ))
                }
                _ => {}
            }
        }
    }
    q.after_id = rsm_after.or(form_after);
    q.before_id = rsm_before.or(form_before);
    Ok(MamRequest {
        ns: qns,
        queryid: query.attr("queryid").map(str::to_owned),
        query: q,
        flip: query.has_child("flip-page", qns),
    })
}

/// Which bound an archive query did not fit in; either way the client gets
/// `resource-constraint` of type `wait` (XEP-0313 leaves the limits to the server) and may
/// ask again once its earlier queries are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The account already has `max_per_user` queries running.
    User,
    /// The server already has `max_total` queries running or waiting.
    Server,
}

impl Refusal {
    /// The error's text for the client.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::User => "too many archive queries of this account at once",
            Refusal::Server => "too many archive queries at once, try again shortly",
        }
    }
}

/// Admission of archive queries: at most `max_per_user` at once per account, so one account
/// (a client looping on queries from several resources) takes at most that share of the
/// archive readers, and at most `max_total` in all, so queued work stays bounded. Every
/// [`Admission::admit`] that succeeds is matched by one [`Admission::release`]. Holds an
/// entry only per account with a query running (at most `max_total`).
#[derive(Debug)]
pub struct Admission {
    per_user: std::collections::HashMap<String, usize>,
    total: usize,
    max_per_user: usize,
    max_total: usize,
}

impl Admission {
    /// No query running yet.
    pub fn new(max_per_user: usize, max_total: usize) -> Admission {
        Admission {
            per_user: std::collections::HashMap::new(),
            total: 0,
            max_per_user,
            max_total,
        }
    }

    /// Counts a query of `user` in, or says which bound it does not fit.
    pub fn admit(&mut self, user: &str) -> Result<(), Refusal> {
        let mine = self.running(user);
        if mine >= self.max_per_user {
            return Err(Refusal::User);
        }
        if self.total >= self.max_total {
            return Err(Refusal::Server);
        }
        self.per_user.insert(user.to_owned(), mine + 1);
        self.total += 1;
        Ok(())
    }

    /// A query of `user` admitted earlier is over.
    pub fn release(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Queries of `user` running now.
    pub fn running(&self, user: &str) -> usize {
        self.per_user.get(user).copied().unwrap_or(0)
    }

    /// Queries running now, all accounts.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The answer to `<iq type='get'><query/></iq>` (XEP-0313 §4.1.1): the search form listing
/// the supported fields.
pub fn query_form(ns: &str) -> Element {
    let mut form = stanza::new("x", ns::DATA_FORMS, &[("type", "form")]);
    let mut form_type = stanza::new(
        "field",
        ns::DATA_FORMS,
        &[("type", "hidden"), ("var", "FORM_TYPE")],
    );
    form_type.append_child(stanza::text("value", ns::DATA_FORMS, ns));
    form.append_child(form_type);
    for (var, typ) in [
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("before-id", "text-single"),
        ("after-id", "text-single"),
    ] {
        form.append_child(stanza::new(
            "field",
            ns::DATA_FORMS,
            &[("type", typ), ("var", var)],
        ));
    }
    // XEP-0313 §4.1.1: `ids` is a list-multi with open validation (any values).
    let mut ids = stanza::new(
        "field",
        ns::DATA_FORMS,
        &[("type", "list-multi"), ("var", "ids")],
    );
    let mut validate = stanza::new("validate", XDATA_VALIDATE, &[("datatype", "xs:string")]);
    validate.append_child(Element::bare("open", XDATA_VALIDATE));
    ids.append_child(validate);
    form.append_child(ids);
    let mut q = Element::bare("query", ns);
    q.append_child(form);
    q
}

/// One result (XEP-0313 §4.2): `<message to><result xmlns=ns queryid? id><forwarded
/// xmlns='urn:xmpp:forward:0'><delay stamp/>original</forwarded></result></message>`.
pub fn result_message(
    to: &str,
    queryid: Option<&str>,
    ns: &str,
    id: &str,
    unix_micros: i64,
    original: Element,
) -> Element {
    let mut msg = stanza::new("message", INTERNAL_NS, &[("to", to)]);
    let mut result = Element::bare("result", ns);
    if let Some(qid) = queryid {
        stanza::set(&mut result, "queryid", qid);
    }
    stanza::set(&mut result, "id", id);
    let mut forwarded = Element::bare("forwarded", ns::FORWARD);
    forwarded.append_child(super::delay::delay("", unix_micros));
    forwarded.append_child(original);
    result.append_child(forwarded);
    msg.append_child(result);
    msg
}

/// `<fin xmlns=ns complete='true'?><set xmlns=RSM><first/><last/><count/></set></fin>`
/// (XEP-0313 §4.3, XEP-0059 §2.6); absent parts are left out.
pub fn fin(
    ns: &str,
    first: Option<&str>,
    last: Option<&str>,
    count: Option<usize>,
    complete: bool,
) -> Element {
    let mut fin = Element::bare("fin", ns);
    if complete {
        stanza::set(&mut fin, "complete", "true");
    }
    let mut set = Element::bare("set", ns::RSM);
    if let Some(f) = first {
        set.append_child(stanza::text("first", ns::RSM, f));
    }
    if let Some(l) = last {
        set.append_child(stanza::text("last", ns::RSM, l));
    }
    if let Some(c) = count {
        set.append_child(stanza::text("count", ns::RSM, c.to_string()));
    }
    fin.append_child(set);
    fin
}

/// Parses `<prefs default='always|never|roster'><always><jid/>..</always><never>..</never>
/// </prefs>` (XEP-0441, formerly XEP-0313 §6). A missing `default` keeps the server's
/// default; an unknown one is `bad-request`; an invalid JID `jid-malformed`. Lists come out
/// normalised, sorted and without duplicates (the store's form).
pub fn parse_prefs(prefs: &Element) -> Result<MamPrefs, StanzaErrorCondition> {
    if !(prefs.is("prefs", ns::MAM) || prefs.is("prefs", ns::MAM1)) {
        return Err(StanzaErrorCondition::BadRequest);
    }
    let pns = prefs.ns();
    let default = match prefs.attr("default") {
        None => None,
        Some(d @ ("always" | "never" | "roster")) => Some(d.to_owned()),
        Some(_) => return Err(StanzaErrorCondition::BadRequest),
    };
    let list = |name: &str| -> Result<Vec<String>, StanzaErrorCondition> {
        let mut out = Vec::new();
        for list in super::children_named(prefs, name, &pns) {
            for j in super::children_named(list, "jid", &pns) {
                let jid = super::normalize_jid(j.text().trim())
                    .ok_or(StanzaErrorCondition::JidMalformed)?;
                out.push(jid.to_string());
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    };
    Ok(MamPrefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

/// `<prefs xmlns=ns default=..><always>..</always><never>..</never></prefs>`; both lists
/// are always present (XEP-0441 §2.2), `default` falls back to `server_default`.
pub fn prefs_element(ns: &str, p: &MamPrefs, server_default: &str) -> Element {
    let default = p.default.as_deref().unwrap_or(server_default);
    let mut el = stanza::new("prefs", ns, &[("default", default)]);
    for (name, jids) in [("always", &p.always), ("never", &p.never)] {
        let mut list = Element::bare(name, ns);
        for j in jids {
            list.append_child(stanza::text("jid", ns, j.as_str()));
        }
        el.append_child(list);
    }
    el
}

/// Whether a message is archived at all, before preferences (XEP-0313 §5.1.1).
///
/// Archived: `chat` or `normal` messages with a `<body/>`, an encrypted payload (OMEMO old
/// and new, XEP-0027, XEP-0373), a Jingle Message Initiation element, a retraction or
/// reactions, or an XEP-0334 `<store/>` hint. Never: `error`, `headline`, `groupchat` (a
/// MUC keeps its own archive), carbons and MAM results (copies of stanzas archived already),
/// or messages with `<no-store/>`/`<no-permanent-store/>` hints.
pub fn is_archivable(msg: &Element) -> bool {
    if !msg.is("message", INTERNAL_NS) {
        return false;
    }
    if !matches!(stanza::typ(msg), "" | "normal" | "chat") {
        return false;
    }
    if super::carbons::is_carbon(msg) {
        return false;
    }
    let mut archivable = false;
    for c in msg.children() {
        if c.is("no-store", ns::HINTS)
            || c.is("no-permanent-store", ns::HINTS)
            || c.is("result", ns::MAM)
            || c.is("result", ns::MAM1)
        {
            return false;
        }
        archivable |= c.is("body", INTERNAL_NS)
            || c.is("store", ns::HINTS)
            || c.is("encrypted", OMEMO_LEGACY)
            || c.is("encrypted", OMEMO_2)
            || c.is("x", PGP_LEGACY)
            || c.is("openpgp", OX)
            || c.has_ns(ns::JMI)
            || c.is("retract", RETRACT)
            || c.is("reactions", REACTIONS);
    }
    archivable
}

/// Whether preferences allow archiving a message exchanged with `peer_bare`: `never` list
/// first (privacy wins when a JID is in both), then `always`, then the default mode
/// (`prefs.default` or `server_default`; `roster` uses `contact_in_roster`; an unknown
/// mode archives, as `always`).
pub fn should_archive(
    prefs: &MamPrefs,
    server_default: &str,
    peer_bare: &str,
    contact_in_roster: bool,
) -> bool {
    if prefs.never.iter().any(|j| j == peer_bare) {
        return false;
    }
    if prefs.always.iter().any(|j| j == peer_bare) {
        return true;
    }
    match prefs.default.as_deref().unwrap_or(server_default) {
        "never" => false,
        "roster" => contact_in_roster,
        _ => true,
    }
}

/// Adds `<stanza-id xmlns='urn:xmpp:sid:0' id by/>` after removing any stanza-id claiming
/// the same `by` (XEP-0359 §5: a peer could otherwise forge the archive id).
pub fn stamp_stanza_id(msg: &mut Element, by: &str, id: &str) {
    super::remove_children(msg, |c| {
        c.is("stanza-id", ns::SID) && c.attr("by") == Some(by)
    });
    msg.append_child(stanza::new("stanza-id", ns::SID, &[("id", id), ("by", by)]));
}

/// Takes back [`stamp_stanza_id`]'s stamp of `by` (a message that was not archived after
/// all must not claim to be: the stamp tells the server the archive has it).
pub fn unstamp_stanza_id(msg: &mut Element, by: &str) {
    super::remove_children(msg, |c| {
        c.is("stanza-id", ns::SID) && c.attr("by") == Some(by)
    });
}

/// A new archive id: unpredictable and unique (XEP-0313 §5: server-assigned UID), URL-safe.
pub fn new_archive_id() -> String {
    // The same random (v4) UUID, drawn from the thread's CSPRNG (ChaCha, seeded by the OS):
    // `Uuid::new_v4` asks the kernel (getrandom) for every id, one system call per archived
    // message, twice per chat message.
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .simple()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_asked_reads_rsm_max_clamped() {
        let q = |xml: &str| -> Element { xml.parse().unwrap() };
        let iq = |inner: &str| {
            q(&format!(
                "<iq xmlns='jabber:client' type='set'><query xmlns='urn:xmpp:mam:2'>{inner}</query></iq>"
            ))
        };
        assert_eq!(page_asked(&iq(""), 100), Some(DEFAULT_PAGE));
        assert_eq!(page_asked(&iq(""), 10), Some(10));
        let rsm = |m: &str| {
            iq(&format!(
                "<set xmlns='http://jabber.org/protocol/rsm'><max>{m}</max></set>"
            ))
        };
        assert_eq!(page_asked(&rsm("20"), 100), Some(20));
        assert_eq!(page_asked(&rsm("100000"), 100), Some(100));
        assert_eq!(page_asked(&rsm("x"), 100), Some(DEFAULT_PAGE));
        let v1 = q("<iq xmlns='jabber:client' type='set'><query xmlns='urn:xmpp:mam:1'/></iq>");
        assert_eq!(page_asked(&v1, 100), Some(DEFAULT_PAGE));
        // A form request and other IQs ask for no results.
        let get = q("<iq xmlns='jabber:client' type='get'><query xmlns='urn:xmpp:mam:2'/></iq>");
        assert_eq!(page_asked(&get, 100), None);
        let roster =
            q("<iq xmlns='jabber:client' type='set'><query xmlns='jabber:iq:roster'/></iq>");
        assert_eq!(page_asked(&roster, 100), None);
    }

    #[test]
    fn unstamping_removes_only_our_stamp() {
        let mut m: Element = "<message xmlns='jabber:client'><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='muc' by='room@muc.example'/></message>"
            .parse()
            .unwrap();
        stamp_stanza_id(&mut m, "a@example", "1");
        assert_eq!(
            m.children().filter(|c| c.is("stanza-id", ns::SID)).count(),
            2
        );
        unstamp_stanza_id(&mut m, "a@example");
        let left: Vec<_> = m
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .map(|c| c.attr("by"))
            .collect();
        assert_eq!(left, vec![Some("room@muc.example")]);
        assert!(m.get_child("body", "jabber:client").is_some());
    }
    use StanzaErrorCondition as C;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    fn lim(max_page: usize) -> QueryLimits {
        QueryLimits {
            max_page,
            max_ids: 3,
            max_count: 1000,
        }
    }

    fn query(ns: &str, fields: &str, rsm: &str) -> Element {
        el(&format!(
            "<query xmlns='{ns}' queryid='f27'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>{ns}</value></field>{fields}</x>{rsm}</query>"
        ))
    }

    fn field(var: &str, value: &str) -> String {
        format!("<field var='{var}'><value>{value}</value></field>")
    }

    #[test]
    fn bare_query_gets_default_page() {
        // XEP-0313 §4.1 example 1.
        let r = parse_query(&el("<query xmlns='urn:xmpp:mam:2'/>"), &lim(100)).unwrap();
        assert_eq!(
            r,
            MamRequest {
                ns: ns::MAM,
                queryid: None,
                query: ArchiveQuery {
                    max: DEFAULT_PAGE,
                    count_limit: 1000,
                    ..Default::default()
                },
                flip: false,
            }
        );
        let r = parse_query(&el("<query xmlns='urn:xmpp:mam:1' queryid='q'/>"), &lim(10)).unwrap();
        assert_eq!(r.ns, ns::MAM1);
        assert_eq!(r.queryid.as_deref(), Some("q"));
        assert_eq!(r.query.max, 10);
    }

    #[test]
    fn xep_filter_examples() {
        // XEP-0313 §4.1.1 with, §4.1.2 start/end.
        let q = query(
            ns::MAM,
            &format!(
                "{}{}{}",
                field("with", "Juliet@Capulet.lit"),
                field("start", "2010-06-07T00:00:00Z"),
                field("end", "2010-07-07T13:23:54Z")
            ),
            "",
        );
        let r = parse_query(&q, &lim(100)).unwrap();
        assert_eq!(r.queryid.as_deref(), Some("f27"));
        assert_eq!(r.query.with.as_deref(), Some("juliet@capulet.lit"));
        assert_eq!(r.query.start, Some(1_275_868_800_000_000));
        assert_eq!(r.query.end, Some(1_278_509_034_000_000));
        // A full JID is kept (matches exactly).
        let q = query(ns::MAM, &field("with", "juliet@capulet.lit/balcony"), "");
        assert_eq!(
            parse_query(&q, &lim(100)).unwrap().query.with.as_deref(),
            Some("juliet@capulet.lit/balcony")
        );
    }

    #[test]
    fn rsm_paging_examples() {
        // XEP-0313 §4.1.3 example: limit.
        let q = query(
            ns::MAM,
            &field("start", "2010-08-07T00:00:00Z"),
            "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set>",
        );
        assert_eq!(parse_query(&q, &lim(100)).unwrap().query.max, 10);
        // Next page.
        let q = query(
            ns::MAM,
            "",
            "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max>\
             <after>09af3-cc343-b409f</after></set>",
        );
        let r = parse_query(&q, &lim(100)).unwrap();
        assert_eq!(r.query.after_id.as_deref(), Some("09af3-cc343-b409f"));
        assert_eq!(r.query.before_id, None);
        // Last page: empty <before/>.
        let q = query(
            ns::MAM,
            "",
            "<set xmlns='http://jabber.org/protocol/rsm'><max>20</max>\
             <before/></set>",
        );
        let r = parse_query(&q, &lim(100)).unwrap();
        assert_eq!(r.query.before_id.as_deref(), Some(""));
        // Clamped to the server maximum; 0 allowed.
        let q = query(
            ns::MAM,
            "",
            "<set xmlns='http://jabber.org/protocol/rsm'><max>5000</max></set>",
        );
        assert_eq!(parse_query(&q, &lim(100)).unwrap().query.max, 100);
        let q = query(
            ns::MAM,
            "",
            "<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set>",
        );
        assert_eq!(parse_query(&q, &lim(100)).unwrap().query.max, 0);
    }

    #[test]
    fn extended_fields_and_flip() {
        let q = query(
            ns::MAM,
            &format!(
                "{}{}<field var='ids'><value>a</value><value>b</value><value>a</value></field>",
                field("after-id", "x1"),
                field("before-id", "x9")
            ),
            "<flip-page/>",
        );
        let r = parse_query(&q, &lim(100)).unwrap();
        assert_eq!(r.query.after_id.as_deref(), Some("x1"));
        assert_eq!(r.query.before_id.as_deref(), Some("x9"));
        assert_eq!(r.query.ids, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(r.flip);
        // RSM cursors win over the form's.
        let q = query(
            ns::MAM,
            &field("after-id", "x1"),
            "<set xmlns='http://jabber.org/protocol/rsm'><after>x5</after></set>",
        );
        assert_eq!(
            parse_query(&q, &lim(100))
                .unwrap()
                .query
                .after_id
                .as_deref(),
            Some("x5")
        );
        // The extended form type is accepted; flip-page in another namespace is not flip.
        let q = el(
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>urn:xmpp:mam:2#extended</value></field></x>\
             <flip-page xmlns='urn:other'/></query>",
        );
        assert!(!parse_query(&q, &lim(100)).unwrap().flip);
        // Empty fields are no filter.
        let q = query(ns::MAM, "<field var='with'/><field var='start'/>", "");
        let r = parse_query(&q, &lim(100)).unwrap();
        assert_eq!((r.query.with, r.query.start), (None, None));
    }

    #[test]
    fn admission_table() {
        // (action, user, expected result of admit / running of user / total after)
        enum A {
            In(&'static str, Result<(), Refusal>),
            Out(&'static str),
        }
        use A::*;
        let steps = [
            In("a", Ok(())),
            In("a", Ok(())),
            // a third of a's: a's bound, whatever room the server has.
            In("a", Err(Refusal::User)),
            In("b", Ok(())),
            // The server's bound (4) is reached by c; d is refused for it, a for its own.
            In("c", Ok(())),
            In("d", Err(Refusal::Server)),
            In("a", Err(Refusal::User)),
            Out("a"),
            In("d", Ok(())),
            In("b", Err(Refusal::Server)),
            Out("d"),
            Out("b"),
            In("b", Ok(())),
            In("b", Ok(())),
            In("b", Err(Refusal::User)),
            // Releasing what was never admitted changes nothing.
            Out("nobody"),
        ];
        let mut adm = Admission::new(2, 4);
        let mut want_total = 0usize;
        for (i, step) in steps.iter().enumerate() {
            match step {
                In(u, want) => {
                    let before = adm.running(u);
                    let got = adm.admit(u);
                    assert_eq!(&got, want, "step {i}");
                    if got.is_ok() {
                        want_total += 1;
                        assert_eq!(adm.running(u), before + 1, "step {i}");
                    } else {
                        assert_eq!(adm.running(u), before, "step {i}");
                    }
                }
                Out(u) => {
                    if adm.running(u) > 0 {
                        want_total -= 1;
                    }
                    adm.release(u);
                }
            }
            assert_eq!(adm.total(), want_total, "step {i}");
            assert!(adm.per_user.len() <= 4);
        }
        for u in ["a", "b", "c", "b"] {
            adm.release(u);
        }
        assert_eq!(adm.total(), 0);
        assert!(adm.per_user.is_empty(), "idle accounts leave no entry");
        assert!(!Refusal::User.text().is_empty() && !Refusal::Server.text().is_empty());
    }

    #[test]
    fn ids_are_capped_after_dedup() {
        let ids = |values: &[&str]| {
            let v: String = values
                .iter()
                .map(|i| format!("<value>{i}</value>"))
                .collect();
            query(ns::MAM, &format!("<field var='ids'>{v}</field>"), "")
        };
        // lim() allows 3 ids. Repeats count once, and keep the first order.
        let r = parse_query(&ids(&["c", "a", "c", "b", "a", "c"]), &lim(100)).unwrap();
        assert_eq!(r.query.ids, Some(vec!["c".into(), "a".into(), "b".into()]));
        let many_repeats = vec!["x"; 10_000];
        let r = parse_query(&ids(&many_repeats), &lim(100)).unwrap();
        assert_eq!(r.query.ids, Some(vec!["x".into()]));
        // A fourth distinct id is refused, wherever it comes.
        for values in [&["a", "b", "c", "d"][..], &["a", "a", "b", "c", "d", "a"]] {
            let (cond, text) = parse_query(&ids(values), &lim(100)).unwrap_err();
            assert_eq!(cond, C::PolicyViolation, "{values:?}");
            assert!(text.contains('3'), "{text}");
        }
    }

    #[test]
    fn limits_reach_the_store_query() {
        let q = query(
            ns::MAM,
            "",
            "<set xmlns='http://jabber.org/protocol/rsm'><max>1000000</max></set>",
        );
        let limits = QueryLimits {
            max_page: 250,
            max_ids: 10,
            max_count: 77,
        };
        let r = parse_query(&q, &limits).unwrap();
        assert_eq!((r.query.max, r.query.count_limit), (250, 77));
        // A max_page below the default page lowers the default too.
        let r = parse_query(&el("<query xmlns='urn:xmpp:mam:2'/>"), &lim(20)).unwrap();
        assert_eq!(r.query.max, 20);
    }

    #[test]
    fn query_errors() {
        let rsm =
            |inner: &str| format!("<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>");
        let cases = [
            (el("<query xmlns='urn:xmpp:mam:0'/>"), C::BadRequest),
            (el("<prefs xmlns='urn:xmpp:mam:2'/>"), C::BadRequest),
            (
                el("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='FORM_TYPE'>\
                    <value>jabber:iq:search</value></field></x></query>"),
                C::BadRequest,
            ),
            (query(ns::MAM, &field("with", "a@b@c"), ""), C::BadRequest),
            (query(ns::MAM, &field("start", "yesterday"), ""), C::BadRequest),
            (query(ns::MAM, &field("end", "2010-07-07"), ""), C::BadRequest),
            (query(ns::MAM, &field("after-id", ""), ""), C::BadRequest),
            (query(ns::MAM, "<field var='ids'><value>a</value><value/></field>", ""), C::BadRequest),
            (query(ns::MAM, &field("include-groupchat", "true"), ""), C::FeatureNotImplemented),
            (query(ns::MAM, "", &rsm("<max>ten</max>")), C::BadRequest),
            (query(ns::MAM, "", &rsm("<max>-1</max>")), C::BadRequest),
            (query(ns::MAM, "", &rsm("<after/>")), C::BadRequest),
            (query(ns::MAM, "", &rsm("<index>3</index>")), C::FeatureNotImplemented),
        ];
        for (q, want) in cases {
            match parse_query(&q, &lim(100)) {
                Err((cond, text)) => {
                    assert_eq!(cond, want, "{q:?}");
                    assert!(!text.is_empty());
                }
                Ok(r) => panic!("accepted {q:?}: {r:?}"),
            }
        }
    }

    #[test]
    fn form_lists_supported_fields_and_they_parse() {
        let f = query_form(ns::MAM);
        assert!(f.is("query", ns::MAM));
        let x = f.get_child("x", ns::DATA_FORMS).unwrap();
        assert_eq!(x.attr("type"), Some("form"));
        let vars: Vec<&str> = x.children().filter_map(|c| c.attr("var")).collect();
        assert_eq!(
            vars,
            [
                "FORM_TYPE",
                "with",
                "start",
                "end",
                "before-id",
                "after-id",
                "ids"
            ]
        );
        // Every advertised field is accepted when submitted.
        let fields: String = vars[1..]
            .iter()
            .map(|v| match *v {
                "with" => field(v, "a@b.c"),
                "start" | "end" => field(v, "2010-06-07T00:00:00Z"),
                _ => field(v, "id1"),
            })
            .collect();
        assert!(parse_query(&query(ns::MAM, &fields, ""), &lim(100)).is_ok());
        assert!(query_form(ns::MAM1).is("query", ns::MAM1));
    }

    #[test]
    fn result_message_matches_xep_example() {
        // XEP-0313 §4.2 example.
        let orig = el(
            "<message xmlns='jabber:client' to='juliet@capulet.lit/balcony' \
             from='romeo@montague.lit/orchard' type='chat'><body>Call me but love</body></message>",
        );
        let m = result_message(
            "juliet@capulet.lit/chamber",
            Some("f27"),
            ns::MAM,
            "28482-98726-73623",
            1_278_803_305_000_000,
            orig.clone(),
        );
        assert!(m.is("message", INTERNAL_NS));
        assert_eq!(m.attr("to"), Some("juliet@capulet.lit/chamber"));
        let r = m.get_child("result", ns::MAM).unwrap();
        assert_eq!(r.attr("queryid"), Some("f27"));
        assert_eq!(r.attr("id"), Some("28482-98726-73623"));
        let fwd = r.get_child("forwarded", ns::FORWARD).unwrap();
        let d = fwd.get_child("delay", ns::DELAY).unwrap();
        assert_eq!(d.attr("stamp"), Some("2010-07-10T23:08:25.000000Z"));
        assert_eq!(d.attr("from"), None);
        assert_eq!(fwd.get_child("message", INTERNAL_NS), Some(&orig));
        let m = result_message("a@b/c", None, ns::MAM1, "i", 0, orig);
        assert_eq!(
            m.get_child("result", ns::MAM1).unwrap().attr("queryid"),
            None
        );
    }

    #[test]
    fn fin_shapes() {
        // XEP-0313 §4.3 example.
        let f = fin(
            ns::MAM,
            Some("23452-4534-1"),
            Some("390-2342-22"),
            Some(16),
            false,
        );
        let want = el(
            "<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <first>23452-4534-1</first><last>390-2342-22</last><count>16</count></set></fin>",
        );
        assert_eq!(f, want);
        let f = fin(ns::MAM1, None, None, Some(0), true);
        let want = el("<fin xmlns='urn:xmpp:mam:1' complete='true'>\
             <set xmlns='http://jabber.org/protocol/rsm'><count>0</count></set></fin>");
        assert_eq!(f, want);
    }

    #[test]
    fn prefs_round_trip() {
        // XEP-0441 §2.2 example.
        let p = el("<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
             <always><jid>romeo@montague.lit</jid></always>\
             <never><jid>montague@montague.lit</jid><jid>Iago@Shakespeare.lit</jid>\
             <jid>iago@shakespeare.lit</jid></never></prefs>");
        let got = parse_prefs(&p).unwrap();
        assert_eq!(
            got,
            MamPrefs {
                default: Some("roster".into()),
                always: vec!["romeo@montague.lit".into()],
                never: vec![
                    "iago@shakespeare.lit".into(),
                    "montague@montague.lit".into()
                ],
            }
        );
        let built = prefs_element(ns::MAM, &got, "always");
        assert_eq!(parse_prefs(&built), Ok(got));
        // Missing default reports the server's; empty lists are still present.
        let empty = MamPrefs::default();
        let e = prefs_element(ns::MAM1, &empty, "never");
        assert_eq!(
            e,
            el("<prefs xmlns='urn:xmpp:mam:1' default='never'><always/><never/></prefs>")
        );
        assert_eq!(
            parse_prefs(&el("<prefs xmlns='urn:xmpp:mam:2'/>")),
            Ok(empty)
        );
    }

    #[test]
    fn prefs_errors() {
        assert_eq!(
            parse_prefs(&el("<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>")),
            Err(C::BadRequest)
        );
        assert_eq!(
            parse_prefs(&el(
                "<prefs xmlns='urn:xmpp:mam:2'><always><jid>a@b@c</jid></always></prefs>"
            )),
            Err(C::JidMalformed)
        );
        assert_eq!(
            parse_prefs(&el(
                "<prefs xmlns='urn:xmpp:mam:2'><never><jid/></never></prefs>"
            )),
            Err(C::JidMalformed)
        );
        assert_eq!(
            parse_prefs(&el("<query xmlns='urn:xmpp:mam:2'/>")),
            Err(C::BadRequest)
        );
    }

    #[test]
    fn archivable_messages() {
        let cases = [
            ("<message xmlns='jabber:client' type='chat'><body>x</body></message>", true),
            ("<message xmlns='jabber:client'><body>x</body></message>", true),
            ("<message xmlns='jabber:client' type='normal'><body>x</body></message>", true),
            ("<message xmlns='jabber:client' type='chat'/>", false),
            (
                "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
                false,
            ),
            (
                "<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
                true,
            ),
            (
                "<message xmlns='jabber:client' type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>",
                true,
            ),
            ("<message xmlns='jabber:client'><x xmlns='jabber:x:encrypted'>..</x></message>", true),
            ("<message xmlns='jabber:client'><openpgp xmlns='urn:xmpp:openpgp:0'>..</openpgp></message>", true),
            (
                "<message xmlns='jabber:client'><propose xmlns='urn:xmpp:jingle-message:0' id='a'/></message>",
                true,
            ),
            (
                "<message xmlns='jabber:client' type='chat'><retract xmlns='urn:xmpp:message-retract:1' id='a'/></message>",
                true,
            ),
            ("<message xmlns='jabber:client' type='chat'><store xmlns='urn:xmpp:hints'/></message>", true),
            (
                "<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
                false,
            ),
            (
                "<message xmlns='jabber:client' type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
                false,
            ),
            ("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>", false),
            ("<message xmlns='jabber:client' type='headline'><body>x</body></message>", false),
            ("<message xmlns='jabber:client' type='error'><body>x</body></message>", false),
            (
                "<message xmlns='jabber:client' type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'/></sent></message>",
                false,
            ),
            (
                "<message xmlns='jabber:client'><result xmlns='urn:xmpp:mam:2' id='a'><forwarded xmlns='urn:xmpp:forward:0'/></result></message>",
                false,
            ),
            ("<presence xmlns='jabber:client'><body>x</body></presence>", false),
        ];
        for (xml, want) in cases {
            assert_eq!(is_archivable(&el(xml)), want, "{xml}");
        }
    }

    #[test]
    fn preferences_decide() {
        let p = |default: Option<&str>, always: &[&str], never: &[&str]| MamPrefs {
            default: default.map(str::to_owned),
            always: always.iter().map(|s| s.to_string()).collect(),
            never: never.iter().map(|s| s.to_string()).collect(),
        };
        let peer = "romeo@montague.lit";
        assert!(should_archive(&p(None, &[], &[]), "always", peer, false));
        assert!(!should_archive(&p(None, &[], &[]), "never", peer, true));
        assert!(should_archive(&p(None, &[], &[]), "roster", peer, true));
        assert!(!should_archive(&p(None, &[], &[]), "roster", peer, false));
        assert!(!should_archive(
            &p(Some("never"), &[], &[]),
            "always",
            peer,
            true
        ));
        assert!(should_archive(
            &p(Some("roster"), &[], &[]),
            "never",
            peer,
            true
        ));
        assert!(should_archive(
            &p(Some("never"), &[peer], &[]),
            "always",
            peer,
            false
        ));
        assert!(!should_archive(
            &p(Some("always"), &[], &[peer]),
            "always",
            peer,
            true
        ));
        assert!(!should_archive(
            &p(None, &[peer], &[peer]),
            "always",
            peer,
            true
        ));
        assert!(!should_archive(
            &p(Some("never"), &["other@x"], &[]),
            "never",
            "o@x",
            false
        ));
        assert!(should_archive(&p(None, &[], &[]), "bogus", peer, false));
    }

    #[test]
    fn stanza_id_replaces_forgeries_only_for_us() {
        let mut m = el("<message xmlns='jabber:client' type='chat'><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='juliet@capulet.lit'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='theirs' by='romeo@montague.lit'/></message>");
        stamp_stanza_id(&mut m, "juliet@capulet.lit", "real");
        let ids: Vec<(Option<&str>, Option<&str>)> = m
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .map(|c| (c.attr("id"), c.attr("by")))
            .collect();
        assert_eq!(
            ids,
            [
                (Some("theirs"), Some("romeo@montague.lit")),
                (Some("real"), Some("juliet@capulet.lit"))
            ]
        );
        assert!(m.has_child("body", INTERNAL_NS));
    }

    #[test]
    fn archive_ids_are_unique_and_url_safe() {
        let a = new_archive_id();
        let b = new_archive_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
