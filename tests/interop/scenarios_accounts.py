"""Discovery and account self-service (issue 15): what slixmpp's XEP-0030/0115/0128 plugins
read of the server (features, its entity capabilities verified, XEP-0157 contact
addresses), and XEP-0077 with slixmpp's plugin: registering a new account before login, then
changing its password in band. Both run on a server of their own with `[contact]` and
`[registration] enabled = true`."""

from __future__ import annotations

import asyncio

from slixmpp.exceptions import IqError

from kit import WAIT, Ctx, ScenarioFailed, check, check_eq, scenario, sync

CONFIG = (
    "\n[contact]\n"
    'abuse = ["mailto:abuse@localhost", "xmpp:abuse@localhost"]\n'
    'support = ["https://localhost/support"]\n'
    "[registration]\n"
    "enabled = true\n"
)

SERVERINFO = "http://jabber.org/network/serverinfo"


def as_list(v) -> list[str]:
    """A form value as a list (slixmpp gives one value of an untyped field as a string)."""
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


@scenario("disco_caps_contact", issue=15, users=["ivan"], config=CONFIG)
async def disco_caps_contact(ctx: Ctx) -> None:
    """The server's and the account's disco#info list what is served; the server's XEP-0115
    caps in its stream features verify against its disco#info; the XEP-0157 contact
    addresses come as a XEP-0128 form."""
    c = ctx.client("ivan", "phone", plugins=("xep_0115", "xep_0128"))
    caps: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_caps(pres) -> None:
        if str(pres["from"]) == ctx.server.domain and not caps.done():
            caps.set_result((pres["caps"]["hash"], pres["caps"]["node"], pres["caps"]["ver"]))

    # slixmpp turns the <c/> of the stream features into an entity_caps event of the domain.
    c.add_event_handler("entity_caps", on_caps)
    ctx.step("login")
    await ctx.start(c)
    disco = c["xep_0030"]

    ctx.step("server disco#info")
    info = await disco.get_info(jid=ctx.server.domain, cached=False)
    features = set(info["disco_info"]["features"])
    for f in (
        "msgoffline",
        "urn:xmpp:carbons:2",
        "urn:xmpp:blocking",
        "jabber:iq:register",
        "urn:xmpp:ping",
        "jabber:iq:version",
        "urn:xmpp:time",
    ):
        check(f in features, f"server disco#info lacks {f}: {sorted(features)}")
    forms = [
        s
        for s in info["disco_info"]["substanzas"]
        if isinstance(s, c["xep_0004"].stanza.Form)
    ]
    # One serverinfo form (XEP-0157); the upload service's form (XEP-0363) may be there too.
    serverinfo = [f for f in forms if as_list(f.get_values().get("FORM_TYPE")) == [SERVERINFO]]
    check_eq(len(serverinfo), 1, "XEP-0157 serverinfo forms in the server's disco#info")
    values = serverinfo[0].get_values()
    check_eq(
        sorted(as_list(values.get("abuse-addresses"))),
        ["mailto:abuse@localhost", "xmpp:abuse@localhost"],
        "abuse-addresses",
    )
    check_eq(as_list(values.get("support-addresses")), ["https://localhost/support"], "support-addresses")
    check("admin-addresses" not in values, f"unconfigured fields are left out: {values}")

    ctx.step("account disco#info")
    info = await disco.get_info(jid=ctx.jid("ivan"), cached=False)
    features = set(info["disco_info"]["features"])
    for f in ("urn:xmpp:mam:2", "urn:xmpp:sid:0", "urn:xmpp:push:0"):
        check(f in features, f"account disco#info lacks {f}: {sorted(features)}")

    ctx.step("entity capabilities")
    try:
        hash_, node, ver = await asyncio.wait_for(caps, WAIT)
    except asyncio.TimeoutError:
        raise ScenarioFailed("no <c/> in the server's stream features") from None
    check_eq(hash_, "sha-1", "caps hash")
    # XEP-0115 §5.4: ask node#ver and recompute the hash with slixmpp's own algorithm.
    info = await disco.get_info(jid=ctx.server.domain, node=f"{node}#{ver}", cached=False)
    check_eq(
        c["xep_0115"].generate_verstring(info["disco_info"], "sha-1"),
        ver,
        "the verification string slixmpp computes from the server's disco#info",
    )


@scenario("ibr_register_passwd", issue=15, users=[], config=CONFIG)
async def ibr_register_passwd(ctx: Ctx) -> None:
    """slixmpp's XEP-0077 plugin registers a new account before login and logs in with it;
    it changes the password in band; the new password logs in, the old one no longer."""
    jid = f"ibr_register_passwd_newbie@{ctx.server.domain}"
    c = ctx.client("newbie", "phone", plugins=("xep_0077",), jid=jid, password="first-pw")
    registered: list[str] = []

    async def on_register(_form) -> None:
        iq = c.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = c.boundjid.user
        iq["register"]["password"] = c.password
        await iq.send()
        registered.append(jid)

    c.add_event_handler("register", on_register)
    ctx.step("register and log in")
    await ctx.start(c)
    check_eq(registered, [jid], "registration before login")
    check_eq(c.boundjid.bare, jid, "logged in as the new account")

    ctx.step("registering the same name again: conflict")
    # One mechanism: the failed login after the refusal counts one failure, not one per
    # mechanism (each delays the next attempt on the account).
    again = ctx.client(
        "newbie", "tablet", plugins=("xep_0077",), jid=jid, password="x", mech="SCRAM-SHA-256"
    )
    conflict: list[str] = []

    async def on_register_again(_form) -> None:
        iq = again.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = again.boundjid.user
        iq["register"]["password"] = "x"
        try:
            await iq.send()
        except IqError as e:
            conflict.append(e.iq["error"]["condition"])

    again.add_event_handler("register", on_register_again)
    try:
        await ctx.start(again)
    except ScenarioFailed:
        pass  # then SASL with the wrong password fails, as it should
    check_eq(conflict, ["conflict"], "a second registration of the name")

    ctx.step("change the password in band")
    await c["xep_0077"].change_password("second-pw")
    await sync(c)

    ctx.step("the new password logs in, the old one does not")
    new = ctx.client("newbie", "desk", jid=jid, password="second-pw")
    await ctx.start(new)
    old = ctx.client("newbie", "laptop", jid=jid, password="first-pw", mech="SCRAM-SHA-256")
    try:
        await ctx.start(old)
    except ScenarioFailed as e:
        check("authentication failed" in str(e), f"old password: {e}")
    else:
        raise ScenarioFailed("the old password still logs in")
