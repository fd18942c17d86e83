"""A job's models counted by pack kind, without expanding them (``seeds: 10000000``, a 10¹² grid).

A model's cost depends only on its structural hyperparameters (what its pack shares) and on
whether it draws dropout masks, so the kinds of a population follow from the grid's structural
axes alone: each combination of their values holds the same number of models (seeds × the other
axes × the sample draws), and one real configuration of each (the other axes at their first
values, the first sample draw) gives its settings. Only when the sample draws structural
hyperparameters, or the structural axes combine to more than `MAX_COMBINATIONS`, are the kinds'
shares read off `SAMPLE` models spread over the population (`sample_variants`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rashomon.engine.model import PackSettings
from rashomon.engine.run._plan import pack_settings
from rashomon.jobs import HYPERPARAMETERS, column_value, count_models, sample_variants

# What a pack shares, and dropout, whose masks cost a pack more
KEYS = (*(name for name, hp in HYPERPARAMETERS.items() if not hp.per_model), "dropout")
MAX_COMBINATIONS = 100_000
SAMPLE = 10_000


@dataclass(frozen=True)
class Kind:
    """What a model's cost depends on: its pack's settings, and whether it draws dropout."""

    settings: PackSettings
    dropout: bool


@dataclass
class KindCount:
    """The models of one kind, and a configuration of it (resolved hyperparameters)."""

    hparams: Mapping
    models: int


@dataclass(frozen=True)
class Census:
    """The job's models by kind, in the order each kind first appears; ``sampled``: the
    number of models the shares were read from, None when they are exact."""

    kinds: dict[Kind, KindCount]
    sampled: int | None = None

    @property
    def models(self) -> int:
        return sum(count.models for count in self.kinds.values())


def census(job) -> Census:
    """Every model of ``job`` counted by kind."""
    axes = job.population.grid.axes()
    keyed = [name for name in axes if name in KEYS]
    sampled = job.population.sample.distributions()
    combinations = math.prod(len(axes[name]) for name in keyed)
    if any(name in KEYS for name in sampled) or combinations > MAX_COMBINATIONS:
        return _sampled(job)
    first = sample_variants(job, 1)[0].hparams
    base = {name: values[0] for name, values in axes.items()}
    base |= {name: first[name] for name in sampled if first[name] is not None}
    per_combination = count_models(job) // combinations
    kinds: dict[Kind, KindCount] = {}
    for values in itertools.product(*(axes[name] for name in keyed)):
        hparams = job.resolve(base | dict(zip(keyed, values, strict=True)))
        kinds.setdefault(_kind(job, hparams), KindCount(hparams, 0)).models += per_combination
    return Census(kinds)


def _sampled(job) -> Census:
    """The kinds' shares among `SAMPLE` models spread evenly over the population (all of them,
    and so exact, in a population that small)."""
    total = count_models(job)
    variants = sample_variants(job, SAMPLE)
    kinds: dict[Kind, KindCount] = {}
    for variant in variants:
        kinds.setdefault(_kind(job, variant.hparams), KindCount(variant.hparams, 0)).models += 1
    if len(variants) == total:
        return Census(kinds)
    counts = [c.models * total // len(variants) for c in kinds.values()]
    for index in range(total - sum(counts)):  # the rounding's remainder, to the first kinds
        counts[index % len(counts)] += 1
    for count, models in zip(kinds.values(), counts, strict=True):
        count.models = models
    return Census(kinds, len(variants))


def _kind(job, hparams: Mapping) -> Kind:
    settings = pack_settings(hparams, job.train, job.module_reference())
    return Kind(settings, bool(hparams["dropout"]))


def without_finished(found: Census, finished: pa.Table) -> Census:
    """``found`` less the ``finished`` models (rows of the models table of a folder that holds
    this job, trial null: each one of its models), matched to their kind by their ``hp_``
    columns."""
    columns = [f"hp_{name}" for name in KEYS if name != "dropout"]
    drops = pc.fill_null(pc.greater(finished["hp_dropout"], 0), False)
    keys = finished.select(columns).append_column("dropout", drops)
    groups = keys.group_by([*columns, "dropout"]).aggregate([([], "count_all")])
    done = {
        tuple(row[c] for c in [*columns, "dropout"]): row["count_all"] for row in groups.to_pylist()
    }
    kinds = {}
    for kind, count in found.kinds.items():
        key = (*(column_value(n, count.hparams[n]) for n in KEYS if n != "dropout"), kind.dropout)
        kinds[kind] = KindCount(count.hparams, max(0, count.models - done.get(key, 0)))
    return Census(kinds, found.sampled)
