"""Optional progress reporting for ``fit`` and ``certify_inputs`` without a progress-bar dependency.

``progress`` may be

* ``None`` / ``False``: nothing (the default);
* ``True``: a one-line text bar on stderr (``desc: k/N [elapsed, ~remaining]``), redrawn at most every
  ``interval`` seconds and at the end;
* an object with ``update(n)`` (e.g. a ``tqdm`` bar you made, with ``total=`` set by you): ``update(1)``
  after every unit of work;
* a callable: called with the unit's details (``fit``: ``(step, point, value, terms)`` after every
  ascent step; ``certify_inputs``: ``(i, certificate)`` after every input).

The library never imports tqdm (benchmarks may, and pass their bar in). ``Span`` shares one bar between
many fits (the runner's "choosing noise" bar, whose total is every fit's ``progress_steps``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any


class TextBar:
    """``desc: k/N [elapsed, ~remaining]`` on one line of ``stream`` (stderr by default)."""

    def __init__(self, total: int, desc: str = "", stream: IO[str] | None = None, interval: float = 0.5):
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total must be an int >= 0, got {total!r}")
        self.total, self.desc, self.interval = total, desc, float(interval)
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = -float("inf")

    def update(self, n: int = 1) -> None:
        self.count += int(n)
        now = time.perf_counter()
        if now - self._last_draw >= self.interval or self.count >= self.total:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._last_draw = now
        elapsed = now - self.start
        rest = elapsed / self.count * (self.total - self.count) if self.count else float("nan")
        eta = f", ~{rest:.0f} s left" if self.count < self.total and rest == rest else ""
        end = "\n" if self.count >= self.total else ""
        self.stream.write(f"\r{self.desc}: {self.count}/{self.total} [{elapsed:.0f} s{eta}]{end}")
        self.stream.flush()

    def close(self) -> None:
        if self.count < self.total:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()


class Span:
    """The next ``count`` units of a bar shared by many runs (an object with ``update(n)``, e.g. a tqdm
    bar whose ``total`` is the sum of the spans): ``update`` passes at most ``count`` units on and
    ``finish()`` the rest (a run that stopped early), so that the shared bar reaches its total exactly."""

    def __init__(self, bar: Any, count: int):
        self.bar, self.count, self.done = bar, int(count), 0

    def update(self, n: int = 1) -> None:
        k = min(int(n), self.count - self.done)
        if k > 0:
            self.done += k
            self.bar.update(k)

    def finish(self) -> None:
        self.update(self.count - self.done)


def callback(progress: Any, total: int, desc: str) -> tuple[Callable[..., None] | None, Callable[[], None]]:
    """``(per-unit callback or None, close)`` for a ``progress`` argument (see the module docstring).
    Raises TypeError naming ``progress`` for anything else."""
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        bar = TextBar(total, desc)
        return (lambda *args: bar.update(1)), bar.close
    if hasattr(progress, "update") and callable(progress.update):
        return (lambda *args: progress.update(1)), lambda: None
    if callable(progress):
        return progress, lambda: None
    raise TypeError(
        f"progress must be None, a bool, an object with update(n) (e.g. a tqdm bar) or a callable, "
        f"got {type(progress).__name__}"
    )
