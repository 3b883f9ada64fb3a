"""Live views for the ``measure`` CLI: ``watch`` redraws a result, ``Progress`` ticks.

``watch`` fetches a task's result every ``interval`` seconds and redraws it
like ``top``: on a terminal ``rich.live`` redraws the frame in place (the
previous frame's lines erased, the cursor hidden meanwhile, the last frame
left on screen at the end); into a pipe or a file each frame is written after
the last, separated by a blank line, so the output stays readable and plain.
Until the first result arrives the frame says how long it has been waiting.

``Progress`` shows that a long call is still running (a bandwidth probe,
waiting for a first result): on a terminal one line that ``rich.live``
redraws in place every quarter second, elsewhere one line per second. It
writes to the stream it is given (the CLI gives stderr, so ``--json`` output
on stdout stays clean).

Both draw through a plain ``rich`` console: no colour, no markup read from
the text, never wrapped (``fit`` cuts a frame to the terminal first).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text


def is_tty(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def live_on(stream: TextIO, **options: Any) -> Live:
    """A ``rich.live.Live`` drawing plain text on the terminal ``stream``."""
    console = Console(file=stream, force_terminal=True, color_system=None, highlight=False,
                      markup=False, emoji=False)
    return Live(console=console, redirect_stdout=False, redirect_stderr=False, **options)


def plain(text: str) -> Text:
    """Text as it is, never wrapped (a line longer than the terminal is cut)."""
    return Text(text, no_wrap=True, overflow="crop")


class Progress:
    """``with Progress("probing h5 -> h6", stream, expected=10): ...`` (see module docstring)."""

    def __init__(self, what: str, stream: TextIO, expected: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.stream, self.expected, self.clock = what, stream, expected, clock
        self.tty = is_tty(stream)
        self.status = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
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
        if self._live is not None:
            self._live.update(plain(text), refresh=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        self._start = self.clock()
        if self.tty:
            self._live = live_on(self.stream, auto_refresh=False)
            self._live.start()
        self._write(f"{self.what}...")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *_exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        outcome = "failed" if exc_type else "done"
        self._write(f"{self.what}: {outcome} after {self.clock() - self._start:.1f} s")
        if self._live is not None:
            self._live.stop()  # the last line stays, the cursor comes back
            self._live = None


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
    live = live_on(out, auto_refresh=False) if is_tty(out) else None
    if size is None and live is not None:
        def size() -> tuple[int, int]:
            columns, rows = shutil.get_terminal_size()
            return columns, rows
    started = clock()
    frames = 0
    try:
        if live is not None:
            live.start()
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
                columns, rows = size()
                frame = fit(frame, columns, rows)
            if live is not None:
                live.console.size = (max(20, columns), max(3, rows))
                live.update(plain(frame.rstrip("\n")), refresh=True)
            else:
                out.write(("\n" if frames else "") + frame)
                out.flush()
            frames += 1
            if count is None or frames < count:
                sleep(interval)
    except KeyboardInterrupt:
        if live is None:
            out.write("\n")
    finally:
        if live is not None:
            live.stop()  # the last frame stays on screen, the cursor below it
    return 0
