"""Issue 11 (no message lost): XEP-0198 sessions of real slixmpp clients across a server
restart. A clean stop (SIGTERM) saves every resumable session, so a client that was asleep
and one that was connected both resume with their old `previd` and get exactly what they had
not acknowledged. After a crash (SIGKILL) the sessions are not restored, and `<resume/>` gets
`<failed h='…'/>` with the h the client needs to know what the server had."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from kit import (
    WAIT,
    Ctx,
    ScenarioFailed,
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


async def restart(ctx: Ctx, kill: bool) -> None:
    restart_fn = ctx.server.restart
    check(restart_fn is not None, "the runner cannot restart the server")
    await asyncio.to_thread(restart_fn, kill)


async def saved_since(ctx: Ctx, account: str, since_ms: int) -> None:
    """Waits until the server has saved `account`'s hibernated session (the save it makes
    when the connection dies) at or after `since_ms`: a crash before that save would be a
    different scenario (a connection the server never saw die). Reads the server's SQLite
    file read-only, as a harness barrier; the clients see nothing of it."""
    db = ctx.server.cert.parent / "herald.sqlite3"

    def saved() -> bool:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as c:
            row = c.execute("SELECT max(saved_at) FROM sm_sessions WHERE account = ?", (account,)).fetchone()
        return row is not None and row[0] is not None and row[0] >= since_ms

    await eventually(saved, f"{account}'s session saved after its connection died")


async def disconnected(c: Any) -> None:
    """Waits until `c` has noticed that its connection is gone."""
    if c.transport is None:
        return
    gone = asyncio.get_running_loop().create_future()
    c.add_event_handler("disconnected", lambda _e=None: gone.done() or gone.set_result(None), disposable=True)
    try:
        await asyncio.wait_for(gone, WAIT)
    except asyncio.TimeoutError:
        raise ScenarioFailed(f"{c.boundjid}: did not notice the server going away") from None


@scenario("sm_restart", issue=11, users=["uma", "vic", "wes"], timeout=120.0)
async def sm_restart(ctx: Ctx) -> None:
    """XEP-0198 across restarts: after SIGTERM a sleeping and a connected client resume with
    their previd and get what they had not acked, once; after SIGKILL <failed h/>."""
    uma = await ctx.login("uma", "phone", plugins=("xep_0198",))
    wes = await ctx.login("wes", "phone", plugins=("xep_0198",))
    vic = await ctx.login("vic", "desk")
    uma_id, wes_id = await sm_enabled(uma), await sm_enabled(wes)
    ui, wi = ctx.inbox(uma), ctx.inbox(wes)
    uma_full, wes_full = str(uma.boundjid), str(wes.boundjid)

    ctx.step("wes gets a message and acks it; uma's phone loses its network")
    send_chat(vic, wes_full, "live 1")
    await wi.until(is_chat("live 1"), "'live 1' at wes")
    await settle_acks(wes)
    await settle_acks(uma)
    await abort_transport(uma)
    send_chat(vic, uma_full, "away 1")
    await sync(vic)

    ctx.step("SIGTERM: the server stops cleanly and starts again")
    wes_gone = asyncio.ensure_future(disconnected(wes))
    await restart(ctx, kill=False)
    await wes_gone
    vic2 = await ctx.login("vic", "desk2")
    send_chat(vic2, uma_full, "away 2")
    send_chat(vic2, wes_full, "live 2")
    await sync(vic2)

    ctx.step("uma resumes her saved session")
    await ctx.start(uma, expect="session_resumed")
    check_eq(uma["xep_0198"].sm_id, uma_id, "uma's resumption id after the restart")
    check_eq(str(uma.boundjid), uma_full, "uma's full JID after the restart")
    away = ["away 1", "away 2"]
    got = await ui.until(lambda s: is_chat()(s) and s["body"] in away, "uma's queued messages", n=2)
    check_eq([m["body"] for m in got], away, "messages queued across the restart, in order")

    ctx.step("wes, connected at the stop, resumes too")
    await ctx.start(wes, expect="session_resumed")
    check_eq(wes["xep_0198"].sm_id, wes_id, "wes's resumption id after the restart")
    await wi.until(is_chat("live 2"), "'live 2' at wes")
    await sync(wes)
    await sync(uma)
    for b in away:
        check_eq(len(ui.matching(is_chat(b))), 1, f"copies of {b!r} at uma")
    for b in ["live 1", "live 2"]:
        check_eq(len(wi.matching(is_chat(b))), 1, f"copies of {b!r} at wes")

    ctx.step("uma sleeps again; SIGKILL")
    await settle_acks(uma)
    sent = uma["xep_0198"].seq
    aborted_at = int(time.time() * 1000)
    await abort_transport(uma)
    await sync(vic2)
    await saved_since(ctx, str(uma.boundjid.bare), aborted_at)
    vic_gone = asyncio.ensure_future(disconnected(vic2))
    wes_gone = asyncio.ensure_future(disconnected(wes))
    await restart(ctx, kill=True)
    await vic_gone
    await wes_gone

    ctx.step("after the crash uma's <resume/> fails with her h; she binds afresh")
    failed: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_failed(stanza: Any) -> None:
        if not failed.done():
            failed.set_result(stanza.xml.get("h"))

    uma.register_handler(
        Callback("interop-sm-failed", MatchXPath("{urn:xmpp:sm:3}failed"), on_failed, instream=True)
    )
    started = asyncio.get_running_loop().create_future()
    uma.add_event_handler("session_start", lambda _e=None: started.done() or started.set_result(None), disposable=True)
    uma.connect(ctx.server.host, ctx.server.c2s_port)
    try:
        h = await asyncio.wait_for(failed, WAIT)
        await asyncio.wait_for(started, WAIT)
    except asyncio.TimeoutError:
        raise ScenarioFailed("no <failed/> and fresh session after the crash") from None
    finally:
        uma.remove_handler("interop-sm-failed")
    check_eq(h, str(sent), "h in <failed/> (the stanzas the server had from uma)")
    check(uma["xep_0198"].sm_id != uma_id, "a new resumption id after the fresh bind")
