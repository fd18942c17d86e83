"""The Rashomon set: the models within ε of the best one, chosen on validation metrics (SPEC §6).

R_ε = {h : L(h) ≤ L(h0) + ε} (absolute) or {h : L(h) ≤ (1 + ε)·L(h0)} (relative), with L a
loss-like column of the ``models`` table (default ``val_err`` = 1 − ``val_acc``) and h0 its
minimiser, or a baseline the caller names. Ties for h0 go to the lowest ``val_loss``, then the
smallest ``model_id``, so the baseline never depends on file order. The comparison allows 1e-12
of floating rounding: 0.145 + 0.02 must admit a model whose error is 1 − 0.835.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rashomon.jobs import UserError

DEFAULT_EPSILON = 0.01
DEFAULT_METRIC = "val_err"
TOLERANCE = 1e-12
_NOT_METRICS = {"init_seed", "order_seed", "data_seed", "trial"}


@dataclass(frozen=True)
class RashomonSet:
    """A Rashomon set within a population, with how it was chosen."""

    model_ids: list[str]  # members, baseline first, then by metric and model_id
    baseline_model_id: str
    pool_model_ids: list[str]  # every model with status ok, by model_id
    epsilon: float
    metric: str
    relative: bool
    threshold: float  # the largest metric value admitted
    excluded: dict[str, int]  # models left out of the pool, by status

    @property
    def size(self) -> int:
        return len(self.model_ids)

    @property
    def ratio(self) -> float:
        """Pool-based Rashomon ratio |R_ε| / m (not the volumetric ratio of Semenova et al.)."""
        return self.size / len(self.pool_model_ids)


def metric_values(models: pd.DataFrame, metric: str) -> pd.Series:
    """The loss-like ``metric`` per model; ``{split}_err`` is derived as 1 − ``{split}_acc``."""
    if metric.endswith("_err") and f"{metric[:-4]}_acc" in models.columns:
        return 1.0 - models[f"{metric[:-4]}_acc"]
    usable = sorted(
        [c for c in models.columns if _is_loss_like(models, c)]
        + [f"{c[:-4]}_err" for c in models.columns if c.endswith("_acc")]
    )
    if metric not in models.columns or not _is_loss_like(models, metric):
        hint = f"; use {metric[:-4]}_err (= 1 − accuracy)" if metric.endswith("_acc") else ""
        raise UserError(
            f"--metric {metric}: not a loss-like column of the models table{hint} "
            f"(choose from {', '.join(usable)})"
        )
    return models[metric].astype(float)


def _is_loss_like(models: pd.DataFrame, column: str) -> bool:
    return (
        pd.api.types.is_float_dtype(models[column])
        and not column.startswith("hp_")
        and not column.endswith("_acc")
        and column not in _NOT_METRICS
    )


def rashomon_set(
    models: pd.DataFrame,
    epsilon: float = DEFAULT_EPSILON,
    metric: str = DEFAULT_METRIC,
    *,
    relative: bool = False,
    baseline: str | None = None,
) -> RashomonSet:
    """The Rashomon set of the ``ok`` models of a ``models`` table (SPEC §6).

    Models that diverged or failed are left out of the pool and counted in ``excluded``.
    """
    if not np.isfinite(epsilon) or epsilon < 0:
        raise UserError(f"--epsilon {epsilon}: must be a finite number >= 0")
    excluded = models.loc[models["status"] != "ok", "status"].value_counts().to_dict()
    pool = models[models["status"] == "ok"]
    if pool.empty:
        raise UserError(
            f"the population has no model with status ok ({_describe(excluded)}); "
            "nothing to analyse"
        )
    values = metric_values(pool, metric)
    if not np.isfinite(values).all():
        raise UserError(f"--metric {metric}: some ok models have no finite value; pick another")
    order = pd.DataFrame(
        {"model_id": pool["model_id"], "value": values, "tie": pool["val_loss"]}
    ).sort_values(["value", "tie", "model_id"], ignore_index=True)
    baseline_id = order["model_id"].iloc[0] if baseline is None else baseline
    if baseline_id not in set(order["model_id"]):
        raise UserError(f"--baseline {baseline_id}: not the model_id of a model with status ok")
    best = float(order.loc[order["model_id"] == baseline_id, "value"].iloc[0])
    threshold = best * (1.0 + epsilon) if relative else best + epsilon
    members = order[order["value"] <= threshold + TOLERANCE]["model_id"].tolist()
    members = [m for m in members if m != baseline_id]
    return RashomonSet(
        model_ids=[baseline_id, *members],
        baseline_model_id=baseline_id,
        pool_model_ids=sorted(pool["model_id"]),
        epsilon=float(epsilon),
        metric=metric,
        relative=relative,
        threshold=threshold,
        excluded={str(k): int(v) for k, v in excluded.items()},
    )


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no models"
