"""Predictive multiplicity measures of SPEC §6, as pure vectorised functions over arrays.

Every function takes the models of one Rashomon set as the first axis: ``predictions`` is an
integer array (models, examples) of predicted classes, ``probabilities`` a float array (models,
examples, classes). ``baseline`` is the row of the reference model h0 (the set's best model).
Per-example measures return an array over examples; set-level ones a float. A set of one model
has zero multiplicity everywhere.

References
----------
Marx, Calmon, Ustun (2020). Predictive Multiplicity in Classification. ICML.
Watson-Daniels, Parkes, Ustun (2023). Predictive Multiplicity in Probabilistic Classification. AAAI.
Cooper et al. (2024). Arbitrariness and Social Prediction: The Confounding Role of Variance in
Fair Classification. AAAI.
Hsu, Calmon (2022). Rashomon Capacity: A Metric for Predictive Multiplicity in Classification.
NeurIPS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from rashomon.analysis._capacity import rashomon_capacity

__all__ = [
    "ambiguity",
    "ambiguous_examples",
    "disagreement",
    "discrepancy",
    "flip_rates",
    "obscurity",
    "pattern_count",
    "pattern_rashomon_ratio",
    "predicted_classes",
    "rashomon_capacity",
    "score_std",
    "self_consistency",
    "viable_prediction_range",
]


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """ŷ = argmax_k p_k (first maximum on ties), in the smallest unsigned dtype that fits."""
    probabilities = _check_probabilities(probabilities)
    if probabilities.shape[-1] == 2:  # the same classes as argmax, several times faster
        return (probabilities[..., 1] > probabilities[..., 0]).view(np.uint8)
    dtype = np.uint8 if probabilities.shape[-1] <= 256 else np.uint32
    return probabilities.argmax(axis=-1).astype(dtype)


def class_columns(classes: Sequence[np.ndarray]) -> np.ndarray:
    """`predicted_classes` from one array per class (the layout of a pack file's columns)."""
    if len(classes) == 2:
        return (classes[1] > classes[0]).view(np.uint8)
    dtype = np.uint8 if len(classes) <= 256 else np.uint32
    return np.argmax(np.stack(classes), axis=0).astype(dtype)


def ambiguous_examples(predictions: np.ndarray, baseline: int = 0) -> np.ndarray:
    """Per example: does any model of the set predict a class other than the baseline's?"""
    predictions = _check_predictions(predictions, baseline)
    return (predictions != predictions[baseline]).any(axis=0)


def ambiguity(predictions: np.ndarray, baseline: int = 0) -> float:
    """Share of examples on which some model of the set disagrees with the baseline.

    ambiguity = (1/n) Σ_x 1[∃ h: ŷ_h(x) ≠ ŷ_h0(x)]   (Marx, Calmon, Ustun 2020)
    """
    return float(ambiguous_examples(predictions, baseline).mean())


def flip_rates(predictions: np.ndarray, baseline: int = 0) -> np.ndarray:
    """Per model: share of examples where it predicts a class other than the baseline's."""
    predictions = _check_predictions(predictions, baseline)
    return (predictions != predictions[baseline]).mean(axis=1)


def discrepancy(predictions: np.ndarray, baseline: int = 0) -> float:
    """max_h (1/n) Σ_x 1[ŷ_h(x) ≠ ŷ_h0(x)]   (Marx, Calmon, Ustun 2020)."""
    return float(flip_rates(predictions, baseline).max())


def obscurity(predictions: np.ndarray, baseline: int = 0) -> float:
    """Mean over the models other than the baseline of their flip rate (0 for one model)."""
    return mean_flip_rate(flip_rates(predictions, baseline), baseline)


def mean_flip_rate(rates: np.ndarray, baseline: int = 0) -> float:
    """Obscurity from the `flip_rates` of the set's models."""
    return float(np.delete(rates, baseline).mean()) if len(rates) > 1 else 0.0


def disagreement(predictions: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Per example: probability that two distinct models drawn from the set disagree.

    D(x) = 1 − Σ_k c_k (c_k − 1) / (m (m − 1)), c_k the models predicting k (Cooper et al. 2024);
    0 for a one-model set. For two classes D(x) = 2 c_0 c_1 / (m (m − 1)).
    """
    predictions = _check_predictions(predictions)
    m = predictions.shape[0]
    if m < 2:
        return np.zeros(predictions.shape[1])
    n_classes = int(predictions.max()) + 1 if n_classes is None else n_classes
    agreeing = np.zeros(predictions.shape[1])
    for k in range(n_classes):
        count = (predictions == k).sum(axis=0, dtype=np.float64)
        agreeing += count * (count - 1)
    return 1.0 - agreeing / (m * (m - 1))


def self_consistency(predictions: np.ndarray, n_classes: int | None = None) -> float:
    """1 − mean disagreement: how often two models of the set agree (Cooper et al. 2024)."""
    return float(1.0 - disagreement(predictions, n_classes).mean())


def viable_prediction_range(probabilities: np.ndarray) -> np.ndarray:
    """Per example: VPR(x) = max_k [max_h p_h,k(x) − min_h p_h,k(x)].

    (Watson-Daniels, Parkes, Ustun 2023.)
    """
    probabilities = _check_probabilities(probabilities)
    spread = probabilities.max(axis=0) - probabilities.min(axis=0)
    return spread.max(axis=-1).astype(np.float64)


def score_std(probabilities: np.ndarray, baseline: int = 0) -> np.ndarray:
    """Per example: std over the set (ddof 0) of the score of the class the baseline predicts."""
    probabilities = _check_probabilities(probabilities)
    _check_baseline(baseline, probabilities.shape[0])
    chosen = probabilities[baseline].argmax(axis=-1)
    scores = np.take_along_axis(probabilities, chosen[None, :, None], axis=-1)[..., 0]
    return scores.astype(np.float64).std(axis=0)


def pattern_count(predictions: np.ndarray) -> int:
    """Number of distinct prediction vectors (ŷ_h(x))_x among the models."""
    return len(set(row_digests(predictions)))


def row_digests(predictions: np.ndarray) -> list[bytes]:
    """A 128-bit digest of each model's prediction vector: equal vectors, equal digests.
    Vectors of 0s and 1s are hashed as bits, eight times fewer bytes."""
    predictions = _check_predictions(predictions)
    if predictions.max(initial=0) <= 1:
        predictions = np.packbits(predictions, axis=1)  # one length for all: still one-to-one
    rows = np.ascontiguousarray(predictions)
    return [hashlib.blake2b(row, digest_size=16).digest() for row in rows]


def pattern_rashomon_ratio(set_predictions: np.ndarray, pool_predictions: np.ndarray) -> float:
    """Distinct prediction vectors in the set / in the pool (pool-based, not volumetric)."""
    return pattern_count(set_predictions) / pattern_count(pool_predictions)


def _check_predictions(predictions: np.ndarray, baseline: int = 0) -> np.ndarray:
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or predictions.shape[0] == 0:
        raise ValueError(
            f"predictions must be a non-empty (models, examples) array, got shape "
            f"{predictions.shape}"
        )
    if not np.issubdtype(predictions.dtype, np.integer):
        raise ValueError(f"predictions must hold integer classes, got dtype {predictions.dtype}")
    _check_baseline(baseline, predictions.shape[0])
    return predictions


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3 or probabilities.shape[0] == 0 or probabilities.shape[2] < 2:
        raise ValueError(
            "probabilities must be a (models, examples, classes) array with at least one model "
            f"and two classes, got shape {probabilities.shape}"
        )
    return probabilities


def _check_baseline(baseline: int, n_models: int) -> None:
    if not 0 <= baseline < n_models:
        raise ValueError(f"baseline {baseline} is not a model row (0 … {n_models - 1})")
