"""Expansion of a job into model variants, and deterministic model ids.

A population is configurations × seed triples. Configurations are the cartesian product of
`population.grid` (keys sorted, values in the order given; one empty configuration without a grid)
crossed with the `population.sample.n` random draws (the same draws for every grid point, so the
design stays balanced for the variance decomposition). Seeds are innermost: init, then order,
then data. The order is deterministic, so the same job always yields the same list.

Iteration is lazy and cheap per model (the model id hashes a per-configuration prefix once and
only the seeds per model), so a dry run of a million models never materialises them all, and
:func:`count_models` is plain arithmetic.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from rashomon.jobs._errors import UserError
from rashomon.jobs._sections import Job
from rashomon.jobs._space import Distribution
from rashomon.jobs._text import canonical_json, show

__all__ = [
    "ModelVariant",
    "cohort",
    "count_models",
    "expand",
    "iter_variants",
    "model_id",
    "sample_draws",
]

_ID_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ModelVariant:
    """One model of the population: its resolved hyperparameters and three seeds.

    `hparams` holds all hyperparameters (see `rashomon.jobs.HYPERPARAMETERS`, in that order) with
    `hidden` resolved to a tuple of ints. It is a read-only mapping, shared by the variants of one
    configuration.
    """

    model_id: str
    init_seed: int
    order_seed: int
    data_seed: int
    hparams: Mapping[str, Any]
    trial: int | None = None


def model_id(
    dataset_identity: Mapping[str, Any],
    hparams: Mapping[str, Any],
    extra: Mapping[str, Any],
    init_seed: int,
    order_seed: int,
    data_seed: int,
) -> str:
    """First 16 hex chars of the sha256 of everything that determines a trained model.

    `dataset_identity` is what picks the training data (`DatasetConfig.identity()`), `hparams`
    the resolved hyperparameters, `extra` the other settings that change results
    (`TrainConfig.fixed_settings()`: betas, eps, dtype). Settings that do not change the trained
    weights (groups, resources, outputs, flatness) are left out, so changing them keeps the ids
    and lets a rerun reuse finished models.
    """
    identity = canonical_json({k: _plain(v) for k, v in dataset_identity.items()})
    fixed = canonical_json({k: _plain(v) for k, v in extra.items()})
    plain = {k: _plain(v) for k, v in hparams.items()}
    return _IdHasher(identity, fixed, plain).finish(init_seed, order_seed, data_seed)


class _IdHasher:
    """`model_id` with the configuration hashed once and only the seeds hashed per model.

    The id document is the canonical JSON of ``{"dataset", "extra", "hparams", "seeds"}``: keys
    sorted, ``"seeds"`` last. So it is a per-configuration prefix followed by the seeds, and a
    copy of a sha256 state that has consumed the prefix gives the digest of the whole document.
    The tests check this against hashing the document in one go.
    """

    __slots__ = ("_state",)

    def __init__(self, identity_json: str, extra_json: str, hparams: Mapping[str, Any]) -> None:
        prefix = (
            f'{{"dataset":{identity_json},"extra":{extra_json},'
            f'"hparams":{canonical_json(hparams)},"seeds":'
        )
        self._state = hashlib.sha256(prefix.encode())

    def finish(self, init_seed: int, order_seed: int, data_seed: int) -> str:
        state = self._state.copy()
        state.update(b'{"data":%d,"init":%d,"order":%d}}' % (data_seed, init_seed, order_seed))
        return state.hexdigest()[:_ID_LENGTH]


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so JSON (and thus ids) never depends on numpy types."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def count_models(job: Job) -> int:
    """Number of models the job expands to, without expanding it."""
    return job.population.size


def expand(job: Job) -> list[ModelVariant]:
    """Every model variant of the job, in expansion order."""
    return list(iter_variants(job))


def iter_variants(job: Job) -> Iterator[ModelVariant]:
    """Model variants in expansion order, one at a time (same order as `expand`).

    Raises UserError (on first use) when a configuration breaks a cross-field rule or two sample
    draws give the same configuration.
    """
    identity_json = canonical_json(job.dataset.identity())
    extra_json = canonical_json(job.train.fixed_settings())
    seeds = job.population.seeds
    for overrides, describe in _configurations(job):
        try:
            resolved = job.resolve(overrides)
        except UserError:
            job.resolve(overrides, origin=describe())  # the same error, saying where it came from
            raise
        hasher = _IdHasher(identity_json, extra_json, resolved)
        hparams = MappingProxyType(resolved)
        for init_seed, order_seed, data_seed in seeds.triples():
            yield ModelVariant(
                hasher.finish(init_seed, order_seed, data_seed),
                init_seed,
                order_seed,
                data_seed,
                hparams,
            )


def cohort(
    job: Job, overrides: Mapping[str, Any], *, trial: int | None = None
) -> list[ModelVariant]:
    """One configuration (base config + `overrides`) crossed with the job's seed triples.

    This is an Optuna trial's unit of work (SPEC §7). The trial number is recorded on the variants
    but is not part of the model id: the same configuration and seeds are the same model.
    """
    resolved = job.resolve(overrides, origin=f"trial {trial}" if trial is not None else None)
    hasher = _IdHasher(
        canonical_json(job.dataset.identity()), canonical_json(job.train.fixed_settings()), resolved
    )
    hparams = MappingProxyType(resolved)
    return [
        ModelVariant(hasher.finish(i, o, d), i, o, d, hparams, trial)
        for i, o, d in job.population.seeds.triples()
    ]


def _configurations(job: Job) -> Iterator[tuple[dict[str, Any], Callable[[], str]]]:
    """(overrides, where they came from) per configuration: grid points outer, draws inner.

    The description is a callable, built only when a configuration turns out to be invalid.
    """
    axes = job.population.grid.axes()
    names = list(axes)
    draws = sample_draws(job)
    for point in itertools.product(*axes.values()):
        grid_values = dict(zip(names, point, strict=True))
        for index, draw in enumerate(draws):

            def describe(grid: dict[str, Any] = grid_values, i: int = index) -> str:
                parts = [f"population.grid point {_describe(grid)}"] if grid else []
                if draws[i]:
                    parts.append(f"population.sample draw {i} ({_describe(draws[i])})")
                return " and ".join(parts)

            yield {**grid_values, **draw}, describe


def sample_draws(job: Job) -> list[dict[str, Any]]:
    """The `population.sample` draws, in order; ``[{}]`` (one empty draw) when n is 0.

    Draw i uses row i of ``default_rng(seed).random((n, k))`` over the k sampled names in sorted
    order, so raising n keeps every earlier draw, and with it the ids of models already trained.
    Each uniform u in [0, 1) becomes: loguniform exp(log lo + u·(log hi − log lo)); uniform
    lo + u·(hi − lo); int lo + ⌊u·(hi − lo + 1)⌋ (inclusive); choice the ⌊u·len⌋-th value.
    """
    sample = job.population.sample
    if sample.n == 0:
        return [{}]
    distributions: dict[str, Distribution] = sample.distributions()
    uniforms = np.random.default_rng(sample.seed).random((sample.n, len(distributions)))
    columns = {
        name: _transform(dist, uniforms[:, column])
        for column, (name, dist) in enumerate(distributions.items())
    }
    draws = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    _reject_repeated_draws(job, draws, distributions)
    return draws


def _transform(dist: Distribution, u: np.ndarray) -> list[Any]:
    """Map uniforms in [0, 1) onto `dist`; results are Python scalars within the bounds."""
    kind, args = dist.kind, dist.args
    if kind == "choice":
        index = np.minimum((u * len(args)).astype(np.int64), len(args) - 1)
        return [args[i] for i in index.tolist()]
    low, high = args
    if kind == "int":
        values = low + np.floor(u * (high - low + 1)).astype(np.int64)
        return np.minimum(values, high).tolist()
    if kind == "loguniform":
        values = np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        values = low + u * (high - low)
    # exp/log and the affine map can overshoot a bound by an ulp; the bounds are valid values.
    return np.clip(values, low, high).astype(float).tolist()


def _reject_repeated_draws(
    job: Job, draws: list[dict[str, Any]], distributions: Mapping[str, Distribution]
) -> None:
    """Two equal draws would train identical models under one id; say so instead.

    Only discrete distributions repeat in practice (a float draw collides with probability
    ~2⁻⁵³), so draws are compared only when every sampled hyperparameter is discrete.
    """
    if any(dist.kind in ("uniform", "loguniform") for dist in distributions.values()):
        return
    source = job.source
    possible = math.prod(dist.support_size for dist in distributions.values())
    if len(draws) > possible:
        raise UserError(
            f"{source}: population.sample.n: {len(draws)} draws from only {possible} possible "
            "configurations must repeat; list discrete values in population.grid instead"
        )
    first: dict[tuple[Any, ...], int] = {}
    for index, draw in enumerate(draws):
        key = tuple(draw.values())
        if key in first:
            raise UserError(
                f"{source}: population.sample: draws {first[key]} and {index} are the same "
                f"configuration ({_describe(draw)}), which would train the same models twice; "
                "list discrete values in population.grid instead, or change n or seed"
            )
        first[key] = index


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in values.items())
