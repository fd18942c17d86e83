"""The report's sections about training itself: learning curves, sharpness through training (the
edge of stability) and simplicity, compared across cohorts.

The cohorts are the values of ``report --by`` when it is given, else the configurations (the
hyperparameters that vary among the ok models); at most `MAX_COHORTS` are drawn, the first in
value order. A cohort's curve is the mean over its ok models at each epoch, its band the central
95% of them: the spread over seeds.

Edge of stability (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at
the edge of stability", ICLR): gradient descent with step η is stable on a quadratic whose
curvature is below 2/η; with heavy-ball momentum β (``sgd``, and ``sam``'s base step) below
2(1 + β)/η, with Nesterov momentum below (2 + 2β)/((1 + 2β)η). Full-batch training sharpens
until the top Hessian eigenvalue reaches that threshold and then hovers there; minibatch SGD
stays below it. Adam's threshold is on its preconditioned Hessian, which is not tracked: its
cohorts have no line. The threshold follows each epoch's learning rate (a schedule moves it).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from rashomon.analysis._cohorts import cohort_labels
from rashomon.analysis._figures import figure as _figure
from rashomon.analysis._figures import panels as _panels
from rashomon.analysis._figures import plain_numbers
from rashomon.analysis._figures import svg as _svg
from rashomon.analysis._figures import table as _table
from rashomon.analysis._flatness import kendall_tau
from rashomon.analysis._legend import HISTORY_LEGEND, SIMPLICITY_LEGEND
from rashomon.analysis._population import Analysis
from rashomon.analysis._results import Results
from rashomon.jobs import SIMPLICITY_COLUMNS

MAX_COHORTS = 8
BAND = (0.025, 0.975)


def training_cohorts(results: Results, by: str | None) -> tuple[pd.Series, str, list[str]]:
    """Each ok model's cohort label (indexed by model_id), what the cohorts are, and the labels
    drawn (at most `MAX_COHORTS`, in value order)."""
    ok = results.models[results.models["status"] == "ok"].set_index("model_id", drop=False)
    if by is not None:
        labels = cohort_labels(ok, by)
        what = by
    else:
        varying = _varying(ok)
        what = ", ".join(c[3:] for c in varying) or "all models"
        parts = [
            cohort_labels(ok, c).map(lambda v, c=c: f"{c[3:]}={v}").where(ok[c].notna(), "")
            for c in varying
        ]  # a setting the model does not use (null) is left out of its label
        labels = pd.Series("all", index=ok.index)
        if parts:
            labels = pd.concat(parts, axis=1).apply(lambda r: ", ".join(p for p in r if p), axis=1)
    order = ok.assign(_label=labels).reset_index(drop=True)
    order = order.sort_values([*_sort_columns(ok, by), "model_id"], kind="stable")
    drawn = list(dict.fromkeys(order["_label"]))[:MAX_COHORTS]
    return labels, what, drawn


def _varying(ok: pd.DataFrame) -> list[str]:
    """The hyperparameters with two values or more among the ok models (a setting that is only
    null for the models that do not use it, such as sam_adaptive next to sgd, does not count)."""
    return [c for c in ok.columns if c.startswith("hp_") and ok[c].nunique() > 1]


def _sort_columns(ok: pd.DataFrame, by: str | None) -> list[str]:
    return [by] if by is not None else _varying(ok)


def _bands(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (cohort, epoch): mean and the central 95% of ``column`` over the cohort's models."""
    grouped = frame.groupby(["cohort", "epoch"], sort=False)[column]
    return pd.DataFrame(
        {
            "mean": grouped.mean(),
            "low": grouped.quantile(BAND[0]),
            "high": grouped.quantile(BAND[1]),
        }
    ).reset_index()


def _curves_frame(results: Results, labels: pd.Series, drawn: list[str]) -> pd.DataFrame:
    history = results.history
    history = history[history["model_id"].isin(labels.index)]
    frame = history.assign(cohort=labels.reindex(history["model_id"]).to_numpy())
    return frame[frame["cohort"].isin(drawn)]


def _note_drawn(labels: pd.Series, drawn: list[str], what: str) -> str:
    total = labels.nunique()
    more = f" (the first {len(drawn)} of {total})" if total > len(drawn) else ""
    return f"Cohorts: {html.escape(what)}{more}."


def learning_curves_section(results: Results, by: str | None) -> str:
    """Training loss, validation loss and accuracy against the epoch, one band per cohort."""
    labels, what, drawn = training_cohorts(results, by)
    frame = _curves_frame(results, labels, drawn)
    if frame.empty:
        return (
            "<p>No learning curves in this results folder: it was trained before rashomon "
            "recorded them (<code>history/</code>).</p>"
        )
    names = ["train_loss", "val_loss", "val_acc"]
    with _panels(len(names)) as (drawing, panels):
        for axes, name in zip(panels, names, strict=True):
            _draw_bands(axes, _bands(frame, name), drawn)
            legend = HISTORY_LEGEND[name]
            axes.set(title=legend.label, ylabel=legend.unit)
        _figure_legend(drawing, panels[0], len(drawn))
        drawing.supxlabel("epoch")
        image = _svg(drawing)
    return image + (
        f'<p class="note">{_note_drawn(labels, drawn, what)} Line: the mean over the cohort\'s '
        "ok models at the end of each epoch; band: the central 95% of them (the spread over "
        "seeds). Training loss: the mean loss of the epoch's minibatches as trained on (with "
        "their dropout masks and label noise, before each step); validation: the validation "
        "split in eval mode.</p>"
    )


def stability_threshold(models: pd.DataFrame, lr: pd.Series) -> pd.Series:
    """The edge-of-stability threshold of each history row: 2(1 + β)/η for heavy-ball momentum
    (sgd, sam's base step), (2 + 2β)/((1 + 2β)η) for Nesterov, NaN for adam(w). ``models`` is
    indexed like ``lr``'s rows (one models row per history row)."""
    beta = models["hp_momentum"].astype(float).fillna(0.0).to_numpy()
    nesterov = models["hp_nesterov"].fillna(False).astype(bool).to_numpy()
    plain = models["hp_optimizer"].isin(["sgd", "sam"]).to_numpy()
    numerator = np.where(nesterov, (2 + 2 * beta) / (1 + 2 * beta), 2 + 2 * beta)
    return pd.Series(np.where(plain, numerator / lr.to_numpy(), np.nan), index=lr.index)


def sharpness_section(results: Results, by: str | None) -> str:
    """The tracked top Hessian eigenvalue against the epoch and its stability threshold."""
    labels, what, drawn = training_cohorts(results, by)
    frame = _curves_frame(results, labels, drawn)
    if frame.empty or frame["hessian_top_eig"].isna().all():
        return (
            "<p>Sharpness was not tracked through training: run the job with "
            "<code>flatness: {track: true}</code> to record the top Hessian eigenvalue at the "
            "end of every epoch.</p>"
        )
    models = results.models.set_index("model_id").loc[frame["model_id"]]
    models.index = frame.index
    frame = frame.assign(threshold=stability_threshold(models, frame["lr"]))
    frame = frame.assign(normalised=frame["hessian_top_eig"] / frame["threshold"])
    with _figure(1, 2, panel_height=3.2) as (drawing, (left, right)):
        eigen = _bands(frame, "hessian_top_eig")
        _draw_bands(left, eigen, drawn)
        thresholds = frame.groupby(["cohort", "epoch"], sort=False)["threshold"].mean()
        for n, label in enumerate(drawn):
            if label in thresholds.index.get_level_values(0):
                line = thresholds.loc[label]
                left.plot(line.index, line.to_numpy(), color=f"C{n % 10}", ls="--", lw=1)
        left.set(title="top Hessian eigenvalue λ_max (dashed: the cohort's threshold)",
                 ylabel="nats / parameter²", yscale="log")  # fmt: skip
        plain_numbers(left.yaxis)
        if frame["normalised"].notna().any():
            _draw_bands(right, _bands(frame, "normalised"), drawn)
            right.axhline(1.0, color="k", lw=0.8, ls=":")
        right.set(title="λ_max / threshold (1: the edge of stability)", ylabel="ratio")
        _figure_legend(drawing, left, len(drawn))
        drawing.supxlabel("epoch")
        image = _svg(drawing)
    peak = frame.groupby(["cohort", "model_id"])["normalised"].max().groupby("cohort").median()
    table = pd.DataFrame(
        {
            "cohort": drawn,
            "λ_max at the end (mean)": [_last(frame, label, "hessian_top_eig") for label in drawn],
            "threshold at the end": [_last(frame, label, "threshold") for label in drawn],
            "peak λ_max / threshold (median)": [peak.get(label, np.nan) for label in drawn],
        }
    )
    return (
        image
        + _table(table)
        + f'<p class="note">{_note_drawn(labels, drawn, what)} λ_max: the largest eigenvalue of '
        "the Hessian of the mean cross-entropy on the curvature set at the end of each epoch "
        "(Lanczos, warm-started from the previous epoch's vector). Threshold: 2(1 + β)/η for "
        "SGD with momentum β at the epoch's learning rate η (sam: its base step's; SAM's own "
        "edge lies lower), (2 + 2β)/((1 + 2β)η) with Nesterov, none for adam. Full-batch "
        "training sharpens up to the threshold and hovers there (Cohen et al. 2021); minibatch "
        "SGD and SAM stay below it.</p>"
    )


def _last(frame: pd.DataFrame, label: str, column: str) -> float:
    part = frame[frame["cohort"] == label]
    return float(part.loc[part["epoch"] == part["epoch"].max(), column].mean())


def simplicity_section(results: Results, analysis: Analysis, by: str | None) -> str:
    """The effective ranks per cohort, inside and outside the Rashomon set, and with accuracy."""
    ok = results.models[results.models["status"] == "ok"]
    present = [c for c in SIMPLICITY_COLUMNS if c in ok and ok[c].notna().any()]
    if not present:
        return (
            "<p>No simplicity statistics in this run's models table: they are measured with the "
            "flatness statistics (<code>flatness: {enabled: true}</code>); "
            "<code>rashomon flatness DIR</code> computes them from saved weights.</p>"
        )
    labels, what, drawn = training_cohorts(results, by)
    ok = ok.set_index("model_id", drop=False).assign(cohort=labels)
    inside = ok["model_id"].isin(analysis.rashomon_set.model_ids)
    rows = []
    for label in drawn:
        part = ok[ok["cohort"] == label]
        row: dict = {"cohort": label, "ok models": len(part)}
        for name in present:
            row[f"{name} (mean)"] = part[name].mean()
        rows.append(row)
    overall = {
        name: {
            "mean in set": ok.loc[inside, name].mean(),
            "mean outside": ok.loc[~inside, name].mean(),
            "τ test acc": kendall_tau(ok[name].to_numpy(float), ok["test_acc"].to_numpy(float)),
        }
        for name in present
    }
    with _figure(1, len(present), panel_height=3.0) as (drawing, axes):
        axes = np.atleast_1d(axes)
        for panel, name in zip(axes, present, strict=True):
            for n, label in enumerate(drawn):
                part = ok[ok["cohort"] == label]
                panel.scatter(part[name], part["test_acc"], s=8, color=f"C{n % 10}",
                              label=label.replace("$", r"\$"))  # fmt: skip
            legend = SIMPLICITY_LEGEND[name]
            panel.set(title=legend.label, xlabel=legend.unit, ylabel="test accuracy")
        _figure_legend(drawing, axes[0], len(drawn))
        image = _svg(drawing)
    definitions = "; ".join(
        f"<b>{name}</b>: {html.escape(SIMPLICITY_LEGEND[name].definition)}" for name in present
    )
    return (
        image
        + _table(pd.DataFrame(rows))
        + _table(pd.DataFrame(overall).T.rename_axis("statistic").reset_index())
        + f'<p class="note">{_note_drawn(labels, drawn, what)} Effective rank (Roy &amp; '
        "Vetterli 2007): exp of the Shannon entropy of a matrix's normalised singular values, "
        "between 1 (one direction) and its rank. Features: the input of the layer that "
        "produces the logits, on the curvature set; weights: the first layer's weight matrix "
        f"(a convolution's kernels flattened per output channel). {definitions}. τ test acc: "
        "Kendall τ-b with test accuracy over the ok models.</p>"
    )


def _draw_bands(axes, bands: pd.DataFrame, drawn: list[str]) -> None:
    for n, label in enumerate(drawn):
        part = bands[bands["cohort"] == label]
        if part.empty:
            continue
        color = f"C{n % 10}"
        axes.fill_between(part["epoch"], part["low"], part["high"], color=color, alpha=0.2)
        axes.plot(part["epoch"], part["mean"], color=color, marker=".",
                  label=label.replace("$", r"\$"))  # fmt: skip


def _figure_legend(drawing, axes, count: int) -> None:
    """The cohorts' legend above the panels, every epoch axis in whole epochs."""
    from matplotlib.ticker import MaxNLocator

    for panel in drawing.axes:
        if panel.get_xlabel() != "dimensions":
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, names = axes.get_legend_handles_labels()
    if handles:
        columns = 2 if max(len(name) for name in names) > 30 else 4
        drawing.legend(handles, names, loc="outside upper center", ncols=min(columns, count))
