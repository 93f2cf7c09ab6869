"""The epoch loop's flat-buffer optimizer step against torch's own optimizers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomtune.training import make_optimizer, run_epochs


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3), nn.Tanh(), nn.Linear(3, 6))


def _reference(net: nn.Module, X: torch.Tensor, optimizer, epochs: int, batch_size: int, seed: int):
    """The textbook loop: same batches, parameter-by-parameter optimizer steps."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], batch_size):
            xb = X[perm[start : start + batch_size]]
            optimizer.zero_grad()
            ((net(xb) - xb) ** 2).mean().backward()
            optimizer.step()


@pytest.mark.parametrize(
    ("name", "weight_decay", "momentum"),
    [
        ("adam", 0.0, 0.0),
        ("adam", 1e-3, 0.0),
        ("adamw", 1e-2, 0.0),
        ("rmsprop", 0.0, 0.5),
        ("sgd", 1e-4, 0.9),
    ],
)
def test_flat_steps_match_the_optimizer(name, weight_decay, momentum):
    X = torch.randn(70, 6, generator=torch.Generator().manual_seed(1))
    ours, ref = _net(), _net()
    opt = make_optimizer(
        name, ours.parameters(), lr=1e-2, weight_decay=weight_decay, momentum=momentum
    )
    result = run_epochs(
        ours,
        X,
        lambda xb: ((ours(xb) - xb) ** 2).mean(),
        optimizer=opt,
        epochs=5,
        batch_size=16,
        generator=torch.Generator().manual_seed(2),
    )
    assert result.epochs == 5
    ref_opt = make_optimizer(
        name, ref.parameters(), lr=1e-2, weight_decay=weight_decay, momentum=momentum
    )
    _reference(ref, X, ref_opt, epochs=5, batch_size=16, seed=2)
    for (pname, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=pname)
        # Each parameter has its own storage again, and the optimizer its state.
        assert a.untyped_storage().nbytes() == a.numel() * a.element_size()
    if name in ("adam", "adamw"):
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            assert float(opt.state[a]["step"]) == float(ref_opt.state[b]["step"]) == 25
            torch.testing.assert_close(
                opt.state[a]["exp_avg_sq"], ref_opt.state[b]["exp_avg_sq"], rtol=1e-4, atol=1e-9
            )


@pytest.mark.parametrize(("name", "kernel"), [("adam", "_fused_adam_"), ("adamw", "_fused_adamw_")])
def test_adam_steps_the_flat_buffer_with_one_fused_call(name, kernel):
    net = _net()
    X = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    opt = make_optimizer(name, net.parameters(), lr=1e-2, weight_decay=1e-3, momentum=0.0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run_epochs(
            net,
            X,
            lambda xb: ((net(xb) - xb) ** 2).mean(),
            optimizer=opt,
            epochs=2,
            batch_size=16,
            generator=torch.Generator().manual_seed(2),
        )
    calls = [e.name for e in prof.events()]
    # 3 batches (16, 16, 8) in each of 2 epochs: one call of the fused kernel per step.
    assert calls.count(f"aten::{kernel}") == 6
