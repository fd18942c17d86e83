"""Train a pack of models in one batched computation.

A pack is a set of models that share their architecture, batch size, epochs, optimizer kind and
schedule; everything else — init, order and data seeds, learning rate, momentum, weight decay,
dropout — is per model. Each step gathers every model's own minibatch into one ``(M, batch,
features)`` tensor, runs all models batched (their family's forward: batched matmuls, grouped
convolutions or ``vmap`` of a module) and back-propagates the sum of their losses, whose gradient
with respect to each model's parameters is that model's own gradient.
Nothing in a step mixes models, so a model's result does not depend on its pack-mates: in float64
it matches the model trained alone, and a model that diverges is frozen without touching the rest.

A model diverges when a non-finite value appears: it is frozen at the parameters that produced its
first non-finite loss. The last update has no next step to expose it, so after training every
parameter, every split's loss and every probability is checked the same way, and a model whose
final update overflowed keeps that update — the parameters that produced its first non-finite
loss — with status ``diverged``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rashomon.engine.model import _random
from rashomon.engine.model._build import Family, build_family
from rashomon.engine.model._families import Architecture
from rashomon.engine.model._flatness import FlatnessSettings, curvature_rows, flatness_statistics
from rashomon.engine.model._history import History
from rashomon.engine.model._learner import Learner
from rashomon.engine.model._pack import (
    DTYPES,
    EVALUATION_CHUNK,
    EVALUATION_ELEMENTS,
    PER_MODEL_FLAGS,
    PER_MODEL_HPARAMS,
    PHASES,
    ModelSpec,
    PackResult,
    PackSettings,
    TrainingData,
)
from rashomon.engine.model._simplicity import simplicity_statistics
from rashomon.jobs import FLATNESS_COLUMNS, SIMPLICITY_COLUMNS, SPLITS


def train_pack(
    settings: PackSettings,
    models: Sequence[ModelSpec],
    data: TrainingData,
    prediction_splits: Sequence[str] = ("val", "test"),
    flatness: FlatnessSettings | None = None,
    max_models: int | None = None,
) -> PackResult:
    """Train every model of the pack, evaluate it on all three splits and, unless ``flatness``
    is None, measure its flat-minima and simplicity statistics (SPEC §8; NaN for diverged
    models). The result holds each model's learning curves (`History`).

    A pack larger than ``max_models`` (what fits the device's memory) trains in consecutive
    slices; as no model depends on its pack-mates, the result is the same."""
    size = len(models) if max_models is None else max(1, max_models)
    parts = [
        _train_slice(settings, models[start : start + size], data, prediction_splits, flatness)
        for start in range(0, len(models), size)
    ]
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def _concatenate(parts: Sequence[PackResult]) -> PackResult:
    return PackResult(
        status=[s for part in parts for s in part.status],
        metrics={k: np.concatenate([p.metrics[k] for p in parts]) for k in parts[0].metrics},
        probabilities={
            k: np.concatenate([p.probabilities[k] for p in parts]) for k in parts[0].probabilities
        },
        parameters={k: torch.cat([p.parameters[k] for p in parts]) for k in parts[0].parameters},
        seconds=sum(p.seconds for p in parts),
        history={k: np.concatenate([p.history[k] for p in parts]) for k in parts[0].history},
        timings={k: sum(p.timings[k] for p in parts) for k in parts[0].timings},
    )


def _train_slice(
    settings: PackSettings,
    models: Sequence[ModelSpec],
    data: TrainingData,
    prediction_splits: Sequence[str],
    flatness: FlatnessSettings | None,
) -> PackResult:
    start = time.perf_counter()
    device, dtype = data.features.device, DTYPES[settings.dtype]
    family = build_family(settings, data.example_shape, data.n_classes)
    params, buffers = family.init([m.init_seed for m in models], dtype, device)
    initial = [p.clone() for p in params]
    per_model = {
        name: torch.tensor([getattr(m, name) for m in models], dtype=dtype, device=device)
        for name in PER_MODEL_HPARAMS
    }
    flags = {
        name: torch.tensor([getattr(m, name) for m in models], dtype=torch.bool, device=device)
        for name in PER_MODEL_FLAGS
    }
    learner = Learner(settings, family.parameter_names(), models, params, per_model, flags)
    curvature = None if flatness is None else curvature_rows(data.split_indices["train"], flatness)
    history = History(family, data, flatness, curvature)
    alive = _fit(settings, family, models, data, learner, buffers, per_model, history)
    params = learner.final()
    if device.type == "cuda":  # the phase timings must not run ahead of the device
        torch.cuda.synchronize(device)
    trained = time.perf_counter()
    metrics, probabilities = _evaluate(family, params, buffers, data, prediction_splits)
    alive &= _all_finite([*params, *buffers], metrics, probabilities)
    evaluated = time.perf_counter()
    if flatness is not None:
        metrics |= pack_flatness(family, params, initial, alive, data, flatness, buffers)
    measured = time.perf_counter()
    names = family.parameter_names() + family.buffer_names()
    return PackResult(
        status=["ok" if a else "diverged" for a in alive.tolist()],
        metrics=metrics,
        probabilities=probabilities,
        parameters={n: p.detach().cpu() for n, p in zip(names, [*params, *buffers], strict=True)},
        seconds=time.perf_counter() - start,
        history=history.arrays(metrics["val_loss"], metrics["val_acc"]),
        timings=dict(
            zip(PHASES, (trained - start, evaluated - trained, measured - evaluated), strict=True)
        ),
    )


def pack_flatness(
    family: Family,
    params: Sequence[torch.Tensor],
    initial: Sequence[torch.Tensor],
    alive: torch.Tensor,
    data: TrainingData,
    settings: FlatnessSettings,
    buffers: Sequence[torch.Tensor] = (),
) -> dict[str, np.ndarray]:
    """SPEC §8 statistics and the simplicity statistics of the models that did not diverge
    (NaN for the others)."""
    rows = curvature_rows(data.split_indices["train"], settings)
    keep = alive.nonzero().squeeze(1)
    stats = {name: np.full(len(alive), np.nan) for name in FLATNESS_COLUMNS + SIMPLICITY_COLUMNS}
    if len(keep):
        kept = [p[keep] for p in params]
        found = flatness_statistics(
            family,
            kept,
            [p[keep] for p in initial],
            data.features[rows],
            data.labels[rows],
            settings,
            [b[keep] for b in buffers],
        )
        found |= simplicity_statistics(family, kept, data.features[rows],
                                       [b[keep] for b in buffers])  # fmt: skip
        for name, values in found.items():
            stats[name][keep.cpu().numpy()] = values
    return stats


def training_rows(models: Sequence[ModelSpec], train_indices: torch.Tensor) -> torch.Tensor:
    """Each model's training sample ``(M, n_train)``: the whole split for data seed 0, else a
    bootstrap resample of the same size drawn from the model's data seed."""
    n_train = len(train_indices)
    rows = []
    for m in models:
        if m.data_seed == 0:
            rows.append(train_indices.cpu())
        else:
            gen = _random.generator(_random.DATA, m.data_seed)
            rows.append(train_indices.cpu()[torch.randint(n_train, (n_train,), generator=gen)])
    return torch.stack(rows).to(train_indices.device)


def _epoch_order(models: Sequence[ModelSpec], n_train: int, epoch: int) -> torch.Tensor:
    return torch.stack(
        [
            torch.randperm(n_train, generator=_random.generator(_random.ORDER, m.order_seed, epoch))
            for m in models
        ]
    )


def noisy_targets(
    models: Sequence[ModelSpec], targets: torch.Tensor, epoch: int, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label noise (Blanc et al. 2020) for one epoch: ``targets`` (M, n) in the epoch's order,
    each replaced by a uniformly random class (possibly its own) with its model's probability
    ``label_noise``. Returns the noisy targets and which were replaced. Each model's draws come
    from its order seed's label-noise stream for this epoch, one uniform and one class per
    position, whatever its probability: pack invariant, and with p = 0 nothing changes."""
    n = targets.shape[1]
    uniforms, classes = [], []
    for m in models:
        generator = _random.generator(_random.LABEL_NOISE, m.order_seed, epoch)
        uniforms.append(torch.rand(n, generator=generator, dtype=torch.float64))
        classes.append(torch.randint(n_classes, (n,), generator=generator))
    probability = torch.tensor([m.label_noise for m in models], dtype=torch.float64)
    replaced = (torch.stack(uniforms) < probability.unsqueeze(1)).to(targets.device)
    return torch.where(replaced, torch.stack(classes).to(targets.device), targets), replaced


def _lr_factor(schedule: str, step: int, total_steps: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return 1.0


def _dropout_masks(widths, generators, dropout, batch, dtype, device):
    """One scaled mask per hidden layer, drawn from each model's own order-seeded stream.

    The uniforms come from NumPy's PCG64, which draws float32 several times faster than torch's
    CPU Mersenne Twister; at ~10^6 draws per step that is most of a dropout pack's overhead."""
    keep = (1.0 - dropout).view(-1, 1, 1)
    masks = []
    for width in widths:
        uniform = np.stack([g.random((batch, width), dtype=np.float32) for g in generators])
        uniform = _to_device(torch.from_numpy(uniform), device).to(dtype)
        masks.append((uniform < keep).to(dtype) / keep)
    return masks


def _fit(settings, family, models, data, learner, buffers, per_model, history) -> torch.Tensor:
    """Train in place; returns which models are alive. A diverged model keeps the buffers it had
    before the step that diverged it, as it keeps its parameters."""
    device, dtype = data.features.device, data.features.dtype
    rows = training_rows(models, data.split_indices["train"])
    n_models, n_train = rows.shape
    n_features = data.features.shape[1]
    batch = settings.batch_size
    steps_per_epoch = math.ceil(n_train / batch)
    total_steps = settings.epochs * steps_per_epoch
    dropout = per_model["dropout"]
    use_dropout = bool((dropout > 0).any()) and bool(family.dropout_widths)
    use_noise = any(m.label_noise > 0 for m in models)
    dropout_generators = [_random.numpy_generator(_random.DROPOUT, m.order_seed) for m in models]
    alive = torch.ones(n_models, dtype=torch.bool, device=device)
    # Every step's minibatches are gathered into this one buffer: a fresh one per step costs
    # as much again as the gather itself in page faults.
    gathered = torch.empty(n_models * batch, n_features, dtype=dtype, device=device)
    step = 0
    for epoch in range(settings.epochs):
        order = torch.gather(rows, 1, _epoch_order(models, n_train, epoch).to(device))
        epoch_targets = data.labels[order]
        if use_noise:
            epoch_targets = noisy_targets(models, epoch_targets, epoch, data.n_classes)[0]
        total_loss = torch.zeros(n_models, dtype=torch.float64, device=device)
        for start in range(0, n_train, batch):
            batch_rows = order[:, start : start + batch].reshape(-1)
            inputs = torch.index_select(data.features, 0, batch_rows,
                                        out=gathered[: len(batch_rows)])  # fmt: skip
            inputs = inputs.view(n_models, -1, n_features)
            targets = epoch_targets[:, start : start + batch].reshape(-1)
            masks = None
            if use_dropout:
                masks = _dropout_masks(
                    family.dropout_widths,
                    dropout_generators,
                    dropout,
                    inputs.shape[1],
                    dtype,
                    device,
                )

            def losses_of(params, state, inputs=inputs, targets=targets, masks=masks):
                logits = family.forward(params, inputs, masks, state, train=True)
                return (
                    F.cross_entropy(logits.reshape(-1, data.n_classes), targets, reduction="none")
                    .view(n_models, -1)
                    .mean(dim=1)
                )

            factor = _lr_factor(settings.schedule, step, total_steps)
            losses = learner.step(losses_of, buffers, factor, alive)
            total_loss += losses.double() * inputs.shape[1]
            step += 1
        _record_epoch(history, family, learner, buffers, data, alive,
                      total_loss / n_train, per_model["lr"] * factor,
                      last=epoch == settings.epochs - 1)  # fmt: skip
    return alive


def _record_epoch(history, family, learner, buffers, data, alive, train_loss, lr, last) -> None:
    """The epoch's record; the last epoch's validation values come from the final evaluation."""
    with torch.no_grad():
        params = [p.detach() for p in learner.parameters()]
        if not last:
            loss, acc = _split_metrics(family, params, buffers, data, "val")
            history.record(val_loss=loss, val_acc=acc)
    history.record(train_loss=train_loss, lr=lr)
    if history.tracker is not None:
        history.record(hessian_top_eig=history.tracker.measure(params, buffers, alive))


def _all_finite(
    tensors: Sequence[torch.Tensor],
    metrics: dict[str, np.ndarray],
    probabilities: dict[str, np.ndarray],
) -> torch.Tensor:
    """(M,) bool: every parameter, buffer, loss and stored probability of the model is finite."""
    finite = torch.stack([t.isfinite().reshape(len(t), -1).all(dim=1) for t in tensors]).all(0)
    checks = [np.isfinite(values) for name, values in metrics.items() if name.endswith("_loss")]
    checks += [
        np.isfinite(probs).reshape(len(probs), -1).all(axis=1) for probs in probabilities.values()
    ]
    return finite & torch.as_tensor(np.logical_and.reduce(checks), device=finite.device)


def evaluation_chunk(family: Family, n_models: int) -> int:
    """Examples per batched evaluation pass: `EVALUATION_CHUNK`, fewer where the pack's
    activations would pass `EVALUATION_ELEMENTS` (a pack of convolutional models)."""
    if isinstance(family, Architecture):
        return EVALUATION_CHUNK
    per_example = n_models * family.activation_elements
    return max(1, min(EVALUATION_CHUNK, EVALUATION_ELEMENTS // per_example))


@torch.no_grad()
def _split_metrics(family, params, buffers, data, split):
    """Mean loss and accuracy of every model on ``split``, (M,) float64, on the device."""
    losses, correct, _ = _split_pass(family, params, buffers, data, split, probabilities=False)
    return losses, correct


@torch.no_grad()
def _split_pass(family, params, buffers, data, split, probabilities: bool):
    """One eval-mode pass over ``split`` in chunks: mean loss and accuracy per model, and the
    float32 class probabilities (on the device, one tensor per chunk) when asked for."""
    indices = data.split_indices[split]
    chunk = evaluation_chunk(family, len(params[0]))
    losses, correct, probs = [], [], []
    for start in range(0, len(indices), chunk):
        rows = indices[start : start + chunk]
        logits = family.forward(params, data.features[rows], buffers=buffers)
        log_probs = torch.log_softmax(logits, dim=-1)
        labels = data.labels[rows]
        picked = log_probs.gather(-1, labels.view(1, -1, 1).expand(len(params[0]), -1, 1))
        losses.append(-picked.squeeze(-1).sum(dim=1))
        correct.append((logits.argmax(dim=-1) == labels).sum(dim=1))
        if probabilities:
            probs.append(log_probs.exp().to(torch.float32))
    n = max(len(indices), 1)
    loss = torch.stack(losses).sum(0).double() / n
    accuracy = torch.stack(correct).sum(0).double() / n
    return loss, accuracy, probs


def _evaluate(family, params, buffers, data, prediction_splits):
    metrics: dict[str, np.ndarray] = {}
    probabilities: dict[str, np.ndarray] = {}
    for split in SPLITS:
        stored = split in prediction_splits
        loss, accuracy, probs = _split_pass(family, params, buffers, data, split, stored)
        metrics[f"{split}_loss"] = loss.cpu().numpy()
        metrics[f"{split}_acc"] = accuracy.cpu().numpy()
        if stored:
            probabilities[split] = _to_host(torch.cat(probs, dim=1))
    return metrics, probabilities


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory, without waiting for it."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _to_host(tensor: torch.Tensor) -> np.ndarray:
    """One copy of a device's results to host memory (pinned, which a GPU fills fastest)."""
    if tensor.device.type != "cuda":
        return tensor.numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor).numpy()
