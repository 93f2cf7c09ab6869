"""The variational autoencoder (beta-VAE) with a Gaussian posterior."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomtune.models.blocks import mlp

__all__ = ["VariationalAutoencoder"]


class VariationalAutoencoder(nn.Module):
    """Encoder to the posterior mean and log-variance, decoder from a latent sample.

    Training samples ``z = mu + sigma * eps`` with noise drawn from the
    generator passed to :meth:`forward`; scoring (:meth:`reconstruct`)
    decodes the posterior mean, so a score never changes between calls.
    """

    def __init__(
        self,
        n_features: int,
        hidden_sizes: Sequence[int],
        latent_dim: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_activation: str = "identity",
        beta: float = 1.0,
    ):
        super().__init__()
        hidden = list(hidden_sizes)
        width = hidden[-1] if hidden else n_features
        self.body = mlp(
            [n_features, *hidden], activation=activation, dropout=dropout, batch_norm=batch_norm
        )
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)
        self.decoder = mlp(
            [latent_dim, *reversed(hidden), n_features],
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            last_activation=False,
        )
        self.output_activation = output_activation
        self.beta = float(beta)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        # Clamped so that exp() cannot overflow on a wild input row.
        return self.mu(h), self.logvar(h).clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        mu, logvar = self.encode(x)
        return self.decode(mu), (mu, logvar)
