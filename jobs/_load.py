"""Reading a job: YAML text or a parsed document in, a validated :class:`Job` or one UserError out.

The loader is PyYAML's SafeLoader (it builds no objects) with two changes users expect: YAML 1.2
floats (``1e-3`` is a number) and duplicate keys as errors.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rashomon.jobs._errors import UserError
from rashomon.jobs._messages import format_errors
from rashomon.jobs._sections import Job
from rashomon.jobs._text import show, type_name

__all__ = ["load_job", "load_job_text", "parse_job"]

# YAML 1.1 (PyYAML) reads `1e-3` as a string because it wants a dot; YAML 1.2 and every user
# expect a float, and job files are full of learning rates written that way.
_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _JobLoader(yaml.SafeLoader):
    """SafeLoader (no object construction) with YAML 1.2 floats and duplicate keys rejected.

    A repeated key (two `lr:` lines) silently keeps the last one in plain PyYAML; here it is an
    error with its line number.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_JobLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def load_job(path: str | Path) -> Job:
    """Read, validate and resolve a job YAML file; every problem is one UserError."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{source}: no such job file") from None
    except IsADirectoryError:
        raise UserError(f"{source}: is a directory, not a job file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read the job file: {exc.strerror}") from None
    return load_job_text(text, source, base_dir=path.resolve().parent)


def load_job_text(text: str, source: str, *, base_dir: str | Path | None = None) -> Job:
    """Validate a job given as YAML text; `source` names it in error messages."""
    try:
        document = yaml.load(text, Loader=_JobLoader)  # a SafeLoader: builds no objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise UserError(f"{source}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {exc}") from None
    return parse_job(document, source, base_dir=base_dir)


def parse_job(mapping: Any, source: str, *, base_dir: str | Path | None = None) -> Job:
    """Validate an already-parsed job document.

    `source` names the job in error messages (normally its file name); `base_dir` is where
    relative dataset paths are resolved (default: the folder of `source`).
    """
    if mapping is None:
        raise UserError(f"{source}: the job is empty; it needs at least name: and dataset:")
    if not isinstance(mapping, Mapping):
        raise UserError(
            f"{source}: expected a mapping of settings (name:, dataset:, ...) at the top level, "
            f"got {type_name(mapping)}"
        )
    try:
        job = Job.model_validate(dict(mapping))
    except ValidationError as exc:
        raise UserError(format_errors(exc, source, Job)) from None
    job._source = source
    job._base_dir = Path(base_dir) if base_dir is not None else Path(source).resolve().parent
    _check_combinations(job)
    return job


def _check_combinations(job: Job) -> None:
    """Reject grid/sample/search values that break a cross-field rule in some configuration.

    Only the keys the rules read are combined, one rule group at a time, so this stays small even
    for huge grids. For sampled ranges the two bounds are tried: the rules are monotone in them.
    """
    varied = {
        "population": _candidates(job.population.grid, job.population.sample, "population"),
        "search": _candidates(None, job.search, "search"),
    }
    for candidates in varied.values():
        for group in (("family", "hidden"), ("optimizer", "momentum", "nesterov")):
            axes = [candidates[name] for name in group if name in candidates]
            for combination in itertools.product(*axes):
                overrides = {name: value for name, value, _ in combination}
                origin = ", ".join(f"{path} = {show(value)}" for _, value, path in combination)
                job.resolve(overrides, origin=origin)


def _candidates(grid: Any, sampled: Any, prefix: str) -> dict[str, list[tuple[str, Any, str]]]:
    found: dict[str, list[tuple[str, Any, str]]] = {}
    if grid is not None:
        for name, values in grid.axes().items():
            path = f"{prefix}.grid.{name}"
            found[name] = [(name, v, f"{path}[{i}]") for i, v in enumerate(values)]
    where = f"{prefix}.sample" if grid is not None else prefix
    for name, dist in sampled.distributions().items():
        path = f"{where}.{name}.{dist.kind}"
        found[name] = [(name, v, f"{path}[{i}]") for i, v in enumerate(dist.args)]
    return found
