"""Training procedures inside packs (SPEC §4): SAM, USAM and ASAM against a per-model
implementation of Foret et al.'s step, rho 0 as plain SGD, label noise, random-subspace training;
each pack invariant and isolated from a diverging pack-mate."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import linear_problem

from rashomon.engine.model import (
    ModelSpec,
    PackSettings,
    TrainingData,
    _families,
    _random,
    noisy_targets,
    train_pack,
    training_rows,
)
from rashomon.engine.model._subspace import Subspace, nonzeros_per_column, projection
from rashomon.jobs import ModuleRef
from rashomon.jobs._modules import locate_module

SETTINGS = PackSettings(
    family="mlp",
    hidden=(8, 6),
    activation="tanh",
    epochs=2,
    batch_size=32,
    optimizer="sam",
    nesterov=True,
    schedule="cosine",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
)
VARIANTS = {  # (sam_normalize, sam_adaptive)
    "SAM": (True, False),
    "USAM": (False, False),
    "ASAM": (True, True),
}


def make_data(dtype=torch.float64, n=400, d=7, classes=3) -> TrainingData:
    return linear_problem(1, n, d, classes, (240, 320), dtype=dtype)


def sam_model(variant: str, rho: float = 0.05, **changes) -> ModelSpec:
    normalize, adaptive = VARIANTS[variant]
    model = ModelSpec(
        2,
        3,
        1,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-2,
        dropout=0.0,
        rho=rho,
        sam_normalize=normalize,
        sam_adaptive=adaptive,
    )
    return dataclasses.replace(model, **changes)


def reference_sam(settings: PackSettings, model: ModelSpec, data: TrainingData) -> list:
    """Foret et al.'s step written for one model with torch.nn and torch.optim.SGD: the
    gradient at w, ε = ρ T²g/‖Tg‖ (T = 1, or |w| + η on weights for ASAM; no norm for USAM),
    the gradient at w + ε, then the SGD step at w. Returns the parameters in the pack's layout."""
    arch = _families.Architecture(data.features.shape[1], settings.hidden, data.n_classes, "tanh")
    init = _families.init_parameters(arch, [model.init_seed], torch.float64, "cpu")
    layers = []
    for i in range(len(arch.widths) - 1):
        linear = torch.nn.Linear(arch.widths[i], arch.widths[i + 1]).double()
        with torch.no_grad():
            linear.weight.copy_(init[2 * i][0].T)
            linear.bias.copy_(init[2 * i + 1][0, 0])
        layers += [linear, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    named = list(net.named_parameters())
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=model.lr,
        momentum=model.momentum,
        nesterov=settings.nesterov,
        weight_decay=model.weight_decay,
    )
    rows = training_rows([model], data.split_indices["train"])[0]
    total = settings.epochs * math.ceil(len(rows) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    loss_of = torch.nn.functional.cross_entropy
    for epoch in range(settings.epochs):
        generator = _random.generator(_random.ORDER, model.order_seed, epoch)
        order = rows[torch.randperm(len(rows), generator=generator)]
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            x, y = data.features[batch], data.labels[batch]
            optimizer.zero_grad()
            loss_of(net(x), y).backward()
            with torch.no_grad():
                scale = [
                    p.abs() + 0.01  # Kwon et al.'s η
                    if model.sam_adaptive and name.endswith("weight")
                    else torch.ones_like(p)
                    for name, p in named
                ]
                norm = torch.sqrt(
                    sum(((t * p.grad) ** 2).sum() for t, (_, p) in zip(scale, named, strict=True))
                )
                divide = norm + 1e-12 if model.sam_normalize else 1.0
                saved = [p.clone() for _, p in named]
                for t, (_, p) in zip(scale, named, strict=True):
                    p.add_(model.rho * t * t * p.grad / divide)
            optimizer.zero_grad()
            loss_of(net(x), y).backward()
            with torch.no_grad():
                for old, (_, p) in zip(saved, named, strict=True):
                    p.copy_(old)
            optimizer.step()
            schedule.step()
    layout = []
    for linear in net[::2]:
        layout += [linear.weight.detach().T, linear.bias.detach().view(1, -1)]
    return layout


def test_sam_usam_and_asam_in_one_pack_each_match_foret_et_al_step_for_step():
    data = make_data()
    models = [
        sam_model("SAM", 0.05),
        sam_model("USAM", 0.2, init_seed=5),
        sam_model("ASAM", 0.5, order_seed=7, data_seed=0),
        sam_model("SAM", 0.1, momentum=0.5, weight_decay=0.0),
    ]
    pack = train_pack(SETTINGS, models, data)
    names = list(pack.parameters)
    for index, model in enumerate(models):
        expected = reference_sam(SETTINGS, model, data)
        for name, value in zip(names, expected, strict=True):
            torch.testing.assert_close(pack.parameters[name][index], value, rtol=0, atol=1e-10)


def test_a_sam_model_trained_in_a_mixed_pack_equals_the_model_trained_alone():
    data = make_data()
    models = [
        sam_model(variant, rho, init_seed=i, order_seed=i % 3)
        for i, (variant, rho) in enumerate(
            [("SAM", 0.05), ("USAM", 0.1), ("ASAM", 0.5), ("SAM", 0.0), ("USAM", 0.3)]
        )
    ]
    pack = train_pack(SETTINGS, models, data)
    for i in (0, 2, 4):
        alone = train_pack(SETTINGS, [models[i]], data)
        for name, value in pack.parameters.items():
            torch.testing.assert_close(value[i], alone.parameters[name][0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["mlp", "cnn", "module"])
def test_rho_zero_is_plain_sgd_bit_for_bit_for_every_family(family):
    shaped = family != "mlp"
    data = make_data(torch.float32, d=8)
    if shaped:
        data = dataclasses.replace(data, shape=(1, 8))
    settings = dataclasses.replace(SETTINGS, family=family, dtype="float32", activation="relu")
    if family == "cnn":
        settings = dataclasses.replace(
            settings, hidden=(), channels=(3,), kernel=3, stride=1, pool=2
        )
    if family == "module":
        settings = dataclasses.replace(settings, hidden=(), module=_net_reference())
    models = [sam_model(v, rho=0.0, init_seed=i) for i, v in enumerate(VARIANTS)]
    sam = train_pack(settings, models, data)
    sgd = train_pack(dataclasses.replace(settings, optimizer="sgd"), models, data)
    for name, value in sgd.parameters.items():
        assert torch.equal(sam.parameters[name], value), name
    for split, probabilities in sgd.probabilities.items():
        assert np.array_equal(sam.probabilities[split], probabilities)
    moved = train_pack(settings, [dataclasses.replace(models[0], rho=0.05)], data)
    assert not np.array_equal(moved.probabilities["test"][0], sgd.probabilities["test"][0])


def _net_reference() -> ModuleRef:
    """tests/_nets.py's LayerNormNet as a module family's class."""
    folder = str(Path(__file__).parent)
    _, sha256 = locate_module("_nets", (folder,))
    return ModuleRef("_nets:LayerNormNet", "{}", sha256, (folder,))


def test_a_sam_model_whose_ascent_overflows_is_frozen_and_its_pack_mates_are_unchanged():
    data = make_data(torch.float32)
    settings = dataclasses.replace(SETTINGS, dtype="float32", activation="relu")
    healthy = [sam_model("SAM", 0.05, init_seed=i) for i in range(3)]
    exploding = sam_model("USAM", 1e37)  # w + ρ g overflows the logits: the ascent loss is inf
    without = train_pack(settings, healthy, data)
    with_it = train_pack(settings, [healthy[0], exploding, *healthy[1:]], data)
    assert with_it.status == ["ok", "diverged", "ok", "ok"]
    for name, value in without.parameters.items():
        assert torch.equal(
            torch.cat([with_it.parameters[name][:1], with_it.parameters[name][2:]]), value
        )
    initial = _families.init_parameters(
        _families.Architecture(7, settings.hidden, 3, "relu"),
        [exploding.init_seed],
        torch.float32,
        "cpu",
    )
    # frozen at the parameters whose ascent first failed: here, the very first ones
    assert torch.equal(with_it.parameters["layers.0.weight"][1], initial[0][0])


# --- label noise -------------------------------------------------------------------------------


def test_the_replaced_labels_are_a_binomial_share_p_and_their_classes_uniform():
    n, classes = 20_000, 4
    models = [
        ModelSpec(0, seed, 0, 0.1, 0.0, 0.0, 0.0, label_noise=p)
        for seed, p in enumerate((0.0, 0.05, 0.3, 1.0))
    ]
    targets = torch.zeros(len(models), n, dtype=torch.int64)
    noisy, replaced = noisy_targets(models, targets, epoch=0, n_classes=classes)
    for row, model in enumerate(models):
        p = model.label_noise
        count = int(replaced[row].sum())
        sd = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) <= 5 * sd, (p, count)  # exact at p = 0 and p = 1
        assert (noisy[row][~replaced[row]] == 0).all()
        if p > 0:
            drawn = torch.bincount(noisy[row][replaced[row]], minlength=classes).double()
            expected = count / classes  # each class about a quarter of the replaced ones
            assert ((drawn - expected).abs() <= 5 * math.sqrt(expected)).all()
    again, _ = noisy_targets(models, targets, epoch=0, n_classes=classes)
    other_epoch, _ = noisy_targets(models, targets, epoch=1, n_classes=classes)
    assert torch.equal(again, noisy) and not torch.equal(other_epoch[2], noisy[2])
    alone, _ = noisy_targets(models[2:3], targets[:1], epoch=0, n_classes=classes)
    assert torch.equal(alone[0], noisy[2])  # the draws are the model's own


def test_a_model_without_label_noise_trains_exactly_as_plain_training_in_a_noisy_pack():
    data = make_data()
    settings = dataclasses.replace(SETTINGS, optimizer="sgd")
    plain = ModelSpec(1, 2, 0, 0.05, 0.9, 0.0, 0.2)
    noisy = dataclasses.replace(plain, label_noise=0.3, init_seed=4)
    alone = train_pack(settings, [plain], data)
    mixed = train_pack(settings, [noisy, plain], data)
    for name, value in alone.parameters.items():
        assert torch.equal(mixed.parameters[name][1], value[0])
    assert np.array_equal(mixed.probabilities["test"][1], alone.probabilities["test"][0])
    noisy_alone = train_pack(settings, [noisy], data)
    for name, value in noisy_alone.parameters.items():
        torch.testing.assert_close(mixed.parameters[name][0], value[0], rtol=0, atol=1e-12)
    clean = train_pack(settings, [dataclasses.replace(noisy, label_noise=0.0)], data)
    assert not np.array_equal(clean.probabilities["test"][0], noisy_alone.probabilities["test"][0])


# --- random subspaces --------------------------------------------------------------------------


def test_the_projection_has_unit_columns_of_about_root_d_entries_from_the_init_seed():
    n_parameters, dim = 10_000, 50
    rows, values = projection(n_parameters, dim, init_seed=3)
    assert rows.shape == values.shape == (dim, nonzeros_per_column(n_parameters)) == (dim, 100)
    dense = torch.zeros(dim, n_parameters, dtype=torch.float64)
    dense.scatter_add_(1, rows, values)  # an entry drawn twice adds up
    torch.testing.assert_close(dense.norm(dim=1), torch.ones(dim, dtype=torch.float64))
    same_rows, same_values = projection(n_parameters, dim, init_seed=3)
    assert torch.equal(rows, same_rows) and torch.equal(values, same_values)
    assert not torch.equal(rows, projection(n_parameters, dim, init_seed=4)[0])


def test_subspace_parameters_are_theta_zero_plus_the_dense_projection_times_z():
    generator = torch.Generator().manual_seed(0)
    initial = [
        torch.randn(3, 5, 4, generator=generator, dtype=torch.float64),
        torch.randn(3, 1, 4, generator=generator, dtype=torch.float64),
    ]
    space = Subspace(initial, [0, 1, 2], dim=6)
    z = torch.randn(3, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    params = space.parameters(z)
    for m, seed in enumerate((0, 1, 2)):
        rows, values = projection(24, 6, seed)
        dense = torch.zeros(6, 24, dtype=torch.float64).scatter_add_(1, rows, values)
        theta = torch.cat([p[m].flatten() for p in initial]) + z[m] @ dense
        torch.testing.assert_close(torch.cat([p[m].flatten() for p in params]), theta)
    (params[0].sum() + params[1].square().sum()).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def reference_subspace(settings: PackSettings, model: ModelSpec, data: TrainingData) -> list:
    """One model: θ = θ₀ + P z with P dense, z learnt by torch.optim.SGD, batches in order."""
    arch = _families.Architecture(data.features.shape[1], settings.hidden, data.n_classes, "tanh")
    initial = _families.init_parameters(arch, [model.init_seed], torch.float64, "cpu")
    flat = torch.cat([p[0].flatten() for p in initial])
    rows, values = projection(len(flat), settings.subspace_dim, model.init_seed)
    dense = torch.zeros(settings.subspace_dim, len(flat), dtype=torch.float64)
    dense.scatter_add_(1, rows, values)
    z = torch.zeros(settings.subspace_dim, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD(
        [z], lr=model.lr, momentum=model.momentum, weight_decay=model.weight_decay
    )

    def parameters():
        theta, out, at = flat + z @ dense, [], 0
        for p in initial:
            out.append(theta[at : at + p[0].numel()].view(1, *p.shape[1:]))
            at += p[0].numel()
        return out

    rows_ = training_rows([model], data.split_indices["train"])[0]
    for epoch in range(settings.epochs):
        generator = _random.generator(_random.ORDER, model.order_seed, epoch)
        order = rows_[torch.randperm(len(rows_), generator=generator)]
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            logits = _families.forward(arch, parameters(), data.features[batch].unsqueeze(0))
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(logits[0], data.labels[batch]).backward()
            optimizer.step()
    return [p.detach()[0] for p in parameters()]


def test_subspace_training_learns_z_alone_and_matches_a_dense_per_model_implementation():
    data = make_data()
    settings = dataclasses.replace(
        SETTINGS, optimizer="sgd", nesterov=False, schedule="constant", subspace_dim=12
    )
    models = [ModelSpec(i, i + 1, i % 2, 0.1, 0.9, 1e-3 * i, 0.0) for i in range(3)]
    pack = train_pack(settings, models, data)
    for index, model in enumerate(models):
        expected = reference_subspace(settings, model, data)
        for name, value in zip(pack.parameters, expected, strict=True):
            torch.testing.assert_close(pack.parameters[name][index], value, rtol=0, atol=1e-10)
    alone = train_pack(settings, models[1:2], data)
    for name, value in alone.parameters.items():
        torch.testing.assert_close(pack.parameters[name][1], value[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["cnn", "module"])
def test_subspace_and_sam_train_every_family_pack_invariantly(family):
    data = dataclasses.replace(make_data(d=8), shape=(1, 8))
    settings = dataclasses.replace(
        SETTINGS, family=family, hidden=(), subspace_dim=5, activation="relu"
    )
    if family == "cnn":
        settings = dataclasses.replace(settings, channels=(2,), kernel=3, stride=1, pool=2)
    else:
        settings = dataclasses.replace(settings, module=_net_reference())
    models = [sam_model("SAM", 0.05, init_seed=1), sam_model("USAM", 0.1, init_seed=4)]
    pack = train_pack(settings, models, data)
    alone = train_pack(settings, models[1:], data)
    for name, value in alone.parameters.items():
        torch.testing.assert_close(pack.parameters[name][1], value[0], rtol=0, atol=1e-12)
    full = train_pack(dataclasses.replace(settings, subspace_dim=0), models[1:], data)
    assert pack.status == ["ok", "ok"]
    assert not torch.equal(
        full.parameters[next(iter(full.parameters))], alone.parameters[next(iter(alone.parameters))]
    )
