"""Live views for the ``measure`` CLI: ``watch`` redraws a result, ``Progress`` ticks.

``watch`` fetches a task's result every ``interval`` seconds and redraws it
like ``top``: on a terminal the screen is cleared and the frame drawn from
the top left; into a pipe or a file each frame is written after the last,
separated by a blank line, so the output stays readable. Until the first
result arrives the frame says how long it has been waiting.

``Progress`` shows that a long call is still running (a bandwidth probe,
waiting for a first result): on a terminal one line rewritten in place
(``\\r``) every quarter second, elsewhere one line per second. It writes to
the stream it is given (the CLI gives stderr, so ``--json`` output on stdout
stays clean).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

CLEAR = "\x1b[H\x1b[2J"


class Progress:
    """``with Progress("probing h5 -> h6", stream, expected=10): ...`` (see module docstring)."""

    def __init__(self, what: str, stream: TextIO, expected: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.stream, self.expected, self.clock = what, stream, expected, clock
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.status = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def line(self) -> str:
        elapsed = self.clock() - self._start
        of = f" of about {self.expected:.0f} s" if self.expected else ""
        status = f" ({self.status})" if self.status else ""
        return f"{self.what}: {elapsed:.1f} s{of}{status}"

    def _run(self) -> None:
        period = 0.25 if self.tty else 1.0
        while not self._stop.wait(period):
            self._write(self.line())

    def _write(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        self._start = self.clock()
        self._write(f"{self.what}...")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        outcome = "failed" if exc_type else "done"
        self._write(f"{self.what}: {outcome} after {self.clock() - self._start:.1f} s")
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def fit(frame: str, columns: int, rows: int) -> str:
    """A frame cut to ``columns`` x ``rows``: a long line ends in '>' and the lines that do
    not fit (the smallest rows of largest-first tables) become one last line saying how
    many were left out. The cursor's line stays free."""
    columns, rows = max(20, columns), max(3, rows)
    lines = [line if len(line) <= columns else line[:columns - 1] + ">"
             for line in frame.rstrip("\n").split("\n")]
    if len(lines) > rows - 1:
        left = len(lines) - (rows - 2)
        lines = lines[:rows - 2] + [
            f"... {left} more lines (a larger terminal shows them)"[:columns]]
    return "\n".join(lines) + "\n"


def watch(fetch: Callable[[], Any], render: Callable[[Any], str], title: str, interval: float,
          out: TextIO, count: int | None = None,
          waiting: Callable[[Exception], bool] | None = None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.time,
          size: Callable[[], tuple[int, int]] | None = None) -> int:
    """Redraw ``render(fetch())`` every ``interval`` s, ``count`` times (None: until Ctrl-C).

    An exception for which ``waiting(exc)`` is true (no result yet) draws a
    "waiting" frame; any other propagates. On a terminal (or with ``size``:
    columns, rows) each frame is cut to fit (``fit``); the size is read again
    for every frame, so resizing the window works.
    """
    tty = bool(getattr(out, "isatty", lambda: False)())
    if size is None and tty:
        def size() -> tuple[int, int]:
            columns, rows = shutil.get_terminal_size()
            return columns, rows
    started = clock()
    frames = 0
    try:
        while count is None or frames < count:
            try:
                body = render(fetch())
            except Exception as exc:
                if waiting is None or not waiting(exc):
                    raise
                body = f"waiting for the first result: {clock() - started:.0f} s ({exc})"
            stamp = time.strftime("%H:%M:%S", time.localtime(clock()))
            frame = f"{title}  every {interval:g} s  {stamp}\n\n{body}\n"
            if size is not None:
                frame = fit(frame, *size())
            out.write(CLEAR + frame if tty else ("\n" if frames else "") + frame)
            out.flush()
            frames += 1
            if count is None or frames < count:
                sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
    return 0
