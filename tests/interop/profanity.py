"""Drives profanity (the Debian package), a terminal XMPP client, inside tmux for the interop
scenarios: a private tmux server, a throwaway HOME with one account, commands typed with
send-keys and the screen read back with capture-pane. Every wait is for text to appear on the
screen (polled every 100 ms, bounded), never a fixed sleep. The last screen is kept so a
failing scenario can print it, and passing ones log it too (the issue asks for the captured
screen in the test log).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from kit import ScenarioFailed

WAIT = 20.0


def available() -> str | None:
    """None when profanity and tmux are installed, else what is missing."""
    missing = [p for p in ("profanity", "tmux") if shutil.which(p) is None]
    return ", ".join(missing) if missing else None


class Profanity:
    """One profanity process logged in as `jid` (TLS with the server's certificate trusted:
    profanity's `tls.policy=trust`, since it has no option to pin a self-signed one)."""

    def __init__(self, jid: str, password: str, host: str, port: int):
        self.jid = jid
        self.home = Path(tempfile.mkdtemp(prefix="herald-profanity-"))
        self.socket = f"herald-interop-{os.getpid()}-{id(self)}"
        self.session = "prof"
        self.screen = ""
        data = self.home / ".local" / "share" / "profanity"
        config = self.home / ".config" / "profanity"
        data.mkdir(parents=True)
        config.mkdir(parents=True)
        (data / "accounts").write_text(
            f"[{jid}]\nenabled=true\njid={jid}\nserver={host}\nport={port}\n"
            f"resource=profanity\npassword={password}\ntls.policy=trust\n"
        )
        # No splash, no desktop notifications, no OTR/OMEMO questions on startup.
        (config / "profrc").write_text("[ui]\nsplash=false\n[notifications]\nmessage=false\n")

    def _tmux(self, *args: str) -> str:
        p = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if p.returncode != 0:
            raise ScenarioFailed(f"tmux {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def start(self) -> None:
        env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "TERM": "xterm-256color",
        }
        subprocess.run(
            [
                "tmux", "-L", self.socket, "new-session", "-d", "-s", self.session,
                "-x", "200", "-y", "50", f"profanity -a {self.jid}",
            ],
            check=True,
            env=env,
            timeout=10,
        )

    def capture(self) -> str:
        self.screen = self._tmux("capture-pane", "-p", "-J", "-t", self.session)
        return self.screen

    def type(self, line: str) -> None:
        """Types a line and Enter (literal keys: no tmux key names are interpreted)."""
        self._tmux("send-keys", "-t", self.session, "-l", line)
        self._tmux("send-keys", "-t", self.session, "Enter")

    async def wait_for(self, pattern: str, what: str, timeout: float = WAIT) -> re.Match:
        """Waits until `pattern` (a regex) is on the screen."""
        rx = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = rx.search(self.capture())
            if m:
                return m
            if loop.time() > deadline:
                raise ScenarioFailed(f"profanity: {what} not on screen within {timeout}s:\n{self.screen}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        shutil.rmtree(self.home, ignore_errors=True)
