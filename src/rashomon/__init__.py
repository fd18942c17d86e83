"""rashomon: train populations of models on Ray and measure how much equally good models disagree.

The public Python API (SPEC §2); everything else is private::

    import rashomon

    results = rashomon.run("jobs/quickstart.yaml")  # or a dict; resumes a stopped run
    analysis = rashomon.analyze(results, epsilon=0.01)
    analysis.to_dict()  # the `rashomon analyze --json` object
    analysis.per_example()  # a DataFrame: one row per test example, every per-example measure
    rashomon.analyze(results, by="hp_lr")  # one Rashomon set per learning rate, side by side
    rashomon.report(results)  # DIR/report.html

``run``, ``tune``, ``open_results``, ``analyze`` and ``report`` are what the ``rashomon`` command
calls. Importing the package is cheap: torch, Ray and pandas load on first use.

The package has three layers, each a subpackage: ``rashomon.jobs`` says *what* population to
train, ``rashomon.engine`` *how and where*, ``rashomon.analysis`` *what it means*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "Analysis",
    "CohortAnalysis",
    "Results",
    "TuneResult",
    "analyze",
    "open_results",
    "report",
    "run",
    "tune",
]

if TYPE_CHECKING:
    from rashomon._api import (
        Analysis,
        CohortAnalysis,
        Results,
        TuneResult,
        analyze,
        open_results,
        report,
        run,
        tune,
    )


def __getattr__(name: str):
    """The public names, imported on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module 'rashomon' has no attribute {name!r}")
    from rashomon import _api

    value = getattr(_api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
