"""The variational autoencoder (beta-VAE) with a Gaussian posterior."""

from __future__ import annotations

import torch
from torch import nn

from anomtune.models.autoencoder import MirroredAutoencoder
from anomtune.models.blocks import mlp

__all__ = ["VariationalAutoencoder"]


class VariationalAutoencoder(MirroredAutoencoder):
    """Encoder to the posterior mean and log-variance, decoder from a latent sample.

    Training samples ``z = mu + sigma * eps`` with noise drawn from the
    generator passed to :meth:`forward`; scoring (:meth:`reconstruct`)
    decodes the posterior mean, so a score never changes between calls.
    """

    def __init__(self, *shape, beta: float = 1.0, **options):
        """``shape`` and ``options`` as :class:`MirroredAutoencoder`'s; ``beta``
        weighs the KL term of the loss."""
        super().__init__(*shape, **options)
        self.beta = float(beta)

    def build_encoder(self, n_features: int, hidden: list[int], latent_dim: int, layers: dict):
        width = hidden[-1] if hidden else n_features
        self.body = mlp([n_features, *hidden], **layers)
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        # Clamped so that exp() cannot overflow on a wild input row.
        return self.mu(h), self.logvar(h).clamp(-30.0, 20.0)

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
