"""Any ``torch.nn.Module`` as a family: each model built under its own init seed, the pack's
parameters and buffers stacked, and every model run on its own minibatch with
``vmap(functional_call)``.

A model is built by the user's class exactly as ``torch.nn`` would build it alone — PyTorch's
default initialisation — inside a fork of the global random state seeded from the model's
``init`` stream (torch, NumPy and Python's ``random`` alike), so its start depends on its init seed
only. The pack's tensors are stacked along a leading model axis (``stack_module_state``); a
stateless copy of the module on the ``meta`` device is called with each model's slice. Buffers
(BatchNorm's running statistics) are stacked too and updated in place under ``vmap`` in train
mode: each model keeps its own. Randomness inside ``forward`` is refused (``randomness="error"``):
a model's random numbers must come from its own seeds, not from a stream shared by the pack.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vjp, vmap
from torch.utils.flop_counter import FlopCounterMode

from rashomon.engine.model import _random
from rashomon.jobs import UserError, user_frame

# Examples a check builds and runs its two models on.
CHECK_EXAMPLES = 2


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Every global random state a constructor might draw from, seeded from one model's init
    stream and restored afterwards (so building a model disturbs nothing else)."""
    value = _random.stream_seed(_random.INIT, seed)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(value)
        random.seed(value)
        np.random.seed(value % 2**32)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class ModuleFamily:
    """A pack of models of one ``nn.Module`` class; ``build()`` makes one model."""

    hessian_method = "forward-over-reverse"

    def __init__(
        self,
        build: Callable[[], nn.Module],
        in_shape: Sequence[int],
        n_classes: int,
        description: Mapping[str, Any],
        where: str = "model.module",
    ) -> None:
        self.build, self.where = build, where
        self.in_shape, self.n_classes = tuple(in_shape), n_classes
        self.n_features = math.prod(self.in_shape)
        self._description = dict(description)
        probe = self._construct(0)
        trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
        if not trainable:
            raise UserError(f"{self.where}: {self._call_text()} has no parameters to train")
        self._names = trainable
        frozen = [n for n, p in probe.named_parameters() if not p.requires_grad]
        self._buffer_names = frozen + [n for n, _ in probe.named_buffers()]
        self._shapes = {n: t.shape for n, t in _state(probe).items()}
        self.n_parameters = sum(math.prod(self._shapes[n]) for n in self._names)
        self.base = self._construct(0).to("meta")  # the stateless skeleton functional_call fills
        self.forward_flops, self.activation_elements, self.activation_total = self._measure(probe)
        self.head, self.first_layer = self._locate_layers(probe)

    # --- what the trainer, the flatness statistics and the weights file need -------------------

    @property
    def dropout_widths(self) -> tuple[int, ...]:
        return ()

    def parameter_names(self) -> list[str]:
        return list(self._names)

    def buffer_names(self) -> list[str]:
        return list(self._buffer_names)

    def description(self) -> dict[str, Any]:
        """What rebuilds this family (the weights file's metadata)."""
        return dict(self._description)

    def init(
        self, init_seeds: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Stacked parameters and buffers, one slice per model, each model built under its own
        seed (in float32, then cast, so a float64 pack starts from the same values rounded)."""
        states = [_state(self._construct(seed)) for seed in init_seeds]
        for state in states:
            if {n: t.shape for n, t in state.items()} != self._shapes:
                raise UserError(
                    f"{self.where}: {self._call_text()} builds models of different shapes under "
                    "different seeds; a pack needs one architecture (make it depend on "
                    "in_shape, n_classes and kwargs only)"
                )

        def stacked(name: str) -> torch.Tensor:
            tensor = torch.stack([state[name].detach() for state in states])
            cast = dtype if tensor.is_floating_point() else tensor.dtype
            return tensor.to(device=device, dtype=cast).contiguous()

        return [stacked(n) for n in self._names], [stacked(n) for n in self._buffer_names]

    def forward(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        dropout_masks: Sequence[torch.Tensor] | None = None,
        buffers: Sequence[torch.Tensor] | None = None,
        train: bool = False,
    ) -> torch.Tensor:
        """Logits ``(M, batch, classes)`` for ``inputs`` ``(M, batch, features)`` (each model its
        own minibatch) or ``(batch, features)`` (the same examples for every model)."""
        state = self._state(params, buffers)
        x = inputs.reshape(*inputs.shape[:-1], *self.in_shape)
        extra = () if dropout_masks is None else (tuple(dropout_masks),)
        self.base.train(train)
        in_dims = (0, 0 if inputs.dim() == 3 else None, *(0,) * len(extra))
        return vmap(self._call, in_dims=in_dims, randomness="error")(state, x, *extra)

    def per_example_squared_norms(
        self,
        params: Sequence[torch.Tensor],
        buffers: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        directions: torch.Tensor,
    ) -> torch.Tensor:
        """‖∂(dᵀ z(x))/∂θ‖² for every model, example and direction in logit space, in eval mode:
        ``directions`` (M, n, D, classes) -> (M, n, D), from per-example gradients (``vmap`` of
        ``vjp`` over models, examples and directions)."""
        self.base.eval()

        def one(state, x, rows):
            trainable = {n: state[n] for n in self._names}
            rest = {n: state[n] for n in self._buffer_names}
            single = x.reshape(1, *self.in_shape)
            _, pull = vjp(lambda p: self._call(p | rest, single)[0], trainable)
            gradients = vmap(pull)(rows)[0]
            return sum(g.flatten(1).square().sum(1) for g in gradients.values())

        state = self._state(params, buffers)
        over_examples = vmap(one, in_dims=(None, 0, 0), randomness="error")
        return vmap(over_examples, in_dims=(0, None, 0), randomness="error")(
            state, inputs, directions
        )

    def penultimate(
        self,
        params: Sequence[torch.Tensor],
        inputs: torch.Tensor,
        buffers: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """The input of the layer that produces the logits (`head`), flattened per example,
        (M, n, width), in eval mode; None when no layer does (logits computed functionally)."""
        if self.head is None:
            return None
        head = self.base.get_submodule(self.head)
        self.base.eval()

        def one(state, x):
            captured: list[torch.Tensor] = []
            handle = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
            try:
                self._call(state, x)
            finally:
                handle.remove()
            return captured[-1].flatten(1)

        x = inputs.reshape(*inputs.shape[:-1], *self.in_shape)
        in_dims = (0, 0 if inputs.dim() == 3 else None)
        return vmap(one, in_dims=in_dims, randomness="error")(self._state(params, buffers), x)

    def first_weights(self, params: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The first parameterised layer's weight, one row per output unit or channel (a
        convolution's kernels flattened), (M, outputs, inputs); None when there is no such
        layer."""
        if self.first_layer is None:
            return None
        weight = params[self._names.index(self.first_layer)]
        return weight.reshape(len(weight), weight.shape[1], -1)

    # --- construction and checks --------------------------------------------------------------

    def check(self, last_batch: int | None = None) -> None:
        """Two models on two examples, batched, in train and eval mode, before anything trains
        (and in train mode on ``last_batch`` examples, the size of an epoch's last minibatch,
        when that is fewer): every failure is one UserError naming the layer and the fix."""
        params, buffers = self.init(range(CHECK_EXAMPLES), torch.float32, "cpu")
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(CHECK_EXAMPLES, CHECK_EXAMPLES, self.n_features, generator=generator)
        for train in (True, False):
            logits = self._traced(
                lambda mode=train: self.forward(params, inputs, None, buffers, mode)
            )
            expected = (CHECK_EXAMPLES, CHECK_EXAMPLES, self.n_classes)
            if not isinstance(logits, torch.Tensor):
                raise UserError(
                    f"{self.where}: {self._call_text()} returns a {type(logits).__name__}; "
                    f"forward must return one tensor of logits, (batch, {self.n_classes})"
                )
            if tuple(logits.shape) != expected or not logits.is_floating_point():
                got = tuple(logits.shape)[1:]
                raise UserError(
                    f"{self.where}: {self._call_text()} returns {logits.dtype} of shape "
                    f"{got} for {CHECK_EXAMPLES} examples; forward must return logits of shape "
                    f"(batch, n_classes) = ({CHECK_EXAMPLES}, {self.n_classes})"
                )
        if last_batch is not None and last_batch < CHECK_EXAMPLES:
            try:
                self.forward(params, inputs[:, :last_batch], None, buffers, True)
            except Exception as error:
                raise UserError(
                    f"{self.where}: {self.target_text()} fails in train mode on the "
                    f"{last_batch} example(s) of each epoch's last minibatch "
                    f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); change "
                    "train.batch_size so that the training split does not leave so few"
                ) from None

    def _traced(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``run()``, with the innermost layer that was running when it failed named."""
        entered: list[str] = []

        def enter(label: str) -> Callable[..., None]:
            return lambda *_: entered.append(label)

        def leave(*_: Any) -> None:
            entered.pop()

        hooks = []
        for name, module in self.base.named_modules():
            hooks.append(module.register_forward_pre_hook(enter(_layer(name, module))))
            hooks.append(module.register_forward_hook(leave))
        try:
            return run()
        except UserError:
            raise
        except Exception as error:
            layer = entered[-1] if entered else "its top level"
            raise UserError(self._forward_error(error, layer)) from None
        finally:
            for hook in hooks:
                hook.remove()

    def _forward_error(self, error: Exception, layer: str) -> str:
        text = " ".join(str(error).split())
        where = f"{self.where}: {self.target_text()} failed in its forward pass at {layer}"
        if "random operation" in text:
            return (
                f"{where}: it draws random numbers (e.g. nn.Dropout), which would not come from "
                "each model's own seeds; remove it (for dropout, use family mlp or cnn with "
                "model.dropout)"
            )
        if "vmap" in text or "functorch" in text:
            return (
                f"{where}: it cannot run batched across models (torch.func.vmap: "
                f"{text[:200]}); avoid .item(), Python branches on tensor values and in-place "
                "changes to inputs"
            )
        return (
            f"{where}: {type(error).__name__}: {text[:300]}{user_frame(error)}; the model gets "
            f"inputs of shape (batch, {', '.join(map(str, self.in_shape))}) and must return "
            f"(batch, {self.n_classes})"
        )

    def _construct(self, seed: int) -> nn.Module:
        with seeded(seed):
            try:
                model = self.build()
            except UserError:
                raise
            except Exception as error:
                text = " ".join(str(error).split())[:300]
                raise UserError(
                    f"{self.where}: {self._call_text()} failed: {type(error).__name__}: "
                    f"{text}{user_frame(error)}; fix the class or model.kwargs"
                ) from None
        if not isinstance(model, nn.Module):
            raise UserError(
                f"{self.where}: {self.target_text()} built a {type(model).__name__}, not a "
                "torch.nn.Module; name an nn.Module subclass"
            )
        lazy = [n for n, p in model.named_parameters() if isinstance(p, nn.UninitializedParameter)]
        if lazy:
            raise UserError(
                f"{self.where}: {self.target_text()} has lazy layers ({lazy[0]}), whose "
                "parameters exist only after a first forward pass; give their sizes (the class "
                "gets in_shape and n_classes)"
            )
        return model.float()

    def _measure(self, probe: nn.Module) -> tuple[float, int, int]:
        """FLOPs of one example's forward pass (matmuls and convolutions, as torch counts them),
        the largest activation any layer returns for it and all of them together (to bound
        memory and size packs)."""
        largest = [self.n_features]

        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                largest.append(output.numel())

        hooks = [m.register_forward_hook(record) for m in probe.modules()]
        counter = FlopCounterMode(display=False)
        try:
            probe.eval()
            with counter, torch.no_grad():
                probe(torch.zeros(1, *self.in_shape))
        except Exception:  # `check` names what fails; these figures only size and time packs
            return 0.0, max(largest), sum(largest)
        finally:
            for hook in hooks:
                hook.remove()
        return float(counter.get_total_flops()), max(largest), sum(largest)

    def _locate_layers(self, probe: nn.Module) -> tuple[str | None, str | None]:
        """The layers the simplicity statistics read, found by running the probe on one example
        through its submodules that hold parameters of their own: ``head``, the last of them
        called, if it returns the logits; ``first_layer``, the trainable weight (≥ 2 dimensions,
        named ``weight``) of the first of them called that holds one."""
        calls: list[tuple[str, nn.Module, Any]] = []
        hooks = [
            module.register_forward_hook(
                lambda m, _args, out, name=name: calls.append((name, m, out))
            )
            for name, module in probe.named_modules()
            if name and any(True for _ in module.parameters(recurse=False))
        ]
        try:
            probe.eval()
            with torch.no_grad():
                probe(torch.zeros(1, *self.in_shape))
        except Exception:  # `check` names what fails
            return None, None
        finally:
            for hook in hooks:
                hook.remove()
        heads = [
            name
            for name, _, out in calls
            if isinstance(out, torch.Tensor) and out.shape[-1:] == (self.n_classes,)
        ]
        firsts = [
            f"{name}.weight"
            for name, module, _ in calls
            if isinstance(getattr(module, "weight", None), nn.Parameter)
            and module.weight.dim() >= 2
            and module.weight.requires_grad
        ]
        head = heads[-1] if heads and calls[-1][0] == heads[-1] else None
        return head, firsts[0] if firsts else None

    def _call(self, state: dict[str, torch.Tensor], x: torch.Tensor, *extra: Any) -> torch.Tensor:
        return functional_call(self.base, state, (x, *extra))

    def _state(
        self, params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        state = dict(zip(self._names, params, strict=True))
        state |= dict(zip(self._buffer_names, buffers or (), strict=True))
        return state

    def _call_text(self) -> str:
        return f"{self.target_text()}(in_shape={self.in_shape}, n_classes={self.n_classes}, ...)"

    def target_text(self) -> str:
        return str(self._description.get("target", "the module"))


def _layer(name: str, module: nn.Module) -> str:
    return f"layer {name!r} ({type(module).__name__})" if name else "its top level"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())
