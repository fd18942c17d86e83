"""The cnn family and a user's own modules trained in packs: a model in a pack equals the model
trained alone and a plain torch.nn + torch.optim loop step for step (float64), determinism,
divergence isolation with BatchNorm buffers, the folded convolutions against vmap(functional_call),
and every way a user's class can fail, named before anything trains. No Ray."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import linear_problem

from rashomon.engine.model import (
    ConvNet,
    ModelSpec,
    PackSettings,
    TrainingData,
    _random,
    build_family,
    train_pack,
    training_rows,
)
from rashomon.jobs import ModuleRef, UserError
from rashomon.jobs._modules import locate_module

NETS = Path(__file__).parent / "_nets.py"
SEQUENCE = (2, 12)  # one example: 2 channels of length 12
IMAGE = (2, 6, 6)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: one thread avoids OpenMP hand-offs that cost more than the arithmetic (and
    that stall on a machine whose cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(shape, n=240, classes=3, dtype=torch.float64) -> TrainingData:
    return linear_problem(0, n, int(np.prod(shape)), classes, (160, 200), 4, dtype, shape)


def module_ref(name: str, **kwargs) -> ModuleRef:
    _, sha256 = locate_module("_nets", [NETS.parent])
    return ModuleRef(f"_nets:{name}", _json(kwargs), sha256, (str(NETS.parent),))


def _json(kwargs) -> str:
    import json

    return json.dumps(kwargs, sort_keys=True, separators=(",", ":"))


BASE = PackSettings(
    family="cnn",
    hidden=(5,),
    activation="tanh",
    epochs=2,
    batch_size=32,
    optimizer="sgd",
    nesterov=True,
    schedule="cosine",
    betas=(0.9, 0.999),
    eps=1e-8,
    dtype="float64",
    channels=(3, 4),
    kernel=3,
    stride=1,
    pool=2,
)
MODULE = dataclasses.replace(BASE, family="module")
CASES = {
    "cnn-1d": (BASE, SEQUENCE),
    "cnn-2d": (dataclasses.replace(BASE, activation="relu", optimizer="adam"), IMAGE),
    "layernorm": (dataclasses.replace(MODULE, module=module_ref("LayerNormNet")), SEQUENCE),
    "batchnorm": (
        dataclasses.replace(MODULE, module=module_ref("BatchNormNet"), optimizer="adamw"),
        SEQUENCE,
    ),
}


def population(n: int, dropout: bool) -> list[ModelSpec]:
    return [
        ModelSpec(
            init_seed=i % 4,
            order_seed=i % 3,
            data_seed=i % 2,
            lr=0.02 * (1 + i % 3),
            momentum=0.8,
            weight_decay=1e-3 * (i % 2),
            dropout=0.2 * (i % 2) if dropout else 0.0,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_model_trained_in_a_pack_equals_the_model_trained_alone(case):
    settings, shape = CASES[case]
    data = make_data(shape)
    models = population(9, dropout=settings.family == "cnn")
    pack = train_pack(settings, models, data, ("val", "test"))
    assert pack.status == ["ok"] * 9
    for i in (0, 5, 8):
        alone = train_pack(settings, [models[i]], data, ("val", "test"))
        for split in ("val", "test"):
            difference = np.abs(pack.probabilities[split][i] - alone.probabilities[split][0])
            assert difference.max() <= 1e-9, (case, i, split)
        for name, value in pack.parameters.items():  # parameters and buffers
            torch.testing.assert_close(value[i], alone.parameters[name][0], rtol=0, atol=1e-9)
    if case == "batchnorm":
        assert {"norm.running_mean", "norm.running_var", "norm.num_batches_tracked"} <= set(
            pack.parameters
        )
        steps = 2 * -(-160 // 32)
        assert (pack.parameters["norm.num_batches_tracked"] == steps).all()
        means = pack.parameters["norm.running_mean"]
        assert not torch.equal(means[0], means[1])  # every model keeps its own statistics


class StockCNN(torch.nn.Module):
    """The cnn family written with stock layers only (F.max_pool after the activation), holding
    a `ConvNet`'s parameters under the same names."""

    def __init__(self, net: ConvNet, activation: str, pool: int, dims: int) -> None:
        super().__init__()
        self.convs, self.dense = net.convs, net.dense
        self.activation = {"relu": torch.relu, "tanh": torch.tanh}[activation]
        self.pool = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d}[dims]
        self.window = pool

    def forward(self, x):
        for conv in self.convs:
            x = self.pool(self.activation(conv(x)), self.window)
        x = x.flatten(1)
        for layer in self.dense[:-1]:
            x = self.activation(layer(x))
        return self.dense[-1](x)


def reference_model(case: str, seed: int) -> torch.nn.Module:
    """The model as a user builds it alone: torch.nn under torch.manual_seed of its init
    stream (``stream_seed("init", seed)``), in float64."""
    settings, shape = CASES[case]
    torch.manual_seed(_random.stream_seed(_random.INIT, seed))
    if settings.family == "cnn":
        s = settings
        net = ConvNet(shape, 3, s.channels, s.kernel, s.stride, s.pool, s.hidden, s.activation)
        net = StockCNN(net, s.activation, s.pool, len(shape) - 1)
    else:
        import _nets

        net = getattr(_nets, settings.module.class_name)(in_shape=shape, n_classes=3)
    return net.double()


def torch_loop(case: str, model: ModelSpec, data: TrainingData) -> tuple[np.ndarray, dict]:
    """One model trained with torch.nn + torch.optim on the same minibatches."""
    settings, shape = CASES[case]
    with torch.random.fork_rng():
        net = reference_model(case, model.init_seed)
    kwargs = {"lr": model.lr, "weight_decay": model.weight_decay}
    optimizer = {
        "sgd": lambda: torch.optim.SGD(
            net.parameters(), momentum=model.momentum, nesterov=settings.nesterov, **kwargs
        ),
        "adam": lambda: torch.optim.Adam(net.parameters(), **kwargs),
        "adamw": lambda: torch.optim.AdamW(net.parameters(), **kwargs),
    }[settings.optimizer]()
    rows = training_rows([model], data.split_indices["train"])[0]
    total_steps = settings.epochs * -(-len(rows) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    net.train()
    for epoch in range(settings.epochs):
        generator = _random.generator(_random.ORDER, model.order_seed, epoch)
        order = rows[torch.randperm(len(rows), generator=generator)]
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            inputs = data.features[batch].view(-1, *shape)
            loss = torch.nn.functional.cross_entropy(net(inputs), data.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if settings.schedule == "cosine":
                schedule.step()
    net.eval()
    with torch.no_grad():
        test = data.features[data.split_indices["test"]].view(-1, *shape)
        probabilities = torch.softmax(net(test), -1).numpy()
    return probabilities, {k: v.detach() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_nn_and_torch_optim_step_for_step(case):
    data = make_data(CASES[case][1])
    model = ModelSpec(3, 4, 1, lr=0.05, momentum=0.9, weight_decay=1e-2, dropout=0.0)
    ours = train_pack(CASES[case][0], [model], data, ("test",))
    probabilities, state = torch_loop(case, model, data)
    assert np.abs(ours.probabilities["test"][0] - probabilities).max() < 1e-6  # stored float32
    assert set(ours.parameters) == set(state)
    for name, value in state.items():
        torch.testing.assert_close(ours.parameters[name][0], value, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["cnn-2d", "batchnorm"])
def test_the_same_pack_twice_is_bitwise_identical(case):
    settings = dataclasses.replace(CASES[case][0], dtype="float32")
    data = make_data(CASES[case][1], dtype=torch.float32)
    first = train_pack(settings, population(6, dropout=True), data)
    second = train_pack(settings, population(6, dropout=True), data)
    for split in ("val", "test"):
        assert np.array_equal(first.probabilities[split], second.probabilities[split])
    for name, value in first.parameters.items():
        assert torch.equal(value, second.parameters[name]), name


@pytest.mark.parametrize("case", ["cnn-1d", "batchnorm"])
def test_a_diverging_model_is_frozen_and_its_pack_mates_are_bitwise_unchanged(case):
    settings = dataclasses.replace(CASES[case][0], dtype="float32", schedule="constant")
    data = make_data(CASES[case][1], dtype=torch.float32)
    healthy = population(4, dropout=False)
    exploding = dataclasses.replace(healthy[0], lr=1e37)
    without = train_pack(settings, healthy, data)
    with_it = train_pack(settings, [*healthy[:2], exploding, *healthy[2:]], data)
    assert with_it.status == ["ok", "ok", "diverged", "ok", "ok"]
    kept = [0, 1, 3, 4]
    for split in ("val", "test"):
        assert np.array_equal(with_it.probabilities[split][kept], without.probabilities[split])
    for name, value in without.parameters.items():  # BatchNorm statistics included
        assert torch.equal(with_it.parameters[name][kept], value), name
    for name in ("norm.running_mean", "norm.running_var"):  # those of its last finite step
        if name in with_it.parameters:
            assert with_it.parameters[name][2].isfinite().all(), name


@pytest.mark.parametrize("shape", [SEQUENCE, IMAGE])
def test_grouped_convolutions_equal_vmap_of_the_module(shape):
    settings = dataclasses.replace(CASES["cnn-1d"][0], hidden=(6, 5))
    family = build_family(settings, shape, 3)
    params, _ = family.init(range(5), torch.float64, "cpu")
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(5, 7, int(np.prod(shape)), generator=generator, dtype=torch.float64)
    masks = [(torch.rand(5, 7, w, generator=generator) < 0.7).double() / 0.7 for w in (6, 5)]
    for x in (inputs, inputs[0]):  # each model its own examples; the same for every model
        torch.testing.assert_close(
            family.forward(params, x), family.reference_forward(params, x), rtol=0, atol=1e-12
        )
    torch.testing.assert_close(
        family.forward(params, inputs, masks),
        family.reference_forward(params, inputs, masks),
        rtol=0,
        atol=1e-12,
    )


def test_a_model_starts_where_torch_nn_starts_it_under_its_init_seed():
    family = build_family(CASES["cnn-2d"][0], IMAGE, 3)
    params, _ = family.init([7, 2, 7], torch.float64, "cpu")
    with torch.random.fork_rng():
        reference = reference_model("cnn-2d", 7)
    for name, value in zip(family.parameter_names(), params, strict=True):
        torch.testing.assert_close(value[0], reference.state_dict()[name], rtol=0, atol=0)
        assert torch.equal(value[0], value[2])
    assert not torch.equal(params[0][0], params[0][1])
    state = torch.random.get_rng_state()
    family.init([3], torch.float32, "cpu")
    assert torch.equal(state, torch.random.get_rng_state())  # building disturbs nothing


# --- every way a class can fail, one line each --------------------------------------------------


BROKEN = {
    "FailsInInit": r"_nets:FailsInInit\(in_shape=\(2, 12\), n_classes=3, \.\.\.\) failed: "
    r"ValueError: width 8 is too small \(at _nets.py, line 43\); fix the class or model.kwargs$",
    "WrongOutput": r"_nets:WrongOutput\(in_shape=\(2, 12\), n_classes=3, \.\.\.\) returns "
    r"torch.float32 of shape \(2, 4\) for 2 examples; forward must return logits of shape "
    r"\(batch, n_classes\) = \(2, 3\)$",
    "FailsInForward": r"_nets:FailsInForward failed in its forward pass at layer 'body.1' "
    r"\(Linear\): RuntimeError: .* \(at _nets.py, line 62\); the model gets inputs of shape "
    r"\(batch, 2, 12\) and must return \(batch, 3\)$",
    "RandomForward": r"_nets:RandomForward failed in its forward pass at layer 'drop' "
    r"\(Dropout\): it draws random numbers .* remove it",
    "Lazy": r"_nets:Lazy has lazy layers \(head.weight\).* give their sizes",
    "NotAModule": r"_nets:NotAModule built a NotAModule, not a torch.nn.Module",
    "make_net": r"_nets:make_net is function, not a class",
    "Missing": r"_nets \(.*_nets.py\) has no 'Missing'; classes there: .*LayerNormNet",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_module_is_one_error_naming_the_place_and_the_fix(name):
    settings = dataclasses.replace(MODULE, module=module_ref(name))
    with pytest.raises(UserError, match=r"^model.module: " + BROKEN[name]) as caught:
        build_family(settings, SEQUENCE, 3).check()
    assert "\n" not in str(caught.value)


def test_cnn_blocks_that_shrink_the_input_to_nothing_are_refused():
    settings = dataclasses.replace(BASE, channels=(4, 4, 4), kernel=3, pool=2)
    with pytest.raises(UserError, match=r"model.channels: 3 blocks .* shrink the \[1, 6\] input"):
        build_family(settings, (1, 6), 3)
    with pytest.raises(UserError, match=r"model.family: cnn needs examples of shape"):
        build_family(BASE, (12,), 3)


def test_a_batchnorm_module_that_would_fail_on_a_last_minibatch_of_one_is_refused():
    settings = dataclasses.replace(MODULE, module=module_ref("DenseBatchNorm"))
    family = build_family(settings, SEQUENCE, 3)
    family.check(last_batch=5)  # two examples or more train like the check's own
    with pytest.raises(UserError, match=r"fails in train mode on the 1 example\(s\) of each "
                       r"epoch's last minibatch \(ValueError: Expected more than 1 value per "
                       r"channel.*change train.batch_size"):  # fmt: skip
        family.check(last_batch=1)
