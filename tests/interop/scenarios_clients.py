"""Scenarios with end-user clients we did not write (issue 15): profanity in tmux against the
server with its defaults, talking to a slixmpp user, in clear and with OMEMO. The screen profanity showed is printed
into the test log at the end of each scenario."""

from __future__ import annotations

import re

import omemo_peer
import profanity
from kit import Ctx, ScenarioFailed, check, is_chat, scenario, send_chat
from scenarios_pep import subscribe_both


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


@scenario("profanity_omemo", issue=15, users=["alice", "bob"], timeout=120.0)
async def profanity_omemo(ctx: Ctx) -> None:
    """profanity generates its OMEMO keys (`/omemo gen`, blind trust), starts an OMEMO chat
    with a slixmpp-omemo user and exchanges an encrypted message both ways: the slixmpp user
    decrypts profanity's text, profanity shows the slixmpp user's decrypted text."""
    A, B = ctx.jid("alice"), ctx.jid("bob")
    # Contacts, as in a real chat: PEP notifications (device lists) follow the subscription.
    subscribe_both(ctx, "alice", "bob")
    bob = await omemo_peer.omemo_client(ctx, "bob", "desk")
    p = _started(ctx, "alice")
    try:
        ctx.step("profanity logs in")
        await p.wait_for(r"logged in successfully", "the login")
        ctx.step("profanity trusts every key and generates its own (device list and bundle published)")
        p.type("/omemo trustmode blind")
        await p.wait_for(r"ALL OMEMO fingerprints will be trusted automatically", "the trust mode")
        p.type("/omemo gen")
        await p.wait_for(r"OMEMO crytographic materials generated", "the key generation", timeout=60)
        ctx.step("profanity starts an OMEMO chat with bob and fetches his device list and bundle")
        p.type(f"/omemo start {B}")
        # profanity fetches bob's devices in the background and says nothing when done; its
        # fingerprint command answers once a bundle is in. Asked again until then (bounded).
        fingerprint = rf"{re.escape(B)}'s OMEMO fingerprint: [0-9a-f]{{8}}"
        for attempt in range(40):
            p.type(f"/omemo fingerprint {B}")
            try:
                await p.wait_for(fingerprint, "bob's fingerprint", timeout=0.5)
                break
            except ScenarioFailed:
                if attempt == 39:
                    raise
        ctx.step("profanity → bob, encrypted")
        p.type("Hello bob, OMEMO from profanity")
        await omemo_peer.receive_decrypted(ctx, bob, A, "Hello bob, OMEMO from profanity")
        ctx.step("bob → profanity, encrypted; profanity shows the decrypted text")
        await omemo_peer.send_encrypted(bob, A, "Hi profanity, decrypted by you")
        await p.wait_for(r"Hi profanity, decrypted by you", "bob's decrypted message")
        check("This message is OMEMO encrypted" not in p.screen, "profanity showed the fallback body")
    finally:
        p.capture()
        _log_screen(p)
        p.stop()
