"""Instant messaging scenarios (issue 3): mutual presence subscription, presence changes seen
by the contact, and offline storage delivered on return in order with XEP-0203 delay stamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kit import Ctx, check, check_eq, eventually, is_chat, scenario, send_chat, sync

DELAY_NS = "{urn:xmpp:delay}delay"


def presence_from(jid: str, ptype: str | None = None, show: str | None = None):
    """A presence from `jid` (bare: any of its resources) of `ptype` (None: available)."""

    def pred(s) -> bool:
        if s.name != "presence":
            return False
        frm = s["from"]
        if jid != str(frm) and jid != str(frm.bare):
            return False
        typ = s["type"]
        if ptype is None:
            if typ not in ("available", "chat", "away", "xa", "dnd", ""):
                return False
        elif typ != ptype:
            return False
        return show is None or s["show"] == show

    return pred


@scenario("roster_presence_offline", issue=3, users=["juliet", "romeo"])
async def roster_presence_offline(ctx: Ctx) -> None:
    """Two users subscribe to each other, see each other's presence change; one goes offline and
    on return receives the messages sent meanwhile, in order, with delay stamps."""
    J, R = ctx.jid("juliet"), ctx.jid("romeo")
    juliet = await ctx.login("juliet", "balcony", plugins=("xep_0203",), presence=False)
    romeo = await ctx.login("romeo", "garden", plugins=("xep_0203",), presence=False)
    await juliet.get_roster()
    await romeo.get_roster()
    await ctx.available(juliet)
    await ctx.available(romeo)
    ji, ri = ctx.inbox(juliet), ctx.inbox(romeo)

    ctx.step("juliet subscribes to romeo; romeo approves and subscribes back")
    juliet.send_presence(pto=R, ptype="subscribe")
    [req] = await ri.until(presence_from(J, "subscribe"), "juliet's subscription request at romeo")
    check_eq(str(req["from"]), J, "a subscription request comes from the bare JID")
    romeo.send_presence(pto=J, ptype="subscribed")
    romeo.send_presence(pto=J, ptype="subscribe")
    await ji.until(presence_from(R, "subscribed"), "romeo's approval at juliet")
    await ji.until(presence_from(R, "subscribe"), "romeo's request at juliet")
    juliet.send_presence(pto=R, ptype="subscribed")
    await ri.until(presence_from(J, "subscribed"), "juliet's approval at romeo")

    await eventually(
        lambda: juliet.client_roster[R]["subscription"] == "both", "juliet's roster: romeo subscription=both"
    )
    await eventually(
        lambda: romeo.client_roster[J]["subscription"] == "both", "romeo's roster: juliet subscription=both"
    )
    # RFC 6121 §3.1.5/§3.1.6: on approval the contact's current presence is sent to the user.
    await ji.until(presence_from(str(romeo.boundjid)), "romeo's available presence at juliet")
    await ri.until(presence_from(str(juliet.boundjid)), "juliet's available presence at romeo")

    ctx.step("presence changes are seen by the contact")
    juliet.send_presence(pshow="away", pstatus="on the balcony")
    [p] = await ri.until(presence_from(str(juliet.boundjid), show="away"), "juliet's away at romeo")
    check_eq(p["status"], "on the balcony", "status text")
    romeo.send_presence(pshow="dnd", pstatus="climbing")
    await ji.until(presence_from(str(romeo.boundjid), show="dnd"), "romeo's dnd at juliet")

    ctx.step("romeo goes offline; juliet sees it")
    romeo_full = str(romeo.boundjid)
    romeo.disconnect()
    await ji.until(presence_from(romeo_full, "unavailable"), "romeo's unavailable at juliet")

    ctx.step("juliet writes while romeo is away")
    sent_at = datetime.now(timezone.utc)
    bodies = [f"while you were away {i}" for i in range(1, 4)]
    for b in bodies:
        send_chat(juliet, R, b)
    await sync(juliet)
    errors = ji.matching(lambda s: s.name == "message" and s["type"] == "error")
    check(not errors, f"juliet got errors for messages to offline romeo: {errors}")

    ctx.step("romeo returns and gets them in order with delay stamps")
    romeo2 = ctx.client("romeo", "garden2", plugins=("xep_0203",))
    await ctx.start(romeo2)
    await romeo2.get_roster()
    await ctx.available(romeo2)
    r2i = ctx.inbox(romeo2)
    got = await r2i.until(lambda s: is_chat()(s) and s["body"] in bodies, "offline messages at romeo", n=3)
    check_eq([m["body"] for m in got], bodies, "offline messages, in order")
    stamps = []
    for m in got:
        check_eq(str(m["from"].bare), J, "offline message sender")
        check(m.xml.find(DELAY_NS) is not None, f"no XEP-0203 delay on offline message: {m}")
        stamp = m["delay"]["stamp"]
        check(stamp is not None, f"delay without a stamp: {m}")
        check(
            sent_at - timedelta(seconds=5) <= stamp <= datetime.now(timezone.utc) + timedelta(seconds=5),
            f"delay stamp {stamp} is not when the message was sent ({sent_at})",
        )
        stamps.append(stamp)
    check(stamps == sorted(stamps), f"delay stamps out of order: {stamps}")

    # Presence on return: romeo's new resource gets juliet's presence (probe) and she sees him.
    await r2i.until(presence_from(str(juliet.boundjid)), "juliet's presence at returning romeo")
    await ji.until(presence_from(str(romeo2.boundjid)), "returning romeo's presence at juliet")

    ctx.step("delivered offline messages are gone from storage")
    romeo2.disconnect()
    await ji.until(presence_from(str(romeo2.boundjid), "unavailable"), "romeo2's unavailable at juliet")
    romeo3 = ctx.client("romeo", "garden3", plugins=("xep_0203",))
    await ctx.start(romeo3)
    await ctx.available(romeo3)
    send_chat(juliet, str(romeo3.boundjid), "marker")
    r3i = ctx.inbox(romeo3)
    await r3i.until(is_chat("marker"), "marker at romeo's third session")
    again = r3i.matching(lambda s: is_chat()(s) and s["body"] in bodies)
    check(not again, f"offline messages delivered a second time: {[m['body'] for m in again]}")
