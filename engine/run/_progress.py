"""A run's progress: a bar in a terminal, a widget in Jupyter, plain lines in a log file.

A terminal bar redraws itself with carriage returns, which a log file (a batch job's, CI's,
``rashomon run ... 2> run.log``) keeps as one line of thousands of frames. Where stderr is not a
terminal and no notebook shows a widget, the progress is a full line at most every
`LOG_INTERVAL` seconds, and once at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import IO

LOG_INTERVAL = 30.0  # seconds between two lines of a log
_UNIT = "model"


def progress_bar(
    total: int | None, initial: int = 0, enabled: bool = True, file: IO[str] | None = None
):
    """A context manager with ``update(n)``, for ``total`` models of which ``initial`` are done
    already (``total`` None: a search, whose size is not known)."""
    from tqdm.auto import tqdm

    file = sys.stderr if file is None else file
    options = {"total": total, "initial": initial, "unit": _UNIT, "smoothing": 0.1, "file": file}
    if not enabled:
        return tqdm(disable=True, **options)
    if _in_notebook(tqdm):
        return tqdm(**{**options, "file": None})  # the widget is not written to a file
    if _is_terminal(file):
        return tqdm(**options)
    return LogLines(total, initial, file)


class LogLines:
    """Progress as whole lines: ``12/128 models (9%) [00:31<04:59, 2.58s/model]``."""

    def __init__(
        self, total: int | None, initial: int, file: IO[str], interval: float = LOG_INTERVAL
    ) -> None:
        self.total, self.initial, self.n = total, initial, initial
        self.file, self.interval = file, interval
        self.start = self.last = time.monotonic()

    def __enter__(self) -> LogLines:
        self._write(self.start)
        return self

    def __exit__(self, *exc) -> None:
        self._write(time.monotonic())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self._write(now)

    def _write(self, now: float) -> None:
        from tqdm import tqdm

        self.last = now
        known = "{n_fmt}/{total_fmt} models ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"
        text = tqdm.format_meter(
            self.n,
            self.total,
            now - self.start,
            unit=_UNIT,
            initial=self.initial,
            bar_format=known if self.total else "{n_fmt} models [{elapsed}, {rate_fmt}]",
        )
        with contextlib.suppress(OSError, ValueError):  # a closed log must not stop the run
            print(text, file=self.file, flush=True)


def _in_notebook(tqdm_class: type) -> bool:
    """Whether `tqdm.auto` chose its notebook widget (Jupyter, with ipywidgets)."""
    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm_class.__mro__)


def _is_terminal(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
