//! Instant messaging over TCP (issue 3): rosters and roster pushes, XEP-0237 versioning and
//! limits, the RFC 6121 Appendix A subscription machine between two local users, presence
//! broadcast, probes and directed presence, bare-JID priorities, XEP-0160 offline storage
//! (order, XEP-0203 stamps, the bound, deletion once delivered) and XEP-0191 blocking.
//!
//! How absence is checked without sleeping: every effect a client's stanza has on other
//! sessions (pushes, presence, messages) is put in their inboxes while the server handles that
//! stanza, before it reads the client's next one, and an inbox is first-in first-out. So a
//! headline a client sends to its own full JID comes back after everything that was queued
//! for it earlier: [`Cl::sync`] uses it as a barrier and returns what arrived before it.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::*;
use herald_proto::Element;
use herald_store::{RosterItem, Subscription};

const PW: &str = "pw";
const ROSTER: &str = "jabber:iq:roster";
const BLOCKING: &str = "urn:xmpp:blocking";

/// A logged-in resource with a mailbox of elements read while looking for others.
struct Cl {
    raw: RawClient,
    jid: String,
    seq: u32,
    seen: VecDeque<Element>,
}

impl Cl {
    async fn login(s: &TestServer, user: &str, res: &str) -> Cl {
        let raw = RawClient::login(s.c2s(), user, PW, res).await;
        Cl {
            raw,
            jid: format!("{user}@localhost/{res}"),
            seq: 0,
            seen: VecDeque::new(),
        }
    }

    /// Logs in, asks for the roster (so it gets roster pushes) and sends initial presence;
    /// what arrives meanwhile stays for the next `sync` or `wait`.
    async fn online(s: &TestServer, user: &str, res: &str) -> Cl {
        let mut c = Cl::login(s, user, res).await;
        c.roster_get(None).await;
        c.send("<presence/>").await;
        // Keep what arrived (self-presence, probe answers, stored requests and messages)
        // for the test to look at.
        let got = c.sync().await;
        c.seen.extend(got);
        c
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}{}", self.seq)
    }

    async fn send(&mut self, x: &str) {
        self.raw.send(x).await
    }

    /// Everything that arrived (and was not consumed) before a barrier through this
    /// session's own inbox; see the module doc.
    async fn sync(&mut self) -> Vec<Element> {
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
            out.push(el);
        }
    }

    /// The first element (already seen or arriving) matching `pred`; others are kept.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
        if let Some(i) = self.seen.iter().position(&pred) {
            return self.seen.remove(i).unwrap();
        }
        let found = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                let el = self.raw.element().await;
                if pred(&el) {
                    return el;
                }
                self.seen.push_back(el);
            }
        })
        .await;
        match found {
            Ok(el) => el,
            Err(_) => panic!(
                "{}: timed out waiting for {what}; got meanwhile: {:?}",
                self.jid,
                self.seen.iter().map(xml).collect::<Vec<_>>()
            ),
        }
    }

    /// Sends an IQ and returns its result or error.
    async fn iq(&mut self, typ: &str, payload: &str) -> Element {
        let id = self.next_id("iq");
        self.send(&format!("<iq type='{typ}' id='{id}'>{payload}</iq>"))
            .await;
        self.wait(&format!("the reply to {id}"), |e| {
            e.name() == "iq"
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result") | Some("error"))
        })
        .await
    }

    async fn roster_get(&mut self, ver: Option<&str>) -> Element {
        let q = match ver {
            Some(v) => format!("<query xmlns='{ROSTER}' ver='{v}'/>"),
            None => format!("<query xmlns='{ROSTER}'/>"),
        };
        let r = self.iq("get", &q).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
        r
    }

    /// Roster items of a fresh roster get.
    async fn roster(&mut self) -> Vec<Element> {
        let r = self.roster_get(None).await;
        child(&r, "query")
            .map(|q| q.children().cloned().collect())
            .unwrap_or_default()
    }

    async fn roster_set(&mut self, item: &str) -> Element {
        self.iq("set", &format!("<query xmlns='{ROSTER}'>{item}</query>"))
            .await
    }

    async fn presence_to(&mut self, to: &str, typ: &str) {
        self.send(&format!("<presence to='{to}' type='{typ}'/>"))
            .await;
    }

    async fn blocklist(&mut self) -> Vec<String> {
        let r = self
            .iq("get", &format!("<blocklist xmlns='{BLOCKING}'/>"))
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
        child(&r, "blocklist")
            .unwrap()
            .children()
            .filter_map(|i| i.attr("jid").map(str::to_owned))
            .collect()
    }

    /// Ends the session by closing the socket without a stream close.
    fn drop_socket(self) {
        drop(self.raw);
    }
}

fn server_with_users(s: &TestServer, users: &[&str]) {
    for u in users {
        s.add_user(u, PW);
    }
}

/// Writes a roster item straight into the store (set-up for tests that are not about how
/// the subscription came to be).
fn relate(s: &TestServer, user: &str, contact: &str, sub: Subscription) {
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

/// Mutual subscription between two users, as stored state.
fn befriend(s: &TestServer, a: &str, b: &str) {
    relate(s, a, b, Subscription::Both);
    relate(s, b, a, Subscription::Both);
}

/// The items of the roster pushes among `els`.
fn pushed_items(els: &[Element]) -> Vec<Element> {
    els.iter()
        .filter(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .filter_map(|e| child(e, "query").filter(|q| q.ns() == ROSTER))
        .flat_map(|q| q.children().cloned())
        .collect()
}

fn is_roster_push(e: &Element) -> bool {
    e.name() == "iq"
        && e.attr("type") == Some("set")
        && child(e, "query").is_some_and(|q| q.ns() == ROSTER)
}

/// Asserts `els` holds exactly one roster push, for `jid` with this subscription and ask.
fn assert_one_push(els: &[Element], jid: &str, sub: &str, ask: bool) -> Element {
    let items = pushed_items(els);
    assert_eq!(
        items.len(),
        1,
        "pushes: {:?}",
        items.iter().map(xml).collect::<Vec<_>>()
    );
    let it = items.into_iter().next().unwrap();
    assert_eq!(it.attr("jid"), Some(jid), "{}", xml(&it));
    assert_eq!(it.attr("subscription"), Some(sub), "{}", xml(&it));
    assert_eq!(
        it.attr("ask"),
        ask.then_some("subscribe"),
        "ask flag: {}",
        xml(&it)
    );
    it
}

fn assert_no_push(els: &[Element]) {
    let items = pushed_items(els);
    assert!(
        items.is_empty(),
        "unexpected pushes: {:?}",
        items.iter().map(xml).collect::<Vec<_>>()
    );
}

/// Presence stanzas among `els` from `from` with this type ("" for available).
fn presences<'a>(els: &'a [Element], from: &str, typ: &str) -> Vec<&'a Element> {
    els.iter()
        .filter(|e| {
            e.name() == "presence"
                && e.attr("from") == Some(from)
                && e.attr("type").unwrap_or("") == typ
        })
        .collect()
}

fn position(els: &[Element], from: &str, typ: &str) -> usize {
    els.iter()
        .position(|e| {
            e.name() == "presence"
                && e.attr("from") == Some(from)
                && e.attr("type").unwrap_or("") == typ
        })
        .unwrap_or_else(|| {
            panic!(
                "no presence type '{typ}' from {from} in {:?}",
                els.iter().map(xml).collect::<Vec<_>>()
            )
        })
}

fn messages(els: &[Element]) -> Vec<&Element> {
    els.iter().filter(|e| e.name() == "message").collect()
}

fn body(e: &Element) -> String {
    child(e, "body").map(|b| b.text()).unwrap_or_default()
}

/// The defined condition of a stanza error (`<error><cond/>..</error>`) and the error type.
fn assert_no_error(els: &[Element]) {
    assert!(
        els.iter().all(|e| e.attr("type") != Some("error")),
        "{els:?}"
    );
}

fn error_of(e: &Element) -> (String, String) {
    let err = child(e, "error").unwrap_or_else(|| panic!("no error in {}", xml(e)));
    let cond = err
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    (cond, err.attr("type").unwrap_or_default().to_string())
}

fn query_items(iq: &Element) -> Vec<Element> {
    child(iq, "query")
        .map(|q| q.children().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Rosters (RFC 6121 §2, XEP-0237)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn roster_set_update_remove_push_to_every_interested_resource() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut r1 = Cl::login(&s, "alice", "r1").await;
    let mut r2 = Cl::login(&s, "alice", "r2").await;
    // r3 never asks for the roster: RFC 6121 §2.1.6 pushes go to interested resources only.
    let mut r3 = Cl::login(&s, "alice", "r3").await;
    assert!(query_items(&r1.roster_get(None).await).is_empty());
    r2.roster_get(None).await;

    let r = r1
        .roster_set("<item jid='Bob@LocalHost' name='Bobby'><group>Friends</group></item>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    for c in [&mut r1, &mut r2] {
        let got = c.sync().await;
        let push = got.iter().find(|e| is_roster_push(e)).unwrap();
        assert_eq!(push.attr("to"), Some(c.jid.as_str()));
        assert!(child(push, "query").unwrap().attr("ver").is_some());
        let it = assert_one_push(&got, "bob@localhost", "none", false);
        assert_eq!(it.attr("name"), Some("Bobby"));
        assert_eq!(child(&it, "group").unwrap().text(), "Friends");
    }
    assert_no_push(&r3.sync().await);

    let items = r2.roster().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attr("jid"), Some("bob@localhost"));
    assert_eq!(items[0].attr("name"), Some("Bobby"));

    // An update replaces name and groups.
    let r = r2
        .roster_set(
            "<item jid='bob@localhost' name='B'><group>Work</group><group>Gym</group></item>",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    for c in [&mut r1, &mut r2] {
        let it = assert_one_push(&c.sync().await, "bob@localhost", "none", false);
        assert_eq!(it.attr("name"), Some("B"));
        let groups: Vec<String> = it.children().map(|g| g.text()).collect();
        assert_eq!(groups, ["Work", "Gym"]);
    }
    assert_no_push(&r3.sync().await);

    // RFC 6121 §2.5: remove pushes subscription='remove'.
    let r = r1
        .roster_set("<item jid='bob@localhost' subscription='remove'/>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    for c in [&mut r1, &mut r2] {
        assert_one_push(&c.sync().await, "bob@localhost", "remove", false);
    }
    assert_no_push(&r3.sync().await);
    assert!(r1.roster().await.is_empty());

    // §2.5.3: removing an item that does not exist is item-not-found.
    let r = r1
        .roster_set("<item jid='bob@localhost' subscription='remove'/>")
        .await;
    assert_eq!(error_of(&r).0, "item-not-found");
    // §2.3.3: more than one item is bad-request, and nothing changes.
    let r = r1
        .roster_set("<item jid='x@localhost'/><item jid='y@localhost'/>")
        .await;
    assert_eq!(error_of(&r).0, "bad-request");
    assert!(r1.roster().await.is_empty());
    assert_no_push(&r1.sync().await);
}

#[tokio::test]
async fn roster_versioning_returns_empty_result_when_up_to_date() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice"]);
    let mut a = Cl::login(&s, "alice", "r").await;
    // XEP-0237 §3: ver='' means "I support versioning, I have nothing cached".
    let full = a.roster_get(Some("")).await;
    let v0 = child(&full, "query")
        .and_then(|q| q.attr("ver"))
        .expect("a versioned result")
        .to_string();
    // §4: same version → an empty result, no query.
    let same = a.roster_get(Some(&v0)).await;
    assert!(same.children().next().is_none(), "{}", xml(&same));

    a.roster_set("<item jid='bob@localhost'/>").await;
    let got = a.sync().await;
    let push = got.iter().find(|e| is_roster_push(e)).unwrap();
    let v1 = child(push, "query")
        .unwrap()
        .attr("ver")
        .unwrap()
        .to_string();
    assert_ne!(v1, v0, "a change must bump the version");

    // An out-of-date client gets the whole roster with the new version.
    let stale = a.roster_get(Some(&v0)).await;
    assert_eq!(
        child(&stale, "query").unwrap().attr("ver"),
        Some(v1.as_str())
    );
    assert_eq!(query_items(&stale).len(), 1);
    let current = a.roster_get(Some(&v1)).await;
    assert!(current.children().next().is_none(), "{}", xml(&current));
}

#[tokio::test]
async fn roster_limits_on_size_and_field_length() {
    let s = TestServer::start_with(|c| {
        c.roster.max_items = 2;
        c.roster.max_field_bytes = 8;
    })
    .await;
    server_with_users(&s, &["alice"]);
    let mut a = Cl::login(&s, "alice", "r").await;
    a.roster_get(None).await;
    for j in ["a@localhost", "b@localhost"] {
        let r = a.roster_set(&format!("<item jid='{j}'/>")).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    }
    a.sync().await;
    let r = a.roster_set("<item jid='c@localhost'/>").await;
    assert_eq!(error_of(&r).0, "resource-constraint", "{}", xml(&r));
    // Updating an existing item while full is fine.
    let r = a
        .roster_set("<item jid='a@localhost' name='12345678'/>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    // RFC 6121 §2.3.3: over-long name or group → not-acceptable.
    let r = a
        .roster_set("<item jid='a@localhost' name='123456789'/>")
        .await;
    assert_eq!(error_of(&r).0, "not-acceptable", "{}", xml(&r));
    let r = a
        .roster_set("<item jid='a@localhost'><group>123456789</group></item>")
        .await;
    assert_eq!(error_of(&r).0, "not-acceptable", "{}", xml(&r));
    let got = a.sync().await;
    assert_one_push(&got, "a@localhost", "none", false);
    let items = a.roster().await;
    assert_eq!(items.len(), 2);
    let ia = items
        .iter()
        .find(|i| i.attr("jid") == Some("a@localhost"))
        .unwrap();
    assert_eq!(ia.attr("name"), Some("12345678"));
    assert!(ia.children().next().is_none());
    // Room again after a removal.
    a.roster_set("<item jid='b@localhost' subscription='remove'/>")
        .await;
    let r = a.roster_set("<item jid='c@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

#[tokio::test]
async fn roster_limit_holds_for_items_created_by_subscriptions() {
    let s = TestServer::start_with(|c| c.roster.max_items = 1).await;
    server_with_users(&s, &["alice", "bob", "carol"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut b = Cl::online(&s, "bob", "rb").await;
    let r = a.roster_set("<item jid='carol@localhost'/>").await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    a.sync().await;
    // A subscribe that would add a second item is refused, and not sent on.
    a.presence_to("bob@localhost", "subscribe").await;
    let got = a.sync().await;
    assert_no_push(&got);
    let err = got
        .iter()
        .find(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .unwrap_or_else(|| panic!("no presence error in {got:?}"));
    assert_eq!(error_of(err).0, "resource-constraint");
    assert!(presences(&b.sync().await, "alice@localhost", "subscribe").is_empty());
    assert_eq!(a.roster().await.len(), 1);
    // So is approving a request when the roster is full.
    b.presence_to("alice@localhost", "subscribe").await;
    b.sync().await;
    a.wait("bob's request", |e| e.attr("type") == Some("subscribe"))
        .await;
    a.presence_to("bob@localhost", "subscribed").await;
    let got = a.sync().await;
    assert_no_push(&got);
    assert!(
        got.iter().any(|e| e.attr("type") == Some("error")),
        "{got:?}"
    );
    assert!(presences(&b.sync().await, "alice@localhost", "subscribed").is_empty());
    // An item already there can still be subscribed to.
    a.presence_to("carol@localhost", "subscribe").await;
    assert_one_push(&a.sync().await, "carol@localhost", "none", true);
}

#[tokio::test]
async fn pending_subscription_requests_are_limited() {
    let s = TestServer::start_with(|c| c.roster.max_pending_requests = 2).await;
    server_with_users(&s, &["alice", "bob", "carol", "dave"]);
    let mut b = Cl::online(&s, "bob", "rb").await;
    let mut c = Cl::online(&s, "carol", "rc").await;
    let mut d = Cl::online(&s, "dave", "rd").await;
    // Alice is offline: requests wait for her.
    b.presence_to("alice@localhost", "subscribe").await;
    c.presence_to("alice@localhost", "subscribe").await;
    assert_no_error(&b.sync().await);
    assert_no_error(&c.sync().await);
    // A third JID is refused while two wait.
    d.presence_to("alice@localhost", "subscribe").await;
    let err = d
        .wait("the refusal", |e| {
            e.name() == "presence" && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(err.attr("from"), Some("alice@localhost"), "{}", xml(&err));
    assert_eq!(error_of(&err).0, "resource-constraint");
    // A JID already waiting may repeat its request.
    b.presence_to("alice@localhost", "subscribe").await;
    assert_no_error(&b.sync().await);
    // Alice sees the two at login, not the refused one.
    let mut a = Cl::online(&s, "alice", "ra").await;
    let got = a.sync().await;
    assert_eq!(
        presences(&got, "bob@localhost", "subscribe").len(),
        1,
        "{got:?}"
    );
    assert_eq!(
        presences(&got, "carol@localhost", "subscribe").len(),
        1,
        "{got:?}"
    );
    assert!(
        presences(&got, "dave@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    // Answering one makes room again.
    a.presence_to("bob@localhost", "subscribed").await;
    a.sync().await;
    d.presence_to("alice@localhost", "subscribe").await;
    a.wait("dave's request", |e| {
        e.attr("from") == Some("dave@localhost") && e.attr("type") == Some("subscribe")
    })
    .await;
    assert_no_error(&d.sync().await);
}

// ---------------------------------------------------------------------------------------
// Subscriptions (RFC 6121 §3, Appendix A)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn subscription_lifecycle_both_directions() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut b = Cl::online(&s, "bob", "rb").await;

    // A.2.1 None → None + Pending Out: push with ask, stanza routed from the bare JID.
    a.send("<presence to='bob@localhost' type='subscribe'><status>hi, alice</status></presence>")
        .await;
    assert_one_push(&a.sync().await, "bob@localhost", "none", true);
    // A.3.1 None → None + Pending In: delivered, no push, not in bob's roster.
    let got = b.sync().await;
    let req = presences(&got, "alice@localhost", "subscribe");
    assert_eq!(req.len(), 1, "{got:?}");
    assert_eq!(child(req[0], "status").unwrap().text(), "hi, alice");
    assert_no_push(&got);
    assert!(b.roster().await.is_empty());

    // A.2.3 None + Pending In → From (bob approves); A.3.3 None + Pending Out → To.
    b.presence_to("alice@localhost", "subscribed").await;
    assert_one_push(&b.sync().await, "alice@localhost", "from", false);
    let got = a.sync().await;
    assert_one_push(&got, "bob@localhost", "to", false);
    let approved = position(&got, "bob@localhost", "subscribed");
    // §3.1.5: the approver's current presence follows the approval.
    let current = position(&got, "bob@localhost/rb", "");
    assert!(approved < current, "{got:?}");

    // A.2.1 From → From + Pending Out; A.3.1 To → To + Pending In.
    b.presence_to("alice@localhost", "subscribe").await;
    assert_one_push(&b.sync().await, "alice@localhost", "from", true);
    let got = a.sync().await;
    assert_eq!(presences(&got, "bob@localhost", "subscribe").len(), 1);
    assert_no_push(&got);
    // A.2.3 To + Pending In → Both; A.3.3 From + Pending Out → Both.
    a.presence_to("bob@localhost", "subscribed").await;
    assert_one_push(&a.sync().await, "bob@localhost", "both", false);
    let got = b.sync().await;
    assert_one_push(&got, "alice@localhost", "both", false);
    assert_eq!(presences(&got, "alice@localhost", "subscribed").len(), 1);
    assert_eq!(
        presences(&got, "alice@localhost/ra", "").len(),
        1,
        "{got:?}"
    );

    // Both sides now see each other's presence changes.
    a.send("<presence><show>away</show></presence>").await;
    a.sync().await;
    let got = b.sync().await;
    let p = presences(&got, "alice@localhost/ra", "");
    assert_eq!(p.len(), 1, "{got:?}");
    assert_eq!(child(p[0], "show").unwrap().text(), "away");

    // A.2.2 Both → From (alice unsubscribes); A.3.2 Both → To, and bob's server tells alice
    // bob is unavailable since she no longer gets his presence (§3.3.3).
    a.presence_to("bob@localhost", "unsubscribe").await;
    let got = a.sync().await;
    assert_one_push(&got, "bob@localhost", "from", false);
    assert_eq!(
        presences(&got, "bob@localhost/rb", "unavailable").len(),
        1,
        "{got:?}"
    );
    let got = b.sync().await;
    assert_eq!(presences(&got, "alice@localhost", "unsubscribe").len(), 1);
    assert_one_push(&got, "alice@localhost", "to", false);

    // A.2.4 To: bob has nothing to cancel, so his `unsubscribed` goes nowhere.
    b.presence_to("alice@localhost", "unsubscribed").await;
    assert_no_push(&b.sync().await);
    let got = a.sync().await;
    assert!(
        presences(&got, "bob@localhost", "unsubscribed").is_empty(),
        "{got:?}"
    );
    assert_no_push(&got);

    // A.2.4 From → None (alice cancels bob's subscription): unavailable first (§3.2.2),
    // then unsubscribed; A.3.4 To → None.
    a.presence_to("bob@localhost", "unsubscribed").await;
    assert_one_push(&a.sync().await, "bob@localhost", "none", false);
    let got = b.sync().await;
    let gone = position(&got, "alice@localhost/ra", "unavailable");
    let cancelled = position(&got, "alice@localhost", "unsubscribed");
    assert!(gone < cancelled, "{got:?}");
    assert_one_push(&got, "alice@localhost", "none", false);

    // Presence no longer flows either way.
    a.send("<presence><show>dnd</show></presence>").await;
    a.sync().await;
    assert!(presences(&b.sync().await, "alice@localhost/ra", "").is_empty());
    b.send("<presence><show>dnd</show></presence>").await;
    b.sync().await;
    assert!(presences(&a.sync().await, "bob@localhost/rb", "").is_empty());
}

#[tokio::test]
async fn denial_withdrawal_and_ignored_subscription_stanzas() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut b = Cl::online(&s, "bob", "rb").await;

    // Pre-approval is not supported (A.2.3 None): an unsolicited `subscribed` goes nowhere,
    // and an `unsubscribed` with nothing to cancel neither (A.2.4 None).
    a.presence_to("bob@localhost", "subscribed").await;
    a.presence_to("bob@localhost", "unsubscribed").await;
    assert_no_push(&a.sync().await);
    let got = b.sync().await;
    assert!(
        presences(&got, "alice@localhost", "subscribed").is_empty(),
        "{got:?}"
    );
    assert!(
        presences(&got, "alice@localhost", "unsubscribed").is_empty(),
        "{got:?}"
    );
    assert!(a.roster().await.is_empty());

    // Denial: A.2.4 None + Pending In → None; A.3.4 None + Pending Out → None.
    a.presence_to("bob@localhost", "subscribe").await;
    assert_one_push(&a.sync().await, "bob@localhost", "none", true);
    assert_eq!(
        presences(&b.sync().await, "alice@localhost", "subscribe").len(),
        1
    );
    // A.3.1 None + Pending In: a repeated request is not delivered twice.
    a.presence_to("bob@localhost", "subscribe").await;
    assert_no_push(&a.sync().await);
    assert!(presences(&b.sync().await, "alice@localhost", "subscribe").is_empty());
    b.presence_to("alice@localhost", "unsubscribed").await;
    assert_no_push(&b.sync().await);
    let got = a.sync().await;
    assert_one_push(&got, "bob@localhost", "none", false);
    assert_eq!(presences(&got, "bob@localhost", "unsubscribed").len(), 1);
    // Withdrawal: A.2.2 None + Pending Out → None; A.3.2 None + Pending In → None.
    a.presence_to("bob@localhost", "subscribe").await;
    assert_one_push(&a.sync().await, "bob@localhost", "none", true);
    assert_eq!(
        presences(&b.sync().await, "alice@localhost", "subscribe").len(),
        1
    );
    a.presence_to("bob@localhost", "unsubscribe").await;
    assert_one_push(&a.sync().await, "bob@localhost", "none", false);
    let got = b.sync().await;
    assert_eq!(presences(&got, "alice@localhost", "unsubscribe").len(), 1);
    assert_no_push(&got);
    // The withdrawn request is not redelivered at bob's next login, and approving it now
    // changes nothing (A.2.3 None).
    b.drop_socket();
    let mut b = Cl::online(&s, "bob", "rb2").await;
    let got = b.sync().await;
    assert!(
        presences(&got, "alice@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    b.presence_to("alice@localhost", "subscribed").await;
    assert_no_push(&b.sync().await);
    assert_no_push(&a.sync().await);
    assert!(b.roster().await.is_empty());
}

#[tokio::test]
async fn crossing_requests_and_the_remaining_pending_states() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut b = Cl::online(&s, "bob", "rb").await;

    // Requests cross: A.2.1 None + Pending In → None + Pending Out+In (bob, whose item is
    // created with ask); A.3.1 None + Pending Out → None + Pending Out+In (alice: delivered,
    // nothing visible changes, no push).
    a.presence_to("bob@localhost", "subscribe").await;
    a.sync().await;
    b.sync().await;
    b.presence_to("alice@localhost", "subscribe").await;
    assert_one_push(&b.sync().await, "alice@localhost", "none", true);
    let got = a.sync().await;
    assert_eq!(
        presences(&got, "bob@localhost", "subscribe").len(),
        1,
        "{got:?}"
    );
    assert_no_push(&got);

    // A.2.3 None + Pending Out+In → From + Pending Out; A.3.3 None + Pending Out+In →
    // To + Pending In.
    a.presence_to("bob@localhost", "subscribed").await;
    assert_one_push(&a.sync().await, "bob@localhost", "from", true);
    let got = b.sync().await;
    assert_one_push(&got, "alice@localhost", "to", false);
    assert_eq!(presences(&got, "alice@localhost", "subscribed").len(), 1);
    assert_eq!(
        presences(&got, "alice@localhost/ra", "").len(),
        1,
        "{got:?}"
    );

    // A.2.3 To + Pending In → Both; A.3.3 From + Pending Out → Both.
    b.presence_to("alice@localhost", "subscribed").await;
    assert_one_push(&b.sync().await, "alice@localhost", "both", false);
    let got = a.sync().await;
    assert_one_push(&got, "bob@localhost", "both", false);
    assert_eq!(presences(&got, "bob@localhost/rb", "").len(), 1, "{got:?}");

    // A.2.4 Both → To (bob cancels alice's subscription); A.3.4 Both → From.
    b.presence_to("alice@localhost", "unsubscribed").await;
    let got = b.sync().await;
    assert_one_push(&got, "alice@localhost", "to", false);
    let got = a.sync().await;
    let gone = position(&got, "bob@localhost/rb", "unavailable");
    let cancelled = position(&got, "bob@localhost", "unsubscribed");
    assert!(gone < cancelled, "{got:?}");
    assert_one_push(&got, "bob@localhost", "from", false);

    // A.2.1 To: a redundant subscribe changes nothing here; bob's server answers it
    // itself (A.3.1 From, §3.1.3 rule 2) and that `subscribed` is ignored (A.3.3 To).
    b.presence_to("alice@localhost", "subscribe").await;
    let got = b.sync().await;
    assert_no_push(&got);
    assert!(
        presences(&got, "alice@localhost", "subscribed").is_empty(),
        "{got:?}"
    );
    let got = a.sync().await;
    assert!(
        presences(&got, "bob@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    assert_no_push(&got);

    // A.2.1 From → From + Pending Out; A.3.1 To → To + Pending In.
    a.presence_to("bob@localhost", "subscribe").await;
    assert_one_push(&a.sync().await, "bob@localhost", "from", true);
    assert_eq!(
        presences(&b.sync().await, "alice@localhost", "subscribe").len(),
        1
    );
    // A.2.2 From + Pending Out → From (withdrawn); A.3.2 To + Pending In → To.
    a.presence_to("bob@localhost", "unsubscribe").await;
    assert_one_push(&a.sync().await, "bob@localhost", "from", false);
    let got = b.sync().await;
    assert_eq!(presences(&got, "alice@localhost", "unsubscribe").len(), 1);
    assert_no_push(&got);

    // A.2.2 To → None; A.3.2 From → None, with bob's unavailable to alice (§3.3.3).
    b.presence_to("alice@localhost", "unsubscribe").await;
    let got = b.sync().await;
    assert_one_push(&got, "alice@localhost", "none", false);
    let got = a.sync().await;
    assert_eq!(
        presences(&got, "bob@localhost", "unsubscribe").len(),
        1,
        "{got:?}"
    );
    assert_one_push(&got, "bob@localhost", "none", false);

    // Nothing is pending any more: a new login of bob gets no request.
    b.drop_socket();
    let mut b = Cl::online(&s, "bob", "rb2").await;
    let got = b.sync().await;
    assert!(
        presences(&got, "alice@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    let items = b.roster().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attr("subscription"), Some("none"));
    assert_eq!(items[0].attr("ask"), None);
}

#[tokio::test]
async fn pending_request_is_kept_while_offline_and_redelivered_until_answered() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;

    // Bob is offline: §3.1.3 rule 4, the request is stored.
    a.send("<presence to='bob@localhost' type='subscribe'><status>it's alice</status></presence>")
        .await;
    assert_one_push(&a.sync().await, "bob@localhost", "none", true);

    // A session that is not yet available does not get it (only available resources do).
    let mut b = Cl::login(&s, "bob", "rb").await;
    let got = b.sync().await;
    assert!(
        presences(&got, "alice@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    b.send("<presence/>").await;
    let got = b.sync().await;
    let req = presences(&got, "alice@localhost", "subscribe");
    assert_eq!(req.len(), 1, "{got:?}");
    assert_eq!(child(req[0], "status").unwrap().text(), "it's alice");
    assert!(req[0].attr("to").unwrap().starts_with("bob@localhost"));

    // Not answered: redelivered at the next login, once.
    b.drop_socket();
    let mut b = Cl::login(&s, "bob", "rb").await;
    b.send("<presence/>").await;
    let got = b.sync().await;
    assert_eq!(
        presences(&got, "alice@localhost", "subscribe").len(),
        1,
        "{got:?}"
    );
    // A.3.1 None + Pending In: a repeated request while one is pending is not delivered.
    a.presence_to("bob@localhost", "subscribe").await;
    a.sync().await;
    assert!(presences(&b.sync().await, "alice@localhost", "subscribe").is_empty());

    // Approved: no longer redelivered.
    b.roster_get(None).await;
    b.presence_to("alice@localhost", "subscribed").await;
    assert_one_push(&b.sync().await, "alice@localhost", "from", false);
    assert_one_push(&a.sync().await, "bob@localhost", "to", false);
    b.drop_socket();
    let mut b = Cl::online(&s, "bob", "rb").await;
    let got = b.sync().await;
    assert!(
        presences(&got, "alice@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    let items = b.roster().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attr("subscription"), Some("from"));
}

#[tokio::test]
async fn request_from_offline_contact_is_answered_when_the_user_comes_back() {
    // The user asked while the contact was offline; the contact approves at login and the
    // user, offline in turn, finds the new state in its roster.
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    a.presence_to("bob@localhost", "subscribe").await;
    a.sync().await;
    a.drop_socket();
    let mut b = Cl::online(&s, "bob", "rb").await;
    b.wait("the stored request", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    b.presence_to("alice@localhost", "subscribed").await;
    assert_one_push(&b.sync().await, "alice@localhost", "from", false);
    let mut a = Cl::login(&s, "alice", "ra").await;
    let items = a.roster().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attr("subscription"), Some("to"));
    assert_eq!(items[0].attr("ask"), None);
    // Being subscribed now, alice's initial presence probes bob and gets his presence.
    a.send("<presence/>").await;
    a.wait("bob's presence", |e| {
        e.name() == "presence"
            && e.attr("from") == Some("bob@localhost/rb")
            && e.attr("type").is_none()
    })
    .await;
}

#[tokio::test]
async fn auto_replies_subscribed_when_the_contact_is_already_subscribed() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    befriend(&s, "alice", "bob");
    // Alice's server lost her side of the subscription (§3.1.3 rule 2's case).
    s.running
        .shared
        .store
        .remove_roster_item("alice@localhost", "bob@localhost")
        .unwrap();
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut b = Cl::online(&s, "bob", "rb").await;
    a.presence_to("bob@localhost", "subscribe").await;
    let got = a.sync().await;
    // Pending out first, then the automatic approval on bob's behalf: To.
    let items = pushed_items(&got);
    assert_eq!(items.len(), 2, "{got:?}");
    assert_eq!(items[0].attr("ask"), Some("subscribe"));
    assert_eq!(items[1].attr("subscription"), Some("to"));
    assert_eq!(items[1].attr("ask"), None);
    assert_eq!(
        presences(&got, "bob@localhost", "subscribed").len(),
        1,
        "{got:?}"
    );
    // Bob is not bothered: no request, no push.
    let got = b.sync().await;
    assert!(
        presences(&got, "alice@localhost", "subscribe").is_empty(),
        "{got:?}"
    );
    assert_no_push(&got);
}

#[tokio::test]
async fn subscribe_to_unknown_user_is_answered_unsubscribed() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    a.presence_to("nobody@localhost", "subscribe").await;
    let got = a.sync().await;
    // §3.1.3 rule 1: the contact's server says unsubscribed; the request is denied.
    assert_eq!(
        presences(&got, "nobody@localhost", "unsubscribed").len(),
        1,
        "{got:?}"
    );
    let items = pushed_items(&got);
    assert_eq!(items.len(), 2, "{got:?}");
    assert_eq!(items[0].attr("ask"), Some("subscribe"));
    assert_eq!(items[1].attr("subscription"), Some("none"));
    assert_eq!(items[1].attr("ask"), None);
}

#[tokio::test]
async fn roster_remove_cancels_subscriptions_both_ways() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    befriend(&s, "alice", "bob");
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut b = Cl::online(&s, "bob", "rb").await;
    a.sync().await;
    // RFC 6121 §2.5.2: unavailable, unsubscribe and unsubscribed go to bob.
    let r = a
        .roster_set("<item jid='bob@localhost' subscription='remove'/>")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    assert_one_push(&a.sync().await, "bob@localhost", "remove", false);
    let got = b.sync().await;
    let gone = position(&got, "alice@localhost/ra", "unavailable");
    let unsub = position(&got, "alice@localhost", "unsubscribe");
    let cancelled = position(&got, "alice@localhost", "unsubscribed");
    assert!(gone < cancelled && unsub < cancelled, "{got:?}");
    // Bob keeps the item, with no subscription left: Both → To → None.
    let items = pushed_items(&got);
    assert_eq!(items.len(), 2, "{got:?}");
    assert_eq!(items[0].attr("subscription"), Some("to"));
    assert_eq!(items[1].attr("subscription"), Some("none"));
    let items = b.roster().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attr("subscription"), Some("none"));
}

// ---------------------------------------------------------------------------------------
// Presence (RFC 6121 §4)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn initial_presence_is_broadcast_to_subscribers_and_own_resources_and_probes() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob", "carol", "dave", "erin"]);
    befriend(&s, "alice", "bob");
    // Alice sees carol, carol does not see alice.
    relate(&s, "alice", "carol", Subscription::To);
    relate(&s, "carol", "alice", Subscription::From);
    // Dave sees alice, alice does not see dave.
    relate(&s, "alice", "dave", Subscription::From);
    relate(&s, "dave", "alice", Subscription::To);
    // Erin is subscribed to alice but offline: a probe gets unavailable.
    relate(&s, "alice", "erin", Subscription::To);
    relate(&s, "erin", "alice", Subscription::From);

    let mut b = Cl::login(&s, "bob", "rb").await;
    b.send("<presence><show>dnd</show><status>busy</status></presence>")
        .await;
    b.sync().await;
    let mut c = Cl::login(&s, "carol", "rc").await;
    c.send("<presence><status>carol here</status></presence>")
        .await;
    c.sync().await;
    let mut d = Cl::login(&s, "dave", "rd").await;
    d.send("<presence/>").await;
    d.sync().await;

    let mut a1 = Cl::login(&s, "alice", "r1").await;
    a1.send("<presence><status>hello</status></presence>").await;
    // Probe answers: the contacts alice is subscribed to, with their last presence.
    let pb = a1
        .wait("bob's presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("bob@localhost/rb")
        })
        .await;
    assert_eq!(pb.attr("type"), None);
    assert_eq!(child(&pb, "status").unwrap().text(), "busy");
    assert_eq!(child(&pb, "show").unwrap().text(), "dnd");
    let pc = a1
        .wait("carol's presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("carol@localhost/rc")
        })
        .await;
    assert_eq!(child(&pc, "status").unwrap().text(), "carol here");
    let pe = a1
        .wait("erin's unavailable", |e| {
            e.name() == "presence" && e.attr("from").is_some_and(|f| f.starts_with("erin@"))
        })
        .await;
    assert_eq!(pe.attr("type"), Some("unavailable"));
    let got = a1.sync().await;
    // Its own presence comes back (RFC 6121 §4.2.2), dave is not probed.
    assert_eq!(
        presences(&got, "alice@localhost/r1", "").len(),
        1,
        "{got:?}"
    );
    assert!(
        !got.iter()
            .any(|e| e.attr("from").is_some_and(|f| f.starts_with("dave@"))),
        "{got:?}"
    );

    // Broadcast to from/both only.
    let got = b.sync().await;
    let p = presences(&got, "alice@localhost/r1", "");
    assert_eq!(p.len(), 1, "{got:?}");
    assert_eq!(child(p[0], "status").unwrap().text(), "hello");
    assert_eq!(
        presences(&d.sync().await, "alice@localhost/r1", "").len(),
        1
    );
    assert!(presences(&c.sync().await, "alice@localhost/r1", "").is_empty());

    // A second resource: the first hears of it, and it hears of the first (an entity is
    // implicitly subscribed to its own presence).
    let mut a2 = Cl::login(&s, "alice", "r2").await;
    a2.send("<presence><status>second</status></presence>")
        .await;
    let p1 = a2
        .wait("r1's presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("alice@localhost/r1")
        })
        .await;
    assert_eq!(child(&p1, "status").unwrap().text(), "hello");
    let got = a1.sync().await;
    assert_eq!(
        presences(&got, "alice@localhost/r2", "").len(),
        1,
        "{got:?}"
    );
    assert_eq!(
        presences(&b.sync().await, "alice@localhost/r2", "").len(),
        1
    );

    // A presence update goes to contacts and the other resource.
    a1.send("<presence><show>xa</show></presence>").await;
    a1.sync().await;
    assert_eq!(
        presences(&a2.sync().await, "alice@localhost/r1", "").len(),
        1
    );
    assert_eq!(
        presences(&b.sync().await, "alice@localhost/r1", "").len(),
        1
    );
    assert!(presences(&c.sync().await, "alice@localhost/r1", "").is_empty());
}

#[tokio::test]
async fn session_end_broadcasts_unavailable_to_contacts_resources_and_directed() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob", "carol"]);
    befriend(&s, "alice", "bob");
    let mut b = Cl::online(&s, "bob", "rb").await;
    let mut c = Cl::online(&s, "carol", "rc").await;
    let mut a1 = Cl::online(&s, "alice", "r1").await;
    let mut a2 = Cl::online(&s, "alice", "r2").await;
    b.sync().await;
    a1.sync().await;

    // RFC 6121 §4.6: directed presence to carol, who has no subscription.
    a1.send("<presence to='carol@localhost/rc'><status>psst</status></presence>")
        .await;
    a1.sync().await;
    let got = c.sync().await;
    let p = presences(&got, "alice@localhost/r1", "");
    assert_eq!(p.len(), 1, "{got:?}");
    assert_eq!(child(p[0], "status").unwrap().text(), "psst");

    // The socket goes away without a goodbye: everyone who saw r1 hears it left.
    a1.drop_socket();
    b.wait("r1's unavailable", |e| {
        e.name() == "presence"
            && e.attr("from") == Some("alice@localhost/r1")
            && e.attr("type") == Some("unavailable")
    })
    .await;
    c.wait("r1's unavailable (directed)", |e| {
        e.name() == "presence"
            && e.attr("from") == Some("alice@localhost/r1")
            && e.attr("type") == Some("unavailable")
    })
    .await;
    a2.wait("r1's unavailable (own resource)", |e| {
        e.name() == "presence"
            && e.attr("from") == Some("alice@localhost/r1")
            && e.attr("type") == Some("unavailable")
    })
    .await;

    // An explicit unavailable does the same and ends the directed-presence list.
    a2.send("<presence to='carol@localhost'/>").await;
    a2.sync().await;
    assert_eq!(
        presences(&c.sync().await, "alice@localhost/r2", "").len(),
        1
    );
    a2.send("<presence type='unavailable'/>").await;
    a2.sync().await;
    assert_eq!(
        presences(&b.sync().await, "alice@localhost/r2", "unavailable").len(),
        1
    );
    assert_eq!(
        presences(&c.sync().await, "alice@localhost/r2", "unavailable").len(),
        1
    );
    // The unavailable ended the directed presence: a new broadcast does not reach carol.
    a2.send("<presence/>").await;
    a2.sync().await;
    assert_eq!(
        presences(&b.sync().await, "alice@localhost/r2", "").len(),
        1
    );
    assert!(presences(&c.sync().await, "alice@localhost/r2", "").is_empty());
}

#[tokio::test]
async fn bare_jid_messages_follow_priorities() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut hi = Cl::login(&s, "bob", "hi").await;
    let mut lo = Cl::login(&s, "bob", "lo").await;
    let mut neg = Cl::login(&s, "bob", "neg").await;
    hi.send("<presence><priority>5</priority></presence>").await;
    hi.sync().await;
    lo.send("<presence><priority>1</priority></presence>").await;
    lo.sync().await;
    neg.send("<presence><priority>-1</priority></presence>")
        .await;
    neg.sync().await;

    a.send("<message to='bob@localhost' type='chat' id='m1'><body>one</body></message>")
        .await;
    a.sync().await;
    assert_eq!(messages(&hi.sync().await).len(), 1);
    assert!(messages(&lo.sync().await).is_empty());
    assert!(messages(&neg.sync().await).is_empty());

    // RFC 6121 §8.5.2.1.1: the highest priority wins; a lower one now gets it.
    hi.send("<presence><priority>0</priority></presence>").await;
    hi.sync().await;
    a.send("<message to='bob@localhost' type='chat' id='m2'><body>two</body></message>")
        .await;
    a.sync().await;
    assert!(messages(&hi.sync().await).is_empty());
    let got = lo.sync().await;
    assert_eq!(messages(&got).len(), 1);
    assert_eq!(body(messages(&got)[0]), "two");
    assert!(messages(&neg.sync().await).is_empty());

    // A full JID reaches even a negative-priority resource.
    a.send("<message to='bob@localhost/neg' type='chat' id='m3'><body>three</body></message>")
        .await;
    a.sync().await;
    assert_eq!(body(messages(&neg.sync().await)[0]), "three");

    // Only a negative priority left: §8.5.2.2.1, the message is stored offline...
    hi.send("<presence type='unavailable'/>").await;
    hi.sync().await;
    lo.send("<presence><priority>-5</priority></presence>")
        .await;
    lo.sync().await;
    a.send("<message to='bob@localhost' type='chat' id='m4'><body>four</body></message>")
        .await;
    a.sync().await;
    for c in [&mut hi, &mut lo, &mut neg] {
        assert!(messages(&c.sync().await).is_empty());
    }
    // ...and delivered when a resource becomes available with a non-negative priority
    // (XEP-0160 §3), even if that resource was available before with a negative one.
    lo.send("<presence><priority>2</priority></presence>").await;
    let m = lo
        .wait("the stored message", |e| {
            e.name() == "message" && body(e) == "four"
        })
        .await;
    assert!(child(&m, "delay").is_some(), "{}", xml(&m));
}

// ---------------------------------------------------------------------------------------
// Offline storage (XEP-0160, XEP-0203)
// ---------------------------------------------------------------------------------------

fn delay_stamp(m: &Element) -> time::OffsetDateTime {
    let d = child(m, "delay").unwrap_or_else(|| panic!("no delay in {}", xml(m)));
    assert_eq!(d.ns(), "urn:xmpp:delay");
    assert_eq!(d.attr("from"), Some("localhost"));
    time::OffsetDateTime::parse(
        d.attr("stamp").unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn offline_messages_delivered_in_order_with_delay_then_deleted() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    a.send("<message to='bob@localhost' type='chat' id='m1'><body>1</body></message>")
        .await;
    a.send("<message to='bob@localhost' id='m2'><body>2</body></message>")
        .await;
    // A full JID that is not online is treated as the bare JID (RFC 6121 §8.5.3.2.1).
    a.send("<message to='bob@localhost/gone' type='chat' id='m3'><body>3</body></message>")
        .await;
    // Not stored: headline, groupchat, error, a standalone chat state.
    a.send("<message to='bob@localhost' type='headline' id='h'><body>h</body></message>")
        .await;
    a.send("<message to='bob@localhost' type='groupchat' id='g'><body>g</body></message>")
        .await;
    a.send("<message to='bob@localhost' type='error' id='e'><body>e</body><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
        .await;
    a.send("<message to='bob@localhost' type='chat' id='cs'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    a.send("<message to='bob@localhost' type='chat' id='m4'><body>4</body></message>")
        .await;
    // Nothing bounced: stored or dropped as the rules say.
    let got = a.sync().await;
    assert!(messages(&got).is_empty(), "{got:?}");
    let after = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);

    // Bound but not available: nothing yet.
    let mut b = Cl::login(&s, "bob", "rb").await;
    assert!(messages(&b.sync().await).is_empty());
    b.send("<presence/>").await;
    let got = b.sync().await;
    let ms = messages(&got);
    let ids: Vec<_> = ms.iter().map(|m| m.attr("id").unwrap_or("")).collect();
    assert_eq!(ids, ["m1", "m2", "m3", "m4"], "{got:?}");
    let mut last = before;
    for m in &ms {
        assert_eq!(m.attr("from"), Some("alice@localhost/ra"));
        let st = delay_stamp(m);
        assert!(
            st >= last && st <= after,
            "stamp {st} out of order or range"
        );
        last = st;
    }
    assert_eq!(ms[1].attr("type"), None);

    // Deleted once delivered: the next login gets nothing.
    b.drop_socket();
    let mut b = Cl::online(&s, "bob", "rb").await;
    let got = b.sync().await;
    assert!(messages(&got).is_empty(), "{got:?}");
}

#[tokio::test]
async fn offline_messages_not_acked_under_stream_management_are_kept() {
    // XEP-0160 deletes a message once delivered; with XEP-0198 on and resumption off,
    // "delivered" means acknowledged: a transport lost before the ack must not lose them.
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    befriend(&s, "alice", "bob");
    let mut a = Cl::online(&s, "alice", "ra").await;
    for i in 1..=2 {
        a.send(&format!(
            "<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    a.sync().await;
    let mut b = Cl::login(&s, "bob", "rb").await;
    b.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    b.wait("<enabled/>", |e| e.name() == "enabled").await;
    b.send("<presence/>").await;
    for i in 1..=2 {
        let m = b
            .wait("a stored message", |e| {
                e.name() == "message" && body(e) == i.to_string()
            })
            .await;
        assert!(child(&m, "delay").is_some());
    }
    b.drop_socket();
    a.wait("bob's unavailable", |e| {
        e.attr("from") == Some("bob@localhost/rb") && e.attr("type") == Some("unavailable")
    })
    .await;
    // The ended session hands its unacknowledged stanzas on after the broadcast; wait for
    // the store to have them back rather than for a fixed time.
    let store = &*s.running.shared.store;
    tokio::time::timeout(WAIT, async {
        loop {
            let n = herald_store::OfflineStore::offline_messages(store, "bob@localhost")
                .unwrap()
                .len();
            if n == 2 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the unacknowledged offline messages were not kept");
    let mut b = Cl::login(&s, "bob", "rb").await;
    b.send("<presence/>").await;
    let got = b.sync().await;
    let bodies: Vec<_> = messages(&got).iter().map(|m| body(m)).collect();
    assert_eq!(bodies, ["1", "2"]);
}

#[tokio::test]
async fn offline_waits_for_non_negative_priority() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    a.send("<message to='bob@localhost' type='chat' id='m1'><body>1</body></message>")
        .await;
    a.sync().await;
    let mut b = Cl::login(&s, "bob", "rb").await;
    b.send("<presence><priority>-1</priority></presence>").await;
    assert!(messages(&b.sync().await).is_empty());
    // Still stored: a second session with priority 0 gets it.
    let mut b2 = Cl::login(&s, "bob", "rb2").await;
    b2.send("<presence><priority>0</priority></presence>").await;
    let got = b2.sync().await;
    assert_eq!(messages(&got).len(), 1, "{got:?}");
    assert!(messages(&b.sync().await).is_empty());
}

#[tokio::test]
async fn offline_bound_refuses_with_resource_constraint() {
    let s = TestServer::start_with(|c| c.offline.max_per_user = 2).await;
    server_with_users(&s, &["alice", "bob"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    for i in 1..=3 {
        a.send(&format!(
            "<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    let got = a.sync().await;
    let errs = messages(&got);
    // Over the bound the sender learns it; nothing is dropped silently.
    assert_eq!(errs.len(), 1, "{got:?}");
    assert_eq!(errs[0].attr("id"), Some("m3"));
    assert_eq!(errs[0].attr("type"), Some("error"));
    assert_eq!(errs[0].attr("from"), Some("bob@localhost"));
    assert_eq!(
        error_of(errs[0]),
        ("resource-constraint".to_string(), "wait".to_string())
    );

    // The stored ones are exactly the first two, in order.
    let mut b = Cl::login(&s, "bob", "rb").await;
    b.send("<presence/>").await;
    let got = b.sync().await;
    let bodies: Vec<_> = messages(&got).iter().map(|m| body(m)).collect();
    assert_eq!(bodies, ["1", "2"]);
    b.send("<presence type='unavailable'/>").await;
    b.sync().await;

    // Room again once delivered.
    a.send("<message to='bob@localhost' type='chat' id='m5'><body>5</body></message>")
        .await;
    let got = a.sync().await;
    assert!(messages(&got).is_empty(), "{got:?}");
    b.send("<presence/>").await;
    let got = b.sync().await;
    let bodies: Vec<_> = messages(&got).iter().map(|m| body(m)).collect();
    assert_eq!(bodies, ["5"]);
}

// ---------------------------------------------------------------------------------------
// Blocking (XEP-0191)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn block_unblock_and_list_with_pushes() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice"]);
    let mut r1 = Cl::login(&s, "alice", "r1").await;
    let mut r2 = Cl::login(&s, "alice", "r2").await;
    assert!(r1.blocklist().await.is_empty());
    r2.blocklist().await;

    let r = r1
        .iq(
            "set",
            &format!("<block xmlns='{BLOCKING}'><item jid='carol@localhost'/><item jid='Dave@LocalHost'/></block>"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    for c in [&mut r1, &mut r2] {
        let got = c.sync().await;
        let push: Vec<_> = got
            .iter()
            .filter(|e| e.name() == "iq" && e.attr("type") == Some("set"))
            .collect();
        assert_eq!(push.len(), 1, "{got:?}");
        assert_eq!(push[0].attr("to"), Some(c.jid.as_str()));
        let blk = child(push[0], "block").unwrap();
        let jids: Vec<_> = blk.children().filter_map(|i| i.attr("jid")).collect();
        assert_eq!(jids, ["carol@localhost", "dave@localhost"]);
    }
    let mut l = r2.blocklist().await;
    l.sort();
    assert_eq!(l, ["carol@localhost", "dave@localhost"]);

    r2.iq(
        "set",
        &format!("<unblock xmlns='{BLOCKING}'><item jid='carol@localhost'/></unblock>"),
    )
    .await;
    for c in [&mut r1, &mut r2] {
        let got = c.sync().await;
        let p = got
            .iter()
            .find_map(|e| child(e, "unblock"))
            .unwrap_or_else(|| panic!("no unblock push in {got:?}"));
        let jids: Vec<_> = p.children().filter_map(|i| i.attr("jid")).collect();
        assert_eq!(jids, ["carol@localhost"]);
    }
    assert_eq!(r1.blocklist().await, ["dave@localhost"]);

    // XEP-0191 §3.5: unblock without items unblocks everyone.
    r1.iq("set", &format!("<unblock xmlns='{BLOCKING}'/>"))
        .await;
    for c in [&mut r1, &mut r2] {
        let got = c.sync().await;
        let p = got.iter().find_map(|e| child(e, "unblock")).unwrap();
        assert!(p.children().next().is_none());
    }
    assert!(r1.blocklist().await.is_empty());

    // An empty block is bad-request.
    let r = r1.iq("set", &format!("<block xmlns='{BLOCKING}'/>")).await;
    assert_eq!(error_of(&r).0, "bad-request");
}

#[tokio::test]
async fn a_blocklist_holds_from_the_first_message_after_a_restart() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "bob", "carol"]);
    let mut a = Cl::online(&s, "alice", "ra").await;
    let r = a
        .iq(
            "set",
            &format!("<block xmlns='{BLOCKING}'><item jid='carol@localhost'/></block>"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    drop(a);
    // The restarted server has never looked at alice's blocklist: it must know she has one.
    let s = s.restart().await;
    let mut a = Cl::online(&s, "alice", "ra").await;
    let mut c = Cl::online(&s, "carol", "rc").await;
    c.send("<message to='alice@localhost/ra' type='chat' id='c1'><body>hey</body></message>")
        .await;
    let got = c.sync().await;
    let e = messages(&got)
        .into_iter()
        .find(|m| m.attr("id") == Some("c1"))
        .unwrap_or_else(|| panic!("no error for c1 in {got:?}"));
    assert_eq!(error_of(e).0, "service-unavailable");
    let got = a.sync().await;
    assert!(messages(&got).is_empty(), "{got:?}");
    // An account that never blocked anyone still gets its messages.
    let mut b = Cl::online(&s, "bob", "rb").await;
    c.send("<message to='bob@localhost/rb' type='chat' id='a1'><body>hi</body></message>")
        .await;
    let got = b.sync().await;
    assert!(
        messages(&got).iter().any(|m| m.attr("id") == Some("a1")),
        "{got:?}"
    );
}

#[tokio::test]
async fn blocked_contact_cannot_reach_user_and_user_cannot_reach_it() {
    let s = TestServer::start().await;
    server_with_users(&s, &["alice", "carol"]);
    befriend(&s, "alice", "carol");
    let mut c = Cl::online(&s, "carol", "rc").await;
    let mut a = Cl::online(&s, "alice", "ra").await;
    c.sync().await;

    let r = a
        .iq(
            "set",
            &format!("<block xmlns='{BLOCKING}'><item jid='carol@localhost'/></block>"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    a.sync().await;
    // XEP-0191 §3.3: carol, subscribed to alice, now sees her offline.
    let got = c.sync().await;
    assert_eq!(
        presences(&got, "alice@localhost/ra", "unavailable").len(),
        1,
        "{got:?}"
    );

    // A message from carol is not delivered; carol gets service-unavailable.
    c.send("<message to='alice@localhost' type='chat' id='c1'><body>hey</body></message>")
        .await;
    let got = c.sync().await;
    let e = messages(&got)
        .into_iter()
        .find(|m| m.attr("id") == Some("c1"))
        .unwrap_or_else(|| panic!("no error for c1 in {got:?}"));
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(error_of(e).0, "service-unavailable");
    // Presence from carol is dropped silently; an IQ is refused.
    c.send("<presence><status>still here</status></presence>")
        .await;
    c.send(
        "<iq type='get' to='alice@localhost/ra' id='v1'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let r = c
        .wait("the IQ error", |e| {
            e.name() == "iq" && e.attr("id") == Some("v1")
        })
        .await;
    assert_eq!(error_of(&r).0, "service-unavailable");
    // So is one to her bare JID, which the server answers for her (her vCard here).
    c.send("<iq type='get' to='alice@localhost' id='v2'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let r = c
        .wait("the bare-JID IQ error", |e| {
            e.name() == "iq" && e.attr("id") == Some("v2")
        })
        .await;
    assert_eq!(error_of(&r).0, "service-unavailable", "{}", xml(&r));
    let got = a.sync().await;
    assert!(messages(&got).is_empty(), "{got:?}");
    assert!(
        !got.iter()
            .any(|e| e.attr("from").is_some_and(|f| f.starts_with("carol@"))),
        "{got:?}"
    );

    // Alice's messages to carol are refused with <blocked/>; her presence does not leak.
    a.send("<message to='carol@localhost' type='chat' id='a1'><body>x</body></message>")
        .await;
    a.send("<presence><status>new status</status></presence>")
        .await;
    let got = a.sync().await;
    let e = messages(&got)
        .into_iter()
        .find(|m| m.attr("id") == Some("a1"))
        .unwrap_or_else(|| panic!("no error for a1 in {got:?}"));
    let (cond, _) = error_of(e);
    assert_eq!(cond, "not-acceptable");
    let err = child(e, "error").unwrap();
    assert!(
        err.children()
            .any(|c| c.name() == "blocked" && c.ns() == "urn:xmpp:blocking:errors"),
        "{}",
        xml(e)
    );
    let got = c.sync().await;
    assert!(messages(&got).is_empty(), "{got:?}");
    assert!(
        presences(&got, "alice@localhost/ra", "").is_empty(),
        "{got:?}"
    );

    // Unblocking: carol gets alice's current presence back (XEP-0191 §3.4) and messages flow.
    a.iq(
        "set",
        &format!("<unblock xmlns='{BLOCKING}'><item jid='carol@localhost'/></unblock>"),
    )
    .await;
    a.sync().await;
    let got = c.sync().await;
    let p = presences(&got, "alice@localhost/ra", "");
    assert_eq!(p.len(), 1, "{got:?}");
    assert_eq!(child(p[0], "status").unwrap().text(), "new status");
    a.send("<message to='carol@localhost' type='chat' id='a2'><body>back</body></message>")
        .await;
    a.sync().await;
    let got = c.sync().await;
    assert_eq!(messages(&got).len(), 1, "{got:?}");
}

#[tokio::test]
async fn directed_presence_recipients_are_bounded() {
    let s = TestServer::start().await;
    s.add_user("alice", PW);
    let mut a = RawClient::login(s.c2s(), "alice", PW, "r").await;
    let mut burst = String::new();
    for i in 0..herald_server::features::presence::MAX_DIRECTED {
        burst.push_str(&format!("<presence to='nobody{i}@localhost'/>"));
    }
    a.send(&burst).await;
    // Re-sending to a known recipient is fine; a new one beyond the bound is refused.
    a.send("<presence to='nobody0@localhost'/><presence to='one-too-many@localhost' id='x'/>")
        .await;
    let e = a.expect("presence").await;
    assert_eq!(e.attr("type"), Some("error"), "{}", xml(&e));
    assert_eq!(e.attr("id"), Some("x"));
    assert!(xml(&e).contains("resource-constraint"), "{}", xml(&e));
}
