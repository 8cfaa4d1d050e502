"""The command line's progress bar: tensors done, parameters per second,
time left; on stderr, and only where stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A tqdm bar over tensors, or nothing when ``quiet`` or stderr is not a
    terminal (a pipe, a log file, a CI runner).

    ``parameters``: the total parameter count when known (the rate and the
    time left are then in parameters); otherwise the bar counts tensors
    and shows the parameter rate beside them.
    """

    def __init__(self, what: str, parameters: int | None, tensors: int | None, *, quiet: bool = False) -> None:
        self.bar: Any = None
        self.parameters = 0
        self.started = time.monotonic()
        self.by_parameters = parameters is not None
        if quiet or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        if self.by_parameters:
            self.bar = tqdm(total=parameters, desc=what, unit="param", unit_scale=True, file=sys.stderr,
                            dynamic_ncols=True, leave=True)
        else:
            self.bar = tqdm(total=tensors, desc=what, unit="tensor", file=sys.stderr, dynamic_ncols=True, leave=True)

    def advance(self, name: str, parameters: int, *, done: int | None = None, total: int | None = None) -> None:
        """A tensor is done: ``parameters`` more (or, for a tensor bar, ``done`` tensors in all)."""
        self.parameters += parameters
        if self.bar is None:
            return
        if total is not None and self.bar.total != total:
            self.bar.total = total
        if self.by_parameters:
            self.bar.update(parameters)
        else:
            self.bar.update((done if done is not None else self.bar.n + 1) - self.bar.n)
        self.bar.set_postfix_str(name[-40:], refresh=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
