"""What every model of a job section shares: closed to unknown keys, frozen, strictly typed.

A job is the single source of truth for a population run, so a typo such as ``epoch:`` must be an
error rather than a silent default, and YAML's ``true`` must not pass as 1 nor ``"10"`` as 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import annotated_types as at
from pydantic import AllowInfNan, BaseModel, ConfigDict, Strict

from rashomon.jobs._text import show

#: The largest integer any setting takes: counts, seeds and sizes end up in int64 columns.
MAX_INT = 2**63 - 1

# Strict() keeps YAML's `true` from passing as 1 and `"10"` from passing as 10; floats still
# accept integers (`lr: 1`), and no float accepts inf/nan (`lr: .inf` would pass `> 0`).
PositiveInt = Annotated[int, Strict(), at.Ge(1), at.Le(MAX_INT)]
NonNegativeInt = Annotated[int, Strict(), at.Ge(0), at.Le(MAX_INT)]
NonEmptyStr = Annotated[str, Strict(), at.MinLen(1)]
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
Positive = Annotated[FiniteFloat, at.Gt(0)]
NonNegative = Annotated[FiniteFloat, at.Ge(0)]
UnitOpen = Annotated[FiniteFloat, at.Gt(0), at.Lt(1)]  # (0, 1)
UnitHalfOpen = Annotated[FiniteFloat, at.Ge(0), at.Lt(1)]  # [0, 1)


class Section(BaseModel):
    """Frozen, closed to unknown keys: a typo must be an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: How unknown keys of this mapping are called in error messages.
    key_noun: ClassVar[str] = "key"


def reject_duplicates(values: Sequence[Any]) -> None:
    """A repeated list entry is an error naming both positions (for use in validators)."""
    first: dict[Any, int] = {}
    for index, value in enumerate(values):
        if value in first:
            raise ValueError(
                f"{show(value)} is listed twice (at [{first[value]}] and [{index}]); "
                "each value must be distinct"
            )
        first[value] = index


def drop_none(dumped: Any) -> Any:
    """Leave unset optional entries (None) out of a dump, so it reads like what the user wrote."""
    return (
        {k: v for k, v in dumped.items() if v is not None} if isinstance(dumped, dict) else dumped
    )
