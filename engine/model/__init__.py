"""One pack's computation, in torch alone: no Ray, no files.

A pack is a set of models with the same architecture and training schedule, trained as one batched
computation (`train_pack`), evaluated, and measured for the flat-minima statistics. What the models
are is their family (`build_family`): the dense mlp and logistic, the convolutional cnn, or a
user's own ``torch.nn.Module``. Everything
here is a pure function of its inputs, which is what lets the layers above schedule packs
anywhere and retry them freely.
"""

from rashomon.engine.model._build import (
    Family,
    build_family,
    family_from_description,
    family_from_weights,
    weights_metadata,
)
from rashomon.engine.model._cnn import ConvFamily, ConvNet
from rashomon.engine.model._device import (
    DEVICE_MEMORY_FRACTION,
    device_slice,
    model_memory_bytes,
    models_fitting,
)
from rashomon.engine.model._families import Architecture, forward, init_parameters
from rashomon.engine.model._flatness import FlatnessSettings, curvature_rows, flatness_statistics
from rashomon.engine.model._generic import ModuleFamily
from rashomon.engine.model._memory import keep_freed_memory
from rashomon.engine.model._pack import (
    DTYPES,
    EVALUATION_CHUNK,
    PHASES,
    ModelSpec,
    PackResult,
    PackSettings,
    TrainingData,
)
from rashomon.engine.model._simplicity import effective_rank, simplicity_statistics
from rashomon.engine.model._trainer import (
    noisy_targets,
    pack_flatness,
    train_pack,
    training_rows,
)

__all__ = [
    "DEVICE_MEMORY_FRACTION",
    "DTYPES",
    "EVALUATION_CHUNK",
    "PHASES",
    "Architecture",
    "ConvFamily",
    "ConvNet",
    "Family",
    "FlatnessSettings",
    "ModelSpec",
    "ModuleFamily",
    "PackResult",
    "PackSettings",
    "TrainingData",
    "build_family",
    "curvature_rows",
    "device_slice",
    "effective_rank",
    "family_from_description",
    "family_from_weights",
    "flatness_statistics",
    "forward",
    "init_parameters",
    "keep_freed_memory",
    "model_memory_bytes",
    "models_fitting",
    "noisy_targets",
    "pack_flatness",
    "simplicity_statistics",
    "train_pack",
    "training_rows",
    "weights_metadata",
]
