"""Channel binding (issue 18, item 4): SCRAM-*-PLUS and XEP-0440 offered over TLS 1.3 to a
client library that cannot bind there.

slixmpp 1.17 binds only with what Python's ssl module exports: `tls-unique`, which TLS 1.3 does
not have (Python has no `tls-exporter`, cpython issue 95341). So on TLS 1.3 it sees -PLUS
offered, cancels it and uses SCRAM without binding, with gs2 flag "n" because it saw -PLUS
offered. This checks that the server's downgrade protection (which refuses the flag "y" where
-PLUS is offered) leaves such a client working, over STARTTLS and direct TLS. If Python's ssl
ever exports `tls-exporter`, slixmpp uses SCRAM-SHA-256-PLUS with it, and the scenario expects
that instead. The binding itself is tested with tokio-xmpp (crates/herald-server/tests)."""

from __future__ import annotations

import ssl

from kit import Ctx, check, check_eq, is_chat, scenario, send_chat

PLUS = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]


@scenario("scram_plus_offered", issue=18, users=["alice", "bob"])
async def scram_plus_offered(ctx: Ctx) -> None:
    """A client that cannot bind logs in (gs2 "n") where -PLUS is offered, both TLS ports."""
    expected = "SCRAM-SHA-256-PLUS" if "tls-exporter" in ssl.CHANNEL_BINDING_TYPES else "SCRAM-SHA-256"
    alice = await ctx.login("alice", "phone")
    bob = await ctx.login("bob", "desk", direct_tls=True)
    for c in (alice, bob):
        offered = c["feature_mechanisms"].mech_list
        for m in PLUS:
            check(m in offered, f"{c.boundjid}: {m} not offered: {sorted(offered)}")
        check_eq(c.socket.version(), "TLSv1.3", f"{c.boundjid} TLS version")
        check_eq(c["feature_mechanisms"].mech.name, expected, f"{c.boundjid} SASL mechanism")
    send_chat(alice, str(bob.boundjid), "no binding, no downgrade")
    await ctx.inbox(bob).until(is_chat("no binding, no downgrade"), "alice's message at bob")
