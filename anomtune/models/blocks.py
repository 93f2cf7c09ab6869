"""Small torch building blocks shared by the models and the exported graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomtune.losses import gaussian_kl_per_row

__all__ = ["ACTIVATIONS", "Affine", "Dropout", "EncodeInputs", "ReconstructionScorer", "mlp"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


class Dropout(nn.Dropout):
    """Dropout whose mask comes from uniform draws: ``rand < 1 - p``.

    Same distribution as :class:`torch.nn.Dropout`, whose CPU kernel draws the
    mask with ``bernoulli_``; drawing uniforms and comparing costs about half
    as much, which counts when a training step of a small network is a few
    hundred microseconds. The draws come from torch's global generator, which
    the detector seeds. An identity in eval mode.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_noise(x, self.p)


def dropout_noise(x: torch.Tensor, p: float) -> torch.Tensor:
    """The scaled keep-mask of :class:`Dropout`: 0 or ``1 / (1 - p)`` per element."""
    keep = 1.0 - p
    if keep <= 0:
        return torch.zeros_like(x)
    return torch.rand_like(x).lt_(keep).div_(keep)


def mlp(
    sizes: Sequence[int],
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    last_activation: bool = True,
) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, each followed by
    [batch norm], activation and [dropout]; the last layer's extras are
    optional so that a head can stay linear."""
    layers: list[nn.Module] = []
    n = len(sizes) - 1
    for i in range(n):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < n - 1 or last_activation:
            if batch_norm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


class Affine(nn.Module):
    """``(x - center) / scale`` with fixed buffers: the fitted scaler."""

    def __init__(self, center: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("center", center.to(torch.float32))
        self.register_buffer("scale", scale.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale


class EncodeInputs(nn.Module):
    """Median imputation and one-hot encoding, in the table's column order.

    ``layout`` has one entry per table column: 0 for a numeric column, the
    vocabulary size for a categorical one. Inputs are the numeric block
    (float32, NaN for missing) and the categorical codes (int64, -1 for
    missing or unknown, which encodes as all zeros).

    The node count does not grow with the number of columns: the numeric
    block is imputed with one ``where`` against the median vector, the
    one-hot columns of all categorical columns come from one gather and one
    comparison, and the encoded matrix is put in schema order with at most
    one fixed ``index_select``. :meth:`columns` sums per-encoded-column
    errors back to table columns the same way.
    """

    def __init__(self, medians: torch.Tensor, layout: Sequence[int]):
        super().__init__()
        layout = [int(v) for v in layout]
        self.register_buffer("medians", medians.to(torch.float32))
        n_num = sum(1 for v in layout if v == 0)
        # Encoded columns as they are built: the numeric block, then each
        # categorical column's one-hot block. ``source``/``value``: which code
        # column and which code each one-hot column compares with.
        source: list[int] = []
        value: list[int] = []
        built_at: list[int] = []  # for each encoded column in schema order, its built position
        column_at: list[int] = []  # each table column's place in [numeric..., categorical...]
        seen_num = seen_cat = 0
        for size in layout:
            if size > 0:
                start = n_num + len(source)
                source.extend([seen_cat] * size)
                value.extend(range(size))
                built_at.extend(range(start, start + size))
                column_at.append(n_num + seen_cat)
                seen_cat += 1
            else:
                built_at.append(seen_num)
                column_at.append(seen_num)
                seen_num += 1
        schema_at = [0] * len(built_at)  # the inverse of built_at
        for encoded, built in enumerate(built_at):
            schema_at[built] = encoded
        self.n_num = n_num
        self.has_codes = bool(seen_cat)
        if self.has_codes:
            membership = torch.zeros(len(source), seen_cat)
            membership[torch.arange(len(source)), torch.as_tensor(source)] = 1.0
            self.register_buffer("onehot_source", torch.as_tensor(source, dtype=torch.int64))
            self.register_buffer("onehot_value", torch.as_tensor(value, dtype=torch.int64))
            self.register_buffer("membership", membership)
            for name, order in (
                ("encode_order", built_at),
                ("decode_order", schema_at),
                ("column_order", column_at),
            ):
                if order == list(range(len(order))):
                    setattr(self, name, None)  # the identity: nothing to reorder
                else:
                    self.register_buffer(name, torch.as_tensor(order, dtype=torch.int64))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.where(torch.isnan(numeric), self.medians, numeric)
        if not self.has_codes:
            return x
        picked = codes.index_select(1, self.onehot_source)
        onehot = (picked == self.onehot_value).to(x.dtype)
        x = torch.cat([x, onehot], dim=1)
        if self.encode_order is not None:
            x = x.index_select(1, self.encode_order)
        return x

    def columns(self, errors: torch.Tensor) -> torch.Tensor:
        """Per-encoded-column values summed to one value per table column."""
        if not self.has_codes:
            return errors
        if self.decode_order is not None:
            errors = errors.index_select(1, self.decode_order)
        per_column = torch.cat(
            [errors[:, : self.n_num], errors[:, self.n_num :] @ self.membership], dim=1
        )
        if self.column_order is not None:
            per_column = per_column.index_select(1, self.column_order)
        return per_column


class ReconstructionScorer(nn.Module):
    """Scaled input -> (score, per-feature squared error), deterministically.

    The score is the mean of the per-feature squared errors, higher is more
    anomalous. For a VAE the reconstruction is decoded from the posterior
    mean; with ``score="elbo"`` the score is the negative ELBO at the mean
    (squared error summed over features plus ``beta`` times the KL term),
    still with the same per-feature errors.
    """

    def __init__(self, scaler: nn.Module, net: nn.Module, *, score: str = "reconstruction"):
        super().__init__()
        self.scaler = scaler
        self.net = net
        self.score = score

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_scaled(self.scaler(x))

    def forward_scaled(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same outputs for rows that are already scaled."""
        score, errors, _ = self.parts_scaled(z)
        return score, errors

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(score, errors, residual)`` of raw rows; the residual is the
        reconstruction minus the scaled input (what the ensemble's residual
        score measures distances on, see :mod:`anomtune.ensemble`)."""
        return self.parts_scaled(self.scaler(x))

    def parts_scaled(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recon, extras = self.net.reconstruct(z)
        residual = recon - z
        errors = residual**2
        if self.score == "elbo":
            mu, logvar = extras
            score = errors.sum(dim=1) + self.net.beta * gaussian_kl_per_row(mu, logvar)
        else:
            score = errors.mean(dim=1)
        return score, errors, residual
