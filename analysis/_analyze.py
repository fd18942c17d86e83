"""``rashomon analyze``: the Rashomon set of a results folder and everything SPEC §6 says about it,
for the whole population or ``by`` a column's cohorts, and its terminal table."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from rashomon.analysis._cohorts import CohortAnalysis, analyze_cohorts
from rashomon.analysis._legend import FEW_EXAMPLES, MEASURE_LEGEND
from rashomon.analysis._multiplicity import MEASURES
from rashomon.analysis._population import (
    DEFAULT_SPLIT,
    MEMORY_BUDGET,
    Analysis,
    analyze_populations,
)
from rashomon.analysis._rashomon_set import DEFAULT_EPSILON, DEFAULT_METRIC
from rashomon.analysis._results import Results, open_results
from rashomon.jobs import UserError


def analyze(
    results_or_dir: Results | str | os.PathLike,
    epsilon: float = DEFAULT_EPSILON,
    metric: str = DEFAULT_METRIC,
    relative: bool = False,
    split: str = DEFAULT_SPLIT,
    by: str | None = None,
    *,
    baseline: str | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> Analysis | CohortAnalysis:
    """The Rashomon set of a population and its predictive multiplicity (SPEC §6).

    Parameters
    ----------
    results_or_dir : Results, str or path-like
        An opened results folder, or its location (a path or a ``pyarrow.fs`` URL).
    epsilon : float, default 0.01
        The set's tolerance: R_ε = {h : L(h) ≤ L(h0) + ε}, h0 the best ok model.
    metric : str, default "val_err"
        L, a loss-like column of the models table (``val_err`` = 1 − ``val_acc``).
    relative : bool, default False
        Admit L(h) ≤ (1 + ε)·L(h0) instead.
    split : {"test", "val", "train"}, default "test"
        The split multiplicity is measured on (the set is always chosen on ``metric``).
    by : str, optional
        A column of the models table (``hp_optimizer``, ``hp_lr``, ``init_seed``, …): analyse
        each of its values' models as a population of its own, with its own Rashomon set, and
        compare them at equal set sizes (a `CohortAnalysis`).
    baseline : str, optional
        The ``model_id`` of h0 instead of the best ok model (not with ``by``).
    memory_budget : int, default 1 GiB
        Bytes of probabilities held at once; a larger set is read in chunks of examples.

    Returns
    -------
    Analysis or CohortAnalysis
        See `Analysis` for every measure, its formula and its reference.

    Raises
    ------
    rashomon.jobs.UserError
        Not a results folder, damaged files, an unknown metric, split or column, a negative ε,
        no ok model.
    """
    if by is not None:
        if baseline is not None:
            raise UserError(
                f"--baseline {baseline} with --by {by}: each cohort's baseline is its own best "
                "model; leave out --baseline"
            )
        return analyze_cohorts(
            results_or_dir, by, epsilon, metric, relative=relative, split=split,
            memory_budget=memory_budget,
        )  # fmt: skip
    results = (
        results_or_dir if isinstance(results_or_dir, Results) else open_results(results_or_dir)
    )
    (analysis,) = analyze_populations(
        results,
        [results.models],
        epsilon,
        metric,
        relative=relative,
        split=split,
        baseline=baseline,
        memory_budget=memory_budget,
    )
    analysis.n_pending = results.n_pending
    return analysis


def format_table(analysis: Analysis) -> str:
    """A summary for a 100-column terminal: each measure with its one-line legend."""
    chosen = analysis.rashomon_set
    data = analysis.to_dict()
    rule = "relative" if chosen.relative else "absolute"
    excluded = ", ".join(f"{n} {s}" for s, n in chosen.excluded.items()) or "none"
    lines = [
        f"Rashomon set: {chosen.size} of {len(chosen.pool_model_ids)} ok models within "
        f"ε = {chosen.epsilon:g} ({rule}) of the best {chosen.metric}",
        f"  baseline {chosen.baseline_model_id}, threshold {chosen.metric} ≤ "
        f"{chosen.threshold:.6g}; excluded models: {excluded}",
        f"multiplicity on the {analysis.split} split ({len(analysis.example_ids)} examples); "
        "worse when ↑ higher, ↓ lower:",
    ]
    for name in MEASURES:
        legend = MEASURE_LEGEND[name]
        arrow = "↑" if legend.worse == "higher" else "↓"
        lines.append(f"  {name:<23}{data[name]:>9.4g} {arrow} {legend.definition}")
    lines.append("  (Rashomon ratios are pool-based: shares of the trained pool, not volumes)")
    lines.append(
        "source of prediction variance (share, averaged over examples; chance: the share of "
        "pure noise):"
    )
    chance = analysis.source_decomposition_chance
    lines += [
        f"  {axis:<23}{share:>9.3f}   chance {chance[axis]:.3f}"
        for axis, share in analysis.source_decomposition.items()
    ]
    if analysis.flatness:
        lines += _flatness_lines(analysis.flatness)
    for column, values in analysis.subgroups.items():
        lines.append(f"by {column}:")
        header = ["ambiguity", "disagree", "vpr_mean", "rc_mean", "score_std"]
        lines.append(f"  {'value':>20}{'n':>8}" + "".join(f"{h:>12}" for h in header))
        few = False
        for value, row in values.items():
            cells = [row["ambiguity"], row["disagreement"], row["vpr_mean"],
                     row["rashomon_capacity_mean"], row["score_std_mean"]]  # fmt: skip
            mark = " *" if row["n_examples"] < FEW_EXAMPLES else ""
            few |= bool(mark)
            lines.append(
                f"  {value[:20]:>20}{row['n_examples']:>8}"
                + "".join(f"{c:>12.4f}" for c in cells)
                + mark
            )
        if few:
            lines.append(
                f"  * fewer than {FEW_EXAMPLES} examples: one example moves these measures by "
                f"over 1/{FEW_EXAMPLES}"
            )
    return "\n".join(lines)


def _flatness_lines(flatness: dict) -> list[str]:
    """SPEC §8's population summary, one row per statistic."""
    axes = ", ".join(flatness["axes"]) or "none: no hyperparameter varies"
    lines = [
        f"flatness over {flatness['n_models']} ok models: Kendall τ-b of each statistic with test "
        "accuracy (τ acc),",
        "  with the gap val_loss − train_loss (τ gap) and, in the set, with each model's "
        "disagreement",
        "  with the set (τ disagr); a sharpness that predicts generalisation has τ acc < 0, "
        "τ gap > 0;",
        *textwrap.wrap(
            f"Ψ: Jiang et al.'s granulated τ over {axes}; in set / outside: the statistic's mean",
            98,
            initial_indent="  ",
            subsequent_indent="    ",
        ),
        f"  {'statistic':<23}{'τ acc':>7}{'Ψ acc':>7}{'τ gap':>7}{'Ψ gap':>7}"
        f"{'τ disagr':>9}{'in set':>12}{'outside':>12}",
    ]
    for name, entry in flatness["statistics"].items():
        taus = [entry["tau_test_acc"], entry["granulated_tau_test_acc"]["mean"],
                entry["tau_generalization_gap"],
                entry["granulated_tau_generalization_gap"]["mean"]]  # fmt: skip
        lines.append(
            f"  {name:<23}"
            + "".join(_number(tau, 7, "+.2f") for tau in taus)
            + _number(entry["tau_disagreement"], 9, "+.2f")
            + _number(entry["inside_mean"], 12, ".4g")
            + _number(entry["outside_mean"], 12, ".4g")
        )
    return lines


def _number(value: float | None, width: int, spec: str) -> str:
    """``value`` right-aligned in ``width``; undefined (None, NaN) as ``n/a``."""
    if value is None or not np.isfinite(value):
        return f"{'n/a':>{width}}"
    return f"{format(value, spec):>{width}}"
