"""The driver of a population run: job → plan → packs on Ray actors → Parquet.

What is left to train is read back from the results folder (`RunContext.pending`), so a rerun
after a kill resumes exactly where the files say the run stopped; the packs go to the trainers
through the one `PackScheduler`. `train` is the part a search (`rashomon tune`) shares: packs
trained, counted, and a pack that fails every attempt recorded as failed.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rashomon.engine.run._context import RunContext
from rashomon.engine.run._plan import Pack
from rashomon.engine.run._progress import progress_bar
from rashomon.engine.run._scheduler import Task, training
from rashomon.engine.store import models_table


@dataclass
class RunSummary:
    total: int
    already_done: int
    trained: int
    diverged: int
    failed: int
    seconds: float
    out_dir: str
    repaired: int = 0  # damaged packs found at the start, whose models were trained again
    # Where the wall time went (`WALL`), and the trainers' seconds in each phase of their packs
    # (`PHASES` and output): what separates fixed costs from training.
    wall: dict[str, float] = field(default_factory=dict)
    work: Counter = field(default_factory=Counter)
    workers: int = 0

    def line(self) -> str:
        repaired = f"; {self.repaired} damaged packs trained again" if self.repaired else ""
        return (
            f"{self.trained} models trained ({self.diverged} diverged, {self.failed} failed, "
            f"{self.already_done} already done) of {self.total} in {self.seconds:.1f} s "
            f"-> {self.out_dir}{repaired}"
        )

    def timing(self) -> str:
        """Where the time went: the wall time by stage, and the trainers' time by phase."""
        wall = " + ".join(f"{name} {seconds:.1f}" for name, seconds in self.wall.items())
        text = f"time: {self.seconds:.1f} s = {wall} s"
        if self.work:
            busy = sum(self.work.values())
            phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.work.items())
            text += f"; trainers ({self.workers}) busy {busy:.1f} s: {phases} s"
        return text


def run_job(
    job,
    out_dir: str | os.PathLike,
    address: str | None = None,
    show_progress: bool = True,
    num_cpus: int | None = None,
) -> RunSummary:
    """Train every pending model of ``job`` into ``out_dir``, holding the folder's lock."""
    start = time.perf_counter()
    clock = _Stages(start)
    context = RunContext.for_job(job, out_dir)
    with context.writing(f"`rashomon run` of job {job.name}") as repaired:
        pending = context.pending()
        done = pending.total - len(pending.variants)
        summary = RunSummary(pending.total, done, 0, 0, 0, 0.0, context.results.location)
        summary.repaired = len(repaired)
        if pending.variants:
            clock.mark("folder and dataset")
            context.connect(address, num_cpus)
            clock.mark("Ray start")
            packs = context.plan(pending.variants)
            context.results.discard_packs(pending.failed_packs - {p.pack_id for p in packs})
            clock.mark("plan")
            train(context, packs, summary, show_progress)
            clock.mark("trainers and packs")
            context.check_lock()
            context.results.remove_uncommitted()
    clock.mark("finish")
    summary.seconds = time.perf_counter() - start
    summary.wall = clock.stages
    return summary


class _Stages:
    """Wall seconds between named marks."""

    def __init__(self, start: float) -> None:
        self.last, self.stages = start, {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = now - self.last
        self.last = now


def train(
    context: RunContext,
    packs: list[Pack],
    summary: RunSummary,
    show_progress: bool,
    refill: Callable[[], list[Pack]] | None = None,
    on_pack: Callable[[Pack], None] | None = None,
) -> None:
    """Train ``packs`` (and what ``refill`` hands in while a worker would idle) on the context's
    trainers, counting into ``summary``; ``on_pack`` hears of every pack once it is written or
    recorded as failed, after the lock was checked."""
    results = context.results

    def finished(pack: Pack) -> None:
        context.check_lock()
        if on_pack is not None:
            on_pack(pack)

    def done(task: Task, outcome: dict) -> None:
        summary.trained += outcome["models"]
        summary.diverged += outcome["diverged"]
        summary.work.update(outcome["timings"])
        progress.update(outcome["models"])
        finished(task.pack)

    def failed(task: Task, error: str) -> None:
        pack = task.pack
        columns = pack.columns() | {"status": ["failed"] * len(pack), "error": [error] * len(pack)}
        results.write_pack(pack.pack_id, models_table(columns))
        summary.failed += len(pack)
        progress.update(len(pack))
        finished(pack)

    more = None if refill is None else (lambda: [training(p) for p in refill()])
    scheduler = context.scheduler()
    summary.workers = context.workers
    # a search does not know its size
    with progress_bar(summary.total or None, summary.already_done, show_progress) as progress:
        scheduler.run([training(p) for p in packs], refill=more, on_done=done, give_up=failed)
