"""How many models of a pack a device holds at once.

On a GPU a pack may be larger than the device's free memory; it then trains in consecutive slices
(`train_pack`'s ``max_models``), which changes nothing in the results because no model depends on
its pack-mates. On a CPU there is no limit: the pack size already follows the cache.
"""

from __future__ import annotations

import torch

from rashomon.engine.model._build import build_family
from rashomon.engine.model._families import Architecture
from rashomon.engine.model._flatness import FlatnessSettings
from rashomon.engine.model._pack import DTYPES, EVALUATION_CHUNK, PackSettings, TrainingData

# Of the device memory free when a pack starts, what its models may take: the rest is headroom
# for the caching allocator's fragmentation and the error of `model_memory_bytes`.
DEVICE_MEMORY_FRACTION = 0.5


def model_memory_bytes(
    settings: PackSettings,
    n_features: int,
    n_classes: int,
    n_train: int,
    flatness: FlatnessSettings | None = None,
    in_shape: tuple[int, ...] | None = None,
) -> int:
    """A generous estimate of the device memory one model of a pack needs at its peak.

    Weights, their initial copy, gradients, optimizer moments and a spare are six copies of the
    parameters; a step holds the forward and backward activations of its minibatch, and every
    model its own training rows. Flatness adds the Hutchinson and adaptive probes with their
    Hessian products; its activations are chunked to a fixed total (``max_elements``). A layer's
    width is what one example's activations hold (every layer output of an nn.Module family)."""
    family = build_family(settings, in_shape or (n_features,), n_classes)
    item = DTYPES[settings.dtype].itemsize
    width = sum(family.widths) if isinstance(family, Architecture) else family.activation_total
    state = 6 * family.n_parameters * item
    activations = 4 * max(settings.batch_size, EVALUATION_CHUNK // 4) * width * item
    peak = state + activations + 8 * n_train
    if flatness is not None:
        probes = flatness.trace_probes + flatness.adaptive_probes
        peak += 3 * probes * family.n_parameters * item
    return peak


def models_fitting(free_bytes: int, per_model: int) -> int:
    """How many models of ``per_model`` bytes a pack slice may hold in ``free_bytes``."""
    return max(1, int(DEVICE_MEMORY_FRACTION * free_bytes) // per_model)


def device_slice(
    settings: PackSettings, data: TrainingData, flatness: FlatnessSettings | None
) -> int | None:
    """On a GPU, how many models of a pack its free memory holds at once (None: no limit)."""
    if data.features.device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(data.features.device)
    n_train = len(data.split_indices["train"])
    per_model = model_memory_bytes(
        settings, data.features.shape[1], data.n_classes, n_train, flatness, data.example_shape
    )
    return models_fitting(free, per_model)
