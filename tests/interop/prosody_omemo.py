#!/usr/bin/env python3
"""OMEMO across servers (issue 15): a slixmpp-omemo user on Herald (herald.test, 127.0.0.3)
and one on Prosody 0.12 with mod_pep (prosody.test, 127.0.0.2), federated over s2s with
dialback, publish their device lists and bundles on their own server, fetch each other's
across the federation, and exchange an encrypted message both ways.

Run by tests/interop/s2s_prosody.sh after the Rust federation tests (same addresses, the
fixed s2s port 5269 on both, so not in parallel with them). Needs: prosody and lua-unbound
(Prosody finds herald.test through its own hosts file), openssl, the packages of
requirements.txt, and a built server ($HERALD_BIN, default target/debug/herald). Prints
`PASS prosody_omemo` or `FAIL prosody_omemo: reason` (with both servers' log tails) and exits
non-zero on failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True

import kit  # noqa: E402
import omemo_peer  # noqa: E402
import run  # noqa: E402  (HeraldServer)

PROSODY_IP = "127.0.0.2"
HERALD_IP = "127.0.0.3"
PROSODY_DOMAIN = "prosody.test"
HERALD_DOMAIN = "herald.test"
NAME = "prosody_omemo"
PAT, PAT_PASSWORD = "pat", "pw-pat"


class Prosody:
    """Prosody with PEP on PROSODY_IP, its own config, data and DNS view (herald.test →
    HERALD_IP through lua-unbound's hosts file); a self-signed certificate, dialback s2s."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.log_path = workdir / "prosody.log"
        self.cert = workdir / f"{PROSODY_DOMAIN}.crt"
        key = workdir / f"{PROSODY_DOMAIN}.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(key), "-out", str(self.cert), "-subj", f"/CN={PROSODY_DOMAIN}",
                "-addext", f"subjectAltName=DNS:{PROSODY_DOMAIN}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        (workdir / "data").mkdir()
        (workdir / "hosts").write_text(f"{HERALD_IP} {HERALD_DOMAIN}\n")
        # Questions the hosts file cannot answer (SRV) go to loopback, where nothing answers:
        # nothing leaves the machine.
        (workdir / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        self.c2s = run.free_port()
        self.config = workdir / "prosody.cfg.lua"
        # mod_pep (and the disco it needs) is what OMEMO uses; the rest as in the Rust harness.
        self.config.write_text(
            f"""run_as_root = true
daemonize = false
certificates = "{workdir}"
pidfile = "{workdir / 'prosody.pid'}"
data_path = "{workdir / 'data'}"
log = {{ debug = "{self.log_path}" }}
interfaces = {{ "{PROSODY_IP}" }}
c2s_ports = {{ {self.c2s} }}
s2s_ports = {{ 5269 }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
authentication = "internal_hashed"
unbound = {{ hoststxt = "{workdir / 'hosts'}"; resolvconf = "{workdir / 'resolv.conf'}" }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "message"; "pep" }}
ssl = {{ certificate = "{self.cert}"; key = "{key}" }}
VirtualHost "{PROSODY_DOMAIN}"
"""
        )
        self.proc: subprocess.Popen | None = None

    def ctl(self, *args: str) -> None:
        subprocess.run(["prosodyctl", "--config", str(self.config), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self.ctl("register", PAT, PROSODY_DOMAIN, PAT_PASSWORD)
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # An external process: its port is polled until it listens (bounded).
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with __import__("socket").create_connection((PROSODY_IP, self.c2s), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("prosody did not listen within 30s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no prosody log)"
        return "\n".join("    | " + line for line in text[-lines:])


async def scenario(ctx: kit.Ctx, prosody: Prosody) -> None:
    from slixmpp.jid import JID

    A = ctx.jid("alice")
    P = f"{PAT}@{PROSODY_DOMAIN}"
    alice = await omemo_peer.omemo_client(ctx, "alice", "desk")
    pat = ctx.client("pat", "phone", plugins=omemo_peer.PEP_PLUGINS, jid=P, password=PAT_PASSWORD)
    # Prosody's own certificate, verified (the kit's default trusts Herald's).
    pat.ca_certs = prosody.cert
    await omemo_peer.ready(ctx, pat, address=(PROSODY_IP, prosody.c2s))

    ctx.step("each reads the other's device list from the other server (PEP over s2s)")
    for reader, owner in ((alice, P), (pat, A)):
        r = await reader.plugin["xep_0060"].get_items(JID(owner), omemo_peer.LEGACY_DEVICES, max_items=1)
        kit.check(len(r["pubsub"]["items"]) == 1, f"{omemo_peer.LEGACY_DEVICES} of {owner}: {r}")

    ctx.step("herald → prosody, encrypted")
    await omemo_peer.exchange(ctx, alice, pat, "Hello Prosody, from Herald in secret")
    ctx.step("prosody → herald, encrypted")
    await omemo_peer.exchange(ctx, pat, alice, "Hello Herald, Prosody read you")


async def run_scenario(ctx: kit.Ctx, prosody: Prosody) -> None:
    try:
        await asyncio.wait_for(scenario(ctx, prosody), 120)
    except asyncio.TimeoutError:
        raise kit.ScenarioFailed(f"timed out after 120s (at: {ctx.last_step})") from None
    finally:
        await ctx.teardown()


def main() -> int:
    # As run.py: the libraries' own warnings (e.g. python-omemo's about a device list it is
    # about to fix) are not results.
    logging.basicConfig(level=logging.CRITICAL)
    missing = [p for p in ("prosody", "prosodyctl", "openssl") if shutil.which(p) is None]
    if missing:
        print(f"FAIL {NAME}: not installed: {', '.join(missing)} (.ci/run installs prosody)")
        return 1
    binary = Path(os.environ.get("HERALD_BIN", "target/debug/herald")).resolve()
    if not binary.is_file():
        print(f"FAIL {NAME}: no herald binary at {binary} (build it, or set HERALD_BIN)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="herald-prosody-omemo-"))
    (tmp / "herald").mkdir()
    (tmp / "prosody").mkdir()
    herald = run.HeraldServer(
        binary,
        tmp / "herald",
        f'[s2s]\nlisten = "{HERALD_IP}:5269"\n'
        # Prosody's certificate is self-signed: dialback, as in the Rust harness.
        f"insecure_outgoing = true\n"
        f'[s2s.routes]\n"{PROSODY_DOMAIN}" = "{PROSODY_IP}:5269"\n',
        domain=HERALD_DOMAIN,
    )
    prosody = Prosody(tmp / "prosody")
    sc = kit.Scenario(NAME, lambda ctx: scenario(ctx, prosody), 15, ["alice"], 120.0, __doc__ or "")
    t0 = time.monotonic()
    try:
        herald.add_user(f"{kit.account(NAME, 'alice')}@{HERALD_DOMAIN}", kit.password(NAME, "alice"))
        herald.start()
        prosody.start()
        facts = kit.Server(
            domain=HERALD_DOMAIN,
            host=run.HOST,
            c2s_port=herald.c2s,
            direct_tls_port=herald.direct_tls,
            component_port=herald.component,
            cert=herald.data_dir / "cert.pem",
            components={},
            cli=herald.cli,
        )
        asyncio.run(run_scenario(kit.Ctx(facts, sc), prosody))
    except Exception as e:  # noqa: BLE001 - reported with both logs
        print(f"FAIL {NAME}: {run.one_line(e)}")
        print("  herald log:")
        print(herald.log_tail(25))
        print("  prosody log:")
        print(prosody.log_tail(25))
        return 1
    finally:
        prosody.stop()
        herald.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"PASS {NAME} ({time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
