"""slixmpp-omemo (XEP-0384) set-up shared by the OMEMO scenarios: the plugin with in-memory
storage and blind trust, a client that has published its device lists and bundles, and an
encrypted exchange checked by decryption. Used against Herald (scenarios_pep.omemo), with
profanity (scenarios_clients.profanity_omemo) and with a Prosody user over s2s
(prosody_omemo.py)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, FrozenSet, Optional

from kit import Ctx, ScenarioFailed, check, check_eq

PEP_PLUGINS = ("xep_0060", "xep_0163", "xep_0115")
LEGACY_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
DEVICES = "urn:xmpp:omemo:2:devices"


def plugin():
    """slixmpp-omemo's plugin with in-memory storage and blind trust, registered once; returns
    the module to pass to `register_plugin(..., module=)`."""
    mod = sys.modules[__name__]
    if hasattr(mod, "XEP_0384Impl"):
        return mod
    from omemo.storage import Just, Maybe, Nothing, Storage
    from omemo.types import DeviceInformation, JSONType
    from slixmpp.plugins import register_plugin
    from slixmpp_omemo import XEP_0384

    class MemoryStorage(Storage):
        def __init__(self) -> None:
            super().__init__()
            self.data: dict[str, JSONType] = {}

        async def _load(self, key: str) -> Maybe[JSONType]:
            return Just(self.data[key]) if key in self.data else Nothing()

        async def _store(self, key: str, value: JSONType) -> None:
            self.data[key] = value

        async def _delete(self, key: str) -> None:
            self.data.pop(key, None)

    class XEP_0384Impl(XEP_0384):  # noqa: N801 - slixmpp's plugin naming
        default_config = {"fallback_message": "This message is OMEMO encrypted."}

        def plugin_init(self) -> None:
            self._interop_storage = MemoryStorage()
            super().plugin_init()

        @property
        def storage(self) -> Storage:
            return self._interop_storage

        @property
        def _btbv_enabled(self) -> bool:
            # Blind trust before verification: the scenario trusts whatever device it sees.
            return True

        async def _devices_blindly_trusted(
            self, blindly_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]
        ) -> None:
            pass

        async def _prompt_manual_trust(
            self, manually_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]
        ) -> None:
            raise ScenarioFailed(f"manual trust asked for {manually_trusted} under blind trust")

    mod.XEP_0384Impl = XEP_0384Impl
    register_plugin(XEP_0384Impl)
    return mod


async def ready(ctx: Ctx, c: Any, address: tuple[str, int] | None = None) -> Any:
    """Connects `c` (made with PEP_PLUGINS, not started) with the OMEMO plugin, sends presence
    and waits until the session manager is up, i.e. its device lists and bundles are
    published. `address`: a server other than the one under test."""
    c.register_plugin("xep_0384", module=plugin())
    ctx.step(f"login {c.boundjid} with OMEMO")
    await ctx.start(c, address=address)
    await ctx.available(c)
    try:
        await asyncio.wait_for(c["xep_0384"].get_session_manager(), 20)
    except asyncio.TimeoutError:
        raise ScenarioFailed(f"{c.boundjid}: OMEMO session manager not ready (device list / bundle upload)") from None
    return c


async def omemo_client(ctx: Ctx, user: str, resource: str) -> Any:
    """One of the scenario's users on the server under test, OMEMO ready."""
    return await ready(ctx, ctx.client(user, resource, plugins=PEP_PLUGINS))


def is_encrypted(recipient: Any):
    def pred(s: Any) -> bool:
        return s.name == "message" and s["type"] == "chat" and bool(recipient["xep_0384"].is_encrypted(s))

    return pred


async def send_encrypted(sender: Any, to: str, text: str) -> None:
    """Encrypts `text` for every device of `to` (fetching its device list and bundles as
    needed) and sends it."""
    from slixmpp.jid import JID

    msg = sender.make_message(mto=JID(to), mtype="chat")
    msg["body"] = text
    encrypted_msg, errors = await sender["xep_0384"].encrypt_message(msg, {JID(to)})
    check(encrypted_msg is not None, f"nothing encrypted (errors: {errors})")
    encrypted_msg.send()


async def receive_decrypted(ctx: Ctx, recipient: Any, sender_bare: str, text: str) -> None:
    """Waits for an encrypted chat message at `recipient` and checks it decrypts to `text`
    from a device of `sender_bare`."""
    inbox = ctx.inbox(recipient)
    [stanza, *_] = await inbox.until(is_encrypted(recipient), f"an encrypted message at {recipient.boundjid}", timeout=20)
    inbox.items.remove(stanza)
    check(text not in str(stanza), f"the text travelled in clear: {stanza}")
    plain, device = await recipient["xep_0384"].decrypt_message(stanza)
    check_eq(plain["body"], text, "decrypted body")
    check_eq(device.bare_jid, sender_bare, "sender device's JID")


async def exchange(ctx: Ctx, sender: Any, recipient: Any, text: str) -> None:
    """`sender` → `recipient` (both slixmpp-omemo clients), encrypted, decrypted."""
    await send_encrypted(sender, str(recipient.boundjid.bare), text)
    await receive_decrypted(ctx, recipient, str(sender.boundjid.bare), text)
