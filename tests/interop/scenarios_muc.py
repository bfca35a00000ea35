"""Group chat scenarios (issue 16): slixmpp's XEP-0045 client against Herald's MUC service,
with XEP-0313 on the room."""

from __future__ import annotations

from slixmpp.exceptions import IqError, PresenceError

from kit import Ctx, check, check_eq, scenario, sync

MUC_USER = "http://jabber.org/protocol/muc#user"
DELAY = "urn:xmpp:delay"
SID = "urn:xmpp:sid:0"
PLUGINS = ("xep_0045", "xep_0004", "xep_0313", "xep_0059", "xep_0203")


def codes(p) -> set[str]:
    return {s.get("code") for s in p.xml.findall(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")}


def condition(e: Exception) -> str:
    return e.iq["error"]["condition"] if isinstance(e, IqError) else e.presence["error"]["condition"]


def groupchat(body: str):
    return lambda s: s.name == "message" and s["type"] == "groupchat" and s["body"] == body


@scenario("muc", issue=16, users=["ann", "ben", "cid", "dan"], timeout=90.0)
async def muc(ctx: Ctx) -> None:
    """A members-only room: created and configured by its owner, three members join, messages
    and private messages flow, history on join and MUC-MAM paging come from the room's
    archive, a nick conflict, a kick and a ban with their codes, and the room's destruction."""
    ann = await ctx.login("ann", "r", plugins=PLUGINS)
    ben = await ctx.login("ben", "r", plugins=PLUGINS)
    cid = await ctx.login("cid", "r", plugins=PLUGINS)
    dan = await ctx.login("dan", "r", plugins=PLUGINS)
    room = f"tea-{ctx.scenario.name}@conference.{ctx.server.domain}"
    muc_a, muc_b, muc_c, muc_d = (c["xep_0045"] for c in (ann, ben, cid, dan))

    ctx.step("ann creates the room and makes it members-only")
    pres, _subject, _occ, _hist = await muc_a.join_muc_wait(room, "ann", maxstanzas=0, timeout=10)
    check("201" in codes(pres), f"no 201 (room created) in {pres}")
    form = await muc_a.get_room_config(room)
    form.set_values({"muc#roomconfig_membersonly": True, "muc#roomconfig_roomname": "Tea"})
    await muc_a.set_room_config(room, form)
    for u in ("ben", "cid"):
        await muc_a.set_affiliation(room, "member", jid=ctx.jid(u))
    members = await muc_a.get_affiliation_list(room, "member")
    check_eq(sorted(str(j) for j in members), sorted([ctx.jid("ben"), ctx.jid("cid")]), "members")

    ctx.step("a non-member is refused")
    try:
        await muc_d.join_muc_wait(room, "dan", timeout=10)
        check(False, "dan joined a members-only room")
    except PresenceError as e:
        check_eq(condition(e), "registration-required", "dan's refusal")

    ctx.step("two members join; messages reach all three")
    await muc_b.join_muc_wait(room, "ben", maxstanzas=0, timeout=10)
    await muc_c.join_muc_wait(room, "cid", maxstanzas=0, timeout=10)
    bodies = [f"hello {i}" for i in range(5)]
    for b in bodies:
        ann.send_message(mto=room, mbody=b, mtype="groupchat")
    for c in (ann, ben, cid):
        got = await ctx.inbox(c).until(lambda s: s.name == "message" and s["body"] in bodies, "the five messages", n=5)
        check_eq([m["body"] for m in got], bodies, "messages in order")
        for m in got:
            check_eq(str(m["from"]), f"{room}/ann", "from the occupant JID")
            sids = [e for e in m.xml.findall(f"{{{SID}}}stanza-id") if e.get("by") == room]
            check(sids, f"no stanza-id by the room: {m}")

    ctx.step("a private message from ben to cid")
    ben.send_message(mto=f"{room}/cid", mbody="psst", mtype="chat")
    pm = (await ctx.inbox(cid).until(lambda s: s.name == "message" and s["body"] == "psst", "the PM"))[0]
    check_eq(str(pm["from"]), f"{room}/ben", "the PM's sender")

    ctx.step("cid comes back and gets the last three messages as history")
    muc_c.leave_muc(room, "cid")
    await ctx.inbox(ann).until(
        lambda s: s.name == "presence" and str(s["from"]) == f"{room}/cid" and s["type"] == "unavailable",
        "cid leaving",
    )
    _p, _s, _o, history = await muc_c.join_muc_wait(room, "cid", maxstanzas=3, timeout=10)
    check_eq([m["body"] for m in history], bodies[2:], "history on join")
    for m in history:
        check_eq(m.xml.find(f"{{{DELAY}}}delay").get("from"), room, "delay stamped by the room")

    ctx.step("MUC-MAM: the room's archive two at a time")
    got, after, pages = [], None, 0
    while pages < 10:
        rsm = {"max": 2}
        if after:
            rsm["after"] = after
        iq = await ben["xep_0313"].retrieve(jid=room, rsm=rsm)
        got += [r["mam_result"]["forwarded"]["stanza"]["body"] for r in iq["mam"]["results"]]
        pages += 1
        fin = iq.xml.find("{urn:xmpp:mam:2}fin")
        if fin.get("complete") in ("true", "1"):
            break
        after = fin.find("{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}last").text
    check_eq(got, bodies, "archived room messages")
    check_eq(pages, 3, "pages of two for five messages")

    ctx.step("dan is made a member; his nick conflicts with ben's")
    await muc_a.set_affiliation(room, "member", jid=ctx.jid("dan"))
    try:
        await muc_d.join_muc_wait(room, "ben", timeout=10)
        check(False, "dan took ben's nick")
    except PresenceError as e:
        check_eq(condition(e), "conflict", "nick conflict")
    await muc_d.join_muc_wait(room, "dan", maxstanzas=0, timeout=10)

    ctx.step("ann kicks dan, then bans him")
    await muc_a.set_role(room, "dan", "none", reason="out")
    kicked = await ctx.inbox(dan).until(
        lambda s: s.name == "presence" and s["type"] == "unavailable" and "307" in codes(s), "the kick"
    )
    check("110" in codes(kicked[0]), f"the kick is not marked as dan's own: {kicked[0]}")
    await muc_a.set_affiliation(room, "outcast", jid=ctx.jid("dan"))
    try:
        await muc_d.join_muc_wait(room, "dan", timeout=10)
        check(False, "a banned user rejoined")
    except PresenceError as e:
        check_eq(condition(e), "forbidden", "banned rejoin")

    ctx.step("ann destroys the room")
    await muc_a.destroy(room, reason="closing time")
    gone = await ctx.inbox(ben).until(
        lambda s: s.name == "presence"
        and s["type"] == "unavailable"
        and s.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None,
        "the destruction",
    )
    check("closing time" in str(gone[0]), f"no reason in {gone[0]}")
    try:
        await ben["xep_0030"].get_info(jid=room)
        check(False, "the destroyed room still answers")
    except IqError as e:
        check_eq(condition(e), "item-not-found", "disco#info of the destroyed room")
    await sync(ann)


@scenario("muc_avatar", issue=16, users=["amy", "bob"], timeout=60.0)
async def muc_avatar(ctx: Ctx) -> None:
    """XEP-0486 room avatars with slixmpp's XEP-0054 plugin: the owner sets the room's vCard
    (an occupant may not), the other occupant hears status 104, finds the SHA-1 of the photo
    in the room's disco#info and fetches the vCard with the photo."""
    import hashlib

    plugins = PLUGINS + ("xep_0054", "xep_0153")
    amy = await ctx.login("amy", "r", plugins=plugins)
    bob = await ctx.login("bob", "r", plugins=plugins)
    room = f"pics-{ctx.scenario.name}@conference.{ctx.server.domain}"
    image = b"\x89PNG\r\n\x1a\n a room avatar"

    ctx.step("amy creates the room, bob joins")
    await amy["xep_0045"].join_muc_wait(room, "amy", maxstanzas=0, timeout=10)
    await amy["xep_0045"].set_room_config(room, await amy["xep_0045"].get_room_config(room))
    await bob["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=10)
    info = await bob["xep_0030"].get_info(jid=room)
    check("vcard-temp" in info["disco_info"]["features"], "vcard-temp not advertised")

    ctx.step("bob may not set the room's vCard")
    card = bob["xep_0054"].make_vcard()
    card["PHOTO"]["TYPE"] = "image/png"
    card["PHOTO"]["BINVAL"] = image
    try:
        await bob["xep_0054"].publish_vcard(card, jid=room)
        check(False, "a participant set the room's vCard")
    except IqError as e:
        check_eq(condition(e), "forbidden", "bob's set")

    ctx.step("amy sets it; bob hears 104 and finds the hash in disco#info")
    card = amy["xep_0054"].make_vcard()
    card["PHOTO"]["TYPE"] = "image/png"
    card["PHOTO"]["BINVAL"] = image
    await amy["xep_0054"].publish_vcard(card, jid=room)
    await ctx.inbox(bob).until(
        lambda s: s.name == "message" and str(s["from"]) == room and "104" in codes(s),
        "the configuration change (104)",
    )
    info = await bob["xep_0030"].get_info(jid=room)
    form = info["disco_info"].xml.find("{jabber:x:data}x")
    check(form is not None, f"no muc#roominfo form in {info}")
    hashes = [
        v.text
        for f in form.findall("{jabber:x:data}field")
        if f.get("var") == "muc#roominfo_avatarhash"
        for v in f.findall("{jabber:x:data}value")
    ]
    check_eq(hashes, [hashlib.sha1(image).hexdigest()], "muc#roominfo_avatarhash")

    ctx.step("bob fetches the room's vCard")
    iq = await bob["xep_0054"].get_vcard(room)
    check_eq(iq["vcard_temp"]["PHOTO"]["BINVAL"], image, "the photo")
    check_eq(iq["vcard_temp"]["PHOTO"]["TYPE"], "image/png", "its type")
    await sync(amy)
