"""Scenarios with end-user clients we did not write (issue 15): profanity in tmux against the
server with its defaults, talking to a slixmpp user. The screen profanity showed is printed
into the test log at the end of each scenario."""

from __future__ import annotations

import profanity
from kit import Ctx, ScenarioFailed, check, is_chat, scenario, send_chat


def _started(ctx: Ctx, user: str) -> profanity.Profanity:
    missing = profanity.available()
    if missing:
        raise ScenarioFailed(f"not installed: {missing} (.ci/run installs profanity and tmux)")
    p = profanity.Profanity(ctx.jid(user), ctx.password(user), ctx.server.host, ctx.server.c2s_port)
    p.start()
    return p


def _log_screen(p: profanity.Profanity) -> None:
    print(f"    --- profanity screen ({p.jid}) ---")
    for line in p.screen.splitlines():
        if line.strip():
            print("    | " + line.rstrip())


@scenario("profanity_chat", issue=15, users=["alice", "bob"], timeout=90.0)
async def profanity_chat(ctx: Ctx) -> None:
    """profanity logs in over STARTTLS with the server's defaults, receives a message from a
    slixmpp user and answers it."""
    A, B = ctx.jid("alice"), ctx.jid("bob")
    bob = await ctx.login("bob", "desk")
    bi = ctx.inbox(bob)
    p = _started(ctx, "alice")
    try:
        ctx.step("profanity logs in")
        await p.wait_for(r"logged in successfully", "the login")
        ctx.step("bob writes to profanity")
        send_chat(bob, A, "hello profanity")
        await p.wait_for(r"chat message.*" + B.split("@")[0] + r"|" + B, "bob's message notice")
        p.type(f"/msg {B}")
        await p.wait_for(r"hello profanity", "bob's message in the chat window")
        ctx.step("profanity answers")
        p.type("hello slixmpp")
        [m] = await bi.until(is_chat("hello slixmpp"), "profanity's answer at bob")
        check(str(m["from"]).startswith(A + "/"), f"from the profanity session: {m['from']}")
    finally:
        p.capture()
        _log_screen(p)
        p.stop()
