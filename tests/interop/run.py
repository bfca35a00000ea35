#!/usr/bin/env python3
"""Interop runner: real slixmpp clients and components against a real `herald serve`.

Usage:
    python3 tests/interop/run.py             # the enabled scenarios
    python3 tests/interop/run.py --all       # enabled and pending ones
    python3 tests/interop/run.py NAME...     # just these (pending ones too)
    python3 tests/interop/run.py --list

It builds nothing: the server binary comes from $HERALD_BIN (default target/debug/herald,
relative to the repository root). It makes a temporary data dir and config with free loopback
ports, creates each scenario's users with `herald user add`, starts `herald serve`, runs each
scenario with its own timeout, prints `PASS name` / `FAIL name: reason` per scenario and a
closing `N passed, N failed` line, exits non-zero on any failure, and always stops the server.
Scenarios that ask for extra configuration (`kit.scenario(config=...)`) run afterwards, on a
server of their own per configuration.

To enable a pending scenario once its feature lands, add its name to ENABLED below.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

sys.dont_write_bytecode = True

try:
    import slixmpp  # noqa: E402,F401
except ImportError:
    print("FAIL setup: slixmpp is not installed (pip install -r tests/interop/requirements.txt)")
    print("0 passed, 1 failed")
    sys.exit(1)

import kit  # noqa: E402
import scenarios_foundation  # noqa: E402,F401  (registers scenarios)
import scenarios_im  # noqa: E402,F401
import scenarios_mobile  # noqa: E402,F401
import scenarios_push  # noqa: E402,F401
import scenarios_pep  # noqa: E402,F401
import scenarios_restart  # noqa: E402,F401
import scenarios_clients  # noqa: E402,F401
import scenarios_profile  # noqa: E402,F401
import scenarios_accounts  # noqa: E402,F401
import scenarios_bookmarks  # noqa: E402,F401
import scenarios_http  # noqa: E402,F401
import scenarios_cb  # noqa: E402,F401
import scenarios_sasl2  # noqa: E402,F401
import scenarios_muc  # noqa: E402,F401
import scenarios_invite  # noqa: E402,F401
import scenarios_mds  # noqa: E402,F401
import scenarios_muc_push  # noqa: E402,F401
import scenarios_websocket  # noqa: E402,F401

#: Scenarios run by default, in this order. Everything else registered is PENDING.
ENABLED = [
    # issue 2: foundation
    "login_messages",
    "direct_tls",
    "wrong_password",
    "ping",
    "disco",
    "component",
    # issue 3: roster, presence, offline
    "roster_presence_offline",
    # issue 4: mobile delivery core
    "sm_resume",
    "carbons",
    "mam_paging",
    "csi",
    # issue 5: push
    "push",
    # issue 15: clients people use
    "profanity_chat",
    # issue 15: names, avatars, private data
    "vcard_avatar",
    "private_storage",
    # issue 17: HTTP services
    "http_upload",
    # issue 18: channel binding
    "scram_plus_offered",
    # issue 18: SASL2, Bind2, FAST, inline resumption (xmpp.js)
    "xmppjs_fast_reconnect",
    # XMPP over WebSocket (RFC 7395), with SASL2 and inline resumption (xmpp.js)
    "xmppjs_websocket",
    # issue 15: PEP, avatars, OMEMO
    "pep_avatar",
    "omemo",
    # issue 15: XEP-0402 bookmarks and their XEP-0048 private-XML form
    "bookmarks_sync",
    "bookmarks_legacy_pep",
    # issue 15: XEP-0490 read state across devices and push
    "mds_push",
    "profanity_omemo",
    # issue 16: group chat
    "muc",
    "muc_avatar",
    # issue 11: no message lost (restarts the server: last)
    "sm_restart",
    # issue 15: discovery and account self-service (a server of their own: [contact],
    # [registration] enabled)
    "disco_caps_contact",
    "ibr_register_passwd",
    # issue 17: the invite landing page in headless chromium ([registration] invite_only)
    "invite_page_browser",
    # issue 16: push rule d, group chat members whose phone is in no room ([push] with_body)
    "muc_push",
]

DOMAIN = "localhost"
HOST = "127.0.0.1"
COMPONENTS = {"echo.localhost": "echo-secret", "push.localhost": "push-secret"}
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class HeraldServer:
    """A `herald serve` child process with its own data dir, config and free ports."""

    def __init__(self, binary: Path, workdir: Path, extra_config: str = "", domain: str = DOMAIN):
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config = workdir / "herald.toml"
        self.log_path = workdir / "server.log"
        self.c2s = free_port()
        self.direct_tls = free_port()
        self.component = free_port()
        self.http = free_port()
        # The plain HTTP listener a reverse proxy would use: XMPP over WebSocket at ws://.
        self.http_plain = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None
        comps = "".join(
            f'\n[[components.component]]\ndomain = "{d}"\nsecret = "{s}"\n' for d, s in COMPONENTS.items()
        )
        self.config.write_text(
            f'domain = "{domain}"\n'
            f'data_dir = "{self.data_dir}"\n'
            f"[c2s]\n"
            f'listen = "{HOST}:{self.c2s}"\n'
            f'direct_tls_listen = "{HOST}:{self.direct_tls}"\n'
            f"require_encryption = true\n"
            f"[components]\n"
            f'listen = "{HOST}:{self.component}"\n'
            f"[http]\n"
            f'listen = "{HOST}:{self.http}"\n'
            f'plain_listen = "{HOST}:{self.http_plain}"\n' + comps + extra_config
        )

    def cli(self, *args: str) -> tuple[int, str]:
        p = subprocess.run(
            [str(self.binary), *args, "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
        )
        return p.returncode, (p.stdout + p.stderr).strip()

    def add_user(self, jid: str, password: str) -> None:
        code, out = self.cli("user", "add", jid, "--password", password)
        if code != 0:
            raise RuntimeError(f"herald user add {jid} failed ({code}): {out}")

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "NO_COLOR": "1"}
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own process group: a Ctrl-C on the runner reaches us, and we stop the server.
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [self.c2s, self.direct_tls, self.component, self.http, self.http_plain]
        while waiting:
            if self.proc.poll() is not None:
                raise RuntimeError(f"herald serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"herald serve did not listen on {waiting} within {START_TIMEOUT}s")
            waiting = [p for p in waiting if not port_open(p)]
            if waiting:
                time.sleep(0.05)
        if not (self.data_dir / "cert.pem").is_file():
            raise RuntimeError("the server did not write its self-signed certificate to data_dir/cert.pem")

    def restart(self, kill: bool) -> None:
        """SIGTERM (a clean stop) or SIGKILL (a crash), then the same server again."""
        if kill and self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        else:
            self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        # Append: the log of the earlier run stays readable after a failure.
        self.log_path.rename(self.log_path.with_suffix(f".{time.monotonic_ns()}.log"))
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join("    | " + line for line in text[-lines:])


async def run_scenario(sc: kit.Scenario, server: kit.Server) -> None:
    ctx = kit.Ctx(server, sc)
    try:
        await asyncio.wait_for(sc.fn(ctx), sc.timeout)
    except asyncio.TimeoutError:
        raise kit.ScenarioFailed(f"timed out after {sc.timeout}s (at: {ctx.last_step})") from None
    finally:
        await ctx.teardown()


def one_line(e: BaseException) -> str:
    text = str(e) or e.__class__.__name__
    return text if isinstance(e, kit.ScenarioFailed) else f"{e.__class__.__name__}: {text}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="scenarios to run (default: the enabled ones)")
    ap.add_argument("--all", action="store_true", help="also run the pending scenarios")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="slixmpp debug logs to stderr")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = ap.parse_args()

    unknown = [n for n in ENABLED if n not in kit.SCENARIOS]
    if unknown:
        print(f"ENABLED names unknown scenarios: {unknown}", file=sys.stderr)
        return 2
    pending = [n for n in kit.SCENARIOS if n not in ENABLED]

    if args.list:
        for n in ENABLED + pending:
            sc = kit.SCENARIOS[n]
            state = "enabled" if n in ENABLED else "PENDING"
            print(f"{n:26} issue {sc.issue}  {state:8} {sc.doc.splitlines()[0] if sc.doc else ''}")
        return 0

    if args.names:
        bad = [n for n in args.names if n not in kit.SCENARIOS]
        if bad:
            print(f"unknown scenarios: {bad}; try --list", file=sys.stderr)
            return 2
        selected = args.names
    elif args.all:
        selected = ENABLED + pending
    else:
        selected = list(ENABLED)
        for n in pending:
            print(f"PENDING {n} (issue {kit.SCENARIOS[n].issue}; not enabled yet)")

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    binary = Path(os.environ.get("HERALD_BIN", "target/debug/herald"))
    if not binary.is_absolute():
        binary = (Path.cwd() / binary) if (Path.cwd() / binary).exists() else (REPO / binary)
    if not binary.is_file():
        print(f"FAIL setup: no herald binary at {binary} (build it, or set HERALD_BIN)")
        print(f"0 passed, {len(selected)} failed")
        return 1

    passed = failed = 0
    t_all = time.monotonic()
    # The default server first, in the selected order; then one server per extra config.
    groups: dict[str, list[str]] = {}
    for n in selected:
        groups.setdefault(kit.SCENARIOS[n].config, []).append(n)
    for extra in sorted(groups, key=lambda c: c != ""):
        p, f = run_group(binary, groups[extra], extra, args)
        passed += p
        failed += f
    print(f"interop: {time.monotonic() - t_all:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def run_group(binary: Path, selected: list[str], extra_config: str, args) -> tuple[int, int]:
    """Runs `selected` on one server configured with `extra_config`; (passed, failed)."""
    passed = failed = 0
    tmp = tempfile.mkdtemp(prefix="herald-interop-")
    server = HeraldServer(binary, Path(tmp), extra_config)
    try:
        try:
            for n in selected:
                for u in kit.SCENARIOS[n].users:
                    server.add_user(f"{kit.account(n, u)}@{DOMAIN}", kit.password(n, u))
            server.start()
        except Exception as e:  # noqa: BLE001
            print(f"FAIL setup: {one_line(e)}")
            print(server.log_tail())
            return 0, len(selected)
        facts = kit.Server(
            domain=DOMAIN,
            host=HOST,
            c2s_port=server.c2s,
            direct_tls_port=server.direct_tls,
            component_port=server.component,
            cert=server.data_dir / "cert.pem",
            components=dict(COMPONENTS),
            cli=server.cli,
            restart=server.restart,
            http_plain_port=server.http_plain,
        )
        for n in selected:
            sc = kit.SCENARIOS[n]
            t0 = time.monotonic()
            if not server.alive():
                failed += 1
                print(f"FAIL {n}: the server is not running (exit code {server.proc.returncode})")
                continue
            try:
                asyncio.run(run_scenario(sc, facts))
            except Exception as e:  # noqa: BLE001 - every failure is reported, then we go on
                failed += 1
                print(f"FAIL {n}: {one_line(e)}")
                if not isinstance(e, kit.ScenarioFailed) or args.verbose:
                    traceback.print_exc(file=sys.stdout)
                print(server.log_tail(15))
            else:
                passed += 1
                print(f"PASS {n} ({time.monotonic() - t0:.1f}s)")
            sys.stdout.flush()
        if not server.alive():
            failed += 1
            print(f"FAIL server: exited during the run with {server.proc.returncode}")
            print(server.log_tail())
    finally:
        server.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return passed, failed


if __name__ == "__main__":
    sys.exit(main())
