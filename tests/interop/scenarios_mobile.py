"""Mobile delivery scenarios (issue 4): XEP-0198 resume after the transport is aborted,
XEP-0280 carbons, XEP-0313 paging, XEP-0352 client state indication."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slixmpp import JID

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

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
CHATSTATES = "http://jabber.org/protocol/chatstates"
SID = "urn:xmpp:sid:0"


@scenario("sm_resume", issue=4, users=["kate", "leo"])
async def sm_resume(ctx: Ctx) -> None:
    """XEP-0198: the transport is aborted, messages sent meanwhile arrive exactly once after
    <resume/>, and what was acked before is not sent again."""
    kate = await ctx.login("kate", "phone", plugins=("xep_0198",))
    sm_id = await sm_enabled(kate)
    leo = await ctx.login("leo", "desk")
    ki, li = ctx.inbox(kate), ctx.inbox(leo)
    kate_full = str(kate.boundjid)

    ctx.step("a message before the cut, acked")
    send_chat(leo, kate_full, "before")
    await ki.until(is_chat("before"), "'before' at kate")
    await settle_acks(kate)

    ctx.step("transport aborted; leo writes meanwhile")
    await abort_transport(kate)
    away = ["while away 1", "while away 2"]
    for b in away:
        send_chat(leo, kate_full, b)
    await sync(leo)
    errors = li.matching(lambda s: s.name == "message" and s["type"] == "error")
    check(not errors, f"leo got errors writing to kate's hibernated session: {errors}")

    ctx.step("kate resumes")
    await ctx.start(kate, expect="session_resumed")
    check_eq(kate["xep_0198"].sm_id, sm_id, "resumption id after resume")
    check_eq(str(kate.boundjid), kate_full, "full JID after resume")
    got = await ki.until(lambda s: is_chat()(s) and s["body"] in away, "retransmitted messages", n=2)
    check_eq([m["body"] for m in got], away, "messages sent while away, in order")

    ctx.step("the session is live again; nothing was duplicated")
    send_chat(leo, kate_full, "after")
    await ki.until(is_chat("after"), "'after' at kate")
    await sync(kate)
    for b in ["before", *away, "after"]:
        check_eq(len(ki.matching(is_chat(b))), 1, f"copies of {b!r} at kate")


def carbon(s, kind: str):
    """The message forwarded in a `kind` (received/sent) carbon, or None. Reads the XML directly:
    slixmpp's plugin accessors would add an empty element to stanzas that have none."""
    el = s.xml.find(f"{{{CARBONS}}}{kind}")
    if el is None:
        return None
    return el.find(f"{{{FORWARD}}}forwarded/{{jabber:client}}message")


def carbon_of(kind: str, body: str):
    def pred(s) -> bool:
        m = carbon(s, kind) if s.name == "message" else None
        b = m.find("{jabber:client}body") if m is not None else None
        return b is not None and b.text == body

    return pred


@scenario("carbons", issue=4, users=["nina", "oscar"])
async def carbons(ctx: Ctx) -> None:
    """XEP-0280: received and sent copies reach the user's other carbons-enabled resource;
    a <private/> message is not copied."""
    phone = await ctx.login("nina", "phone", plugins=("xep_0280",))
    await phone["xep_0280"].enable()
    desktop = await ctx.login("nina", "desktop")
    oscar = await ctx.login("oscar", "r")
    pi = ctx.inbox(phone)
    N = ctx.jid("nina")

    ctx.step("received carbon")
    send_chat(oscar, str(desktop.boundjid), "to the desktop")
    await ctx.inbox(desktop).until(is_chat("to the desktop"), "message at the desktop")
    [c] = await pi.until(carbon_of("received", "to the desktop"), "received carbon at the phone")
    check_eq(str(c["from"]), N, "a carbon comes from the user's bare JID")
    inner = carbon(c, "received")
    check_eq(inner.get("from"), str(oscar.boundjid), "forwarded message's from")
    check_eq(inner.get("to"), str(desktop.boundjid), "forwarded message's to")

    ctx.step("sent carbon")
    send_chat(desktop, str(oscar.boundjid), "from the desktop")
    await ctx.inbox(oscar).until(is_chat("from the desktop"), "message at oscar")
    [c] = await pi.until(carbon_of("sent", "from the desktop"), "sent carbon at the phone")
    check_eq(str(c["from"]), N, "a carbon comes from the user's bare JID")

    ctx.step("private messages are not copied")
    m = desktop.make_message(mto=str(oscar.boundjid), mbody="private one", mtype="chat")
    m.xml.append(ET.Element(f"{{{CARBONS}}}private"))
    m.xml.append(ET.Element("{urn:xmpp:hints}no-copy"))
    m.send()
    send_chat(desktop, str(oscar.boundjid), "public after private")
    await ctx.inbox(oscar).until(is_chat("private one"), "private message at oscar")
    await pi.until(carbon_of("sent", "public after private"), "carbon of the next message")
    check(not pi.matching(carbon_of("sent", "private one")), "a <private/> message was carbon-copied")

    ctx.step("a resource without carbons gets no copies")
    send_chat(oscar, str(phone.boundjid), "to the phone")
    await pi.until(is_chat("to the phone"), "message at the phone")
    send_chat(oscar, str(desktop.boundjid), "marker")
    await ctx.inbox(desktop).until(is_chat("marker"), "marker at the desktop")
    check(
        not ctx.inbox(desktop).matching(carbon_of("received", "to the phone")),
        "the desktop never enabled carbons but got one",
    )


@scenario("mam_paging", issue=4, users=["pat", "quinn"])
async def mam_paging(ctx: Ctx) -> None:
    """XEP-0313 with XEP-0059 paging: ten messages read back three at a time, in order, with
    <fin complete='true'/> only on the last page; stanza-ids match the archive ids."""
    pat = await ctx.login("pat", "r", plugins=("xep_0313", "xep_0059", "xep_0359"))
    quinn = await ctx.login("quinn", "r", plugins=("xep_0313", "xep_0059"))
    P, Q = ctx.jid("pat"), ctx.jid("quinn")
    bodies = [f"mam {i}" for i in range(10)]
    for b in bodies:
        send_chat(quinn, str(pat.boundjid), b)
    live = await ctx.inbox(pat).until(lambda s: is_chat()(s) and s["body"] in bodies, "live copies", n=10)
    live_ids = {}
    for m in live:
        sid = [e for e in m.xml.findall(f"{{{SID}}}stanza-id") if e.get("by") == P]
        check(sid, f"live message lacks a stanza-id by {P}: {m}")
        live_ids[m["body"]] = sid[0].get("id")

    ctx.step("forward paging, 3 per page")
    got, ids, after, pages, completes = [], [], None, 0, []
    while pages < 10:
        rsm = {"max": 3}
        if after:
            rsm["after"] = after
        iq = await pat["xep_0313"].retrieve(with_jid=JID(Q), rsm=rsm)
        results = iq["mam"]["results"]
        for r in results:
            fwd = r["mam_result"]["forwarded"]["stanza"]
            got.append(fwd["body"])
            ids.append(r["mam_result"]["id"])
        pages += 1
        fin = iq.xml.find("{urn:xmpp:mam:2}fin")
        check(fin is not None, f"page {pages} has no <fin/>: {iq}")
        completes.append(fin.get("complete") in ("true", "1"))
        if completes[-1]:
            break
        last = fin.find("{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}last")
        check(last is not None and last.text, f"page {pages} has no <last/>: {iq}")
        after = last.text
    check_eq(got, bodies, "archived bodies, oldest first")
    check_eq(pages, 4, "pages of 3 for 10 messages")
    check_eq(completes, [False, False, False, True], "<fin complete/> per page")
    check_eq(len(set(ids)), 10, "distinct archive ids")
    check_eq(ids, [live_ids[b] for b in bodies], "archive ids equal the live stanza-ids")

    ctx.step("backward paging: the last page first")
    newest = [
        r["mam_result"]["forwarded"]["stanza"]["body"]
        async for r in pat["xep_0313"].iterate(with_jid=JID(Q), reverse=True, rsm={"max": 3}, total=3)
    ]
    check_eq(newest, ["mam 9", "mam 8", "mam 7"], "newest three, newest first")

    ctx.step("the sender's archive has them too")
    iq = await quinn["xep_0313"].retrieve(with_jid=JID(P), rsm={"max": 20})
    check_eq([r["mam_result"]["forwarded"]["stanza"]["body"] for r in iq["mam"]["results"]], bodies, "quinn's archive")


def chatstate(state: str):
    def pred(s) -> bool:
        return s.name == "message" and s.xml.find(f"{{{CHATSTATES}}}{state}") is not None

    return pred


@scenario("csi", issue=4, users=["rita", "sam"])
async def csi(ctx: Ctx) -> None:
    """XEP-0352: while inactive, chat states and presence are held; a message with a body
    flushes them in order; <active/> makes delivery immediate again."""
    # Barriers on rita's side use XEP-0198 <r/>/<a/>, which bypass CSI: an IQ reply to her
    # would itself be important and flush the buffer (as in Prosody's mod_csi_simple).
    rita = await ctx.login("rita", "phone", plugins=("xep_0352", "xep_0198"))
    # slixmpp handles the csi feature after bind, possibly after session_start.
    await eventually(lambda: rita["xep_0352"].enabled, "CSI advertised and seen by slixmpp")
    await sm_enabled(rita)
    sam = await ctx.login("sam", "r")
    ri = ctx.inbox(rita)
    rita_full = str(rita.boundjid)

    rita["xep_0352"].send_inactive()
    await settle_acks(rita)

    ctx.step("unimportant stanzas while inactive are held")
    m = sam.make_message(mto=rita_full, mtype="chat")
    m.xml.append(ET.Element(f"{{{CHATSTATES}}}composing"))
    m.send()
    sam.send_presence(pto=rita_full, pstatus="directed")
    await sync(sam)
    await settle_acks(rita)
    check(not ri.matching(chatstate("composing")), "a chat state was delivered to an inactive client")
    check(
        not ri.matching(lambda s: s.name == "presence" and s["status"] == "directed"),
        "a presence was delivered to an inactive client",
    )

    ctx.step("a message with a body flushes them, in order")
    send_chat(sam, rita_full, "important")
    await ri.until(is_chat("important"), "the important message")
    order = [
        i
        for i, s in enumerate(ri.items)
        if chatstate("composing")(s) or is_chat("important")(s) or (s.name == "presence" and s["status"] == "directed")
    ]
    kinds = [
        "composing" if chatstate("composing")(ri.items[i]) else "presence" if ri.items[i].name == "presence" else "body"
        for i in order
    ]
    check_eq(kinds, ["composing", "presence", "body"], "flushed stanzas in the order they were sent")

    ctx.step("active again: chat states flow at once")
    rita["xep_0352"].send_active()
    await sync(rita)
    m = sam.make_message(mto=rita_full, mtype="chat")
    m.xml.append(ET.Element(f"{{{CHATSTATES}}}paused"))
    m.send()
    await ri.until(chatstate("paused"), "a chat state while active")
