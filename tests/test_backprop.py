"""The hand-written training step against autograd, and the switch between them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from anomtune import losses
from anomtune.detector import AutoencoderDetector
from anomtune.errors import ConfigError
from anomtune.models import ManualBackprop, MLPAutoencoder, VariationalAutoencoder
from anomtune.models.backprop import TRAINING_ENV, training_path

CASES = list(
    itertools.product(
        ["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"],
        ["none", "batch", "running"],  # batch norm: off, batch statistics, running ones
        [0.0, 0.3],  # dropout
        [0.0, 0.05],  # L1 activity weight
    )
)


def _pair(activation: str, batch_norm: bool | str, dropout: float):
    norm_mode = batch_norm
    batch_norm = batch_norm not in (False, "none")
    torch.manual_seed(1)
    a = MLPAutoencoder(7, [12, 9], 4, activation=activation, dropout=dropout, batch_norm=batch_norm)
    b = MLPAutoencoder(7, [12, 9], 4, activation=activation, dropout=dropout, batch_norm=batch_norm)
    a.double().train()
    b.double().train()
    if norm_mode == "running":
        # As the training loop trains on a single row: batch norm in eval mode.
        for m in a.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        for m in (*a.modules(), *b.modules()):
            if isinstance(m, torch.nn.BatchNorm1d):
                m.eval()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize(("activation", "batch_norm", "dropout", "l1"), CASES)
def test_gradients_match_autograd(activation, batch_norm, dropout, l1):
    gen = torch.Generator().manual_seed(0)
    targets = torch.randn(50, 7, dtype=torch.float64, generator=gen)
    inputs = targets + 0.1 * torch.randn(50, 7, dtype=torch.float64, generator=gen)
    a, b = _pair(activation, batch_norm, dropout)

    torch.manual_seed(5)  # the dropout draws
    recon, code = a(inputs)
    rng_after_autograd = torch.random.get_rng_state()
    loss = losses.reconstruction_per_row(recon, targets, "mse").mean() / 7
    loss = loss + l1 * losses.l1_activity(code)
    loss.backward()

    manual = ManualBackprop.for_network(b, output_activation="identity", l1_weight=l1)
    assert manual is not None
    torch.manual_seed(5)
    pending = manual.loss(inputs, targets)
    assert torch.equal(torch.random.get_rng_state(), rng_after_autograd)
    assert pending.item() == pytest.approx(loss.item(), rel=1e-12)
    pending.backward()

    # Same kernels in the same order: in float64 the gradients agree to rounding.
    scale = max(float(p.grad.abs().max()) for p in a.parameters())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert pb.grad is not None, name
        assert pb.grad.shape == pa.grad.shape
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-10, atol=1e-12 * scale)
    # Batch-norm running statistics and dropout draws were updated the same way.
    for ba, bb in zip(a.buffers(), b.buffers(), strict=True):
        torch.testing.assert_close(bb, ba, rtol=1e-12, atol=0)


def test_gradients_are_written_into_existing_buffers():
    """Later batches overwrite the gradients in place (the flat-buffer stepper relies on it)."""
    b, c = _pair("relu", "batch", 0.0)
    x = torch.randn(20, 7, dtype=torch.float64)
    y = torch.randn(20, 7, dtype=torch.float64)
    manual = ManualBackprop.for_network(b, output_activation="identity")
    manual.loss(x, x).backward()
    buffers = {name: p.grad for name, p in b.named_parameters()}
    manual.loss(y, y).backward()
    fresh = ManualBackprop.for_network(c, output_activation="identity")
    fresh.loss(y, y).backward()
    for (name, pb), pc in zip(b.named_parameters(), c.parameters(), strict=True):
        assert pb.grad is buffers[name]
        assert torch.equal(pb.grad, pc.grad), name


def test_not_used_where_it_does_not_apply(monkeypatch):
    monkeypatch.delenv(TRAINING_ENV, raising=False)
    net = MLPAutoencoder(5, [8], 3, activation="relu")
    assert ManualBackprop.for_network(net, output_activation="sigmoid") is None
    vae = VariationalAutoencoder(5, [8], 3, activation="relu")
    assert ManualBackprop.for_network(vae, output_activation="identity") is None
    X = np.zeros((4, 5), dtype=np.float32)
    for params, covered in [
        ({}, True),
        ({"variant": "denoising"}, True),
        ({"variant": "sparse", "sparsity": "l1"}, True),
        ({"variant": "sparse", "sparsity": "kl"}, False),
        ({"variant": "contractive"}, False),
        ({"variant": "vae"}, False),
        ({"output_activation": "sigmoid", "scaler": "minmax"}, False),
    ]:
        det = AutoencoderDetector(**params)
        net = det._build_net(X.shape[1], [8], 3)
        assert (det._manual_backprop(net) is not None) is covered, params


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"variant": "denoising", "noise": "gaussian"},
        {"variant": "denoising", "noise": "mask"},
        {"variant": "sparse", "sparsity": "l1", "sparsity_weight": 0.01},
        {"activation": "elu", "batch_norm": False, "dropout": 0.0, "optimizer": "sgd"},
    ],
)
def test_fit_matches_the_autograd_fit(params, monkeypatch):
    X = np.random.default_rng(0).normal(size=(300, 9)).astype(np.float32)
    monkeypatch.setenv(TRAINING_ENV, "handwritten")
    fast = AutoencoderDetector(epochs=4, random_state=3, **params).fit(X)
    monkeypatch.setenv(TRAINING_ENV, "autograd")
    slow = AutoencoderDetector(epochs=4, random_state=3, **params).fit(X)
    np.testing.assert_allclose(fast.score_samples(X), slow.score_samples(X), rtol=1e-5)
    assert fast.n_epochs_ == slow.n_epochs_
    np.testing.assert_allclose(fast.loss_curve_, slow.loss_curve_, rtol=1e-5)


def _fit_counting_saved_tensors(X) -> tuple[AutoencoderDetector, int]:
    """A fit, and how many tensors autograd saved for a backward pass during it."""
    saved = []

    def pack(tensor):
        saved.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        det = AutoencoderDetector(epochs=2, width=8, random_state=0).fit(X)
    return det, len(saved)


def test_the_switch_selects_the_training_path(monkeypatch):
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    net = MLPAutoencoder(5, [8], 3, activation="relu")
    for value in (None, "", "handwritten", " Handwritten "):
        if value is None:
            monkeypatch.delenv(TRAINING_ENV, raising=False)
        else:
            monkeypatch.setenv(TRAINING_ENV, value)
        assert training_path() == "handwritten"
        assert type(AutoencoderDetector()._manual_backprop(net)) is ManualBackprop
    # The hand-written step runs its forward pass without autograd: nothing is
    # recorded for a backward pass during the whole fit.
    fast, recorded = _fit_counting_saved_tensors(X)
    assert recorded == 0

    monkeypatch.setenv(TRAINING_ENV, "autograd")
    assert training_path() == "autograd"
    assert AutoencoderDetector()._manual_backprop(net) is None
    slow, recorded = _fit_counting_saved_tensors(X)
    assert recorded > 0
    np.testing.assert_allclose(fast.score_samples(X), slow.score_samples(X), rtol=1e-5)


@pytest.mark.parametrize("variant", ["ae", "vae"])
def test_an_unknown_training_path_is_refused_before_fitting(variant, monkeypatch):
    monkeypatch.setenv(TRAINING_ENV, "fast")
    X = np.zeros((10, 3), dtype=np.float32)
    det = AutoencoderDetector(variant=variant, epochs=1)
    with pytest.raises(ConfigError, match="ANOMTUNE_TRAINING must be one of handwritten, autograd"):
        det.fit(X)
    assert not hasattr(det, "module_")


def test_dropout_keeps_the_right_share_and_scale():
    from anomtune.models.blocks import Dropout

    torch.manual_seed(0)
    layer = Dropout(0.25)
    x = torch.ones(400, 500)
    out = layer(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.75))
    layer.eval()
    assert layer(x) is x
    assert torch.count_nonzero(Dropout(1.0)(x)) == 0
    assert Dropout(0.0)(x) is x
