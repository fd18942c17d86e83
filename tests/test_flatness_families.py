"""Flat-minima statistics (SPEC §8) of the nn.Module families against exact Hessians, Fisher
matrices and definitions, computed on the model alone (torch.func on one ``torch.nn`` model,
not the pack's batched forward): a tiny CNN, and a BatchNorm module whose statistics are taken
in eval mode with its running statistics held fixed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rashomon.engine.model import (
    FlatnessSettings,
    PackSettings,
    build_family,
    flatness_statistics,
)
from rashomon.jobs import FLATNESS_COLUMNS, FlatnessConfig, ModuleRef
from rashomon.jobs._modules import locate_module

SHAPE = (1, 6)
CNN = PackSettings(
    family="cnn",
    hidden=(3,),
    activation="tanh",
    epochs=1,
    batch_size=8,
    optimizer="sgd",
    nesterov=False,
    schedule="constant",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
    channels=(2,),
    kernel=3,
    stride=1,
    pool=2,
)  # 41 parameters
NETS = Path(__file__).parent


def settings(**overrides) -> FlatnessSettings:
    return FlatnessSettings.from_config(FlatnessConfig(), **overrides)


def batchnorm_settings() -> PackSettings:
    _, sha256 = locate_module("_nets", [NETS])
    module = ModuleRef("_nets:BatchNormNet", '{"width":2}', sha256, (str(NETS),))
    return dataclasses.replace(CNN, family="module", module=module)


def trained(pack_settings: PackSettings, n_models: int = 3):
    """Models moved away from their start by full-batch gradient descent in train mode (so a
    BatchNorm model's running statistics are its own), with the curvature set."""
    family = build_family(pack_settings, SHAPE, 3)
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(60, 6, generator=gen, dtype=torch.float64)
    labels = (inputs[:, 0] + inputs[:, 3] > 0).long() + (inputs[:, 5] > 1).long()
    initial, buffers = family.init(range(n_models), torch.float64, "cpu")
    params = [p.clone().requires_grad_(True) for p in initial]
    for _ in range(40):
        batch = inputs.expand(n_models, -1, -1)
        logits = family.forward(params, batch, buffers=buffers, train=True)
        loss = F.cross_entropy(logits.transpose(1, 2), labels.expand(n_models, -1))
        grads = torch.autograd.grad(loss * n_models, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= 0.3 * g
    return family, [p.detach() for p in params], initial, buffers, inputs, labels


class OneModel:
    """Model ``m`` of a pack as a function of its flat parameter vector, through the family's
    own ``torch.nn`` module (not the pack's batched forward)."""

    def __init__(self, family, params, buffers, m: int) -> None:
        self.family, self.names = family, family.parameter_names()
        self.shapes = [p.shape[1:] for p in params]
        self.vector = torch.cat([p[m].reshape(-1) for p in params])
        self.buffers = {n: b[m] for n, b in zip(family.buffer_names(), buffers, strict=True)}
        self.module = family.build().double().eval()

    def logits(self, vector: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        parts, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = int(np.prod(shape))
            parts[name] = vector[start : start + size].view(shape)
            start += size
        x = inputs.view(-1, *SHAPE)
        return functional_call(self.module, parts | self.buffers, (x,))

    def loss(self, vector, inputs, labels) -> torch.Tensor:
        return F.cross_entropy(self.logits(vector, inputs), labels)

    def hessian(self, inputs, labels) -> torch.Tensor:
        return torch.func.hessian(lambda v: self.loss(v, inputs, labels))(self.vector)

    def fisher_trace(self, inputs) -> float:
        jacobian = torch.func.jacrev(lambda v: self.logits(v, inputs))(self.vector)  # (n, C, P)
        probs = torch.softmax(self.logits(self.vector, inputs), dim=-1)
        curvature = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
        ggn = torch.einsum("ncp,ncd,ndq->pq", jacobian, curvature, jacobian) / len(inputs)
        return float(ggn.trace())


@pytest.fixture(scope="module", params=["cnn", "batchnorm"])
def measured(request):
    pack_settings = CNN if request.param == "cnn" else batchnorm_settings()
    family, params, initial, buffers, inputs, labels = trained(pack_settings)
    stats = flatness_statistics(
        family, params, initial, inputs, labels, settings(trace_probes=64), buffers
    )
    return family, params, initial, buffers, inputs, labels, stats


def test_trace_top_eigenvalue_and_fisher_against_the_exact_matrices(measured):
    family, params, _, buffers, inputs, labels, stats = measured
    for m in range(3):
        model = OneModel(family, params, buffers, m)
        eigenvalues = torch.linalg.eigvalsh(model.hessian(inputs, labels))
        exact_trace = float(eigenvalues.sum())
        assert abs(stats["hessian_trace"][m] - exact_trace) <= 3 * stats["hessian_trace_se"][m]
        assert stats["hessian_top_eig"][m] == pytest.approx(float(eigenvalues[-1]), rel=1e-2)
        assert stats["fisher_trace"][m] == pytest.approx(model.fisher_trace(inputs), rel=1e-8)


def test_the_simple_statistics_by_their_definitions(measured):
    family, params, initial, buffers, inputs, labels, stats = measured
    for m in range(3):
        model = OneModel(family, params, buffers, m)
        w, w0 = model.vector, torch.cat([p[m].reshape(-1) for p in initial])
        gradient = torch.func.grad(model.loss)(w, inputs, labels)

        def loss(v: torch.Tensor, model: OneModel = model) -> float:
            return float(model.loss(v, inputs, labels))

        assert stats["grad_norm"][m] == pytest.approx(float(gradient.norm()), rel=1e-9)
        assert stats["weight_norm"][m] == pytest.approx(float(w.norm()), rel=1e-12)
        assert stats["dist_from_init"][m] == pytest.approx(float((w - w0).norm()), rel=1e-12)
        sam = loss(w + 0.05 * gradient / gradient.norm()) - loss(w)
        assert stats["sam_sharpness"][m] == pytest.approx(sam, rel=1e-8)
        is_weight = torch.cat(
            [
                torch.full((p[0].numel(),), name.endswith("weight"))
                for name, p in zip(family.parameter_names(), params, strict=True)
            ]
        )  # ASAM's T = |w| + η on the tensors named ...weight, 1 on the rest
        scale = torch.where(is_weight, w.abs() + 0.01, torch.ones_like(w))
        asam = loss(w + 0.5 * scale**2 * gradient / (scale * gradient).norm()) - loss(w)
        assert stats["asam_sharpness"][m] == pytest.approx(asam, rel=1e-8)


def test_a_model_has_the_same_statistics_in_its_pack_as_alone(measured):
    family, params, initial, buffers, inputs, labels, stats = measured
    for m in range(3):
        alone = flatness_statistics(
            family,
            [p[m : m + 1] for p in params],
            [p[m : m + 1] for p in initial],
            inputs,
            labels,
            settings(trace_probes=64),
            [b[m : m + 1] for b in buffers],
        )
        for name in FLATNESS_COLUMNS:
            assert alone[name][0] == pytest.approx(stats[name][m], rel=1e-9, abs=1e-13), name


def test_a_parameter_the_loss_does_not_use_has_zero_gradient_not_an_error():
    _, sha256 = locate_module("_nets", [NETS])
    module = ModuleRef("_nets:SpareLayerNet", '{"width":3}', sha256, (str(NETS),))
    family = build_family(dataclasses.replace(CNN, family="module", module=module), SHAPE, 3)
    initial, buffers = family.init(range(2), torch.float64, "cpu")
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    labels = (inputs[:, 0] > 0).long()
    stats = flatness_statistics(family, initial, initial, inputs, labels, settings(), buffers)
    assert np.isfinite(np.asarray(stats["grad_norm"])).all()
    assert (np.asarray(stats["grad_norm"]) > 0).all()
