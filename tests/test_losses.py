"""Training losses and regularisers against independent computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian
from torch.distributions import Bernoulli, Normal, kl_divergence

from anomtune import losses
from anomtune.models.blocks import mlp


def reference_contractive(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared Frobenius norm of each row's own Jacobian."""
    norms = [
        (jacobian(lambda row: encoder(row.unsqueeze(0)).squeeze(0), x[i], create_graph=True) ** 2)
        .sum()
        .reshape(1)
        for i in range(x.shape[0])
    ]
    return torch.cat(norms).mean()


def small_encoder(activation: str, *, batch_norm: bool = False, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mlp(
            [5, 7, 6, 3], activation=activation, batch_norm=batch_norm, last_activation=False
        ).double()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "sigmoid"])
def test_contractive_penalty_matches_per_row_jacobian(activation):
    encoder = small_encoder(activation)
    x = randn(6, 5, seed=1)
    got = losses.contractive_penalty(encoder, x)
    want = reference_contractive(encoder, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert got > 0


def test_contractive_penalty_gradient_matches_reference():
    encoder = small_encoder("tanh")
    x = randn(4, 5, seed=2)
    params = list(encoder.parameters())
    options = {"allow_unused": True, "materialize_grads": True}
    got = torch.autograd.grad(losses.contractive_penalty(encoder, x), params, **options)
    want = torch.autograd.grad(reference_contractive(encoder, x), params, **options)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
    # The last bias does not change the Jacobian; every weight matrix does.
    assert all(g.abs().max() > 0 for g in got[0::2])


def test_contractive_penalty_with_batch_norm_in_eval_mode():
    # In eval mode batch norm is a fixed per-feature affine map: rows stay independent.
    encoder = small_encoder("relu", batch_norm=True)
    x = randn(8, 5, seed=3)
    encoder.train()
    encoder(x)
    encoder.eval()
    torch.testing.assert_close(
        losses.contractive_penalty(encoder, x), reference_contractive(encoder, x)
    )


def test_contractive_penalty_of_a_linear_map_is_its_frobenius_norm():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        linear = torch.nn.Linear(4, 2).double()
    x = randn(3, 4, seed=10)
    want = (linear.weight**2).sum()
    torch.testing.assert_close(losses.contractive_penalty(linear, x), want)


def test_jacobian_penalty_uses_the_given_forward_pass():
    encoder = small_encoder("tanh")
    x = randn(5, 5, seed=11).requires_grad_(True)
    code = encoder(x)
    torch.testing.assert_close(
        losses.jacobian_penalty(code, x), reference_contractive(encoder, x.detach())
    )
    # Scaling the code scales the Jacobian: the penalty grows with its square.
    torch.testing.assert_close(
        losses.jacobian_penalty(3 * code, x), 9 * losses.jacobian_penalty(code, x)
    )


def test_gaussian_kl_matches_torch_distributions():
    mu = randn(7, 3, seed=4)
    logvar = randn(7, 3, seed=12)
    want = kl_divergence(
        Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ).sum(dim=1)
    torch.testing.assert_close(losses.gaussian_kl_per_row(mu, logvar), want)
    zero = losses.gaussian_kl_per_row(torch.zeros(2, 3), torch.zeros(2, 3))
    torch.testing.assert_close(zero, torch.zeros(2))


def test_kl_sparsity_matches_bernoulli_kl():
    code = randn(20, 4, seed=5)
    rate = torch.sigmoid(code).mean(dim=0)
    want = kl_divergence(Bernoulli(probs=torch.full_like(rate, 0.05)), Bernoulli(probs=rate)).sum()
    torch.testing.assert_close(losses.kl_sparsity(code, 0.05), want)


def test_kl_sparsity_is_zero_at_the_target_rate():
    target = 0.2
    code = torch.full((10, 3), float(torch.logit(torch.tensor(target, dtype=torch.float64))))
    assert float(losses.kl_sparsity(code, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.kl_sparsity(code + 1.0, target)) > 0.01


def test_l1_activity_is_the_mean_absolute_code():
    code = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert float(losses.l1_activity(code)) == pytest.approx(1.5)


def test_reconstruction_per_row():
    recon = torch.tensor([[0.2, 0.9], [0.5, 0.5]], dtype=torch.float64)
    target = torch.tensor([[0.0, 1.0], [1.5, -0.5]], dtype=torch.float64)
    torch.testing.assert_close(
        losses.reconstruction_per_row(recon, target, "mse"),
        torch.tensor([0.04 + 0.01, 1.0 + 1.0], dtype=torch.float64),
    )
    # Targets outside [0, 1] (rows outside the training range) are clipped.
    want = F.binary_cross_entropy(recon, target.clamp(0, 1), reduction="none").sum(dim=1)
    torch.testing.assert_close(losses.reconstruction_per_row(recon, target, "bce"), want)
    # A saturated output gives a large but finite loss.
    saturated = losses.reconstruction_per_row(torch.tensor([[0.0]]), torch.tensor([[1.0]]), "bce")
    assert torch.isfinite(saturated).all()
    assert float(saturated) > 10


def test_mask_noise_zeroes_the_given_share_of_entries():
    x = torch.rand(200, 500, generator=torch.Generator().manual_seed(13)) + 1.0
    noisy = losses.corrupt(x, "mask", 0.3, torch.Generator().manual_seed(6))
    zeroed = noisy == 0
    assert float(zeroed.float().mean()) == pytest.approx(0.3, abs=0.01)
    torch.testing.assert_close(noisy[~zeroed], x[~zeroed])


def test_gaussian_noise_has_the_given_spread():
    x = torch.zeros(200, 500)
    noisy = losses.corrupt(x, "gaussian", 0.25, torch.Generator().manual_seed(7))
    assert float(noisy.std()) == pytest.approx(0.25, rel=0.02)
    assert abs(float(noisy.mean())) < 0.005


@pytest.mark.parametrize("kind", ["mask", "gaussian"])
def test_noise_comes_from_the_generator_only(kind):
    x = torch.ones(4, 6)
    before = torch.random.get_rng_state()
    a = losses.corrupt(x, kind, 0.5, torch.Generator().manual_seed(8))
    b = losses.corrupt(x, kind, 0.5, torch.Generator().manual_seed(8))
    c = losses.corrupt(x, kind, 0.5, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), before)
