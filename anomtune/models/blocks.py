"""Small torch building blocks shared by the models and the exported graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomtune.losses import gaussian_kl_per_row

__all__ = ["ACTIVATIONS", "Affine", "Dropout", "EncodeColumns", "ReconstructionScorer", "mlp"]

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
    activation: str,
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


class EncodeColumns(nn.Module):
    """Median imputation and one-hot encoding, in the table's column order.

    ``layout`` has one entry per table column: 0 for a numeric column, the
    vocabulary size for a categorical one. Inputs are the numeric block
    (float, NaN for missing) and the categorical codes (int64, -1 for
    missing or unknown, which encodes as all zeros).
    """

    def __init__(self, medians: torch.Tensor, layout: Sequence[int]):
        super().__init__()
        self.register_buffer("medians", medians.to(torch.float32))
        self.layout = [int(v) for v in layout]
        for j, size in enumerate(v for v in self.layout if v > 0):
            self.register_buffer(f"vocab{j}", torch.arange(size, dtype=torch.int64))

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        numeric = torch.where(torch.isnan(numeric), self.medians, numeric)
        blocks = []
        n_num = n_cat = 0
        for size in self.layout:
            if size == 0:
                blocks.append(numeric[:, n_num : n_num + 1])
                n_num += 1
            else:
                vocab = getattr(self, f"vocab{n_cat}")
                blocks.append((codes[:, n_cat : n_cat + 1] == vocab).to(numeric.dtype))
                n_cat += 1
        return torch.cat(blocks, dim=1)


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
        recon, extras = self.net.reconstruct(z)
        errors = (recon - z) ** 2
        if self.score == "elbo":
            mu, logvar = extras
            score = errors.sum(dim=1) + self.net.beta * gaussian_kl_per_row(mu, logvar)
        else:
            score = errors.mean(dim=1)
        return score, errors
