"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

Dependency-free on purpose. The loss shown is read lazily (a callable) and only when the
line is redrawn, at most every `interval` seconds, so a GPU run syncs a few times a
second for the display rather than once per step.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


class Progress:
    def __init__(self, total: int = 0, stream: TextIO | None = None, enabled: bool | None = None,
                 interval: float = 0.1, width: int = 24) -> None:
        self.total = max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.interval = interval
        self.width = width
        self.start_time = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False
        self._longest = 0

    def start(self, total: int) -> None:
        """(Re)start the clock for `total` steps, once the caller knows how many."""
        self.total = max(int(total), 0)
        self.start_time = time.perf_counter()
        self._last_draw = 0.0

    def update(self, step: int, loss: Callable[[], float] | float | None = None) -> None:
        """Record that `step` steps are done; redraw if enough time has passed."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval and step < self.total:
            return
        self._last_draw = now
        self._draw(step, loss() if callable(loss) else loss, now)

    def _draw(self, step: int, loss: float | None, now: float) -> None:
        frac = step / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        rate = step / max(now - self.start_time, 1e-9)
        text = f"\r[{bar}] {step:>{len(str(self.total))}}/{self.total}"
        if loss is not None:
            text += f"  loss {loss:.6g}"
        text += f"  {rate:,.0f} steps/s"
        # pad over what a longer previous line left behind
        self.stream.write(text.ljust(self._longest))
        self._longest = max(self._longest, len(text))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line (the terminal keeps the last state); nothing if never drawn."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False
