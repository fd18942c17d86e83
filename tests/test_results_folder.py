"""The results folder never loses, mixes or silently corrupts a result (issue #11 §2, SPEC §5).

A foreign folder is refused before anything is touched; damaged pack files (truncated, flipped
bytes, deleted, a crafted pack id) are reported by ``status`` and ``analyze`` with exit 2, and the
next ``run`` trains exactly those packs again — to the same bytes as before, since training is
deterministic — without deleting anything outside the folder. Real runs on a real embedded Ray.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _jobs import tiny_job, write_job

from rashomon.analysis import analyze, open_results
from rashomon.analysis._connectivity import _evaluation_data
from rashomon.engine.cli import main
from rashomon.engine.store import ResultsDir
from rashomon.jobs import UserError, load_job

JOB = tiny_job(name="folder")
N_MODELS = 12
PACK_SIZE = 4


def files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def predictions(out: Path) -> pd.DataFrame:
    frame = pd.concat(
        pd.read_parquet(p) for p in sorted((out / "predictions").glob("[0-9a-f]*.parquet"))
    )
    return frame.sort_values(["model_id", "split", "example_id"], ignore_index=True)


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    job = write_job(root, JOB)
    out = root / "out"
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    return job, out, predictions(out)


def first_pack(out: Path) -> str:
    return sorted(p.stem for p in (out / "models").glob("*.parquet"))[0]


# --- foreign folders ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "tune"])
@pytest.mark.parametrize(
    "foreign",
    ["weights/pretrained.safetensors", "predictions/baseline.parquet", "x.tmp", "job.yaml"],
)
def test_a_folder_that_is_not_a_results_folder_is_refused_untouched(
    tmp_path, capsys, command, foreign
):
    job = write_job(tmp_path / "jobs", JOB + "search: {lr: {loguniform: [0.01, 0.1]}}\n")
    out = tmp_path / "mine"
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_bytes(b"the user's own file")
    before, paths = files(out), sorted(out.rglob("*"))
    extra = ["--trials", "1"] if command == "tune" else []
    assert main([command, str(job), "--out", str(out), "--quiet", *extra]) == 2
    error = capsys.readouterr().err
    assert "not empty and not a rashomon results folder" in error and foreign in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert files(out) == before and sorted(out.rglob("*")) == paths


def test_a_folder_another_run_is_claiming_is_not_foreign(tmp_path):
    """Between another run's lock and its job.yaml, the folder holds only that run's lock and
    the temporary of its job.yaml: a second run must reach the lock (and be refused there)."""
    out = tmp_path / "out"
    (out / ".rashomon-lock").mkdir(parents=True)
    (out / ".rashomon-lock" / "owner.json").write_text("{}")
    (out / "models").mkdir()
    (out / f".job.yaml.{'0' * 32}.tmp").write_text("half")
    ResultsDir(out).refuse_foreign()
    (out / f".notes.txt.{'0' * 32}.tmp").write_text("the user's")
    with pytest.raises(UserError, match="not empty and not a rashomon results folder"):
        ResultsDir(out).refuse_foreign()


# --- damaged packs --------------------------------------------------------------------------


def truncate(out: Path, pack: str) -> None:
    path = out / "predictions" / f"{pack}.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_probability(out: Path, pack: str) -> None:
    """Flip one byte inside the data of the ``prob_0`` column: the values change silently
    unless the pages carry checksums."""
    path = out / "predictions" / f"{pack}.parquet"
    metadata = pq.ParquetFile(path).metadata
    names = [metadata.row_group(0).column(i).path_in_schema for i in range(metadata.num_columns)]
    chunk = metadata.row_group(0).column(names.index("prob_0"))
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x40
    path.write_bytes(bytes(data))


def craft_pack_id(out: Path, pack: str) -> None:
    """A models file whose rows name the pack ``../../x``: the old rerun deleted
    DIR/models/../../x.parquet, a file outside the folder, for a failed pack."""
    path = out / "models" / f"{pack}.parquet"
    table = pq.read_table(path)
    n = table.num_rows
    table = table.set_column(1, "pack_id", pa.array(["../../x"] * n))
    table = table.set_column(table.schema.get_field_index("status"), "status",
                             pa.array(["failed"] * n))  # fmt: skip
    pq.write_table(table, path)


DAMAGE = {
    # case: (how, status exit, analyze exit, models to train again)
    "truncated predictions": (truncate, 2, 2, PACK_SIZE),
    "flipped probability bytes": (flip_probability, 0, 2, PACK_SIZE),
    "deleted predictions": (lambda o, p: (o / "predictions" / f"{p}.parquet").unlink(), 2, 2, 4),
    "deleted weights": (lambda o, p: (o / "weights" / f"{p}.safetensors").unlink(), 2, 0, 4),
    "crafted pack id": (craft_pack_id, 2, 2, PACK_SIZE),
    "deleted examples.parquet": (lambda o, p: (o / "examples.parquet").unlink(), 2, 2, 0),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_reported_and_the_next_run_trains_exactly_the_damaged_pack(
    trained, tmp_path, capsys, case
):
    job, original, expected = trained
    damage, status_code, analyze_code, retrained = DAMAGE[case]
    out = shutil.copytree(original, tmp_path / "parent" / "out")
    victims = [
        tmp_path / "x.parquet",
        tmp_path / "x.safetensors",
        tmp_path / "parent" / "x.parquet",
    ]
    for victim in victims:
        victim.write_bytes(b"outside the results folder")
    pack = first_pack(out)
    damage(out, pack)
    capsys.readouterr()

    assert main(["status", str(out)]) == status_code
    text = capsys.readouterr().out
    if status_code == 2:
        shown = "examples.parquet" if "examples" in case else f"pack {pack} damaged"
        assert shown in text and "trains exactly those packs again" in text
    assert main(["analyze", str(out), "--json"]) == analyze_code
    error = capsys.readouterr().err
    if analyze_code == 2:
        assert "damaged pack" in error or "examples.parquet" in error
        assert len(error.strip().splitlines()) == 1 and "Traceback" not in error

    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"{retrained} models trained" in line
    assert f"{N_MODELS - retrained} already done" in line
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "damaged  " not in text and " damaged:" not in text
    models = open_results(out).models
    assert len(models) == N_MODELS and models["model_id"].is_unique
    pd.testing.assert_frame_equal(predictions(out), expected, check_exact=True)
    assert (out / "weights" / f"{pack}.safetensors").is_file()
    example_bytes = (out / "examples.parquet").read_bytes()
    assert example_bytes == (original / "examples.parquet").read_bytes()
    for victim in victims:
        assert victim.read_bytes() == b"outside the results folder"
    if case == "truncated predictions":  # not provably ours any more: set aside, not deleted
        assert (out / "quarantine" / "predictions" / f"{pack}.parquet").is_file()


def test_a_model_recorded_by_two_packs_is_trained_once_again(trained, tmp_path, capsys):
    """Two writers at once used to leave duplicate model rows that no rerun repaired."""
    job, original, expected = trained
    out = shutil.copytree(original, tmp_path / "out")
    store = ResultsDir(out)
    pack = first_pack(out)
    models = store.read_models(pack)
    twin = "f" * 16
    store.write_pack(twin, models.set_column(1, "pack_id", pa.array([twin] * models.num_rows)),
                     pq.read_table(out / "predictions" / f"{pack}.parquet"))  # fmt: skip
    shutil.copy(out / "weights" / f"{pack}.safetensors", out / "weights" / f"{twin}.safetensors")
    shutil.copy(out / "history" / f"{pack}.parquet", out / "history" / f"{twin}.parquet")
    assert main(["status", str(out)]) == 2
    text = capsys.readouterr().out
    for both in (pack, twin):
        assert f"pack {both} damaged: models file records a model that another pack" in text
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 0
    assert f"{PACK_SIZE} models trained" in capsys.readouterr().out
    models = open_results(out).models
    assert len(models) == N_MODELS and models["model_id"].is_unique
    pd.testing.assert_frame_equal(predictions(out), expected, check_exact=True)


# --- honest readers -------------------------------------------------------------------------


def test_missing_classes_metadata_falls_back_to_class_numbers(trained, tmp_path, capsys):
    _, original, _ = trained
    out = shutil.copytree(original, tmp_path / "out")
    examples = pq.read_table(out / "examples.parquet")
    pq.write_table(examples.replace_schema_metadata(None), out / "examples.parquet")
    assert open_results(out).classes == ["0", "1", "2"]
    assert main(["analyze", str(out), "--json", "--epsilon", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["rashomon_set_size"] >= 1


def test_analyze_says_how_many_models_are_missing(trained, tmp_path, capsys):
    _, original, _ = trained
    assert analyze(original).to_dict()["n_pending"] == 0
    out = shutil.copytree(original, tmp_path / "out")
    (out / "models" / f"{first_pack(out)}.parquet").unlink()
    capsys.readouterr()
    assert main(["analyze", str(out), "--json", "--epsilon", "0.05"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["n_pending"] == PACK_SIZE and isinstance(result["n_pending"], int)
    assert result["n_models"] == N_MODELS - PACK_SIZE
    assert f"{PACK_SIZE} models of the job are not trained yet" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_status_shows_a_failed_packs_error_and_never_nan(trained, tmp_path, capsys):
    _, original, _ = trained
    out = shutil.copytree(original, tmp_path / "out")
    store = ResultsDir(out)
    pack = first_pack(out)
    models = store.read_models(pack)
    failed = models.set_column(
        models.schema.get_field_index("status"), "status", pa.array(["failed"] * PACK_SIZE)
    )
    store.rewrite_models(pack, failed)
    assert main(["status", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"pack {pack} ({PACK_SIZE} models): no error recorded" in text
    assert "nan" not in text


# --- a relative dataset path ----------------------------------------------------------------

CSV_JOB = """
name: relative
dataset: {source: data/points.csv, target: label, split: {val: 0.25, test: 0.25, seed: 0}}
model: {family: mlp, hidden: [4], activation: relu}
train: {epochs: 2, batch_size: 16, optimizer: sgd, lr: 0.05}
population: {seeds: 2}
resources: {cpus_per_worker: 1}
output: {predictions: [val, test], weights: true}
flatness: {enabled: false}
"""


def write_points(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(label=(x[:, 0] > 0).astype(int))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_a_relative_dataset_path_is_found_again_from_another_directory(
    ray_cluster, tmp_path, monkeypatch, capsys
):
    project = tmp_path / "project"
    write_points(project / "data" / "points.csv", seed=0)
    job = write_job(project, CSV_JOB)
    out = tmp_path / "results" / "relative"
    (out / "weights" / "nested").mkdir(parents=True)  # empty folders: still an empty folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    assert main(["run", "job.yaml", "--out", str(out), "--quiet"]) == 0
    monkeypatch.chdir(elsewhere)  # neither the job's folder nor the results folder
    store = ResultsDir(out)
    _, labels = _evaluation_data(store, "test")
    assert len(labels) == (open_results(out).examples["split"] == "test").sum()
    assert store.job().job_hash == load_job(job).job_hash
    assert main(["flatness", str(out)]) == 0
    recorded = store.identity()["dataset_fingerprint"]

    write_points(project / "data" / "points.csv", seed=1)  # the data file changes
    capsys.readouterr()
    assert main(["run", str(job), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "different dataset file" in error and f"{recorded[:12]} recorded" in error
    changed = error.split("recorded, ")[1][:12]
    assert changed != recorded[:12] and len(changed) == 12
    assert main(["flatness", str(out)]) == 2
    error = capsys.readouterr().err
    assert "dataset file changed" in error and f"{changed} now, {recorded[:12]} recorded" in error


def test_a_folder_of_an_earlier_version_reads_with_the_new_columns_null(trained, tmp_path, capsys):
    """An earlier rashomon wrote fewer columns (no cnn hyperparameters), no markers and no page
    checksums: status, analyze and the Python reader still take it as it is."""
    _, original, _ = trained
    out = shutil.copytree(original, tmp_path / "out")
    added = ["hp_channels", "hp_kernel", "hp_stride", "hp_pool"]
    for path in (out / "models").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(added).replace_schema_metadata(None), path)
    assert main(["status", str(out)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(out), "--json", "--epsilon", "0.05"]) == 0
    assert json.loads(capsys.readouterr().out)["n_models"] == N_MODELS
    models = open_results(out).models
    assert models[added].isna().all().all() and len(models) == N_MODELS
    (out / "models" / f"{first_pack(out)}.parquet").write_bytes(b"PAR1 not a table")
    assert main(["status", str(out)]) == 2  # a damaged file is still damaged
