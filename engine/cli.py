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
    text, failed = describe_status(args.dir)
    print(text)
    return 1 if failed else 0


def describe_status(location: str) -> tuple[str, int]:
    """A readable summary and the number of failed models."""
    from rashomon.engine.store import ResultsDir
    from rashomon.jobs import count_models

    results = ResultsDir(location)
    job = results.job()
    total = count_models(job)
    recorded = results.recorded_models()
    counts = recorded["status"].value_counts()
    ok, diverged, failed = (int(counts.get(s, 0)) for s in ("ok", "diverged", "failed"))
    lines = [
        f"{results.location}: job {job.name}",
        f"  done     {ok + diverged:>8} ({ok} ok, {diverged} diverged)",
        f"  pending  {total - ok - diverged - failed:>8}",
        f"  failed   {failed:>8}",
    ]
    failures = recorded[recorded["status"] == "failed"]
    for (pack_id, error), group in failures.groupby(["pack_id", "error"], dropna=False):
        lines.append(f"  pack {pack_id} ({len(group)} models): {error}")
    if failed:
        lines.append("  run the same `rashomon run` again to retry the failed models")
    return "\n".join(lines), failed


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

    return analyze(
        results or args.dir,
        args.epsilon,
        args.metric,
        relative=args.relative,
        split=args.split,
        baseline=args.baseline,
    )


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
