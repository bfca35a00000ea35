"""Bookmarks scenarios (issue 15, item 4): XEP-0402 PEP native bookmarks synced between two
resources of one account through slixmpp's own plugins (xep_0060 publish with xep_0402's
<conference/> payload and the XEP's publish-options, xep_0163 +notify, xep_0115 caps), and
an old-style XEP-0048 bookmark written to XEP-0049 private storage (xep_0048 over xep_0049)
seen as a XEP-0402 bookmark by the other resource (XEP-0402 §5.3 compat)."""

from __future__ import annotations

from typing import Any

from kit import Ctx, check, check_eq, scenario, sync

BOOKMARKS = "urn:xmpp:bookmarks:1"
PLUGINS = ("xep_0004", "xep_0060", "xep_0163", "xep_0115", "xep_0402", "xep_0048", "xep_0049")


def bookmark_event(kind: str, room: str):
    """A PEP notification about the bookmarks node with an <item/> or <retract/> for `room`."""
    ev = "{http://jabber.org/protocol/pubsub#event}"

    def pred(s: Any) -> bool:
        if s.name != "message":
            return False
        items = s.xml.find(f"{ev}event/{ev}items")
        if items is None or items.get("node") != BOOKMARKS:
            return False
        return any(i.get("id") == room for i in items.findall(f"{ev}{kind}"))

    return pred


async def bookmarks_client(ctx: Ctx, user: str, resource: str):
    """Logged in, with caps asking for bookmark notifications, available; the server has
    asked what the caps mean and has the answer."""
    c = await ctx.login(user, resource, plugins=PLUGINS, presence=False)
    c["xep_0163"].add_interest(BOOKMARKS)
    await c["xep_0115"].update_caps(broadcast=False)
    await ctx.available(c)
    # The server asks the new caps `ver` while it handles the presence, before the first
    # ping's answer; the client has answered before it sends the second ping.
    await sync(c)
    await sync(c)
    return c


async def items(c, owner: str) -> dict[str, Any]:
    r = await c["xep_0060"].get_items(owner, BOOKMARKS)
    return {i["id"]: i["conference"] for i in r["pubsub"]["items"]}


@scenario("bookmarks_sync", issue=15, users=["alice"])
async def bookmarks_sync(ctx: Ctx) -> None:
    """Alice's desk adds a XEP-0402 bookmark with the publish-options Conversations and Gajim
    send; her phone gets the notification and reads it back. Her phone then writes old-style
    XEP-0048 bookmarks to private storage without the desk's room: the desk is notified of the
    new room and of the removed one, and reads the result as XEP-0402 bookmarks."""
    A = ctx.jid("alice")
    desk = await bookmarks_client(ctx, "alice", "desk")
    phone = await bookmarks_client(ctx, "alice", "phone")

    ctx.step("the account announces the private-XML conversion")
    info = await phone["xep_0030"].get_info(jid=A)
    check(f"{BOOKMARKS}#compat" in info["disco_info"]["features"], f"#compat on the account: {info}")

    ctx.step("desk publishes a XEP-0402 bookmark")
    item = desk["xep_0060"].stanza.Item()
    conf = item["conference"]
    conf["name"] = "The Room"
    conf["autojoin"] = True
    conf["nick"] = "al"
    form = desk["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in (
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ):
        form.add_field(var=var, value=value)
    r = await desk["xep_0060"].publish(A, BOOKMARKS, id="room@muc.localhost", payload=conf, options=form)
    check_eq(r["type"], "result", "publish result")

    ctx.step("phone gets the notification and reads the bookmark back")
    await ctx.inbox(phone).until(bookmark_event("item", "room@muc.localhost"), "the bookmark notification")
    got = await items(phone, A)
    check_eq(sorted(got), ["room@muc.localhost"], "bookmark ids at the phone")
    check_eq(got["room@muc.localhost"]["name"], "The Room", "bookmark name")
    check_eq(got["room@muc.localhost"]["autojoin"], True, "bookmark autojoin")
    check_eq(got["room@muc.localhost"]["nick"], "al", "bookmark nick")

    ctx.step("phone reads the bookmarks the old way (XEP-0048 in private storage)")
    old = await phone["xep_0048"].get_bookmarks(method="xep_0049")
    confs = old["private"]["bookmarks"]["conferences"]
    check_eq([(str(c["jid"]), c["name"], c["nick"]) for c in confs],
             [("room@muc.localhost", "The Room", "al")], "private-XML bookmarks")

    ctx.step("phone writes old-style bookmarks: another room, without the desk's")
    from slixmpp.plugins.xep_0048.stanza import Bookmarks

    b = Bookmarks()
    b.add_conference("other@muc.localhost", "ally", name="Other", autojoin=False)
    await phone["xep_0048"].set_bookmarks(b, method="xep_0049")

    ctx.step("desk is notified of both changes and reads them as XEP-0402 bookmarks")
    await ctx.inbox(desk).until(bookmark_event("item", "other@muc.localhost"), "the new room's notification")
    await ctx.inbox(desk).until(bookmark_event("retract", "room@muc.localhost"), "the removed room's retraction")
    got = await items(desk, A)
    check_eq(sorted(got), ["other@muc.localhost"], "bookmark ids at the desk")
    check_eq(got["other@muc.localhost"]["name"], "Other", "converted name")
    check_eq(got["other@muc.localhost"]["nick"], "ally", "converted nick")
    check_eq(got["other@muc.localhost"]["autojoin"], False, "converted autojoin")


@scenario("bookmarks_legacy_pep", issue=15, users=["dan"])
async def bookmarks_legacy_pep(ctx: Ctx) -> None:
    """XEP-0411: an old client using XEP-0048 bookmarks in PEP (slixmpp's xep_0048 over
    xep_0223, node `storage:bookmarks`) and a XEP-0402 client of the same account see the same
    bookmarks, both ways, each notified of what the other wrote."""
    D = ctx.jid("dan")
    new = await bookmarks_client(ctx, "dan", "new")
    old = await ctx.login("dan", "old", plugins=(*PLUGINS, "xep_0223"), presence=False)
    old["xep_0163"].add_interest("storage:bookmarks")
    await old["xep_0115"].update_caps(broadcast=False)
    await ctx.available(old)
    await sync(old)
    await sync(old)

    ctx.step("the account announces the conversion")
    info = await old["xep_0030"].get_info(jid=D)
    feats = info["disco_info"]["features"]
    check("urn:xmpp:bookmarks-conversion:0" in feats, f"XEP-0411 feature on the account: {feats}")

    ctx.step("the XEP-0402 client adds a bookmark; the old client is notified and reads it")
    item = new["xep_0060"].stanza.Item()
    conf = item["conference"]
    conf["name"] = "Native"
    conf["autojoin"] = True
    r = await new["xep_0060"].publish(D, BOOKMARKS, id="native@muc.localhost", payload=conf)
    check_eq(r["type"], "result", "XEP-0402 publish result")
    await ctx.inbox(old).until(legacy_event("native@muc.localhost"), "the storage:bookmarks notification")
    got = await old["xep_0048"].get_bookmarks(method="xep_0223")
    confs = got["pubsub"]["items"]["item"]["bookmarks"]["conferences"]
    check_eq([(str(c["jid"]), c["name"]) for c in confs], [("native@muc.localhost", "Native")], "XEP-0048 PEP read")

    ctx.step("the old client publishes its list with another room; the XEP-0402 client has both")
    from slixmpp.plugins.xep_0048.stanza import Bookmarks

    b = Bookmarks()
    b.add_conference("native@muc.localhost", "", name="Native", autojoin=True)
    b.add_conference("legacy@muc.localhost", "dd", name="Legacy", autojoin=False)
    await old["xep_0048"].set_bookmarks(b, method="xep_0223")
    await ctx.inbox(new).until(bookmark_event("item", "legacy@muc.localhost"), "the new room's XEP-0402 notification")
    got = await items(new, D)
    check_eq(sorted(got), ["legacy@muc.localhost", "native@muc.localhost"], "XEP-0402 ids")
    check_eq(got["legacy@muc.localhost"]["name"], "Legacy", "converted name")
    check_eq(got["legacy@muc.localhost"]["nick"], "dd", "converted nick")


def legacy_event(room: str):
    """A `storage:bookmarks` notification whose <storage/> lists `room`."""
    ev = "{http://jabber.org/protocol/pubsub#event}"

    def pred(s: Any) -> bool:
        if s.name != "message":
            return False
        items = s.xml.find(f"{ev}event/{ev}items")
        if items is None or items.get("node") != "storage:bookmarks":
            return False
        return any(c.get("jid") == room for c in items.iter("{storage:bookmarks}conference"))

    return pred
