"""The person's terminal while a run waits: lines read without blocking the event loop
(`loop.add_reader`, so events keep arriving, Ctrl-C works and a question can be called off
when someone else answers), and text written so that event lines do not bury the question."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TextIO

if sys.platform != "win32":
    import termios

READ_SIZE = 4096
MAX_LINE = 1 << 20  # bytes typed without a line end before the line is taken as it is


class Terminal:
    """Lines from the file descriptor `fd` (stdin), text to `out` (stdout, looked up at
    each write, since a live screen may swap it while it runs)."""

    def __init__(self, fd: int = 0, out: TextIO | None = None) -> None:
        self.fd = fd
        self._out = out
        self._buffer = b""
        self._ended = False
        self._question = ""  # the text of the question shown last, if not answered yet

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self._question = text.rsplit("\n", 1)[-1] if "\n" in text else self._question + text

    def interject(self, line: str) -> None:
        """Show a line (an event) while a question waits, then show the question again below it."""
        question = self._question
        clear = "\r\x1b[K" if self.out.isatty() else "\n"
        self.out.write(f"{clear}{line}\n{question}" if question else f"{line}\n")
        self.out.flush()

    async def readline(self) -> str | None:
        while b"\n" not in self._buffer and not self._ended and len(self._buffer) < MAX_LINE:
            await self._readable()
        if not self._buffer and self._ended:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        self._question = ""
        return line.decode(errors="replace").rstrip("\r")

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def read() -> None:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""  # e.g. the terminal went away: no more answers
            if data:
                self._buffer += data
            else:
                self._ended = True
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self.fd, read)
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)

    def discard_typed(self) -> None:
        """Forget what was typed for a question that was called off (it was for that one)."""
        self._buffer = b""
        self._question = ""
        if sys.platform != "win32" and os.isatty(self.fd):
            with contextlib.suppress(termios.error):
                termios.tcflush(self.fd, termios.TCIFLUSH)
