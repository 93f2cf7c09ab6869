"""Training losses: reconstruction terms and each variant's regulariser.

Every function returns a scalar averaged over the rows of the batch, except
the ``*_per_row`` helpers used for scoring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "contractive_penalty",
    "corrupt",
    "gaussian_kl_per_row",
    "jacobian_penalty",
    "kl_sparsity",
    "l1_activity",
    "reconstruction_per_row",
]

_EPS = 1e-6


def reconstruction_per_row(recon: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row reconstruction error summed over features.

    ``"mse"`` is the squared error; ``"bce"`` is binary cross-entropy for
    sigmoid outputs and min-max scaled targets (clipped to [0, 1], since rows
    outside the training range can fall outside it).
    """
    if kind == "bce":
        return F.binary_cross_entropy(
            recon.clamp(_EPS, 1 - _EPS), target.clamp(0.0, 1.0), reduction="none"
        ).sum(dim=1)
    return ((recon - target) ** 2).sum(dim=1)


def l1_activity(code: torch.Tensor) -> torch.Tensor:
    """Mean absolute activation of the code: the L1 activity penalty."""
    return code.abs().mean()


def kl_sparsity(code: torch.Tensor, target: float) -> torch.Tensor:
    """KL divergence between a target firing rate and each code unit's mean rate.

    Rates are the batch means of ``sigmoid(code)``, so the penalty applies to a
    linear bottleneck as well; summed over units.
    """
    rate = torch.sigmoid(code).mean(dim=0).clamp(_EPS, 1 - _EPS)
    rho = float(target)
    return torch.sum(rho * torch.log(rho / rate) + (1 - rho) * torch.log((1 - rho) / (1 - rate)))


def contractive_penalty(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared Frobenius norm of the encoder's Jacobian at ``x``.

    Exact when rows do not interact in ``encoder`` (no batch norm in training
    mode); see :func:`jacobian_penalty`.
    """
    x = x.detach().requires_grad_(True)
    return jacobian_penalty(encoder(x), x)


def jacobian_penalty(code: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared Frobenius norm of ``d code / d x``.

    ``code`` must have been computed from ``x`` (which requires grad). One
    backward pass per code unit: because rows do not interact, the gradient of
    the batch sum of code unit ``j`` with respect to row ``b`` is row ``b``'s
    Jacobian row ``j``. ``create_graph`` keeps the penalty differentiable.
    """
    total = x.new_zeros(x.shape[0])
    for j in range(code.shape[1]):
        (grad,) = torch.autograd.grad(code[:, j].sum(), x, create_graph=True)
        total = total + (grad**2).sum(dim=1)
    return total.mean()


def gaussian_kl_per_row(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent units, per row."""
    return -0.5 * torch.sum(1 + logvar - mu**2 - torch.exp(logvar), dim=1)


def corrupt(
    x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Noisy copy of ``x`` for the denoising autoencoder.

    ``"gaussian"`` adds noise with standard deviation ``level`` (inputs are
    scaled, so this is relative to each feature's spread); ``"mask"`` zeroes
    each entry with probability ``level``.
    """
    if kind == "mask":
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= level
        return x * keep.to(x.dtype)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + level * noise
