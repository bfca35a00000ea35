"""HTTP services (issue 17): slixmpp's XEP-0363 plugin discovers the upload service on the
server's domain, asks for a slot, PUTs a file over HTTPS (aiohttp, trusting exactly the
server's self-signed certificate) and the file comes back byte for byte with its type."""

from __future__ import annotations

import functools
import ssl

import aiohttp
import slixmpp.plugins.xep_0363.http_upload as http_upload

from kit import Ctx, check, check_eq, scenario


def trusting_session(cert: str):
    """aiohttp sessions that verify the server against its own certificate only."""
    ctx = ssl.create_default_context(cafile=cert)
    return functools.partial(aiohttp.ClientSession, connector=aiohttp.TCPConnector(ssl=ctx))


@scenario("http_upload", issue=17, users=["alice"])
async def http_upload_roundtrip(ctx: Ctx) -> None:
    """XEP-0363 with slixmpp's upload_file: discover, slot, PUT, then GET it back."""
    alice = await ctx.login("alice", "phone", plugins=("xep_0363",))
    cert = str(ctx.server.cert)
    # The plugin builds its own aiohttp session: make it trust the test server's certificate
    # (TLS verification stays on).
    http_upload.ClientSession = trusting_session(cert)
    data = bytes(range(256)) * 40 + b"end"

    ctx.step("upload_file")
    import io

    url = await alice["xep_0363"].upload_file(
        "photo.png", size=len(data), content_type="image/png", input_file=io.BytesIO(data), timeout=10
    )
    check(url.startswith("https://localhost:"), f"GET URL {url}")
    check_eq(alice["xep_0363"].max_file_size, 100_000_000, "max-file-size from the disco form")

    ctx.step("download")
    async with trusting_session(cert)() as session:
        async with session.get(url) as r:
            check_eq(r.status, 200, "GET status")
            body = await r.read()
            check_eq(r.headers.get("Content-Type"), "image/png", "Content-Type")
            check(
                (r.headers.get("Content-Disposition") or "").startswith("inline"),
                f"Content-Disposition {r.headers.get('Content-Disposition')}",
            )
        check_eq(body, data, "downloaded bytes")
        async with session.get(url, headers={"Range": "bytes=0-9"}) as r:
            check_eq(r.status, 206, "range status")
            check_eq(await r.read(), data[:10], "range bytes")
