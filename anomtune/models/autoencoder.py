"""The MLP autoencoder behind the ``ae``, ``sparse``, ``denoising`` and
``contractive`` variants (they differ in training, not in shape)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomtune.models.blocks import mlp

__all__ = ["MLPAutoencoder", "MirroredAutoencoder"]


class MirroredAutoencoder(nn.Module):
    """An encoder ``n_features -> hidden... -> latent`` (built by the subclass's
    :meth:`build_encoder`) and the decoder mirroring it.

    Hidden layers use ``activation`` with optional batch norm and dropout
    (``layers``: :func:`~anomtune.models.blocks.mlp`'s ``activation``,
    ``dropout`` and ``batch_norm``). ``output_activation="sigmoid"`` bounds
    the reconstruction to [0, 1] for min-max scaled inputs. The encoder is
    built first (the order in which layers draw their initial weights).
    """

    def __init__(
        self,
        n_features: int,
        hidden_sizes: Sequence[int],
        latent_dim: int,
        *,
        output_activation: str = "identity",
        **layers,
    ):
        super().__init__()
        hidden = list(hidden_sizes)
        self.build_encoder(n_features, hidden, latent_dim, layers)
        self.decoder = mlp(
            [latent_dim, *reversed(hidden), n_features], **layers, last_activation=False
        )
        self.output_activation = output_activation

    def build_encoder(self, n_features: int, hidden: list[int], latent_dim: int, layers: dict):
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out


class MLPAutoencoder(MirroredAutoencoder):
    """The plain autoencoder: an MLP encoder with a linear bottleneck."""

    def build_encoder(self, n_features: int, hidden: list[int], latent_dim: int, layers: dict):
        self.encoder = mlp([n_features, *hidden, latent_dim], **layers, last_activation=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        recon, _ = self.forward(x)
        return recon, ()
