"""The command line in a real pseudo-terminal, as a person sees it and types into it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

from .harness import ROOT, ServerProcess

ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


class Terminal:
    """The CLI in a real pseudo-terminal: what it shows, and what a person types there."""

    def __init__(self, server: ServerProcess, *args: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "160", "LINES": "50"}
        cmd = [sys.executable, "-m", "client", *args, "--url", server.url]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.raw = b""
        self.seen = 0  # expect() looks only after what it matched last

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)

    @property
    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode(errors="replace").replace("\r", "")

    @property
    def run_id(self) -> str:
        """The id of the run the CLI started, from its "run <id>" line."""
        found = re.search(r"run (c[0-9a-f]+)", self.text)
        assert found is not None, self.text
        return found.group(1)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the CLI has exited and closed the terminal
            return False
        self.raw += data
        return bool(data)

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (at := self.text.find(text, self.seen)) < 0:
            if time.monotonic() > deadline or not self._read(min(0.5, deadline - time.monotonic())):
                raise AssertionError(f"{text!r} not shown; the terminal shows:\n{self.text[-3000:]}")
        self.seen = at + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")  # Enter

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.5):
            pass
        return self.proc.wait(max(1.0, deadline - time.monotonic()))
