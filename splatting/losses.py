"""Training losses of 3DGS / M3: L1, SSIM, the RGB mix, depth L1 and the feature loss.

Images are ``[H, W, C]`` float tensors (channels last, as the rasterizer returns them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error; with ``mask [H, W]`` only over masked pixels (0 if none)."""
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    m = mask.to(torch.bool)
    while m.dim() < diff.dim():
        m = m[..., None]
    m = m.expand_as(diff)
    # where, not a product: masked-out pixels may hold NaN
    return torch.where(m, diff, torch.zeros_like(diff)).sum() / m.sum().clamp_min(1)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity of two ``[H, W, C]`` images in [0, 1] (Gaussian window, zero padding like 3DGS)."""
    a = img1.permute(2, 0, 1)[None]
    b = img2.permute(2, 0, 1)[None]
    c = a.shape[1]
    w = _gaussian_window(window_size, sigma, c, a)
    pad = window_size // 2
    mu1 = F.conv2d(a, w, padding=pad, groups=c)
    mu2 = F.conv2d(b, w, padding=pad, groups=c)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = F.conv2d(a * a, w, padding=pad, groups=c) - mu1_sq
    s2 = F.conv2d(b * b, w, padding=pad, groups=c) - mu2_sq
    s12 = F.conv2d(a * b, w, padding=pad, groups=c) - mu12
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu12 + c1) * (2 * s12 + c2)
    den = (mu1_sq + mu2_sq + c1) * (s1 + s2 + c2)
    return (num / den).mean()


def rgb_loss(pred: torch.Tensor, target: torch.Tensor, lambda_dssim: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """3DGS photometric loss ``(1 - l) L1 + l (1 - SSIM)`` with l = 0.2. Returns (loss, parts)."""
    l1 = l1_loss(pred, target)
    s = ssim(pred, target)
    loss = (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - s)
    return loss, {"l1": float(l1.detach()), "ssim": float(s.detach())}


def depth_l1_loss(pred: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between rendered depth ``[H, W]`` and measured depth over pixels with valid (finite, > 0) target.

    With ``alpha`` the rendered depth is compared as ``alpha * depth`` so empty pixels are pulled
    toward the surface too (the expected depth alone is undefined where nothing is rendered).
    """
    valid = torch.isfinite(target) & (target > 0)
    tgt = torch.where(valid, target, torch.zeros_like(target))
    p = pred if alpha is None else pred * alpha
    return l1_loss(p, tgt, valid)


def sample_bilinear(feature_map: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample ``feature_map [h, w, d]`` at normalised positions ``uv [P, 2]`` in [0, 1] (x, y) -> ``[P, d]``.

    Positions refer to the full image, so a low-resolution map aligned with it (pixel-centre
    convention, ``align_corners=False``) is sampled at the matching place.
    """
    grid = (uv * 2.0 - 1.0).to(feature_map.dtype)[None, None]  # [1, 1, P, 2]
    fm = feature_map.permute(2, 0, 1)[None]
    return F.grid_sample(fm, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def feature_loss(
    rendered: torch.Tensor,
    target: torch.Tensor,
    n_samples: int = 2000,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """M3 feature distillation loss on randomly sampled pixels: mean (1 - cos) + mean L2 distance.

    Args:
        rendered: ``[H, W, d]`` rendered features (already mapped to the target space).
        target: ``[h, w, d]`` foundation-model features, any resolution aligned with the image.
        n_samples: pixels drawn uniformly; targets that are all-zero (no feature) are skipped.

    Returns:
        (loss, {"cos": mean cosine distance, "l2": mean L2 distance, "n": pixels used}); loss is 0
        (still differentiable) when every sampled target is zero.
    """
    h_img, w_img = rendered.shape[:2]
    size = torch.tensor([w_img, h_img])
    px = (torch.rand(n_samples, 2, generator=generator) * size).long().clamp_max(size - 1)
    uv = ((px + 0.5) / size).to(rendered.device)  # centre of each sampled pixel
    px = px.to(rendered.device)
    tgt = sample_bilinear(target.to(rendered), uv)
    pred = rendered[px[:, 1], px[:, 0]]
    keep = tgt.abs().sum(dim=1) > 0
    if not bool(keep.any()):
        zero = rendered.sum() * 0.0
        return zero, {"cos": 0.0, "l2": 0.0, "n": 0}
    pred, tgt = pred[keep], tgt[keep]
    cos = 1.0 - F.cosine_similarity(pred, tgt, dim=1).mean()
    l2 = (pred - tgt).norm(dim=1).mean()
    return cos + l2, {"cos": float(cos.detach()), "l2": float(l2.detach()), "n": int(keep.sum())}


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float(((pred.detach() - target.detach()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
