"""The training step of an MLP autoencoder written out by hand, and the switch to autograd.

This is the one module where anomtune calls torch's internal operators: the
aten kernels behind the modules and their backward kernels
(``torch.ops.aten.native_batch_norm``, ``native_batch_norm_backward``,
``threshold_backward`` and the like), some by position, whose signatures
torch does not promise to keep. It stays because it pays: with autograd
instead, an epoch of the default detector takes 1.3x to 1.7x as long
(geometric means 1.47x to 1.54x over four ADBench data sets with Adam and
AdamW, one thread; ``benchmarks/training.py --part paths``, tables in
benchmarks/README.md).

``ANOMTUNE_TRAINING=autograd`` trains every variant with autograd instead
(``handwritten``, also what an unset or empty variable means, uses this step
where it covers the network): the way out should a torch release change one
of these kernels. ``make test`` runs the detector tests on both paths.

With the small networks of tabular anomaly detection, a training step is
dozens of tiny tensor operations, and autograd's bookkeeping (recording the
graph, allocating and accumulating gradients) costs as much as the arithmetic.
:class:`ManualBackprop` runs the forward pass with the same torch kernels the
modules call (``addmm``, ``native_batch_norm``, the activation, the dropout
noise) and the backward pass with their backward kernels, writing each
gradient straight into the parameter's ``.grad``. Random draws (dropout
noise) are taken in the same order and from the same generator as the modules
take them, so a step gives the values autograd gives, up to float rounding.

It covers the networks and losses that make up most of a search: an
:class:`~anomtune.models.autoencoder.MLPAutoencoder` with an identity output
and the squared-error loss, with or without batch norm and dropout, any of
the six activations, corrupted inputs (``denoising``) and an L1 activity
penalty on the code (``sparse``). Anything else (KL sparsity, the
contractive penalty, the VAE, a sigmoid output with cross-entropy) trains
with autograd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from anomtune.errors import ConfigError
from anomtune.models.autoencoder import MLPAutoencoder
from anomtune.models.blocks import Dropout, dropout_noise

__all__ = ["TRAINING_ENV", "TRAINING_PATHS", "ManualBackprop", "for_training", "training_path"]

TRAINING_ENV = "ANOMTUNE_TRAINING"
TRAINING_PATHS = ("handwritten", "autograd")

_aten = torch.ops.aten
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid)


@dataclass
class _Saved:
    """What one layer's backward pass needs from its forward pass."""

    inputs: torch.Tensor
    norm: tuple | None = None  # (pre-norm values, batch mean, inverse std)
    pre: torch.Tensor | None = None  # the activation's input
    post: torch.Tensor | None = None  # the activation's output
    noise: torch.Tensor | None = None  # the scaled dropout mask


@dataclass
class _Layer:
    linear: nn.Linear
    norm: nn.BatchNorm1d | None
    activation: nn.Module | None
    dropout: Dropout | None


def _activate(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.ReLU):
        return torch.relu(h)
    if isinstance(module, nn.LeakyReLU):
        return F.leaky_relu(h, module.negative_slope)
    if isinstance(module, nn.ELU):
        return F.elu(h, module.alpha)
    if isinstance(module, nn.GELU):
        return F.gelu(h, approximate=module.approximate)
    if isinstance(module, nn.Tanh):
        return torch.tanh(h)
    return torch.sigmoid(h)


def _activation_backward(
    module: nn.Module, grad: torch.Tensor, h: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """Gradient through the activation; ``h`` is its input, ``out`` its output."""
    if isinstance(module, nn.ReLU):
        return _aten.threshold_backward(grad, out, 0)
    if isinstance(module, nn.LeakyReLU):
        return _aten.leaky_relu_backward(grad, h, module.negative_slope, False)
    if isinstance(module, nn.ELU):
        return _aten.elu_backward(grad, module.alpha, 1, 1, False, h)
    if isinstance(module, nn.GELU):
        return _aten.gelu_backward(grad, h, approximate=module.approximate)
    if isinstance(module, nn.Tanh):
        return _aten.tanh_backward(grad, out)
    return _aten.sigmoid_backward(grad, out)


def _layers(sequential: nn.Sequential) -> list[_Layer] | None:
    """``Linear [BatchNorm1d] [activation] [Dropout]`` groups, or None."""
    modules = list(sequential)
    layers: list[_Layer] = []
    i = 0
    while i < len(modules):
        linear = modules[i]
        if type(linear) is not nn.Linear or linear.bias is None:
            return None
        i += 1
        norm = activation = dropout = None
        if i < len(modules) and type(modules[i]) is nn.BatchNorm1d:
            norm = modules[i]
            if not (norm.affine and norm.track_running_stats):
                return None
            i += 1
        if i < len(modules) and type(modules[i]) in _ACTIVATIONS:
            activation = modules[i]
            i += 1
        if i < len(modules) and type(modules[i]) is Dropout:
            dropout = modules[i]
            i += 1
        if norm is not None and activation is None:
            return None
        layers.append(_Layer(linear, norm, activation, dropout))
    return layers


def training_path() -> str:
    """The path ``ANOMTUNE_TRAINING`` selects: ``handwritten`` (the default) or ``autograd``.

    Read at each fit, so a process can change it between fits.
    """
    value = os.environ.get(TRAINING_ENV, "").strip().lower() or TRAINING_PATHS[0]
    if value not in TRAINING_PATHS:
        raise ConfigError(
            f"{TRAINING_ENV} must be one of {', '.join(TRAINING_PATHS)} (or unset), "
            f"not {os.environ[TRAINING_ENV]!r}"
        )
    return value


def for_training(
    net: nn.Module, *, output_activation: str, l1_weight: float = 0.0
) -> ManualBackprop | None:
    """The hand-written step that trains ``net``, or None for autograd.

    None when ``ANOMTUNE_TRAINING=autograd`` or when the step does not cover
    the network or loss.
    """
    if training_path() == "autograd":
        return None
    return ManualBackprop.for_network(net, output_activation=output_activation, l1_weight=l1_weight)


class ManualBackprop:
    """Loss and gradients of a batch for one MLP autoencoder, without autograd.

    Build it with :meth:`for_network`, which returns None for a network or
    loss it does not cover. ``loss(inputs, targets)`` runs the forward pass in
    training mode (batch-norm statistics update, dropout draws) and returns a
    handle whose ``item()`` is the loss and whose ``backward()`` writes the
    gradients, like a loss tensor's.
    """

    def __init__(self, layers: list[_Layer], n_encoder: int, l1_weight: float):
        self.layers = layers
        self.n_encoder = n_encoder
        self.l1_weight = float(l1_weight)

    @classmethod
    def for_network(
        cls, net: nn.Module, *, output_activation: str, l1_weight: float = 0.0
    ) -> ManualBackprop | None:
        if type(net) is not MLPAutoencoder or output_activation != "identity":
            return None
        encoder, decoder = _layers(net.encoder), _layers(net.decoder)
        if not encoder or not decoder:
            return None
        return cls(encoder + decoder, len(encoder), l1_weight)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> _PendingLoss:
        with torch.no_grad():
            saved = []
            a = inputs
            code = None
            for index, layer in enumerate(self.layers):
                h = torch.addmm(layer.linear.bias, a, layer.linear.weight.t())
                record = _Saved(a)
                if layer.norm is not None:
                    h = self._batch_norm(layer.norm, h, record)
                if layer.activation is not None:
                    record.pre = h
                    h = _activate(layer.activation, h)
                    record.post = h
                if layer.dropout is not None and layer.dropout.training and layer.dropout.p > 0:
                    record.noise = dropout_noise(h, layer.dropout.p)
                    h = h * record.noise
                saved.append(record)
                a = h
                if index == self.n_encoder - 1:
                    code = h
            diff = a - targets
            loss = (diff * diff).sum(dim=1).mean() / diff.shape[1]
            if self.l1_weight:
                loss = loss + self.l1_weight * code.abs().mean()
        return _PendingLoss(self, loss, diff, code, saved)

    @staticmethod
    def _batch_norm(norm: nn.BatchNorm1d, h: torch.Tensor, record: _Saved) -> torch.Tensor:
        # What BatchNorm1d.forward does: batch statistics in training mode
        # (the training loop puts it in eval mode for a single row).
        factor = 0.0
        if norm.training:
            norm.num_batches_tracked.add_(1)
            factor = (
                1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
            )
        out, mean, invstd = _aten.native_batch_norm(
            h,
            norm.weight,
            norm.bias,
            norm.running_mean,
            norm.running_var,
            norm.training,
            factor,
            norm.eps,
        )
        record.norm = (h, mean, invstd)
        return out

    # Kept because it earns its place: autograd in its stead makes an epoch of the
    # default detector 1.3x to 1.7x as long (module docstring, benchmarks/README.md).
    def backward(self, diff: torch.Tensor, code: torch.Tensor | None, saved: list[_Saved]) -> None:
        with torch.no_grad():
            grad = diff.mul(2.0 / diff.numel())
            for index in range(len(self.layers) - 1, -1, -1):
                layer = self.layers[index]
                record = saved[index]
                if record.noise is not None:
                    grad = grad * record.noise
                if layer.activation is not None:
                    grad = _activation_backward(layer.activation, grad, record.pre, record.post)
                if layer.norm is not None:
                    norm = layer.norm
                    h, mean, invstd = record.norm
                    grad, g_weight, g_bias = _aten.native_batch_norm_backward(
                        grad,
                        h,
                        norm.weight,
                        norm.running_mean,
                        norm.running_var,
                        mean,
                        invstd,
                        norm.training,
                        norm.eps,
                        [True, True, True],
                    )
                    _store(norm.weight, g_weight)
                    _store(norm.bias, g_bias)
                linear = layer.linear
                _mm_into(linear.weight, grad.t(), record.inputs)
                _sum_into(linear.bias, grad)
                if index > 0:
                    grad = torch.mm(grad, linear.weight)
                    if index == self.n_encoder and self.l1_weight:
                        # The code is the encoder's last linear output: d|c|/dc = sign(c).
                        grad.add_(torch.sign(code), alpha=self.l1_weight / code.numel())


class _PendingLoss:
    """A batch's loss value, with the backward pass still to run."""

    def __init__(self, owner: ManualBackprop, loss, diff, code, saved):
        self._owner, self._loss = owner, loss
        self._diff, self._code, self._saved = diff, code, saved

    def item(self) -> float:
        return self._loss.item()

    def backward(self) -> None:
        self._owner.backward(self._diff, self._code, self._saved)
        self._diff = self._code = self._saved = None


def _store(param: torch.Tensor, value: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = value
    else:
        param.grad.copy_(value)


def _mm_into(param: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    if param.grad is None or not param.grad.is_contiguous():
        _store(param, torch.mm(a, b))
    else:
        torch.mm(a, b, out=param.grad)


def _sum_into(param: torch.Tensor, grad: torch.Tensor) -> None:
    if param.grad is None or not param.grad.is_contiguous():
        _store(param, grad.sum(dim=0))
    else:
        torch.sum(grad, dim=0, out=param.grad)
