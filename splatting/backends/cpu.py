"""CPU backend: the numba kernels of :mod:`splatting.cpu_kernels` as two torch autograd Functions.

Projection and compositing are separate Functions so that the projected 2D means are a real
node of the autograd graph: the trainer reads their gradient (view-space positional gradient,
the 3DGS densification signal) with ``retain_grad``, exactly as with gsplat.
Kernels compute in float64; outputs come back in the dtype of ``means``.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import cpu_kernels as ck


def _np64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float64).numpy())


def _camera(viewmat: torch.Tensor, K: torch.Tensor) -> tuple:
    V = _np64(viewmat)
    Kn = _np64(K)
    return (
        np.ascontiguousarray(V[:3, :3]),
        np.ascontiguousarray(V[:3, 3]),
        float(Kn[0, 0]),
        float(Kn[1, 1]),
        float(Kn[0, 2]),
        float(Kn[1, 2]),
    )


class ProjectGaussians(torch.autograd.Function):
    """(means [N,3], quats [N,4], scales [N,3]) -> means2d [N,2], conics [N,3], depths [N].

    Also returns the non-differentiable ``bbox [N,4] int64`` (pixel box, empty = culled) and
    ``radii [N,2] int64``. ``opacities`` only sets the culling extent (no gradient through here).
    """

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmat, K, width: int, height: int, near: float, far: float):
        n = means.shape[0]
        Rcw, tcw, fx, fy, cx, cy = _camera(viewmat, K)
        m, q, s = _np64(means), _np64(quats), _np64(scales)
        means2d = np.empty((n, 2))
        conics = np.empty((n, 3))
        depths = np.empty(n)
        bbox = np.empty((n, 4), dtype=np.int64)
        radii = np.empty((n, 2), dtype=np.int64)
        ck.project_fwd(
            m, q, s, _np64(opacities), Rcw, tcw, fx, fy, cx, cy, int(width), int(height), float(near), float(far),
            means2d, conics, depths, bbox, radii,
        )  # fmt: skip
        ctx.saved_np = (m, q, s, bbox)
        ctx.cam = (Rcw, tcw, fx, fy, cx, cy, int(width), int(height))
        ctx.dtype, ctx.device = means.dtype, means.device
        dev, dt = means.device, means.dtype
        bbox_t, radii_t = torch.from_numpy(bbox).to(dev), torch.from_numpy(radii).to(dev)
        ctx.mark_non_differentiable(bbox_t, radii_t)
        return (
            torch.from_numpy(means2d).to(device=dev, dtype=dt),
            torch.from_numpy(conics).to(device=dev, dtype=dt),
            torch.from_numpy(depths).to(device=dev, dtype=dt),
            bbox_t,
            radii_t,
        )

    @staticmethod
    def backward(ctx, g_means2d, g_conics, g_depths, _g_bbox, _g_radii):
        m, q, s, bbox = ctx.saved_np
        n = m.shape[0]
        Rcw, tcw, fx, fy, cx, cy, width, height = ctx.cam
        zeros = np.zeros
        gm2 = _np64(g_means2d) if g_means2d is not None else zeros((n, 2))
        gco = _np64(g_conics) if g_conics is not None else zeros((n, 3))
        gde = _np64(g_depths) if g_depths is not None else zeros(n)
        g_means, g_quats, g_scales = np.empty((n, 3)), np.empty((n, 4)), np.empty((n, 3))
        ck.project_bwd(
            m, q, s, Rcw, tcw, fx, fy, cx, cy, width, height, bbox, gm2, gco, gde, g_means, g_quats, g_scales
        )
        to = lambda a: torch.from_numpy(a).to(device=ctx.device, dtype=ctx.dtype)  # noqa: E731
        return to(g_means), to(g_quats), to(g_scales), None, None, None, None, None, None, None


class RasterizeGaussians(torch.autograd.Function):
    """Composite projected Gaussians: -> color [H,W,C], depth_acc [H,W] (sum w z), alpha [H,W]."""

    @staticmethod
    def forward(ctx, means2d, conics, depths, opacities, colors, bbox, width: int, height: int, tile_size: int):
        width, height, tile_size = int(width), int(height), int(tile_size)
        m2, co, de, op, cl = _np64(means2d), _np64(conics), _np64(depths), _np64(opacities), _np64(colors)
        bb = np.ascontiguousarray(bbox.detach().cpu().numpy().astype(np.int64))
        offsets, gids = ck.bin_gaussians(bb, de, width, height, tile_size)
        n_ch = cl.shape[1]
        out_color = np.empty((height, width, n_ch))
        out_depth = np.empty((height, width))
        out_alpha = np.empty((height, width))
        n_contrib = np.empty((height, width), dtype=np.int64)
        t_final = np.empty((height, width))
        ck.raster_fwd(
            m2, co, op, cl, de, bb, offsets, gids, width, height, tile_size,
            out_color, out_depth, out_alpha, n_contrib, t_final,
        )  # fmt: skip
        ctx.saved_np = (m2, co, de, op, cl, bb, offsets, gids, n_contrib, t_final)
        ctx.shape = (width, height, tile_size)
        ctx.dtype, ctx.device = colors.dtype, colors.device
        to = lambda a: torch.from_numpy(a).to(device=colors.device, dtype=colors.dtype)  # noqa: E731
        return to(out_color), to(out_depth), to(out_alpha)

    @staticmethod
    def backward(ctx, g_color, g_depth, g_alpha):
        m2, co, de, op, cl, bb, offsets, gids, n_contrib, t_final = ctx.saved_np
        width, height, tile_size = ctx.shape
        n, n_ch = cl.shape
        gc = _np64(g_color) if g_color is not None else np.zeros((height, width, n_ch))
        gd = _np64(g_depth) if g_depth is not None else np.zeros((height, width))
        ga = _np64(g_alpha) if g_alpha is not None else np.zeros((height, width))
        isect = np.zeros((gids.shape[0], 7 + n_ch))
        ck.raster_bwd(
            m2, co, op, cl, de, bb, offsets, gids, width, height, tile_size, n_contrib, t_final, gc, gd, ga, isect
        )
        per_g = np.empty((n, 7 + n_ch))
        ck.reduce_isect_grads(gids, isect, per_g)
        g = torch.from_numpy(per_g).to(device=ctx.device, dtype=ctx.dtype)
        return (
            g[:, 0:2].contiguous(),
            g[:, 2:5].contiguous(),
            g[:, 5].contiguous(),
            g[:, 6].contiguous(),
            g[:, 7:].contiguous(),
            None,
            None,
            None,
            None,
        )


def rasterize_cpu(
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
    """Render C channels with the numba kernels.

    Args: means [N,3], quats [N,4] wxyz, scales [N,3], opacities [N], colors [N,C].
    Returns: color [H,W,C], depth_acc [H,W] (un-normalised), alpha [H,W], meta with
    ``means2d [N,2]`` (graph node), ``radii [N,2]``, ``depths [N]``, ``visible [N]``.
    """
    means2d, conics, depths, bbox, radii = ProjectGaussians.apply(
        means, quats, scales, opacities, viewmat, K, width, height, near, far
    )
    color, depth_acc, alpha = RasterizeGaussians.apply(
        means2d, conics, depths, opacities, colors, bbox, width, height, tile_size
    )
    visible = radii.amax(dim=1) > 0
    meta = {"means2d": means2d, "radii": radii, "depths": depths.detach(), "visible": visible, "conics": conics}
    return color, depth_acc, alpha, meta
