"""Losses: L1/SSIM/RGB mix, depth L1 over valid pixels, the M3 feature loss."""

from __future__ import annotations

import torch

from splatting.losses import depth_l1_loss, feature_loss, l1_loss, psnr, rgb_loss, sample_bilinear, ssim


def test_ssim_identity_noise_and_gradient():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(24, 32, 3, generator=g)
    assert abs(float(ssim(img, img)) - 1.0) < 1e-5
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    very = (img + 0.5 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    assert float(ssim(img, noisy)) > float(ssim(img, very))
    x = noisy.clone().requires_grad_(True)
    loss, parts = rgb_loss(x, img)
    loss.backward()
    assert x.grad.abs().sum() > 0 and 0 < parts["ssim"] < 1
    assert abs(float(loss.detach()) - (0.8 * parts["l1"] + 0.2 * (1 - parts["ssim"]))) < 1e-6
    assert psnr(img, img) == float("inf") and psnr(noisy, img) > psnr(very, img)


def test_masked_l1_and_depth_loss_ignore_invalid_pixels():
    pred = torch.full((4, 5), 2.0)
    target = torch.full((4, 5), 1.0)
    target[0] = 0.0
    target[1, 0] = float("nan")
    assert float(depth_l1_loss(pred, target)) == 1.0  # invalid pixels would add 2.0 each
    alpha = torch.full((4, 5), 0.5)
    assert float(depth_l1_loss(pred, target, alpha)) == 0.0
    assert float(l1_loss(pred, target, torch.zeros(4, 5, dtype=torch.bool))) == 0.0


def test_feature_loss_skips_empty_targets_and_pulls_toward_target():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(6, 8, 4, generator=g)
    target[:3] = 0.0  # upper half has no feature
    rendered = torch.zeros(24, 32, 4, requires_grad=True)
    loss, parts = feature_loss(rendered + 0.01, target, n_samples=500, generator=g)
    assert 0 < parts["n"] < 500  # roughly the lower half only
    loss.backward()
    assert rendered.grad[:8].abs().sum() == 0  # rows mapping fully into the empty half get nothing
    assert rendered.grad[16:].abs().sum() > 0
    empty, parts = feature_loss(rendered, torch.zeros(6, 8, 4), n_samples=50, generator=g)
    assert float(empty.detach()) == 0.0 and parts["n"] == 0 and empty.requires_grad


def test_sample_bilinear_hits_pixel_centres():
    fm = torch.arange(12.0).reshape(3, 4, 1)
    uv = torch.tensor([[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3], [2.0 / 4, 0.5 / 3]])
    vals = sample_bilinear(fm, uv)[:, 0]
    assert torch.allclose(vals, torch.tensor([0.0, 11.0, 1.5]), atol=1e-5)
