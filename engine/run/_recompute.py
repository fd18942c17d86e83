"""``rashomon flatness DIR``: (re)compute the flat-minima and simplicity statistics from saved
weights.

A population trained with ``flatness: {enabled: false}``, or one whose statistics a researcher
wants with other settings (more probes, a larger curvature set), needs no retraining: the weights
are in ``weights/*.safetensors`` and the initial weights follow from the init seeds. The packs
are measured on the trainers, each as one batch exactly as the trainer does after training
(`remeasure_pack`), and each ``models`` file is rewritten whole and atomically, so an interrupted
recompute leaves every file either old or new, and run again it continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import ValidationError

from rashomon.engine.model import FlatnessSettings
from rashomon.engine.run._context import RunContext
from rashomon.engine.run._progress import progress_bar
from rashomon.engine.run._scheduler import Task
from rashomon.jobs import FlatnessConfig, UserError


def recompute_flatness(
    location: str,
    overrides: Mapping[str, str],
    address: str | None = None,
    show_progress: bool = False,
    num_cpus: int | None = None,
) -> tuple[int, FlatnessConfig]:
    """Write the flatness columns of every pack with saved weights; returns (models, settings)."""
    context = RunContext.for_results(location)
    config = _settings(context.job.flatness, overrides)
    recorded = json.dumps(config.model_dump())
    with context.writing("`rashomon flatness`", claim=False):
        pack_ids = context.results.pack_ids()
        if not pack_ids:
            raise UserError(
                f"{context.results.location}: no trained models yet; run `rashomon run` first"
            )
        total = context.results.scan().models().num_rows
        measured = 0

        def done(task: Task, outcome: dict) -> None:
            nonlocal measured
            context.check_lock()
            measured += outcome["measured"]
            progress.update(outcome["models"])

        context.connect(address, num_cpus)
        scheduler = context.scheduler(FlatnessSettings.from_config(config))
        tasks = [Task(pack_id, "remeasure", (pack_id, recorded)) for pack_id in pack_ids]
        with progress_bar(total, 0, show_progress) as progress:
            scheduler.run(tasks, on_done=done, fatal=(UserError,))
    return measured, config


def _settings(config: FlatnessConfig, overrides: Mapping[str, str]) -> FlatnessConfig:
    values = config.model_dump()
    for key, text in overrides.items():
        if key not in values or key == "enabled":
            known = ", ".join(k for k in values if k != "enabled")
            raise UserError(f"--set {key}: not a flatness setting (choose from {known})")
        values[key] = _value(text)
    try:
        return FlatnessConfig.model_validate(values)
    except ValidationError as error:
        problem = error.errors()[0]
        raise UserError(f"--set {problem['loc'][0]}: {problem['msg']}") from None


def _value(text: str):
    """``64`` -> 64, ``1e-3`` -> 0.001, ``true`` -> True; anything else stays text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
