"""The ``rashomon`` command line (SPEC §3).

A mistake the user can fix (``UserError``) ends with one line on stderr and exit status 2 and no
traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rashomon.jobs import UserError

_SHOWN = 20  # damaged packs listed by `status`
OUT_HELP = (
    "results folder: a path (shared across nodes on a cluster) or a pyarrow.fs URL such as "
    "s3://bucket/prefix (default results/<job name>)"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except UserError as error:
        print(f"rashomon: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rashomon: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rashomon",
        description="Train populations of models on Ray and measure how much equally good "
        "models disagree.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train every model of a job (resumes a stopped run)")
    run.add_argument("job", type=Path, help="the job YAML")
    run.add_argument("--out", help=OUT_HELP)
    run.add_argument(
        "--address",
        help="Ray cluster to join: auto or HOST:PORT (default: "
        "RAY_ADDRESS, else an embedded local Ray)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(command=_run)

    tune = commands.add_parser(
        "tune", help="an Optuna search where every trial trains a cohort of seeds"
    )
    tune.add_argument("job", type=Path, help="the job YAML, with a search: section")
    tune.add_argument("--trials", type=int, required=True, help="completed trials wanted")
    tune.add_argument("--out", help=OUT_HELP)
    tune.add_argument(
        "--storage",
        help="Optuna storage URL (default sqlite:///DIR/study.db; postgresql://…; "
        "journal:PATH for a journal file on shared storage)",
    )
    tune.add_argument("--study", help="study name (default: the job name)")
    tune.add_argument("--address", help="Ray cluster to join (as for run)")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.set_defaults(command=_tune)

    status = commands.add_parser("status", help="done / pending / failed models of a run")
    status.add_argument("dir", help="results folder: a path or a pyarrow.fs URL")
    status.set_defaults(command=_status)

    analyze = commands.add_parser(
        "analyze", help="Rashomon set, predictive multiplicity and where it comes from"
    )
    _set_options(analyze)
    analyze.add_argument("--json", action="store_true", help="one JSON object (SPEC §6 keys)")
    analyze.set_defaults(command=_analyze)

    report = commands.add_parser("report", help="a self-contained HTML report with plots")
    _set_options(report)
    report.add_argument("--html", type=Path, help="output file (default DIR/report.html)")
    report.set_defaults(command=_report)

    flatness = commands.add_parser(
        "flatness", help="(re)compute the flat-minima statistics from saved weights"
    )
    flatness.add_argument("dir", help="results folder of a `rashomon run` (path or URL)")
    flatness.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the job's flatness section, e.g. --set trace_probes=64",
    )
    flatness.set_defaults(command=_flatness)

    datasets = commands.add_parser("datasets", help="the built-in datasets")
    datasets.set_defaults(command=_datasets)
    return parser


def _run(args) -> int:
    from rashomon.jobs import load_job

    job = load_job(args.job)
    out = args.out or f"results/{job.name}"
    if args.dry_run:
        from rashomon.engine.run import describe_plan

        print(describe_plan(job, out))
        return 0
    from rashomon.engine.run import run_job

    summary = run_job(job, out, address=args.address, show_progress=not args.quiet)
    print(summary.line())
    return 1 if summary.failed else 0


def _tune(args) -> int:
    from rashomon.engine.run import describe_tune, tune_job
    from rashomon.jobs import load_job

    job = load_job(args.job)
    out = args.out or f"results/{job.name}"
    summary = tune_job(
        job, out, args.trials, args.storage, args.study, args.address, not args.quiet
    )
    print(describe_tune(summary))
    return 0


def _status(args) -> int:
    text, code = describe_status(args.dir)
    print(text)
    return code


def describe_status(location: str) -> tuple[str, int]:
    """A readable summary and the exit status: 2 when pack files are damaged or missing (the
    next run trains those packs again), 1 when models failed, else 0."""
    import pandas as pd

    from rashomon.engine.store import QUARANTINE, Damaged, ResultsDir

    results = ResultsDir(location)
    job = results.job()
    scan = results.scan("files")
    columns = ["model_id", "pack_id", "status", "error", "trial"]
    recorded = scan.models().select(columns).to_pandas()
    progress = results.progress(recorded)
    suspect = [t.select(columns).to_pandas() for t in scan.suspect.values()]
    suspect = pd.concat(suspect) if suspect else recorded.iloc[:0]
    lines = [
        f"{results.location}: job {job.name}",
        f"  done     {progress.ok + progress.diverged:>8} ({progress.ok} ok, "
        f"{progress.diverged} diverged)",
    ]
    if progress.pending is None:
        lines.append(f"  trials   {progress.trials:>8} (a search has no fixed total)")
    else:
        pending = max(0, progress.pending - int(suspect["trial"].isna().sum()))
        lines.append(f"  pending  {pending:>8}")
    lines.append(f"  failed   {progress.failed:>8}")
    if scan.damaged:
        lines.append(f"  damaged  {len(suspect):>8} (in {len(scan.damaged)} packs)")
    failures = recorded[recorded["status"] == "failed"]
    for (pack_id, error), group in failures.groupby(["pack_id", "error"], dropna=False):
        shown = "no error recorded" if pd.isna(error) else _printable(error)
        lines.append(f"  pack {pack_id} ({len(group)} models): {shown}")
    for pack_id, problem in sorted(scan.damaged.items())[:_SHOWN]:
        lines.append(f"  pack {pack_id} damaged: {_printable(problem)}")
    if len(scan.damaged) > _SHOWN:
        lines.append(f"  ... and {len(scan.damaged) - _SHOWN} more damaged packs")
    examples = ""
    try:
        results.examples()
    except Damaged as error:
        examples = str(error)
        lines.append(f"  {examples}")
    if scan.damaged or examples:
        lines.append(
            "  run the same `rashomon run` (or `rashomon tune`) again: it sets the damaged files "
            "aside and trains exactly those packs again"
        )
    elif progress.failed:
        lines.append("  run the same `rashomon run` again to retry the failed models")
    quarantined = results.quarantined()
    if quarantined:
        lines.append(
            f"  {quarantined} damaged or unknown files were set aside in "
            f"{results.location}/{QUARANTINE}/ (never read; delete them once checked)"
        )
    holder = results.holder()
    if holder is not None:
        lines.append(f"  in progress: {_printable(holder.describe())}")
    code = 2 if scan.damaged or examples else 1 if progress.failed else 0
    return "\n".join(lines), code


def _printable(text: str) -> str:
    """Text read from a folder, with control characters escaped (a terminal obeys them)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _set_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="results folder: a path or a pyarrow.fs URL (s3://...)")
    parser.add_argument(
        "--epsilon", type=float, default=0.01, help="Rashomon set tolerance (default 0.01)"
    )
    parser.add_argument(
        "--metric", default="val_err", help="loss-like models column (default val_err)"
    )
    parser.add_argument(
        "--relative", action="store_true", help="admit L <= (1 + ε)·L* instead of L* + ε"
    )
    parser.add_argument("--split", default="test", help="split to measure on (default test)")
    parser.add_argument("--baseline", help="model_id of the reference model (default: the best)")


def _analysis(args, results=None):
    from rashomon.analysis import analyze

    analysis = analyze(
        results or args.dir,
        args.epsilon,
        args.metric,
        relative=args.relative,
        split=args.split,
        baseline=args.baseline,
    )
    if analysis.n_pending:
        print(
            f"rashomon: note: {analysis.n_pending} models of the job are not trained yet; this "
            "covers the models trained so far (run the same `rashomon run` again to finish)",
            file=sys.stderr,
        )
    return analysis


def _analyze(args) -> int:
    import json

    from rashomon.analysis import format_table

    analysis = _analysis(args)
    print(json.dumps(analysis.to_json(), indent=2) if args.json else format_table(analysis))
    return 0


def _report(args) -> int:
    from rashomon.analysis import open_results, write_report

    results = open_results(args.dir)
    target = write_report(results, _analysis(args, results), args.html)
    print(f"report written to {target}")
    return 0


def _flatness(args) -> int:
    from rashomon.engine.run import recompute_flatness

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected KEY=VALUE, e.g. --set trace_probes=64")
        overrides[key.strip()] = value.strip()
    measured, config = recompute_flatness(args.dir, overrides)
    print(f"flatness statistics written for {measured} models ({config.model_dump()})")
    return 0


def _datasets(args) -> int:
    from rashomon.jobs import builtin_datasets

    rows = [("name", "rows", "features", "classes", "target", "groups", "description")]
    for d in builtin_datasets():
        groups = ",".join(d.groups) or "-"
        rows.append((d.name, d.rows, d.features, d.classes, d.target, groups, d.description))
    print(_table(rows))
    return 0


def _table(rows) -> str:
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    )


if __name__ == "__main__":
    sys.exit(main())
