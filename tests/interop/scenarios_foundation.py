"""Foundation scenarios (issue 2): login with SCRAM over STARTTLS and direct TLS, message
routing to full and bare JIDs, XEP-0199 ping, XEP-0030 disco, XEP-0092 version, and a
XEP-0114 component exchanging messages with a user."""

from __future__ import annotations

from slixmpp.exceptions import IqError

from kit import Ctx, ScenarioFailed, check, check_eq, is_chat, scenario, send_chat, sync


@scenario("login_messages", issue=2, users=["alice", "bob"])
async def login_messages(ctx: Ctx) -> None:
    """Two users log in with SCRAM over STARTTLS and exchange messages to full and bare JIDs."""
    alice = await ctx.login("alice", "phone", mech="SCRAM-SHA-256")
    bob = await ctx.login("bob", "desk", mech="SCRAM-SHA-1")
    for c, mech in ((alice, "SCRAM-SHA-256"), (bob, "SCRAM-SHA-1")):
        check_eq(c["feature_mechanisms"].mech.name, mech, f"{c.boundjid} SASL mechanism")
        check("starttls" in c.features, f"{c.boundjid}: STARTTLS was not negotiated ({c.features})")
    check_eq(str(alice.boundjid), f"{ctx.jid('alice')}/phone", "alice's bound JID")
    check_eq(str(bob.boundjid), f"{ctx.jid('bob')}/desk", "bob's bound JID")

    ctx.step("alice -> bob full JID")
    send_chat(alice, str(bob.boundjid), "to your full jid")
    [m] = await ctx.inbox(bob).until(is_chat("to your full jid"), "alice's message at bob")
    check_eq(str(m["from"]), str(alice.boundjid), "from stamped on bob's copy")
    check_eq(m["type"], "chat", "message type")

    ctx.step("bob -> alice bare JID")
    send_chat(bob, ctx.jid("alice"), "to your bare jid")
    [m] = await ctx.inbox(alice).until(is_chat("to your bare jid"), "bob's message at alice")
    check_eq(str(m["from"]), str(bob.boundjid), "from stamped on alice's copy")

    ctx.step("alice replies to bob's bare JID")
    send_chat(alice, ctx.jid("bob"), "and back to your bare jid")
    await ctx.inbox(bob).until(is_chat("and back to your bare jid"), "alice's reply at bob")

    ctx.step("bare-JID message with two resources goes to the higher priority one")
    bob2 = await ctx.login("bob", "laptop", priority=10)
    await ctx.available(bob, priority=1)
    send_chat(alice, ctx.jid("bob"), "to the highest priority")
    await ctx.inbox(bob2).until(is_chat("to the highest priority"), "message at bob/laptop (prio 10)")
    # bob/desk (prio 1) must not get it: alice's next message to bob/desk's full JID arrives after
    # it would have, and the server routes one sender's stanzas in order.
    send_chat(alice, str(bob.boundjid), "marker")
    await ctx.inbox(bob).until(is_chat("marker"), "marker at bob/desk")
    check(
        not ctx.inbox(bob).matching(is_chat("to the highest priority")),
        "bob/desk (priority 1) also got the bare-JID message meant for bob/laptop (priority 10)",
    )


@scenario("direct_tls", issue=2, users=["carol", "dave"])
async def direct_tls(ctx: Ctx) -> None:
    """XEP-0368: a user logs in over direct TLS and talks to a STARTTLS user."""
    carol = await ctx.login("carol", "tablet", direct_tls=True, mech="SCRAM-SHA-256")
    check("starttls" not in carol.features, "direct TLS client went through STARTTLS")
    check_eq(carol["feature_mechanisms"].mech.name, "SCRAM-SHA-256", "SASL mechanism")
    dave = await ctx.login("dave", "pc")
    send_chat(carol, str(dave.boundjid), "from direct tls")
    [m] = await ctx.inbox(dave).until(is_chat("from direct tls"), "carol's message at dave")
    check_eq(str(m["from"]), str(carol.boundjid), "from")
    send_chat(dave, str(carol.boundjid), "to direct tls")
    await ctx.inbox(carol).until(is_chat("to direct tls"), "dave's message at carol")


@scenario("wrong_password", issue=2, users=["erin"])
async def wrong_password(ctx: Ctx) -> None:
    """SCRAM with a wrong password is refused; the right one then works."""
    bad = ctx.client("erin", "r", mech="SCRAM-SHA-256", password="not the password")
    try:
        await ctx.start(bad)
    except ScenarioFailed as e:
        check("authentication failed" in str(e), f"wrong password failed the wrong way: {e}")
    else:
        raise ScenarioFailed("login with a wrong password succeeded")
    await ctx.login("erin", "r", mech="SCRAM-SHA-256")


@scenario("ping", issue=2, users=["frank"])
async def ping(ctx: Ctx) -> None:
    """XEP-0199: the server answers a ping with a result (not an error)."""
    c = await ctx.login("frank", "r", presence=False)
    iq = await c["xep_0199"].send_ping(ctx.server.domain)
    check_eq(iq["type"], "result", "ping to the server")
    # A ping to the user's own bare JID is answered by the server on the account's behalf.
    iq = await c["xep_0199"].send_ping(ctx.jid("frank"))
    check_eq(iq["type"], "result", "ping to own bare JID")


@scenario("disco", issue=2, users=["grace", "heidi"])
async def disco(ctx: Ctx) -> None:
    """XEP-0030 info/items on the server and on an account; XEP-0092 version."""
    c = await ctx.login("grace", "r")
    info = await c["xep_0030"].get_info(jid=ctx.server.domain)
    identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    check(("server", "im") in identities, f"server identities: {identities}")
    features = set(info["disco_info"]["features"])
    for f in ("http://jabber.org/protocol/disco#info", "urn:xmpp:ping", "jabber:iq:version"):
        check(f in features, f"server disco#info lacks {f}: {sorted(features)}")

    items = await c["xep_0030"].get_items(jid=ctx.server.domain)
    jids = {str(i[0]) for i in items["disco_items"]["items"]}
    for comp in ctx.server.components:
        check(comp in jids, f"server disco#items lacks component {comp}: {sorted(jids)}")

    # Another account's bare JID: answered by the server for the account (RFC 6121 §8.5.2.1.3).
    info = await c["xep_0030"].get_info(jid=ctx.jid("heidi"))
    identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    check(("account", "registered") in identities, f"account identities: {identities}")

    # Unknown node on the server: an error, not a result.
    try:
        await c["xep_0030"].get_info(jid=ctx.server.domain, node="no-such-node")
    except IqError as e:
        check_eq(e.iq["type"], "error", "unknown node reply")
    else:
        raise ScenarioFailed("disco#info on an unknown node returned a result")

    c.register_plugin("xep_0092")
    v = await c["xep_0092"].get_version(ctx.server.domain)
    check_eq(v["software_version"]["name"], "Herald", "version name")
    check(v["software_version"]["version"], "version string is empty")


@scenario("component", issue=2, users=["ivan"])
async def component(ctx: Ctx) -> None:
    """XEP-0114: a slixmpp ComponentXMPP connects and exchanges messages with a user."""
    comp = await ctx.component("echo.localhost")
    user = await ctx.login("ivan", "phone")

    ctx.step("user -> component")
    send_chat(user, "bot@echo.localhost", "hello component")
    [m] = await ctx.inbox(comp).until(is_chat("hello component"), "user's message at the component")
    check_eq(str(m["from"]), str(user.boundjid), "from on the component's copy")
    check_eq(str(m["to"]), "bot@echo.localhost", "to on the component's copy")

    ctx.step("component -> user full JID, from a JID under its domain")
    comp.send_message(mto=m["from"], mfrom="bot@echo.localhost/x", mbody="hello user", mtype="chat")
    [r] = await ctx.inbox(user).until(is_chat("hello user"), "component's reply at the user")
    check_eq(str(r["from"]), "bot@echo.localhost/x", "from on the user's copy")

    ctx.step("component -> user bare JID, from the component's domain")
    comp.send_message(mto=ctx.jid("ivan"), mfrom="echo.localhost", mbody="to your bare jid", mtype="chat")
    [r] = await ctx.inbox(user).until(is_chat("to your bare jid"), "component's bare-JID message")
    check_eq(str(r["from"]), "echo.localhost", "from")

    ctx.step("component pings the server")
    await sync(comp, ctx.server.domain)
