"""Population-level flatness analysis (SPEC §8): do flatter minima generalise better, and do the
models of a Rashomon set that sit in flatter minima disagree less with the rest of the set?

Everything works from the ``models`` table (the flatness columns of SPEC §8, one row per model)
and, for disagreement, the predicted classes of the Rashomon set. Only models with status ``ok``
and finite values take part; a statistic that is null for every such model (``flatness:
{enabled: false}``, or a run that predates the statistics) is left out.

Signs: τ > 0 when a larger statistic goes with a larger target. A sharpness statistic that
predicts generalisation has τ < 0 with test accuracy and τ > 0 with the generalisation gap
g = val_loss − train_loss.

References
----------
Kendall (1945). The Treatment of Ties in Ranking Problems. Biometrika.
Jiang, Neyshabur, Mobahi, Krishnan, Bengio (2020). Fantastic Generalization Measures and Where to
Find Them. ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rashomon.jobs import FLATNESS_COLUMNS

__all__ = [
    "FLATNESS_COLUMNS",
    "disagreement_with_set",
    "flatness_statistics",
    "flatness_summary",
    "granulated_kendall_tau",
    "kendall_tau",
    "varying_axes",
]

SEED_COLUMNS = ("init_seed", "order_seed", "data_seed")
_REQUIRED = ("model_id", "status", "test_acc", "train_loss", "val_loss")
_PAIRWISE_LIMIT = 256  # larger groups go through the O(n log n) `kendall_tau`
_CHUNK_ELEMENTS = 1 << 22


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b of two paired samples; pairs with a non-finite value are dropped.

    τ_b = (n_c − n_d) / sqrt((n_0 − n_x)(n_0 − n_y)), with n_c and n_d the concordant and
    discordant pairs, n_0 = n(n − 1)/2 and n_x, n_y the pairs tied in x and in y (Kendall 1945).
    NaN with fewer than two finite pairs or when either sample is constant.
    """
    x, y = _check_samples(x, y)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    # scipy.stats.kendalltau's counts and formula, bitwise: importing scipy.stats costs more
    # CPU than the rest of `analyze` on 10,000 models
    order = np.argsort(y)
    x, y = x[order], _dense_ranks(y[order])
    order = np.argsort(x, kind="mergesort")
    x, y = _dense_ranks(x[order]), y[order]
    joint = np.diff(np.flatnonzero(np.r_[True, (x[1:] != x[:-1]) | (y[1:] != y[:-1]), True]))
    total = len(x) * (len(x) - 1) // 2
    x_ties, y_ties = _tied_pairs(np.bincount(x)), _tied_pairs(np.bincount(y))
    difference = total - x_ties - y_ties + _tied_pairs(joint) - 2 * _inversions(y)
    tau = difference / np.sqrt(total - x_ties) / np.sqrt(total - y_ties)
    return float(np.minimum(1.0, max(-1.0, tau)))


def _dense_ranks(sorted_values: np.ndarray) -> np.ndarray:
    return np.r_[True, sorted_values[1:] != sorted_values[:-1]].cumsum(dtype=np.intp)


def _tied_pairs(counts: np.ndarray) -> int:
    counts = counts[counts > 1].astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j] (non-negative integers): a bottom-up merge sort,
    each level at once: a right half's element passes the left half's elements above it."""
    n = len(values)
    span = int(values.max()) + 1
    index = np.arange(n, dtype=np.int64)
    merged = values.astype(np.int64)
    count, width = 0, 1
    while width < n:
        block = index // (2 * width)
        right = (index // width) % 2 == 1
        keys = block * span + merged  # each half sorted: the left halves' keys are sorted
        below = np.searchsorted(keys[~right], keys[right], side="right")
        count += int(((block[right] + 1) * width - below).sum())
        merged = np.sort(keys) - block * span
        width *= 2
    return count


def varying_axes(models: pd.DataFrame) -> list[str]:
    """The hyperparameters (``hp_<name>`` columns, named without the prefix) that take more than
    one value among ``models``."""
    return [
        column[3:]
        for column in models.columns
        if column.startswith("hp_") and models[column].nunique(dropna=False) > 1
    ]


def granulated_kendall_tau(
    frame: pd.DataFrame,
    statistic: str,
    target: str,
    axes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Jiang et al.'s (2020) granulated Kendall coefficient of ``statistic`` with ``target``.

    For hyperparameter axis i, the models are split into groups that agree on every other
    ``hp_*`` column and on the seeds ``init_seed``, ``order_seed`` and ``data_seed``, so each
    group varies axis i alone (the seeds are held fixed like any other hyperparameter: a group
    compares the values of axis i under the same random draws; they are not axes themselves).

        ψ_i = (1/|G_i|) Σ_{g ∈ G_i} τ_b(statistic_g, target_g),   Ψ = (1/|A|) Σ_{i ∈ A} ψ_i

    Groups where τ_b is undefined (fewer than two finite models, or a constant statistic or
    target) are left out of G_i, and axes with no group left out of A. ``axes`` are hyperparameter
    names (``lr`` for ``hp_lr``), by default those that vary (`varying_axes`). Returns
    ``{axis: ψ_i, …, "mean": Ψ}``, NaN where undefined.
    """
    axes = varying_axes(frame) if axes is None else list(axes)
    _check_columns(frame, [statistic, target, *(f"hp_{axis}" for axis in axes)])
    return _granulated(_floats(frame, statistic), _floats(frame, target), _groups(frame, axes))


def disagreement_with_set(set_predictions: np.ndarray) -> np.ndarray:
    """Per model of a set: the share of (other model, example) pairs on which it predicts another
    class than the other model.

        d(h) = (1/((m − 1) n)) Σ_{h' ≠ h} Σ_x 1[ŷ_h(x) ≠ ŷ_h'(x)]
             = (1/((m − 1) n)) Σ_x (m − c_ŷh(x)(x))

    with c_k(x) the models of the set predicting k at x. Its mean over the set is the mean
    disagreement of SPEC §6. ``set_predictions`` is an integer (models, examples) array; a set of
    one model gives 0. Costs O(models × examples), computed in chunks of examples.
    """
    predictions = np.asarray(set_predictions)
    if predictions.ndim != 2 or predictions.shape[0] == 0 or predictions.shape[1] == 0:
        raise ValueError(
            "set_predictions must be a non-empty (models, examples) array, got shape "
            f"{predictions.shape}"
        )
    if not np.issubdtype(predictions.dtype, np.integer) or (
        np.issubdtype(predictions.dtype, np.signedinteger) and predictions.min() < 0
    ):
        raise ValueError("set_predictions must hold non-negative integer classes")
    m, n = predictions.shape
    if m == 1:
        return np.zeros(1)
    n_classes = int(predictions.max()) + 1
    step = max(1, _CHUNK_ELEMENTS // m)
    agreeing = np.zeros(m, np.int64)  # Σ_x c_ŷh(x)(x), h itself included
    for start in range(0, n, step):
        chunk = predictions[:, start : start + step]
        width = chunk.shape[1]
        cells = chunk.astype(np.intp) * width + np.arange(width)
        counts = np.bincount(cells.ravel(), minlength=n_classes * width)
        agreeing += counts[cells].sum(axis=1)
    return (m * n - agreeing) / ((m - 1) * n)


def flatness_statistics(models: pd.DataFrame) -> list[str]:
    """The columns of `FLATNESS_COLUMNS` with a finite value for at least one ``ok`` model."""
    _check_columns(models, ["status"])
    ok = models[models["status"] == "ok"]
    return [
        name
        for name in FLATNESS_COLUMNS
        if name in ok.columns and np.isfinite(_floats(ok, name)).any()
    ]


def flatness_summary(
    models: pd.DataFrame,
    rashomon_model_ids: Sequence[str],
    disagreement_per_model: np.ndarray | None = None,
) -> dict:
    """Every statistic of `flatness_statistics` against generalisation and the Rashomon set.

    ``disagreement_per_model`` follows ``rashomon_model_ids`` (`disagreement_with_set` of the
    set's predictions). Returns ``{}`` without statistics, otherwise a JSON-ready dict (NaN
    becomes None)::

        {"n_models": ok models, "rashomon_set_size": |R_ε|, "axes": [varying hyperparameters],
         "statistics": {statistic: {
             "n_models": ok models with a finite value, "n_inside": of them in R_ε,
             "tau_test_acc": τ_b over the ok models, "tau_generalization_gap": τ_b with
             val_loss − train_loss, "granulated_tau_test_acc": {axis: ψ_i, …, "mean": Ψ},
             "granulated_tau_generalization_gap": {…}, "inside_mean", "outside_mean",
             "inside_median", "outside_median": the statistic in R_ε and in the rest of the
             ok models, "tau_disagreement": τ_b with disagreement_per_model over R_ε}}}
    """
    _check_columns(models, _REQUIRED)
    statistics = flatness_statistics(models)
    if not statistics:
        return {}
    ok = models[models["status"] == "ok"]
    set_ids = list(rashomon_model_ids)
    unknown = set(set_ids) - set(ok["model_id"])
    if unknown or len(set(set_ids)) != len(set_ids):
        raise ValueError(
            "rashomon_model_ids must be distinct models with status ok; not ok: "
            f"{sorted(unknown)[:5]}"
        )
    inside = ok["model_id"].isin(set_ids).to_numpy()
    disagreement = np.full(len(ok), np.nan)
    if disagreement_per_model is not None:
        per_model = np.asarray(disagreement_per_model, float)
        if per_model.shape != (len(set_ids),):
            raise ValueError(
                f"disagreement_per_model has shape {per_model.shape}, expected "
                f"({len(set_ids)},): one value per model of rashomon_model_ids"
            )
        disagreement = pd.Series(per_model, index=set_ids).reindex(ok["model_id"]).to_numpy()
    targets = {
        "test_acc": _floats(ok, "test_acc"),
        "generalization_gap": _floats(ok, "val_loss") - _floats(ok, "train_loss"),
    }
    axes = varying_axes(ok)
    groups = _groups(ok, axes)
    summary = {}
    for name in statistics:
        values = _floats(ok, name)
        finite = np.isfinite(values)
        entry = {"n_models": int(finite.sum()), "n_inside": int((finite & inside).sum())}
        entry |= {f"tau_{t}": kendall_tau(values, target) for t, target in targets.items()}
        entry |= {
            f"granulated_tau_{t}": _granulated(values, target, groups)
            for t, target in targets.items()
        }
        for side, members in (("inside", inside), ("outside", ~inside)):
            chosen = values[finite & members]
            entry[f"{side}_mean"] = float(chosen.mean()) if len(chosen) else math.nan
            entry[f"{side}_median"] = float(np.median(chosen)) if len(chosen) else math.nan
        entry["tau_disagreement"] = kendall_tau(values, disagreement)
        summary[name] = entry
    return _json_ready(
        {
            "n_models": len(ok),
            "rashomon_set_size": len(set_ids),
            "axes": axes,
            "statistics": summary,
        }
    )


def _groups(frame: pd.DataFrame, axes: Sequence[str]) -> dict[str, np.ndarray]:
    """Per axis, a group code per row: rows that agree on every other hyperparameter and seed."""
    fixed = [c for c in frame.columns if c.startswith("hp_") or c in SEED_COLUMNS]
    groups = {}
    for axis in axes:
        others = [c for c in fixed if c != f"hp_{axis}"]
        groups[axis] = (
            frame.groupby(others, dropna=False, sort=False).ngroup().to_numpy()
            if others
            else np.zeros(len(frame), np.intp)
        )
    return groups


def _granulated(x: np.ndarray, y: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    finite = np.isfinite(x) & np.isfinite(y)
    result = {
        axis: _nanmean(_group_taus(x[finite], y[finite], codes[finite]))
        for axis, codes in groups.items()
    }
    result["mean"] = _nanmean(np.array(list(result.values()), float))
    return result


def _group_taus(x: np.ndarray, y: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """τ_b within each group of ``codes`` (NaN where undefined), all pairs of the groups of one
    size at once: τ_b = Σ sx·sy / sqrt(Σ|sx| · Σ|sy|), sx = sign(x_i − x_j) over pairs i < j."""
    order = np.argsort(codes, kind="stable")
    x, y, codes = x[order], y[order], codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sizes = np.diff(np.r_[starts, len(codes)])
    taus = np.full(len(starts), np.nan)
    for size in np.unique(sizes[sizes >= 2]):
        chosen = np.flatnonzero(sizes == size)
        if size > _PAIRWISE_LIMIT:
            for group in chosen:
                rows = slice(starts[group], starts[group] + size)
                taus[group] = kendall_tau(x[rows], y[rows])
            continue
        first, second = np.triu_indices(size, 1)
        left, right = starts[chosen, None] + first, starts[chosen, None] + second
        sx, sy = np.sign(x[left] - x[right]), np.sign(y[left] - y[right])
        scale = np.sqrt(np.abs(sx).sum(axis=1) * np.abs(sy).sum(axis=1))
        concordance = (sx * sy).sum(axis=1)
        taus[chosen] = np.divide(
            concordance, scale, out=np.full(len(chosen), np.nan), where=scale > 0
        )
    return taus


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def _floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy(dtype=float, na_value=np.nan)


def _json_ready(value):
    """``value`` with every non-finite float replaced by None, so that JSON stays valid."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return value


def _check_samples(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of one length, got shapes {x.shape} and {y.shape}")
    return x, y


def _check_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the models table has no column {', '.join(missing)}")
