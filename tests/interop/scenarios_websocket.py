"""XMPP over WebSocket (RFC 7395): xmpp.js (`@xmpp/client` 0.14 from npm with the `ws` package,
pinned in xmppjs/package-lock.json) logs in over ws:// on the plain HTTP listener, sends and
receives a message, loses its WebSocket and resumes its XEP-0198 session over a new one; the
message sent meanwhile arrives. The client side is xmppjs/websocket_resume.mjs, which checks
the framing and the resumption."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from kit import Ctx, ScenarioFailed, check, scenario

XMPPJS = Path(__file__).resolve().parent / "xmppjs"


@scenario("xmppjs_websocket", issue=0, users=["alice", "bob"], timeout=90.0)
async def xmppjs_websocket(ctx: Ctx) -> None:
    """@xmpp/client 0.14 over WebSocket: login, a message each way, drop, resume."""
    node = shutil.which("node")
    check(node is not None, "node is not installed (apt-get install nodejs npm)")
    for pkg in ("@xmpp/client", "ws"):
        check(
            (XMPPJS / "node_modules" / pkg).is_dir(),
            f"{pkg} is not installed: run `npm ci` in tests/interop/xmppjs (.ci/run does)",
        )
    check(ctx.server.http_plain_port != 0, "the server has no plain HTTP listener")
    user = lambda u: ctx.jid(u).split("@")[0]  # noqa: E731
    ctx.step("node websocket_resume.mjs")
    proc = await asyncio.create_subprocess_exec(
        str(node),
        "websocket_resume.mjs",
        f"ws://{ctx.server.host}:{ctx.server.http_plain_port}/xmpp-websocket",
        ctx.server.domain,
        user("alice"),
        ctx.password("alice"),
        user("bob"),
        ctx.password("bob"),
        cwd=XMPPJS,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ScenarioFailed(f"xmpp.js (exit {proc.returncode}): {text[-3000:]}")
    check("FAIL" not in text and text.count("ok ") == 3, f"unexpected output: {text}")
