"""Test kit for the slixmpp interop scenarios: the scenario registry, a context handing out
clients logged in to the server under test, an inbox that records every stanza a client
receives, and waits driven by those stanzas (no fixed sleeps: a wait ends as soon as the
expected stanza arrives, or fails at its timeout).

This module knows nothing about starting the server; run.py does that and builds a Ctx.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path
from typing import Any, Awaitable, Callable

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

#: How long a single wait (login, a stanza to arrive, an IQ reply) may take.
WAIT = 10.0


class ScenarioFailed(AssertionError):
    """An expectation of a scenario did not hold; the message says which."""


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise ScenarioFailed(msg)


def check_eq(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise ScenarioFailed(f"{what}: expected {want!r}, got {got!r}")


# --------------------------------------------------------------------------- registry


@dataclasses.dataclass
class Scenario:
    name: str
    fn: Callable[["Ctx"], Awaitable[None]]
    issue: int
    users: list[str]
    timeout: float
    doc: str
    #: extra TOML for the server's configuration; scenarios with one get a server of their own
    config: str = ""


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, *, issue: int, users: list[str], timeout: float = 60.0, config: str = ""):
    """Registers a scenario. `users` are short names; each scenario gets its own accounts
    (`<scenario>_<user>@domain`) so scenarios cannot disturb one another. `config` is TOML
    appended to the server's configuration (e.g. "[registration]\nenabled = true\n"): such a
    scenario runs on a server of its own, after the ones sharing the default server."""

    def deco(fn):
        if name in SCENARIOS:
            raise ValueError(f"duplicate scenario {name}")
        SCENARIOS[name] = Scenario(name, fn, issue, users, timeout, (fn.__doc__ or "").strip(), config)
        return fn

    return deco


def account(scenario_name: str, user: str) -> str:
    return f"{scenario_name}_{user}"


def password(scenario_name: str, user: str) -> str:
    return f"pw-{scenario_name}-{user}"


# --------------------------------------------------------------------------- server facts


@dataclasses.dataclass
class Server:
    domain: str
    host: str
    c2s_port: int
    direct_tls_port: int
    component_port: int
    cert: Path
    #: component domain -> secret
    components: dict[str, str]
    #: runs the herald CLI with the server's config; returns (exit code, output)
    cli: Callable[..., tuple[int, str]]
    #: stops the server (SIGTERM, or SIGKILL when True) and starts it again on the same data
    restart: Callable[[bool], None] | None = None
    #: the plain HTTP listener (XMPP over WebSocket at ws://HOST:PORT/xmpp-websocket)
    http_plain_port: int = 0


# --------------------------------------------------------------------------- inbox


class Inbox:
    """Every <message/> and <presence/> a client receives, in arrival order."""

    def __init__(self, xmpp: slixmpp.BaseXMPP, label: str):
        self.items: list[Any] = []
        self._changed = asyncio.Event()
        ns = xmpp.default_ns
        for kind in ("message", "presence"):
            xmpp.register_handler(
                Callback(
                    f"interop-inbox-{kind}-{label}",
                    MatchXPath(f"{{{ns}}}{kind}"),
                    self._add,
                )
            )

    def _add(self, stanza: Any) -> None:
        self.items.append(stanza)
        self._changed.set()

    def matching(self, pred: Callable[[Any], bool]) -> list[Any]:
        return [s for s in self.items if pred(s)]

    async def until(
        self, pred: Callable[[Any], bool], what: str, n: int = 1, timeout: float = WAIT
    ) -> list[Any]:
        """Waits until at least `n` received stanzas satisfy `pred`; returns all of them."""

        async def loop() -> list[Any]:
            while True:
                found = self.matching(pred)
                if len(found) >= n:
                    return found
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            got = "\n    ".join(str(s) for s in self.items[-8:]) or "(nothing)"
            raise ScenarioFailed(
                f"timed out after {timeout}s waiting for {what} "
                f"(have {len(self.matching(pred))}/{n}); last received:\n    {got}"
            ) from None


def is_chat(body: str | None = None) -> Callable[[Any], bool]:
    """A message stanza with a body (equal to `body` if given), not an error."""

    def pred(s: Any) -> bool:
        if s.name != "message" or s["type"] == "error" or not s["body"]:
            return False
        return body is None or s["body"] == body

    return pred


def is_error_stanza(s: Any) -> bool:
    return s["type"] == "error"


# --------------------------------------------------------------------------- clients


class Ctx:
    """What a scenario works with. Clients made here are torn down after the scenario."""

    def __init__(self, server: Server, scenario: Scenario):
        self.server = server
        self.scenario = scenario
        self.clients: list[slixmpp.BaseXMPP] = []
        self.inboxes: dict[int, Inbox] = {}
        self.last_step = "start"

    # -- naming

    def jid(self, user: str) -> str:
        """Bare JID of one of the scenario's users."""
        check(user in self.scenario.users, f"scenario did not declare user {user!r}")
        return f"{account(self.scenario.name, user)}@{self.server.domain}"

    def password(self, user: str) -> str:
        return password(self.scenario.name, user)

    def step(self, text: str) -> None:
        """Records progress, so a timeout can say where the scenario was."""
        self.last_step = text

    def inbox(self, xmpp: slixmpp.BaseXMPP) -> Inbox:
        return self.inboxes[id(xmpp)]

    # -- clients

    def _tls(self, c: slixmpp.ClientXMPP, direct_tls: bool) -> None:
        # Trust exactly the server's self-signed certificate (verification stays on).
        c.ca_certs = self.server.cert
        c.ssl_context = ssl.create_default_context()
        c.enable_direct_tls = direct_tls
        c.enable_starttls = not direct_tls
        c.enable_plaintext = False

    def client(
        self,
        user: str,
        resource: str,
        *,
        plugins: tuple[str, ...] = (),
        mech: str | None = None,
        direct_tls: bool = False,
        password: str | None = None,
        jid: str | None = None,
    ) -> slixmpp.ClientXMPP:
        """A configured, not yet connected client (`jid`: a bare JID that is not one of the
        scenario's users, e.g. an account it is about to register; give `password` then)."""
        c = slixmpp.ClientXMPP(
            f"{jid or self.jid(user)}/{resource}",
            password if password is not None else self.password(user),
            sasl_mech=mech,
        )
        self._tls(c, direct_tls)
        # Subscriptions are driven explicitly by the scenarios, never auto-answered.
        c.auto_authorize = None
        c.auto_subscribe = False
        for p in ("xep_0030", "xep_0199", *plugins):
            c.register_plugin(p)
        c.use_aiodns = False
        self.clients.append(c)
        self.inboxes[id(c)] = Inbox(c, f"{user}-{resource}-{len(self.clients)}")
        c.add_event_handler("ssl_invalid_chain", lambda e: setattr(c, "_interop_ssl_error", e))
        return c

    async def start(
        self,
        c: slixmpp.ClientXMPP,
        *,
        direct_tls: bool = False,
        expect: str = "session_start",
        address: tuple[str, int] | None = None,
    ) -> None:
        """Connects `c` and waits for `expect` (session_start, or session_resumed after an SM
        resume). Fails with the reason if authentication or TLS fails. `address`: another
        server than the one under test (a federation peer)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def ok(_e: Any = None) -> None:
            if not done.done():
                done.set_result(None)

        def bad(reason: str) -> Callable[[Any], None]:
            def f(e: Any = None) -> None:
                if not done.done():
                    extra = getattr(c, "_interop_ssl_error", None)
                    done.set_exception(
                        ScenarioFailed(f"{c.boundjid}: {reason}: {e}" + (f" (TLS: {extra})" if extra else ""))
                    )

            return f

        handlers = [
            (expect, ok),
            ("failed_all_auth", bad("authentication failed")),
            ("no_auth", bad("no usable SASL mechanism")),
            ("connection_failed", bad("connection failed")),
            ("disconnected", bad("disconnected before " + expect)),
            ("sm_failed", bad("stream management failed")),
        ]
        for name, h in handlers:
            c.add_event_handler(name, h)
        try:
            host = self.server.host
            if address is not None:
                host, port = address
            elif c.is_component:
                port = self.server.component_port
            elif direct_tls:
                port = self.server.direct_tls_port
            else:
                port = self.server.c2s_port
            c.connect(host, port)
            await asyncio.wait_for(done, WAIT)
        except asyncio.TimeoutError:
            raise ScenarioFailed(f"{c.boundjid}: no {expect} within {WAIT}s") from None
        finally:
            for name, h in handlers:
                c.del_event_handler(name, h)

    async def login(
        self,
        user: str,
        resource: str,
        *,
        plugins: tuple[str, ...] = (),
        mech: str | None = None,
        direct_tls: bool = False,
        presence: bool = True,
        priority: int | None = None,
    ) -> slixmpp.ClientXMPP:
        """A client logged in (TLS, SASL, bind), optionally available."""
        c = self.client(user, resource, plugins=plugins, mech=mech, direct_tls=direct_tls)
        self.step(f"login {user}/{resource}")
        await self.start(c, direct_tls=direct_tls)
        if presence:
            await self.available(c, priority=priority)
        return c

    async def available(self, c: slixmpp.ClientXMPP, priority: int | None = None, **kw: Any) -> None:
        c.send_presence(ppriority=priority, **kw)
        await sync(c)

    async def component(self, domain: str, *, plugins: tuple[str, ...] = ()) -> slixmpp.ComponentXMPP:
        """A XEP-0114 component connected to the server's component port."""
        secret = self.server.components[domain]
        comp = slixmpp.ComponentXMPP(domain, secret, self.server.host, self.server.component_port)
        for p in ("xep_0030", "xep_0199", *plugins):
            comp.register_plugin(p)
        self.clients.append(comp)
        self.inboxes[id(comp)] = Inbox(comp, f"component-{domain}-{len(self.clients)}")
        self.step(f"component {domain} connects")
        await self.start(comp)
        return comp

    async def teardown(self) -> None:
        """Closes every client: a clean stream close where possible, else abort."""
        futs = []
        for c in self.clients:
            try:
                futs.append(asyncio.ensure_future(c.disconnect(wait=1.0)))
            except Exception:  # noqa: BLE001 - teardown must reach every client
                pass
        if futs:
            await asyncio.wait(futs, timeout=3.0)
        for c in self.clients:
            if c.transport is not None:
                c.abort()


async def sync(c: slixmpp.BaseXMPP, server: str | None = None) -> None:
    """Pings the server and waits for the result. The server handles one session's stanzas in
    order, so whatever `c` sent before has been processed when this returns. A component
    must name the server's domain."""
    to = server or c.boundjid.domain
    # XEP-0114: a component stamps its own 'from' (the server rejects stanzas without one).
    ifrom = c.boundjid if c.is_component else None
    iq = await c["xep_0199"].send_ping(to, ifrom=ifrom, timeout=WAIT)
    check_eq(iq["type"], "result", "ping reply type")


def send_chat(c: slixmpp.BaseXMPP, to: str, body: str, mtype: str = "chat", **kw: Any) -> None:
    c.send_message(mto=to, mbody=body, mtype=mtype, **kw)


async def abort_transport(c: slixmpp.ClientXMPP) -> None:
    """Kills the TCP connection without a stream close, like a phone losing its network."""
    gone = asyncio.get_running_loop().create_future()

    def on_disc(_e: Any = None) -> None:
        if not gone.done():
            gone.set_result(None)

    c.add_event_handler("disconnected", on_disc, disposable=True)
    c.abort()
    try:
        await asyncio.wait_for(gone, WAIT)
    except asyncio.TimeoutError:
        raise ScenarioFailed("client did not notice its own aborted transport") from None


async def eventually(cond: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Polls a client-side state (e.g. slixmpp's roster cache, updated by IQ pushes the inbox
    does not record) until it holds; fails at the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        v = cond()
        if v:
            return v
        if asyncio.get_running_loop().time() > deadline:
            raise ScenarioFailed(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def sm_enabled(c: slixmpp.ClientXMPP) -> str:
    """Waits until XEP-0198 is enabled with resumption; returns the resumption id."""
    await eventually(lambda: c["xep_0198"].enabled_in, f"{c.boundjid}: SM enabled", WAIT)
    sm_id = c["xep_0198"].sm_id
    check(sm_id, f"{c.boundjid}: server enabled SM without a resumption id")
    return sm_id


async def settle_acks(c: slixmpp.ClientXMPP) -> None:
    """XEP-0198: acks everything `c` has received and waits for the server's <a/> to our <r/>,
    so the server's unacked queue is empty before a test kills the transport."""
    got = asyncio.get_running_loop().create_future()
    name = f"interop-settle-{id(got)}"

    def on_ack(_s: Any) -> None:
        if not got.done():
            got.set_result(None)

    c.register_handler(Callback(name, MatchXPath("{urn:xmpp:sm:3}a"), on_ack, once=True, instream=True))
    c["xep_0198"].send_ack()
    c["xep_0198"].request_ack()
    try:
        await asyncio.wait_for(got, WAIT)
    except asyncio.TimeoutError:
        raise ScenarioFailed(f"{c.boundjid}: no <a/> for our <r/>") from None
    finally:
        c.remove_handler(name)
