"""Multiplicity as a function of ε and of the number of models (SPEC §6).

Rashomon sets for growing ε are nested: ordered by the metric (baseline first), the set at ε is a
prefix of the set at any larger ε. So one array of the widest set serves the whole ε grid.

Multiplicity grows with the number of models looked at — ambiguity and discrepancy can only rise
when a model is added — so sets of different sizes are not comparable as they are. The model-count
curve draws k models from the set (always with its baseline, the others without replacement),
``n_draws`` times per k, and reports the mean and a percentile interval of each measure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from rashomon.analysis._multiplicity import MEASURES, example_measures
from rashomon.analysis._rashomon_set import TOLERANCE

COUNT_CURVE_MEASURES = [m for m in MEASURES if not m.endswith("rashomon_ratio")]


def epsilon_curve(
    set_probabilities: np.ndarray,
    set_metric: Sequence[float],
    epsilons: Sequence[float],
    *,
    relative: bool = False,
    pool_predictions: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every measure at each ε; one row per ε with ``rashomon_set_size``.

    ``set_probabilities`` (models, examples, classes) holds the widest set, ordered by
    ``set_metric`` with the baseline first; ε larger than that set's reach is cut to it.
    """
    metric = np.asarray(set_metric, np.float64)
    if len(metric) != len(set_probabilities) or np.any(np.diff(metric[1:]) < 0):
        raise ValueError("set_metric must give one value per model, sorted after the baseline")
    rows = []
    for epsilon in sorted(epsilons):
        if epsilon < 0:
            raise ValueError(f"epsilon {epsilon} < 0")
        threshold = metric[0] * (1 + epsilon) if relative else metric[0] + epsilon
        size = 1 + int(np.searchsorted(metric[1:], threshold + TOLERANCE, side="right"))
        summary = example_measures(set_probabilities[:size], pool_predictions).summary()
        rows.append({"epsilon": float(epsilon), "rashomon_set_size": size, **summary})
    return pd.DataFrame(rows)


def model_count_curve(
    set_probabilities: np.ndarray,
    sizes: Sequence[int] | None = None,
    *,
    n_draws: int = 30,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Each measure against the number of models drawn from the set, with bootstrap intervals.

    Returns one row per (size, measure): ``mean``, ``low``, ``high`` (the central ``confidence``
    percentile interval over draws). The full set is one draw, so its interval has zero width.
    The pool-based ratios are left out: they describe the pool, not the drawn models.
    """
    n_models = len(set_probabilities)
    sizes = default_sizes(n_models) if sizes is None else sorted(set(sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > n_models:
        raise ValueError(f"sizes must lie in 1 … {n_models}, got {sizes}")
    rng = np.random.default_rng(seed)
    tail = (1 - confidence) / 2
    rows = []
    for size in sizes:
        draws = 1 if size in (1, n_models) else n_draws
        values = pd.DataFrame(
            [_draw_summary(set_probabilities, size, rng) for _ in range(draws)],
            columns=COUNT_CURVE_MEASURES,
        )
        for measure in COUNT_CURVE_MEASURES:
            column = values[measure].to_numpy()
            low, high = np.quantile(column, [tail, 1 - tail])
            rows.append(
                {"size": size, "measure": measure, "mean": column.mean(), "low": low, "high": high}
            )
    return pd.DataFrame(rows)


def default_sizes(n_models: int) -> list[int]:
    """1, 2, 4, … below ``n_models``, then ``n_models``."""
    return sorted({*(2**k for k in range(int(np.log2(max(n_models, 1))) + 1)), n_models})


def _draw_summary(set_probabilities: np.ndarray, size: int, rng: np.random.Generator) -> dict:
    others = rng.choice(np.arange(1, len(set_probabilities)), size - 1, replace=False)
    return example_measures(set_probabilities[np.concatenate([[0], np.sort(others)])]).summary()
