"""The HTML report and the `analyze` table read right: figures whose text is text, legible at the
page's width and inside its figure; one id per element on the page; one panel and unit per
measure; a definition and the direction of worse for each; the population counted in the title;
small subgroups flagged; and the flatness summary in the terminal."""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pandas as pd
import pytest
from _svg import PAGE_PX, figures, overlap, size, texts
from _synthetic import write_examples, write_pack
from test_analysis import N_EXAMPLES, factorial, write_folder

from rashomon.analysis import _figures, analyze, format_table, open_results
from rashomon.analysis._flatness import FLATNESS_COLUMNS
from rashomon.analysis._legend import MEASURE_LEGEND
from rashomon.analysis._multiplicity import MEASURES
from rashomon.analysis._report import _flatness_section, render_report
from rashomon.engine.cli import main

_NS = "{http://www.w3.org/2000/svg}"
SECTIONS = ["overview", "epsilon", "model count", "per example", "decomposition", "flatness"]


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """24 models (4 init × 3 data seeds × 2 lr, one diverged), 60 test examples of which 20 are
    the subgroup sex = m, and every flatness statistic: one spanning five decades (log axis), one
    of both signs (symlog axis), one null everywhere."""
    frame, probabilities = factorial(1.0, 0.3)
    frame.loc[5, "status"] = "diverged"
    rng = np.random.default_rng(7)
    n = len(frame)
    frame = frame.assign(train_loss=np.linspace(0.2, 0.3, n), test_acc=rng.uniform(0.8, 0.9, n))
    for name in FLATNESS_COLUMNS:
        frame[name] = rng.uniform(0.5, 2.0, n)
    frame["hessian_trace"] = 10.0 ** rng.uniform(-2, 3, n)
    frame["avg_sharpness"] = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-6, -3, n)
    frame["fisher_trace"] = np.nan
    root = write_folder(tmp_path_factory.mktemp("report") / "run", frame, probabilities)
    results = open_results(root)
    return root, results, analyze(results, epsilon=0.05)


@pytest.fixture(scope="module")
def page(population):
    _, results, analysis = population
    return render_report(analysis, results)


def test_figures_are_text_with_one_id_per_element_on_the_page(page, population):
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) > 100 and len(ids) == len(set(ids))
    references = re.findall(r'(?:href="#|url\(#)([^")]+)', page)
    assert references and set(references) <= set(ids)
    drawn = figures(page)
    assert len(drawn) == len(SECTIONS) + 0  # no weights: connectivity is a note
    assert "DejaVuSans-" not in page  # no glyphs drawn as paths
    for svg, section in zip(drawn, SECTIONS, strict=True):
        nodes = list(svg.iter(f"{_NS}text"))
        assert nodes, section
        assert all(node.text and not list(node) for node in nodes), f"{section}: mathtext"
    _, results, analysis = population
    assert render_report(analysis, results) == page  # the same results, the same page


def test_no_text_is_clipped_overlapped_or_too_small_at_the_page_width(page):
    for svg, section in zip(figures(page), SECTIONS, strict=True):
        width, height = size(svg)
        laid_out = texts(svg)
        assert laid_out, f"{section}: no text"
        for text in laid_out:
            x0, y0, x1, y1 = text.box
            assert x0 >= -0.5 and y0 >= -0.5 and x1 <= width + 0.5 and y1 <= height + 0.5, (
                f"{section}: {text.content!r} clipped at {text.box} in {width} × {height}"
            )
            assert text.css_px >= 10, f"{section}: {text.content!r} shows at {text.css_px:.1f} px"
        for i, a in enumerate(laid_out):
            for b in laid_out[i + 1 :]:
                assert not overlap(a, b), f"{section}: {a.content!r} overlaps {b.content!r}"
    assert PAGE_PX == 1100 and "max-width:1100px" in page


def panels(svg) -> dict[str, list[str]]:
    """Title → every text of its axes, for each axes of one figure."""
    found = {}
    for group in svg.iter(f"{_NS}g"):
        if re.fullmatch(r"f\d+-axes_\d+", group.get("id", "")):
            contents = [text.content for text in texts(group, svg)]
            found.setdefault(contents[-1] if contents else "", contents)
    return found


def test_each_measure_has_its_own_panel_with_its_unit(page):
    epsilon, count = figures(page)[1:3]
    expected_units = {
        "ambiguity": "share of examples",
        "discrepancy": "share of examples",
        "obscurity": "share of examples",
        "disagreement": "probability",
        "viable prediction range": "probability",
        "score std": "probability",
        "Rashomon capacity, mean": "effective classes",
        "Rashomon capacity, max": "effective classes",
    }
    for svg, extra in ((epsilon, {"Rashomon set size", "pattern Rashomon ratio"}), (count, set())):
        found = panels(svg)
        assert set(expected_units) | {"viable prediction range ≥ 0.1"} | extra <= set(found)
        for title, unit in expected_units.items():
            assert unit in found[title], (title, found[title])
    assert "fraction" not in page


def test_the_measures_table_gives_value_unit_definition_and_direction(page, population):
    data = population[2].to_dict()
    for name in MEASURES:
        legend = MEASURE_LEGEND[name]
        definition = re.escape(html.escape(legend.definition, quote=False))
        row = (
            rf"<td>{re.escape(name)}</td>\s*<td>{data[name]:.4g}</td>\s*<td>{legend.unit}</td>"
            rf"\s*<td>{definition}</td>\s*<td>{legend.worse}</td>"
        )
        assert re.search(row, page), name
    assert MEASURE_LEGEND["self_consistency"].worse == "lower"
    assert {MEASURE_LEGEND[m].worse for m in MEASURES if m != "self_consistency"} == {"higher"}
    assert MEASURE_LEGEND["vpr_mean"].unit == MEASURE_LEGEND["score_std_mean"].unit == "probability"


def test_the_title_counts_the_population_and_the_set(page, population):
    size_of_set = population[2].rashomon_set.size
    title = f"Rashomon report: 24 models (23 ok), Rashomon set of {size_of_set}"
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page


def test_subgroups_with_few_examples_are_flagged(page, population):
    assert N_EXAMPLES == 60  # sex = m: every third example, 20 of them
    rows = re.findall(r"<tr>\s*<td>(f|m)</td>\s*<td>(\d+)</td>.*?</tr>", page, re.S)
    assert rows == [("f", "40"), ("m", "20")]
    m_row = re.search(r"<tr>\s*<td>m</td>.*?</tr>", page, re.S).group()
    f_row = re.search(r"<tr>\s*<td>f</td>.*?</tr>", page, re.S).group()
    assert "few examples (&lt; 30)" in m_row and "few examples" not in f_row
    assert "fewer than 30 examples" in page
    table = format_table(population[2]).splitlines()
    by_sex = table[table.index("by sex:") + 2 :]
    assert by_sex[0].split()[:2] == ["f", "40"] and not by_sex[0].endswith("*")
    assert by_sex[1].split()[:2] == ["m", "20"] and by_sex[1].endswith(" *")
    assert by_sex[2] == "  * fewer than 30 examples: one example moves these measures by over 1/30"


def test_analyze_table_has_the_flatness_summary_and_a_legend_per_measure(population, capsys):
    root, _, analysis = population
    assert main(["analyze", str(root), "--epsilon", "0.05"]) == 0
    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    assert lines == format_table(analysis).splitlines()
    assert max(map(len, lines)) <= 100
    data = analysis.to_dict()
    for name in MEASURES:
        legend = MEASURE_LEGEND[name]
        (line,) = [line for line in lines if line.startswith(f"  {name} ")]
        arrow = "↑" if legend.worse == "higher" else "↓"
        assert line.split()[1:3] == [f"{data[name]:.4g}", arrow]
        assert line.endswith(legend.definition)
    statistics = analysis.flatness["statistics"]
    assert set(statistics) == set(FLATNESS_COLUMNS) - {"fisher_trace"}
    header = next(
        i for i, line in enumerate(lines) if line.split()[:3] == ["statistic", "τ", "acc"]
    )
    assert "Kendall τ-b" in "\n".join(lines[header - 4 : header])
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1 : header + 11]}
    assert set(rows) == set(statistics)
    for name, entry in statistics.items():
        expected = [
            entry["tau_test_acc"],
            entry["granulated_tau_test_acc"]["mean"],
            entry["tau_generalization_gap"],
            entry["granulated_tau_generalization_gap"]["mean"],
            entry["tau_disagreement"],
        ]
        assert [float(v) for v in rows[name][:5]] == pytest.approx(expected, abs=0.005), name
        assert float(rows[name][5]) == pytest.approx(entry["inside_mean"], rel=1e-3)
        assert float(rows[name][6]) == pytest.approx(entry["outside_mean"], rel=1e-3)


def test_a_label_wider_than_its_figure_is_not_clipped():
    with _figures.figure(1, 1, panel_height=1.5, width=2.0) as (drawing, axes):
        axes.plot([0, 1], [0, 1])
        axes.set_xlabel("share of per-example prediction variance of " + "a long axis name " * 3)
        (image,) = figures(_figures.svg(drawing))
    width, height = size(image)
    assert width > 2.0 * 72
    for text in texts(image):
        x0, y0, x1, y1 = text.box
        assert x0 >= -0.5 and y0 >= -0.5 and x1 <= width + 0.5 and y1 <= height + 0.5, text


def test_a_large_population_keeps_the_flatness_figure_small(tmp_path):
    """1,200 models × 11 statistics as vector points are 1.5 MB of the page, growing with the
    models; as one image a panel they are bounded by the panels' pixels."""
    rng = np.random.default_rng(0)
    n, n_examples = 1200, 8
    p1 = rng.uniform(0.1, 0.9, (n, n_examples))
    frame = pd.DataFrame(
        {
            "model_id": [f"m{i:04d}" for i in range(n)],
            "init_seed": np.arange(n),
            "val_acc": rng.uniform(0.7, 0.8, n),
            "val_loss": rng.uniform(0.4, 0.5, n),
            "train_loss": rng.uniform(0.3, 0.4, n),
            "test_acc": rng.uniform(0.7, 0.8, n),
            "status": "ok",
            **{name: rng.uniform(1, 2, n) for name in FLATNESS_COLUMNS},
        }
    )
    examples = pd.DataFrame({"example_id": np.arange(n_examples), "split": "test", "label": 0})
    write_examples(tmp_path, pd.concat([examples, examples.assign(split="val")]), ["a", "b"])
    write_pack(tmp_path, "all", frame, {"test": np.stack([1 - p1, p1], axis=-1).astype(np.float32)})
    results = open_results(tmp_path)
    section = _flatness_section(analyze(results, epsilon=0.05), results)
    (figure,) = figures(section)
    assert len(section) < 600_000 and len(list(figure.iter(f"{_NS}image"))) == 11
    assert "gradient norm ‖∇L‖₂" in [text.content for text in texts(figure)]


def test_chance_levels_and_pending_models_are_shown(population, page):
    _, results, analysis = population
    chance = analysis.source_decomposition_chance
    lines = format_table(analysis).splitlines()
    for axis, share in analysis.source_decomposition.items():
        assert f"  {axis:<23}{share:>9.3f}   chance {chance[axis]:.3f}" in lines
    decomposition = figures(page)[4]
    assert "chance: the share of pure noise" in [text.content for text in texts(decomposition)]
    assert "pending" not in page
    unfinished = render_report(dataclasses.replace(analysis, n_pending=3), results)
    assert "<title>Rashomon report: 24 models (23 ok, 3 pending)," in unfinished
    assert "3 models of the job are not trained yet" in unfinished
