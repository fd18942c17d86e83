"""All multiplicity measures of one Rashomon set, computed in one pass over its models.

The set's models arrive a few at a time (a pack file holds some of them), and every measure is a
reduction over models: running maxima and minima per class, the predicted classes, and the set's
`Moments` for the spread of scores and the source decomposition. The per-example measures
(ambiguity flag, disagreement, VPR, score spread, Rashomon capacity) are kept for every example,
with the predicted classes of the set and of the pool (one byte per model and example). Any
subset of examples — the whole split or one subgroup — is then summarised without touching the
probabilities again, which is what makes subgroups cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rashomon.analysis._capacity import (
    binary_capacity,
    positive_share,
    rashomon_capacity,
    validate,
)
from rashomon.analysis._decomposition import SourceDecomposition
from rashomon.analysis._measures import (
    class_columns,
    disagreement,
    flip_rates,
    mean_flip_rate,
    row_digests,
)
from rashomon.analysis._moments import EXAMPLE_BLOCK, MODEL_GROUP, Moments

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
    set_rows: np.ndarray | None = None  # the set's rows in pool_predictions, if it holds them

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

    def summary(self, examples: np.ndarray | slice = slice(None)) -> dict[str, float]:
        """Every set-level measure of SPEC §6 over ``examples`` (a mask or slice)."""
        set_predictions = _columns(self.set_predictions, examples)
        rates = flip_rates(set_predictions)
        pool = row_digests(_columns(self.pool_predictions, examples))
        patterns = (
            {pool[row] for row in self.set_rows}
            if self.set_rows is not None
            else set(row_digests(set_predictions))
        )
        return {
            "ambiguity": float(self.ambiguous[examples].mean()),
            "discrepancy": float(rates.max()),
            "obscurity": mean_flip_rate(rates),
            "disagreement": float(self.disagreement[examples].mean()),
            "self_consistency": float(1.0 - self.disagreement[examples].mean()),
            "vpr_mean": float(self.viable_prediction_range[examples].mean()),
            "vpr_share_ge_0.1": float(
                (self.viable_prediction_range[examples] >= VPR_THRESHOLD).mean()
            ),
            "score_std_mean": float(self.score_std[examples].mean()),
            "rashomon_capacity_mean": float(self.rashomon_capacity[examples].mean()),
            "rashomon_capacity_max": float(self.rashomon_capacity[examples].max()),
            "rashomon_ratio": len(set_predictions) / len(self.pool_predictions),
            "pattern_rashomon_ratio": len(patterns) / len(set(pool)),
        }


def _columns(predictions: np.ndarray, examples: np.ndarray | slice) -> np.ndarray:
    """``predictions[:, examples]``; a mask is taken with `np.compress`, several times faster."""
    if isinstance(examples, slice):
        return predictions[:, examples]
    return np.compress(examples, predictions, axis=1)


class MeasureWindow:
    """The per-example measures of one set over a window of its examples, from its models given
    a few at a time (each once, in any order): running extremes per class, the predicted classes
    and the set's `Moments`. Nothing is held per (model, example) but the predicted classes (and,
    for three classes or more, the probabilities that Rashomon capacity needs)."""

    def __init__(
        self,
        measures: ExampleMeasures,
        examples: slice,
        baseline: np.ndarray,
        decomposition: SourceDecomposition | None = None,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        """``baseline`` is the set's baseline's (examples, classes) probabilities on the window:
        the `Moments`' reference."""
        set_size, n_examples = measures.set_predictions.shape
        start, stop, _ = examples.indices(n_examples)
        self.measures, self.examples, self.decomposition = (
            measures,
            slice(start, stop),
            decomposition,
        )
        width = stop - start
        n_classes = baseline.shape[1]
        self.high = np.full((n_classes, width), -np.inf, dtype)
        self.low = np.full((n_classes, width), np.inf, dtype)
        if n_classes == 2:  # capacity needs only the extremes of P(y = 1)
            self.share_low, self.share_high = np.full(width, np.inf), np.full(width, -np.inf)
        else:
            self.block = np.empty((set_size, width, n_classes), dtype)
        basis = None if decomposition is None else decomposition.basis
        self.moments = Moments(baseline.T, set_size, basis)
        self._added = np.zeros(set_size, bool)

    @staticmethod
    def bytes_per_example(set_size: int, n_classes: int, basis_columns: int) -> int:
        """Memory a window holds per example (its temporaries included)."""
        sums = (2 + basis_columns) * n_classes * 8  # `Moments`
        extremes = 2 * n_classes * 8 + (16 if n_classes == 2 else set_size * n_classes * 8)
        return sums + extremes

    def add(self, rows: np.ndarray, classes: Sequence[np.ndarray], sources: np.ndarray) -> None:
        """Add the set's models at ``rows``, each once: their probabilities are the rows
        ``sources`` of ``classes``, one (models, examples) array per class (a pack file's).

        The work goes by groups of models and blocks of examples, whose temporaries stay in
        the cache (and in the heap: fresh megabytes from the system cost more in page faults
        than the arithmetic on them)."""
        if self._added[rows].any() or len(np.unique(rows)) != len(rows):
            raise ValueError("a model of the set was added twice")
        self._added[rows] = True
        order = np.argsort(rows)  # in set order: the baseline (row 0) first when it is here
        rows, sources = rows[order], sources[order]
        width = self.high.shape[1]
        for first in range(0, len(rows), MODEL_GROUP):
            group = slice(first, first + MODEL_GROUP)
            for start in range(0, width, EXAMPLE_BLOCK):
                block = slice(start, min(start + EXAMPLE_BLOCK, width))
                columns = slice(self.examples.start + block.start, self.examples.start + block.stop)
                values = [c[sources[group], columns] for c in classes]
                self._add(rows[group], values, block)

    def _add(self, rows: np.ndarray, classes: list[np.ndarray], block: slice) -> None:
        """Models ``rows`` on the window's examples ``block``."""
        window = self.examples.start
        columns = slice(window + block.start, window + block.stop)
        self.measures.set_predictions[rows, columns] = class_columns(classes)
        for k, values in enumerate(classes):
            np.maximum(self.high[k, block], values.max(axis=0), out=self.high[k, block])
            np.minimum(self.low[k, block], values.min(axis=0), out=self.low[k, block])
        if len(classes) == 2:
            share = positive_share(classes[0], classes[1])
            np.minimum(self.share_low[block], share.min(axis=0), out=self.share_low[block])
            np.maximum(self.share_high[block], share.max(axis=0), out=self.share_high[block])
        else:
            for k, values in enumerate(classes):
                self.block[rows, block, k] = values
        self.moments.add(rows, classes, block.start)

    def finish(self) -> None:
        """Write the window's measures (and source shares) once every model is added."""
        if not self._added.all():
            raise ValueError(f"{int((~self._added).sum())} models of the set were never added")
        measures, examples = self.measures, self.examples
        predictions = measures.set_predictions[:, examples]
        n_classes = len(self.high)
        measures.ambiguous[examples] = (predictions != predictions[0]).any(axis=0)
        measures.disagreement[examples] = disagreement(predictions, n_classes)
        measures.viable_prediction_range[examples] = (self.high - self.low).max(axis=0)
        variance = self.moments.sum_of_squares() / len(predictions)
        baseline = predictions[:1].astype(np.intp)  # the class h0 predicts
        measures.score_std[examples] = np.sqrt(np.take_along_axis(variance, baseline, axis=0)[0])
        if n_classes == 2:
            measures.rashomon_capacity[examples] = binary_capacity(self.share_low, self.share_high)
        else:
            capacity = measures.rashomon_capacity[examples]
            for start in range(0, capacity.shape[0], EXAMPLE_BLOCK):
                block = slice(start, start + EXAMPLE_BLOCK)
                capacity[block] = rashomon_capacity(self.block[:, block])
        if self.decomposition is not None:
            self.decomposition.add(self.moments, examples)


def example_measures(
    set_probabilities: np.ndarray, pool_predictions: np.ndarray | None = None
) -> ExampleMeasures:
    """`ExampleMeasures` of an in-memory set (baseline = row 0); the pool defaults to the set."""
    set_probabilities = np.asarray(set_probabilities)
    validate(set_probabilities)
    set_size, n_examples, n_classes = set_probabilities.shape
    measures = ExampleMeasures.empty(set_size, 0, n_examples, n_classes)
    dtype = np.result_type(set_probabilities.dtype, np.float32)
    window = MeasureWindow(measures, slice(None), set_probabilities[0], dtype=dtype)
    rows = np.arange(set_size)
    window.add(rows, [set_probabilities[..., k] for k in range(n_classes)], rows)
    window.finish()
    if pool_predictions is None:
        measures.pool_predictions, measures.set_rows = measures.set_predictions, rows
    else:
        measures.pool_predictions = pool_predictions
    return measures


def multiplicity(
    set_probabilities: np.ndarray, pool_predictions: np.ndarray | None = None
) -> dict[str, float]:
    """Every measure of SPEC §6 for a set given as an array (baseline = row 0)."""
    return example_measures(set_probabilities, pool_predictions).summary()
