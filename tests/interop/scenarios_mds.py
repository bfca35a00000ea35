"""Read state across devices and push (issue 15, item 5; crates/herald-push/RULES.md §14): a
slixmpp desktop publishes XEP-0490 displayed markers to the account's PEP node with slixmpp's
own xep_0060 (the payload is built by hand: slixmpp 1.17 has no XEP-0490 plugin), and a
slixmpp ComponentXMPP acting as the push app server sees what the sleeping phone is sent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.xmlstream import ET as SET

from kit import (
    Ctx,
    abort_transport,
    check,
    check_eq,
    eventually,
    is_chat,
    scenario,
    send_chat,
    settle_acks,
    sm_enabled,
    sync,
)
from scenarios_push import APP, DATA, PUBSUB, PUSH, AppServer, form_fields

MDS = "urn:xmpp:mds:displayed:0"
SID = "urn:xmpp:sid:0"
NODE = "node-for-the-phone"
PRIORITY = "tigase:push:priority:0"


def stanza_id(msg: Any, by: str) -> str:
    """The <stanza-id/> the account's server put on a message it delivered."""
    for el in msg.xml.findall(f"{{{SID}}}stanza-id"):
        if el.get("by") == by:
            return el.get("id")
    raise AssertionError(f"no stanza-id by {by}: {msg}")


async def mark_displayed(c: Any, owner: str, chat: str, sid: str) -> None:
    """XEP-0490 §4.2: the marker for `chat`, with the publish-options the XEP asks for."""
    displayed = SET.Element(f"{{{MDS}}}displayed")
    SET.SubElement(displayed, f"{{{SID}}}stanza-id", {"by": owner, "id": sid})
    form = c["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#publish-options")
    for var, value in (
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ):
        form.add_field(var=var, value=value)
    r = await c["xep_0060"].publish(owner, MDS, id=chat, payload=displayed, options=form)
    check_eq(r["type"], "result", "marker publish result")


def summary(pub_iq: Any) -> dict[str, list[str]]:
    notif = pub_iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item/{{{PUSH}}}notification")
    check(notif is not None, f"no <notification/>: {pub_iq}")
    forms = {form_fields(f).get("FORM_TYPE", [""])[0]: form_fields(f) for f in notif.findall(f"{{{DATA}}}x")}
    s = forms.get("urn:xmpp:push:summary")
    check(s is not None, f"no urn:xmpp:push:summary form: {pub_iq}")
    return s


def priority(pub_iq: Any) -> str | None:
    p = pub_iq.xml.find(
        f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{PRIORITY}}}priority"
    )
    return None if p is None else (p.text or "")


async def quiet(ctx: Ctx, comp: Any, app: AppServer, n: int) -> None:
    """No publish beyond the `n`th: the component's own round trip to the server comes back
    behind any publish the server had already sent it."""
    await sync(comp, ctx.server.domain)
    check_eq(len(app.publishes), n, "publishes at the app server")


# The sender in each push shows which message it is for (alice's displayed one, or carol's).
@scenario("mds_push", issue=15, users=["bob", "alice", "carol"], timeout=90.0, config="[push]\nwith_sender = true\n")
async def mds_push(ctx: Ctx) -> None:
    """Bob's phone registers push and keeps a message unacknowledged; his desktop displays it
    (XEP-0490 marker) before the phone's connection dies: the phone is not pushed for it. A
    later message from carol pushes with a count of 1; when the desktop displays carol's chat,
    the phone gets exactly one low-priority push without body and a count of 0."""
    comp = await ctx.component(APP)
    app = AppServer(comp)
    B = ctx.jid("bob")
    desk = await ctx.login("bob", "desk", plugins=("xep_0004", "xep_0060"))
    phone = await ctx.login("bob", "phone", plugins=("xep_0198",))
    await sm_enabled(phone)
    alice = await ctx.login("alice", "r")
    carol = await ctx.login("carol", "r")

    ctx.step("the phone enables push")
    iq = phone.make_iq_set()
    enable = ET.SubElement(iq.xml, f"{{{PUSH}}}enable", {"jid": APP, "node": NODE})
    x = ET.SubElement(enable, f"{{{DATA}}}x", {"type": "submit"})
    f = ET.SubElement(x, f"{{{DATA}}}field", {"var": "FORM_TYPE"})
    ET.SubElement(f, f"{{{DATA}}}value").text = f"{PUBSUB}#publish-options"
    check_eq((await iq.send())["type"], "result", "reply to <enable/>")
    await settle_acks(phone)
    # From here on the phone leaves the server's <r/> unanswered, as a phone whose app was
    # suspended does: what it gets stays unacknowledged.
    check(phone.remove_handler("Stream Management Request Ack"), "slixmpp's <r/> handler removed")

    ctx.step("alice writes; both of bob's devices get it; the desktop displays it")
    send_chat(alice, B, "read me on the desk")
    (m,) = await ctx.inbox(desk).until(is_chat("read me on the desk"), "alice's message at the desk")
    await ctx.inbox(phone).until(is_chat("read me on the desk"), "alice's message at the phone")
    await mark_displayed(desk, B, ctx.jid("alice"), stanza_id(m, B))

    ctx.step("the phone's connection dies with alice's message unacknowledged")
    await abort_transport(phone)
    # The server hibernates the session when it sees the connection gone; alice's message is
    # displayed, so nothing is pushed for it.
    await quiet(ctx, comp, app, 0)

    ctx.step("carol writes: one push, counting only her message")
    send_chat(carol, B, "new from carol")
    (m2,) = await ctx.inbox(desk).until(is_chat("new from carol"), "carol's message at the desk")
    await eventually(lambda: len(app.publishes) >= 1, "carol's push", timeout=15)
    first = app.publishes[0]
    check_eq(first.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish").get("node"), NODE, "publish node")
    check_eq(summary(first).get("last-message-sender"), [ctx.jid("carol")], "the push is carol's")
    check_eq(summary(first).get("message-count"), ["1"], "message-count (alice's was displayed)")
    await quiet(ctx, comp, app, 1)

    ctx.step("the desktop displays carol's chat: one low-priority badge push, count 0")
    await mark_displayed(desk, B, ctx.jid("carol"), stanza_id(m2, B))
    # Carol's push opened a coalescing window (push.coalesce_window): the badge update goes
    # out at its end.
    await eventually(lambda: len(app.publishes) >= 2, "the badge push", timeout=15)
    badge = app.publishes[1]
    s = summary(badge)
    check_eq(s.get("message-count"), ["0"], "message-count after the marker")
    check("last-message-body" not in s, f"the badge push has no body: {s}")
    check_eq(priority(badge), "low", "badge push priority")
    await quiet(ctx, comp, app, 2)

    ctx.step("the same marker again changes nothing")
    await mark_displayed(desk, B, ctx.jid("carol"), stanza_id(m2, B))
    await quiet(ctx, comp, app, 2)
