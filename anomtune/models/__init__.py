"""Torch modules: the MLP autoencoder, the VAE, and the blocks around them."""

from anomtune.models.autoencoder import MLPAutoencoder
from anomtune.models.backprop import ManualBackprop
from anomtune.models.blocks import ACTIVATIONS, Affine, EncodeInputs, ReconstructionScorer
from anomtune.models.vae import VariationalAutoencoder

__all__ = [
    "ACTIVATIONS",
    "Affine",
    "EncodeInputs",
    "MLPAutoencoder",
    "ManualBackprop",
    "ReconstructionScorer",
    "VariationalAutoencoder",
]
