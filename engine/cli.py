"""The ``rashomon`` command line.

Every failure ends in one line on stderr and no traceback: a mistake the user can fix
(``UserError``) exits 2; a run that stopped early (``RunFailed``) or a failure of the system (a full
disk, a vanished mount) exits 1; Ctrl-C or SIGTERM stops the command cleanly and exits 130 or 143,
and a second one cannot break the clean-up into a traceback. Whatever is printed may quote data
(column names, values, error texts), so control characters are escaped before they reach the
terminal, and URL passwords are masked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from rashomon.jobs import UserError, printable, redact

_SHOWN = 20  # damaged packs listed by `status`
OUT_HELP = (
    "results folder: a path (shared across nodes on a cluster) or a pyarrow.fs URL such as "
    "s3://bucket/prefix (default results/<job name>)"
)
RESUME = "run the same command again to resume"
# C0 and C1 controls but the newline, DEL, and the invisible Unicode formatting and bidi controls


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv=None`` means the process is the ``rashomon`` command, which exits
    right after, so Ctrl-C and SIGTERM stay ignored until it has (Python's own shutdown takes a
    second or two after a run)."""
    args = _parser().parse_args(argv)
    resume = f"; {RESUME}" if args.name in ("run", "tune", "flatness") else ""
    with _interrupts(restore=argv is not None) as received:
        ray_was_running = _ray_running()
        try:
            code = args.command(args)
            sys.stdout.flush()
            return code
        except UserError as error:
            return _fail(f"error: {error}", 2)
        except KeyboardInterrupt:  # Ray re-raises it without our arguments
            signum = received[0] if received else signal.SIGINT
            how = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
            return _fail(f"interrupted{how}{resume}", 128 + signum)
        except BrokenPipeError:  # the reader went away (`rashomon analyze DIR | head -1`)
            _silence_stdout()
            return 128 + signal.SIGPIPE
        except OSError as error:  # the system's: a full disk, a read-only or vanished folder
            return _fail(f"error: {error}{resume}", 1)
        finally:
            _ignore_interrupts()  # the clean-up must not be broken into
            if not ray_was_running:
                _stop_ray()


def _printable(text: str) -> str:
    """``text`` safe for a terminal and a log: control characters escaped, passwords masked."""
    return printable(redact(text), newlines=True)


def _say(text: str) -> None:
    print(_printable(text))


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError):  # stderr may be a closed pipe too
        print(f"rashomon: {_printable(message)}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _interrupts(restore: bool = True) -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM raise ``KeyboardInterrupt`` once (the signals received are listed in
    what it yields), then are ignored until the command has cleaned up: stopped its trainers and
    Ray. A signal that was ignored stays so."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum: int, frame) -> None:
        _ignore_interrupts()
        received.append(signum)
        raise KeyboardInterrupt

    for number, handler in saved.items():
        if handler not in (signal.SIG_IGN, None):  # None: a handler not set from Python
            signal.signal(number, interrupt)
    try:
        yield received
    finally:
        for number, handler in saved.items():
            if restore and handler is not None:
                signal.signal(number, handler)


def _ignore_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(number) is not None:  # None: a handler not set from Python
                signal.signal(number, signal.SIG_IGN)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _stop_ray() -> None:
    """Stop the Ray this command started (the embedded one, or its connection to a cluster).
    Ray's shutdown resets SIGTERM to its default action: a second SIGTERM then ends the process
    at once, quietly, as a stopped process ends (status 143); its Ray processes go with it."""
    if _ray_running():
        sys.modules["ray"].shutdown()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """argparse's error, with what the user typed made safe for the terminal."""
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {_printable(message)}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rashomon",
        description="Train populations of models on Ray and measure how much equally good "
        "models disagree.",
        epilog="exit status: 0 done; 1 some models failed, or the run stopped early (run the "
        "same command again to resume); 2 a mistake in the job, the arguments or the files; "
        "130 / 143 stopped by Ctrl-C / SIGTERM (run it again to resume).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="name")

    run = commands.add_parser("run", help="train every model of a job (resumes a stopped run)")
    run.add_argument("job", type=Path, metavar="JOB", help="the job YAML")
    run.add_argument("--out", metavar="DIR", help=OUT_HELP)
    run.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join: auto or HOST:PORT (default: "
        "RAY_ADDRESS, else an embedded local Ray)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(command=_run)

    tune = commands.add_parser(
        "tune", help="an Optuna search where every trial trains a cohort of seeds"
    )
    tune.add_argument("job", type=Path, metavar="JOB", help="the job YAML, with a search: section")
    tune.add_argument(
        "--trials",
        type=int,
        required=True,
        metavar="N",
        help="completed trials the study should hold (a rerun continues the study)",
    )
    tune.add_argument("--out", metavar="DIR", help=OUT_HELP)
    tune.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage (default sqlite:///DIR/study.db; postgresql://…; journal:PATH "
        "for a journal file on storage every node shares); its password is never printed",
    )
    tune.add_argument("--study", metavar="NAME", help="study name (default: the job name)")
    tune.add_argument("--address", metavar="ADDR", help="Ray cluster to join (as for run)")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.set_defaults(command=_tune)

    status = commands.add_parser("status", help="done / pending / failed models of a run")
    status.add_argument("dir", metavar="DIR", help="results folder: a path or a pyarrow.fs URL")
    status.set_defaults(command=_status)

    analyze = commands.add_parser(
        "analyze", help="Rashomon set, predictive multiplicity and where it comes from"
    )
    _set_options(analyze)
    analyze.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the table"
    )
    analyze.set_defaults(command=_analyze)

    report = commands.add_parser("report", help="a self-contained HTML report with plots")
    _set_options(report)
    report.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="output file (default DIR/report.html, or ./report.html for a URL)",
    )
    report.set_defaults(command=_report)

    flatness = commands.add_parser(
        "flatness", help="(re)compute the flat-minima statistics from saved weights"
    )
    flatness.add_argument(
        "dir", metavar="DIR", help="results folder of a `rashomon run` (path or URL)"
    )
    flatness.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the job's flatness section, e.g. --set trace_probes=64",
    )
    flatness.add_argument("--address", metavar="ADDR", help="Ray cluster to join (as for run)")
    flatness.add_argument("--quiet", action="store_true", help="no progress bar")
    flatness.set_defaults(command=_flatness)

    datasets = commands.add_parser("datasets", help="the built-in datasets")
    datasets.set_defaults(command=_datasets)
    return parser


def _run(args) -> int:
    from rashomon.jobs import load_job

    job = load_job(args.job)
    out = args.out or f"results/{job.name}"
    if args.dry_run:
        from rashomon.engine.run import estimate

        _say(describe_estimate(estimate(job, out)))
        return 0
    from rashomon.engine.run import RunFailed, run_job

    try:
        summary = run_job(job, out, address=args.address, show_progress=not args.quiet)
    except RunFailed as error:
        return _fail(f"error: {error}", 1)
    _say(summary.line())
    if summary.trained or summary.failed:
        _say(summary.timing())
    return 1 if summary.failed else 0


def describe_estimate(plan) -> str:
    """The printout of ``--dry-run``: what would be trained, how much it writes, and how long it
    takes on workers like this machine's (timed here; nothing is written)."""
    lines = [
        f"job {plan.job}: {plan.total} models, {plan.pending} to train, "
        f"{plan.total - plan.pending} done",
        f"dataset {plan.dataset}: {plan.examples} examples x {plan.features} features, "
        f"{plan.classes} classes",
        f"packs: {plan.packs} (models per pack {plan.pack_sizes[0]}-{plan.pack_sizes[1]}, "
        f"{plan.settings} distinct architectures/settings), planned for {plan.workers} local "
        "workers",
        f"estimated output: predictions {_bytes(plan.output['predictions'])}, weights "
        f"{_bytes(plan.output['weights'])}, models {_bytes(plan.output['models'])} -> {plan.out}",
    ]
    if plan.sampled:
        lines.append(
            f"  (the sample draws structural hyperparameters: each kind's share of the models is "
            f"read off {plan.sampled:,} of them, spread over the population)"
        )
    compute = plan.compute
    if compute is None:
        return "\n".join(lines)
    hours = compute.worker_seconds / 3600
    share = ", ".join(f"{k} {v / plan.pending:.3g}" for k, v in compute.parts.items())
    flatness = "flatness statistics" if plan.flatness else "no flatness statistics (off)"
    threads = f"{compute.threads} torch thread{'s' * (compute.threads > 1)}"
    startup = sum(compute.startup.values())
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in compute.startup.items())
    timed = f"{compute.timed} of {compute.kinds} pack kinds timed on this machine's trainers"
    lines += [
        f"estimated compute: {hours:.3g} worker-hours on workers like this machine's "
        f"({compute.device}, {threads} each): {plan.pending / hours:,.0f} models per worker-hour",
        f"  a model: {compute.worker_seconds / plan.pending:.3g} s = {share} (s); includes "
        f"{flatness} and writing its output, not the start-up",
        f"estimated wall time: {_duration(compute.wall_seconds)} with the {plan.workers} local "
        f"workers, of which start-up {startup:.1f} s ({parts}); per node of {plan.workers} "
        "workers like these: divide the rest by the number of nodes",
        f"  (calibrated in {compute.calibration_seconds:.1f} s: {timed}, up to "
        f"{compute.calibration_models} models per pack"
        + (", the others scaled by their FLOPs" if compute.timed < compute.kinds else "")
        + (
            "; a huge model timed on part of its work (fewer flatness probes, a slice of its "
            "minibatch or curvature set) and scaled"
            if compute.sliced
            else ""
        )
        + ")",
    ]
    if plan.gpus > 0:
        asked = f"the job asks for {plan.gpus:g} GPU per worker"
        if compute.device == "cuda":
            lines.append(f"  note: {asked}; calibrated on this machine's GPU: another will differ")
        else:
            lines.append(
                f"  note: {asked}, but this machine has no CUDA device: the estimate is for its "
                f"CPU (timed packs of at most {compute.calibration_models} models of the planned "
                "GPU packs); a GPU worker will differ and was not measured"
            )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def _tune(args) -> int:
    from rashomon.engine.run import RunFailed, describe_tune, tune_job
    from rashomon.jobs import load_job

    job = load_job(args.job)
    out = args.out or f"results/{job.name}"
    try:
        summary = tune_job(
            job, out, args.trials, args.storage, args.study, args.address, not args.quiet
        )
    except RunFailed as error:
        return _fail(f"error: {error}", 1)
    _say(describe_tune(summary))
    return 0


def _status(args) -> int:
    text, code = describe_status(args.dir)
    _say(text)
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
        shown = "no error recorded" if pd.isna(error) else printable(str(error))
        lines.append(f"  pack {pack_id} ({len(group)} models): {shown}")
    for pack_id, problem in sorted(scan.damaged.items())[:_SHOWN]:
        lines.append(f"  pack {pack_id} damaged: {printable(problem)}")
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
        lines.append(f"  in progress: {printable(holder.describe())}")
    code = 2 if scan.damaged or examples else 1 if progress.failed else 0
    return "\n".join(lines), code


def _set_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", metavar="DIR", help="results folder: a path or a pyarrow.fs URL (s3://...)"
    )
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
    parser.add_argument(
        "--by",
        metavar="COLUMN",
        help="analyse each value of a models column (hp_optimizer, hp_lr, init_seed, ...) as a "
        "cohort with its own Rashomon set, side by side and at equal set size",
    )


def _analysis(args, by: str | None = None):
    from rashomon import analyze

    analysis = analyze(
        args.dir,
        args.epsilon,
        args.metric,
        relative=args.relative,
        split=args.split,
        by=by,
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

    from rashomon.analysis import format_cohorts, format_table

    analysis = _analysis(args, args.by)
    if args.json:
        _say(json.dumps(analysis.to_dict(), indent=2))
    else:
        _say(format_cohorts(analysis) if args.by else format_table(analysis))
    return 0


def _report(args) -> int:
    from rashomon import report

    if args.html is not None and args.html.is_dir():
        example = args.html / "report.html"
        raise UserError(f"--html {args.html}: is a folder; give a file, e.g. --html {example}")
    analysis = _analysis(args)
    try:
        target = report(analysis, args.html, by=args.by)
    except OSError as error:
        where = error.filename or args.html or f"{args.dir}/report.html"
        raise UserError(
            f"{where}: cannot write the report ({_reason(error)}); choose a writable file with "
            "--html FILE"
        ) from None
    _say(f"report written to {target}")
    return 0


def _flatness(args) -> int:
    from rashomon.engine.run import RunFailed, recompute_flatness

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected KEY=VALUE, e.g. --set trace_probes=64")
        overrides[key.strip()] = value.strip()
    try:
        measured, config = recompute_flatness(
            args.dir, overrides, address=args.address, show_progress=not args.quiet
        )
    except RunFailed as error:
        return _fail(f"error: {error}", 1)
    except OSError as error:
        raise UserError(
            f"{error.filename or args.dir}: cannot update the results ({_reason(error)}); if the "
            "folder is read-only or full, make it writable or copy it elsewhere, and run again"
        ) from None
    _say(f"flatness statistics written for {measured} models ({config.model_dump()})")
    return 0


def _reason(error: OSError) -> str:
    """The system's words for an error, without the temporary file names pyarrow adds."""
    return os.strerror(error.errno) if error.errno else str(error)


def _datasets(args) -> int:
    from rashomon.jobs import builtin_datasets

    rows = [("name", "rows", "features", "classes", "target", "groups", "description")]
    for d in builtin_datasets():
        groups = ",".join(d.groups) or "-"
        rows.append((d.name, d.rows, d.features, d.classes, d.target, groups, d.description))
    _say(_table(rows))
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
