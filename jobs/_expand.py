"""Expansion of a job into model variants, and deterministic model ids.

A population is configurations × seed triples. Configurations are the cartesian product of
`population.grid` (keys sorted, values in the order given; one empty configuration without a grid)
crossed with the `population.sample.n` random draws (the same draws for every grid point, so the
design stays balanced for the variance decomposition). Seeds are innermost: init, then order,
then data. The order is deterministic, so the same job always yields the same list.

Nothing here needs the whole population in memory: :func:`count_models` is plain arithmetic,
:func:`iter_variants` generates configurations, sample draws and seeds as it reaches them (the
model id hashes a per-configuration prefix once and only the seeds per model), and
:func:`sample_variants` builds any few variants of a population of 10¹² directly from their
positions.
"""

from __future__ import annotations

import functools
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
from rashomon.jobs._space import ID_NEUTRAL, Distribution
from rashomon.jobs._text import canonical_json, show

__all__ = [
    "ModelVariant",
    "cohort",
    "count_models",
    "expand",
    "iter_variants",
    "model_id",
    "sample_draws",
    "sample_variants",
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
    return _IdHasher(identity, fixed, _hashed(hparams)).finish(init_seed, order_seed, data_seed)


def _hashed(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters a model id hashes: the settings its family or optimizer does not use
    (null) and the neutral values of the settings added since (`ID_NEUTRAL`: no label noise, the
    full space) are left out, which keeps the ids of the models that came before them."""
    return {
        k: _plain(v)
        for k, v in hparams.items()
        if v is not None and not (k in ID_NEUTRAL and v == ID_NEUTRAL[k])
    }


def _id_hparams(job: Job, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters as a model id hashes them (`_hashed`); a module model adds its class,
    arguments and source hash."""
    plain = _hashed(resolved)
    if resolved["family"] == "module":
        plain["module"] = job.module_reference().identity()  # type: ignore[union-attr]
    return plain


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

    Memory stays flat however large the population: configurations, sample draws and seeds are
    all generated as they are reached. Raises UserError when a configuration breaks a cross-field
    rule or two sample draws give the same configuration (when that configuration is reached).
    """
    identity_json = canonical_json(job.dataset.identity())
    extra_json = canonical_json(job.train.fixed_settings())
    seeds = job.population.seeds
    for overrides, describe in _configurations(job):
        resolved = _resolve(job, overrides, describe)
        hasher = _IdHasher(identity_json, extra_json, _id_hparams(job, resolved))
        hparams = MappingProxyType(resolved)
        for init_seed, order_seed, data_seed in seeds.triples():
            yield ModelVariant(
                hasher.finish(init_seed, order_seed, data_seed),
                init_seed,
                order_seed,
                data_seed,
                hparams,
            )


def sample_variants(job: Job, k: int) -> list[ModelVariant]:
    """At most `k` variants spread evenly over the expansion order, without expanding the rest.

    For a look at a population too large to list (``seeds: 10000000``, a 10¹² grid): the variants
    at positions ``round_down(j·(N−1)/(k−1))`` for j = 0 … k−1 of the N in expansion order, so the
    first and the last are always included and the positions are the same on every call. Each is
    exactly the variant `expand` has at that position (same seeds, hyperparameters and id), but
    built on its own in O(number of axes). All N variants when N <= k. Repeated sample draws are
    only detected by a full expansion.
    """
    total = count_models(job)
    if total <= k:
        return expand(job)
    if k < 1:
        return []
    positions = sorted({j * (total - 1) // (k - 1) for j in range(k)} if k > 1 else {0})
    return [_variant_at(job, position) for position in positions]


def _variant_at(job: Job, position: int) -> ModelVariant:
    """The variant at `position` of the expansion order, by mixed-radix arithmetic."""
    seeds, sample = job.population.seeds, job.population.sample
    configuration, seed_index = divmod(position, seeds.count)
    point, draw_index = divmod(configuration, max(sample.n, 1))
    grids = job.population.grids()
    number = 0
    while point >= grids[number].size:  # the grids one after the other
        point -= grids[number].size
        number += 1
    grid_values: dict[str, Any] = {}
    for name, values in reversed(grids[number].axes().items()):  # the last varies fastest
        point, value_index = divmod(point, len(values))
        grid_values[name] = values[value_index]
    grid_values = dict(reversed(grid_values.items()))
    draw = _draws(job, draw_index, draw_index + 1)[0] if sample.n else {}
    describe = functools.partial(_origin, _grid_name(job, number), grid_values, draw_index, draw)
    resolved = _resolve(job, {**grid_values, **draw}, describe)
    if seeds.paired:
        init_seed, order_seed, data_seed = seed_index, seed_index, 0
    else:
        init_seed, rest = divmod(seed_index, seeds.order * seeds.data)
        order_seed, data_seed = divmod(rest, seeds.data)
    hasher = _IdHasher(
        canonical_json(job.dataset.identity()),
        canonical_json(job.train.fixed_settings()),
        _id_hparams(job, resolved),
    )
    return ModelVariant(
        hasher.finish(init_seed, order_seed, data_seed),
        init_seed,
        order_seed,
        data_seed,
        MappingProxyType(resolved),
    )


def _resolve(job: Job, overrides: dict[str, Any], describe: Callable[[], str]) -> dict[str, Any]:
    try:
        return job.resolve(overrides)
    except UserError:
        job.resolve(overrides, origin=describe())  # the same error, saying where it came from
        raise


def cohort(
    job: Job, overrides: Mapping[str, Any], *, trial: int | None = None
) -> list[ModelVariant]:
    """One configuration (base config + `overrides`) crossed with the job's seed triples.

    This is an Optuna trial's unit of work (SPEC §7). The trial number is recorded on the variants
    but is not part of the model id: the same configuration and seeds are the same model.
    """
    resolved = job.resolve(overrides, origin=f"trial {trial}" if trial is not None else None)
    hasher = _IdHasher(
        canonical_json(job.dataset.identity()),
        canonical_json(job.train.fixed_settings()),
        _id_hparams(job, resolved),
    )
    hparams = MappingProxyType(resolved)
    return [
        ModelVariant(hasher.finish(i, o, d), i, o, d, hparams, trial)
        for i, o, d in job.population.seeds.triples()
    ]


def _configurations(job: Job) -> Iterator[tuple[dict[str, Any], Callable[[], str]]]:
    """(overrides, where they came from) per configuration: grids in order, then grid points,
    draws inner.

    The description is a callable, built only when a configuration turns out to be invalid. The
    draws are generated afresh for each grid point, in chunks, so none of them is kept; repeats
    are looked for during the first grid point's pass (every point has the same draws). With
    several grids, a grid point that resolves like one of an earlier grid is refused when
    reached: its models would be trained twice under the same ids.
    """
    grids = job.population.grids()
    seen: dict[str, str] = {}
    first = True
    for number, grid in enumerate(grids):
        axes = grid.axes()
        names = list(axes)
        where = _grid_name(job, number)
        for point in itertools.product(*axes.values()):
            grid_values = dict(zip(names, point, strict=True))
            for index, draw in enumerate(_iter_draws(job, check_repeats=first)):
                origin = functools.partial(_origin, where, grid_values, index, draw)
                if len(grids) > 1 and index == 0:
                    _check_joined(job, seen, grid_values, origin)
                yield {**grid_values, **draw}, origin
            first = False


def _check_joined(
    job: Job, seen: dict[str, str], grid_values: Mapping[str, Any], origin: Callable[[], str]
) -> None:
    key = canonical_json(_hashed(_resolve(job, dict(grid_values), origin)))
    if key in seen:
        raise UserError(
            f"{job.source}: {origin()} is the same configuration as {seen[key]}: its models "
            "would be trained twice; make the grids of population.grid disjoint"
        )
    seen[key] = origin()


def _grid_name(job: Job, number: int) -> str:
    listed = isinstance(job.population.grid, tuple)
    return f"population.grid[{number}]" if listed else "population.grid"


def _origin(where: str, grid: Mapping[str, Any], index: int, draw: Mapping[str, Any]) -> str:
    parts = [f"{where} point {_describe(grid)}"] if grid else []
    if draw:
        parts.append(f"population.sample draw {index} ({_describe(draw)})")
    return " and ".join(parts)


_CHUNK = 4096  # sample draws generated at a time


def sample_draws(job: Job) -> list[dict[str, Any]]:
    """The `population.sample` draws, in order; ``[{}]`` (one empty draw) when n is 0.

    Draw i uses row i of ``default_rng(seed).random((n, k))`` over the k sampled names in sorted
    order, so raising n keeps every earlier draw, and with it the ids of models already trained.
    Each uniform u in [0, 1) becomes: loguniform exp(log lo + u·(log hi − log lo)); uniform
    lo + u·(hi − lo); int lo + ⌊u·(hi − lo + 1)⌋ (inclusive); choice the ⌊u·len⌋-th value.
    """
    return list(_iter_draws(job, check_repeats=True))


def _iter_draws(job: Job, *, check_repeats: bool) -> Iterator[dict[str, Any]]:
    """`sample_draws`, generated a chunk at a time; repeats raise UserError when reached."""
    n = job.population.sample.n
    if n == 0:
        yield {}
        return
    distributions = job.population.sample.distributions()
    discrete = all(dist.support_size is not None for dist in distributions.values())
    if check_repeats and discrete:
        _check_support(job, n, distributions)
    first: dict[tuple[Any, ...], int] = {}
    for start in range(0, n, _CHUNK):
        for offset, draw in enumerate(_draws(job, start, min(start + _CHUNK, n))):
            if check_repeats and discrete:
                _check_repeat(job, first, start + offset, draw)
            yield draw


def _draws(job: Job, start: int, stop: int) -> list[dict[str, Any]]:
    """Draws start … stop−1, without generating the ones before: each uniform consumes one 64-bit
    output of the PCG64 stream, so ``advance(start·k)`` lands exactly on row `start`."""
    sample = job.population.sample
    distributions: dict[str, Distribution] = sample.distributions()
    rng = np.random.default_rng(sample.seed)
    rng.bit_generator.advance(start * len(distributions))
    uniforms = rng.random((stop - start, len(distributions)))
    columns = {
        name: _transform(dist, uniforms[:, column])
        for column, (name, dist) in enumerate(distributions.items())
    }
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


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


def _check_support(job: Job, n: int, distributions: Mapping[str, Distribution]) -> None:
    """Two equal draws would train identical models under one id; more draws than discrete
    configurations must repeat. (A float draw repeats with probability ~2⁻⁵³, so only samples
    whose every hyperparameter is discrete are checked.)"""
    possible = math.prod(dist.support_size or 0 for dist in distributions.values())
    if n > possible:
        raise UserError(
            f"{job.source}: population.sample.n: {n} draws from only {possible} possible "
            "configurations must repeat; list discrete values in population.grid instead"
        )


def _check_repeat(
    job: Job, first: dict[tuple[Any, ...], int], index: int, draw: Mapping[str, Any]
) -> None:
    key = tuple(draw.values())
    if key in first:
        raise UserError(
            f"{job.source}: population.sample: draws {first[key]} and {index} are the same "
            f"configuration ({_describe(draw)}), which would train the same models twice; "
            "list discrete values in population.grid instead, or change n or seed"
        )
    first[key] = index


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in values.items())
