"""The epoch loop: mini-batches sliced from tensors, one callback per epoch.

Small tabular data fits in memory, so each epoch draws one permutation and
gathers each batch's rows from a pre-built tensor; no DataLoader, no per-row
Python.

With small networks the optimizer's per-parameter bookkeeping costs as much
as the forward pass, so when the optimizer's update is element-wise (Adam,
AdamW, RMSprop, SGD) the loop keeps every parameter and gradient as a view
into one flat buffer per parameter group and steps a copy of the optimizer on
that buffer: a handful of tensor operations per step instead of a handful per
parameter, with the same arithmetic on every element. Adam and AdamW on the
CPU step the buffer with the fused form of torch's functional Adam
(``torch.optim.adam.adam(fused=True)``), one call per step. The parameters
get their own storage back, and the original optimizer its state, when the
loop ends. Only public torch API is used here.

Measured with ``benchmarks/training.py --part paths`` (default detector, one
thread, geometric means over four data sets with Adam and AdamW, in three
runs on a busy machine; benchmarks/README.md has the tables): with
``torch.optim.Adam(fused=True)`` stepping the parameters one by one an epoch
takes 1.3x to 1.4x as long as with this flat step, and with the same
optimizer object stepping the flat buffer 1.1x (``Optimizer.step``'s Python
costs more than the arithmetic). The functional form costs 6% to 10% of CPU
time per epoch (1% to 7% of wall time) over calling torch's private fused
kernel directly: within the 10% for which public API is preferred.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.adam import adam as functional_adam

from anomtune.errors import ConfigError

__all__ = ["OPTIMIZERS", "TrainResult", "batch_bounds", "make_optimizer", "run_epochs"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")

COMPLETED = "completed"
EARLY_STOPPED = "early_stopped"
STOPPED = "stopped_by_callback"
DIVERGED = "diverged"

# Optimizers whose update of an element depends only on that element's
# parameter, gradient and state, so stepping them on a concatenation of the
# parameters gives the same values as stepping them parameter by parameter.
_ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.SGD)


@dataclass
class TrainResult:
    """How training ended and the per-epoch record."""

    status: str = COMPLETED
    epochs: int = 0
    loss_curve: list[float] = field(default_factory=list)
    holdout_curve: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    message: str = ""


def make_optimizer(
    name: str, params, *, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch start/stop positions; a trailing batch of one row joins its neighbour
    (batch norm cannot normalise a single row)."""
    size = max(1, min(batch_size, n))
    starts = list(range(0, n, size))
    bounds = [(s, min(s + size, n)) for s in starts]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        (a, _), (_, d) = bounds[-2], bounds[-1]
        bounds[-2:] = [(a, d)]
    return bounds


def _has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``net.state_dict()`` that later training does not change."""
    state = net.state_dict()
    for key, value in state.items():
        state[key] = value.clone()
    return state


class _Stepper:
    """Clears gradients and steps the optimizer, parameter by parameter."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer):
        self.net = net
        self.optimizer = optimizer

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()

    def all_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.net.parameters())

    def release(self) -> None:
        pass


class _FlatStepper(_Stepper):
    """Steps a copy of the optimizer on one flat buffer per parameter group.

    The first batch runs parameter by parameter. If it gave every parameter a
    gradient, the parameters and gradients become views into flat buffers
    (same values), and from then on gradients accumulate into the zeroed flat
    gradient and the copy steps the flat parameter. Otherwise the original
    optimizer keeps stepping. The update is element-wise, so the values are
    those the original optimizer would produce, as long as each batch's loss
    reaches the same parameters as the first batch's (always so for a
    feed-forward network).
    """

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer):
        super().__init__(net, optimizer)
        self.groups = [list(g["params"]) for g in optimizer.param_groups]
        self.flat: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.flat_optimizer: torch.optim.Optimizer | None = None
        self.per_parameter = False
        self.others: list[torch.Tensor] = []
        self.fused_step: Callable[[], None] | None = None

    @staticmethod
    def eligible(optimizer: torch.optim.Optimizer) -> bool:
        if type(optimizer) not in _ELEMENTWISE or optimizer.state:
            return False
        seen: set[int] = set()
        for group in optimizer.param_groups:
            if any(group.get(k) for k in ("differentiable", "fused", "capturable")):
                return False
            params = group["params"]
            if not params:
                return False
            first = params[0]
            for p in params:
                if not (
                    p.requires_grad
                    and p.is_leaf
                    and p.layout == torch.strided
                    and p.dtype.is_floating_point
                    and p.dtype == first.dtype
                    and p.device == first.device
                ):
                    return False
                storage = p.untyped_storage().data_ptr()
                if storage in seen:
                    return False
                seen.add(storage)
        return True

    def zero_grad(self) -> None:
        if self.flat_optimizer is None:
            super().zero_grad()
        else:
            for grad in self.grads:
                grad.zero_()

    def step(self) -> None:
        if self.flat_optimizer is None and not self.per_parameter:
            self._flatten()
        if self.flat_optimizer is None:
            self.optimizer.step()
        elif self.fused_step is not None:
            self.fused_step()
        else:
            self.flat_optimizer.step()

    def _flatten(self) -> None:
        params = [p for group in self.groups for p in group]
        ok = all(
            p.grad is not None
            and p.grad.layout == torch.strided
            and p.grad.dtype == p.dtype
            and p.grad.shape == p.shape
            for p in params
        )
        if not ok:
            self.per_parameter = True
            return
        new_groups = []
        for group, options in zip(self.groups, self.optimizer.param_groups, strict=True):
            with torch.no_grad():
                flat = torch.cat([p.detach().reshape(-1) for p in group])
                grad = torch.cat([p.grad.reshape(-1) for p in group])
            offset = 0
            for p in group:
                size = p.numel()
                p.data = flat[offset : offset + size].view_as(p)
                p.grad = grad[offset : offset + size].view_as(p)
                offset += size
            param = nn.Parameter(flat)
            param.grad = grad
            self.flat.append(param)
            self.grads.append(grad)
            new_groups.append(
                {**{k: v for k, v in options.items() if k != "params"}, "params": [param]}
            )
        cls = type(self.optimizer)
        accepted = inspect.signature(cls.__init__).parameters
        defaults = {k: v for k, v in self.optimizer.defaults.items() if k in accepted}
        self.flat_optimizer = cls(new_groups, **defaults)
        self.fused_step = _fused_adam_step(self.flat_optimizer)
        covered = {id(p) for p in params}
        self.others = [p for p in self.net.parameters() if id(p) not in covered]

    def all_finite(self) -> bool:
        if self.flat_optimizer is None:
            return super().all_finite()
        return all(bool(torch.isfinite(t).all()) for t in (*self.flat, *self.others))

    def release(self) -> None:
        """Give each parameter its own storage and the original optimizer the state."""
        if self.flat_optimizer is None:
            return
        for group, param in zip(self.groups, self.flat, strict=True):
            state = self.flat_optimizer.state.get(param, {})
            offset = 0
            for p in group:
                size = p.numel()
                p.data = p.data.clone()
                if p.grad is not None:
                    p.grad = p.grad.clone()
                if state:
                    self.optimizer.state[p] = {
                        key: _slice_state(value, param, offset, size, p)
                        for key, value in state.items()
                    }
                offset += size
        self.flat_optimizer = None
        self.fused_step = None
        self.flat, self.grads, self.others = [], [], []


def _fused_adam_step(optimizer: torch.optim.Optimizer) -> Callable[[], None] | None:
    """One call of torch's functional Adam, fused, per flat buffer; or None.

    ``optimizer.step()`` spends far longer in Python than in arithmetic on a
    buffer of a few thousand weights; the functional form with ``fused=True``
    does the whole update in one kernel call and skips the step's hooks,
    profiling and parameter bookkeeping. The state lives in
    ``optimizer.state`` as Adam keeps it (``step``, ``exp_avg``,
    ``exp_avg_sq``), so releasing the buffers hands it back unchanged.
    """
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return None
    calls = []
    for group in optimizer.param_groups:
        (param,) = group["params"]
        if (
            param.device.type != "cpu"
            or param.dtype not in (torch.float32, torch.float64)
            or isinstance(group["lr"], torch.Tensor)
            or any(group.get(k) for k in ("amsgrad", "maximize", "capturable", "differentiable"))
        ):
            return None
        state = optimizer.state[param]
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        calls.append((group, param, state))

    def step() -> None:
        for group, param, state in calls:
            beta1, beta2 = group["betas"]
            # Counts the step itself, as Adam.step does.
            functional_adam(
                [param],
                [param.grad],
                [state["exp_avg"]],
                [state["exp_avg_sq"]],
                [],
                [state["step"]],
                fused=True,
                decoupled_weight_decay=group["decoupled_weight_decay"],
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )

    return step


def _slice_state(value, flat: torch.Tensor, offset: int, size: int, p: torch.Tensor):
    if not isinstance(value, torch.Tensor):
        return value
    if value.shape == flat.shape:
        return value[offset : offset + size].view_as(p).clone()
    return value.clone()


def run_epochs(
    net: nn.Module,
    X: torch.Tensor,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    holdout_loss: Callable[[], float] | None = None,
    patience: int = 10,
    on_epoch_end: Callable[[int], bool | None] | None = None,
) -> TrainResult:
    """Train ``net`` on the rows of ``X`` for up to ``epochs`` epochs.

    ``batch_loss(xb)`` returns the scalar loss of a batch: a tensor, or any
    object with the tensor's ``item()`` and ``backward()`` (the hand-written
    step of :mod:`anomtune.models.backprop`). ``holdout_loss()``,
    if given, is evaluated after each epoch for early stopping: training stops
    after ``patience`` epochs without improvement and the best weights are
    restored. ``on_epoch_end(epoch)`` (1-based) may return True to stop, or
    raise to abort (the tuner's pruning does that).

    A non-finite loss ends training with status ``"diverged"`` and the weights
    of the last finite epoch, instead of raising.
    """
    result = TrainResult()
    n = X.shape[0]
    single_row_bn = n == 1 and _has_batch_norm(net)
    bounds = batch_bounds(n, batch_size)
    if _FlatStepper.eligible(optimizer):
        stepper: _Stepper = _FlatStepper(net, optimizer)
    else:
        stepper = _Stepper(net, optimizer)
    last_good = _snapshot(net)
    best_value = math.inf
    best_state = None
    since_best = 0
    try:
        for epoch in range(1, epochs + 1):
            net.train()
            if single_row_bn:
                for m in net.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            perm = torch.randperm(n, generator=generator, device=X.device) if n > 1 else None
            total = 0.0
            finite = True
            for start, stop in bounds:
                loss = batch_loss(X[perm[start:stop]] if perm is not None else X)
                # One read of the loss serves the finiteness check and the epoch total.
                value = loss.item()
                if not math.isfinite(value):
                    finite = False
                    break
                stepper.zero_grad()
                loss.backward()
                stepper.step()
                total += value * (stop - start)
            if finite:
                # Batch-norm running statistics can overflow while the weights stay finite.
                # (Without no_grad, isfinite on a parameter records a graph for autograd.)
                with torch.no_grad():
                    finite = stepper.all_finite() and all(
                        bool(torch.isfinite(b).all())
                        for b in net.buffers()
                        if b.is_floating_point()
                    )
            if not finite:
                net.load_state_dict(last_good)
                result.status = DIVERGED
                result.message = f"loss became non-finite in epoch {epoch}; kept epoch {epoch - 1}"
                logger.warning("training diverged: %s", result.message)
                break
            result.epochs = epoch
            result.loss_curve.append(total / n)
            last_good = _snapshot(net)
            if holdout_loss is not None:
                net.eval()
                value = float(holdout_loss())
                result.holdout_curve.append(value)
                # The first epoch always counts; later ones must improve by a
                # relative margin so float noise does not reset the patience.
                if best_state is None or value < best_value - 1e-7 * abs(best_value):
                    best_value, best_state, since_best = value, last_good, 0
                    result.best_epoch = epoch
                else:
                    since_best += 1
            net.eval()
            if on_epoch_end is not None and on_epoch_end(epoch):
                result.status = STOPPED
                break
            if holdout_loss is not None and since_best >= patience:
                result.status = EARLY_STOPPED
                break
    finally:
        stepper.release()
    if best_state is not None and result.status != DIVERGED:
        net.load_state_dict(best_state)
    net.eval()
    return result
