"""Which family a pack trains, built from its settings or from a weights file's description.

A family is what a pack's models share: it builds their stacked state (``init``), runs them
batched (``forward``), names its tensors (``parameter_names``, ``buffer_names``) and describes
itself for the weights file (``description``), from which `family_from_description` rebuilds it
for ``rashomon flatness`` and the connectivity analysis. The dense families keep their
hand-written path (`Architecture`); ``cnn`` and ``module`` are ``nn.Module`` families.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from rashomon.engine.model._cnn import ConvFamily
from rashomon.engine.model._families import Architecture
from rashomon.engine.model._generic import ModuleFamily
from rashomon.engine.model._pack import PackSettings
from rashomon.jobs import ModuleRef, UserError


class Family(Protocol):
    """What the trainer, the flatness statistics and the weights file use of a family."""

    in_shape: tuple[int, ...]
    n_classes: int
    n_parameters: int
    hessian_method: str

    @property
    def forward_flops(self) -> float: ...  # of one example's forward pass

    @property
    def activation_elements(self) -> int: ...  # the widest layer output of one example

    @property
    def dropout_widths(self) -> tuple[int, ...]: ...

    def parameter_names(self) -> list[str]: ...

    def buffer_names(self) -> list[str]: ...

    def description(self) -> dict[str, Any]: ...

    def init(
        self, init_seeds: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]: ...

    def forward(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        dropout_masks: Sequence[torch.Tensor] | None = None,
        buffers: Sequence[torch.Tensor] | None = None,
        train: bool = False,
    ) -> torch.Tensor: ...

    def per_example_squared_norms(
        self,
        params: Sequence[torch.Tensor],
        buffers: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        directions: torch.Tensor,
    ) -> torch.Tensor: ...

    def penultimate(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        buffers: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor | None: ...  # the last layer's input, (M, n, width)

    def first_weights(self, params: Sequence[torch.Tensor]) -> torch.Tensor | None: ...


def build_family(settings: PackSettings, in_shape: Sequence[int], n_classes: int) -> Family:
    """The family of a pack with these settings, for examples of ``in_shape`` (built once per
    process and structure: a module family imports and measures the user's class)."""
    return _build(
        settings.family,
        settings.hidden,
        settings.activation,
        settings.channels,
        settings.kernel,
        settings.stride,
        settings.pool,
        settings.module,
        tuple(in_shape),
        n_classes,
    )


@functools.lru_cache(maxsize=64)
def _build(
    family: str,
    hidden: tuple[int, ...],
    activation: str,
    channels: tuple[int, ...],
    kernel: int,
    stride: int,
    pool: int,
    module: ModuleRef | None,
    in_shape: tuple[int, ...],
    n_classes: int,
) -> Family:
    if family in ("mlp", "logistic"):
        layers = hidden if family == "mlp" else ()
        return Architecture(math.prod(in_shape), layers, n_classes, activation)
    if family == "cnn":
        return ConvFamily(in_shape, n_classes, channels, kernel, stride, pool, hidden, activation)
    if family == "module" and module is not None:
        return module_family(module, in_shape, n_classes)
    raise ValueError(f"unknown family {family!r}")


def module_family(module: ModuleRef, in_shape: Sequence[int], n_classes: int) -> ModuleFamily:
    """A user's class as a family: imported (checking its source hash), built with
    ``in_shape``, ``n_classes`` and the job's ``kwargs``."""
    cls = module.load_class()
    kwargs = module.kwargs
    shape = tuple(in_shape)
    description = {"family": "module", "in_shape": list(shape), "n_classes": n_classes}
    return ModuleFamily(
        lambda: cls(in_shape=shape, n_classes=n_classes, **kwargs),
        shape,
        n_classes,
        description | module.description(),
    )


def weights_metadata(family: Family) -> dict[str, str]:
    """What a weights file records to rebuild its pack's family (with the store's model ids)."""
    return {"family": json.dumps(family.description())}


def family_from_weights(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> Family:
    """Rebuild a pack's family from its weights file's metadata and tensors."""
    try:
        described = json.loads(metadata["family"]) if "family" in metadata else dict(metadata)
    except json.JSONDecodeError as error:
        raise UserError(f"the weights' family description is damaged ({error})") from None
    return family_from_description(described, tensors)


def family_from_description(
    described: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> Family:
    """Rebuild a family from its description. Files written before families were described
    hold a dense network: its layers are read from the tensors' shapes."""
    family = described.get("family")
    if family is None:
        weights = [tensors[f"layers.{i}.weight"] for i in range(len(tensors) // 2)]
        return Architecture(
            int(weights[0].shape[1]),
            tuple(int(w.shape[2]) for w in weights[:-1]),
            int(weights[-1].shape[2]),
            str(described.get("activation", "relu")),
        )
    try:
        if family in ("mlp", "logistic"):
            return Architecture(
                int(described["n_features"]),
                tuple(described["hidden"]),
                int(described["n_classes"]),
                str(described["activation"]),
            )
        in_shape, n_classes = tuple(described["in_shape"]), int(described["n_classes"])
        if family == "cnn":
            return ConvFamily(
                in_shape,
                n_classes,
                tuple(described["channels"]),
                int(described["kernel"]),
                int(described["stride"]),
                int(described["pool"]),
                tuple(described["hidden"]),
                str(described["activation"]),
            )
        if family == "module":
            return module_family(ModuleRef.from_description(described), in_shape, n_classes)
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"the weights' family description is damaged ({error!r})") from None
    raise UserError(f"the weights describe an unknown family {family!r}; upgrade rashomon")
