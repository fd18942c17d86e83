"""A run's progress where it is shown: a redrawn bar on a terminal, whole lines in a log file (a
bar's carriage-return frames would make one endless line of it), nothing when switched off."""

from __future__ import annotations

import io
import os

from rashomon.engine.run._progress import LogLines, progress_bar


def test_progress_is_whole_lines_off_a_terminal_and_a_bar_on_one():
    log = io.StringIO()
    with progress_bar(10, 2, file=log) as bar:
        assert isinstance(bar, LogLines)
        bar.update(3)
    lines = log.getvalue().split("\n")
    assert lines[0].startswith("2/10 models (20%)") and lines[1].startswith("5/10 models (50%)")
    assert lines[2:] == [""] and "\r" not in log.getvalue()
    search = io.StringIO()
    with LogLines(None, 0, search, interval=0) as bar:
        bar.update(4)
    assert search.getvalue().splitlines()[1].startswith("4 models [")
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal, progress_bar(10, 0, file=terminal) as bar:
        bar.update(10)
        terminal.flush()
    assert b"\r" in os.read(primary, 4096)  # a redrawn bar
    os.close(primary)
    quiet = io.StringIO()
    with progress_bar(10, 0, enabled=False, file=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
