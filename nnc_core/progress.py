"""The command line's progress bar: parameters done, parameters per second,
time left; on stderr, and only where stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A tqdm bar over a model's parameters (or another ``unit``), or nothing
    when ``quiet`` or stderr is not a terminal (a pipe, a log file, a CI runner)."""

    def __init__(self, what: str, total: int | None, *, unit: str = "param", quiet: bool = False) -> None:
        self.bar: Any = None
        self.done = 0
        if quiet or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            desc=what,
            unit=unit,
            unit_scale=unit == "param",
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
            smoothing=0.1,
        )

    def advance(self, name: str, parameters: int) -> None:
        """``parameters`` more are done, the last of them in tensor ``name``."""
        self.update_to(self.done + parameters, name)

    def update_to(self, done: int, name: str, *, total: int | None = None) -> None:
        """``done`` parameters (units) in all are done, the last of them in tensor ``name``."""
        step, self.done = done - self.done, done
        if self.bar is not None and total is not None and self.bar.total != total:
            self.bar.total = total
        if self.bar is not None and step:
            self.bar.set_postfix_str(name[-40:], refresh=False)
            self.bar.update(step)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
