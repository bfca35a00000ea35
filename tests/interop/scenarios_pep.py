"""PEP scenarios (issue 15): XEP-0163 through slixmpp's own plugins (xep_0060, xep_0163,
xep_0084, xep_0115) — an avatar published by one user reaches a contact whose entity
capabilities ask for `urn:xmpp:avatar:metadata+notify` — and OMEMO (XEP-0384) between two
Herald users with slixmpp-omemo: device lists and bundles published and fetched over PEP, one
encrypted message that decrypts to the sent text."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import omemo_peer
from kit import Ctx, ScenarioFailed, check, check_eq, scenario, sync
from omemo_peer import PEP_PLUGINS

AVATAR_METADATA = "urn:xmpp:avatar:metadata"


def subscribe_both(ctx: Ctx, a: str, b: str) -> None:
    """Mutual presence subscription through the command line (the running server learns of it)."""
    code, out = ctx.server.cli("roster", "subscribe", ctx.jid(a), ctx.jid(b))
    check_eq(code, 0, f"herald roster subscribe: {out}")


def pep_event(node: str):
    """A PEP notification (headline with a pubsub#event) about `node`."""

    def pred(s: Any) -> bool:
        if s.name != "message":
            return False
        items = s.xml.find("{http://jabber.org/protocol/pubsub#event}event/"
                           "{http://jabber.org/protocol/pubsub#event}items")
        return items is not None and items.get("node") == node

    return pred


@scenario("pep_avatar", issue=15, users=["alice", "bob"])
async def pep_avatar(ctx: Ctx) -> None:
    """Alice publishes an XEP-0084 avatar (data, then metadata); Bob, a contact whose caps
    list urn:xmpp:avatar:metadata+notify, gets the metadata notification and downloads the
    data from Alice's PEP service; a resource of Bob without the interest gets nothing."""
    subscribe_both(ctx, "alice", "bob")
    A = ctx.jid("alice")
    bob = await ctx.login("bob", "phone", plugins=(*PEP_PLUGINS, "xep_0084"))
    plain = await ctx.login("bob", "plain", plugins=("xep_0115",))
    alice = await ctx.login("alice", "desk", plugins=(*PEP_PLUGINS, "xep_0084"))
    await sync(bob)
    await sync(plain)

    ctx.step("alice's disco says she is a PEP service")
    info = await bob["xep_0030"].get_info(jid=A)
    identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    check(("pubsub", "pep") in identities, f"pubsub/pep identity on the account: {info}")
    features = set(info["disco_info"]["features"])
    for f in ("http://jabber.org/protocol/pubsub#publish", "http://jabber.org/protocol/pubsub#publish-options"):
        check(f in features, f"{f} advertised: {sorted(features)}")

    ctx.step("alice publishes her avatar")
    data = bytes(range(256)) * 8
    avatar_id = hashlib.sha1(data).hexdigest()
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_meta(msg: Any) -> None:
        if str(msg["from"].bare) == A and not got.done():
            got.set_result(msg)

    bob.add_event_handler("avatar_metadata_publish", on_meta)
    await alice["xep_0084"].publish_avatar(data)
    await alice["xep_0084"].publish_avatar_metadata(
        [{"id": avatar_id, "type": "image/png", "bytes": len(data)}]
    )

    ctx.step("bob gets the metadata notification")
    try:
        msg = await asyncio.wait_for(got, 10)
    except asyncio.TimeoutError:
        raise ScenarioFailed("no avatar metadata notification at bob") from None
    item = msg["pubsub_event"]["items"]["item"]
    check_eq(item["id"], avatar_id, "metadata item id")
    info_el = item.xml.find(f"{{{AVATAR_METADATA}}}metadata/{{{AVATAR_METADATA}}}info")
    check(info_el is not None and info_el.get("id") == avatar_id, f"metadata info: {item}")

    ctx.step("bob downloads the data by id")
    r = await bob["xep_0084"].retrieve_avatar(A, avatar_id)
    import base64

    payload = r["pubsub"]["items"]["item"].xml.find("{urn:xmpp:avatar:data}data")
    check(payload is not None, f"avatar data item: {r}")
    check_eq(base64.b64decode(payload.text or ""), data, "avatar bytes")

    ctx.step("bob's resource without +notify got no notification")
    await sync(alice)
    await sync(plain)
    check_eq(ctx.inbox(plain).matching(pep_event(AVATAR_METADATA)), [], "notifications at bob/plain")


# --------------------------------------------------------------------------- OMEMO


@scenario("omemo", issue=15, users=["alice", "bob"], timeout=90.0)
async def omemo(ctx: Ctx) -> None:
    """Two Herald users with slixmpp-omemo publish their OMEMO device lists and bundles to
    PEP, fetch each other's, and exchange an encrypted message that decrypts to the text
    sent, both ways."""
    from slixmpp.jid import JID

    subscribe_both(ctx, "alice", "bob")
    A, B = ctx.jid("alice"), ctx.jid("bob")
    alice = await omemo_peer.omemo_client(ctx, "alice", "desk")
    bob = await omemo_peer.omemo_client(ctx, "bob", "phone")

    ctx.step("each device list is on the owner's PEP node, readable by the other")
    for reader, owner in ((alice, B), (bob, A)):
        for node in (omemo_peer.DEVICES, omemo_peer.LEGACY_DEVICES):
            r = await reader["xep_0060"].get_items(JID(owner), node, max_items=1)
            check(len(r["pubsub"]["items"]) == 1, f"{node} of {owner}: {r}")

    ctx.step("alice → bob, encrypted")
    await omemo_peer.exchange(ctx, alice, bob, "Hello Bob, this is secret")
    ctx.step("bob → alice, encrypted")
    await omemo_peer.exchange(ctx, bob, alice, "Hi Alice, read you")
