"""Push rule d (issue 16 items 3 and 4): a member of a room whose phone is in no room is pushed
for the room's messages as the XEP-0492 setting in their XEP-0402 bookmark says.

slixmpp drives the room (xep_0045), the bookmark (xep_0060 publish of a XEP-0402
`<conference/>`) and the app server (a ComponentXMPP, as in the push scenario). slixmpp has no
XEP-0357 or XEP-0492 plugin: the <enable/> IQ and the <notify/> element are built by hand.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError, IqTimeout

from kit import Ctx, check, check_eq, eventually, scenario, sync
from scenarios_push import APP, PUBSUB, PUSH, AppServer, form_fields

PLUGINS = ("xep_0045", "xep_0004", "xep_0060", "xep_0199")
BOOKMARKS = "urn:xmpp:bookmarks:1"
NOTIFY = "urn:xmpp:notification-settings:1"
DATA = "jabber:x:data"
NODE = "ben-phone"

CONFIG = "\n[push]\nwith_body = true\nwith_sender = true\n"


def summary(pub) -> dict[str, list[str]]:
    notif = pub.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item/{{{PUSH}}}notification")
    check(notif is not None, f"no <notification/>: {pub}")
    forms = [form_fields(f) for f in notif.findall(f"{{{DATA}}}x")]
    return next(f for f in forms if f.get("FORM_TYPE") == ["urn:xmpp:push:summary"])


async def bookmark(c, owner: str, room: str, setting: str) -> None:
    """Publishes the member's XEP-0402 bookmark of `room` with nick `benny` and a XEP-0492
    `<notify/>` holding `setting` (the element a phone reads, and a PC-only one it must not)."""
    conf = ET.Element(f"{{{BOOKMARKS}}}conference", {"name": "Tea"})
    ET.SubElement(conf, f"{{{BOOKMARKS}}}nick").text = "benny"
    ext = ET.SubElement(conf, f"{{{BOOKMARKS}}}extensions")
    notify = ET.SubElement(ext, f"{{{NOTIFY}}}notify")
    ET.SubElement(notify, f"{{{NOTIFY}}}always", {"identity-category": "client", "identity-type": "pc"})
    ET.SubElement(notify, f"{{{NOTIFY}}}{setting}")
    r = await c["xep_0060"].publish(owner, BOOKMARKS, id=room, payload=conf)
    check_eq(r["type"], "result", "bookmark publish")


async def gone(ctx: Ctx, asker, full_jid: str) -> None:
    """Waits until the server answers for `full_jid` itself: its session has ended."""

    async def ended() -> bool:
        try:
            await asker["xep_0199"].ping(jid=full_jid, timeout=5)
            return False
        except (IqError, IqTimeout):
            return True

    for _ in range(50):
        if await ended():
            return
        await asyncio.sleep(0.1)
    check(False, f"{full_jid} still has a session")


@scenario("muc_push", issue=16, users=["ann", "ben"], timeout=90.0, config=CONFIG)
async def muc_push(ctx: Ctx) -> None:
    """Ben is a member of ann's members-only room; his phone enables push, sets the room to
    `on-mention` in its bookmark and goes away. Ann's plain message wakes nothing; the one that
    names ben's nick pushes once, naming the room. Muted (`never`), even a mention is silent."""
    comp = await ctx.component(APP)
    app = AppServer(comp)
    ann = await ctx.login("ann", "r", plugins=PLUGINS)
    ben = await ctx.login("ben", "phone", plugins=PLUGINS)
    room = f"tea-{ctx.scenario.name}@conference.{ctx.server.domain}"
    B = ctx.jid("ben")

    ctx.step("ann makes a members-only room with ben as a member")
    await ann["xep_0045"].join_muc_wait(room, "ann", maxstanzas=0, timeout=10)
    form = await ann["xep_0045"].get_room_config(room)
    form.set_values({"muc#roomconfig_membersonly": True})
    await ann["xep_0045"].set_room_config(room, form)
    await ann["xep_0045"].set_affiliation(room, "member", jid=B)

    ctx.step("ben's phone enables push, mutes the room to on-mention and goes away")
    iq = ben.make_iq_set()
    ET.SubElement(iq.xml, f"{{{PUSH}}}enable", {"jid": APP, "node": NODE})
    check_eq((await iq.send())["type"], "result", "reply to <enable/>")
    await bookmark(ben, B, room, "on-mention")
    ben_full = str(ben.boundjid)
    await ben.disconnect(wait=2.0)
    await gone(ctx, ann, ben_full)

    ctx.step("a plain message pushes nothing; one naming benny pushes once")
    ann.send_message(mto=room, mbody="the kettle is on", mtype="groupchat")
    ann.send_message(mto=room, mbody="Benny, tea?", mtype="groupchat")
    await eventually(lambda: len(app.publishes) >= 1, "a publish at the app server", timeout=15)
    s = summary(app.publishes[0])
    check_eq(s.get("last-message-body"), ["Benny, tea?"], "the push is for the mention")
    check_eq(s.get("last-message-sender"), [room], "the push names the room")
    check_eq(s.get("message-count"), ["1"], "message-count")
    check_eq(app.publishes[0].xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish").get("node"), NODE, "node")

    ctx.step("muted: even a mention wakes nothing")
    ben2 = await ctx.login("ben", "desk", plugins=PLUGINS)
    await bookmark(ben2, B, room, "never")
    desk_full = str(ben2.boundjid)
    await ben2.disconnect(wait=2.0)
    await gone(ctx, ann, desk_full)
    ann.send_message(mto=room, mbody="benny? anyone?", mtype="groupchat")
    # Unmuted again from the desk: the next message is the only further push, so one for the
    # muted mention would have come before it.
    ben3 = await ctx.login("ben", "desk2", plugins=PLUGINS)
    await bookmark(ben3, B, room, "always")
    desk2_full = str(ben3.boundjid)
    await ben3.disconnect(wait=2.0)
    await gone(ctx, ann, desk2_full)
    ann.send_message(mto=room, mbody="biscuits too", mtype="groupchat")
    await eventually(lambda: len(app.publishes) >= 2, "a second publish", timeout=15)
    await sync(ann)
    await sync(comp, ctx.server.domain)
    bodies = [summary(p).get("last-message-body") for p in app.publishes]
    check_eq(bodies, [["Benny, tea?"], ["biscuits too"]], "pushed messages")
