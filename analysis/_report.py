"""``rashomon report``: one self-contained HTML page about a population and its Rashomon set.

Plots are inline SVG drawn by matplotlib (Agg), tables plain HTML, no scripts and no links, so the
page opens offline, attaches to an e-mail and survives being archived with the results.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from rashomon.analysis._analyze import Analysis
from rashomon.analysis._curves import epsilon_curve, model_count_curve
from rashomon.analysis._figures import figure as _figure
from rashomon.analysis._figures import svg as _svg
from rashomon.analysis._figures import table as _table
from rashomon.analysis._multiplicity import MEASURES
from rashomon.analysis._rashomon_set import metric_values, rashomon_set
from rashomon.analysis._results import Results

SHARE_MEASURES = ("ambiguity", "discrepancy", "disagreement", "vpr_mean", "score_std_mean")
CAPACITY_LABEL = "Rashomon capacity (effective classes)"
POOL_NOTE = (
    "Rashomon ratios here are pool-based — shares of the models that were trained — not the "
    "volumetric ratio of Semenova, Rudin & Parr (2022)."
)
FLATNESS_LABELS = {
    "grad_norm": "gradient norm ‖∇L‖₂ (nats / parameter)",
    "hessian_trace": "Hessian trace tr ∇²L (nats / parameter²)",
    "hessian_trace_se": "s.e. of the Hessian trace (nats / parameter²)",
    "hessian_top_eig": "top Hessian eigenvalue (nats / parameter²)",
    "hessian_trace_adaptive": "adaptive trace tr(D ∇²L D) (nats)",
    "fisher_trace": "Fisher / GGN trace (nats / parameter²)",
    "sam_sharpness": "SAM sharpness (loss increase, nats)",
    "asam_sharpness": "ASAM sharpness (loss increase, nats)",
    "avg_sharpness": "average sharpness (loss increase, nats)",
    "weight_norm": "weight norm ‖w‖₂ (parameter units)",
    "dist_from_init": "distance from init ‖w − w₀‖₂ (parameter units)",
}
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;border-bottom:1px solid #eee;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em}figure{margin:1em 0}svg{max-width:100%;height:auto}
"""


def write_report(
    results: Results, analysis: Analysis, target: str | os.PathLike | None = None
) -> Path:
    """Write the HTML report of ``analysis`` (default: ``report.html`` in a local results folder,
    else in the working directory) and return its path."""
    if target is None:
        local = "://" not in results.location
        target = Path(results.location) / "report.html" if local else Path("report.html")
    target = Path(target)
    target.write_text(render_report(analysis, results), encoding="utf-8")
    return target


def render_report(analysis: Analysis, results: Results) -> str:
    chosen = analysis.rashomon_set
    summary = analysis.to_json()
    sections = [
        f"<h1>Rashomon report — {html.escape(results.location)}</h1>",
        _overview(analysis, results),
        "<h2>Multiplicity of the Rashomon set</h2>",
        _table(pd.DataFrame({"measure": MEASURES, "value": [summary[m] for m in MEASURES]})),
        f'<p class="note">{POOL_NOTE}</p>',
        "<h2>Rashomon set size and multiplicity against ε</h2>",
        _epsilon_section(analysis, results),
        "<h2>Multiplicity against the number of models</h2>",
        _model_count_section(analysis, results),
        "<h2>Per-example spread</h2>",
        _histograms(analysis),
        "<h2>Where the disagreement comes from</h2>",
        _decomposition_section(analysis),
        "<h2>Subgroups</h2>",
        _subgroup_section(analysis),
        "<h2>Flatness</h2>",
        _flatness_section(analysis, results),
        "<h2>Linear mode connectivity</h2>",
        _connectivity_section(results, analysis),
    ]
    title = html.escape(f"Rashomon report: {chosen.size} models")
    return (
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
        f"<p>{len(models)} models recorded. Seeds: {seeds['init']} init × {seeds['order']} "
        f"order × {seeds['data']} data; hyperparameters that vary: "
        f"{', '.join(c[3:] for c in varying) or 'none'}.</p>"
        f"<p>Rashomon set: <b>{chosen.size}</b> of {len(chosen.pool_model_ids)} ok models with "
        f"{html.escape(chosen.metric)} ≤ {chosen.threshold:.4g} (ε = {chosen.epsilon:g}, "
        f"{'relative' if chosen.relative else 'absolute'}), chosen on "
        f"validation data; baseline <code>{html.escape(chosen.baseline_model_id)}</code>. "
        f"Multiplicity is measured on the {analysis.split} split "
        f"({len(analysis.example_ids)} examples).</p>"
    )
    figure, axes = _figure(1, 1)
    values = metric_values(ok, chosen.metric)
    axes.hist(values, bins=40, color="#999")
    axes.axvline(
        chosen.threshold, color="C3", label=f"Rashomon set threshold (ε = {chosen.epsilon:g})"
    )
    axes.set(xlabel=f"{chosen.metric} (validation, fraction)", ylabel="models")
    axes.legend()
    return text + _table(counts) + _svg(figure)


def _epsilon_section(analysis: Analysis, results: Results) -> str:
    chosen = analysis.rashomon_set
    ok = results.models[results.models["status"] == "ok"]
    values = metric_values(ok, chosen.metric)
    best = float(values[ok["model_id"] == chosen.baseline_model_id].iloc[0])
    reach = float(values.max()) - best
    if chosen.relative:
        reach = reach / best if best > 0 else chosen.epsilon
    reach = max(reach, chosen.epsilon)
    widest = rashomon_set(
        results.models, reach, chosen.metric, relative=chosen.relative,
        baseline=chosen.baseline_model_id,
    )  # fmt: skip
    metric = metric_values(
        results.models.set_index("model_id").loc[widest.model_ids].reset_index(), chosen.metric
    )
    curve = epsilon_curve(
        results.probabilities(analysis.split, widest.model_ids),
        metric.to_numpy(),
        np.unique(np.append(np.linspace(0, reach, 11), chosen.epsilon)),
        relative=chosen.relative,
        pool_predictions=analysis.measures.pool_predictions,
    )
    figure, (size, shares, capacity) = _figure(1, 3)
    size.plot(curve["epsilon"], curve["rashomon_set_size"], marker="o")
    size.set(ylabel="models in the Rashomon set")
    for measure in (*SHARE_MEASURES, "pattern_rashomon_ratio"):
        shares.plot(curve["epsilon"], curve[measure], marker=".", label=measure)
    shares.set(ylabel="fraction (of examples, models or patterns)")
    shares.legend(fontsize=7)
    for measure in ("rashomon_capacity_mean", "rashomon_capacity_max"):
        capacity.plot(curve["epsilon"], curve[measure], marker=".", label=measure[18:])
    capacity.set(ylabel=CAPACITY_LABEL)
    capacity.legend(fontsize=7)
    rule = "relative" if chosen.relative else "absolute"
    for axes in (size, shares, capacity):
        axes.axvline(chosen.epsilon, color="C3", lw=0.8)
        axes.set_xlabel(f"ε ({chosen.metric}, {rule})")
    return _svg(figure) + f'<p class="note">{POOL_NOTE}</p>'


def _model_count_section(analysis: Analysis, results: Results) -> str:
    chosen = analysis.rashomon_set
    if chosen.size < 2:
        return "<p>The Rashomon set has one model: nothing to draw.</p>"
    curve = model_count_curve(results.probabilities(analysis.split, chosen.model_ids))
    figure, (shares, capacity) = _figure(1, 2)
    panels = [(shares, SHARE_MEASURES, "fraction (of examples or models)"),
              (capacity, ("rashomon_capacity_mean",), CAPACITY_LABEL)]  # fmt: skip
    for axes, measures, label in panels:
        for measure in measures:
            part = curve[curve["measure"] == measure]
            (line,) = axes.plot(part["size"], part["mean"], marker=".", label=measure)
            axes.fill_between(part["size"], part["low"], part["high"], color=line.get_color(),
                              alpha=0.2)  # fmt: skip
        axes.set_xscale("log", base=2)
        axes.set(xlabel="models drawn from the Rashomon set", ylabel=label)
        axes.legend(fontsize=7)
    return _svg(figure) + (
        '<p class="note">Mean over 30 random draws per size, band: central 95% of the draws. '
        "Multiplicity grows with the number of models, so compare sets at equal size.</p>"
    )


def _histograms(analysis: Analysis) -> str:
    measures = analysis.measures
    figure, (left, right) = _figure(1, 2)
    left.hist(measures.viable_prediction_range, bins=50, color="C0")
    left.set(xlabel="viable prediction range (probability)", ylabel="examples", yscale="log")
    right.hist(measures.rashomon_capacity, bins=50, color="C1")
    right.set(xlabel="Rashomon capacity (effective number of classes)", ylabel="examples",
              yscale="log")  # fmt: skip
    return _svg(figure)


def _decomposition_section(analysis: Analysis) -> str:
    shares = analysis.source_decomposition
    figure, axes = _figure(1, 1, height=2.8)
    axes.barh(list(shares), list(shares.values()), color="C2")
    axes.invert_yaxis()
    axes.set(
        xlabel="share of per-example prediction variance (averaged over examples)", xlim=(0, 1)
    )
    return _svg(figure) + (
        '<p class="note">Sequential main-effect sums of squares over the Rashomon set, in the '
        "order init, order, data, hyperparameters; exact and order-free for a balanced factorial "
        "design. init/order/hyperparameters are procedural sources, data (bootstrap) statistical."
        "</p>"
    )


def _subgroup_section(analysis: Analysis) -> str:
    if not analysis.subgroups:
        return "<p>The job defines no <code>groups</code> columns.</p>"
    parts = []
    for column, values in analysis.subgroups.items():
        frame = pd.DataFrame.from_dict(values, orient="index").rename_axis(column).reset_index()
        parts.append(f"<h3>{html.escape(column)}</h3>" + _table(frame))
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
    n_rows = -(-len(statistics) // 4)
    figure, panels = _figure(n_rows, 4, height=2.9 * n_rows)
    panels = np.ravel(panels)
    for axes, name in zip(panels, statistics, strict=False):
        for members, color, label in ((~inside, "#999", "other ok models"),
                                      (inside, "C3", "Rashomon set")):  # fmt: skip
            axes.scatter(ok.loc[members, name], ok.loc[members, "test_acc"], c=color, s=6,
                         label=label)  # fmt: skip
        _flatness_scale(axes, ok[name].to_numpy(dtype=float, na_value=np.nan))
        axes.set(xlabel=FLATNESS_LABELS[name], ylabel="test accuracy (fraction)")
    panels[0].legend(fontsize=7)
    for axes in panels[len(statistics) :]:
        axes.set_axis_off()
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
    axes_text = ", ".join(summary["axes"]) or "none vary"
    return (
        _svg(figure)
        + _table(table.rename_axis("statistic").reset_index())
        + '<p class="note">Kendall τ-b over the ok models with test accuracy and with the '
        "generalisation gap (val_loss − train_loss); Ψ: the granulated τ of Jiang et al. (2020), "
        f"the mean over hyperparameter axes ({html.escape(axes_text)}) of τ among models that "
        "differ in that axis alone (same other hyperparameters and seeds); τ disagreement: with "
        "each set member's disagreement with the rest of the Rashomon set. A sharpness statistic "
        "that predicts generalisation has τ &lt; 0 with accuracy and τ &gt; 0 with the gap. "
        "L is the mean cross-entropy (nats) on the curvature set.</p>"
    )


def _flatness_scale(axes, values: np.ndarray) -> None:
    """Log x for positive values over more than two decades, symlog if some are ≤ 0."""
    magnitudes = np.abs(values[np.isfinite(values) & (values != 0)])
    if len(magnitudes) == 0 or magnitudes.max() <= 100 * magnitudes.min():
        return
    if (values[np.isfinite(values)] > 0).all():
        axes.set_xscale("log")
    else:
        axes.set_xscale("symlog", linthresh=float(np.quantile(magnitudes, 0.1)))


def _connectivity_section(results: Results, analysis: Analysis) -> str:
    # imported here: it needs torch, which `analyze` alone never loads
    from rashomon.analysis._connectivity import connectivity_section

    return connectivity_section(results, analysis)
