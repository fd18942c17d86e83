"""The ``rashomon`` command as a user runs it: a real process, from a folder of the test's choice.

Imported by the tests as a plain module (``tests/`` is no package: pytest puts it on ``sys.path``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TIMEOUT = 300  # seconds for one command; the slowest here starts an embedded Ray and trains
# what must never reach a terminal: control characters other than the newline
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def command() -> list[str]:
    """The console script next to this Python, else the same entry point from ``python -c``
    without the working directory on ``sys.path`` (which the console script never has)."""
    script = Path(sys.executable).parent / "rashomon"
    if script.exists():
        return [str(script)]
    entry = "import sys; sys.path.pop(0); from rashomon.engine.cli import main; sys.exit(main())"
    return [sys.executable, "-c", entry]


def environment(**changes: str | None) -> dict[str, str]:
    """This process's environment without a Ray address (a run must start its own Ray)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def rashomon(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdout=subprocess.PIPE, **popen
) -> subprocess.CompletedProcess:
    """Run ``rashomon ARGS`` in ``cwd`` to the end; text output captured."""
    return subprocess.run(
        [*command(), *args],
        cwd=cwd,
        env=env or environment(),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=TIMEOUT,
        **popen,
    )


def one_line(stderr: str) -> str:
    """The single line a failure prints, checked to be one line with no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("rashomon: ")
    return lines[0]
