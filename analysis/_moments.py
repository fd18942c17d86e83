"""The first and second moments of a Rashomon set's probabilities, per example and class, from
its models given a few at a time.

The analysis reads a population one pack file at a time, so a set arrives as groups of models,
never as one (models, examples, classes) array. Per example and class it keeps the sums of the
deviations d = p − r from a reference r (the set's baseline, given first) and of d², which give
the variance over the set in one pass (the shifted-data algorithm: it is accurate because d is of
the size of the spread between models, not of p), and the deviations projected on an orthonormal
basis over the models (the source decomposition's). That basis is orthogonal to the constant, so
projecting d is projecting the centred values.

Each sum runs over the models in the order they are added, and products over fixed blocks of
examples, so the result for an example does not depend on which other examples are measured
with it: measuring the examples in windows changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

EXAMPLE_BLOCK = 2048  # examples per matrix product; windows of examples are multiples of it
MODEL_GROUP = 64  # models added at once: temporaries of 64 × EXAMPLE_BLOCK numbers, ~1 MB


class Moments:
    """Sums over the models of a set of m models, for n examples and C classes."""

    def __init__(
        self, reference: np.ndarray, n_models: int, basis: np.ndarray | None = None
    ) -> None:
        """``reference`` is the baseline's (classes, examples) probabilities: the same whatever
        order the models come in, and exactly 0 deviation for the baseline itself."""
        n_classes, n_examples = reference.shape
        self.n_models = n_models
        self.sums = np.zeros((n_classes, n_examples))
        self.squares = np.zeros((n_classes, n_examples))
        self.basis = np.zeros((n_models, 0)) if basis is None else basis
        #: (basis columns, classes, examples): Σ_h basis[h, j]·d_h
        self.projections = np.zeros((self.basis.shape[1], n_classes, n_examples))
        self._reference = np.asarray(reference, np.float64)

    def add(self, rows: np.ndarray, classes: Sequence[np.ndarray], start: int = 0) -> None:
        """Add the models at ``rows`` of the set: one float32 (len(rows), examples) array per
        class, for the examples from ``start`` on (a multiple of `EXAMPLE_BLOCK`). Each model
        is added once for every example."""
        weights = self.basis[rows].T
        width = classes[0].shape[1]
        with _blas().limit(limits=1, user_api="blas"):
            for offset in range(0, width, EXAMPLE_BLOCK):
                given = slice(offset, offset + EXAMPLE_BLOCK)
                block = slice(start + offset, start + min(offset + EXAMPLE_BLOCK, width))
                for k, values in enumerate(classes):
                    deviations = np.subtract(
                        values[:, given], self._reference[k, block], dtype=np.float64
                    )
                    self.sums[k, block] += deviations.sum(axis=0)
                    if len(weights):
                        self.projections[:, k, block] += weights @ deviations
                    self.squares[k, block] += np.square(deviations, out=deviations).sum(axis=0)

    def sum_of_squares(self) -> np.ndarray:
        """(classes, examples): Σ_h (p_h − mean)², once every model of the set is added."""
        return np.maximum(self.squares - np.square(self.sums) / self.n_models, 0.0)


@functools.cache
def _blas():
    """The BLAS thread pools: products this small run fastest on one thread, and threads that
    wait for each other while the files are read in the background cost up to 40 times more."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
