//! XEP-0357 push end to end over TCP: clients enable push against a fake app server
//! component (`common::FakeAppServer`), devices go to sleep (socket killed, ack overdue,
//! logged out), messages arrive, and the app server records exactly which publishes the
//! business rules (crates/herald-push/RULES.md) produce.
//!
//! "Exactly one" is checked with `FakeAppServer::assert_quiet`, a barrier through the
//! component router and the push task (not a sleep). Real sleeps appear only where a
//! scenario is about time passing (hibernation timeouts), with short configured durations.

mod common;

use std::time::Duration;

use common::*;
use herald_proto::Element;
use herald_store::PushRegistration;

const BOB: &str = "bob@localhost";
const PUBLISH_OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>eruio234vzxc</value></field></x>";

fn regs(s: &TestServer, user: &str) -> Vec<PushRegistration> {
    let mut r = s.running.shared.store.push_registrations(user).unwrap();
    r.sort_by(|a, b| (&a.jid, &a.node).cmp(&(&b.jid, &b.node)));
    r
}

fn nodes(s: &TestServer, user: &str) -> Vec<String> {
    regs(s, user).into_iter().map(|r| r.node).collect()
}

/// Polls observable server state (not time) until `f` holds; panics after WAIT.
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting until {what}");
}

fn is_stanza(el: &Element) -> bool {
    matches!(el.name(), "message" | "presence" | "iq") && el.ns() == "jabber:client"
}

/// A client device: counts the stanzas it read (its XEP-0198 h) and answers `<r/>` when
/// `auto_ack` is on.
struct Dev {
    c: RawClient,
    user: &'static str,
    sm_id: Option<String>,
    received: u32,
    auto_ack: bool,
}

impl Dev {
    /// Logs in, sends initial presence, enables push (node, optional publish-options) and,
    /// with `sm`, XEP-0198 with resumption. Nothing is in flight to it when this returns.
    async fn up(
        s: &TestServer,
        user: &'static str,
        res: &str,
        push: Option<(&str, Option<&str>)>,
        sm: bool,
    ) -> Dev {
        let c = RawClient::login(s.c2s(), user, "pw", res).await;
        let mut d = Dev {
            c,
            user,
            sm_id: None,
            received: 0,
            auto_ack: true,
        };
        d.c.send("<presence/>").await;
        d.sync().await;
        if let Some((node, form)) = push {
            d.enable_push(APP_DOMAIN, node, form).await;
        }
        if sm {
            d.enable_sm().await;
        }
        d
    }

    /// XEP-0198 with resumption; h counts from here.
    async fn enable_sm(&mut self) {
        self.c
            .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            .await;
        let e = self.next().await;
        assert_eq!(e.name(), "enabled", "{}", xml(&e));
        self.sm_id = Some(e.attr("id").unwrap().to_string());
        self.received = 0;
    }

    /// A ping round trip (the session has handled everything we sent before it).
    async fn sync(&mut self) {
        self.c
            .send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        loop {
            let el = self.next().await;
            if el.name() == "iq" && el.attr("id") == Some("sync") {
                return;
            }
        }
    }

    async fn iq(&mut self, body: &str) -> Element {
        self.c
            .send(&format!("<iq type='set' id='q'>{body}</iq>"))
            .await;
        loop {
            let el = self.next().await;
            if el.name() == "iq" && el.attr("id") == Some("q") {
                return el;
            }
        }
    }

    async fn enable_push(&mut self, jid: &str, node: &str, form: Option<&str>) {
        let r = self
            .iq(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='{jid}' node='{node}'>{}</enable>",
                form.unwrap_or("")
            ))
            .await;
        assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    }

    /// Next element; counts stanzas; answers (or skips) the server's `<r/>`.
    async fn next(&mut self) -> Element {
        loop {
            let el = self.c.element().await;
            if is_stanza(&el) {
                self.received += 1;
            }
            if el.is("r", "urn:xmpp:sm:3") {
                if self.auto_ack {
                    self.ack().await;
                }
                continue;
            }
            return el;
        }
    }

    /// The next message (presence skipped).
    async fn message(&mut self) -> Element {
        loop {
            let el = self.next().await;
            if el.name() == "message" {
                return el;
            }
        }
    }

    async fn ack(&mut self) {
        let a = format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.received);
        self.c.send(&a).await;
    }

    /// The socket dies without a goodbye (the session hibernates if resumable).
    fn kill(self) -> (Option<String>, u32) {
        (self.sm_id, self.received)
    }

    /// Ends the stream cleanly and waits until the user has no session left.
    async fn logout_last(mut self, s: &TestServer) {
        self.c.send("</stream:stream>").await;
        self.c.expect_closed().await;
        let bare = format!("{}@localhost", self.user);
        let shared = s.running.shared.clone();
        wait_until("the user is offline", || !shared.router.is_online(&bare)).await;
    }
}

/// XEP-0198 §5 resumption on a new connection; Err(<failed/>) when refused.
async fn resume(s: &TestServer, user: &'static str, previd: &str, h: u32) -> Result<Dev, Element> {
    use base64::Engine as _;
    let mut c = RawClient::connect(s.c2s()).await;
    c.open("localhost").await;
    c.expect("features").await;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ))
    .await;
    assert_eq!(c.element().await.name(), "success");
    c.decoder.reset();
    c.open("localhost").await;
    c.expect("features").await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
    ))
    .await;
    let r = c.element().await;
    match r.name() {
        "resumed" => Ok(Dev {
            c,
            user,
            sm_id: Some(previd.to_string()),
            received: h,
            auto_ack: true,
        }),
        "failed" => Err(r),
        _ => panic!("unexpected answer to resume: {}", xml(&r)),
    }
}

/// A published summary form always says what it is.
fn assert_summary(p: &Publish, node: &str, count: u32) {
    assert_eq!(p.from, "localhost", "{}", xml(&p.iq));
    assert_eq!(p.to, APP_DOMAIN);
    assert_eq!(p.node, node, "{}", xml(&p.iq));
    assert_eq!(p.field("FORM_TYPE"), Some("urn:xmpp:push:summary"));
    assert_eq!(p.count(), count, "{}", xml(&p.iq));
}

// ---- enable / disable ----

#[tokio::test]
async fn enable_errors_disable_and_disco() {
    let (s, _app) = push_server(|_| {}).await;
    let mut bob = Dev::up(&s, "bob", "phone", None, false).await;
    for (payload, what) in [
        ("<enable xmlns='urn:xmpp:push:0' node='n'/>", "missing jid"),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='bob@localhost' node='n'/>",
            "own bare jid",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='bob@localhost/phone' node='n'/>",
            "own full jid",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='bob@localhost/tablet' node='n'/>",
            "another resource of the own account",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='BOB@LocalHost' node='n'/>",
            "own jid spelled differently",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>",
            "malformed jid",
        ),
        ("<disable xmlns='urn:xmpp:push:0'/>", "disable without jid"),
    ] {
        let r = bob.iq(payload).await;
        assert_eq!(r.attr("type"), Some("error"), "{what}: {}", xml(&r));
        assert!(xml(&r).contains("bad-request"), "{what}: {}", xml(&r));
    }
    assert!(regs(&s, BOB).is_empty());

    // Stored with publish options, resource and xml:lang; re-enabling replaces.
    let r = bob
        .iq(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='n1' xml:lang='de'>{PUBLISH_OPTIONS}</enable>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    let stored = regs(&s, BOB);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].jid.as_str(), stored[0].node.as_str()),
        (APP_DOMAIN, "n1")
    );
    assert_eq!(stored[0].resource.as_deref(), Some("phone"));
    assert_eq!(stored[0].lang.as_deref(), Some("de"));
    let po: Element = stored[0]
        .publish_options_xml
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        form_fields(&po).get("secret").map(String::as_str),
        Some("eruio234vzxc")
    );
    bob.enable_push(APP_DOMAIN, "n1", None).await;
    let stored = regs(&s, BOB);
    assert_eq!(stored.len(), 1);
    assert!(stored[0].publish_options_xml.is_none());

    // disable jid+node removes one; disable jid removes every node of that app server
    // (however the JID was spelled at enable time).
    bob.enable_push("PUSH.LocalHost", "n2", None).await;
    bob.enable_push(&format!("sub.{APP_DOMAIN}"), "n3", None)
        .await;
    let r = bob
        .iq(&format!(
            "<disable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='n1'/>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(nodes(&s, BOB), ["n2", "n3"]);
    let r = bob
        .iq(&format!(
            "<disable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}'/>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(nodes(&s, BOB), ["n3"]);

    // disco#info on the account, asked by the account itself and by someone else.
    bob.c
        .send("<iq type='get' id='d1' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let r = loop {
        let el = bob.next().await;
        if el.attr("id") == Some("d1") {
            break el;
        }
    };
    assert!(xml(&r).contains("urn:xmpp:push:0"), "{}", xml(&r));
    let mut a = login_available(&s, "alice").await;
    a.send("<iq type='get' id='d2' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let r = a.expect("iq").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(xml(&r).contains("urn:xmpp:push:0"), "{}", xml(&r));
}

#[tokio::test]
async fn disabled_registrations_get_nothing() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut bob = Dev::up(&s, "bob", "phone", Some(("n1", None)), false).await;
    bob.enable_push(APP_DOMAIN, "n2", None).await;
    bob.enable_push(&format!("sub.{APP_DOMAIN}"), "n3", None)
        .await;
    let r = bob
        .iq(&format!(
            "<disable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}'/>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    bob.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "only n3").await;
    let p = app.next().await;
    assert_eq!(
        (p.to.as_str(), p.node.as_str()),
        ("sub.push.localhost", "n3")
    );
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn max_devices_evicts_the_oldest() {
    let (s, mut app) = push_server(|c| c.push.max_devices = 2).await;
    let mut bob = Dev::up(&s, "bob", "phone", Some(("n1", None)), false).await;
    bob.enable_push(APP_DOMAIN, "n2", None).await;
    bob.enable_push(APP_DOMAIN, "n3", None).await;
    assert_eq!(nodes(&s, BOB), ["n2", "n3"]);
    bob.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "hello").await;
    let mut got = vec![app.next().await.node, app.next().await.node];
    got.sort();
    assert_eq!(got, ["n2", "n3"]);
    app.assert_quiet(&s).await;
}

// ---- rule a ----

#[tokio::test]
async fn hibernated_session_gets_exactly_one_push_with_publish_options() {
    let (s, mut app) = push_server(|_| {}).await;
    let tablet = Dev::up(
        &s,
        "bob",
        "tablet",
        Some(("tab", Some(PUBLISH_OPTIONS))),
        true,
    )
    .await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "secret text").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    // Defaults: a placeholder body, no sender, never the real body.
    assert_eq!(p.body(), Some("New Message!"));
    assert_eq!(p.sender(), None);
    assert!(!xml(&p.iq).contains("secret text"));
    let po = p.publish_options.as_ref().expect("publish-options");
    assert_eq!(
        form_fields(po).get("secret").map(String::as_str),
        Some("eruio234vzxc")
    );
    app.assert_quiet(&s).await;
    // The result was recorded against the registration.
    let r = regs(&s, BOB);
    assert_eq!(r[0].last_result.as_deref(), Some("ok"));
    assert!(r[0].last_push.is_some());
    assert_eq!(r[0].error_count, 0);
}

#[tokio::test]
async fn summary_with_sender_and_body() {
    let (s, mut app) = push_server(|c| {
        c.push.with_body = true;
        c.push.with_sender = true;
    })
    .await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "real body").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    assert_eq!(p.body(), Some("real body"));
    assert_eq!(p.sender(), Some("alice@localhost"));
    assert!(p.publish_options.is_none());
    assert!(!xml(&p.iq).contains("publish-options"));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn empty_important_body_and_unimportant_stanzas_carry_no_body() {
    let (s, mut app) = push_server(|c| c.push.important_body = String::new()).await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, "bob@localhost/tablet", "hidden").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    assert_eq!(p.body(), None, "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn unimportant_stanza_pushes_without_placeholder_or_count() {
    let (s, mut app) = push_server(|_| {}).await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    a.send("<message to='bob@localhost/tablet' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 0);
    assert_eq!(p.body(), None, "{}", xml(&p.iq));
    assert_eq!(p.priority().as_deref(), Some("low"), "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn bursts_coalesce_and_resume_stops_pushes() {
    let (s, mut app) = push_server(|c| c.push.coalesce_window.0 = Duration::from_secs(60)).await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let (id, h) = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "one").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    // The first push went out at once; the rest of the burst is covered by it.
    chat(&mut a, BOB, "two").await;
    chat(&mut a, BOB, "three").await;
    // Alice's ping reply comes after her messages were routed (so queued to bob's session).
    a.send("<iq type='get' id='s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.expect("iq").await;

    let mut tablet = resume(&s, "bob", id.as_deref().unwrap(), h)
        .await
        .expect("resumed");
    for want in ["one", "two", "three"] {
        let m = tablet.message().await;
        assert_eq!(child(&m, "body").unwrap().text(), want);
    }
    tablet.ack().await;
    app.assert_quiet(&s).await;
    // Resumed: delivered live, no push.
    chat(&mut a, BOB, "live").await;
    let m = tablet.message().await;
    assert_eq!(child(&m, "body").unwrap().text(), "live");
    tablet.ack().await;
    tablet.sync().await;
    app.assert_quiet(&s).await;

    // Asleep again: the count started again at the resume, and the window too.
    let _ = tablet.kill();
    chat(&mut a, BOB, "again").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn ack_delay_pushes_once_then_acked_session_is_awake() {
    let (s, mut app) = push_server(|c| {
        c.stream_management.request_after = 1;
        c.stream_management.max_ack_delay.0 = Duration::from_millis(300);
        c.push.coalesce_window.0 = Duration::from_millis(1);
    })
    .await;
    let mut tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    tablet.auto_ack = false;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "are you there").await;
    tablet.message().await;
    // The <r/> that followed stays unanswered: one push for the unacked queue.
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    app.assert_quiet(&s).await;
    // While the ack is overdue the device counts as asleep: a later message pushes too.
    chat(&mut a, BOB, "hello?").await;
    tablet.message().await;
    let p = app.next().await;
    assert_summary(&p, "tab", 2);
    app.assert_quiet(&s).await;
    // The ack arrives: awake; a message answered in time pushes nothing.
    tablet.ack().await;
    tablet.auto_ack = true;
    tablet.sync().await;
    chat(&mut a, BOB, "ok").await;
    tablet.message().await;
    tablet.sync().await;
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn live_phone_and_sleeping_tablet_push_only_the_tablet() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    // The tablet comes up last so nothing of the phone's is queued for it.
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tablet", None)), true).await;
    phone.sync().await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "to both").await;
    let m = phone.message().await;
    assert_eq!(child(&m, "body").unwrap().text(), "to both");
    let p = app.next().await;
    assert_summary(&p, "tablet", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn carbons_wake_a_sleeping_second_device() {
    // A tiny window, so the sent carbon below is not covered by the message's window.
    let (s, mut app) = push_server(|c| {
        c.push.with_sender = true;
        c.push.coalesce_window.0 = Duration::from_millis(1);
    })
    .await;
    let mut phone = Dev::up(&s, "bob", "phone", None, false).await;
    let mut tablet = Dev::up(&s, "bob", "tablet", Some(("tablet", None)), false).await;
    let r = tablet.iq("<enable xmlns='urn:xmpp:carbons:2'/>").await;
    assert_eq!(r.attr("type"), Some("result"));
    tablet.enable_sm().await;
    phone.sync().await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    // To the phone's full JID: the tablet only gets a received carbon.
    chat(&mut a, "bob@localhost/phone", "carbon me").await;
    phone.message().await;
    let p = app.next().await;
    assert_summary(&p, "tablet", 1);
    assert_eq!(p.body(), Some("New Message!"));
    // Judged by the carried message: the sender is alice, not bob's own account.
    assert_eq!(p.sender(), Some("alice@localhost"));
    app.assert_quiet(&s).await;
    // A sent carbon (bob's own message from the phone) is unimportant: no placeholder,
    // no count.
    phone
        .c
        .send("<message to='alice@localhost' type='chat'><body>reply</body></message>")
        .await;
    a.expect("message").await;
    let p = app.next().await;
    assert_summary(&p, "tablet", 1);
    assert_eq!(p.body(), None, "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn csi_held_stanzas_never_push() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    tablet.c.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    tablet.sync().await;
    let mut a = login_available(&s, "alice").await;
    let composing = "<message to='bob@localhost/tablet' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>";
    a.send(composing).await;
    a.send("<iq type='get' id='s' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    a.expect("iq").await;
    tablet.sync().await;
    let _ = tablet.kill();
    // Held, then hibernated: nothing; more unimportant stanzas are held too.
    a.send(composing).await;
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn csi_flush_by_an_important_stanza_pushes_only_for_it() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    tablet.c.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    tablet.sync().await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    a.send("<message to='bob@localhost/tablet' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    app.assert_quiet(&s).await;
    // An important message flushes the buffer: one push, for it.
    chat(&mut a, "bob@localhost/tablet", "wake up").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    assert_eq!(p.body(), Some("New Message!"), "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

// ---- rules b and c, urgent ----

#[tokio::test]
async fn offline_user_gets_pushes_for_all_registrations() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.enable_push(APP_DOMAIN, "tablet", None).await;
    phone.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "first").await;
    chat(&mut a, BOB, "second").await;
    // Rule c's twin: a groupchat message to the bare JID with no session.
    a.send("<message to='bob@localhost' type='groupchat'><body>room</body></message>")
        .await;
    // Per registration: the leading push at once, then one catch-up with the true count
    // when the window ends.
    let mut got: Vec<(String, u32)> = Vec::new();
    for _ in 0..4 {
        let p = app.next().await;
        assert_eq!(p.body(), Some("New Message!"));
        got.push((p.node.clone(), p.count()));
    }
    got.sort();
    let want: Vec<(String, u32)> = ["phone", "tablet"]
        .iter()
        .flat_map(|n| [1, 3].map(move |c| (n.to_string(), c)))
        .collect();
    assert_eq!(got, want);
    app.assert_quiet(&s).await;
    // The device that enabled them connects: the count starts again.
    let phone = Dev::up(&s, "bob", "phone", None, false).await;
    phone.logout_last(&s).await;
    app.assert_quiet(&s).await;
    chat(&mut a, BOB, "fresh").await;
    let mut got = [app.next().await, app.next().await];
    got.sort_by(|x, y| x.node.cmp(&y.node));
    assert_summary(&got[0], "phone", 1);
    assert_summary(&got[1], "tablet", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn rule_b_pushes_registrations_without_a_session() {
    let (s, mut app) = push_server(|_| {}).await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tablet", None)), false).await;
    tablet.logout_last(&s).await;
    let mut desk = Dev::up(&s, "bob", "desk", Some(("desk", None)), false).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "archived").await;
    let m = desk.message().await;
    assert_eq!(child(&m, "body").unwrap().text(), "archived");
    let p = app.next().await;
    assert_summary(&p, "tablet", 1);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn incoming_call_rings_a_live_session() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "just text").await;
    phone.message().await;
    app.assert_quiet(&s).await;
    a.send("<message to='bob@localhost' type='chat' id='call'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>").await;
    phone.message().await;
    let p = app.next().await;
    assert_summary(&p, "phone", 1);
    assert_eq!(p.body(), Some("New Message!"));
    // Marked for a high-priority (VoIP) push.
    assert_eq!(p.priority().as_deref(), Some("high"), "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn never_twice_across_ack_delay_hibernation_expiry_and_offline() {
    let (s, mut app) = push_server(|c| {
        c.stream_management.request_after = 1;
        c.stream_management.max_ack_delay.0 = Duration::from_millis(200);
        c.stream_management.hibernation_timeout.0 = Duration::from_millis(300);
        c.push.max_hibernation_timeout.0 = Duration::from_millis(300);
        c.push.wake_before_expiry = false;
        // Not archived: expiry sends the unacked message to offline storage.
        c.mam.default = "never".into();
    })
    .await;
    let mut tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    tablet.auto_ack = false;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "once").await;
    tablet.message().await;
    let p = app.next().await; // ack delayed
    assert_summary(&p, "tab", 1);
    let _ = tablet.kill(); // hibernation: the same unacked stanza
    let store = s.running.shared.store.clone();
    wait_until("the expired session's message is stored offline", || {
        !store.offline_messages(BOB).unwrap().is_empty()
    })
    .await;
    let stored = s.running.shared.store.offline_messages(BOB).unwrap();
    assert_eq!(stored.len(), 1, "the unacked message went offline");
    assert!(stored[0].stanza_xml.contains("once"));
    app.assert_quiet(&s).await;
    // A new message is pushed, and counted after the first.
    chat(&mut a, BOB, "twice").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 2);
    assert_eq!(p.priority().as_deref(), Some("high"), "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

// ---- app server replies ----

#[tokio::test]
async fn errors_count_reset_on_result_and_remove_at_max_errors() {
    let (s, mut app) = push_server(|c| c.push.max_errors = 2).await;
    let phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    app.queue_replies([
        AppReply::cancel(),
        AppReply::Result,
        AppReply::cancel(),
        AppReply::cancel(),
    ]);
    let expect_errors = |n: u32, last: &str, s: &TestServer| {
        let r = regs(s, BOB);
        assert_eq!(r.len(), 1, "registration kept");
        assert_eq!(r[0].error_count, n);
        assert_eq!(r[0].last_result.as_deref(), Some(last));
    };
    chat(&mut a, BOB, "1").await;
    assert_eq!(app.next().await.answered, AppReply::cancel());
    app.assert_quiet(&s).await;
    expect_errors(1, "item-not-found", &s);
    chat(&mut a, BOB, "2").await;
    assert_eq!(app.next().await.answered, AppReply::Result);
    app.assert_quiet(&s).await;
    expect_errors(0, "ok", &s);
    chat(&mut a, BOB, "3").await;
    app.next().await;
    app.assert_quiet(&s).await;
    expect_errors(1, "item-not-found", &s);
    chat(&mut a, BOB, "4").await;
    app.next().await;
    app.assert_quiet(&s).await;
    assert!(regs(&s, BOB).is_empty(), "removed at max_errors");
    chat(&mut a, BOB, "5").await;
    app.assert_quiet(&s).await;
    assert_eq!(s.running.shared.push.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn wait_errors_are_retried_and_not_counted() {
    let (s, mut app) = push_server(|c| {
        c.push.reply_timeout.0 = Duration::from_millis(300);
        c.push.retry_backoff.0 = Duration::from_millis(300);
    })
    .await;
    let phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.logout_last(&s).await;
    app.queue_replies([AppReply::wait(), AppReply::wait()]);
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "retry me").await;
    let first = app.next().await;
    assert_eq!(first.answered, AppReply::wait());
    let second = app.next().await;
    assert_eq!(second.answered, AppReply::wait());
    let third = app.next().await;
    assert_eq!(third.answered, AppReply::Result);
    assert_ne!(first.id, second.id);
    assert_eq!(
        first.fields, third.fields,
        "a retry sends the same notification"
    );
    app.assert_quiet(&s).await;
    let r = regs(&s, BOB);
    assert_eq!(r[0].error_count, 0);
    assert_eq!(r[0].last_result.as_deref(), Some("ok"));
    assert_eq!(s.running.shared.push.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn silent_app_server_leaks_nothing() {
    let (s, mut app) = push_server(|c| {
        c.push.reply_timeout.0 = Duration::from_millis(100);
        c.push.retry_backoff.0 = Duration::from_millis(100);
    })
    .await;
    app.set_reply(AppReply::Silent);
    let mut phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.enable_push(APP_DOMAIN, "tablet", None).await;
    phone.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "anyone?").await;
    chat(&mut a, BOB, "hello?").await;
    // Bounded attempts per publish (push.max_attempts, 3): 2 messages × 2
    // registrations × 3 attempts, then nothing is held.
    for _ in 0..12 {
        app.next().await;
    }
    let push = s.running.shared.push.clone();
    let drained = tokio::time::timeout(WAIT, async {
        loop {
            if push.stats().await.unwrap().pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "publishes still pending after the retries");
    app.assert_quiet(&s).await;
    // Timeouts are not errors: the registrations stay.
    let r = regs(&s, BOB);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r.error_count == 0));
    assert!(r
        .iter()
        .all(|r| r.last_result.as_deref() == Some("timeout")));
}

// ---- extended hibernation ----

#[tokio::test]
async fn push_enabled_hibernation_lasts_until_the_first_important_push() {
    let (s, mut app) = push_server(|c| {
        c.stream_management.hibernation_timeout.0 = Duration::from_millis(300);
        c.push.max_hibernation_timeout.0 = Duration::from_secs(60);
    })
    .await;
    // Control: without push, the normal timeout applies.
    let carol = Dev::up(&s, "carol", "c", None, true).await;
    let (cid, ch) = carol.kill();
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let (id, h) = tablet.kill();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let f = resume(&s, "carol", cid.as_deref().unwrap(), ch)
        .await
        .err()
        .expect("carol's session expired");
    assert!(xml(&f).contains("item-not-found"), "{}", xml(&f));
    let mut tablet = resume(&s, "bob", id.as_deref().unwrap(), h)
        .await
        .expect("a push-enabled session outlives hibernation_timeout");
    tablet.sync().await;
    tablet.ack().await;
    app.assert_quiet(&s).await;

    // Asleep again; the first important push starts the normal timeout, and a wake-up
    // push goes out shortly before it ends.
    let (id, h) = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "wake").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 1);
    assert_eq!(p.body(), Some("New Message!"));
    let wake = app.next().await;
    assert_summary(&wake, "tab", 1);
    assert_eq!(wake.body(), None, "the wake-up push carries no message");
    let shared = s.running.shared.clone();
    wait_until("the session expired", || !shared.router.is_online(BOB)).await;
    let f = resume(&s, "bob", id.as_deref().unwrap(), h)
        .await
        .err()
        .expect("expired after the normal timeout");
    assert!(xml(&f).contains("item-not-found"), "{}", xml(&f));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn removal_at_max_errors_ends_the_extended_hibernation() {
    let (s, mut app) = push_server(|c| {
        c.stream_management.hibernation_timeout.0 = Duration::from_millis(300);
        c.push.max_hibernation_timeout.0 = Duration::from_secs(60);
        c.push.max_errors = 1;
    })
    .await;
    app.set_reply(AppReply::cancel());
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    // Unimportant, so only the error (not the push itself) can end the extension.
    a.send("<message to='bob@localhost/tablet' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    app.next().await;
    let shared = s.running.shared.clone();
    wait_until("the registration is gone and the session expired", || {
        !shared.router.is_online(BOB)
    })
    .await;
    assert!(regs(&s, BOB).is_empty());
}

#[tokio::test]
async fn only_the_app_server_can_answer_its_publish() {
    let (s, mut app) = push_server(|c| {
        c.push.max_errors = 1;
        c.push.reply_timeout.0 = Duration::from_secs(30);
    })
    .await;
    app.set_reply(AppReply::Silent);
    let phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "hi").await;
    let p = app.next().await;
    // Carol learnt the id (say, from her own app server's numbering) and forges an error.
    let mut carol = Dev::up(&s, "carol", "c", None, false).await;
    carol
        .c
        .send(&format!(
            "<iq type='error' to='localhost' id='{}'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            p.id
        ))
        .await;
    carol.sync().await;
    app.assert_quiet(&s).await;
    assert_eq!(
        nodes(&s, BOB),
        ["phone"],
        "a forged error removed the registration"
    );
    assert_eq!(s.running.shared.push.stats().await.unwrap().pending, 1);
    // The real answer still counts.
    app.send_raw(&format!(
        "<iq type='error' id='{}' from='{APP_DOMAIN}' to='localhost'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        p.id
    ));
    app.assert_quiet(&s).await;
    assert!(regs(&s, BOB).is_empty());
}

#[tokio::test]
async fn error_counts_survive_a_restart() {
    let (s, mut app) = push_server(|c| c.push.max_errors = 2).await;
    app.set_reply(AppReply::cancel());
    let phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "1").await;
    app.next().await;
    app.assert_quiet(&s).await;
    assert_eq!(regs(&s, BOB)[0].error_count, 1);
    drop((a, app));
    let TestServer { running, dir } = s;
    running.stop().await;

    let mut cfg = test_config(dir.path());
    cfg.push.max_errors = 2;
    let s = TestServer {
        running: herald_server::start(cfg).await.unwrap(),
        dir,
    };
    let mut app = FakeAppServer::connect(&s).await;
    app.set_reply(AppReply::cancel());
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "2").await;
    app.next().await;
    app.assert_quiet(&s).await;
    assert!(
        regs(&s, BOB).is_empty(),
        "the second error (after restart) reached max_errors"
    );
}

#[tokio::test]
async fn hibernation_pushes_the_unacked_queue_once() {
    let (s, mut app) = push_server(|c| c.push.with_body = true).await;
    let mut tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    tablet.auto_ack = false;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "unacked 1").await;
    chat(&mut a, BOB, "unacked 2").await;
    tablet.message().await;
    tablet.message().await;
    // Delivered while awake and never acked: nothing yet (max_ack_delay is 30 s).
    app.assert_quiet(&s).await;
    let _ = tablet.kill();
    // One push for the whole queue, showing the latest important stanza.
    let p = app.next().await;
    assert_summary(&p, "tab", 2);
    assert_eq!(p.body(), Some("unacked 2"));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn publishes_awaiting_an_answer_are_bounded() {
    let (s, mut app) = push_server(|c| {
        c.push.max_pending = 1;
        c.push.max_attempts = 1;
    })
    .await;
    app.set_reply(AppReply::Silent);
    let phone = Dev::up(&s, "bob", "phone", Some(("phone", None)), false).await;
    phone.logout_last(&s).await;
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "first").await;
    chat(&mut a, BOB, "second").await;
    // The first waits for its answer (30 s); the second finds no room and is not sent.
    app.next().await;
    app.assert_quiet(&s).await;
    assert_eq!(s.running.shared.push.stats().await.unwrap().pending, 1);
}

#[tokio::test]
async fn resume_cancels_waiting_retries() {
    let (s, mut app) = push_server(|c| c.push.reply_timeout.0 = Duration::from_secs(5)).await;
    app.queue_replies([AppReply::wait()]);
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let (id, h) = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "later").await;
    assert_eq!(app.next().await.answered, AppReply::wait());
    app.assert_quiet(&s).await;
    assert_eq!(
        s.running.shared.push.stats().await.unwrap().pending,
        1,
        "a retry is waiting"
    );
    let mut tablet = resume(&s, "bob", id.as_deref().unwrap(), h)
        .await
        .expect("resumed");
    tablet.message().await;
    tablet.sync().await;
    assert_eq!(s.running.shared.push.stats().await.unwrap().pending, 0);
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn a_call_to_a_sleeping_device_rings_once_even_inside_a_coalescing_window() {
    let (s, mut app) = push_server(|c| c.push.coalesce_window.0 = Duration::from_secs(60)).await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "before the call").await;
    assert_summary(&app.next().await, "tab", 1);
    // Archived (urgent: every registration) and queued while hibernated: one push, now.
    a.send("<message to='bob@localhost' type='chat' id='call'><propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>").await;
    let p = app.next().await;
    assert_summary(&p, "tab", 2);
    assert_eq!(p.priority().as_deref(), Some("high"), "{}", xml(&p.iq));
    app.assert_quiet(&s).await;
}

#[tokio::test]
async fn store_failure_on_enable_answers_wait_and_changes_nothing() {
    let (s, mut app) = push_server(|_| {}).await;
    let mut tablet = Dev::up(&s, "bob", "tablet", None, true).await;
    // Break the push table under the running server (as a full or damaged disk would).
    let db = rusqlite::Connection::open(s.dir.path().join("data/herald.sqlite3")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("DROP TABLE push_registrations").unwrap();
    let r = tablet
        .iq(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='{APP_DOMAIN}' node='tab'/>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{}", xml(&r));
    let err = xml(&r);
    assert!(err.contains("internal-server-error"), "{err}");
    assert!(
        err.contains("type=\"wait\"") || err.contains("type='wait'"),
        "{err}"
    );
    // Nothing was attached: the sleeping device gets no push.
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    chat(&mut a, BOB, "hello").await;
    app.assert_quiet(&s).await;
}

// ---- OMEMO (issue 15) ----

/// An OMEMO message has no `<body>` (slixmpp-omemo and Conversations may add a fallback one,
/// Dino and Monal do not): only its `<encrypted/>` payload tells the server it is a message a
/// person wrote. A sleeping phone must get it as one alerting push, for the legacy
/// (`eu.siacs.conversations.axolotl`, what deployed clients send) and the current
/// (`urn:xmpp:omemo:2`) namespace alike; the placeholder body stands in, since the server
/// cannot read the text.
#[tokio::test]
async fn body_less_omemo_message_to_a_sleeping_device_is_one_high_priority_push() {
    let (s, mut app) = push_server(|_| {}).await;
    let tablet = Dev::up(&s, "bob", "tablet", Some(("tab", None)), true).await;
    let _ = tablet.kill();
    let mut a = login_available(&s, "alice").await;
    let payloads = [
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='27183'><key rid='31415'>MwohIiMi</key><iv>T2xkbWVtbw==</iv></header><payload>Y2lwaGVy</payload></encrypted><store xmlns='urn:xmpp:hints'/>",
        "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='27183'><keys jid='bob@localhost'><key rid='31415'>MwohIiMi</key></keys></header><payload>Y2lwaGVy</payload></encrypted>",
    ];
    for (n, payload) in payloads.into_iter().enumerate() {
        a.send(&format!(
            "<message to='{BOB}' type='chat' id='omemo{n}'>{payload}</message>"
        ))
        .await;
        let p = app.next().await;
        // Counted like any message the user has not seen: 1, then 2.
        assert_summary(&p, "tab", n as u32 + 1);
        assert_eq!(p.body(), Some("New Message!"), "{}", xml(&p.iq));
        assert_eq!(p.priority().as_deref(), Some("high"), "{}", xml(&p.iq));
        // Exactly one push per message.
        app.assert_quiet(&s).await;
    }
}
