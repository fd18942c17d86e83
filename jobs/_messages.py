"""Pydantic's validation errors as the user-facing lines of a job's UserError.

One line per problem, ``file: key.path: what is wrong (got ...)``, in the words of the YAML the
user wrote rather than of Python types, with a "did you mean" for near-miss keys and values.
Every quoted value goes through :func:`~rashomon.jobs._text.show`, which is bounded, so a hostile
value cannot make the message itself expensive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from rashomon.jobs._base import Section
from rashomon.jobs._space import GRID_FORMS, HYPERPARAMETERS
from rashomon.jobs._text import did_you_mean, join_path, or_list, show

#: Problems listed in one message; the rest are counted.
MAX_ERRORS = 5


class ConfigError(Exception):
    """A problem at a dotted key path, raised inside `Job.resolve` and worded by its caller."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def format_errors(exc: ValidationError, source: str, root: type[Section]) -> str:
    """One line per problem of validating `root`, at most five, each prefixed with `source`."""
    errors = exc.errors(include_url=False)
    lines = [f"{source}: {_locate(error, root)}" for error in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        lines.append(f"{source}: ... and {len(errors) - MAX_ERRORS} more problems")
    return "\n".join(lines)


def _locate(error: Mapping[str, Any], root: type[Section]) -> str:
    loc = tuple(part for part in error["loc"] if part not in GRID_FORMS)
    if error["type"] == "extra_forbidden":
        return _unknown_key(loc[:-1], loc[-1], root)
    if error["type"] == "invalid_key":  # not text: `1:`, `null:`, `true:`
        return _unknown_key(loc[:-1], error["input"], root)
    path = join_path(loc)
    return f"{path}: {describe(error)}" if path else describe(error)


def describe(error: Mapping[str, Any]) -> str:
    """What is wrong with one value, from one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = f"got {show(value)}"
    if kind == "missing":
        return "required, but missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, {got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, {got}"
    if kind == "finite_number":
        return f"expected a finite number, {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, {got}"
    if kind in ("string_type", "string_unicode"):
        return f"expected a string, {got}"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return f"expected a list, {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), {got}"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        hint = did_you_mean(value, re.findall(r"'([^']*)'", expected))
        return f"must be {expected} ({got})" + (f"; {hint}" if hint else "")
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # pydantic reports `gt=0` on a float field as 0.0
        return f"must be {bounds[kind]} {show(limit)} ({got})"
    if kind in ("too_short", "too_long"):
        low, high = ctx.get("min_length"), ctx.get("max_length")
        actual = ctx.get("actual_length")
        if low == high or (kind == "too_long" and high == 2) or (kind == "too_short" and low == 2):
            return f"expected exactly 2 values, got {actual}"
        if kind == "too_short" and low == 1:
            return "must not be empty"
        return f"expected {'at least ' + str(low) if low else 'at most ' + str(high)} items ({got})"
    return f"{error['msg']} ({got})"


def _unknown_key(parent_loc: tuple[Any, ...], key: Any, root: type[Section]) -> str:
    loc = (*parent_loc, key if isinstance(key, str) else show(key))
    parent = _model_at(root, parent_loc) or root
    fields = list(parent.model_fields)
    hint = did_you_mean(key, fields)
    if parent.key_noun == "hyperparameter":
        settings = [f for f in fields if f not in HYPERPARAMETERS]  # sample: n and seed
        return f"{join_path(loc)}: {unknown_hyperparameter_hint(str(key), settings)}"
    if parent.key_noun == "distribution":
        name = parent.hyperparameter  # type: ignore[attr-defined]
        return (
            f"{join_path(loc)}: unknown distribution {show(key)} for {name}; "
            + (f"{hint} " if hint else "")
            + f"{name} takes {or_list(fields)}"
        )
    where = f"in {join_path(parent_loc)}" if parent_loc else "at the top level"
    return f"unknown key {show(key)} {where}; " + (hint or f"valid keys: {', '.join(fields)}")


def unknown_hyperparameter_hint(name: str, settings: Sequence[str] = ()) -> str:
    """'unknown hyperparameter; did you mean ...? valid: ...'."""
    valid = [*settings, *sorted(HYPERPARAMETERS)]
    hint = did_you_mean(name, valid)
    return "unknown hyperparameter; " + (f"{hint} " if hint else "") + f"valid: {', '.join(valid)}"


def _model_at(root: type[Section], loc: Sequence[Any]) -> type[Section] | None:
    """The section model that validates the mapping at `loc`, to list its valid keys."""
    cls: Any = root
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            continue  # an entry of a list of sections (population.grid[1])
        fields = getattr(cls, "model_fields", {})
        if not isinstance(part, str) or part not in fields:
            return None
        cls = _model_in(fields[part].annotation)
    return cls if isinstance(cls, type) and issubclass(cls, Section) else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _model_in(arg):
            return found
    return None
