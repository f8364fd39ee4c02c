"""Gaussian memory attention: shapes on pixels and Gaussians, learnable W reduces the feature loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatial_memory.errors import ConfigError
from spatial_memory.m3.attention import MemoryAttention, feature_loss


def test_decode_shapes_pixels_and_gaussians() -> None:
    bank = np.random.default_rng(0).normal(size=(20, 32)).astype(np.float32)
    att = MemoryAttention(8, bank, tau=0.05)
    assert att(torch.randn(6, 5, 8)).shape == (6, 5, 32)  # rendered [H, W, d]
    q = torch.randn(1000, 8)
    out = att.decode_chunked(q, chunk=300)  # per-Gaussian [N, d], decoded in 3D
    assert out.shape == (1000, 32)
    torch.testing.assert_close(out, att(q).detach())
    w = att.weights_chunked(q, chunk=300)
    torch.testing.assert_close(w.sum(-1), torch.ones(1000))
    torch.testing.assert_close(w @ att.bank, out)
    with pytest.raises(ConfigError):
        att(torch.randn(4, 7))


def _fit(train_W: bool, steps: int = 150) -> tuple[float, float]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(16, 24)).astype(np.float32)
    target = torch.from_numpy(bank[rng.integers(0, 16, 256)])
    q = torch.nn.Parameter(torch.randn(256, 4) * 0.1)
    att = MemoryAttention(4, bank, tau=0.05, train_W=train_W, seed=1)
    params = [q] + ([att.W] if train_W else [])
    opt = torch.optim.Adam(params, lr=0.05)
    W0 = att.W.detach().clone()
    first = float(feature_loss(att(q), target).detach())
    for _ in range(steps):
        opt.zero_grad()
        loss = feature_loss(att(q), target)
        loss.backward()
        opt.step()
    assert torch.equal(att.W.detach(), W0) != train_W
    return first, float(feature_loss(att(q), target).detach())


def test_training_W_reduces_feature_loss() -> None:
    first, fixed = _fit(train_W=False)
    _, learned = _fit(train_W=True)
    assert fixed < first
    assert learned < fixed  # with 4-d queries, a learned W decodes more bank entries apart


def test_set_bank_keeps_W_and_checks_dim() -> None:
    att = MemoryAttention(4, np.ones((3, 8), np.float32))
    W = att.W.detach().clone()
    att.set_bank(np.random.default_rng(0).normal(size=(7, 8)))
    assert att.bank_size == 7 and torch.equal(att.W.detach(), W)
    with pytest.raises(ConfigError):
        att.set_bank(np.ones((3, 9), np.float32))


def test_factorised_cosine_equals_normalised_projection() -> None:
    rng = np.random.default_rng(3)
    att = MemoryAttention(6, rng.normal(size=(9, 40)).astype(np.float32), tau=0.07)
    q = torch.randn(50, 6)
    ref = torch.softmax(
        torch.nn.functional.normalize(q @ att.W, dim=-1) @ torch.nn.functional.normalize(att.bank, dim=-1).T / 0.07, -1
    )
    torch.testing.assert_close(att.weights(q).detach(), ref.detach(), atol=1e-5, rtol=1e-4)


def test_zero_query_has_finite_gradient() -> None:
    # A query rendered where the map is empty is exactly 0; its gradient must not be NaN.
    att = MemoryAttention(4, np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    q = torch.zeros(3, 4, requires_grad=True)
    feature_loss(att(q), torch.ones(3, 8)).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(att.W.grad).all()
