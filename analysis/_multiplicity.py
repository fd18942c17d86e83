"""All multiplicity measures of one Rashomon set, computed in one pass over chunks of examples.

The per-example measures (ambiguity flag, disagreement, VPR, score spread, Rashomon capacity) are
kept for every example, with the predicted classes of the set and of the pool (one byte per model
and example). Any subset of examples — the whole split or one subgroup — is then summarised
without touching the probabilities again, which is what makes subgroups cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rashomon.analysis._measures import (
    disagreement,
    discrepancy,
    obscurity,
    pattern_count,
    predicted_classes,
    rashomon_capacity,
    score_std,
    viable_prediction_range,
)

VPR_THRESHOLD = 0.1
MEASURES = (
    "ambiguity",
    "discrepancy",
    "obscurity",
    "disagreement",
    "self_consistency",
    "vpr_mean",
    "vpr_share_ge_0.1",
    "score_std_mean",
    "rashomon_capacity_mean",
    "rashomon_capacity_max",
    "rashomon_ratio",
    "pattern_rashomon_ratio",
)


@dataclass
class ExampleMeasures:
    """Per-example measures of a set (baseline = row 0); classes predicted by set and pool."""

    ambiguous: np.ndarray  # (n,) bool
    disagreement: np.ndarray  # (n,)
    viable_prediction_range: np.ndarray  # (n,)
    score_std: np.ndarray  # (n,)
    rashomon_capacity: np.ndarray  # (n,)
    set_predictions: np.ndarray  # (set size, n)
    pool_predictions: np.ndarray  # (pool size, n)

    @classmethod
    def empty(
        cls, set_size: int, pool_size: int, n_examples: int, n_classes: int
    ) -> ExampleMeasures:
        dtype = np.uint8 if n_classes <= 256 else np.uint32
        return cls(
            ambiguous=np.zeros(n_examples, bool),
            disagreement=np.zeros(n_examples),
            viable_prediction_range=np.zeros(n_examples),
            score_std=np.zeros(n_examples),
            rashomon_capacity=np.ones(n_examples),
            set_predictions=np.zeros((set_size, n_examples), dtype),
            pool_predictions=np.zeros((pool_size, n_examples), dtype),
        )

    def add(self, set_probabilities: np.ndarray, examples: slice) -> None:
        """Measure one chunk of examples from the set's probabilities (models, chunk, classes)."""
        predictions = predicted_classes(set_probabilities)
        self.set_predictions[:, examples] = predictions
        self.ambiguous[examples] = (predictions != predictions[0]).any(axis=0)
        n_classes = set_probabilities.shape[-1]
        self.disagreement[examples] = disagreement(predictions, n_classes)
        self.viable_prediction_range[examples] = viable_prediction_range(set_probabilities)
        self.score_std[examples] = score_std(set_probabilities, baseline=0)
        self.rashomon_capacity[examples] = rashomon_capacity(set_probabilities)

    def summary(self, examples: np.ndarray | slice = slice(None)) -> dict[str, float]:
        """Every set-level measure of SPEC §6 over ``examples`` (a mask or slice)."""
        set_predictions = self.set_predictions[:, examples]
        pool_size = len(self.pool_predictions)
        return {
            "ambiguity": float(self.ambiguous[examples].mean()),
            "discrepancy": discrepancy(set_predictions),
            "obscurity": obscurity(set_predictions),
            "disagreement": float(self.disagreement[examples].mean()),
            "self_consistency": float(1.0 - self.disagreement[examples].mean()),
            "vpr_mean": float(self.viable_prediction_range[examples].mean()),
            "vpr_share_ge_0.1": float(
                (self.viable_prediction_range[examples] >= VPR_THRESHOLD).mean()
            ),
            "score_std_mean": float(self.score_std[examples].mean()),
            "rashomon_capacity_mean": float(self.rashomon_capacity[examples].mean()),
            "rashomon_capacity_max": float(self.rashomon_capacity[examples].max()),
            "rashomon_ratio": len(set_predictions) / pool_size,
            "pattern_rashomon_ratio": pattern_count(set_predictions)
            / pattern_count(self.pool_predictions[:, examples]),
        }


def example_measures(
    set_probabilities: np.ndarray,
    pool_predictions: np.ndarray | None = None,
    chunk_examples: int = 1024,
) -> ExampleMeasures:
    """`ExampleMeasures` of an in-memory set (baseline = row 0); the pool defaults to the set."""
    set_size, n_examples, n_classes = set_probabilities.shape
    measures = ExampleMeasures.empty(set_size, 0, n_examples, n_classes)
    for start in range(0, n_examples, chunk_examples):
        chunk = slice(start, min(start + chunk_examples, n_examples))
        measures.add(set_probabilities[:, chunk], chunk)
    measures.pool_predictions = (
        measures.set_predictions if pool_predictions is None else pool_predictions
    )
    return measures


def multiplicity(
    set_probabilities: np.ndarray, pool_predictions: np.ndarray | None = None
) -> dict[str, float]:
    """Every measure of SPEC §6 for a set given as an array (baseline = row 0)."""
    return example_measures(set_probabilities, pool_predictions).summary()
