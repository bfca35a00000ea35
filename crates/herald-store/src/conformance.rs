//! The behavioural contract of the storage traits, as one suite every backend must pass.
//!
//! [`run_all`] exercises every trait method, including the error cases callers rely on
//! (`AlreadyExists`, `NotFound`, `QuotaExceeded` at the bound, unknown RSM ids). It panics on
//! the first violation. It expects a fresh, empty store: it creates accounts under
//! `*.conformance.test` domains and purges archive entries with negative timestamps. This
//! module must not depend on backend details (no SQL): only the public traits.

use crate::{
    ArchiveQuery, ArchivedMessage, Credentials, FastTokenRecord, Invite, MamPrefs, OfflineMessage,
    PepItem, PepLimits, PepPublish, PushRegistration, PushRemoval, PushStatsUpdate, RemovalNote,
    RosterItem, SavedSession, ScramRecord, SmQueued, SmSessionRecord, StoreError, Subscription,
    Upload, Usage, MAX_REMOVALS_PER_USER,
};
use crate::{Backend, MucRoom, PrivateItem, StoredVcard};

/// Runs every section of the suite against `store`.
pub fn run_all(store: &dyn Backend) {
    accounts(store);
    roster(store);
    subscription_requests(store);
    offline(store);
    sessions(store);
    blocking(store);
    archive_filters(store);
    archive_paging(store);
    archive_ties(store);
    archive_paging_without_count(store);
    mam_prefs(store);
    push(store);
    push_removals(store);
    delete_account_removes_everything(store);
    purge(store);
    offline_usage(store);
    archive_usage(store);
    purge_in_batches(store);
    muc_rooms(store);
    vcards(store);
    private_items(store);
    invites(store);
    uploads(store);
    fast_tokens(store);
}

fn token(client: &str, n: u8, issued_at: i64) -> FastTokenRecord {
    FastTokenRecord {
        client_id: client.to_owned(),
        mechanism: "HT-SHA-256-NONE".to_owned(),
        verifier: vec![n; 32],
        responder: vec![n.wrapping_add(1); 32],
        issued_at,
        expires_at: issued_at + 1000,
        current: true,
        // Even-numbered tokens are server-derived (a salt), odd ones from before salts.
        salt: n.is_multiple_of(2).then(|| vec![n; 16]),
    }
}

/// FastTokenStore: rotation keeps the newest and the previous token, using the newest retires
/// the previous, the per-account bound drops the clients issued longest ago, and tokens end
/// with a logout, `logout-all`, a password change, expiry and the account.
pub fn fast_tokens(store: &dyn Backend) {
    let u = "fast@fast.conformance.test";
    let other = "other@fast.conformance.test";
    store.create_account(u, &creds(3)).unwrap();
    store.create_account(other, &creds(4)).unwrap();
    assert!(store.fast_tokens(u, "phone").unwrap().is_empty());

    store
        .issue_fast_token(u, &token("phone", 1, 100), 10)
        .unwrap();
    store
        .issue_fast_token(u, &token("phone", 2, 200), 10)
        .unwrap();
    let t = store.fast_tokens(u, "phone").unwrap();
    assert_eq!(t.len(), 2);
    assert!(t[0].current && t[0].verifier == vec![2; 32]);
    assert!(!t[1].current && t[1].verifier == vec![1; 32]);
    assert_eq!(t[0].responder, vec![3; 32]);
    assert_eq!(t[0].salt, Some(vec![2; 16]), "the salt round-trips");
    assert_eq!(t[1].salt, None, "a token without salt stays without");
    assert_eq!((t[0].issued_at, t[0].expires_at), (200, 1200));

    // A third issue drops the oldest: never more than two per client.
    store
        .issue_fast_token(u, &token("phone", 3, 300), 10)
        .unwrap();
    let v: Vec<u8> = store
        .fast_tokens(u, "phone")
        .unwrap()
        .iter()
        .map(|t| t.verifier[0])
        .collect();
    assert_eq!(v, [3, 2]);
    store.retire_previous_fast_token(u, "phone").unwrap();
    assert_eq!(store.fast_tokens(u, "phone").unwrap().len(), 1);

    // At most `max_clients` clients: the one issued longest ago loses its tokens.
    store
        .issue_fast_token(u, &token("laptop", 4, 400), 2)
        .unwrap();
    store
        .issue_fast_token(u, &token("tablet", 5, 500), 2)
        .unwrap();
    assert!(store.fast_tokens(u, "phone").unwrap().is_empty());
    assert_eq!(store.fast_tokens(u, "laptop").unwrap().len(), 1);
    assert_eq!(store.fast_tokens(u, "tablet").unwrap().len(), 1);

    assert_eq!(store.delete_client_fast_tokens(u, "laptop").unwrap(), 1);
    assert!(store.fast_tokens(u, "laptop").unwrap().is_empty());

    // Expiry.
    store
        .issue_fast_token(other, &token("phone", 6, 10), 10)
        .unwrap();
    assert_eq!(store.purge_expired_fast_tokens(1011).unwrap(), 1);
    assert!(store.fast_tokens(other, "phone").unwrap().is_empty());
    assert_eq!(store.fast_tokens(u, "tablet").unwrap().len(), 1);

    // logout-all touches only that account.
    store
        .issue_fast_token(other, &token("phone", 7, 10_000), 10)
        .unwrap();
    assert_eq!(store.delete_user_fast_tokens(u).unwrap(), 1);
    assert!(store.fast_tokens(u, "tablet").unwrap().is_empty());
    assert_eq!(store.fast_tokens(other, "phone").unwrap().len(), 1);

    // A password change ends them.
    store
        .issue_fast_token(u, &token("phone", 8, 10_000), 10)
        .unwrap();
    store.set_credentials(u, &creds(5)).unwrap();
    assert!(store.fast_tokens(u, "phone").unwrap().is_empty());

    // So does the account's removal.
    store.delete_account(other).unwrap();
    assert!(store.fast_tokens(other, "phone").unwrap().is_empty());
    store.delete_account(u).unwrap();
    pep(store);
}

/// Distinct, recognisable credentials per seed.
pub fn creds(seed: u8) -> Credentials {
    let rec = |n: u8, iterations: u32| ScramRecord {
        salt: vec![n; 16],
        iterations,
        stored_key: vec![n.wrapping_add(1); 20],
        server_key: vec![n.wrapping_add(2); 20],
    };
    Credentials {
        sha1: rec(seed, 4096),
        sha256: rec(seed.wrapping_add(100), u32::MAX),
    }
}

/// An archived message with a recognisable stanza.
pub fn msg(id: &str, with: &str, timestamp: i64) -> ArchivedMessage {
    ArchivedMessage {
        id: id.to_owned(),
        with: with.to_owned(),
        timestamp,
        stanza_xml: format!("<message id='{id}'><body>{id}</body></message>"),
    }
}

fn item(jid: &str, sub: Subscription, ask: bool, groups: &[&str]) -> RosterItem {
    RosterItem {
        jid: jid.to_owned(),
        name: Some(format!("name of {jid}")),
        subscription: sub,
        ask,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn ids(page: &[ArchivedMessage]) -> Vec<&str> {
    page.iter().map(|m| m.id.as_str()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// AccountStore: create, duplicates, credentials, bulk, list, delete.
pub fn accounts(store: &dyn Backend) {
    let a = "alice@accounts.conformance.test";
    let b = "bob@accounts.conformance.test";
    let c = "carol@accounts.conformance.test";
    let ghost = "ghost@accounts.conformance.test";

    store.create_account(a, &creds(1)).unwrap();
    assert!(store.account_exists(a).unwrap());
    assert!(!store.account_exists(ghost).unwrap());
    assert_eq!(store.credentials(a).unwrap(), Some(creds(1)));
    assert_eq!(store.credentials(ghost).unwrap(), None);
    assert!(matches!(
        store.create_account(a, &creds(2)),
        Err(StoreError::AlreadyExists)
    ));
    // A failed create leaves the existing credentials alone.
    assert_eq!(store.credentials(a).unwrap(), Some(creds(1)));

    store.set_credentials(a, &creds(3)).unwrap();
    assert_eq!(store.credentials(a).unwrap(), Some(creds(3)));
    assert!(matches!(
        store.set_credentials(ghost, &creds(3)),
        Err(StoreError::NotFound)
    ));
    assert!(!store.account_exists(ghost).unwrap());

    // Bulk skips existing accounts (and duplicates inside the batch: the first wins).
    let batch = vec![
        (c.to_owned(), creds(4)),
        (a.to_owned(), creds(5)),
        (b.to_owned(), creds(6)),
        (c.to_owned(), creds(7)),
    ];
    assert_eq!(store.create_accounts_bulk(&batch).unwrap(), 2);
    assert_eq!(store.credentials(a).unwrap(), Some(creds(3)));
    assert_eq!(store.credentials(b).unwrap(), Some(creds(6)));
    assert_eq!(store.credentials(c).unwrap(), Some(creds(4)));
    assert_eq!(store.create_accounts_bulk(&[]).unwrap(), 0);

    let list = store.list_accounts().unwrap();
    let mut sorted = list.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        list, sorted,
        "list_accounts must be sorted, without duplicates"
    );
    let ours: Vec<&str> = list
        .iter()
        .map(String::as_str)
        .filter(|u| u.ends_with("@accounts.conformance.test"))
        .collect();
    assert_eq!(ours, vec![a, b, c]);

    assert!(matches!(
        store.delete_account(ghost),
        Err(StoreError::NotFound)
    ));
    store.delete_account(b).unwrap();
    assert!(!store.account_exists(b).unwrap());
    assert_eq!(store.credentials(b).unwrap(), None);
    assert!(matches!(store.delete_account(b), Err(StoreError::NotFound)));
    assert!(!store.list_accounts().unwrap().contains(&b.to_owned()));
    // The name is free again.
    store.create_account(b, &creds(8)).unwrap();
    assert_eq!(store.credentials(b).unwrap(), Some(creds(8)));
}

/// RosterStore items and versions.
pub fn roster(store: &dyn Backend) {
    for s in [
        Subscription::None,
        Subscription::To,
        Subscription::From,
        Subscription::Both,
    ] {
        assert_eq!(Subscription::parse(s.as_str()), Some(s));
    }
    assert_eq!(Subscription::parse("remove"), None);
    assert_eq!(Subscription::parse("Both"), None);

    let u = "user@roster.conformance.test";
    let other = "other@roster.conformance.test";
    assert_eq!(store.roster(u).unwrap(), (0, vec![]));
    assert_eq!(store.roster_len(u).unwrap(), 0);
    assert_eq!(store.roster_item(u, "bob@x.test").unwrap(), None);

    let bob = item("bob@x.test", Subscription::To, true, &["Work", "Friends"]);
    assert_eq!(store.set_roster_item(u, &bob).unwrap(), 1);
    let alice = RosterItem {
        jid: "alice@x.test".to_owned(),
        name: None,
        subscription: Subscription::None,
        ask: false,
        groups: vec![],
    };
    assert_eq!(store.set_roster_item(u, &alice).unwrap(), 2);
    // A bare domain (a component) is a valid contact.
    let comp = item("proxy.x.test", Subscription::From, false, &["Services"]);
    assert_eq!(store.set_roster_item(u, &comp).unwrap(), 3);

    let (v, items) = store.roster(u).unwrap();
    assert_eq!(v, 3);
    assert_eq!(items, vec![alice.clone(), bob.clone(), comp.clone()]);
    assert_eq!(store.roster_len(u).unwrap(), 3);
    assert_eq!(store.roster_item(u, "bob@x.test").unwrap(), Some(bob));

    // Upsert replaces every field; duplicate groups collapse keeping first-seen order.
    let bob2 = RosterItem {
        name: None,
        subscription: Subscription::Both,
        ask: false,
        groups: strings(&["Zeta", "Alpha", "Zeta"]),
        ..item("bob@x.test", Subscription::Both, false, &[])
    };
    assert_eq!(store.set_roster_item(u, &bob2).unwrap(), 4);
    let got = store.roster_item(u, "bob@x.test").unwrap().unwrap();
    assert_eq!(got.groups, strings(&["Zeta", "Alpha"]));
    assert_eq!(got.subscription, Subscription::Both);
    assert_eq!(got.name, None);
    assert!(!got.ask);
    assert_eq!(store.roster_len(u).unwrap(), 3);

    // Another user's roster is separate.
    assert_eq!(store.roster(other).unwrap(), (0, vec![]));
    let other_bob = item("bob@x.test", Subscription::From, false, &["Other"]);
    assert_eq!(store.set_roster_item(other, &other_bob).unwrap(), 1);
    assert_eq!(
        store.roster_item(u, "bob@x.test").unwrap().unwrap().groups,
        strings(&["Zeta", "Alpha"])
    );

    assert!(matches!(
        store.remove_roster_item(u, "nobody@x.test"),
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.roster(u).unwrap().0,
        4,
        "a failed remove must not bump"
    );
    assert_eq!(store.remove_roster_item(u, "bob@x.test").unwrap(), 5);
    assert_eq!(store.roster_item(u, "bob@x.test").unwrap(), None);
    assert_eq!(store.roster(u).unwrap(), (5, vec![alice, comp]));
    assert_eq!(store.roster_len(u).unwrap(), 2);
    // Re-adding a removed item does not resurrect its old groups.
    let bare = item("bob@x.test", Subscription::None, false, &[]);
    assert_eq!(store.set_roster_item(u, &bare).unwrap(), 6);
    assert_eq!(store.roster_item(u, "bob@x.test").unwrap(), Some(bare));
    assert_eq!(store.roster(other).unwrap(), (1, vec![other_bob]));
    // The subscription view: every item, sorted, state only.
    let view = store.roster_subscriptions(u).unwrap();
    let full = store.roster(u).unwrap().1;
    assert_eq!(view.len(), full.len());
    for (v, f) in view.iter().zip(&full) {
        assert_eq!(
            (&v.jid, v.subscription, v.ask),
            (&f.jid, f.subscription, f.ask)
        );
        assert!(v.name.is_none() && v.groups.is_empty());
    }
    assert!(store
        .roster_subscriptions("nobody@roster.conformance.test")
        .unwrap()
        .is_empty());
}

/// RosterStore pending inbound subscription requests.
pub fn subscription_requests(store: &dyn Backend) {
    let u = "user@subreq.conformance.test";
    assert!(store.subscription_requests(u).unwrap().is_empty());
    store
        .add_subscription_request(
            u,
            "a@x.test",
            "<presence type='subscribe'>1</presence>",
            100,
        )
        .unwrap();
    store
        .add_subscription_request(
            u,
            "b@x.test",
            "<presence type='subscribe'>2</presence>",
            100,
        )
        .unwrap();
    store
        .add_subscription_request(
            u,
            "c@x.test",
            "<presence type='subscribe'>3</presence>",
            100,
        )
        .unwrap();
    // A repeated request replaces the stanza, one entry per JID.
    store
        .add_subscription_request(
            u,
            "a@x.test",
            "<presence type='subscribe'>4</presence>",
            100,
        )
        .unwrap();
    let reqs = store.subscription_requests(u).unwrap();
    assert_eq!(reqs.len(), 3);
    assert!(store.has_subscription_request(u, "b@x.test").unwrap());
    assert!(!store.has_subscription_request(u, "d@x.test").unwrap());
    assert!(!store
        .has_subscription_request("other@subreq.conformance.test", "b@x.test")
        .unwrap());
    // At the limit, a new JID is refused while an already pending one may still replace its
    // request.
    assert!(matches!(
        store.add_subscription_request(u, "d@x.test", "<presence type='subscribe'/>", 3),
        Err(StoreError::QuotaExceeded)
    ));
    store
        .add_subscription_request(u, "a@x.test", "<presence type='subscribe'>4</presence>", 3)
        .unwrap();
    assert!(!store.has_subscription_request(u, "d@x.test").unwrap());
    assert_eq!(
        reqs.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        vec!["a@x.test", "b@x.test", "c@x.test"]
    );
    assert_eq!(reqs[0].1, "<presence type='subscribe'>4</presence>");
    assert_eq!(reqs[1].1, "<presence type='subscribe'>2</presence>");

    assert!(store.remove_subscription_request(u, "b@x.test").unwrap());
    assert!(!store.remove_subscription_request(u, "b@x.test").unwrap());
    assert!(!store.has_subscription_request(u, "b@x.test").unwrap());
    assert!(!store
        .remove_subscription_request("other@subreq.conformance.test", "a@x.test")
        .unwrap());
    let reqs = store.subscription_requests(u).unwrap();
    assert_eq!(
        reqs.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        vec!["a@x.test", "c@x.test"]
    );
    assert!(store
        .subscription_requests("other@subreq.conformance.test")
        .unwrap()
        .is_empty());

    // Pages: oldest first, each after the last position of the one before.
    for f in ["d@x.test", "e@x.test", "f@x.test"] {
        store
            .add_subscription_request(u, f, "<presence type='subscribe'/>", 100)
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.subscription_requests_page(u, after, 2).unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.0;
        seen.extend(page.into_iter().map(|(_, f, _)| f));
    }
    assert_eq!(
        seen,
        ["a@x.test", "c@x.test", "d@x.test", "e@x.test", "f@x.test"]
    );
    let first = store.subscription_requests_page(u, 0, 1).unwrap();
    assert_eq!(first[0].2, "<presence type='subscribe'>4</presence>");
    assert!(store
        .subscription_requests_page("other@subreq.conformance.test", 0, 10)
        .unwrap()
        .is_empty());
}

/// OfflineStore: order, bound, deletion by id.
pub fn offline(store: &dyn Backend) {
    let u = "user@offline.conformance.test";
    let other = "other@offline.conformance.test";
    assert_eq!(store.offline_count(u).unwrap(), 0);
    assert!(store.offline_messages(u).unwrap().is_empty());

    let id1 = store
        .store_offline(u, "<message>1</message>", 3, u64::MAX)
        .unwrap();
    let id2 = store
        .store_offline(u, "<message>2</message>", 3, u64::MAX)
        .unwrap();
    let id3 = store
        .store_offline(u, "<message>3</message>", 3, u64::MAX)
        .unwrap();
    assert!(id1 < id2 && id2 < id3);
    // At the bound: refused, nothing stored.
    assert!(matches!(
        store.store_offline(u, "<message>4</message>", 3, u64::MAX),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.offline_count(u).unwrap(), 3);
    // The bound is per user.
    let oid = store
        .store_offline(other, "<message>o</message>", 3, u64::MAX)
        .unwrap();
    assert!(matches!(
        store.store_offline(other, "<message>x</message>", 0, u64::MAX),
        Err(StoreError::QuotaExceeded)
    ));

    let msgs = store.offline_messages(u).unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![id1, id2, id3]
    );
    assert_eq!(msgs[0].stanza_xml, "<message>1</message>");
    assert_eq!(msgs[2].stanza_xml, "<message>3</message>");
    assert!(msgs.iter().all(|m| m.stored_at > 0));
    assert!(msgs.windows(2).all(|w| w[0].stored_at <= w[1].stored_at));

    // Another user's id and unknown ids are not deleted.
    assert_eq!(store.delete_offline(u, &[oid, id3 + 1_000_000]).unwrap(), 0);
    assert_eq!(store.offline_count(other).unwrap(), 1);
    assert_eq!(store.delete_offline(u, &[]).unwrap(), 0);
    assert_eq!(store.delete_offline(u, &[id1, id3]).unwrap(), 2);
    assert_eq!(store.delete_offline(u, &[id1]).unwrap(), 0);
    let msgs = store.offline_messages(u).unwrap();
    assert_eq!(msgs.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id2]);

    // Below the bound again: accepted, with a fresh id (ids are never reused).
    let id4 = store
        .store_offline(u, "<message>4</message>", 3, u64::MAX)
        .unwrap();
    assert!(id4 > id3);
    assert_eq!(store.offline_count(u).unwrap(), 2);
    assert_eq!(store.delete_offline(other, &[oid]).unwrap(), 1);
    assert_eq!(store.offline_count(other).unwrap(), 0);

    // Pages: oldest first, after a cursor, bounded; reading deletes nothing.
    let oid2 = store
        .store_offline(other, "<message>o2</message>", 3, u64::MAX)
        .unwrap();
    let ids = |v: Vec<OfflineMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(store.offline_page(u, 0, 10).unwrap()), vec![id2, id4]);
    assert_eq!(ids(store.offline_page(u, 0, 1).unwrap()), vec![id2]);
    assert_eq!(ids(store.offline_page(u, id2, 10).unwrap()), vec![id4]);
    assert!(store.offline_page(u, id4, 10).unwrap().is_empty());
    assert!(store.offline_page(u, 0, 0).unwrap().is_empty());
    assert_eq!(store.offline_count(u).unwrap(), 2);
    assert_eq!(ids(store.offline_page(other, 0, 10).unwrap()), vec![oid2]);
}

/// SessionStore.
pub fn sessions(store: &dyn Backend) {
    let u = "user@sessions.conformance.test";
    let q = |x: &str, off: Option<i64>| SmQueued {
        stanza_xml: x.to_string(),
        queued_at: 7,
        offline_id: off,
    };
    let rec = |id: &str, out: u32| SmSessionRecord {
        id: id.to_string(),
        account: u.to_string(),
        resource: "phone".to_string(),
        inbound_h: 4_000_000_000,
        outbound_h: out,
        expires_at: 1234,
        state: "{}".to_string(),
    };
    assert!(store.sm_sessions().unwrap().is_empty());
    // Appending to an unknown session writes nothing.
    assert!(!store
        .append_sm_queue("nope", &[q("<x/>", None)], 1)
        .unwrap());
    let a = SavedSession {
        record: rec("s1", 2),
        queue: vec![q("<m1/>", None), q("<m2/>", Some(9))],
    };
    let b = SavedSession {
        record: rec("s2", 0),
        queue: vec![],
    };
    store.save_sm_sessions(&[a.clone(), b.clone()]).unwrap();
    assert!(store.append_sm_queue("s1", &[q("<m3/>", None)], 3).unwrap());
    let all = store.sm_sessions().unwrap();
    assert_eq!(all.len(), 2);
    let s1 = all.iter().find(|s| s.record.id == "s1").unwrap();
    assert_eq!(s1.record.outbound_h, 3);
    assert_eq!(s1.record.inbound_h, 4_000_000_000);
    assert_eq!(
        s1.queue
            .iter()
            .map(|i| i.stanza_xml.as_str())
            .collect::<Vec<_>>(),
        ["<m1/>", "<m2/>", "<m3/>"]
    );
    assert_eq!(s1.queue[1].offline_id, Some(9));
    // One session by id, as the list has it.
    assert_eq!(store.sm_session("s1").unwrap().as_ref(), Some(s1));
    assert_eq!(store.sm_session("s2").unwrap(), Some(b.clone()));
    assert_eq!(store.sm_session("nope").unwrap(), None);
    // Saving again replaces the queue.
    let a2 = SavedSession {
        record: rec("s1", 5),
        queue: vec![q("<m5/>", None)],
    };
    store.save_sm_sessions(std::slice::from_ref(&a2)).unwrap();
    let s1 = store
        .sm_sessions()
        .unwrap()
        .into_iter()
        .find(|s| s.record.id == "s1")
        .unwrap();
    assert_eq!(s1, a2);
    store.delete_sm_session("s1").unwrap();
    store.delete_sm_session("s1").unwrap();
    assert_eq!(store.sm_sessions().unwrap(), vec![b]);
    store.save_sm_sessions(&[a]).unwrap();
    assert_eq!(store.delete_account_sm_sessions(u).unwrap(), 2);
    assert!(store.sm_sessions().unwrap().is_empty());

    // Tombstones: taken once; old ones are dropped.
    store
        .save_tombstones(&[
            (u.to_string(), "t1".to_string(), 5, 1000),
            (u.to_string(), "t2".to_string(), 6, 10),
        ])
        .unwrap();
    assert_eq!(store.take_tombstone("other@x.test", "t1").unwrap(), None);
    assert_eq!(store.take_tombstone(u, "t1").unwrap(), Some((5, 1000)));
    assert_eq!(store.take_tombstone(u, "t1").unwrap(), None);
    store
        .save_tombstones(&[(u.to_string(), "t3".to_string(), 7, 2000)])
        .unwrap();
    assert_eq!(
        store.tombstones_since(100).unwrap(),
        vec![(u.to_string(), "t3".to_string(), 7, 2000)]
    );
    assert_eq!(store.take_tombstone(u, "t2").unwrap(), None);
    assert_eq!(store.purge_tombstones_before(2000).unwrap(), 0);
    assert_eq!(store.purge_tombstones_before(2001).unwrap(), 1);
    assert!(store.tombstones_since(0).unwrap().is_empty());

    // Flags: read once.
    assert_eq!(store.take_flag("clean").unwrap(), None);
    store.set_flag("clean", Some("1")).unwrap();
    assert_eq!(store.take_flag("clean").unwrap().as_deref(), Some("1"));
    assert_eq!(store.take_flag("clean").unwrap(), None);
    store.set_flag("clean", Some("1")).unwrap();
    store.set_flag("clean", None).unwrap();
    assert_eq!(store.take_flag("clean").unwrap(), None);
}

/// BlockStore.
pub fn blocking(store: &dyn Backend) {
    let u = "user@block.conformance.test";
    let other = "other@block.conformance.test";
    assert!(store.blocklist(u).unwrap().is_empty());
    assert!(!store
        .accounts_with_blocklist()
        .unwrap()
        .contains(&u.to_string()));
    store
        .block(u, &strings(&["z@x.test", "evil.test", "z@x.test"]), 3)
        .unwrap();
    store.block(u, &strings(&["a@x.test/res"]), 3).unwrap();
    // At the bound: a new JID is refused and nothing of the call is written, a listed one
    // may be blocked again.
    assert!(matches!(
        store.block(u, &strings(&["new@x.test", "evil.test"]), 3),
        Err(StoreError::QuotaExceeded)
    ));
    assert!(!store.is_blocked(u, "new@x.test").unwrap());
    store.block(u, &strings(&["evil.test"]), 3).unwrap();
    // A list already longer than a lowered bound: re-blocking still works, growing does not.
    store.block(u, &strings(&["z@x.test"]), 1).unwrap();
    assert!(matches!(
        store.block(u, &strings(&["new@x.test"]), 1),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(
        store.blocklist(u).unwrap(),
        strings(&["a@x.test/res", "evil.test", "z@x.test"])
    );
    assert!(store.is_blocked(u, "evil.test").unwrap());
    assert!(store.is_blocked(u, "a@x.test/res").unwrap());
    // Exact match only: JID matching rules are the server's.
    assert!(!store.is_blocked(u, "a@x.test").unwrap());
    assert!(!store.is_blocked(other, "evil.test").unwrap());
    store.block(other, &strings(&["q@x.test"]), 3).unwrap();
    let with = store.accounts_with_blocklist().unwrap();
    assert_eq!(
        with.iter().filter(|a| *a == u).count(),
        1,
        "once each: {with:?}"
    );
    assert!(with.contains(&other.to_string()));

    store
        .unblock(u, &strings(&["z@x.test", "never@x.test"]))
        .unwrap();
    assert_eq!(
        store.blocklist(u).unwrap(),
        strings(&["a@x.test/res", "evil.test"])
    );
    store.unblock(u, &[]).unwrap();
    store.unblock_all(u).unwrap();
    assert!(store.blocklist(u).unwrap().is_empty());
    assert!(!store.is_blocked(u, "evil.test").unwrap());
    assert_eq!(store.blocklist(other).unwrap(), strings(&["q@x.test"]));
    // An emptied blocklist is no longer listed.
    assert!(!store
        .accounts_with_blocklist()
        .unwrap()
        .contains(&u.to_string()));
}

/// ArchiveStore: storing, duplicates, batches, and every filter.
pub fn archive_filters(store: &dyn Backend) {
    let u = "user@archive.conformance.test";
    let other = "other@archive.conformance.test";
    let all = |q: ArchiveQuery| {
        store
            .query_archive(
                u,
                &ArchiveQuery {
                    max: 100,
                    count_limit: 100,
                    ..q
                },
            )
            .unwrap()
    };
    let empty = all(ArchiveQuery::default());
    assert!(empty.items.is_empty());
    assert!(empty.complete);
    assert_eq!(empty.count, Some(0));

    store
        .archive(u, &msg("f1", "bob@x.test", 1000), "bob@x.test/phone")
        .unwrap();
    store
        .archive(u, &msg("f2", "carol@x.test", 2000), "carol@x.test/pc")
        .unwrap();
    store
        .archive_batch(&[
            (
                u.to_owned(),
                msg("f3", "bob@x.test", 3000),
                "bob@x.test/laptop".to_owned(),
            ),
            (u.to_owned(), msg("f4", "bob@x.test", 4000), String::new()),
            (
                other.to_owned(),
                msg("f1", "bob@x.test", 1500),
                "bob@x.test/phone".to_owned(),
            ),
        ])
        .unwrap();
    // Out of insertion order: results are still chronological.
    store
        .archive(u, &msg("f0", "dave@x.test", 500), "dave@x.test/r")
        .unwrap();
    store.archive_batch(&[]).unwrap();

    // Same id twice for one user: refused; a batch with a taken id stores nothing.
    assert!(matches!(
        store.archive(u, &msg("f2", "bob@x.test", 9000), ""),
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.archive_batch(&[
            (u.to_owned(), msg("f9", "bob@x.test", 9000), String::new()),
            (u.to_owned(), msg("f3", "bob@x.test", 9001), String::new()),
        ]),
        Err(StoreError::AlreadyExists)
    ));

    let page = all(ArchiveQuery::default());
    assert_eq!(ids(&page.items), vec!["f0", "f1", "f2", "f3", "f4"]);
    assert!(page.complete);
    assert_eq!(page.count, Some(5));
    assert_eq!(page.items[1], msg("f1", "bob@x.test", 1000));
    let page = store
        .query_archive(
            other,
            &ArchiveQuery {
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.items, vec![msg("f1", "bob@x.test", 1500)]);

    let page = all(ArchiveQuery {
        with: Some("bob@x.test".into()),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f1", "f3", "f4"]);
    assert_eq!(page.count, Some(3));
    // A full JID matches exactly the full JID stored; an empty with_full stored the bare one.
    let page = all(ArchiveQuery {
        with: Some("bob@x.test/laptop".into()),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f3"]);
    let page = all(ArchiveQuery {
        with: Some("bob@x.test/tablet".into()),
        ..Default::default()
    });
    assert!(page.items.is_empty());
    assert_eq!(page.count, Some(0));
    let page = all(ArchiveQuery {
        with: Some("nobody@x.test".into()),
        ..Default::default()
    });
    assert!(page.items.is_empty() && page.complete);

    // start and end are inclusive.
    let page = all(ArchiveQuery {
        start: Some(1000),
        end: Some(3000),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f1", "f2", "f3"]);
    assert_eq!(page.count, Some(3));
    let page = all(ArchiveQuery {
        start: Some(3001),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f4"]);
    let page = all(ArchiveQuery {
        end: Some(999),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f0"]);
    let page = all(ArchiveQuery {
        with: Some("bob@x.test".into()),
        start: Some(2000),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f3", "f4"]);

    // ids: only those, chronological whatever the order asked; unknown ids are no error.
    let page = all(ArchiveQuery {
        ids: Some(strings(&["f4", "f1", "nope"])),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f1", "f4"]);
    assert_eq!(page.count, Some(2));
    assert!(page.complete);
    let page = all(ArchiveQuery {
        ids: Some(vec![]),
        ..Default::default()
    });
    assert!(page.items.is_empty());
    assert_eq!(page.count, Some(0));
    let page = all(ArchiveQuery {
        ids: Some(strings(&["f1", "f2", "f3"])),
        with: Some("bob@x.test".into()),
        ..Default::default()
    });
    assert_eq!(ids(&page.items), vec!["f1", "f3"]);
}

/// ArchiveStore: RSM paging forward and backward, `complete`, `count`, unknown cursors.
pub fn archive_paging(store: &dyn Backend) {
    let u = "user@paging.conformance.test";
    let batch: Vec<(String, ArchivedMessage, String)> = (1..=10)
        .map(|i| {
            let with = if i % 2 == 0 {
                "even@x.test"
            } else {
                "odd@x.test"
            };
            (
                u.to_owned(),
                msg(&format!("p{i:02}"), with, i * 100),
                with.to_owned(),
            )
        })
        .collect();
    store.archive_batch(&batch).unwrap();
    let q = |after: Option<&str>, before: Option<&str>, max: usize| {
        store
            .query_archive(
                u,
                &ArchiveQuery {
                    after_id: after.map(str::to_owned),
                    before_id: before.map(str::to_owned),
                    max,
                    count_limit: 100,
                    ..Default::default()
                },
            )
            .unwrap()
    };

    // Forward from the start.
    let p = q(None, None, 3);
    assert_eq!(ids(&p.items), vec!["p01", "p02", "p03"]);
    assert!(!p.complete);
    assert_eq!(p.count, Some(10));
    let p = q(Some("p03"), None, 3);
    assert_eq!(ids(&p.items), vec!["p04", "p05", "p06"]);
    assert!(!p.complete);
    assert_eq!(p.count, Some(10), "count ignores the cursor");
    let p = q(Some("p06"), None, 3);
    assert_eq!(ids(&p.items), vec!["p07", "p08", "p09"]);
    assert!(!p.complete);
    let p = q(Some("p09"), None, 3);
    assert_eq!(ids(&p.items), vec!["p10"]);
    assert!(p.complete);
    // A page that ends exactly at the last item is complete.
    let p = q(Some("p07"), None, 3);
    assert_eq!(ids(&p.items), vec!["p08", "p09", "p10"]);
    assert!(p.complete);
    let p = q(Some("p10"), None, 3);
    assert!(p.items.is_empty());
    assert!(p.complete);

    // Backward: empty <before/> is the last page, items still chronological.
    let p = q(None, Some(""), 3);
    assert_eq!(ids(&p.items), vec!["p08", "p09", "p10"]);
    assert!(!p.complete);
    assert_eq!(p.count, Some(10));
    let p = q(None, Some("p08"), 3);
    assert_eq!(ids(&p.items), vec!["p05", "p06", "p07"]);
    assert!(!p.complete);
    let p = q(None, Some("p04"), 3);
    assert_eq!(ids(&p.items), vec!["p01", "p02", "p03"]);
    assert!(p.complete, "nothing before p01");
    let p = q(None, Some("p03"), 3);
    assert_eq!(ids(&p.items), vec!["p01", "p02"]);
    assert!(p.complete);
    let p = q(None, Some("p01"), 3);
    assert!(p.items.is_empty());
    assert!(p.complete);
    let p = q(None, Some(""), 20);
    assert_eq!(p.items.len(), 10);
    assert!(p.complete);

    // Both cursors: the range between them, paged backward.
    let p = q(Some("p02"), Some("p07"), 10);
    assert_eq!(ids(&p.items), vec!["p03", "p04", "p05", "p06"]);
    assert!(p.complete);
    let p = q(Some("p02"), Some("p07"), 2);
    assert_eq!(ids(&p.items), vec!["p05", "p06"]);
    assert!(!p.complete);

    // max = 0 asks for the count only (XEP-0059).
    let p = q(None, None, 0);
    assert!(p.items.is_empty());
    assert_eq!(p.count, Some(10));
    assert!(!p.complete);

    // Cursors combine with filters; the cursor item need not match the filter.
    let p = store
        .query_archive(
            u,
            &ArchiveQuery {
                with: Some("even@x.test".into()),
                after_id: Some("p03".into()),
                max: 2,
                count_limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&p.items), vec!["p04", "p06"]);
    assert!(!p.complete);
    assert_eq!(p.count, Some(5));
    let p = store
        .query_archive(
            u,
            &ArchiveQuery {
                with: Some("even@x.test".into()),
                before_id: Some(String::new()),
                end: Some(700),
                max: 2,
                count_limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&p.items), vec!["p04", "p06"]);
    assert!(!p.complete);
    assert_eq!(p.count, Some(3));

    // Unknown cursors are item-not-found, including another user's ids.
    for (after, before) in [
        (Some("nope"), None),
        (None, Some("nope")),
        (Some("p01"), Some("nope")),
    ] {
        let r = store.query_archive(
            u,
            &ArchiveQuery {
                after_id: after.map(str::to_owned),
                before_id: before.map(str::to_owned),
                max: 5,
                ..Default::default()
            },
        );
        assert!(
            matches!(r, Err(StoreError::NotFound)),
            "{after:?} {before:?}"
        );
    }
    let r = store.query_archive(
        "other@paging.conformance.test",
        &ArchiveQuery {
            after_id: Some("p01".into()),
            max: 5,
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(StoreError::NotFound)));
}

/// ArchiveStore: `count` is exact up to `count_limit` and left out beyond it (never an
/// approximation), while paging and `complete` are the same with or without it.
pub fn archive_paging_without_count(store: &dyn Backend) {
    let u = "user@nocount.conformance.test";
    let batch: Vec<(String, ArchivedMessage, String)> = (1..=9)
        .map(|i| {
            let with = if i <= 3 { "few@x.test" } else { "many@x.test" };
            (
                u.to_owned(),
                msg(&format!("n{i}"), with, i * 10),
                format!("{with}/r"),
            )
        })
        .collect();
    store.archive_batch(&batch).unwrap();
    let q = |with: Option<&str>, after: Option<&str>, before: Option<&str>, limit: usize| {
        store
            .query_archive(
                u,
                &ArchiveQuery {
                    with: with.map(str::to_owned),
                    after_id: after.map(str::to_owned),
                    before_id: before.map(str::to_owned),
                    max: 3,
                    count_limit: limit,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    // Forward through all nine, three per page, with no count at all: the last page (and
    // only it) is complete, also when it is exactly full.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = q(None, after.as_deref(), None, 0);
        assert_eq!(p.count, None, "count_limit 0 never counts");
        pages.push((ids(&p.items).join(","), p.complete));
        after = p.items.last().map(|m| m.id.clone());
        if p.complete || pages.len() > 4 {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![
            ("n1,n2,n3".to_owned(), false),
            ("n4,n5,n6".to_owned(), false),
            ("n7,n8,n9".to_owned(), true),
        ]
    );
    // Backward likewise.
    let p = q(None, None, Some("n4"), 0);
    assert_eq!(ids(&p.items), vec!["n1", "n2", "n3"]);
    assert!(p.complete);
    let p = q(None, None, Some("n5"), 0);
    assert_eq!(ids(&p.items), vec!["n2", "n3", "n4"]);
    assert!(!p.complete);

    // Exact at the limit, absent one beyond it, whatever the page and its cursor.
    assert_eq!(q(None, None, None, 9).count, Some(9));
    assert_eq!(q(None, Some("n3"), None, 9).count, Some(9));
    assert_eq!(q(None, None, None, 8).count, None);
    assert_eq!(q(None, Some("n3"), None, 8).count, None);
    assert_eq!(q(None, None, Some(""), 8).count, None);
    // The filter decides what is counted: three match, so a limit of three counts them.
    let p = q(Some("few@x.test"), None, None, 3);
    assert_eq!(ids(&p.items), vec!["n1", "n2", "n3"]);
    assert!(p.complete);
    assert_eq!(p.count, Some(3));
    let p = q(Some("many@x.test/r"), Some("n5"), None, 6);
    assert_eq!(ids(&p.items), vec!["n6", "n7", "n8"]);
    assert!(!p.complete);
    assert_eq!(p.count, Some(6));
    assert_eq!(q(Some("many@x.test/r"), None, None, 5).count, None);
}

/// ArchiveStore: messages sharing a timestamp page in insertion order, none skipped or
/// repeated, in both directions.
pub fn archive_ties(store: &dyn Backend) {
    let u = "user@ties.conformance.test";
    let expected: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
    for (i, id) in expected.iter().enumerate() {
        let ts = if (1..6).contains(&i) {
            5000
        } else {
            4000 + i as i64 * 1000
        };
        store.archive(u, &msg(id, "peer@x.test", ts), "").unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = store
            .query_archive(
                u,
                &ArchiveQuery {
                    after_id: after.clone(),
                    max: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        seen.extend(p.items.iter().map(|m| m.id.clone()));
        after = p.items.last().map(|m| m.id.clone());
        if p.complete {
            break;
        }
        assert!(seen.len() <= expected.len(), "forward paging does not end");
    }
    assert_eq!(seen, expected);

    let mut seen = Vec::new();
    let mut before = String::new();
    loop {
        let p = store
            .query_archive(
                u,
                &ArchiveQuery {
                    before_id: Some(before.clone()),
                    max: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut page: Vec<String> = p.items.iter().map(|m| m.id.clone()).collect();
        page.append(&mut seen);
        seen = page;
        match p.items.first() {
            Some(first) => before = first.id.clone(),
            None => break,
        }
        if p.complete {
            break;
        }
        assert!(seen.len() <= expected.len(), "backward paging does not end");
    }
    assert_eq!(seen, expected);
}

/// ArchiveStore preferences.
pub fn mam_prefs(store: &dyn Backend) {
    let u = "user@prefs.conformance.test";
    assert_eq!(store.mam_prefs(u).unwrap(), MamPrefs::default());
    assert!(!store
        .accounts_with_mam_prefs()
        .unwrap()
        .contains(&u.to_string()));
    let prefs = MamPrefs {
        default: Some("roster".into()),
        always: strings(&["b@x.test", "a@x.test"]),
        never: strings(&["c@x.test"]),
    };
    store.set_mam_prefs(u, &prefs).unwrap();
    let with = store.accounts_with_mam_prefs().unwrap();
    assert_eq!(
        with.iter().filter(|a| *a == u).count(),
        1,
        "once each: {with:?}"
    );
    assert_eq!(
        store.mam_prefs(u).unwrap(),
        MamPrefs {
            default: Some("roster".into()),
            always: strings(&["a@x.test", "b@x.test"]),
            never: strings(&["c@x.test"]),
        }
    );
    // Replaces wholly, including back to the server default.
    let prefs = MamPrefs {
        default: None,
        always: vec![],
        never: strings(&["d@x.test"]),
    };
    store.set_mam_prefs(u, &prefs).unwrap();
    assert_eq!(store.mam_prefs(u).unwrap(), prefs);
    for mode in ["always", "never"] {
        let p = MamPrefs {
            default: Some(mode.into()),
            ..Default::default()
        };
        store.set_mam_prefs(u, &p).unwrap();
        assert_eq!(store.mam_prefs(u).unwrap(), p);
    }
    let bad = MamPrefs {
        default: Some("sometimes".into()),
        ..Default::default()
    };
    assert!(matches!(
        store.set_mam_prefs(u, &bad),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.mam_prefs(u).unwrap().default.as_deref(),
        Some("never")
    );
    assert_eq!(
        store.mam_prefs("other@prefs.conformance.test").unwrap(),
        MamPrefs::default()
    );
}

fn reg(user: &str, jid: &str, node: &str, enabled_at: i64) -> PushRegistration {
    PushRegistration {
        user: user.to_owned(),
        jid: jid.to_owned(),
        node: node.to_owned(),
        publish_options_xml: Some(format!("<x type='submit'>{node}</x>")),
        enabled_at,
        resource: Some("phone".into()),
        lang: Some("en".into()),
        error_count: 0,
        last_push: None,
        last_result: None,
    }
}

/// PushStore.
pub fn push(store: &dyn Backend) {
    let u = "user@push.conformance.test";
    let v = "zed@push.conformance.test";
    let ours = |s: &dyn Backend| -> Vec<String> {
        s.users_with_push()
            .unwrap()
            .into_iter()
            .filter(|x| x.ends_with("@push.conformance.test"))
            .collect()
    };
    assert!(store.push_registrations(u).unwrap().is_empty());
    assert!(ours(store).is_empty());

    let late = reg(u, "push.x.test", "node-late", 200);
    let early = reg(u, "push.x.test", "node-early", 100);
    let other_app = PushRegistration {
        publish_options_xml: None,
        resource: None,
        lang: None,
        ..reg(u, "push.y.test", "n", 300)
    };
    store.upsert_push_registration(&late).unwrap();
    store.upsert_push_registration(&early).unwrap();
    store.upsert_push_registration(&other_app).unwrap();
    store
        .upsert_push_registration(&reg(v, "push.x.test", "v", 1))
        .unwrap();
    assert_eq!(
        store.push_registrations(u).unwrap(),
        vec![early.clone(), late.clone(), other_app.clone()]
    );
    assert_eq!(ours(store), strings(&[u, v]));

    // Re-enabling the same (jid, node) replaces the registration wholly.
    let late2 = PushRegistration {
        publish_options_xml: None,
        enabled_at: 400,
        resource: Some("tablet".into()),
        error_count: 2,
        ..late.clone()
    };
    store.upsert_push_registration(&late2).unwrap();
    assert_eq!(
        store.push_registrations(u).unwrap(),
        vec![early.clone(), other_app.clone(), late2.clone()]
    );

    store
        .update_push_stats(
            u,
            "push.x.test",
            "node-early",
            3,
            Some(1234),
            Some("error: wait"),
        )
        .unwrap();
    let got = store.push_registrations(u).unwrap();
    assert_eq!(got[0].error_count, 3);
    assert_eq!(got[0].last_push, Some(1234));
    assert_eq!(got[0].last_result.as_deref(), Some("error: wait"));
    assert_eq!(got[0].publish_options_xml, early.publish_options_xml);
    store
        .update_push_stats(u, "push.x.test", "node-early", 0, Some(1300), None)
        .unwrap();
    let got = store.push_registrations(u).unwrap();
    assert_eq!((got[0].error_count, got[0].last_result.clone()), (0, None));
    // No new push time: the last one is kept.
    store
        .update_push_stats(u, "push.x.test", "node-early", 1, None, Some("timeout"))
        .unwrap();
    let got = store.push_registrations(u).unwrap();
    assert_eq!((got[0].error_count, got[0].last_push), (1, Some(1300)));
    assert!(matches!(
        store.update_push_stats(u, "push.x.test", "missing", 1, None, None),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_push_stats(v, "push.x.test", "node-early", 1, None, None),
        Err(StoreError::NotFound)
    ));
    // A batch applies in order in one transaction and skips registrations that are gone.
    let upd = |node: &str, errors: u32, at: Option<i64>, result: Option<&str>| PushStatsUpdate {
        user: u.to_string(),
        jid: "push.x.test".into(),
        node: node.into(),
        error_count: errors,
        last_push: at,
        last_result: result.map(str::to_string),
    };
    assert_eq!(store.update_push_stats_batch(&[]).unwrap(), 0);
    let n = store
        .update_push_stats_batch(&[
            upd("node-early", 0, Some(1400), Some("ok")),
            upd("missing", 5, None, None),
            upd("node-early", 2, None, Some("timeout")),
        ])
        .unwrap();
    assert_eq!(n, 2, "the missing registration is skipped");
    let got = store.push_registrations(u).unwrap();
    assert_eq!(
        (
            got[0].error_count,
            got[0].last_push,
            got[0].last_result.as_deref()
        ),
        (2, Some(1400), Some("timeout"))
    );

    assert!(store
        .delete_push_registration(u, "push.y.test", "n")
        .unwrap());
    assert!(!store
        .delete_push_registration(u, "push.y.test", "n")
        .unwrap());
    assert_eq!(
        store
            .delete_push_registrations_by_jid(u, "push.y.test")
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_push_registrations_by_jid(u, "push.x.test")
            .unwrap(),
        2
    );
    assert!(store.push_registrations(u).unwrap().is_empty());
    assert_eq!(ours(store), strings(&[v]));
    // Another user's registration with the same app server is untouched.
    assert_eq!(store.push_registrations(v).unwrap().len(), 1);
}

/// PushStore removals: a removal and its record are one step, with the statistics the
/// registration had; the record is listed newest first, bounded per user and purged by age.
pub fn push_removals(store: &dyn Backend) {
    let u = "user@removals.conformance.test";
    let v = "zed@removals.conformance.test";
    assert!(store.removed_push_registrations(u).unwrap().is_empty());
    for node in ["a", "b", "c"] {
        store
            .upsert_push_registration(&reg(u, "push.x.test", node, 1))
            .unwrap();
    }
    store
        .upsert_push_registration(&reg(u, "push.y.test", "a", 1))
        .unwrap();
    store
        .update_push_stats(u, "push.x.test", "a", 3, Some(50), Some("item-not-found"))
        .unwrap();
    store
        .update_push_stats(u, "push.x.test", "b", 0, Some(60), Some("ok"))
        .unwrap();

    // Nothing removed, nothing recorded.
    let note = |at: i64, reason: &'static str| RemovalNote {
        removed_at: at,
        reason,
        failed_with: None,
    };
    assert_eq!(
        store
            .remove_push_registrations(u, "push.x.test", Some("gone"), &note(100, "x"))
            .unwrap(),
        0
    );
    assert!(store.removed_push_registrations(u).unwrap().is_empty());

    // One node; the error that caused the removal becomes its last result and counts.
    let failed = RemovalNote {
        failed_with: Some("not-authorized"),
        ..note(100, "app server errors")
    };
    assert_eq!(
        store
            .remove_push_registrations(u, "push.x.test", Some("a"), &failed)
            .unwrap(),
        1
    );
    // Every node of an app server; the statistics are the stored ones.
    assert_eq!(
        store
            .remove_push_registrations(u, "push.x.test", None, &note(200, "by the operator"))
            .unwrap(),
        2
    );
    let left: Vec<String> = store
        .push_registrations(u)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.jid, r.node))
        .collect();
    assert_eq!(
        left,
        strings(&["push.y.test a"]),
        "only the others are left"
    );
    let removed = store.removed_push_registrations(u).unwrap();
    let rm = |node: &str, at: i64, reason: &str, last: Option<&str>, errors: u32| PushRemoval {
        user: u.to_string(),
        jid: "push.x.test".into(),
        node: node.into(),
        removed_at: at,
        reason: reason.into(),
        last_result: last.map(str::to_string),
        error_count: errors,
    };
    assert_eq!(removed.len(), 3);
    // Newest first; the two of one removal in either order.
    let mut newest: Vec<PushRemoval> = removed[..2].to_vec();
    newest.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(
        newest,
        vec![
            rm("b", 200, "by the operator", Some("ok"), 0),
            rm("c", 200, "by the operator", None, 0),
        ]
    );
    assert_eq!(
        removed[2],
        rm("a", 100, "app server errors", Some("not-authorized"), 4)
    );

    // Recorded directly; another user's record is separate.
    let other = PushRemoval {
        user: v.to_string(),
        ..rm("v", 150, "evicted", Some("timeout"), 1)
    };
    store.record_push_removal(&other).unwrap();
    assert_eq!(store.removed_push_registrations(v).unwrap(), vec![other]);
    assert_eq!(store.removed_push_registrations(u).unwrap().len(), 3);

    // Bounded per user: the oldest go.
    for i in 0..MAX_REMOVALS_PER_USER as i64 {
        store
            .record_push_removal(&rm(&format!("n{i}"), 1000 + i, "flood", None, 0))
            .unwrap();
    }
    let kept = store.removed_push_registrations(u).unwrap();
    assert_eq!(kept.len(), MAX_REMOVALS_PER_USER);
    assert_eq!(kept[0].node, format!("n{}", MAX_REMOVALS_PER_USER - 1));
    assert!(kept.iter().all(|r| r.reason == "flood"), "the oldest went");
    assert_eq!(store.removed_push_registrations(v).unwrap().len(), 1);

    // Purged by age, strictly before the cut, every user.
    assert_eq!(store.purge_push_removals_before(1001).unwrap(), 2);
    assert_eq!(
        store.removed_push_registrations(u).unwrap().len(),
        MAX_REMOVALS_PER_USER - 1
    );
    assert!(store.removed_push_registrations(v).unwrap().is_empty());
    assert_eq!(store.purge_push_removals_before(1001).unwrap(), 0);
    assert_eq!(
        store.purge_push_removals_before(i64::MAX).unwrap(),
        MAX_REMOVALS_PER_USER - 1
    );
    assert!(store.removed_push_registrations(u).unwrap().is_empty());
}

/// AccountStore::delete_account clears the user's rows in every role, and only theirs.
pub fn delete_account_removes_everything(store: &dyn Backend) {
    let u = "doomed@delete.conformance.test";
    let keep = "keeper@delete.conformance.test";
    for user in [u, keep] {
        store.create_account(user, &creds(9)).unwrap();
        store
            .set_roster_item(user, &item("c@x.test", Subscription::Both, false, &["G"]))
            .unwrap();
        store
            .add_subscription_request(user, "r@x.test", "<presence/>", 10)
            .unwrap();
        store
            .store_offline(user, "<message/>", 10, u64::MAX)
            .unwrap();
        store.block(user, &strings(&["b@x.test"]), 100).unwrap();
        store.archive(user, &msg("d1", "c@x.test", 10), "").unwrap();
        store
            .set_mam_prefs(
                user,
                &MamPrefs {
                    default: Some("always".into()),
                    always: strings(&["c@x.test"]),
                    never: strings(&["n@x.test"]),
                },
            )
            .unwrap();
        store
            .upsert_push_registration(&reg(user, "push.x.test", "n", 1))
            .unwrap();
        store
            .upsert_push_registration(&reg(user, "push.x.test", "old", 1))
            .unwrap();
        let note = RemovalNote {
            removed_at: 5,
            reason: "disabled",
            failed_with: None,
        };
        assert_eq!(
            store
                .remove_push_registrations(user, "push.x.test", Some("old"), &note)
                .unwrap(),
            1
        );
        store
            .set_vcard(user, &vcard("<vCard/>", Some("ab")))
            .unwrap();
        store
            .set_private_items(user, &[pitem("p", "x:p", "<p/>")], 10)
            .unwrap();
        store.pep_create(user, "n", "cfg", 10).unwrap();
        let it = PepItem {
            id: "i".into(),
            xml: "<x/>".into(),
        };
        store
            .pep_publish(user, "n", None, Some(&it), 5, PEP_LIMITS)
            .unwrap();
    }
    store.delete_account(u).unwrap();
    assert!(store.pep_nodes(u).unwrap().is_empty());
    assert!(store.pep_items(u, "n", &[], None).unwrap().is_empty());
    assert_eq!(store.pep_nodes(keep).unwrap().len(), 1);
    assert_eq!(store.pep_items(keep, "n", &[], None).unwrap().len(), 1);

    assert!(!store.account_exists(u).unwrap());
    assert_eq!(store.credentials(u).unwrap(), None);
    assert_eq!(store.roster(u).unwrap(), (0, vec![]));
    assert_eq!(store.roster_item(u, "c@x.test").unwrap(), None);
    assert!(store.subscription_requests(u).unwrap().is_empty());
    assert_eq!(store.offline_count(u).unwrap(), 0);
    assert!(store.blocklist(u).unwrap().is_empty());
    let page = store
        .query_archive(
            u,
            &ArchiveQuery {
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.count, Some(0));
    assert_eq!(store.mam_prefs(u).unwrap(), MamPrefs::default());
    assert!(store.push_registrations(u).unwrap().is_empty());
    assert!(!store.users_with_push().unwrap().contains(&u.to_owned()));
    assert!(store.removed_push_registrations(u).unwrap().is_empty());
    assert_eq!(store.vcard(u).unwrap(), None);
    assert_eq!(store.vcard_photo_hash(u).unwrap(), None);
    assert!(!store.accounts_with_vcard().unwrap().contains(&u.to_owned()));
    assert_eq!(store.private_item(u, "p", "x:p").unwrap(), None);
    assert_eq!(store.private_count(u).unwrap(), 0);

    // The neighbour keeps everything.
    assert!(store.account_exists(keep).unwrap());
    assert_eq!(store.roster(keep).unwrap().1.len(), 1);
    assert_eq!(store.roster(keep).unwrap().1[0].groups, strings(&["G"]));
    assert_eq!(store.subscription_requests(keep).unwrap().len(), 1);
    assert_eq!(store.offline_count(keep).unwrap(), 1);
    assert_eq!(store.blocklist(keep).unwrap(), strings(&["b@x.test"]));
    let page = store
        .query_archive(
            keep,
            &ArchiveQuery {
                max: 10,
                count_limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.count, Some(1));
    assert_eq!(store.mam_prefs(keep).unwrap().never, strings(&["n@x.test"]));
    assert_eq!(store.push_registrations(keep).unwrap().len(), 1);
    assert_eq!(store.removed_push_registrations(keep).unwrap().len(), 1);
    assert_eq!(
        store.vcard_photo_hash(keep).unwrap(),
        Some(Some("ab".to_owned()))
    );
    assert_eq!(
        store.private_item(keep, "p", "x:p").unwrap().as_deref(),
        Some("<p/>")
    );

    // A re-created account starts empty, archive ids are free again.
    store.create_account(u, &creds(10)).unwrap();
    assert_eq!(store.roster(u).unwrap(), (0, vec![]));
    store.archive(u, &msg("d1", "c@x.test", 10), "").unwrap();
}

/// ArchiveStore::purge_archive_before (retention) across users.
pub fn purge(store: &dyn Backend) {
    let u = "user@purge.conformance.test";
    let v = "other@purge.conformance.test";
    // Negative timestamps: no other section uses them, so the count is exact.
    store
        .archive(u, &msg("old1", "p@x.test", -3000), "")
        .unwrap();
    store
        .archive(u, &msg("old2", "p@x.test", -2000), "")
        .unwrap();
    store
        .archive(v, &msg("old3", "p@x.test", -2500), "")
        .unwrap();
    store
        .archive(u, &msg("edge", "p@x.test", -1000), "")
        .unwrap();
    store.archive(u, &msg("new", "p@x.test", -10), "").unwrap();
    assert_eq!(store.purge_archive_before(-1000, 1000).unwrap(), 3);
    let page = store
        .query_archive(
            u,
            &ArchiveQuery {
                end: Some(-1),
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&page.items), vec!["edge", "new"]);
    assert!(matches!(
        store.query_archive(
            u,
            &ArchiveQuery {
                after_id: Some("old1".into()),
                max: 10,
                ..Default::default()
            }
        ),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.purge_archive_before(-1000, 1000).unwrap(), 0);
}

fn usage(messages: u64, bytes: usize) -> Usage {
    Usage {
        messages,
        bytes: bytes as u64,
    }
}

/// OfflineStore usage: exact after every store, refusal and delete; the byte bound refuses a
/// message that would exceed it (nothing stored) and accepts one that fits exactly.
pub fn offline_usage(store: &dyn Backend) {
    let u = "user@offusage.conformance.test";
    let other = "other@offusage.conformance.test";
    let (a, b) = ("<message>first</message>", "<message>second!</message>");
    assert_eq!(store.offline_usage(u).unwrap(), Usage::default());
    let ida = store.store_offline(u, a, 10, 1000).unwrap();
    assert_eq!(store.offline_usage(u).unwrap(), usage(1, a.len()));
    // One byte short of room for b: refused, nothing stored, usage unchanged.
    let bound = (a.len() + b.len()) as u64;
    assert!(matches!(
        store.store_offline(u, b, 10, bound - 1),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.offline_count(u).unwrap(), 1);
    assert_eq!(store.offline_usage(u).unwrap(), usage(1, a.len()));
    // Exactly enough room: accepted.
    let idb = store.store_offline(u, b, 10, bound).unwrap();
    assert_eq!(store.offline_usage(u).unwrap(), usage(2, a.len() + b.len()));
    // A message larger than the whole bound never fits.
    assert!(matches!(
        store.store_offline(other, b, 10, b.len() as u64 - 1),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.offline_usage(other).unwrap(), Usage::default());
    // The bound is per user: the other user stores while u is full.
    store.store_offline(other, b, 10, bound).unwrap();
    // Deleting unknown or foreign ids changes nothing; deleting one takes exactly its bytes.
    assert_eq!(store.delete_offline(u, &[idb + 1_000_000]).unwrap(), 0);
    assert_eq!(store.offline_usage(u).unwrap(), usage(2, a.len() + b.len()));
    assert_eq!(store.delete_offline(u, &[ida, ida]).unwrap(), 1);
    assert_eq!(store.offline_usage(u).unwrap(), usage(1, b.len()));
    assert_eq!(store.delete_offline(u, &[idb]).unwrap(), 1);
    assert_eq!(store.offline_usage(u).unwrap(), Usage::default());
    assert_eq!(store.offline_usage(other).unwrap(), usage(1, b.len()));
    // Non-ASCII text counts its UTF-8 bytes.
    let c = "<message>h\u{e9}\u{e9}</message>";
    store.store_offline(u, c, 10, 1000).unwrap();
    assert_eq!(store.offline_usage(u).unwrap(), usage(1, c.len()));

    // Account removal takes the usage with the rows.
    let doomed = "doomed@offusage.conformance.test";
    store.create_account(doomed, &creds(11)).unwrap();
    store.store_offline(doomed, a, 10, 1000).unwrap();
    store.delete_account(doomed).unwrap();
    assert_eq!(store.offline_usage(doomed).unwrap(), Usage::default());
    assert_eq!(store.offline_usage(other).unwrap(), usage(1, b.len()));
}

/// ArchiveStore usage: exact after single writes, batches, a failed batch (duplicate id),
/// and account removal.
pub fn archive_usage(store: &dyn Backend) {
    let u = "user@arcusage.conformance.test";
    let v = "other@arcusage.conformance.test";
    let m = |id: &str, ts| msg(id, "p@x.test", ts);
    let len = |ids: &[&str]| {
        ids.iter()
            .map(|id| m(id, 0).stanza_xml.len())
            .sum::<usize>()
    };
    assert_eq!(store.archive_usage(u).unwrap(), Usage::default());
    store.archive(u, &m("u1", 1), "").unwrap();
    assert_eq!(store.archive_usage(u).unwrap(), usage(1, len(&["u1"])));
    // A duplicate id is refused and not counted.
    assert!(matches!(
        store.archive(u, &m("u1", 2), ""),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(store.archive_usage(u).unwrap(), usage(1, len(&["u1"])));
    let batch = |items: &[(&str, &str)]| -> Vec<(String, ArchivedMessage, String)> {
        items
            .iter()
            .map(|(user, id)| (user.to_string(), m(id, 3), String::new()))
            .collect()
    };
    store
        .archive_batch(&batch(&[(u, "u2"), (v, "v1"), (u, "u3")]))
        .unwrap();
    assert_eq!(
        store.archive_usage(u).unwrap(),
        usage(3, len(&["u1", "u2", "u3"]))
    );
    assert_eq!(store.archive_usage(v).unwrap(), usage(1, len(&["v1"])));
    // A batch with a taken id commits nothing, so counts nothing.
    assert!(store
        .archive_batch(&batch(&[(v, "v2"), (u, "u1")]))
        .is_err());
    assert_eq!(store.archive_usage(v).unwrap(), usage(1, len(&["v1"])));
    assert_eq!(
        store.archive_usage(u).unwrap(),
        usage(3, len(&["u1", "u2", "u3"]))
    );

    let doomed = "doomed@arcusage.conformance.test";
    store.create_account(doomed, &creds(12)).unwrap();
    store.archive(doomed, &m("d1", 1), "").unwrap();
    store.delete_account(doomed).unwrap();
    assert_eq!(store.archive_usage(doomed).unwrap(), Usage::default());
    assert_eq!(store.archive_usage(v).unwrap(), usage(1, len(&["v1"])));
}

/// Retention in bounded batches: oldest first, never more than the limit per call, each
/// user's usage down by exactly what went, newer rows kept.
pub fn purge_in_batches(store: &dyn Backend) {
    let u = "user@purgebatch.conformance.test";
    let v = "other@purgebatch.conformance.test";
    // Timestamps below every other section's, so only these rows are purged.
    let base = -1_000_000_000;
    for i in 0..4 {
        store
            .archive(u, &msg(&format!("u{i}"), "p@x.test", base + i), "")
            .unwrap();
    }
    store
        .archive(v, &msg("v0", "p@x.test", base + 10), "")
        .unwrap();
    store
        .archive(v, &msg("keep", "p@x.test", base + 100), "")
        .unwrap();
    let len = |id: &str| msg(id, "p@x.test", 0).stanza_xml.len();
    let before = base + 50;
    assert_eq!(store.purge_archive_before(before, 2).unwrap(), 2);
    assert_eq!(
        store.archive_usage(u).unwrap(),
        usage(2, len("u2") + len("u3"))
    );
    assert_eq!(
        store.archive_usage(v).unwrap(),
        usage(2, len("v0") + len("keep"))
    );
    assert_eq!(store.purge_archive_before(before, 2).unwrap(), 2);
    assert_eq!(store.archive_usage(u).unwrap(), Usage::default());
    assert_eq!(store.purge_archive_before(before, 2).unwrap(), 1);
    assert_eq!(store.purge_archive_before(before, 2).unwrap(), 0);
    assert_eq!(store.archive_usage(v).unwrap(), usage(1, len("keep")));
    let page = store
        .query_archive(
            v,
            &ArchiveQuery {
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&page.items), vec!["keep"]);
}

fn vcard(xml: &str, hash: Option<&str>) -> StoredVcard {
    StoredVcard {
        xml: xml.to_owned(),
        photo_hash: hash.map(str::to_owned),
    }
}

fn pitem(name: &str, ns: &str, xml: &str) -> PrivateItem {
    PrivateItem {
        name: name.to_owned(),
        ns: ns.to_owned(),
        xml: xml.to_owned(),
    }
}

/// VcardStore: absent until set, replaced whole, the hash read on its own, per user.
pub fn vcards(store: &dyn Backend) {
    let u = "v@vcard.conformance.test";
    let other = "w@vcard.conformance.test";
    assert_eq!(store.vcard(u).unwrap(), None);
    assert_eq!(store.vcard_photo_hash(u).unwrap(), None);

    store
        .set_vcard(u, &vcard("<vCard><FN>V</FN></vCard>", None))
        .unwrap();
    assert_eq!(
        store.vcard(u).unwrap(),
        Some(vcard("<vCard><FN>V</FN></vCard>", None))
    );
    // A vCard without photo is known to have none (distinct from no vCard at all).
    assert_eq!(store.vcard_photo_hash(u).unwrap(), Some(None));

    store
        .set_vcard(u, &vcard("<vCard><PHOTO/></vCard>", Some("0a1b")))
        .unwrap();
    assert_eq!(
        store.vcard(u).unwrap(),
        Some(vcard("<vCard><PHOTO/></vCard>", Some("0a1b")))
    );
    assert_eq!(
        store.vcard_photo_hash(u).unwrap(),
        Some(Some("0a1b".to_owned()))
    );
    assert_eq!(store.vcard(other).unwrap(), None);
    let with = store.accounts_with_vcard().unwrap();
    assert!(with.contains(&u.to_owned()));
    assert!(!with.contains(&other.to_owned()));
}

/// PrivateStore: keyed by (name, namespace), replaced in place, the count bound atomic.
pub fn private_items(store: &dyn Backend) {
    let u = "p@private.conformance.test";
    let other = "q@private.conformance.test";
    assert_eq!(store.private_item(u, "a", "x:a").unwrap(), None);
    assert_eq!(store.private_count(u).unwrap(), 0);

    store
        .set_private_items(u, &[pitem("a", "x:a", "<a xmlns='x:a'>1</a>")], 2)
        .unwrap();
    assert_eq!(
        store.private_item(u, "a", "x:a").unwrap().as_deref(),
        Some("<a xmlns='x:a'>1</a>")
    );
    // The same namespace under another name, and the same name under another namespace,
    // are other items.
    assert_eq!(store.private_item(u, "b", "x:a").unwrap(), None);
    assert_eq!(store.private_item(u, "a", "x:b").unwrap(), None);
    assert_eq!(store.private_item(other, "a", "x:a").unwrap(), None);

    // Replacing keeps the count.
    store
        .set_private_items(u, &[pitem("a", "x:a", "<a xmlns='x:a'>2</a>")], 1)
        .unwrap();
    assert_eq!(store.private_count(u).unwrap(), 1);
    assert_eq!(
        store.private_item(u, "a", "x:a").unwrap().as_deref(),
        Some("<a xmlns='x:a'>2</a>")
    );

    // Two new items where only one more fits: nothing is written, not even the first.
    assert!(matches!(
        store.set_private_items(
            u,
            &[
                pitem("b", "x:b", "<b xmlns='x:b'/>"),
                pitem("c", "x:c", "<c xmlns='x:c'/>"),
            ],
            2,
        ),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.private_count(u).unwrap(), 1);
    assert_eq!(store.private_item(u, "b", "x:b").unwrap(), None);

    store
        .set_private_items(u, &[pitem("b", "x:b", "<b xmlns='x:b'/>")], 2)
        .unwrap();
    assert_eq!(store.private_count(u).unwrap(), 2);
    // At the bound, replacing still works; the other user is unaffected by u's bound.
    store
        .set_private_items(u, &[pitem("b", "x:b", "<b xmlns='x:b'>n</b>")], 2)
        .unwrap();
    store
        .set_private_items(other, &[pitem("a", "x:a", "<a xmlns='x:a'/>")], 1)
        .unwrap();
    assert_eq!(store.private_count(other).unwrap(), 1);
}

/// Invites: found only by their token's hash while usable, used up, expired, revoked, and
/// bounded (unusable ones make room).
pub fn invites(store: &dyn Backend) {
    let inv = |id: &str, for_user: Option<&str>, expires: Option<i64>, uses: u32| Invite {
        id: id.into(),
        for_user: for_user.map(str::to_string),
        created: 1_000,
        expires,
        uses_left: uses,
    };
    let a = inv("a1", None, None, 2);
    store.create_invite(b"hash-a", &a, 3, 1_000).unwrap();
    assert!(matches!(
        store.create_invite(b"hash-a", &inv("other", None, None, 1), 3, 1_000),
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.create_invite(b"hash-x", &inv("a1", None, None, 1), 3, 1_000),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(
        store.usable_invite(b"hash-a", 2_000).unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.usable_invite(b"forged", 2_000).unwrap(), None);
    // Two uses, then used up.
    assert!(store.use_invite("a1", 2_000).unwrap());
    assert!(store.use_invite("a1", 2_000).unwrap());
    assert!(!store.use_invite("a1", 2_000).unwrap());
    assert_eq!(store.usable_invite(b"hash-a", 2_000).unwrap(), None);
    // Still found by its token, used up (the invite page answers 410, not 404).
    let used = store.invite_by_token(b"hash-a").unwrap().unwrap();
    assert_eq!((used.id.as_str(), used.uses_left), ("a1", 0));
    assert_eq!(store.invite_by_token(b"forged").unwrap(), None);
    assert!(!store.use_invite("nope", 2_000).unwrap());
    // Expiry, and a named account kept.
    let b = inv("b1", Some("bob@invites.conformance.test"), Some(5_000), 1);
    store.create_invite(b"hash-b", &b, 3, 1_000).unwrap();
    assert_eq!(
        store.usable_invite(b"hash-b", 4_999).unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.usable_invite(b"hash-b", 5_000).unwrap(), None);
    assert!(!store.use_invite("b1", 5_000).unwrap());
    // Listed whether usable or not (b1 has expired); creating b1 dropped the used-up a1.
    let ids: Vec<String> = store.invites().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["b1"]);
    // The bound counts usable invites: the used-up and expired ones go to make room.
    for (i, h) in [b"hash-c", b"hash-d", b"hash-e"].iter().enumerate() {
        store
            .create_invite(*h, &inv(&format!("c{i}"), None, None, 1), 3, 6_000)
            .unwrap();
    }
    assert!(matches!(
        store.create_invite(b"hash-f", &inv("f1", None, None, 1), 3, 6_000),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.invites().unwrap().len(), 3);
    store.revoke_invite("c0").unwrap();
    assert!(matches!(
        store.revoke_invite("c0"),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.usable_invite(b"hash-c", 6_000).unwrap(), None);
    store
        .create_invite(b"hash-f", &inv("f1", None, None, 1), 3, 6_000)
        .unwrap();
    for id in ["c1", "c2", "f1"] {
        store.revoke_invite(id).unwrap();
    }
    assert!(store.invites().unwrap().is_empty());
}

fn up(id: &str, owner: &str, size: u64, created_at: i64) -> Upload {
    Upload {
        id: id.into(),
        owner: owner.into(),
        filename: format!("{id}.bin"),
        size,
        content_type: "application/octet-stream".into(),
        created_at,
    }
}

/// Uploads: quota at the bound, duplicates, running totals, expiry order, removal.
pub fn uploads(store: &dyn Backend) {
    let a = "a@uploads.conformance.test";
    let b = "b@uploads.conformance.test";
    assert_eq!(store.upload_usage(a).unwrap(), 0);
    store.upload_add(&up("u1", a, 60, 100), 100).unwrap();
    // Exactly at the quota is fine; one byte beyond is refused and writes nothing.
    store.upload_add(&up("u2", a, 40, 50), 100).unwrap();
    assert!(matches!(
        store.upload_add(&up("u3", a, 1, 10), 100),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.upload_get("u3").unwrap(), None);
    assert!(matches!(
        store.upload_add(&up("u1", b, 1, 10), 100),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(store.upload_usage(b).unwrap(), 0);
    store.upload_add(&up("u4", b, 5, 200), 100).unwrap();
    assert_eq!(store.upload_usage(a).unwrap(), 100);
    assert_eq!(store.upload_get("u1").unwrap(), Some(up("u1", a, 60, 100)));
    let old: Vec<String> = store
        .uploads_older_than(150, 10)
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(old, ["u2", "u1"]);
    assert_eq!(store.uploads_older_than(150, 1).unwrap().len(), 1);
    assert!(store.upload_remove("u1").unwrap());
    assert!(!store.upload_remove("u1").unwrap());
    assert_eq!(store.upload_usage(a).unwrap(), 40);
    assert!(store.upload_remove("u2").unwrap());
    assert_eq!(store.upload_usage(a).unwrap(), 0);
    store.upload_add(&up("u5", a, 100, 300), 100).unwrap();
    assert!(store.upload_remove("u4").unwrap());
    assert!(store.upload_remove("u5").unwrap());
}

const PEP_LIMITS: PepLimits = PepLimits {
    max_nodes: 3,
    max_bytes: 1000,
};

fn pep_item(id: &str, xml: &str) -> PepItem {
    PepItem {
        id: id.into(),
        xml: xml.into(),
    }
}

fn pep_ids(items: &[PepItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

/// PepStore: auto-create, replace by id, trimming to `keep` oldest first, the node and byte
/// bounds (nothing written when refused, another account unaffected), items by id and
/// newest, retract, configure, purge, delete.
pub fn pep(store: &dyn Backend) {
    let u = "owner@pep.conformance.test";
    let other = "other@pep.conformance.test";
    let published = |created: bool, dropped: &[&str]| PepPublish::Stored {
        created,
        dropped: dropped.iter().map(|s| s.to_string()).collect(),
    };
    // No node and nothing to create it with.
    assert_eq!(
        store
            .pep_publish(u, "a", None, Some(&pep_item("1", "<p/>")), 3, PEP_LIMITS)
            .unwrap(),
        PepPublish::NoNode
    );
    assert_eq!(
        store
            .pep_publish(
                u,
                "a",
                Some("A"),
                Some(&pep_item("1", "<p/>")),
                3,
                PEP_LIMITS
            )
            .unwrap(),
        published(true, &[])
    );
    assert_eq!(store.pep_node(u, "a").unwrap().as_deref(), Some("A"));
    for id in ["2", "3"] {
        assert_eq!(
            store
                .pep_publish(
                    u,
                    "a",
                    Some("ignored"),
                    Some(&pep_item(id, "<p/>")),
                    3,
                    PEP_LIMITS
                )
                .unwrap(),
            published(false, &[])
        );
    }
    // The configuration of an existing node is not replaced by a publish.
    assert_eq!(store.pep_node(u, "a").unwrap().as_deref(), Some("A"));
    // A fourth item pushes out the oldest; republishing an id makes it the newest.
    assert_eq!(
        store
            .pep_publish(u, "a", None, Some(&pep_item("4", "<p/>")), 3, PEP_LIMITS)
            .unwrap(),
        published(false, &["1"])
    );
    assert_eq!(
        store
            .pep_publish(u, "a", None, Some(&pep_item("2", "<q/>")), 3, PEP_LIMITS)
            .unwrap(),
        published(false, &[])
    );
    let all = store.pep_items(u, "a", &[], None).unwrap();
    assert_eq!(pep_ids(&all), ["3", "4", "2"]);
    assert_eq!(all[2].xml, "<q/>");
    assert_eq!(
        pep_ids(&store.pep_items(u, "a", &[], Some(2)).unwrap()),
        ["4", "2"]
    );
    let some = store
        .pep_items(u, "a", &strings(&["2", "nope", "3"]), None)
        .unwrap();
    assert_eq!(pep_ids(&some), ["3", "2"]);
    // Node bound: a, b, c fit; d does not and writes nothing.
    assert!(store.pep_create(u, "b", "B", 3).unwrap());
    assert!(!store.pep_create(u, "b", "other", 3).unwrap());
    assert_eq!(store.pep_node(u, "b").unwrap().as_deref(), Some("B"));
    assert_eq!(
        store
            .pep_publish(u, "c", Some("C"), None, 3, PEP_LIMITS)
            .unwrap(),
        published(true, &[])
    );
    assert_eq!(
        store
            .pep_publish(
                u,
                "d",
                Some("D"),
                Some(&pep_item("1", "<p/>")),
                3,
                PEP_LIMITS
            )
            .unwrap(),
        PepPublish::TooManyNodes
    );
    assert!(matches!(
        store.pep_create(u, "d", "D", 3),
        Err(StoreError::QuotaExceeded)
    ));
    assert_eq!(store.pep_nodes(u).unwrap().len(), 3);
    // Byte bound: what is stored counts; a publish beyond it writes nothing.
    let before = store.pep_bytes(u).unwrap();
    assert_eq!(before, 12);
    let big = format!("<p>{}</p>", "x".repeat(990));
    assert_eq!(
        store
            .pep_publish(u, "b", None, Some(&pep_item("big", &big)), 3, PEP_LIMITS)
            .unwrap(),
        PepPublish::OverQuota
    );
    assert_eq!(store.pep_bytes(u).unwrap(), before);
    assert!(store.pep_items(u, "b", &[], None).unwrap().is_empty());
    // Another account is not affected by this one's bounds.
    assert_eq!(
        store
            .pep_publish(
                other,
                "d",
                Some("D"),
                Some(&pep_item("big", &big)),
                3,
                PEP_LIMITS
            )
            .unwrap(),
        published(true, &[])
    );
    // Retract returns what was there.
    assert_eq!(
        store.pep_retract(u, "a", &strings(&["3", "zz"])).unwrap(),
        strings(&["3"])
    );
    // Configure replaces the configuration and trims to the new size.
    assert_eq!(
        store.pep_configure(u, "a", "A2", 1).unwrap(),
        strings(&["4"])
    );
    assert_eq!(store.pep_node(u, "a").unwrap().as_deref(), Some("A2"));
    assert!(matches!(
        store.pep_configure(u, "zz", "x", 1),
        Err(StoreError::NotFound)
    ));
    store.pep_purge(u, "a").unwrap();
    assert!(store.pep_items(u, "a", &[], None).unwrap().is_empty());
    assert!(store.pep_node(u, "a").unwrap().is_some());
    assert!(store.pep_delete(u, "a").unwrap());
    assert!(!store.pep_delete(u, "a").unwrap());
    assert_eq!(
        store
            .pep_nodes(u)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
    assert_eq!(store.pep_items(other, "d", &[], None).unwrap().len(), 1);
}

/// Saved rooms: save replaces configuration, vCard and affiliations, delete forgets, load finds
/// every room with its affiliations; an unknown affiliation is refused with nothing written.
pub fn muc_rooms(store: &dyn Backend) {
    let room = |jid: &str, config: &str, affs: &[(&str, &str)]| MucRoom {
        jid: jid.into(),
        config: config.into(),
        affiliations: affs
            .iter()
            .map(|(j, a)| (j.to_string(), a.to_string()))
            .collect(),
        vcard: None,
    };
    assert_eq!(store.load_rooms().unwrap(), vec![]);
    let a = room(
        "a@muc.conformance.test",
        "name=A\nline two",
        &[("o@x.test", "owner"), ("m@x.test", "member")],
    );
    let mut b = room("b@muc.conformance.test", "", &[("o@x.test", "owner")]);
    b.vcard = Some("<vCard xmlns='vcard-temp'><FN>B</FN></vCard>".into());
    store.save_room(&b).unwrap();
    store.save_room(&a).unwrap();
    let mut sorted = a.clone();
    sorted.affiliations.sort();
    assert_eq!(store.load_rooms().unwrap(), vec![sorted, b.clone()]);
    let a2 = room(
        "a@muc.conformance.test",
        "name=A2",
        &[("o@x.test", "owner"), ("bad@x.test", "outcast")],
    );
    store.save_room(&a2).unwrap();
    let mut sorted = a2.clone();
    assert_eq!(
        store.load_rooms().unwrap()[1].vcard,
        b.vcard,
        "the vCard is kept"
    );
    sorted.affiliations.sort();
    assert_eq!(store.load_rooms().unwrap()[0], sorted);
    let bad = room("a@muc.conformance.test", "x", &[("o@x.test", "none")]);
    assert!(matches!(store.save_room(&bad), Err(StoreError::Invalid(_))));
    assert_eq!(store.load_rooms().unwrap()[0], sorted, "nothing written");
    store.delete_room("a@muc.conformance.test").unwrap();
    store.delete_room("never@muc.conformance.test").unwrap();
    assert_eq!(store.load_rooms().unwrap(), vec![b.clone()]);
    store.delete_room(&b.jid).unwrap();
    assert_eq!(store.load_rooms().unwrap(), vec![]);
}
