"""Linear mode connectivity of pairs of trained models, measured from their saved weights.

The models of a Rashomon set are equally good by construction; whether two of them sit in one
basin of the loss or in different basins separated by a ridge says whether their disagreements
are small moves within one solution or distinct solutions. Two models are linearly connected
when the loss stays low on the straight segment between their parameters,
θ(t) = (1 − t)·θa + t·θb for t ∈ [0, 1] (Garipov et al. 2018; Frankle et al. 2020).

Barrier height (the definition of Frankle et al. 2020): the largest rise of the path above the
straight line between its end values, B = max_t [L(θ(t)) − ((1 − t)·L(θa) + t·L(θb))], for the
loss L (mean cross-entropy, nats) and likewise for the error (1 − accuracy). The endpoints count,
so B ≥ 0, and B ≈ 0 means linearly connected. Hidden units are not aligned first: permuting them
leaves a network's function unchanged but moves it in parameter space, so a barrier can separate
two copies of the same function.

Every point of a path, and every pair of one architecture, is evaluated in one batched forward
pass: the interpolated models are stacked on the model axis of their family's batched forward,
chunked over examples (and over pairs for large networks) to bound memory. Every family is
rebuilt from its weights file alone. Buffers are interpolated like the parameters: a BatchNorm
layer on the path uses (1 − t)·statistics of a + t·statistics of b, not statistics recomputed for
θ(t) (integer buffers, such as a count of batches, are a's).

References
----------
Garipov, Izmailov, Podoprikhin, Vetrov, Wilson (2018). Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs. NeurIPS.
Frankle, Dziugaite, Roy, Carbin (2020). Linear Mode Connectivity and the Lottery Ticket
Hypothesis. ICML.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from rashomon.analysis._figures import figure as _figure
from rashomon.analysis._figures import svg as _svg
from rashomon.analysis._figures import table as _table
from rashomon.analysis._rashomon_set import (
    DEFAULT_EPSILON,
    DEFAULT_METRIC,
    RashomonSet,
    rashomon_set,
)
from rashomon.analysis._results import SPLITS, Results, open_results
from rashomon.engine.model import Family, family_from_weights
from rashomon.engine.store import ResultsDir
from rashomon.jobs import UserError

__all__ = [
    "barrier_height",
    "connectivity_section",
    "interpolation_path",
    "linear_mode_connectivity",
]

N_POINTS = 25
_ACTIVATION_ELEMENTS = 1 << 25  # models × examples × widest layer at once (128 MB in float32)
_PARAMETER_ELEMENTS = 1 << 26  # interpolated parameters held at once
_ARCHITECTURE_COLUMNS = [
    *("hp_family", "hp_hidden", "hp_activation"),
    *("hp_channels", "hp_kernel", "hp_stride", "hp_pool"),
]


def interpolation_path(
    arch: Family,
    params_a: Sequence[torch.Tensor],
    params_b: Sequence[torch.Tensor],
    inputs: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    n_points: int = N_POINTS,
) -> pd.DataFrame:
    """Loss and error at ``n_points`` evenly spaced t ∈ [0, 1] between models a and b.

    ``arch`` is the models' family; ``params_a`` and ``params_b`` are one model each, its
    parameters then its buffers in the family's order (for a dense network ``[W0 (in, out),
    b0 (1, out), …]``, a slice of a pack's stacked parameters); ``inputs`` is (n, features),
    ``labels`` (n,) class indices. Returns columns ``t``, ``loss`` (mean cross-entropy, nats) and
    ``error`` (1 − accuracy).
    """
    dtype = torch.promote_types(params_a[0].dtype, params_b[0].dtype)
    t = _grid(n_points)
    loss, error = _paths(
        arch,
        [_cast(p.unsqueeze(0), dtype) for p in params_a],
        [_cast(p.unsqueeze(0), dtype) for p in params_b],
        t,
        torch.as_tensor(inputs).to(dtype),
        torch.as_tensor(labels, dtype=torch.int64),
    )
    return pd.DataFrame({"t": t.numpy(), "loss": loss[0], "error": error[0]})


def barrier_height(path: pd.DataFrame) -> tuple[float, float]:
    """(loss barrier, error barrier) of one `interpolation_path` (Frankle et al. 2020)."""
    t = path["t"].to_numpy(float)
    values = path[["loss", "error"]].to_numpy(float).T
    loss_barrier, error_barrier = _barriers(t, values)
    return float(loss_barrier), float(error_barrier)


def linear_mode_connectivity(
    results: Results | str | os.PathLike,
    n_pairs: int = 10,
    epsilon: float = DEFAULT_EPSILON,
    metric: str = DEFAULT_METRIC,
    split: str = "test",
    seed: int = 0,
    *,
    chosen: RashomonSet | None = None,
    n_points: int = N_POINTS,
) -> pd.DataFrame:
    """Paths and barrier heights of sampled pairs of ok models, inside and outside the set.

    Draws up to ``n_pairs`` distinct pairs with both models in the Rashomon set (``chosen``, or
    the set of ``epsilon`` and ``metric``) and up to ``n_pairs`` with at least one model outside
    it, uniformly among the pairs of ok models of the same architecture; the draw depends only on
    ``seed`` and the models table. Each path is evaluated on ``split`` of the job's dataset.

    One row per pair: ``model_a``, ``model_b``, ``inside`` (bool), ``loss_barrier``,
    ``error_barrier`` and the path itself as lists of ``n_points`` floats in ``t``, ``loss`` and
    ``error``; ``frame.explode(["t", "loss", "error"])`` gives it in long form.
    """
    results = results if isinstance(results, Results) else open_results(results)
    if split not in SPLITS:
        raise UserError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    store = _weights_store(results)
    chosen = chosen or rashomon_set(results.models, epsilon, metric)
    pairs = _sample_pairs(results.models, chosen, n_pairs, seed)
    models = _load_models(store, results.models, {*pairs["model_a"], *pairs["model_b"]})
    inputs, labels = _evaluation_data(store, split)
    t = _grid(n_points)
    loss, error = np.empty((len(pairs), n_points)), np.empty((len(pairs), n_points))
    for rows, arch, starts, ends in _batches(pairs, models):
        if math.prod(arch.in_shape) != inputs.shape[1]:
            raise UserError(
                f"{store.location}: the saved weights take {math.prod(arch.in_shape)} features "
                f"but the job's dataset now has {inputs.shape[1]}; the dataset changed since "
                "the run"
            )
        loss[rows], error[rows] = _paths(arch, starts, ends, t, inputs.to(starts[0].dtype), labels)
    return pairs.assign(
        loss_barrier=_barriers(t.numpy(), loss),
        error_barrier=_barriers(t.numpy(), error),
        t=[t.tolist()] * len(pairs),
        loss=loss.tolist(),
        error=error.tolist(),
    )


def connectivity_section(
    results: Results, analysis, n_pairs: int = 10, seed: int = 0, n_points: int = N_POINTS
) -> str:
    """The report's HTML: paths of sampled pairs, inside vs outside the set, and their barriers.

    ``analysis`` is an `Analysis` (its set and split are used) or a `RashomonSet` (split test).
    When the weights or the dataset are not available, a one-line note says why.
    """
    chosen = getattr(analysis, "rashomon_set", analysis)
    split = getattr(analysis, "split", "test")
    try:
        pairs = linear_mode_connectivity(
            results, n_pairs, split=split, seed=seed, chosen=chosen, n_points=n_points
        )
    except UserError as error:
        return f"<p>Linear mode connectivity not measured: {html.escape(str(error))}</p>"
    if pairs.empty:
        return "<p>Linear mode connectivity needs two ok models of the same architecture.</p>"
    groups = {False: ("#999", "one or both outside"), True: ("C3", "both in the Rashomon set")}
    with _figure(1, 2, panel_height=3.0) as (figure, (loss_axes, error_axes)):
        for inside, (color, label) in groups.items():
            for n, row in enumerate(pairs[pairs["inside"] == inside].itertuples()):
                loss_axes.plot(row.t, row.loss, color=color, lw=1, label=None if n else label)
                error_axes.plot(row.t, row.error, color=color, lw=1)
        for axes, quantity, unit in ((loss_axes, "loss", "mean cross-entropy, nats"),
                                     (error_axes, "error", "share of examples")):  # fmt: skip
            axes.set(title=f"{split} {quantity} along the path", ylabel=unit)
        figure.supxlabel("t, the position on the segment θ(t) = (1 − t)·θa + t·θb")
        figure.legend(*loss_axes.get_legend_handles_labels(), loc="outside upper center",
                      ncols=2)  # fmt: skip
        image = _svg(figure)
    summary = (
        pairs.assign(pair=pairs["inside"].map(lambda inside: groups[inside][1]))
        .groupby("pair", sort=False)
        .agg(
            pairs=("inside", "size"),
            **{
                f"{kind} barrier {stat}{unit}": (f"{kind}_barrier", stat)
                for kind, unit in (("loss", " (nats)"), ("error", ""))
                for stat in ("mean", "max")
            },
        )
        .reset_index()
    )
    return (
        image
        + _table(summary)
        + f'<p class="note">Straight lines between the saved weights of sampled pairs of ok '
        f"models, {n_points} points each, on the {split} split. Barrier height (Frankle et al. "
        "2020): max over t of L(θ(t)) − ((1 − t)·L(θa) + t·L(θb)), for the loss and the error "
        "(a share of examples); "
        "≈ 0 means the two models are linearly connected (one basin). Hidden units are not "
        "aligned first, so a barrier can separate two copies of one function.</p>"
    )


def _grid(n_points: int) -> torch.Tensor:
    if n_points < 2:
        raise ValueError(f"n_points={n_points}: a path needs at least its two endpoints")
    return torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)


def _barriers(t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Barrier height of each row of ``values`` (paths × points) over the grid ``t``."""
    line = (1.0 - t) * values[:, :1] + t * values[:, -1:]
    return (values - line).max(axis=1)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _interpolate(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(pairs, ...) ends -> (pairs × points, ...): (1 − t)·a + t·b, or a for integer tensors."""
    if not a.is_floating_point():
        return a.unsqueeze(1).expand(-1, len(t), *a.shape[1:]).flatten(0, 1)
    weight = t.to(a.dtype).view(1, -1, *([1] * (a.dim() - 1)))
    return torch.lerp(a.unsqueeze(1), b.unsqueeze(1), weight).flatten(0, 1)


@torch.inference_mode()
def _paths(
    arch: Family,
    starts: Sequence[torch.Tensor],
    ends: Sequence[torch.Tensor],
    t: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, error), each (pairs, points), along the segments from stacked ``starts`` to
    ``ends`` (parameters, then buffers); the pairs × points interpolated models go through the
    family's forward together."""
    per_batch = max(1, _PARAMETER_ELEMENTS // (len(t) * arch.n_parameters))
    losses, errors = [], []
    for first in range(0, len(starts[0]), per_batch):
        chunk = slice(first, first + per_batch)
        state = [_interpolate(a[chunk], b[chunk], t) for a, b in zip(starts, ends, strict=True)]
        loss, error = _evaluate(arch, state, inputs, labels)
        losses.append(loss.view(-1, len(t)))
        errors.append(error.view(-1, len(t)))
    return torch.cat(losses).numpy(), torch.cat(errors).numpy()


def _evaluate(
    arch: Family, state: list[torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and error of every stacked model (float64), chunked over examples."""
    n_models, n = len(state[0]), len(labels)
    n_params = len(arch.parameter_names())
    params, buffers = state[:n_params], state[n_params:]
    chunk = max(1, _ACTIVATION_ELEMENTS // (n_models * arch.activation_elements))
    loss_sum = torch.zeros(n_models, dtype=torch.float64)
    wrong = torch.zeros(n_models, dtype=torch.float64)
    for start in range(0, n, chunk):
        logits = arch.forward(params, inputs[start : start + chunk], buffers=buffers)
        rows = labels[start : start + chunk]
        picked = torch.log_softmax(logits, dim=-1).gather(
            -1, rows.view(1, -1, 1).expand(n_models, -1, 1)
        )
        loss_sum -= picked.sum(dim=(1, 2)).double()
        wrong += (logits.argmax(dim=-1) != rows).sum(dim=1).double()
    return loss_sum / n, wrong / n


def _weights_store(results: Results) -> ResultsDir:
    store = ResultsDir(results.location)
    if not store.has_weights():
        raise UserError(
            f"{results.location}: no saved weights (the job ran with output.weights: false); "
            "rerun it with output.weights: true to measure linear mode connectivity"
        )
    return store


def _sample_pairs(
    models: pd.DataFrame, chosen: RashomonSet, n_pairs: int, seed: int
) -> pd.DataFrame:
    """``model_a``, ``model_b``, ``inside``: pairs within the set, then pairs reaching outside.

    Per architecture, with ids sorted, the pairs within the set are the pairs (i < j) of its
    members, and those reaching outside are the pairs (i < j, i < |outside|) of the outside
    models followed by the members: both are ranges of one row-major pair index, so distinct
    pairs are drawn uniformly without listing them (10,000 models have 5·10⁷ pairs).
    """
    pool = models[models["model_id"].isin(chosen.pool_model_ids)]
    members = set(chosen.model_ids)
    within, reaching = [], []
    for _, group in pool.groupby(_architecture_key(pool).to_numpy(), sort=True):
        ids = sorted(group["model_id"])
        inside = [m for m in ids if m in members]
        outside = [m for m in ids if m not in members]
        within.append((inside, len(inside)))
        reaching.append((outside + inside, len(outside)))
    frames = [
        pd.DataFrame(
            _draw(orderings, n_pairs, np.random.default_rng([seed, stream])),
            columns=["model_a", "model_b"],
            dtype=object,
        ).assign(inside=stream == 0)
        for stream, orderings in enumerate((within, reaching))
    ]
    return pd.concat(frames, ignore_index=True)


def _architecture_key(models: pd.DataFrame) -> pd.Series:
    """Equal for models whose parameters have the same shapes (all logistic models alike)."""
    columns = models.reindex(columns=_ARCHITECTURE_COLUMNS).astype(object).fillna("").astype(str)
    key = columns.agg("|".join, axis=1)
    return key.where(columns["hp_family"] != "logistic", "logistic")


def _draw(
    orderings: list[tuple[list[str], int]], n_pairs: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Up to ``n_pairs`` distinct pairs (o[i], o[j]), i < j, i < rows, over all (o, rows)."""
    ends = np.cumsum([_offset(rows, len(ordering)) for ordering, rows in orderings])
    total = int(ends[-1]) if len(ends) else 0
    pairs = []
    for k in rng.choice(total, size=min(n_pairs, total), replace=False).tolist():
        group = int(np.searchsorted(ends, k, side="right"))
        ordering = orderings[group][0]
        i, j = _pair_at(k - (int(ends[group - 1]) if group else 0), len(ordering))
        pairs.append((ordering[i], ordering[j]))
    return pairs


def _offset(row: int, n: int) -> int:
    """Number of pairs (i, j), i < j < n, with i < ``row``."""
    return row * (2 * n - row - 1) // 2


def _pair_at(k: int, n: int) -> tuple[int, int]:
    """The ``k``-th pair (i, j), i < j < n, in row-major order (exact integer arithmetic)."""
    i = (2 * n - 1 - math.isqrt((2 * n - 1) ** 2 - 8 * k)) // 2
    if _offset(i, n) > k:
        i -= 1
    return i, i + 1 + k - _offset(i, n)


def _load_models(
    store: ResultsDir, models: pd.DataFrame, model_ids: set[str]
) -> dict[str, tuple[Family, list[torch.Tensor]]]:
    """Family and state (parameters, then buffers) of each wanted model; each needed pack is
    read once, its family rebuilt from the weights file."""
    wanted = models[models["model_id"].isin(model_ids)]
    loaded = {}
    for pack_id, ids in wanted.groupby("pack_id")["model_id"]:
        where = store.pack_file("weights", pack_id)
        pack_ids, tensors, metadata = store.read_weights(pack_id)
        missing = set(ids) - set(pack_ids)
        if missing:
            raise UserError(
                f"{where}: no weights for {sorted(missing)}; rerun `rashomon run` to redo this pack"
            )
        try:
            family = family_from_weights(metadata, tensors)
            state = [tensors[n] for n in family.parameter_names() + family.buffer_names()]
        except (UserError, KeyError) as error:
            raise UserError(f"{where}: cannot rebuild its models: {error}") from None
        row = {model_id: i for i, model_id in enumerate(pack_ids)}
        loaded |= {m: (family, [t[row[m]] for t in state]) for m in ids}
    return loaded


def _family_key(family: Family) -> str:
    return json.dumps(family.description(), sort_keys=True)


def _batches(pairs: pd.DataFrame, models: dict[str, tuple[Family, list[torch.Tensor]]]):
    """(rows, family, stacked starts, stacked ends) per family and dtype."""
    groups: dict[tuple[str, torch.dtype], list[int]] = {}
    families: dict[str, Family] = {}
    for row, (a, b) in enumerate(zip(pairs["model_a"], pairs["model_b"], strict=True)):
        (arch, params_a), (arch_b, params_b) = models[a], models[b]
        key = _family_key(arch)
        if key != _family_key(arch_b):
            raise UserError(
                f"models {a} and {b} have different architectures ({key}, "
                f"{_family_key(arch_b)}); the models table's hp_ columns do not match the weights"
            )
        families.setdefault(key, arch)
        dtype = torch.promote_types(params_a[0].dtype, params_b[0].dtype)
        groups.setdefault((key, dtype), []).append(row)
    for (key, dtype), rows in groups.items():
        stacks = [
            [
                _cast(torch.stack(parts), dtype)
                for parts in zip(*(models[m][1] for m in ids), strict=True)
            ]
            for ids in (pairs["model_a"].iloc[rows], pairs["model_b"].iloc[rows])
        ]
        yield rows, families[key], *stacks


def _evaluation_data(store: ResultsDir, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of ``split``, prepared exactly as for training."""
    dataset = store.dataset()
    rows = dataset.indices(split)
    return torch.from_numpy(dataset.features[rows]), torch.from_numpy(dataset.labels[rows])
