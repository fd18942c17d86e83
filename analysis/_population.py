"""One population's Rashomon set and everything SPEC §6 says about it, for `analyze` and for each
cohort of ``analyze --by``.

A population of 10,000 models × 10,000 examples holds 800 MB of probabilities, and every measure
is a reduction over the models of a set: so the pack files are read once, in turn (the next one
in a background thread), and each set's models are added to running sums as their file comes
(`MeasureWindow`); nothing is kept per model and example but the predicted classes (one byte
each, for the pool too: the pattern Rashomon ratio needs them). Only Rashomon capacity with three
classes or more needs a set's probabilities together; when they, or the sums, do not fit in
``memory_budget``, the examples are measured in windows, each reading the files again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from rashomon.analysis._curves import epsilon_curve, model_count_curve
from rashomon.analysis._decomposition import SourceDecomposition, design_factors
from rashomon.analysis._flatness import disagreement_with_set, flatness_statistics, flatness_summary
from rashomon.analysis._measures import class_columns
from rashomon.analysis._moments import EXAMPLE_BLOCK
from rashomon.analysis._multiplicity import ExampleMeasures, MeasureWindow
from rashomon.analysis._rashomon_set import (
    DEFAULT_EPSILON,
    DEFAULT_METRIC,
    RashomonSet,
    metric_values,
    rashomon_set,
)
from rashomon.analysis._results import Results
from rashomon.jobs import UserError

DEFAULT_SPLIT = "test"
MISSING = "<missing>"  # the label of a null value (a subgroup, a cohort)
MEMORY_BUDGET = 1 << 28


class Curves(NamedTuple):
    """Multiplicity against ε and against the number of models (`Analysis.curves`)."""

    epsilon: pd.DataFrame  # one row per ε: epsilon, rashomon_set_size and every measure
    model_count: pd.DataFrame  # one row per (size, measure): mean, low, high over draws


@dataclass(repr=False)
class Analysis:
    """The Rashomon set of a population and its predictive multiplicity (SPEC §6).

    Returned by `analyze`. Notation: R_ε the Rashomon set, chosen on validation metrics, of m
    models; h0 its baseline (the best model); ŷ_h(x) = argmax_k p_h,k(x); n the examples of
    `split`. Every measure is computed on the models with status ``ok``; a set of one model
    has zero multiplicity (and Rashomon capacity 1).

    Attributes
    ----------
    rashomon_set : RashomonSet
        The members (baseline first), the pool of ok models, ε, the metric and the threshold.
    split : str
        The split the measures are computed on.
    examples : pandas.DataFrame
        That split's examples in the order of every per-example array (``example_id``).
    measures : ExampleMeasures
        Per-example measures and the predicted classes of the set and the pool.
    overall : dict
        The set-level measures below, over every example of `split`.
    subgroups : dict
        The same measures per value of each ``groups`` column: ``{column: {value: {...}}}``.
    source_decomposition, source_decomposition_chance : dict
        The share of per-example prediction variance per design axis, and its chance level.
    flatness : dict
        The flat-minima summary of SPEC §8 (empty without flatness statistics).
    n_pending : int or None
        Models of the job not trained yet (None for one cohort of an analysis ``by`` a column).

    Notes
    -----
    ambiguity
        (1/n) Σ_x 1[∃ h ∈ R_ε : ŷ_h(x) ≠ ŷ_h0(x)] (Marx, Calmon & Ustun 2020).
    discrepancy
        max_{h ∈ R_ε} (1/n) Σ_x 1[ŷ_h(x) ≠ ŷ_h0(x)] (Marx, Calmon & Ustun 2020).
    obscurity
        The mean over h ∈ R_ε∖{h0} of (1/n) Σ_x 1[ŷ_h(x) ≠ ŷ_h0(x)].
    disagreement, self_consistency
        D(x) = 1 − Σ_k c_k(c_k − 1) / (m(m − 1)), c_k the models predicting k: the chance that
        two distinct models of the set differ at x; its mean, and 1 − that mean
        (Cooper et al. 2024).
    vpr_mean, vpr_share_ge_0.1
        VPR(x) = max_k [max_h p_h,k(x) − min_h p_h,k(x)]: its mean, and the share of examples
        with VPR ≥ 0.1 (Watson-Daniels, Parkes & Ustun 2023).
    score_std_mean
        The mean over x of the standard deviation (ddof 0) over R_ε of p_h,ŷh0(x)(x).
    rashomon_capacity_mean, rashomon_capacity_max
        RC(x) = 2^C(x), C(x) the capacity in bits of the channel whose rows are
        {p_h(x) : h ∈ R_ε}; 1 ≤ RC ≤ number of classes (Hsu & Calmon 2022).
    rashomon_ratio, pattern_rashomon_ratio
        |R_ε| / m_pool, and the distinct prediction vectors (ŷ_h(x))_x of R_ε over those of
        the pool: shares of the trained pool, not the volumetric ratio of Semenova, Rudin &
        Parr (2022).

    References
    ----------
    Marx, Calmon, Ustun (2020). Predictive Multiplicity in Classification. ICML.
    Watson-Daniels, Parkes, Ustun (2023). Predictive Multiplicity in Probabilistic
    Classification. AAAI.
    Cooper et al. (2024). Arbitrariness and Social Prediction: The Confounding Role of Variance
    in Fair Classification. AAAI.
    Hsu, Calmon (2022). Rashomon Capacity: A Metric for Predictive Multiplicity in
    Classification. NeurIPS.
    """

    rashomon_set: RashomonSet
    split: str
    examples: pd.DataFrame
    measures: ExampleMeasures
    overall: dict[str, float]
    subgroups: dict[str, dict[str, dict[str, float]]]
    source_decomposition: dict[str, float]
    source_decomposition_chance: dict[str, float]
    flatness: dict = field(default_factory=dict)
    n_pending: int | None = 0  # models of the job not trained yet: the analysis covers the others
    models: pd.DataFrame | None = None  # the population analysed (every status)
    results: Results | None = None

    @property
    def example_ids(self) -> np.ndarray:
        return self.examples["example_id"].to_numpy()

    def __repr__(self) -> str:
        chosen = self.rashomon_set
        rule = "relative" if chosen.relative else "absolute"
        shown = {"ambiguity": "ambiguity", "disagreement": "disagreement", "vpr_mean": "VPR mean"}
        measures = ", ".join(f"{label} {self.overall[name]:.4g}" for name, label in shown.items())
        return (
            f"Analysis(Rashomon set of {chosen.size} of {len(chosen.pool_model_ids)} ok models, "
            f"{chosen.metric} ≤ {chosen.threshold:.4g} (ε = {chosen.epsilon:g}, {rule})\n"
            f"  {self.split} split, {len(self.examples)} examples: {measures}\n"
            "  .to_dict(), .per_example(), .curves())"
        )

    def to_dict(self) -> dict:
        """The ``rashomon analyze --json`` object: SPEC §6's keys, plus the split, the
        exclusions and the subgroup measures."""
        chosen = self.rashomon_set
        return {
            "n_models": len(chosen.pool_model_ids),
            "n_pending": self.n_pending,
            "rashomon_set_size": chosen.size,
            "epsilon": chosen.epsilon,
            "metric": chosen.metric,
            "relative": chosen.relative,
            "baseline_model_id": chosen.baseline_model_id,
            "split": self.split,
            "n_examples": len(self.examples),
            "excluded_models": chosen.excluded,
            **self.overall,
            "source_decomposition": self.source_decomposition,
            "source_decomposition_chance": self.source_decomposition_chance,
            "subgroups": self.subgroups,
            "flatness": self.flatness,
        }

    def per_example(self) -> pd.DataFrame:
        """One row per example of the split, in ``example_id`` order.

        Returns
        -------
        pandas.DataFrame
            ``example_id``, ``label`` and the ``groups`` columns of the examples table, then:

            - ``baseline_pred``: ŷ_h0(x), the class the baseline predicts;
            - ``ambiguous``: ∃ h ∈ R_ε with ŷ_h(x) ≠ ŷ_h0(x) (its mean is ``ambiguity``);
            - ``flip_share``: (1/(m − 1)) Σ_{h ≠ h0} 1[ŷ_h(x) ≠ ŷ_h0(x)], 0 for one model (its
              mean is ``obscurity``);
            - ``disagreement``: D(x) = 1 − Σ_k c_k(c_k − 1) / (m(m − 1)) (its mean is
              ``disagreement``; 1 − it is the example's self-consistency);
            - ``vpr``: max_k [max_h p_h,k(x) − min_h p_h,k(x)] (its mean is ``vpr_mean``);
            - ``score_std``: the std over R_ε of p_h,ŷh0(x)(x) (its mean is ``score_std_mean``);
            - ``rashomon_capacity``: 2^C(x), in effective classes.

            The formulas and references are those of `Analysis`.
        """
        measures = self.measures
        predictions = measures.set_predictions
        flips = (predictions[1:] != predictions[0]).mean(axis=0) if len(predictions) > 1 else 0.0
        return self.examples.drop(columns="split").assign(
            baseline_pred=predictions[0].astype(np.int64),
            ambiguous=measures.ambiguous,
            flip_share=np.broadcast_to(flips, len(self.examples)).astype(np.float64),
            disagreement=measures.disagreement,
            vpr=measures.viable_prediction_range,
            score_std=measures.score_std,
            rashomon_capacity=measures.rashomon_capacity,
        )

    def curves(
        self,
        epsilons: Sequence[float] | None = None,
        sizes: Sequence[int] | None = None,
        *,
        n_draws: int = 30,
        confidence: float = 0.95,
        seed: int = 0,
    ) -> Curves:
        """Multiplicity against ε and against the number of models (SPEC §6).

        Parameters
        ----------
        epsilons : sequence of float, optional
            The ε grid; default 11 points from 0 to the ε that admits every ok model, and the
            chosen ε.
        sizes : sequence of int, optional
            Set sizes of the model-count curve; default 1, 2, 4, … and the set's size.
        n_draws, confidence, seed
            Each size below the set's is ``n_draws`` random draws of models from the set (its
            baseline always in, the others without replacement); ``low`` and ``high`` bound the
            central ``confidence`` share of the draws; ``seed`` makes the draws repeatable.

        Returns
        -------
        Curves
            ``epsilon``: one row per ε with ``rashomon_set_size`` and every measure, sets
            growing from the same baseline; ``model_count``: one row per (``size``,
            ``measure``) with ``mean``, ``low`` and ``high``. Multiplicity grows with the number
            of models, so compare sets of different sizes on this curve at equal ``size``.
        """
        if self.results is None or self.models is None:
            raise ValueError("this Analysis was not made by analyze(): it has no results to read")
        widest, metric, epsilons = _widest_set(self, epsilons)
        probabilities = self.results.probabilities(self.split, widest.model_ids)
        chosen = self.rashomon_set
        return Curves(
            epsilon=epsilon_curve(
                probabilities,
                metric,
                epsilons,
                relative=chosen.relative,
                pool_predictions=self.measures.pool_predictions,
            ),
            model_count=model_count_curve(
                probabilities[: chosen.size],
                sizes,
                n_draws=n_draws,
                confidence=confidence,
                seed=seed,
            ),
        )


def _widest_set(
    analysis: Analysis, epsilons: Sequence[float] | None
) -> tuple[RashomonSet, np.ndarray, np.ndarray]:
    """The set admitting every ok model from the same baseline (the chosen set is its prefix),
    its members' metric values, and the ε grid."""
    chosen = analysis.rashomon_set
    models = analysis.models
    ok = models[models["status"] == "ok"]
    values = metric_values(ok, chosen.metric)
    best = float(values[ok["model_id"] == chosen.baseline_model_id].iloc[0])
    reach = float(values.max()) - best
    if chosen.relative:
        reach = reach / best if best > 0 else chosen.epsilon
    reach = max(reach, chosen.epsilon)
    widest = rashomon_set(
        models, reach, chosen.metric, relative=chosen.relative, baseline=chosen.baseline_model_id
    )
    metric = metric_values(models.set_index("model_id").loc[widest.model_ids], chosen.metric)
    if epsilons is None:
        epsilons = np.unique(np.append(np.linspace(0, reach, 11), chosen.epsilon))
    return widest, metric.to_numpy(), np.asarray(epsilons, np.float64)


def analyze_populations(
    results: Results,
    populations: Sequence[pd.DataFrame],
    epsilon: float = DEFAULT_EPSILON,
    metric: str = DEFAULT_METRIC,
    *,
    relative: bool = False,
    split: str = DEFAULT_SPLIT,
    baseline: str | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> list[Analysis]:
    """`Analysis` of each population (rows of ``results.models``), each with its own set.

    When every set fits in ``memory_budget`` together, each pack file is read once for all of
    them; otherwise each population is read in turn, in chunks of examples.
    """
    examples = results.split_examples(split)
    if len(examples) == 0:
        raise UserError(
            f"{results.location}: the {split} split has no examples; choose another --split"
        )
    sets = [
        rashomon_set(models, epsilon, metric, relative=relative, baseline=baseline)
        for models in populations
    ]
    measures = [
        ExampleMeasures.empty(chosen.size, len(chosen.pool_model_ids), len(examples),
                              results.n_classes)
        for chosen in sets
    ]  # fmt: skip
    decompositions = [
        SourceDecomposition(design_factors(models.set_index("model_id").loc[chosen.model_ids]
                                           .reset_index()), len(examples))
        for models, chosen in zip(populations, sets, strict=True)
    ]  # fmt: skip
    _measure(results, split, sets, measures, decompositions, memory_budget)
    analyses = []
    for models, chosen, part, decomposition in zip(
        populations, sets, measures, decompositions, strict=True
    ):
        pool_row = _positions(chosen.pool_model_ids)
        part.set_rows = np.array([pool_row[m] for m in chosen.model_ids])
        part.pool_predictions[part.set_rows] = part.set_predictions
        analyses.append(
            Analysis(
                rashomon_set=chosen,
                split=split,
                examples=examples,
                measures=part,
                overall=part.summary(),
                subgroups={
                    column: {
                        str(value): {"n_examples": int(mask.sum()), **part.summary(mask)}
                        for value, mask in _group_masks(examples[column])
                    }
                    for column in results.group_columns
                },
                source_decomposition=decomposition.shares(),
                source_decomposition_chance=decomposition.chance(),
                flatness=_flatness(models, chosen, part),
                n_pending=None,
                models=models,
                results=results,
            )
        )
    return analyses


def _flatness(models: pd.DataFrame, chosen: RashomonSet, measures: ExampleMeasures) -> dict:
    if not flatness_statistics(models):
        return {}
    return flatness_summary(
        models, chosen.model_ids, disagreement_with_set(measures.set_predictions)
    )


def _measure(
    results: Results,
    split: str,
    sets: Sequence[RashomonSet],
    measures: Sequence[ExampleMeasures],
    decompositions: Sequence[SourceDecomposition],
    memory_budget: int,
) -> None:
    """Every set's measures and shares from one read of each pack file, while a background
    thread reads the next: the sets of disjoint pools are measured together. Sets whose sums
    do not fit in ``memory_budget`` are measured in windows of examples, each reading the files
    again; the first window also fills in the predicted classes of the pools' other models."""
    n_examples = measures[0].set_predictions.shape[1]
    n_classes = results.n_classes
    per_example = sum(
        MeasureWindow.bytes_per_example(chosen.size, n_classes, decomposition.basis.shape[1])
        for chosen, decomposition in zip(sets, decompositions, strict=True)
    )
    width = max(EXAMPLE_BLOCK, memory_budget // per_example // EXAMPLE_BLOCK * EXAMPLE_BLOCK)
    owner: dict[str, tuple[int, int, int]] = {}  # model -> (population, set row or -1, pool row)
    for index, chosen in enumerate(sets):
        set_row = _positions(chosen.model_ids)
        for pool_row, model_id in enumerate(chosen.pool_model_ids):
            owner[model_id] = (index, set_row.get(model_id, -1), pool_row)
    set_ids = [model_id for chosen in sets for model_id in chosen.model_ids]
    for start in range(0, n_examples, width):
        examples = slice(start, min(start + width, n_examples))
        baselines = results.probabilities(split, [c.baseline_model_id for c in sets], examples)
        windows = [
            MeasureWindow(part, examples, baseline, decomposition)
            for part, baseline, decomposition in zip(
                measures, baselines, decompositions, strict=True
            )
        ]
        wanted = set_ids if start else list(owner)
        for pack_ids, classes in results.iter_packs(split, wanted):
            codes = np.array([owner.get(m, (-1, -1, -1)) for m in pack_ids]).reshape(-1, 3)
            population, set_row, pool_row = codes.T
            for index in np.unique(population[population >= 0]):
                members = np.flatnonzero((population == index) & (set_row >= 0))
                if len(members):
                    windows[index].add(set_row[members], classes, members)
                others = np.flatnonzero((population == index) & (set_row < 0))
                if start == 0 and len(others):
                    predicted = class_columns([values[others] for values in classes])
                    measures[index].pool_predictions[pool_row[others]] = predicted
        for window in windows:
            window.finish()


def read_sets(results: Results, split: str, sets: Sequence[RashomonSet]) -> list[np.ndarray]:
    """The probabilities (models, examples, classes) of disjoint sets, each pack file read once."""
    n_examples = len(results.split_examples(split))
    blocks = [np.empty((c.size, n_examples, results.n_classes), np.float32) for c in sets]
    owner = {m: (index, row) for index, c in enumerate(sets) for row, m in enumerate(c.model_ids)}
    for pack_ids, classes in results.iter_packs(split, list(owner)):
        codes = np.array([owner.get(m, (-1, -1)) for m in pack_ids]).reshape(-1, 2)
        for index in np.unique(codes[:, 0][codes[:, 0] >= 0]):
            sources = np.flatnonzero(codes[:, 0] == index)
            for k, values in enumerate(classes):
                blocks[index][codes[sources, 1], :, k] = values[sources]
    return blocks


def _positions(model_ids: list[str]) -> dict[str, int]:
    return {model_id: row for row, model_id in enumerate(model_ids)}


def _group_masks(values) -> Iterator[tuple[object, np.ndarray]]:
    filled = values.astype(object).where(values.notna(), MISSING)
    for value in sorted(filled.unique(), key=str):
        yield value, (filled == value).to_numpy()
