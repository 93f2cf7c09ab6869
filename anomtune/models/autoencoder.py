"""The MLP autoencoder behind the ``ae``, ``sparse``, ``denoising`` and
``contractive`` variants (they differ in training, not in shape)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomtune.models.blocks import mlp

__all__ = ["MLPAutoencoder"]


class MLPAutoencoder(nn.Module):
    """Encoder ``n_features -> hidden... -> latent`` and a mirrored decoder.

    The bottleneck is linear; hidden layers use ``activation`` with optional
    batch norm and dropout. ``output_activation="sigmoid"`` bounds the
    reconstruction to [0, 1] for min-max scaled inputs.
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
    ):
        super().__init__()
        hidden = list(hidden_sizes)
        self.encoder = mlp(
            [n_features, *hidden, latent_dim],
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            last_activation=False,
        )
        self.decoder = mlp(
            [latent_dim, *reversed(hidden), n_features],
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            last_activation=False,
        )
        self.output_activation = output_activation

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        recon, _ = self.forward(x)
        return recon, ()
