"""Straightforward vectorised PyTorch Gaussian rasterizer: the reference for the numba CPU kernel.

Same math as :mod:`splatting.cpu_kernels` (EWA projection with gsplat's field-of-view clamp,
0.3 px^2 blur, opacity-aware 3.33-sigma box, alpha = min(0.99, o exp(-power)) skipped below
1/255, exclusive stop when transmittance would drop to <= 1e-4, pixel centres at integer
coordinates), written as dense tensor algebra and differentiated by autograd.

Compositing is dense within square pixel blocks of ``block`` px: a block sees every visible
Gaussian whose pixel box overlaps it (nearest first, stable order) and builds a
``[pixels_in_block, n_gaussians]`` alpha matrix whose exclusive cumulative product gives the
transmittance. Each block runs under activation checkpointing, so memory stays at one block's
matrices while gradients still come from autograd. The block culling uses the same exact
pixel boxes as the kernel, so it changes nothing in the image.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.99
TRANSMITTANCE_EPS = 1e-4
BLUR_EPS = 0.3
MAX_EXTENT_SIGMA = 3.33
FOV_CLAMP = 0.3


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """quats [N,4] wxyz (any norm) -> rotation matrices [N,3,3]."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # fmt: skip


def project_torch(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 100.0,
) -> dict[str, torch.Tensor]:
    """EWA projection. Returns means2d [N,2], conics [N,3], depths [N], bbox [N,4] long
    (j_min, j_max, i_min, i_max), radii [N,2] long and visible [N] bool."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    pc = means @ R.T + t
    x, y, z = pc.unbind(-1)
    ok_z = (z >= near) & (z <= far)
    zs = torch.where(ok_z, z, torch.ones_like(z))  # keeps culled rows finite (no NaN gradients)
    A = quat_to_rotmat(quats) * scales[:, None, :]
    M = R[None] @ A
    Sc = M @ M.transpose(1, 2)
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lxp = (width - 0.5 - cx) / fx + FOV_CLAMP * tan_x
    lxn = (cx + 0.5) / fx + FOV_CLAMP * tan_x
    lyp = (height - 0.5 - cy) / fy + FOV_CLAMP * tan_y
    lyn = (cy + 0.5) / fy + FOV_CLAMP * tan_y
    tx = zs * torch.clamp(x / zs, -lxn, lxp)
    ty = zs * torch.clamp(y / zs, -lyn, lyp)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], dim=-1
    ).reshape(-1, 2, 3)
    S2 = J @ Sc @ J.transpose(1, 2)
    p = S2[:, 0, 0] + BLUR_EPS
    q = S2[:, 0, 1]
    r = S2[:, 1, 1] + BLUR_EPS
    det = p * r - q * q
    ok_det = det > 0
    dets = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([r / dets, -q / dets, p / dets], dim=-1)
    u = fx * x / zs + cx
    v = fy * y / zs + cy
    means2d = torch.stack([u, v], dim=-1)
    with torch.no_grad():
        ok_o = opacities >= ALPHA_THRESHOLD
        extent = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extent = extent.clamp(max=MAX_EXTENT_SIGMA)
        ex = extent * torch.sqrt(p.clamp_min(0))
        ey = extent * torch.sqrt(r.clamp_min(0))
        j_min = torch.ceil(u - ex).clamp_min(0)
        j_max = torch.floor(u + ex).clamp_max(width - 1)
        i_min = torch.ceil(v - ey).clamp_min(0)
        i_max = torch.floor(v + ey).clamp_max(height - 1)
        visible = ok_z & ok_det & ok_o & (j_min <= j_max) & (i_min <= i_max)
        bbox = torch.stack([j_min, j_max, i_min, i_max], dim=-1).long()
        radii = torch.stack([torch.ceil(ex), torch.ceil(ey)], dim=-1).long() * visible[:, None]
    return {"means2d": means2d, "conics": conics, "depths": z, "bbox": bbox, "radii": radii, "visible": visible}


def _composite_block(
    pix_u: torch.Tensor,
    pix_v: torch.Tensor,
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    depths: torch.Tensor,
    bbox: torch.Tensor,
) -> torch.Tensor:
    """Pixels [P] (u, v) x depth-sorted Gaussians [n] -> [P, C + 2] (colour, sum w z, alpha)."""
    dx = means2d[None, :, 0] - pix_u[:, None]
    dy = means2d[None, :, 1] - pix_v[:, None]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    power = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities[None, :] * torch.exp(-power), max=MAX_ALPHA)
    inside = (
        (pix_u[:, None] >= bbox[None, :, 0])
        & (pix_u[:, None] <= bbox[None, :, 1])
        & (pix_v[:, None] >= bbox[None, :, 2])
        & (pix_v[:, None] <= bbox[None, :, 3])
    )
    keep = inside & (power >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    t_incl = torch.cumprod(1.0 - alpha, dim=1)
    alive = t_incl > TRANSMITTANCE_EPS  # monotone: once a pixel stops, nothing behind counts
    t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
    w = alpha * alive * t_excl
    return torch.cat([w @ colors, (w @ depths)[:, None], w.sum(dim=1, keepdim=True)], dim=1)


def rasterize_torch(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 100.0,
    block: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Render C channels. colors [N,C].

    Returns color [H,W,C], depth_acc [H,W] (un-normalised sum w z), alpha [H,W] and meta with
    ``means2d [N,2]`` (graph node), ``radii [N,2]``, ``depths [N]``, ``visible [N]``.
    """
    proj = project_torch(means, quats, scales, opacities, viewmat, K, width, height, near, far)
    vis_idx = torch.nonzero(proj["visible"]).squeeze(1)
    order = torch.sort(proj["depths"].detach()[vis_idx], stable=True).indices
    idx = vis_idx[order]
    m2, co, de = proj["means2d"][idx], proj["conics"][idx], proj["depths"][idx]
    op, cl, bb = opacities[idx], colors[idx], proj["bbox"][idx]
    dev, dt = means.device, means.dtype
    n_ch = colors.shape[1]
    zero = 0.0 * cl.sum()  # keeps the graph connected when a block sees no Gaussian
    band_rows = []
    for r0 in range(0, height, block):
        r1 = min(r0 + block, height)
        rows = (bb[:, 2] <= r1 - 1) & (bb[:, 3] >= r0)
        blocks = []
        for c0 in range(0, width, block):
            c1 = min(c0 + block, width)
            sel = torch.nonzero(rows & (bb[:, 0] <= c1 - 1) & (bb[:, 1] >= c0)).squeeze(1)
            if sel.numel() == 0:
                blocks.append(torch.zeros(r1 - r0, c1 - c0, n_ch + 2, device=dev, dtype=dt) + zero)
                continue
            vs = torch.arange(r0, r1, device=dev, dtype=dt)
            us = torch.arange(c0, c1, device=dev, dtype=dt)
            pv = vs[:, None].expand(-1, c1 - c0).reshape(-1)
            pu = us[None, :].expand(r1 - r0, -1).reshape(-1)
            args = (pu, pv, m2[sel], co[sel], op[sel], cl[sel], de[sel], bb[sel])
            if torch.is_grad_enabled() and any(a.requires_grad for a in args):
                blk = checkpoint(_composite_block, *args, use_reentrant=False)
            else:
                blk = _composite_block(*args)
            blocks.append(blk.reshape(r1 - r0, c1 - c0, n_ch + 2))
        band_rows.append(torch.cat(blocks, dim=1))
    out = torch.cat(band_rows, dim=0)
    meta = {
        "means2d": proj["means2d"],
        "radii": proj["radii"],
        "depths": proj["depths"].detach(),
        "visible": proj["visible"],
        "conics": proj["conics"],
    }
    return out[..., :n_ch], out[..., n_ch], out[..., n_ch + 1], meta

