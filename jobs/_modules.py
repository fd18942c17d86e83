"""A user's own model class: where ``model.module: "package.module:ClassName"`` is found, the hash
of its source, and importing it — in the driver and again in every Ray worker.

The class is looked up in the job file's folder, then the working directory, then the installed
packages, the order in which a user expects a file next to the job to win. Locating reads no code
(``importlib.machinery.PathFinder`` finds the file without running it), so a job can be hashed and
its models given ids before anything of the user's runs. The sha256 of the module's source file is
part of every model id and of the job hash: an edited model never mixes with the results of the
old one. Only that one file is hashed; an edit to another file it imports is not noticed.

On a Ray worker the recorded folders are tried first and then the worker's working directory
(where ``ray job submit --working-dir`` unpacks the job's folder on every node); whatever is found
must have the recorded hash, or the worker refuses to build the model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rashomon.jobs._errors import UserError
from rashomon.jobs._text import canonical_json, printable, show

__all__ = ["MODULE_TARGET", "ModuleRef", "check_kwargs", "locate_module", "user_frame"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: ``package.module:ClassName`` (the class may be nested: ``module:Outer.Inner``).
MODULE_TARGET = re.compile(rf"{_NAME}(\.{_NAME})*:{_NAME}(\.{_NAME})*")
#: The keyword arguments rashomon itself passes to the class.
RESERVED_KWARGS = ("in_shape", "n_classes")

# sha256 of the source each module was imported from in this process, so an edited file is
# imported again instead of served from sys.modules (a long-lived worker, a notebook).
_IMPORTED: dict[str, str] = {}


@dataclass(frozen=True)
class ModuleRef:
    """Everything that names and rebuilds a user's class; plain data, so it travels to workers."""

    target: str  # "package.module:ClassName"
    kwargs_json: str  # canonical JSON of model.kwargs
    sha256: str  # of the module's source file
    search_path: tuple[str, ...] = field(default=(), compare=False)  # folders tried first

    @property
    def module_name(self) -> str:
        return self.target.split(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.split(":")[1]

    @property
    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.kwargs_json)

    def identity(self) -> dict[str, Any]:
        """What part of a model id it is: the class, its arguments and its source, not where the
        file happens to be."""
        return {"target": self.target, "kwargs": self.kwargs, "sha256": self.sha256}

    def description(self) -> dict[str, Any]:
        return self.identity() | {"search_path": list(self.search_path)}

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> ModuleRef:
        return cls(
            described["target"],
            canonical_json(described.get("kwargs") or {}),
            described["sha256"],
            tuple(described.get("search_path") or ()),
        )

    def call(self) -> str:
        """How the class is called, for messages: ``my_models:Net(width=16)``."""
        arguments = ", ".join(f"{k}={show(v)}" for k, v in self.kwargs.items())
        return f"{self.target}({arguments})"

    def load_class(self) -> type:
        """Import the class from the file with the recorded hash (every failure a UserError)."""
        path, sha256 = locate_module(self.module_name, self.search_path)
        if sha256 != self.sha256:
            raise UserError(
                f"model.module: {printable(str(path))} is not the source these models were "
                f"trained from (sha256 {sha256[:12]}, recorded {self.sha256[:12]}); restore that "
                "version of the file (e.g. from version control), or train again"
            )
        module = _import(self.module_name, path, sha256)
        found: Any = module
        for part in self.class_name.split("."):
            if not hasattr(found, part):
                classes = sorted(n for n, v in vars(module).items() if isinstance(v, type))
                raise UserError(
                    f"model.module: {self.module_name} ({printable(str(path))}) has no "
                    f"{self.class_name!r}; classes there: {', '.join(classes) or 'none'}"
                )
            found = getattr(found, part)
        if not isinstance(found, type):
            raise UserError(
                f"model.module: {self.target} is {type(found).__name__}, not a class; name a "
                "torch.nn.Module subclass"
            )
        return found


def check_kwargs(kwargs: Any) -> dict[str, Any]:
    """``model.kwargs``: a mapping of identifiers to JSON values (they are hashed into ids)."""
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"expected a mapping of keyword arguments, got {show(kwargs)}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{show(key)} is not a Python keyword argument name")
        if key in RESERVED_KWARGS:
            raise ValueError(f"{key} is passed by rashomon (from the dataset); remove it")
        _check_json(value, key)
    return dict(kwargs)


def _check_json(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {show(value)} is not a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: the key {show(key)} is not text")
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif not isinstance(value, str | int | float | bool) and value is not None:
        raise ValueError(f"{where}: {show(value)} is not a number, text, list or mapping")


def locate_module(name: str, search_path: Sequence[str | os.PathLike]) -> tuple[Path, str]:
    """The source file of module ``name`` and its sha256, without running any of its code.

    ``search_path`` is tried first, then the working directory, then ``sys.path`` (installed
    packages). A package's ``__init__`` is not run either: each level is found in the folders of
    the one above."""
    folders = [str(Path(p)) for p in (*search_path, Path.cwd())]
    spec = _find(name, folders) or _find(name, sys.path)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        tried = ", ".join(printable(f) for f in dict.fromkeys(folders))
        raise UserError(
            f"model.module: cannot find the module {name!r} in {tried} or the installed "
            f"packages; put {name.split('.')[0]}.py next to the job file (or install it), and "
            "check the spelling"
        )
    path = Path(spec.origin)
    if path.suffix != ".py":
        raise UserError(
            f"model.module: {name} is {printable(str(path))}, not Python source; its hash "
            "could not tell an edited model from the old one: use a module written in Python"
        )
    try:
        source = path.read_bytes()
    except OSError as error:
        raise UserError(f"model.module: cannot read {printable(str(path))}: {error}") from None
    return path, hashlib.sha256(source).hexdigest()


def _find(name: str, folders: Sequence[str]) -> importlib.machinery.ModuleSpec | None:
    parts = name.split(".")
    spec = None
    locations: Sequence[str] | None = list(folders)
    for depth in range(len(parts)):
        if locations is None:  # a plain module has no submodules
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), locations)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
    return spec


def _import(name: str, path: Path, sha256: str):
    """Import ``name`` as found at ``path``: its top folder goes first on sys.path (and stays, as
    a script's own folder does, so imports inside the module keep working). A module of that
    name already imported with the same source is used as it is."""
    module = sys.modules.get(name)
    if module is not None and _IMPORTED.get(name) == sha256:
        return module
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]
    root = str(path.parents[name.count(".") + (path.name == "__init__.py")])
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    try:
        module = importlib.import_module(name)
    except Exception as error:
        raise UserError(
            f"model.module: importing {name} ({printable(str(path))}) failed: "
            f"{_error_line(error)}{user_frame(error)}; fix the module"
        ) from None
    imported = Path(getattr(module, "__file__", "") or "")
    if not imported.is_file() or hashlib.sha256(imported.read_bytes()).hexdigest() != sha256:
        raise UserError(
            f"model.module: {name} imports as {printable(str(imported))}, not "
            f"{printable(str(path))}: another module of that name comes first; rename yours"
        )
    _IMPORTED[name] = sha256
    return module


def _error_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {printable(text[:300])}"


def user_frame(error: BaseException) -> str:
    """`` (at my_models.py, line 12)``: the innermost frame of the traceback that is not in torch
    or rashomon, so a message can point at the user's own line."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = (os.sep + "torch" + os.sep, os.sep + "rashomon" + os.sep, "importlib")
    for frame in reversed(frames):
        if not any(part in frame.filename for part in ours):
            return f" (at {printable(Path(frame.filename).name)}, line {frame.lineno})"
    return ""
