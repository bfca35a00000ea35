"""The invite landing page (issue 17 item 5) in a real browser: Debian's chromium, headless,
driven over the Chrome DevTools protocol (aiohttp's WebSocket client, already a test
dependency: no browser automation package). The operator makes an invite with `herald invite
create` and opens the `page` line it prints; the browser loads it, a screenshot is kept under
target/interop-artifacts/, a person types a username and password and presses Enter, and
slixmpp then logs in with the new account. The invite (one use) is then used up: the same
link shows the "expired or already used" page with 410."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from kit import WAIT, Ctx, ScenarioFailed, check, check_eq, eventually, scenario

CONFIG = "\n[registration]\nenabled = true\ninvite_only = true\n"

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def artifacts() -> Path:
    """target/interop-artifacts next to the herald binary's target directory."""
    binary = Path(os.environ.get("HERALD_BIN", "target/debug/herald")).resolve()
    d = binary.parent.parent / "interop-artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Browser:
    """One headless chromium and a DevTools session on its first tab."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="herald-chromium-")
        self.proc: subprocess.Popen | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: Any = None
        self.next_id = 0
        self.replies: dict[int, asyncio.Future] = {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.reader: asyncio.Task | None = None

    async def start(self) -> None:
        if not os.path.exists(CHROMIUM):
            raise ScenarioFailed(f"{CHROMIUM} is missing (apt-get install chromium)")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                # The test server's certificate is self-signed.
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Chromium writes the port it chose to this file once it listens; nothing to await.
        port_file = Path(self.profile) / "DevToolsActivePort"
        await eventually(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1,
                         "chromium's DevToolsActivePort")
        port = int(port_file.read_text().splitlines()[0])
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        await self.call("Page.enable")
        await self.call("Network.enable")

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            m = json.loads(msg.data)
            if "id" in m:
                f = self.replies.pop(m["id"], None)
                if f and not f.done():
                    f.set_result(m)
            else:
                await self.events.put(m)

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        f = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = f
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        m = await asyncio.wait_for(f, WAIT)
        if "error" in m:
            raise ScenarioFailed(f"{method}: {m['error']}")
        return m.get("result", {})

    async def until_loaded(self) -> int:
        """Waits for the next page load; returns the HTTP status of its document."""
        status = None
        while True:
            e = await asyncio.wait_for(self.events.get(), WAIT)
            if e["method"] == "Network.responseReceived" and e["params"].get("type") == "Document":
                status = e["params"]["response"]["status"]
            if e["method"] == "Page.loadEventFired":
                if status is None:
                    raise ScenarioFailed("a page loaded without a document response")
                return status

    async def open(self, url: str) -> int:
        await self.call("Page.navigate", url=url)
        return await self.until_loaded()

    async def text(self) -> str:
        """The visible text (the page runs no script; evaluating in DevTools reads it)."""
        r = await self.call("Runtime.evaluate", expression="document.body.innerText")
        return r["result"].get("value", "")

    async def type_into(self, selector: str, text: str) -> None:
        """Focuses the element and types `text` as keyboard input."""
        root = await self.call("DOM.getDocument")
        node = await self.call("DOM.querySelector", nodeId=root["root"]["nodeId"], selector=selector)
        check(node.get("nodeId"), f"no {selector} on the page")
        await self.call("DOM.focus", nodeId=node["nodeId"])
        await self.call("Input.insertText", text=text)

    async def press_enter(self) -> None:
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        await self.call("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **key)

    async def screenshot(self, name: str) -> Path:
        r = await self.call("Page.captureScreenshot", format="png")
        path = artifacts() / name
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def field(out: str, key: str) -> str:
    for line in out.splitlines():
        if line.startswith(key + " "):
            return line[len(key) + 1:]
    raise ScenarioFailed(f"no {key} line in `herald invite create`: {out}")


@scenario("invite_page_browser", issue=17, users=[], timeout=120.0, config=CONFIG)
async def invite_page_browser(ctx: Ctx) -> None:
    """Headless chromium opens the invite page `herald invite create` printed, registers
    through its form; slixmpp logs in with the new account; the used-up link gets 410."""
    code, out = ctx.server.cli("invite", "create", "--uses", "1")
    check_eq(code, 0, f"herald invite create: {out}")
    token, url = field(out, "token"), field(out, "page")
    check(url.endswith(f"/invite/{token}"), f"page URL {url}")

    b = Browser()
    try:
        ctx.step("chromium starts")
        await b.start()

        ctx.step("load the invite page")
        check_eq(await b.open(url), 200, "status of the invite page")
        shot = await b.screenshot("invite_page.png")
        check(shot.stat().st_size > 1000, f"screenshot {shot}")
        text = await b.text()
        for want in ("You have been invited", ctx.server.domain, "Conversations", "Monal",
                     "Create account"):
            check(want in text, f"{want!r} on the page: {text}")
        svg = await b.call("Runtime.evaluate", expression="document.querySelectorAll('.qr svg').length")
        check_eq(svg["result"].get("value"), 1, "QR codes on the page")

        ctx.step("register through the form")
        await b.type_into("#username", "webnewbie")
        await b.type_into("#password", "web-pw-1")
        await b.press_enter()
        check_eq(await b.until_loaded(), 201, "status after submitting the form")
        await b.screenshot("invite_page_registered.png")
        jid = f"webnewbie@{ctx.server.domain}"
        text = await b.text()
        check(jid in text, f"the new address on the page: {text}")

        ctx.step("log in over XMPP with the new account")
        c = ctx.client("webnewbie", "phone", jid=jid, password="web-pw-1")
        await ctx.start(c)
        check_eq(c.boundjid.bare, jid, "logged in as the account made on the page")

        ctx.step("the used-up invite gets a clear page")
        check_eq(await b.open(url), 410, "status of the used-up invite")
        await b.screenshot("invite_page_used.png")
        text = await b.text()
        check("expired or was already used" in text, f"the used-up page: {text}")
        check_eq(await b.open(url.rsplit("/", 1)[0] + "/not-a-token"), 404, "unknown token")
    finally:
        await b.close()
