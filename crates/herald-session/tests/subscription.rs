//! RFC 6121 Appendix A, row by row, plus the properties that keep two rosters in step.

use herald_session::subscription::{
    inbound, outbound, removal, Inbound, Outbound, State, Sub, SubKind,
};
use proptest::prelude::*;

const NONE: State = State::NONE;
const NONE_PO: State = State::NONE_PENDING_OUT;
const NONE_PI: State = State::NONE_PENDING_IN;
const NONE_POI: State = State::NONE_PENDING_OUT_IN;
const TO: State = State::TO;
const TO_PI: State = State::TO_PENDING_IN;
const FROM: State = State::FROM;
const FROM_PO: State = State::FROM_PENDING_OUT;
const BOTH: State = State::BOTH;

use SubKind::{Subscribe, Subscribed, Unsubscribe, Unsubscribed};

/// One row of Appendix A.2: the user sends `kind` while in `state`.
struct OutRow {
    cite: &'static str,
    state: State,
    kind: SubKind,
    route: bool,
    new: State,
    send_unavailable: bool,
    send_current_presence: bool,
    remove_request: bool,
}

#[allow(clippy::too_many_arguments)]
const fn o(
    cite: &'static str,
    state: State,
    kind: SubKind,
    route: bool,
    new: State,
    send_unavailable: bool,
    send_current_presence: bool,
    remove_request: bool,
) -> OutRow {
    OutRow {
        cite,
        state,
        kind,
        route,
        new,
        send_unavailable,
        send_current_presence,
        remove_request,
    }
}

// Columns: citation, existing state, stanza, ROUTE?, new state, then the side actions
// (unavailable to the contact §3.2.2, current presence to the contact §3.1.5, drop the stored
// inbound request). "no state change" rows repeat the existing state.
#[rustfmt::skip]
const OUTBOUND_ROWS: [OutRow; 36] = [
    // A.2.1 outbound "subscribe": routed in every row.
    o("A.2.1 None | yes | None + Pending Out", NONE, Subscribe, true, NONE_PO, false, false, false),
    o("A.2.1 None + Pending Out | yes | no state change", NONE_PO, Subscribe, true, NONE_PO, false, false, false),
    o("A.2.1 None + Pending In | yes | None + Pending Out+In", NONE_PI, Subscribe, true, NONE_POI, false, false, false),
    o("A.2.1 None + Pending Out+In | yes | no state change", NONE_POI, Subscribe, true, NONE_POI, false, false, false),
    o("A.2.1 To | yes | no state change", TO, Subscribe, true, TO, false, false, false),
    o("A.2.1 To + Pending In | yes | no state change", TO_PI, Subscribe, true, TO_PI, false, false, false),
    o("A.2.1 From | yes | From + Pending Out", FROM, Subscribe, true, FROM_PO, false, false, false),
    o("A.2.1 From + Pending Out | yes | no state change", FROM_PO, Subscribe, true, FROM_PO, false, false, false),
    o("A.2.1 Both | yes | no state change", BOTH, Subscribe, true, BOTH, false, false, false),
    // A.2.2 outbound "unsubscribe": routed in every row.
    o("A.2.2 None | yes | no state change", NONE, Unsubscribe, true, NONE, false, false, false),
    o("A.2.2 None + Pending Out | yes | None", NONE_PO, Unsubscribe, true, NONE, false, false, false),
    o("A.2.2 None + Pending In | yes | no state change", NONE_PI, Unsubscribe, true, NONE_PI, false, false, false),
    o("A.2.2 None + Pending Out+In | yes | None + Pending In", NONE_POI, Unsubscribe, true, NONE_PI, false, false, false),
    o("A.2.2 To | yes | None", TO, Unsubscribe, true, NONE, false, false, false),
    o("A.2.2 To + Pending In | yes | None + Pending In", TO_PI, Unsubscribe, true, NONE_PI, false, false, false),
    o("A.2.2 From | yes | no state change", FROM, Unsubscribe, true, FROM, false, false, false),
    o("A.2.2 From + Pending Out | yes | From", FROM_PO, Unsubscribe, true, FROM, false, false, false),
    o("A.2.2 Both | yes | From", BOTH, Unsubscribe, true, FROM, false, false, false),
    // A.2.3 outbound "subscribed": "no" rows marked [1] would be pre-approvals (§3.4),
    // which Herald does not support.
    o("A.2.3 None | no | no state change [1]", NONE, Subscribed, false, NONE, false, false, false),
    o("A.2.3 None + Pending Out | no | no state change [1]", NONE_PO, Subscribed, false, NONE_PO, false, false, false),
    o("A.2.3 None + Pending In | yes | From", NONE_PI, Subscribed, true, FROM, false, true, true),
    o("A.2.3 None + Pending Out+In | yes | From + Pending Out", NONE_POI, Subscribed, true, FROM_PO, false, true, true),
    o("A.2.3 To | no | no state change [1]", TO, Subscribed, false, TO, false, false, false),
    o("A.2.3 To + Pending In | yes | Both", TO_PI, Subscribed, true, BOTH, false, true, true),
    o("A.2.3 From | no | no state change", FROM, Subscribed, false, FROM, false, false, false),
    o("A.2.3 From + Pending Out | no | no state change", FROM_PO, Subscribed, false, FROM_PO, false, false, false),
    o("A.2.3 Both | no | no state change", BOTH, Subscribed, false, BOTH, false, false, false),
    // A.2.4 outbound "unsubscribed".
    o("A.2.4 None | no | no state change", NONE, Unsubscribed, false, NONE, false, false, false),
    o("A.2.4 None + Pending Out | no | no state change", NONE_PO, Unsubscribed, false, NONE_PO, false, false, false),
    o("A.2.4 None + Pending In | yes | None", NONE_PI, Unsubscribed, true, NONE, false, false, true),
    o("A.2.4 None + Pending Out+In | yes | None + Pending Out", NONE_POI, Unsubscribed, true, NONE_PO, false, false, true),
    o("A.2.4 To | no | no state change", TO, Unsubscribed, false, TO, false, false, false),
    o("A.2.4 To + Pending In | yes | To", TO_PI, Unsubscribed, true, TO, false, false, true),
    o("A.2.4 From | yes | None", FROM, Unsubscribed, true, NONE, true, false, false),
    o("A.2.4 From + Pending Out | yes | None + Pending Out", FROM_PO, Unsubscribed, true, NONE_PO, true, false, false),
    o("A.2.4 Both | yes | To", BOTH, Unsubscribed, true, TO, true, false, false),
];

/// One row of Appendix A.3: the contact's `kind` arrives while the user is in `state`.
struct InRow {
    cite: &'static str,
    state: State,
    kind: SubKind,
    deliver: bool,
    new: State,
    auto_reply: Option<SubKind>,
    remove_request: bool,
    send_unavailable: bool,
}

#[allow(clippy::too_many_arguments)]
const fn i(
    cite: &'static str,
    state: State,
    kind: SubKind,
    deliver: bool,
    new: State,
    auto_reply: Option<SubKind>,
    remove_request: bool,
    send_unavailable: bool,
) -> InRow {
    InRow {
        cite,
        state,
        kind,
        deliver,
        new,
        auto_reply,
        remove_request,
        send_unavailable,
    }
}

const AUTO: Option<SubKind> = Some(Subscribed);

// Columns: citation, existing state, stanza, DELIVER?, new state, auto-reply (§3.1.3 rule 2),
// drop the stored request, unavailable to the contact (§3.3.3).
#[rustfmt::skip]
const INBOUND_ROWS: [InRow; 36] = [
    // A.3.1 inbound "subscribe"; rows marked * get an auto-reply "subscribed".
    i("A.3.1 None | yes | None + Pending In", NONE, Subscribe, true, NONE_PI, None, false, false),
    i("A.3.1 None + Pending Out | yes | None + Pending Out+In", NONE_PO, Subscribe, true, NONE_POI, None, false, false),
    i("A.3.1 None + Pending In | no | no state change", NONE_PI, Subscribe, false, NONE_PI, None, false, false),
    i("A.3.1 None + Pending Out+In | no | no state change", NONE_POI, Subscribe, false, NONE_POI, None, false, false),
    i("A.3.1 To | yes | To + Pending In", TO, Subscribe, true, TO_PI, None, false, false),
    i("A.3.1 To + Pending In | no | no state change", TO_PI, Subscribe, false, TO_PI, None, false, false),
    i("A.3.1 From | no * | no state change", FROM, Subscribe, false, FROM, AUTO, false, false),
    i("A.3.1 From + Pending Out | no * | no state change", FROM_PO, Subscribe, false, FROM_PO, AUTO, false, false),
    i("A.3.1 Both | no * | no state change", BOTH, Subscribe, false, BOTH, AUTO, false, false),
    // A.3.2 inbound "unsubscribe".
    i("A.3.2 None | no | no state change", NONE, Unsubscribe, false, NONE, None, false, false),
    i("A.3.2 None + Pending Out | no | no state change", NONE_PO, Unsubscribe, false, NONE_PO, None, false, false),
    i("A.3.2 None + Pending In | yes | None", NONE_PI, Unsubscribe, true, NONE, None, true, false),
    i("A.3.2 None + Pending Out+In | yes | None + Pending Out", NONE_POI, Unsubscribe, true, NONE_PO, None, true, false),
    i("A.3.2 To | no | no state change", TO, Unsubscribe, false, TO, None, false, false),
    i("A.3.2 To + Pending In | yes | To", TO_PI, Unsubscribe, true, TO, None, true, false),
    i("A.3.2 From | yes | None", FROM, Unsubscribe, true, NONE, None, false, true),
    i("A.3.2 From + Pending Out | yes | None + Pending Out", FROM_PO, Unsubscribe, true, NONE_PO, None, false, true),
    i("A.3.2 Both | yes | To", BOTH, Unsubscribe, true, TO, None, false, true),
    // A.3.3 inbound "subscribed".
    i("A.3.3 None | no | no state change", NONE, Subscribed, false, NONE, None, false, false),
    i("A.3.3 None + Pending Out | yes | To", NONE_PO, Subscribed, true, TO, None, false, false),
    i("A.3.3 None + Pending In | no | no state change", NONE_PI, Subscribed, false, NONE_PI, None, false, false),
    i("A.3.3 None + Pending Out+In | yes | To + Pending In", NONE_POI, Subscribed, true, TO_PI, None, false, false),
    i("A.3.3 To | no | no state change", TO, Subscribed, false, TO, None, false, false),
    i("A.3.3 To + Pending In | no | no state change", TO_PI, Subscribed, false, TO_PI, None, false, false),
    i("A.3.3 From | no | no state change", FROM, Subscribed, false, FROM, None, false, false),
    i("A.3.3 From + Pending Out | yes | Both", FROM_PO, Subscribed, true, BOTH, None, false, false),
    i("A.3.3 Both | no | no state change", BOTH, Subscribed, false, BOTH, None, false, false),
    // A.3.4 inbound "unsubscribed".
    i("A.3.4 None | no | no state change", NONE, Unsubscribed, false, NONE, None, false, false),
    i("A.3.4 None + Pending Out | yes | None", NONE_PO, Unsubscribed, true, NONE, None, false, false),
    i("A.3.4 None + Pending In | no | no state change", NONE_PI, Unsubscribed, false, NONE_PI, None, false, false),
    i("A.3.4 None + Pending Out+In | yes | None + Pending In", NONE_POI, Unsubscribed, true, NONE_PI, None, false, false),
    i("A.3.4 To | yes | None", TO, Unsubscribed, true, NONE, None, false, false),
    i("A.3.4 To + Pending In | yes | None + Pending In", TO_PI, Unsubscribed, true, NONE_PI, None, false, false),
    i("A.3.4 From | no | no state change", FROM, Unsubscribed, false, FROM, None, false, false),
    i("A.3.4 From + Pending Out | yes | From", FROM_PO, Unsubscribed, true, FROM, None, false, false),
    i("A.3.4 Both | yes | From", BOTH, Unsubscribed, true, FROM, None, false, false),
];

#[test]
fn tables_cover_every_state_and_stanza_once() {
    for rows in [
        OUTBOUND_ROWS
            .iter()
            .map(|r| (r.state, r.kind, r.cite))
            .collect::<Vec<_>>(),
        INBOUND_ROWS
            .iter()
            .map(|r| (r.state, r.kind, r.cite))
            .collect::<Vec<_>>(),
    ] {
        for s in State::ALL {
            for k in SubKind::ALL {
                let hits: Vec<_> = rows
                    .iter()
                    .filter(|(rs, rk, _)| *rs == s && *rk == k)
                    .collect();
                assert_eq!(hits.len(), 1, "{s} / {k:?}: {hits:?}");
                // The citation names the state it tests.
                let cite = hits[0].2;
                assert!(cite[6..].starts_with(&format!("{s} |")), "{cite} vs {s}");
            }
        }
    }
}

#[test]
fn outbound_follows_appendix_a2() {
    for r in &OUTBOUND_ROWS {
        let got = outbound(Some(r.state), r.kind);
        let changed = r.new != r.state;
        let want = Outbound {
            new_state: r.new,
            changed,
            push: r.new.roster_view() != r.state.roster_view(),
            route: r.route,
            create_item: false,
            send_unavailable: r.send_unavailable,
            send_current_presence: r.send_current_presence,
            remove_request: r.remove_request,
        };
        assert_eq!(got, want, "{}", r.cite);
    }
}

#[test]
fn inbound_follows_appendix_a3_online_and_offline() {
    for r in &INBOUND_ROWS {
        for online in [true, false] {
            let got = inbound(Some(r.state), r.kind, online);
            let want = Inbound {
                new_state: Some(r.new),
                changed: r.new != r.state,
                push: r.new.roster_view() != r.state.roster_view(),
                deliver: r.deliver,
                // §3.1.3 rule 4: only a newly recorded request, only with nobody online.
                store_request: r.kind == Subscribe && r.deliver && !online,
                auto_reply: r.auto_reply,
                remove_request: r.remove_request,
                send_unavailable: r.send_unavailable,
            };
            assert_eq!(got, want, "{} (online: {online})", r.cite);
        }
    }
}

#[test]
fn outbound_without_roster_item_acts_like_none() {
    // §3.1.2: subscribing to someone not in the roster creates the item.
    let s = outbound(None, Subscribe);
    assert_eq!(s.new_state, NONE_PO);
    assert!(s.create_item && s.changed && s.push && s.route);

    // A.2.2 "None": routed, nothing to store.
    let u = outbound(None, Unsubscribe);
    assert_eq!(u.new_state, NONE);
    assert!(u.route);
    assert!(!u.create_item && !u.changed && !u.push);

    // A.2.3/A.2.4 "None": neither routed nor stored (no pre-approval).
    for k in [Subscribed, Unsubscribed] {
        let r = outbound(None, k);
        assert_eq!(r.new_state, NONE, "{k:?}");
        assert!(!r.route && !r.create_item && !r.changed && !r.push, "{k:?}");
        assert!(!r.send_current_presence && !r.send_unavailable && !r.remove_request);
    }
}

#[test]
fn inbound_without_roster_item() {
    // A.3.1 "None": recorded as a request-only entry, not shown in the roster.
    for online in [true, false] {
        let r = inbound(None, Subscribe, online);
        assert_eq!(r.new_state, Some(NONE_PI));
        assert!(r.new_state.is_some_and(|s| s.is_request_only()));
        assert!(r.changed && r.deliver && !r.push);
        assert_eq!(r.store_request, !online);
        assert_eq!(r.auto_reply, None);
    }
    // A.3.2-A.3.4 "None": ignored, still no item.
    for k in [Subscribed, Unsubscribe, Unsubscribed] {
        for online in [true, false] {
            let r = inbound(None, k, online);
            let want = Inbound {
                new_state: None,
                changed: false,
                push: false,
                deliver: false,
                store_request: false,
                auto_reply: None,
                remove_request: false,
                send_unavailable: false,
            };
            assert_eq!(r, want, "{k:?} online {online}");
        }
    }
}

#[test]
fn inbound_subscribe_stores_only_new_requests_while_offline() {
    // Offline: stored exactly in the states where A.3.1 delivers.
    let stored: Vec<State> = State::ALL
        .into_iter()
        .filter(|s| inbound(Some(*s), Subscribe, false).store_request)
        .collect();
    assert_eq!(stored, vec![NONE, NONE_PO, TO]);
    // Online: delivered live, never stored.
    for s in State::ALL {
        let on = inbound(Some(s), Subscribe, true);
        let off = inbound(Some(s), Subscribe, false);
        assert!(!on.store_request, "{s}");
        // Being offline changes nothing but the storing.
        assert_eq!(on.new_state, off.new_state, "{s}");
        assert_eq!(on.deliver, off.deliver, "{s}");
        assert_eq!(on.auto_reply, off.auto_reply, "{s}");
        // Once recorded, whatever was stored is what pending_in points at.
        if off.store_request {
            assert!(off.new_state.is_some_and(|n| n.pending_in), "{s}");
        }
    }
    // A repeated request while one is pending is neither delivered nor stored again (§3.1.3).
    let again = inbound(Some(NONE_PI), Subscribe, false);
    assert!(!again.deliver && !again.store_request && !again.changed);
}

#[test]
fn only_the_subscribe_kind_depends_on_being_online() {
    for s in State::ALL {
        for k in [Subscribed, Unsubscribe, Unsubscribed] {
            assert_eq!(
                inbound(Some(s), k, true),
                inbound(Some(s), k, false),
                "{s} {k:?}"
            );
        }
    }
}

#[test]
fn removal_in_every_state() {
    // (state, unsubscribe, unsubscribed, unavailable)
    let rows = [
        (NONE, false, false, false),
        (NONE_PO, true, false, false),
        (NONE_PI, false, true, false),
        (NONE_POI, true, true, false),
        (TO, true, false, false),
        (TO_PI, true, true, false),
        (FROM, false, true, true),
        (FROM_PO, true, true, true),
        (BOTH, true, true, true),
    ];
    assert_eq!(rows.len(), State::ALL.len());
    for (s, unsub, unsubd, unavail) in rows {
        let r = removal(s);
        assert_eq!(r.send_unsubscribe, unsub, "{s}");
        assert_eq!(r.send_unsubscribed, unsubd, "{s}");
        assert_eq!(r.send_unavailable, unavail, "{s}");
        // What removal sends is exactly what the outbound tables would route, and it leaves
        // nothing on either side.
        assert_eq!(outbound(Some(s), Unsubscribed).route, unsubd, "{s}");
        let mut left = s;
        if unsub {
            left = outbound(Some(left), Unsubscribe).new_state;
        }
        if unsubd {
            left = outbound(Some(left), Unsubscribed).new_state;
        }
        assert_eq!(left, NONE, "{s}");
    }
}

#[test]
fn no_transition_yields_an_invalid_state() {
    for s in State::ALL {
        assert!(s.is_valid(), "{s}");
        for k in SubKind::ALL {
            let o = outbound(Some(s), k);
            assert!(o.new_state.is_valid(), "out {s} {k:?} -> {:?}", o.new_state);
            assert_eq!(o.changed, o.new_state != s, "out {s} {k:?}");
            // A state change is always told to the contact, except a re-subscribe that the
            // contact's server answers itself.
            if o.changed {
                assert!(o.route, "out {s} {k:?}");
            }
            assert!(!(o.send_unavailable && o.send_current_presence));
            assert!(!o.send_unavailable || (s.contact_gets_presence() && o.route));
            assert!(!o.send_current_presence || o.new_state.contact_gets_presence());
            assert_eq!(o.remove_request, s.pending_in && !o.new_state.pending_in);
            for online in [true, false] {
                let n = inbound(Some(s), k, online);
                let ns = n.new_state.unwrap_or_default();
                assert!(ns.is_valid(), "in {s} {k:?} -> {ns}");
                assert_eq!(n.changed, ns != s, "in {s} {k:?}");
                // Whatever changes the user's state is shown to the user.
                assert_eq!(n.changed, n.deliver, "in {s} {k:?}");
                assert!(n.auto_reply.is_none() || !n.deliver);
                assert_eq!(n.remove_request, s.pending_in && !ns.pending_in);
                assert!(!n.send_unavailable || s.contact_gets_presence());
            }
        }
    }
    // Every invalid combination is recognised as such.
    for sub in [Sub::None, Sub::To, Sub::From, Sub::Both] {
        for po in [false, true] {
            for pi in [false, true] {
                let s = State::new(sub, po, pi);
                assert_eq!(s.is_valid(), State::ALL.contains(&s), "{s:?}");
                assert_eq!(s.name() == "invalid", !s.is_valid(), "{s:?}");
            }
        }
    }
}

#[test]
fn names_presence_helpers_and_attribute_values() {
    let names: Vec<String> = State::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        names,
        [
            "None",
            "None + Pending Out",
            "None + Pending In",
            "None + Pending Out+In",
            "To",
            "To + Pending In",
            "From",
            "From + Pending Out",
            "Both",
        ]
    );
    assert_eq!(State::default(), NONE);
    let gets: Vec<(bool, bool)> = State::ALL
        .iter()
        .map(|s| (s.contact_gets_presence(), s.user_gets_presence()))
        .collect();
    assert_eq!(
        gets,
        [
            (false, false),
            (false, false),
            (false, false),
            (false, false),
            (false, true),
            (false, true),
            (true, false),
            (true, false),
            (true, true),
        ]
    );
    for sub in [Sub::None, Sub::To, Sub::From, Sub::Both] {
        assert_eq!(Sub::parse(sub.as_str()), Some(sub));
    }
    assert_eq!(Sub::parse("remove"), None);
    for k in SubKind::ALL {
        assert_eq!(SubKind::from_presence_type(k.as_str()), Some(k));
    }
    assert_eq!(SubKind::from_presence_type("unavailable"), None);
    assert_eq!(FROM_PO.roster_view(), (Sub::From, true));
    assert!(NONE_PI.is_request_only() && !NONE_POI.is_request_only() && !TO_PI.is_request_only());
}

// ---- two users, each with a roster entry for the other, exchanging stanzas ----

#[derive(Debug, Clone, Copy)]
enum Act {
    Send(bool, SubKind),
    Remove(bool),
}

fn act() -> impl Strategy<Value = Act> {
    let kind = prop_oneof![
        Just(Subscribe),
        Just(Subscribed),
        Just(Unsubscribe),
        Just(Unsubscribed)
    ];
    prop_oneof![
        6 => (any::<bool>(), kind).prop_map(|(a, k)| Act::Send(a, k)),
        1 => any::<bool>().prop_map(Act::Remove),
    ]
}

/// Each side's entry for the other (`None` = no roster item) and its online flag.
struct World {
    entry: [Option<State>; 2],
    online: [bool; 2],
}

impl World {
    /// `to` receives `kind` from the other side, and auto-replies are delivered in turn.
    fn deliver(&mut self, to: usize, kind: SubKind) {
        let r = inbound(self.entry[to], kind, self.online[to]);
        self.entry[to] = r.new_state;
        if let Some(reply) = r.auto_reply {
            self.deliver(1 - to, reply);
        }
    }

    fn send(&mut self, from: usize, kind: SubKind) {
        let r = outbound(self.entry[from], kind);
        if r.changed {
            self.entry[from] = Some(r.new_state);
        }
        if r.route {
            self.deliver(1 - from, kind);
        }
    }

    fn remove(&mut self, from: usize) {
        let Some(s) = self.entry[from] else { return };
        let r = removal(s);
        self.entry[from] = None;
        if r.send_unsubscribe {
            self.deliver(1 - from, Unsubscribe);
        }
        if r.send_unsubscribed {
            self.deliver(1 - from, Unsubscribed);
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let a = self.entry[0].unwrap_or_default();
        let b = self.entry[1].unwrap_or_default();
        prop_assert!(a.is_valid() && b.is_valid());
        // The two rosters agree on who receives whose presence and who asked whom.
        prop_assert_eq!(
            a.user_gets_presence(),
            b.contact_gets_presence(),
            "{} / {}",
            a,
            b
        );
        prop_assert_eq!(
            a.contact_gets_presence(),
            b.user_gets_presence(),
            "{} / {}",
            a,
            b
        );
        prop_assert_eq!(a.pending_out, b.pending_in, "{} / {}", a, b);
        prop_assert_eq!(a.pending_in, b.pending_out, "{} / {}", a, b);
        Ok(())
    }
}

proptest! {
    #[test]
    fn two_rosters_stay_in_step(
        online in any::<[bool; 2]>(),
        acts in proptest::collection::vec(act(), 0..40),
    ) {
        let mut w = World { entry: [None, None], online };
        for a in acts {
            match a {
                Act::Send(first, k) => w.send(usize::from(!first), k),
                Act::Remove(first) => w.remove(usize::from(!first)),
            }
            w.check()?;
        }
    }
}

#[test]
fn mutual_subscription_handshake() {
    // The usual flow: A asks, B approves and asks back, A approves.
    let mut w = World {
        entry: [None, None],
        online: [true, false],
    };
    w.send(0, Subscribe);
    assert_eq!(w.entry, [Some(NONE_PO), Some(NONE_PI)]);
    w.send(1, Subscribed);
    assert_eq!(w.entry, [Some(TO), Some(FROM)]);
    w.send(1, Subscribe);
    assert_eq!(w.entry, [Some(TO_PI), Some(FROM_PO)]);
    w.send(0, Subscribed);
    assert_eq!(w.entry, [Some(BOTH), Some(BOTH)]);
    // A re-subscribe is routed and answered by B's server without changing anything.
    w.send(0, Subscribe);
    assert_eq!(w.entry, [Some(BOTH), Some(BOTH)]);
    w.remove(0);
    assert_eq!(w.entry, [None, Some(NONE)]);
}
