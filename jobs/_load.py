"""Reading a job: YAML text or a parsed document in, a validated :class:`Job` or one UserError out.

The loader is PyYAML's SafeLoader (it builds no objects) with the changes users expect: YAML 1.2
floats (``1e-3`` is a number) and duplicate keys as errors. A job file may also be hostile or
simply wrong (a binary file, a generated monster, an alias bomb whose few lines expand to 10⁹
values, a self-containing alias, ``[`` × 100,000), so every cost is bounded before it is paid: the
bytes read, the nesting while parsing, and then the size and depth of the parsed document with
every alias counted as often as it expands, measured on the node graph before any value is built.
Beyond the bounds the job is refused with one line; a real job is far inside them.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rashomon.jobs._errors import UserError
from rashomon.jobs._messages import format_errors
from rashomon.jobs._sections import Job
from rashomon.jobs._text import show, type_name

#: The hyperparameters whose combinations with the family the rules judge.
FAMILY_RULES = ("family", "hidden", "channels", "kernel", "stride", "pool", "dropout")
#: ... and those of the optimizer's rules (nesterov; sam's settings; ASAM in a subspace).
OPTIMIZER_RULES = (
    ("optimizer", "momentum", "nesterov"),
    ("optimizer", "rho", "sam_normalize", "sam_adaptive", "subspace_dim"),
)

__all__ = [
    "MAX_JOB_BYTES",
    "MAX_JOB_DEPTH",
    "MAX_JOB_VALUES",
    "load_job",
    "load_job_text",
    "parse_job",
]

#: A job file is a page of settings; a larger file is not a job (or not one written to be read).
MAX_JOB_BYTES = 1 << 20
#: Values in a parsed job, aliases counted as often as they expand (a real job has a few hundred).
MAX_JOB_VALUES = 100_000
#: Levels of nesting (a real job has at most seven: search.hidden.choice[0][0]).
MAX_JOB_DEPTH = 64

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
    error with its line number. Composition stops at :data:`MAX_JOB_DEPTH` levels (PyYAML
    recurses once per level), and it records the anchors and aliases it meets, to name them.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.aliases: list[str] = []  # alias names in the order met
        self.anchor_of: dict[int, str] = {}  # id(node) -> its anchor name

    def fetch_flow_collection_start(self, token_class: type[yaml.Token]) -> None:
        # The scanner reads ahead up to 1,024 characters of unclosed `[`/`{` before the composer
        # sees any, at a quadratic cost (0.7 s); stop it at the same depth.
        if self.flow_level >= MAX_JOB_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested deeper than {MAX_JOB_DEPTH} levels", self.get_mark()
            )
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases.append(event.anchor)
            return super().compose_node(parent, index)
        if self.depth >= MAX_JOB_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_JOB_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if event.anchor is not None:
            self.anchor_of[id(node)] = event.anchor
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's constructors let Python errors through for values that match a type's pattern
        # but are not valid (2020-13-45, `!!int abc`, an int of 5,000 digits): give them a line.
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            reason = f" ({str(exc).split(':')[0]})" if isinstance(exc, ValueError) else ""
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read {show(node.value)} as {_TAG_NAMES.get(tag, '!!' + tag)}{reason}; "
                "quote it if it is text",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {show(key)} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_TAG_NAMES = {"int": "an integer", "float": "a number", "timestamp": "a date", "bool": "true/false"}

_JobLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def load_job(path: str | Path) -> Job:
    """Read, validate and resolve a job YAML file; every problem is one UserError."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_JOB_BYTES + 1)  # bounded: the path may be /dev/zero
    except FileNotFoundError:
        raise UserError(f"{source}: no such job file") from None
    except IsADirectoryError:
        raise UserError(f"{source}: is a directory, not a job file") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read the job file: {exc.strerror}") from None
    if len(raw) > MAX_JOB_BYTES:
        raise UserError(_too_large(source))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); is this the job YAML?"
        ) from None
    return load_job_text(text, source, base_dir=path.resolve().parent)


def _too_large(source: str) -> str:
    return (
        f"{source}: more than {MAX_JOB_BYTES >> 20} MiB, too large for a job file; is this the "
        "job YAML? (vary many settings with population.sample rather than listing them)"
    )


def load_job_text(
    text: str, source: str, *, base_dir: str | Path | None = None, recorded: bool = False
) -> Job:
    """Validate a job given as YAML text; `source` names it in error messages. ``recorded``: the
    text is a results folder's ``job.yaml``, possibly written by an earlier rashomon, whose
    renamed settings are read in today's words."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_JOB_BYTES:
        raise UserError(_too_large(source))
    loader = None
    try:
        loader = _JobLoader(text)  # checks every character already
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, loader, source)
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise UserError(
            f"{source}: {_where(mark)}invalid YAML: "
            + " ".join(p for p in (exc.context, exc.problem) if p)
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise UserError(
            f"{source}: line {line}: invalid YAML: unacceptable character #x{exc.character:04x} "
            f"({exc.reason}); is this the job YAML?"
        ) from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if recorded:
        document = _upgrade_recorded(document)
    return parse_job(document, source, base_dir=base_dir)


def _upgrade_recorded(document: Any) -> Any:
    """A recorded job in today's settings. A folder's identity is the job hash in its header, so
    reading it (``status``, ``analyze``) must not fail because a setting was renamed since; a new
    run of the renamed job still differs from the recorded one and is refused as another job."""
    flatness = document.get("flatness") if isinstance(document, Mapping) else None
    if isinstance(flatness, Mapping) and "avg_samples" in flatness:
        upgraded = {k: v for k, v in flatness.items() if k != "avg_samples"}
        samples = flatness["avg_samples"]
        upgraded.setdefault("avg_pairs", max(1, samples // 2) if isinstance(samples, int) else 8)
        document = {**document, "flatness": upgraded}
    return document


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def _check_expansion(root: yaml.Node, loader: _JobLoader, source: str) -> None:
    """Refuse a document whose aliases expand beyond the bounds, or that contains itself.

    Sizes and depths are computed once per node of the graph (an alias is the same node object
    as its anchor), so this costs what the text costs, however far the aliases would expand.
    """
    size: dict[int, int] = {}  # id(node) -> values it expands to, itself included
    depth: dict[int, int] = {}  # id(node) -> levels it expands to
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            continue
        if key in size:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                name = loader.anchor_of.get(id(child), "?")
                raise UserError(
                    f"{source}: {_where(node.start_mark)}the alias *{name} refers to a value that "
                    "contains it, so it never ends; write the value out instead"
                )
            if id(child) not in size:
                stack.append((child, False))
    aliases = ", ".join(f"*{name}" for name in dict.fromkeys(loader.aliases))
    through = f" through its aliases ({aliases})" if aliases else ""
    if size[id(root)] > MAX_JOB_VALUES:
        raise UserError(
            f"{source}: the job expands to {_count(size[id(root)])} values{through}, more than the "
            f"{MAX_JOB_VALUES:,} a job may hold; write the values out, or vary settings with "
            "population.sample rather than listing them"
        )
    if depth[id(root)] > MAX_JOB_DEPTH:
        raise UserError(
            f"{source}: the job nests {_count(depth[id(root)])} levels deep{through}, more than "
            f"the {MAX_JOB_DEPTH} a job may have; write the values out"
        )


def _children(node: yaml.Node) -> Iterable[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return node.value
    return ()


def _count(n: int) -> str:
    # Python will not print an integer of more than 4,300 digits; a bomb's count may have more.
    return f"{n:,}" if n < 10**12 else f"about 10^{int(n.bit_length() * math.log10(2))}"


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
    listed = isinstance(job.population.grid, tuple)
    varied = [
        _candidates(grid, job.population.sample, "population", n if listed else None)
        for n, grid in enumerate(job.population.grids())
    ]
    varied.append(_candidates(None, job.search, "search"))
    for candidates in varied:
        for group in (FAMILY_RULES, *OPTIMIZER_RULES):
            axes = [candidates[name] for name in group if name in candidates]
            for combination in itertools.product(*axes):
                overrides = {name: value for name, value, _ in combination}
                origin = ", ".join(f"{path} = {show(value)}" for _, value, path in combination)
                job.resolve(overrides, origin=origin)


def _candidates(
    grid: Any, sampled: Any, prefix: str, number: int | None = None
) -> dict[str, list[tuple[str, Any, str]]]:
    found: dict[str, list[tuple[str, Any, str]]] = {}
    if grid is not None:
        which = "grid" if number is None else f"grid[{number}]"
        for name, values in grid.axes().items():
            path = f"{prefix}.{which}.{name}"
            found[name] = [(name, v, f"{path}[{i}]") for i, v in enumerate(values)]
    where = f"{prefix}.sample" if grid is not None else prefix
    for name, dist in sampled.distributions().items():
        path = f"{where}.{name}.{dist.kind}"
        found[name] = [(name, v, f"{path}[{i}]") for i, v in enumerate(dist.args)]
    return found
