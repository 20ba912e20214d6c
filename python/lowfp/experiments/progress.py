"""A dependency-free progress line on stderr for long work (experiments, ``lowfp bench``).

On a terminal the line is redrawn in place (``\\r``) at most every 0.2 s:
``[label]  37% 74/200 steps  elapsed 3.1 s  ETA 5.3 s  what is running``. When stderr is not a
terminal (CI logs, pipes) it stays quiet except for one line each time another ~10% of the work
is done, so logs stay short. A callable ``sink`` (tests) receives those lines and every stage
message instead of stderr.

Design: the total is a count of equal work units (optimizer steps, benchmark cases) that the
caller can raise as it learns more (:meth:`Progress.add_total`); the ETA is the elapsed time per
unit so far times the units left. No threads, no terminal control beyond ``\\r``.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

__all__ = ["Progress", "format_seconds"]


def format_seconds(s: float) -> str:
    """``12.3 s``, ``4 min 05 s`` or ``1 h 02 min``."""
    if s != s or s < 0:  # nan
        return "?"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class Progress:
    """Steps done / total, elapsed time and ETA, on one line.

    Args:
        label: shown in brackets at the start of every line.
        total: work units expected (may be raised later with :meth:`add_total`; 0 = unknown).
        unit: the name of a unit (``"steps"``, ``"cases"``).
        stream: where lines go (default ``sys.stderr``).
        tty: redraw in place (True) or print ~10% lines (False); default: ``stream.isatty()``.
        sink: a callable taking each line instead of ``stream`` (never redraws).
        clock: the time source (seconds), for tests.

    Calling the object with a message sets the current stage (``progress("AdamW 4-bit")``);
    :meth:`advance` counts done units; :meth:`close` prints the final line.
    """

    def __init__(
        self,
        label: str,
        total: int = 0,
        unit: str = "steps",
        stream: Optional[TextIO] = None,
        tty: Optional[bool] = None,
        sink: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ValueError(f"total: expected a non-negative integer, got {total!r}")
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.stage = ""
        self._sink = sink
        self._stream = sys.stderr if stream is None else stream
        if tty is None:
            isatty = getattr(self._stream, "isatty", None)
            tty = bool(isatty and isatty()) and sink is None
        self._tty = tty
        self._clock = clock
        self._t0 = clock()
        self._last_draw = float("-inf")
        self._next_decile = 1  # the next 10% mark that prints a line when not on a terminal
        self._width = 0
        self._closed = False

    # ------------------------------------------------------------ input

    def add_total(self, n: int) -> None:
        """Expect ``n`` more units (the ~10% lines restart from the new fraction done)."""
        self.total += int(n)
        if self.total > 0:
            self._next_decile = min(10, self.done * 10 // self.total) + 1

    def __call__(self, msg: str) -> None:
        """Set the current stage; a sink also receives it as a line of its own."""
        self.stage = msg
        if self._sink is not None:
            self._sink(f"[{self.label}] {msg}")
        elif self._tty:
            self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` units done."""
        self.done += n
        if self._tty:
            self._draw()
            return
        if self.total <= 0:
            return
        decile = min(10, self.done * 10 // self.total)
        if decile >= self._next_decile:
            self._next_decile = decile + 1
            self._emit(self.line())

    def close(self) -> None:
        """Print the final line (once): units done and the total time."""
        if self._closed:
            return
        self._closed = True
        msg = f"[{self.label}] done: {self.done} {self.unit} in {format_seconds(self.elapsed)}"
        if self._tty:
            self._stream.write("\r" + msg.ljust(self._width) + "\n")
            self._stream.flush()
        else:
            self._emit(msg)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ output

    @property
    def elapsed(self) -> float:
        """Seconds since the object was made."""
        return self._clock() - self._t0

    def eta(self) -> float:
        """Estimated seconds left (nan before the first unit or with an unknown total)."""
        if self.done <= 0 or self.total <= 0:
            return float("nan")
        return self.elapsed / self.done * max(0, self.total - self.done)

    def line(self) -> str:
        """The current progress line (no newline)."""
        if self.total > 0:
            pct = f"{min(100, 100 * self.done // self.total):3d}% {self.done}/{self.total}"
        else:
            pct = f"{self.done}"
        text = (
            f"[{self.label}] {pct} {self.unit}  elapsed {format_seconds(self.elapsed)}  "
            f"ETA {format_seconds(self.eta())}"
        )
        return text + (f"  {self.stage}" if self.stage else "")

    def _draw(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        text = self.line()
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def _emit(self, text: str) -> None:
        if self._sink is not None:
            self._sink(text)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()
