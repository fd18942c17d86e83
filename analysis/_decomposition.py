"""Where disagreement comes from: a sums-of-squares split of prediction variance over the design.

For every example x the variance over the models of p_h(x) (summed over classes) is split into the
main effect of each axis of the population's design — the ``init``, ``order`` and ``data`` seeds and
every hyperparameter that varies — plus a remainder (interactions and noise). Each axis is coded as
a categorical factor and its sum of squares is the squared norm of the projection of the centred
values onto that factor's indicator space, after projecting out the axes before it (sequential,
"type I", sums of squares in the order init, order, data, then hyperparameters as in the
``models`` table). For a balanced factorial design the factor spaces are orthogonal, so the order
does not matter and each share is the classical main effect Σ_level n_level (mean_level − mean)².
A Rashomon set cut out of a factorial population is usually unbalanced, hence the sequential form.

An axis nested in the axes before it — its indicators lie in their span, as when a small Rashomon
set keeps one ``lr`` per ``init`` seed, so that a model's ``lr`` follows from its ``init`` — spans
nothing new once they are projected out: its block is empty and its share 0. Small sets inflate
every share by chance, so `SourceDecomposition.chance` gives each axis's expected share for
predictions that are pure noise: the rank of its sequential block over m − 1, which is
``(levels − 1)/(m − 1)`` for a balanced design and exact for noise that is independent and
Gaussian across models.

Axes that split the models identically cannot be told apart (``seeds: N`` pairs init = order; the
hyperparameters of one random draw all change together); they are reported as one axis named
``"init+order"``, ``"lr+weight_decay"``. Shares are per example, then averaged over the examples
on which the models' probabilities vary at all (standard deviation above 1e-5, well above float32
rounding); an example on which every model agrees has no variance to attribute.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from rashomon.analysis._moments import MODEL_GROUP, Moments

SEED_AXES = {"init": "init_seed", "order": "order_seed", "data": "data_seed"}
REMAINDER = "remainder"
MIN_VARIANCE = 1e-10
_RANK_TOLERANCE = 1e-8


def design_factors(models: pd.DataFrame) -> pd.DataFrame:
    """The design axes of ``models`` rows, in decomposition order, named without prefixes."""
    columns = {axis: models[column] for axis, column in SEED_AXES.items()}
    for column in models.columns:
        if column.startswith("hp_"):
            columns[column[3:]] = models[column]
    return pd.DataFrame(columns).reset_index(drop=True)


class SourceDecomposition:
    """Sequential main-effect sums of squares for one design, per example."""

    def __init__(self, factors: pd.DataFrame, n_examples: int = 0) -> None:
        self.n_models = len(factors)
        self.axes = _merge_aliased_axes(factors)
        basis = np.full((self.n_models, 1), 1.0 / np.sqrt(self.n_models))
        ranks = []
        for codes in self.axes.values():
            indicators = np.zeros((self.n_models, codes.max() + 1))
            indicators[np.arange(self.n_models), codes] = 1.0
            indicators -= basis @ (basis.T @ indicators)
            left, singular, _ = np.linalg.svd(indicators, full_matrices=False)
            block = left[:, singular > _RANK_TOLERANCE]  # empty for an axis nested in earlier ones
            ranks.append(block.shape[1])
            basis = np.hstack([basis, block])
        #: (models, columns): each axis's orthonormal block in turn, orthogonal to the constant
        self.basis = basis[:, 1:]
        self._ranks = np.array(ranks, dtype=int)
        self._shares = np.zeros((len(self.axes) + 1, n_examples))  # axes and the remainder
        self._varying = np.zeros(n_examples, bool)

    def add(self, moments: Moments, examples: slice = slice(None)) -> None:
        """The shares of ``examples`` from their `Moments` over every model of the set, taken
        with this `basis`."""
        total = moments.sum_of_squares().sum(axis=0)
        varying = total / self.n_models > MIN_VARIANCE
        explained = np.square(moments.projections).sum(axis=1)  # (basis columns, examples)
        ends = np.cumsum(self._ranks)
        shares = np.zeros((len(self.axes) + 1, len(total)))
        for axis, (end, rank) in enumerate(zip(ends, self._ranks, strict=True)):
            shares[axis, varying] = explained[end - rank : end, varying].sum(axis=0)
        shares[:-1, varying] /= total[varying]
        shares[-1, varying] = np.clip(1.0 - shares[:-1, varying].sum(axis=0), 0.0, None)
        self._shares[:, examples] = shares
        self._varying[examples] = varying

    def shares(self) -> dict[str, float]:
        """Share of prediction variance per axis and the remainder, averaged over examples.

        Seed axes that do not vary are listed with share 0, so ``init``, ``order`` and ``data``
        are always there (unless merged into an aliased axis such as ``init+order``).
        """
        n_varying = int(self._varying.sum())
        return self._named(self._shares[:, self._varying].sum(axis=1) / max(n_varying, 1))

    def chance(self) -> dict[str, float]:
        """The expected shares of pure noise, keyed like `shares`: block rank / (m − 1) per axis.

        A set of one model has no variance to share: every chance level is then 0."""
        if self.n_models < 2:
            return self._named(np.zeros(len(self.axes) + 1))
        per_axis = self._ranks / (self.n_models - 1)
        return self._named(np.append(per_axis, 1.0 - per_axis.sum()))

    def _named(self, values: np.ndarray) -> dict[str, float]:
        names = [*self.axes, REMAINDER]
        named = {name: float(value) for name, value in zip(names, values, strict=True)}
        covered = {part for name in self.axes for part in name.split("+")}
        return {axis: 0.0 for axis in SEED_AXES if axis not in covered} | named


def source_decomposition(probabilities: np.ndarray, factors: pd.DataFrame) -> dict[str, float]:
    """Shares of prediction variance per design axis (SPEC §6) for an in-memory population.

    ``probabilities`` is (models, examples, classes); ``factors`` has one row per model and one
    column per axis (see `design_factors`).
    """
    n_models, n_examples, n_classes = probabilities.shape
    decomposition = SourceDecomposition(factors, n_examples)
    moments = Moments(probabilities[0].T, n_models, decomposition.basis)
    for start in range(0, n_models, MODEL_GROUP):
        rows = np.arange(start, min(start + MODEL_GROUP, n_models))
        moments.add(rows, [probabilities[rows, :, k] for k in range(n_classes)])
    decomposition.add(moments)
    return decomposition.shares()


def source_decomposition_chance(factors: pd.DataFrame) -> dict[str, float]:
    """The chance level of each share of `source_decomposition` for the design ``factors``:
    the expected share if the predictions were pure noise (SPEC §6)."""
    return SourceDecomposition(factors).chance()


def _merge_aliased_axes(factors: pd.DataFrame) -> dict[str, np.ndarray]:
    """Integer codes per axis with two or more levels; identically-splitting axes merged."""
    merged: dict[str, np.ndarray] = {}
    for name in factors.columns:
        codes = pd.factorize(factors[name].astype(str), sort=True, use_na_sentinel=False)[0]
        if codes.max(initial=0) < 1:
            continue
        alias = next((key for key, seen in merged.items() if _same_partition(seen, codes)), None)
        if alias is None:
            merged[name] = codes
        else:
            merged[f"{alias}+{name}"] = merged.pop(alias)
    return _in_order(merged, factors.columns)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = len(set(zip(a.tolist(), b.tolist(), strict=True)))
    return pairs == a.max() + 1 == b.max() + 1


def _in_order(merged: dict[str, np.ndarray], columns: Iterable[str]) -> dict[str, np.ndarray]:
    position = {name: i for i, name in enumerate(columns)}
    return dict(sorted(merged.items(), key=lambda item: position[item[0].split("+")[0]]))
