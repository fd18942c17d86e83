"""``rashomon status``: what a results folder holds, read from its files alone."""

from __future__ import annotations

from engine._store import ResultsDir
from jobs import count_models


def describe_status(location: str) -> tuple[str, int]:
    """A readable summary and the number of failed models."""
    results = ResultsDir(location)
    job = results.job()
    total = count_models(job)
    recorded = results.recorded_models()
    counts = recorded["status"].value_counts()
    ok, diverged, failed = (int(counts.get(s, 0)) for s in ("ok", "diverged", "failed"))
    lines = [
        f"{results.location}: job {job.name}",
        f"  done     {ok + diverged:>8} ({ok} ok, {diverged} diverged)",
        f"  pending  {total - ok - diverged - failed:>8}",
        f"  failed   {failed:>8}",
    ]
    failures = recorded[recorded["status"] == "failed"]
    for (pack_id, error), group in failures.groupby(["pack_id", "error"], dropna=False):
        lines.append(f"  pack {pack_id} ({len(group)} models): {error}")
    if failed:
        lines.append("  run the same `rashomon run` again to retry the failed models")
    return "\n".join(lines), failed
