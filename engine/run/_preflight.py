"""Checks of a job's models before anything is written or trained.

A user's module is imported, built and run — two models on two examples, batched, in train and
eval mode — in the driver before a results folder is claimed, so a typo in a class, a shape
mismatch or a forward pass that cannot run batched is one line and exit status 2, not a pack that
fails three times on the cluster. The built-in ``cnn`` family is checked the same way (its blocks
may shrink a small input to nothing). And a results folder trained with another version of the
module's source is refused by name: its models would otherwise mix with the new ones.
"""

from __future__ import annotations

from collections.abc import Iterator

from rashomon.engine.model import ModuleFamily, PackSettings, build_family
from rashomon.engine.run._kinds import census
from rashomon.engine.run._plan import pack_settings
from rashomon.engine.store import ResultsDir
from rashomon.jobs import UserError, iter_variants

DENSE = {"mlp", "logistic"}


def check_models(job, dataset, results: ResultsDir | None = None) -> None:
    """Build and run every distinct architecture of the job (dense jobs have nothing to check),
    and refuse a results folder of another version of the job's module."""
    module = job.module_reference()
    if results is not None and module is not None:
        _refuse_edited_module(job, results)
    if job.families() <= DENSE:
        return
    n_train = len(dataset.indices("train"))  # a bootstrap resample has as many rows
    seen: set = set()
    for settings in _settings(job):
        last = n_train % settings.batch_size or None
        structure = (settings.family, settings.hidden, settings.activation, settings.channels,
                     settings.kernel, settings.stride, settings.pool, last)  # fmt: skip
        if settings.family in DENSE or structure in seen:
            continue
        seen.add(structure)
        family = build_family(settings, dataset.example_shape, dataset.n_classes)
        if isinstance(family, ModuleFamily):
            family.check(last)


def _settings(job) -> Iterator[PackSettings]:
    """The pack settings of every configuration: from the census of the population's kinds,
    or, where that only samples them, from every configuration in turn."""
    found = census(job)
    if found.sampled is None:
        yield from (kind.settings for kind in found.kinds)
        return
    module = job.module_reference()
    configurations: set[int] = set()
    for variant in iter_variants(job):
        if id(variant.hparams) not in configurations:  # a configuration's variants share it
            configurations.add(id(variant.hparams))
            yield pack_settings(variant.hparams, job.train, module)


def _refuse_edited_module(job, results: ResultsDir) -> None:
    recorded = results.identity()
    if not recorded or recorded.get("job_hash") == job.job_hash:
        return
    before = results.job()
    was, now = before.model.source_sha256, job.module_reference().sha256
    same_job = _without_source(before) == _without_source(job)
    if was is not None and was != now and same_job:
        name = job.model.module.split(":")[0]
        raise UserError(
            f"{results.location}: holds models of another version of {name} (source sha256 "
            f"{was[:12]}…, now {now[:12]}…); an edited model must not mix with the old one's "
            "results: restore that version of the file, or choose another --out"
        )


def _without_source(job) -> dict:
    dumped = job.model_dump(mode="json")
    dumped["model"].pop("source_sha256", None)
    return dumped
