"""The epoch loop: mini-batches sliced from tensors, one callback per epoch.

Small tabular data fits in memory, so each epoch draws one permutation and
slices batches from a pre-built tensor; no DataLoader, no per-row Python.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from anomtune.errors import ConfigError

__all__ = ["OPTIMIZERS", "TrainResult", "batch_bounds", "make_optimizer", "run_epochs"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")

COMPLETED = "completed"
EARLY_STOPPED = "early_stopped"
STOPPED = "stopped_by_callback"
DIVERGED = "diverged"


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

    ``batch_loss(xb)`` returns the scalar loss of a batch. ``holdout_loss()``,
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
    last_good = copy.deepcopy(net.state_dict())
    best_value = math.inf
    best_state = None
    since_best = 0
    for epoch in range(1, epochs + 1):
        net.train()
        if single_row_bn:
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        perm = torch.randperm(n, generator=generator, device=X.device) if n > 1 else None
        total = 0.0
        finite = True
        for start, stop in batch_bounds(n, batch_size):
            xb = X[perm[start:stop]] if perm is not None else X
            loss = batch_loss(xb)
            if not torch.isfinite(loss):
                finite = False
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * (stop - start)
        if finite:
            finite = all(torch.isfinite(p).all() for p in net.parameters())
        if not finite:
            net.load_state_dict(last_good)
            result.status = DIVERGED
            result.message = f"loss became non-finite in epoch {epoch}; kept epoch {epoch - 1}"
            logger.warning("training diverged: %s", result.message)
            break
        result.epochs = epoch
        result.loss_curve.append(total / n)
        last_good = copy.deepcopy(net.state_dict())
        if holdout_loss is not None:
            net.eval()
            value = float(holdout_loss())
            result.holdout_curve.append(value)
            if value < best_value - 1e-7 * abs(best_value):
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
    if best_state is not None and result.status != DIVERGED:
        net.load_state_dict(best_state)
    net.eval()
    return result
