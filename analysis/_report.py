"""``rashomon report``: one self-contained HTML page about a population and its Rashomon set.

Plots are inline SVG drawn by matplotlib, tables plain HTML, no scripts and no links, so the page
opens offline, attaches to an e-mail and survives being archived with the results. Every measure
gets its own panel and y scale (they differ by orders of magnitude), its unit, and its definition.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rashomon.analysis._cohorts import CohortAnalysis
from rashomon.analysis._figures import PANELS_PER_ROW, plain_numbers, unique_ids
from rashomon.analysis._figures import figure as _figure
from rashomon.analysis._figures import panels as _panels
from rashomon.analysis._figures import svg as _svg
from rashomon.analysis._figures import table as _table
from rashomon.analysis._legend import FEW_EXAMPLES, FLATNESS_LEGEND, MEASURE_LEGEND
from rashomon.analysis._multiplicity import MEASURES
from rashomon.analysis._population import Analysis
from rashomon.analysis._rashomon_set import metric_values
from rashomon.analysis._results import Results
from rashomon.analysis._training import (
    learning_curves_section,
    sharpness_section,
    simplicity_section,
)

# the curves' panels; self-consistency is 1 − disagreement, the ratios describe the pool
CURVE_MEASURES = (
    "ambiguity",
    "discrepancy",
    "obscurity",
    "disagreement",
    "vpr_mean",
    "vpr_share_ge_0.1",
    "score_std_mean",
    "rashomon_capacity_mean",
    "rashomon_capacity_max",
)
# above this many models a scatter's points become one image: as vectors, 10,000 models
# in 11 panels would be 11 MB of the page
VECTOR_POINTS = 1000
POOL_NOTE = (
    "Rashomon ratios here are pool-based — shares of the models that were trained — not the "
    "volumetric ratio of Semenova, Rudin & Parr (2022)."
)
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #eee;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.legend td:nth-child(n+3),.legend th:nth-child(n+3){text-align:left}
.notes td:last-child{text-align:left;color:#a40}.note{color:#555;font-size:.9em}.warn{color:#a40}
figure{margin:1em 0}svg{max-width:100%;height:auto}
"""


def write_report(
    results: Results,
    analysis: Analysis,
    target: str | os.PathLike | None = None,
    cohorts: CohortAnalysis | None = None,
) -> Path:
    """Write the HTML report of ``analysis``, and of ``cohorts`` side by side when given
    (default: ``report.html`` in a local results folder, else in the working directory) and
    return its path."""
    if target is None:
        local = "://" not in results.location
        target = Path(results.location) / "report.html" if local else Path("report.html")
    target = Path(target)
    target.write_text(render_report(analysis, results, cohorts), encoding="utf-8")
    return target


def render_report(
    analysis: Analysis, results: Results, cohorts: CohortAnalysis | None = None
) -> str:
    """The page as one string: deterministic for the same results and analysis."""
    chosen = analysis.rashomon_set
    curves = analysis.curves()
    by = None if cohorts is None else cohorts.by
    pending = f", {analysis.n_pending} pending" if analysis.n_pending else ""
    title = html.escape(
        f"Rashomon report: {len(results.models)} models ({len(chosen.pool_model_ids)} ok"
        f"{pending}), Rashomon set of {chosen.size}"
    )
    sections = [
        f"<h1>{title}</h1>",
        _overview(analysis, results),
        "<h2>Multiplicity of the Rashomon set</h2>",
        _measures_table(analysis),
        *_cohort_section(cohorts),
        "<h2>Rashomon set size and multiplicity against ε</h2>",
        _epsilon_section(analysis, curves.epsilon),
        "<h2>Multiplicity against the number of models</h2>",
        _model_count_section(analysis, curves.model_count),
        "<h2>Per-example spread</h2>",
        _histograms(analysis),
        "<h2>Where the disagreement comes from</h2>",
        _decomposition_section(analysis),
        "<h2>Subgroups</h2>",
        _subgroup_section(analysis),
        "<h2>Flatness</h2>",
        _flatness_section(analysis, results),
        "<h2>Learning curves</h2>",
        learning_curves_section(results, by),
        "<h2>Sharpness through training: the edge of stability</h2>",
        sharpness_section(results, by),
        "<h2>Simplicity</h2>",
        simplicity_section(results, analysis, by),
        "<h2>Linear mode connectivity</h2>",
        _connectivity_section(results, analysis),
    ]
    return unique_ids(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def _overview(analysis: Analysis, results: Results) -> str:
    chosen = analysis.rashomon_set
    models = results.models
    counts = models["status"].value_counts().rename_axis("status").reset_index(name="models")
    ok = models[models["status"] == "ok"]
    varying = [c for c in ok.columns if c.startswith("hp_") and ok[c].nunique() > 1]
    seeds = {axis: ok[f"{axis}_seed"].nunique() for axis in ("init", "order", "data")}
    text = (
        f"<p>Results folder <code>{html.escape(results.location)}</code>: {len(models)} models "
        f"recorded. Seeds: {seeds['init']} init × {seeds['order']} order × {seeds['data']} data; "
        f"hyperparameters that vary: {html.escape(', '.join(c[3:] for c in varying) or 'none')}."
        f"</p>{_pending_note(analysis.n_pending)}<p>Rashomon set: <b>{chosen.size}</b> of "
        f"{len(chosen.pool_model_ids)} ok models "
        f"with {html.escape(chosen.metric)} ≤ {chosen.threshold:.4g} (ε = {chosen.epsilon:g}, "
        f"{'relative' if chosen.relative else 'absolute'}), chosen on validation data; baseline "
        f"<code>{html.escape(chosen.baseline_model_id)}</code>. Multiplicity is measured on the "
        f"{html.escape(analysis.split)} split ({len(analysis.example_ids)} examples).</p>"
    )
    with _figure(1, 1, panel_height=2.8, width=6.5) as (figure, axes):
        axes.hist(metric_values(ok, chosen.metric), bins=40, color="#999")
        axes.axvline(chosen.threshold, color="C3")
        axes.set(
            title=f"the Rashomon set: models left of the red line (ε = {chosen.epsilon:g})",
            xlabel=f"{chosen.metric} (validation)",
            ylabel="ok models",
        )
        image = _svg(figure)
    return text + _table(counts) + image


def _pending_note(n_pending: int) -> str:
    if not n_pending:
        return ""
    return (
        f'<p class="warn">{n_pending} models of the job are not trained yet: this report covers '
        "the models trained so far (run the same <code>rashomon run</code> again to finish).</p>"
    )


def _measures_table(analysis: Analysis) -> str:
    summary = analysis.to_dict()
    frame = pd.DataFrame(
        [
            {
                "measure": name,
                "value": summary[name],
                "unit": MEASURE_LEGEND[name].unit,
                "what it is": MEASURE_LEGEND[name].definition,
                "worse when": MEASURE_LEGEND[name].worse,
            }
            for name in MEASURES
        ]
    )
    return (
        _table(frame, "legend")
        + f'<p class="note">On the {html.escape(analysis.split)} split; ambiguity, discrepancy '
        "and obscurity compare each model of the set with its baseline (the set's best model), "
        f"disagreement compares the set's models pairwise. {POOL_NOTE}</p>"
    )


def _epsilon_section(analysis: Analysis, curve: pd.DataFrame) -> str:
    chosen = analysis.rashomon_set
    n_ok = len(chosen.pool_model_ids)
    rule = "relative" if chosen.relative else "absolute"
    with _panels(2 + len(CURVE_MEASURES)) as (figure, panels):
        size, *others = panels
        size.plot(curve["epsilon"], curve["rashomon_set_size"], marker="o", ms=3)
        size.set(title="Rashomon set size", ylabel="ok models")
        ratio = size.secondary_yaxis("right", functions=(lambda n: n / n_ok, lambda r: r * n_ok))
        ratio.set_ylabel(MEASURE_LEGEND["rashomon_ratio"].label)
        for axes in panels:
            axes.axvline(chosen.epsilon, color="C3", lw=0.8)
        for axes, name in zip(others, ["pattern_rashomon_ratio", *CURVE_MEASURES], strict=True):
            _measure_panel(axes, curve["epsilon"], curve[name], name)
        figure.supxlabel(f"ε: how far above the best {chosen.metric} a model may be ({rule})")
        image = _svg(figure)
    return image + (
        f'<p class="note">One panel and y scale per measure. Red line: the chosen ε = '
        f"{chosen.epsilon:g}. Rashomon ratio (right axis of the first panel): the set's share of "
        f"the {n_ok} ok models. {POOL_NOTE}</p>"
    )


def _model_count_section(analysis: Analysis, curve: pd.DataFrame) -> str:
    if analysis.rashomon_set.size < 2:
        return "<p>The Rashomon set has one model: nothing to draw.</p>"
    with _panels(len(CURVE_MEASURES)) as (figure, panels):
        for axes, name in zip(panels, CURVE_MEASURES, strict=True):
            part = curve[curve["measure"] == name]
            axes.fill_between(part["size"], part["low"], part["high"], alpha=0.25)
            _measure_panel(axes, part["size"], part["mean"], name)
            _log2_sizes(axes)
        figure.supxlabel("models drawn from the Rashomon set (its baseline always among them)")
        image = _svg(figure)
    return image + (
        '<p class="note">Mean over 30 random draws per size, band: central 95% of the draws. '
        "Multiplicity grows with the number of models, so compare sets at equal size.</p>"
    )


def _log2_sizes(axes) -> None:
    axes.set_xscale("log", base=2)
    plain_numbers(axes.xaxis)


def _cohort_section(cohorts: CohortAnalysis | None) -> list[str]:
    """Cohorts side by side: their measures, their model-count curves and the measures at equal
    set size, where the variance comes from and flatness."""
    if cohorts is None:
        return []
    by = html.escape(cohorts.by)
    first = next(iter(cohorts.cohorts.values()))
    chosen = first.rashomon_set
    m = cohorts.equal_size
    intro = (
        f"<p>Each value of <code>{by}</code> is a cohort with its own Rashomon set, chosen within "
        f"the cohort: its models within ε = {chosen.epsilon:g} "
        f"({'relative' if chosen.relative else 'absolute'}) of the cohort's best "
        f"{html.escape(chosen.metric)}. Multiplicity on the {html.escape(first.split)} split. "
        "A larger set shows more multiplicity by size alone, so the cohorts are also compared at "
        "an equal set size"
        + (f", m = {m}, the largest every cohort's set reaches." if m else ".")
        + "</p>"
    )
    parts = [f"<h2>Cohorts by {by}</h2>", intro, _table(_cohort_measures(cohorts))]
    if m is not None:
        parts += [f"<h3>Against the number of models, and at m = {m}</h3>", _cohort_curves(cohorts)]
        parts.append(_table(_at_equal_size(cohorts)))
    shares = (
        pd.DataFrame({label: a.source_decomposition for label, a in cohorts.cohorts.items()})
        .rename_axis("source")
        .reset_index()
    )
    parts += [
        "<h3>Where each cohort's disagreement comes from</h3>",
        _table(shares),
        '<p class="note">Share of per-example prediction variance in each cohort\'s Rashomon '
        "set (see the section below for the method and the chance levels).</p>",
    ]
    flatness = {
        label: {
            name: entry["inside_mean"] for name, entry in a.flatness.get("statistics", {}).items()
        }
        for label, a in cohorts.cohorts.items()
    }
    if any(flatness.values()):
        table = pd.DataFrame(flatness).rename_axis("statistic").reset_index()
        parts += [
            "<h3>Flatness of each cohort's Rashomon set</h3>",
            _table(table),
            "<p class=\"note\">Each statistic's mean over the cohort's Rashomon set: do flatter "
            "cohorts disagree less? (definitions in the flatness section below).</p>",
        ]
    if cohorts.intrinsic_dimension is not None:
        parts.append(_intrinsic_dimension(cohorts.intrinsic_dimension))
    if cohorts.without_ok_models:
        rows = "; ".join(
            f"{html.escape(label)}: "
            + ", ".join(f"{n} {html.escape(status)}" for status, n in counts.items())
            for label, counts in cohorts.without_ok_models.items()
        )
        parts.append(f'<p class="warn">Cohorts without ok models (no Rashomon set): {rows}.</p>')
    return parts


def _intrinsic_dimension(found: dict) -> str:
    """d_int90 (Li et al. 2018) and the mean validation accuracy per subspace dimension."""
    accuracies = {int(d): v for d, v in found["val_acc_by_dim"].items()}
    with _figure(1, 1, panel_height=2.8, width=6.5) as (figure, axes):
        dims = [d for d in accuracies if d > 0]
        axes.plot(dims, [accuracies[d] for d in dims], marker="o", label="subspace")
        if found["full_space_val_acc"] is not None:
            axes.axhline(found["full_space_val_acc"], color="k", lw=0.8, label="full space")
            axes.axhline(found["threshold"], color="C3", ls="--", lw=0.8,
                         label=f"{found['share']:.0%} of the full space")  # fmt: skip
        if found["d_int90"] is not None:
            axes.axvline(found["d_int90"], color="C3", lw=0.8)
        if dims and min(dims) > 0:
            axes.set_xscale("log")
            plain_numbers(axes.xaxis)
        axes.set(xlabel="subspace dimension d", ylabel="mean validation accuracy")
        axes.legend()
        image = _svg(figure)
    verdict = (
        f"<b>d_int90 = {found['d_int90']}</b>: the smallest subspace dimension whose cohort's "
        f"mean validation accuracy reaches {found['share']:.0%} of the full space's "
        f"({found['full_space_val_acc']:.4g}, so ≥ {found['threshold']:.4g})."
        if found["d_int90"] is not None
        else f"d_int90: none — {html.escape(found['reason'])}."
    )
    return (
        "<h3>Intrinsic dimension</h3>"
        + image
        + f'<p class="note">{verdict} Each model trains θ = θ₀ + P z with only z (d values) '
        "learnt, P a fixed sparse random projection with unit columns (Li et al., ICLR 2018); "
        "d = 0 is the full space. Accuracies: the mean over each cohort's ok models.</p>"
    )


def _cohort_measures(cohorts: CohortAnalysis) -> pd.DataFrame:
    analyses = cohorts.cohorts
    rows = {
        "ok models": [len(a.rashomon_set.pool_model_ids) for a in analyses.values()],
        "Rashomon set size": [a.rashomon_set.size for a in analyses.values()],
        **{name: [a.overall[name] for a in analyses.values()] for name in MEASURES},
    }
    frame = pd.DataFrame(rows, index=list(analyses), dtype=object).T
    worse = {name: MEASURE_LEGEND[name].worse for name in MEASURES}
    frame.insert(0, "measure", frame.index)
    frame["worse when"] = [worse.get(name, "") for name in frame.index]
    return frame


def _cohort_curves(cohorts: CohortAnalysis) -> str:
    curve = cohorts.curves().model_count
    m = cohorts.equal_size
    with _panels(len(CURVE_MEASURES)) as (figure, panels):
        for axes, name in zip(panels, CURVE_MEASURES, strict=True):
            for n, (label, part) in enumerate(curve[curve["measure"] == name].groupby(
                    cohorts.by, sort=False)):  # fmt: skip
                color = f"C{n % 10}"
                axes.fill_between(part["size"], part["low"], part["high"], color=color, alpha=0.2)
                axes.plot(part["size"], part["mean"], color=color, marker=".", label=_text(label))
            axes.axvline(m, color="k", lw=0.8, ls=":")
            _measure_scale(axes, name)
            _log2_sizes(axes)
        figure.legend(*panels[0].get_legend_handles_labels(), loc="outside upper center",
                      ncols=min(6, len(cohorts.cohorts)), title=_text(cohorts.by))  # fmt: skip
        figure.supxlabel("models drawn from each cohort's Rashomon set (its baseline always in)")
        image = _svg(figure)
    return image + (
        f'<p class="note">Mean over {cohorts.n_draws} random draws per size, band: the central '
        f"{cohorts.confidence:.0%} of the draws. Dotted line: m = {m}, the equal size of the table "
        "below. Compare the cohorts along a vertical line, not at their curves' ends.</p>"
    )


def _at_equal_size(cohorts: CohortAnalysis) -> pd.DataFrame:
    table = cohorts.at_equal_size.assign(
        value=lambda f: [
            f"{mean:.4g} [{low:.4g}, {high:.4g}]"
            for mean, low, high in zip(f["mean"], f["low"], f["high"], strict=True)
        ]
    ).pivot(index="measure", columns="cohort", values="value")
    order = [name for name in CURVE_MEASURES if name in table.index]
    labels = [label for label in cohorts.cohorts if label in table.columns]
    return table.loc[order, labels].rename_axis(None, axis=1).reset_index()


def _text(label: str) -> str:
    """A value from the data as matplotlib text: ``$`` starts no formula."""
    return label.replace("$", r"\$")


def _histograms(analysis: Analysis) -> str:
    measures = analysis.measures
    with _figure(1, 2, panel_height=2.8) as (figure, (left, right)):
        for axes, values, title, name, color in (
            (left, measures.viable_prediction_range, "viable prediction range", "vpr_mean", "C0"),
            (right, measures.rashomon_capacity, "Rashomon capacity", "rashomon_capacity_mean",
             "C1"),
        ):  # fmt: skip
            axes.hist(values, bins=50, color=color)
            axes.set(title=f"{title} per example", xlabel=MEASURE_LEGEND[name].unit,
                     ylabel="examples", yscale="log")  # fmt: skip
            plain_numbers(axes.yaxis)
        image = _svg(figure)
    return image + (
        f'<p class="note">{len(analysis.example_ids)} examples of the '
        f"{html.escape(analysis.split)} split; log scale: the examples that the set predicts "
        "differently are usually few.</p>"
    )


def _decomposition_section(analysis: Analysis) -> str:
    shares = analysis.source_decomposition
    chance = analysis.source_decomposition_chance
    with _figure(1, 1, panel_height=0.45 * len(shares) + 1.3, width=7.5) as (figure, axes):
        bars = axes.barh(list(shares), list(shares.values()), color="C2", label="share")
        axes.bar_label(bars, fmt="%.2f", padding=3)
        axes.scatter([chance[axis] for axis in shares], list(shares), marker="|", s=300,
                     color="k", zorder=3, label="chance: the share of pure noise")  # fmt: skip
        axes.invert_yaxis()
        figure.legend(loc="outside upper center", ncols=2)
        axes.set(xlabel="share of per-example prediction variance (mean over examples)",
                 xlim=(0, 1))  # fmt: skip
        image = _svg(figure)
    return image + (
        '<p class="note">Sequential main-effect sums of squares over the Rashomon set, in the '
        "order init, order, data, hyperparameters; exact and order-free for a balanced factorial "
        "design. init/order/hyperparameters are procedural sources, data (bootstrap) statistical. "
        "A small set inflates shares by chance: a share near its chance mark (the expected share "
        "if the predictions were pure noise) says nothing about that source.</p>"
    )


def _subgroup_section(analysis: Analysis) -> str:
    if not analysis.subgroups:
        return "<p>The job defines no <code>groups</code> columns.</p>"
    parts = []
    few = False
    for column, values in analysis.subgroups.items():
        frame = pd.DataFrame.from_dict(values, orient="index").rename_axis(column).reset_index()
        small = frame["n_examples"] < FEW_EXAMPLES
        few |= bool(small.any())
        frame["note"] = np.where(small, f"few examples (< {FEW_EXAMPLES})", "")
        parts.append(f"<h3>{html.escape(column)}</h3>" + _table(frame, "notes"))
    if few:
        parts.append(
            f'<p class="note warn">Subgroups with fewer than {FEW_EXAMPLES} examples: one '
            f"example moves their shares by more than 1/{FEW_EXAMPLES}, and their Rashomon "
            "capacity max is a single example; read them as anecdotes, not rates.</p>"
        )
    return "".join(parts)


def _flatness_section(analysis: Analysis, results: Results) -> str:
    summary = analysis.flatness
    if not summary:
        return (
            "<p>No flatness statistics in this run's models table: the job set "
            "<code>flatness: {enabled: false}</code>, or the run predates them. "
            "<code>rashomon flatness DIR</code> computes them from saved weights.</p>"
        )
    statistics = list(summary["statistics"])
    ok = results.models[results.models["status"] == "ok"]
    inside = ok["model_id"].isin(analysis.rashomon_set.model_ids).to_numpy()
    dense = len(ok) > VECTOR_POINTS
    with _panels(len(statistics), panel_height=2.4) as (figure, panels):
        for axes, name in zip(panels, statistics, strict=True):
            for members, color, label in ((~inside, "#999", "other ok models"),
                                          (inside, "C3", "Rashomon set")):  # fmt: skip
                axes.scatter(ok.loc[members, name], ok.loc[members, "test_acc"], c=color,
                             s=2 if dense else 7, label=label, rasterized=dense)  # fmt: skip
            _flatness_scale(axes, ok[name].to_numpy(dtype=float, na_value=np.nan))
            legend = FLATNESS_LEGEND[name]
            axes.set(title=legend.label, xlabel=legend.unit)
        for axes in panels[::PANELS_PER_ROW]:
            axes.set_ylabel("test accuracy")
        figure.legend(*panels[0].get_legend_handles_labels(), loc="outside upper center",
                      ncols=2)  # fmt: skip
        image = _svg(figure)
    table = pd.DataFrame.from_dict(
        {
            name: {
                "models": entry["n_models"],
                "τ test acc": entry["tau_test_acc"],
                "Ψ test acc": entry["granulated_tau_test_acc"]["mean"],
                "τ gap": entry["tau_generalization_gap"],
                "Ψ gap": entry["granulated_tau_generalization_gap"]["mean"],
                "τ disagreement": entry["tau_disagreement"],
                "mean in set": entry["inside_mean"],
                "mean outside": entry["outside_mean"],
            }
            for name, entry in summary["statistics"].items()
        },
        orient="index",
        dtype=float,
    ).astype({"models": int})
    definitions = "; ".join(
        f"<b>{name}</b>: {html.escape(FLATNESS_LEGEND[name].definition)}" for name in statistics
    )
    axes_text = ", ".join(summary["axes"]) or "none vary"
    return (
        image
        + _table(table.rename_axis("statistic").reset_index())
        + '<p class="note">Kendall τ-b over the ok models with test accuracy and with the '
        "generalisation gap (val_loss − train_loss); Ψ: the granulated τ of Jiang et al. (2020), "
        f"the mean over hyperparameter axes ({html.escape(axes_text)}) of τ among models that "
        "differ in that axis alone (same other hyperparameters and seeds); τ disagreement: with "
        "each set member's disagreement with the rest of the Rashomon set. A sharpness statistic "
        "that predicts generalisation has τ &lt; 0 with accuracy and τ &gt; 0 with the gap. "
        "L is the mean cross-entropy (nats) on the curvature set; a higher value means a sharper "
        f'minimum (or larger weights).</p><p class="note">{definitions}.</p>'
    )


def _measure_panel(axes, x, y, name: str) -> None:
    """One measure on its own scale, from its floor (0, or 1 class) so that a flat or tiny curve
    looks flat and tiny; call it after drawing anything else on ``axes``."""
    axes.plot(x, y, marker=".", color="C0")
    _measure_scale(axes, name)


def _measure_scale(axes, name: str) -> None:
    """A measure's title, unit and floor on ``axes``, once its curves are drawn."""
    legend = MEASURE_LEGEND[name]
    axes.set(title=legend.label, ylabel=legend.unit)
    axes.set_ylim(bottom=1.0 if legend.unit == "effective classes" else 0.0)


def _flatness_scale(axes, values: np.ndarray) -> None:
    """Log x for positive values over more than two decades, symlog if some are ≤ 0."""
    magnitudes = np.abs(values[np.isfinite(values) & (values != 0)])
    if len(magnitudes) == 0 or magnitudes.max() <= 100 * magnitudes.min():
        return
    finite = values[np.isfinite(values)]
    if (finite > 0).all():
        axes.set_xscale("log")
    else:
        # ticks at 0 and every other power of ten down to linthresh, itself a power of ten a
        # decade's width from 0: a tick per decade would overlap its neighbours' labels
        low = int(np.floor(np.log10(np.quantile(magnitudes, 0.1))))
        high = int(np.floor(np.log10(magnitudes.max())))
        axes.set_xscale("symlog", linthresh=10.0**low)
        decades = 10.0 ** np.arange(high, low - 1, -2)
        sides = [side for side in (-1, 1) if (side * finite > 0).any()]
        axes.set_xticks(sorted({0.0, *(side * d for side in sides for d in decades)}))
    plain_numbers(axes.xaxis)


def _connectivity_section(results: Results, analysis: Analysis) -> str:
    # imported here: it needs torch, which `analyze` alone never loads
    from rashomon.analysis._connectivity import connectivity_section

    return connectivity_section(results, analysis)
