"""Push scenario (issue 5): XEP-0357 enable with publish-options, transport aborted, the push
observed at a slixmpp ComponentXMPP acting as the app server, resume, no more pushes.

slixmpp (1.17) has no xep_0357 plugin, so the client sends the <enable/> IQ through slixmpp's
generic Iq; everything else is slixmpp's own stream handling, XEP-0198 and component code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

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

PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
DATA = "jabber:x:data"
APP = "push.localhost"
NODE = "node-for-tom"
SECRET = "device-token-123"


def form_fields(x: ET.Element) -> dict[str, list[str]]:
    return {
        f.get("var"): [v.text or "" for v in f.findall(f"{{{DATA}}}value")]
        for f in x.findall(f"{{{DATA}}}field")
    }


class AppServer:
    """Records each pubsub publish the component gets and answers it with a result."""

    def __init__(self, comp):
        self.comp = comp
        self.publishes: list = []
        ns = comp.default_ns
        comp.register_handler(
            Callback("interop-app-publish", MatchXPath(f"{{{ns}}}iq/{{{PUBSUB}}}pubsub"), self._on_iq)
        )

    def _on_iq(self, iq) -> None:
        if iq["type"] != "set":
            return
        self.publishes.append(iq)
        self.comp.make_iq_result(iq["id"], ito=iq["from"], ifrom=iq["to"]).send()


@scenario("push", issue=5, users=["tom", "uma"], timeout=90.0)
async def push(ctx: Ctx) -> None:
    """XEP-0357: enable with publish-options; transport aborted; one push at the app server with
    the summary form and the publish-options; resume; no more pushes."""
    comp = await ctx.component(APP)
    app = AppServer(comp)
    tom = await ctx.login("tom", "phone", plugins=("xep_0198",))
    await sm_enabled(tom)
    uma = await ctx.login("uma", "r")
    tom_full = str(tom.boundjid)

    ctx.step("tom enables push with publish-options")
    iq = tom.make_iq_set()
    enable = ET.SubElement(iq.xml, f"{{{PUSH}}}enable", {"jid": APP, "node": NODE})
    x = ET.SubElement(enable, f"{{{DATA}}}x", {"type": "submit"})
    for var, val in (("FORM_TYPE", f"{PUBSUB}#publish-options"), ("secret", SECRET)):
        f = ET.SubElement(x, f"{{{DATA}}}field", {"var": var})
        ET.SubElement(f, f"{{{DATA}}}value").text = val
    reply = await iq.send()
    check_eq(reply["type"], "result", "reply to <enable/>")
    await settle_acks(tom)
    check_eq(len(app.publishes), 0, "publishes before anything happened")

    ctx.step("transport aborted; a message arrives")
    await abort_transport(tom)
    send_chat(uma, tom_full, "wake up, tom")
    await sync(uma)

    ctx.step("the app server gets one publish")
    pub_iq = await _wait_publish(ctx, app, 1)
    check_eq(str(pub_iq["from"]), ctx.server.domain, "publish comes from the server's domain")
    check_eq(str(pub_iq["to"]), APP, "publish goes to the app server JID")
    pubsub = pub_iq.xml.find(f"{{{PUBSUB}}}pubsub")
    publish = pubsub.find(f"{{{PUBSUB}}}publish")
    check(publish is not None, f"no <publish/>: {pub_iq}")
    check_eq(publish.get("node"), NODE, "publish node")
    notif = publish.find(f"{{{PUBSUB}}}item/{{{PUSH}}}notification")
    check(notif is not None, f"no <notification/> in the item: {pub_iq}")
    forms = {form_fields(f).get("FORM_TYPE", [""])[0]: form_fields(f) for f in notif.findall(f"{{{DATA}}}x")}
    summary = forms.get("urn:xmpp:push:summary")
    check(summary is not None, f"no urn:xmpp:push:summary form: {pub_iq}")
    check(int(summary.get("message-count", ["0"])[0]) >= 1, f"message-count: {summary}")
    check("wake up, tom" not in str(pub_iq), "the real body leaked into the push (with_body is off)")
    check("last-message-sender" not in summary, "the sender leaked into the push (with_sender is off)")
    opts = pubsub.find(f"{{{PUBSUB}}}publish-options/{{{DATA}}}x")
    check(opts is not None, f"no <publish-options/> form: {pub_iq}")
    check_eq(form_fields(opts).get("secret"), [SECRET], "publish-options secret")

    ctx.step("tom resumes and gets the message")
    await ctx.start(tom, expect="session_resumed")
    await ctx.inbox(tom).until(is_chat("wake up, tom"), "the message after resume")

    ctx.step("live again: no more pushes")
    send_chat(uma, tom_full, "you are back")
    await ctx.inbox(tom).until(is_chat("you are back"), "a live message")
    await settle_acks(tom)
    await sync(uma)
    # The component's own round trip to the server: a publish emitted before it would be ahead.
    await sync(comp, ctx.server.domain)
    check_eq(len(app.publishes), 1, "publishes in total (none after resume)")


async def _wait_publish(ctx: Ctx, app: AppServer, n: int):
    await eventually(lambda: len(app.publishes) >= n, f"{n} publish(es) at the app server", timeout=15)
    check_eq(len(app.publishes), n, "publishes at the app server")
    return app.publishes[n - 1]
