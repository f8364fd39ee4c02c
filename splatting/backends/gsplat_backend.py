"""CUDA backend: ``gsplat.rasterization`` (gsplat 1.5.x) mapped to the project's conventions.

Differences handled here:
- gsplat puts pixel centres at +0.5 (``px = j + 0.5``); this project (and
  ``spatial_memory.types.project_points``) puts them at integer coordinates, so the principal
  point is shifted by +0.5 before the call and the reported 2D means are in gsplat's frame.
- colour and feature channels are rendered in one pass (concatenated), depth via "RGB+ED";
  backgrounds are applied by the caller, so gsplat is called without one.
- gsplat clamps alpha at 0.999 where the CPU kernel (like Inria 3DGS) clamps at 0.99: the two
  differ only where a Gaussian's ``opacity * exp(-power)`` exceeds 0.99.
"""

from __future__ import annotations

import torch


def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is usable."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def rasterize_gsplat(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
    tile_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Render C channels with gsplat on CUDA tensors. colors [N,C].

    Returns color [H,W,C], depth [H,W] (already normalised by alpha, gsplat "ED"), alpha [H,W],
    meta with ``means2d [1,N,2]`` (graph node), ``radii [N,2]``, ``depths [N]``, ``visible [N]``.
    """
    import gsplat

    Kg = K.detach().to(device=means.device, dtype=means.dtype).clone()
    Kg[0, 2] += 0.5
    Kg[1, 2] += 0.5
    render, alphas, info = gsplat.rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmat.to(device=means.device, dtype=means.dtype)[None],
        Ks=Kg[None],
        width=int(width),
        height=int(height),
        near_plane=float(near),
        far_plane=float(far),
        eps2d=0.3,
        sh_degree=None,
        packed=False,
        tile_size=int(tile_size),
        backgrounds=None,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    n_ch = colors.shape[1]
    radii = info["radii"][0]
    if radii.dim() == 1:  # older gsplat: one isotropic radius per Gaussian
        radii = radii[:, None].expand(-1, 2)
    meta = {
        "means2d": info["means2d"],
        "radii": radii.long(),
        "depths": info["depths"][0].detach(),
        "visible": radii.amax(dim=1) > 0,
        "conics": info["conics"][0],
    }
    return render[0, ..., :n_ch], render[0, ..., n_ch], alphas[0, ..., 0], meta
