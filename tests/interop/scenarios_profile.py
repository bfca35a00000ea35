"""Names, avatars and private data (issue 15, items 3 and 4): slixmpp's XEP-0054, XEP-0153 and
XEP-0049 plugins against Herald. The publisher does not load XEP-0153, so the avatar hash its
contact sees in presence is the one the server computed from the stored vCard."""

from __future__ import annotations

import hashlib

from slixmpp.xmlstream import ElementBase

from kit import Ctx, check, check_eq, scenario, sync

UPDATE_PHOTO = "{vcard-temp:x:update}x/{vcard-temp:x:update}photo"
# A few bytes standing for an image: the hash is of the data, whatever it is.
AVATAR = b"\x89PNG\r\n\x1a\n" + b"interop avatar " * 20
AVATAR_2 = b"\x89PNG\r\n\x1a\n" + b"a second avatar " * 20


class Prefs(ElementBase):
    """A client's private preferences element (XEP-0049 stores any namespaced element)."""

    name = "prefs"
    namespace = "urn:herald:interop:prefs"
    plugin_attrib = "herald_prefs"
    interfaces = {"nick"}
    sub_interfaces = {"nick"}


def hash_in(pres) -> str | None:
    el = pres.xml.find(UPDATE_PHOTO)
    return None if el is None else (el.text or "")


def presence_with_hash(full_jid: str, want: str):
    def pred(s) -> bool:
        return (
            s.name == "presence"
            and str(s["from"]) == full_jid
            and s["type"] in ("available", "chat", "away", "xa", "dnd", "")
            and hash_in(s) == want
        )

    return pred


@scenario("vcard_avatar", issue=15, users=["alice", "bob"])
async def vcard_avatar(ctx: Ctx) -> None:
    """Alice publishes a vCard with a photo (xep_0054); Bob, her contact, sees its SHA-1 in her
    presence (xep_0153's vcard_avatar_update) without Alice's client computing it, fetches the
    vCard and finds the photo whose hash that is; a new photo reaches Bob the same way."""
    A, B = ctx.jid("alice"), ctx.jid("bob")
    code, out = ctx.server.cli("roster", "subscribe", A, B)
    check(code == 0, f"herald roster subscribe: {out}")

    bob = await ctx.login("bob", "phone", plugins=("xep_0054", "xep_0153"))
    updates = []
    bob.add_event_handler("vcard_avatar_update", lambda p: updates.append(p))
    alice = await ctx.login("alice", "laptop", plugins=("xep_0054",), presence=False)
    await ctx.available(alice)
    bi = ctx.inbox(bob)
    alice_full = str(alice.boundjid)

    ctx.step("alice publishes her vCard with a photo")
    vcard = alice["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Interop"
    vcard["NICKNAME"] = "alice"
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = AVATAR
    await alice["xep_0054"].publish_vcard(vcard)

    want = hashlib.sha1(AVATAR).hexdigest()
    ctx.step("bob sees the photo hash in alice's presence")
    [p] = await bi.until(presence_with_hash(alice_full, want), "alice's presence with her photo hash")
    check(any(hash_in(u) == want for u in updates), f"xep_0153 reported no update with {want}: {updates}")

    ctx.step("bob fetches alice's vCard; its photo has that hash")
    iq = await bob["xep_0054"].get_vcard(A, cached=False)
    card = iq["vcard_temp"]
    check_eq(card["FN"], "Alice Interop", "FN")
    data = card["PHOTO"]["BINVAL"]
    check_eq(hashlib.sha1(data).hexdigest(), want, "SHA-1 of the fetched photo")

    ctx.step("a new photo: bob sees the new hash")
    vcard["PHOTO"]["BINVAL"] = AVATAR_2
    await alice["xep_0054"].publish_vcard(vcard)
    want2 = hashlib.sha1(AVATAR_2).hexdigest()
    await bi.until(presence_with_hash(alice_full, want2), "alice's presence with the new hash")

    ctx.step("bob cannot change alice's vCard")
    other = bob["xep_0054"].make_vcard()
    other["FN"] = "Mallory"
    try:
        await bob["xep_0054"].publish_vcard(other, jid=A)
        raise AssertionError("bob set alice's vCard")
    except Exception as e:  # noqa: BLE001 - the IqError is what we expect
        check("forbidden" in str(getattr(e, "condition", e)), f"bob's set: {e!r}")
    iq = await bob["xep_0054"].get_vcard(A, cached=False)
    check_eq(iq["vcard_temp"]["FN"], "Alice Interop", "FN after bob's attempt")


@scenario("private_storage", issue=15, users=["carol"])
async def private_storage(ctx: Ctx) -> None:
    """Carol stores preferences in private XML storage (xep_0049) from one resource and reads
    them back from another."""
    c1 = await ctx.login("carol", "one", plugins=("xep_0049",))
    c1["xep_0049"].register(Prefs)
    c2 = await ctx.login("carol", "two", plugins=("xep_0049",))
    c2["xep_0049"].register(Prefs)

    ctx.step("nothing stored yet: an empty element")
    r = await c2["xep_0049"].retrieve("herald_prefs")
    check_eq(r["private"]["herald_prefs"]["nick"], "", "nick before any set")

    ctx.step("carol stores her preferences")
    prefs = Prefs()
    prefs["nick"] = "Caz"
    await c1["xep_0049"].store(prefs)
    await sync(c1)

    ctx.step("her other resource reads them")
    r = await c2["xep_0049"].retrieve("herald_prefs")
    check_eq(r["private"]["herald_prefs"]["nick"], "Caz", "nick from the other resource")
