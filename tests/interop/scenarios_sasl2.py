"""Issue 18 (a woken phone gets its messages in one round trip): xmpp.js, a client library we
did not write (`@xmpp/client` 0.14 from npm, pinned in xmppjs/package-lock.json), logs in with
XEP-0388 SASL2 + XEP-0386 Bind2 and gets a XEP-0484 FAST token, then after losing its
connection reconnects with the token and resumes inline (XEP-0198 in SASL2): the message sent
while it was away arrives right after `<success/>`. The client side is a node script
(xmppjs/fast_reconnect.mjs) that checks the wire; this scenario runs it against the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from kit import Ctx, ScenarioFailed, check, scenario

XMPPJS = Path(__file__).resolve().parent / "xmppjs"


@scenario("xmppjs_fast_reconnect", issue=18, users=["alice", "bob"], timeout=90.0)
async def xmppjs_fast_reconnect(ctx: Ctx) -> None:
    """@xmpp/client 0.14: SASL2 + Bind2 + FAST token, then a FAST reconnect resuming inline."""
    node = shutil.which("node")
    check(node is not None, "node is not installed (apt-get install nodejs npm)")
    check(
        (XMPPJS / "node_modules" / "@xmpp" / "client").is_dir(),
        "@xmpp/client is not installed: run `npm ci` in tests/interop/xmppjs (.ci/run does)",
    )
    user = lambda u: ctx.jid(u).split("@")[0]  # noqa: E731
    ctx.step("node fast_reconnect.mjs")
    proc = await asyncio.create_subprocess_exec(
        str(node),
        "fast_reconnect.mjs",
        f"xmpp://{ctx.server.host}:{ctx.server.c2s_port}",
        ctx.server.domain,
        user("alice"),
        ctx.password("alice"),
        user("bob"),
        ctx.password("bob"),
        cwd=XMPPJS,
        # The server's certificate is self-signed: trust it for this process only.
        env={**os.environ, "NODE_TLS_REJECT_UNAUTHORIZED": "0", "NODE_NO_WARNINGS": "1"},
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
