"""Progress output for every long-running command, in one place.

On a terminal (stderr is a TTY) a stage shows tqdm's live one-line bar. Anywhere else — a log
file, CI, a pipe — there are no carriage-return bars: tqdm's `disable=None` turns the bar off
when its stream is not a TTY, and a stage without natural lines of its own (recording, for
instance) gets a plain line at every tenth of the work instead. Training prints its own plain
line per epoch either way.

Every bar goes through here (`Progress`, `track`): a direct `tqdm(...)` call elsewhere would
draw its carriage-return bar into a redirected log, whatever its `disable` says about size.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator


def on_terminal() -> bool:
    """Whether live bars are shown: stderr is a TTY (the stream tqdm writes to)."""
    return sys.stderr.isatty()


class Progress:
    """`with Progress(total, desc) as bar: bar.update(n)` — a tqdm bar on a terminal, plain
    lines (`desc: 30% (300/1,000 rows, 12s)`) on stdout every tenth otherwise; `enabled=False`
    is silent."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0,
                 enabled: bool = True, leave: bool = True, lines: bool = True):
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.bar = None
        self.lines = enabled and lines and not on_terminal()
        self.next_tenth = int(10 * initial / total) + 1 if total else 11
        self.t0 = time.perf_counter()
        if enabled and on_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                            dynamic_ncols=True, unit_scale=unit == "row", disable=None)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        tenth = self.done * 10 // self.total if self.total else 0
        if self.lines and tenth >= self.next_tenth:
            print(f"{self.desc}: {10 * tenth}% ({self.done:,}/{self.total:,} "
                  f"{self.unit}s, {time.perf_counter() - self.t0:.0f}s)", flush=True)
            self.next_tenth = tenth + 1

    def write(self, text: str) -> None:
        """A line of output that does not tear the live bar."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable, total: int, desc: str, unit: str = "it", enabled: bool = True,
          leave: bool = False, lines: bool = False) -> Iterator:
    """Iterate `items` under a `Progress` (by default a transient bar on a terminal and
    nothing elsewhere: for loops whose caller prints its own line when they end)."""
    with Progress(total, desc, unit, enabled=enabled, leave=leave, lines=lines) as bar:
        for item in items:
            yield item
            bar.update(1)
