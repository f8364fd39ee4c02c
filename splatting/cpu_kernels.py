"""Numba CPU kernels of the 3D Gaussian splatting rasterizer: forward and hand-written backward.

The pipeline follows 3DGS (Kerbl et al. 2023) and gsplat's "classic" mode:

1. ``project_fwd``: per Gaussian (parallel), world mean -> camera, 3D covariance
   ``R(q) S S^T R(q)^T`` -> camera frame -> EWA 2D covariance ``J Sigma_c J^T`` (J clamped to
   1.3x the field of view like 3DGS/gsplat) + 0.3 px^2 low-pass -> conic (inverse), and a pixel
   bounding box. The box uses the opacity-aware extent ``min(3.33, sqrt(2 ln(255 opacity)))``
   sigmas: outside it every alpha is below 1/255, so tile culling never changes the image.
2. ``bin_gaussians``: one stable global depth sort, then a counting sort of (tile, Gaussian)
   pairs by tile: per-tile lists, front to back (ties broken by Gaussian id).
3. ``raster_fwd``: per tile (parallel), Gaussians front to back, each visiting only the pixels of
   its box inside the tile; ``alpha = min(0.99, o exp(-power))``, skipped when < 1/255; a pixel
   stops (exclusive) when its transmittance would fall to <= 1e-4. Renders C colour/feature
   channels, the un-normalised depth ``sum w z`` and alpha in one pass; keeps per pixel the final
   transmittance and the number of list entries it consumed, for the backward pass.
4. ``raster_bwd``: per tile, back to front from each pixel's last contributor, rebuilding
   ``T_i = T_{i+1} / (1 - alpha_i)`` and the weighted sum of what lies behind; gradients per (tile, Gaussian) intersection go to their own
   slot (no write races), then ``reduce_isect_grads`` sums them per Gaussian.
5. ``project_bwd``: per Gaussian, gradients of 2D mean / conic / depth back to world mean,
   quaternion (through its normalisation) and scale.

Conventions: pixel (row i, column j) has its centre at image coordinates (u=j, v=i), matching
``spatial_memory.types.project_points`` (gsplat puts centres at +0.5; the gsplat backend shifts
the principal point). All arithmetic is float64. Matrices are 9-tuples in row-major order so
the per-Gaussian math stays on the stack.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.99
TRANSMITTANCE_EPS = 1e-4
BLUR_EPS = 0.3
MAX_EXTENT_SIGMA = 3.33
FOV_CLAMP = 0.3  # J is evaluated at most 30% of the half field of view outside the image


# --------------------------------------------------------------------------- 3x3 helpers
@njit(cache=True)
def _mm(a, b):
    """a @ b for row-major 9-tuples."""
    return (
        a[0] * b[0] + a[1] * b[3] + a[2] * b[6],
        a[0] * b[1] + a[1] * b[4] + a[2] * b[7],
        a[0] * b[2] + a[1] * b[5] + a[2] * b[8],
        a[3] * b[0] + a[4] * b[3] + a[5] * b[6],
        a[3] * b[1] + a[4] * b[4] + a[5] * b[7],
        a[3] * b[2] + a[4] * b[5] + a[5] * b[8],
        a[6] * b[0] + a[7] * b[3] + a[8] * b[6],
        a[6] * b[1] + a[7] * b[4] + a[8] * b[7],
        a[6] * b[2] + a[7] * b[5] + a[8] * b[8],
    )


@njit(cache=True)
def _t(a):
    """Transpose of a row-major 9-tuple."""
    return (a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8])


@njit(cache=True)
def _quat_rot(qw, qx, qy, qz):
    """Normalised quaternion (w, x, y, z) -> rotation matrix (9-tuple)."""
    return (
        1.0 - 2.0 * (qy * qy + qz * qz), 2.0 * (qx * qy - qw * qz), 2.0 * (qx * qz + qw * qy),
        2.0 * (qx * qy + qw * qz), 1.0 - 2.0 * (qx * qx + qz * qz), 2.0 * (qy * qz - qw * qx),
        2.0 * (qx * qz - qw * qy), 2.0 * (qy * qz + qw * qx), 1.0 - 2.0 * (qx * qx + qy * qy),
    )  # fmt: skip


@njit(cache=True)
def _fov_limits(width, height, fx, fy, cx, cy):
    """Bounds of x/z and y/z at which the projection Jacobian is evaluated (gsplat's clamp)."""
    tan_x = 0.5 * width / fx
    tan_y = 0.5 * height / fy
    lim_x_pos = (width - 0.5 - cx) / fx + FOV_CLAMP * tan_x
    lim_x_neg = (cx + 0.5) / fx + FOV_CLAMP * tan_x
    lim_y_pos = (height - 0.5 - cy) / fy + FOV_CLAMP * tan_y
    lim_y_neg = (cy + 0.5) / fy + FOV_CLAMP * tan_y
    return lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg


@njit(cache=True)
def _project_cov2d(Sc, x, y, z, fx, fy, lxp, lxn, lyp, lyn):
    """EWA projection of a camera-frame covariance ``Sc`` (row-major 3x3) at ``(x, y, z)``.

    The Jacobian uses the view-frustum-clamped point (like 3DGS). Returns the 2D covariance
    ``[[p, q], [q, r]]`` (with the low-pass ``BLUR_EPS``) and the Jacobian entries
    ``j00, j02, j11, j12`` that the backward pass differentiates through.
    """
    rz = 1.0 / z
    tx = z * min(lxp, max(-lxn, x * rz))
    ty = z * min(lyp, max(-lyn, y * rz))
    j00 = fx * rz
    j02 = -fx * tx * rz * rz
    j11 = fy * rz
    j12 = -fy * ty * rz * rz
    # Sigma2 = J Sc J^T with J = [[j00, 0, j02], [0, j11, j12]]
    r0 = (j00 * Sc[0] + j02 * Sc[6], j00 * Sc[1] + j02 * Sc[7], j00 * Sc[2] + j02 * Sc[8])
    r1 = (j11 * Sc[3] + j12 * Sc[6], j11 * Sc[4] + j12 * Sc[7], j11 * Sc[5] + j12 * Sc[8])
    p = r0[0] * j00 + r0[2] * j02 + BLUR_EPS
    q = r0[1] * j11 + r0[2] * j12
    r = r1[1] * j11 + r1[2] * j12 + BLUR_EPS
    return p, q, r, j00, j02, j11, j12


@njit(cache=True)
def _world_cov_factor(quats, scales, g):
    """``A = R(q) diag(s)`` so that the 3D covariance is ``A A^T``; also returns R, |q|, q_n."""
    qw, qx, qy, qz = quats[g, 0], quats[g, 1], quats[g, 2], quats[g, 3]
    qn = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    qw /= qn
    qx /= qn
    qy /= qn
    qz /= qn
    R = _quat_rot(qw, qx, qy, qz)
    s0, s1, s2 = scales[g, 0], scales[g, 1], scales[g, 2]
    A = (R[0] * s0, R[1] * s1, R[2] * s2, R[3] * s0, R[4] * s1, R[5] * s2, R[6] * s0, R[7] * s1, R[8] * s2)
    return A, R, qn, qw, qx, qy, qz


# --------------------------------------------------------------------------- projection
@njit(parallel=True, cache=True, fastmath=False)
def project_fwd(
    means, quats, scales, opacities, Rcw, tcw, fx, fy, cx, cy, width, height, near, far,
    means2d, conics, depths, bbox, radii,
):  # fmt: skip
    """EWA projection of N Gaussians. Writes outputs in place.

    Inputs: means [N,3], quats [N,4] wxyz (any norm), scales [N,3] linear, opacities [N],
    Rcw [3,3], tcw [3] (world -> camera). Outputs: means2d [N,2] (u, v), conics [N,3]
    (a, b, c of the inverse blurred 2D covariance), depths [N] (camera z), bbox [N,4] int
    (j_min, j_max, i_min, i_max; empty when j_min > j_max = invisible), radii [N,2] int (gsplat-style
    ceil of the box half-size, 0 = culled).
    """
    n = means.shape[0]
    lxp, lxn, lyp, lyn = _fov_limits(width, height, fx, fy, cx, cy)
    Rc = (Rcw[0, 0], Rcw[0, 1], Rcw[0, 2], Rcw[1, 0], Rcw[1, 1], Rcw[1, 2], Rcw[2, 0], Rcw[2, 1], Rcw[2, 2])
    for g in prange(n):
        bbox[g, 0] = 0
        bbox[g, 1] = -1
        bbox[g, 2] = 0
        bbox[g, 3] = -1
        radii[g, 0] = 0
        radii[g, 1] = 0
        means2d[g, 0] = 0.0
        means2d[g, 1] = 0.0
        conics[g, 0] = 0.0
        conics[g, 1] = 0.0
        conics[g, 2] = 0.0
        mx, my, mz = means[g, 0], means[g, 1], means[g, 2]
        x = Rc[0] * mx + Rc[1] * my + Rc[2] * mz + tcw[0]
        y = Rc[3] * mx + Rc[4] * my + Rc[5] * mz + tcw[1]
        z = Rc[6] * mx + Rc[7] * my + Rc[8] * mz + tcw[2]
        depths[g] = z
        if not (z >= near and z <= far):
            continue
        o = opacities[g]
        if not (o >= ALPHA_THRESHOLD):
            continue
        qnorm2 = quats[g, 0] ** 2 + quats[g, 1] ** 2 + quats[g, 2] ** 2 + quats[g, 3] ** 2
        if not (qnorm2 > 0.0):
            continue
        A, _R, _qn, _w, _x, _y, _z = _world_cov_factor(quats, scales, g)
        M = _mm(Rc, A)  # camera-frame factor: Sigma_c = M M^T
        Sc = _mm(M, _t(M))
        rz = 1.0 / z
        p, q, r, _j00, _j02, _j11, _j12 = _project_cov2d(Sc, x, y, z, fx, fy, lxp, lxn, lyp, lyn)
        det = p * r - q * q
        if not (det > 0.0):
            continue
        u = fx * x * rz + cx
        v = fy * y * rz + cy
        extent = min(MAX_EXTENT_SIGMA, math.sqrt(2.0 * math.log(o / ALPHA_THRESHOLD)))
        ex = extent * math.sqrt(p)
        ey = extent * math.sqrt(r)
        j_min = max(0, int(math.ceil(u - ex)))
        j_max = min(width - 1, int(math.floor(u + ex)))
        i_min = max(0, int(math.ceil(v - ey)))
        i_max = min(height - 1, int(math.floor(v + ey)))
        if j_min > j_max or i_min > i_max:
            continue
        means2d[g, 0] = u
        means2d[g, 1] = v
        conics[g, 0] = r / det
        conics[g, 1] = -q / det
        conics[g, 2] = p / det
        bbox[g, 0] = j_min
        bbox[g, 1] = j_max
        bbox[g, 2] = i_min
        bbox[g, 3] = i_max
        radii[g, 0] = int(math.ceil(ex))
        radii[g, 1] = int(math.ceil(ey))


@njit(parallel=True, cache=True, fastmath=False)
def project_bwd(
    means, quats, scales, Rcw, tcw, fx, fy, cx, cy, width, height, bbox,
    g_means2d, g_conics, g_depths, g_means, g_quats, g_scales,
):  # fmt: skip
    """Chain gradients of (means2d [N,2], conics [N,3], depths [N]) to means, quats, scales.

    ``g_depths`` flows to every Gaussian in front of the camera's near/far range check result
    (depth is ``z`` for all Gaussians); 2D mean/conic gradients only to visible ones (bbox).
    """
    n = means.shape[0]
    lxp, lxn, lyp, lyn = _fov_limits(width, height, fx, fy, cx, cy)
    Rc = (Rcw[0, 0], Rcw[0, 1], Rcw[0, 2], Rcw[1, 0], Rcw[1, 1], Rcw[1, 2], Rcw[2, 0], Rcw[2, 1], Rcw[2, 2])
    for g in prange(n):
        for k in range(3):
            g_means[g, k] = 0.0
            g_scales[g, k] = 0.0
        for k in range(4):
            g_quats[g, k] = 0.0
        gz_depth = g_depths[g]
        visible = bbox[g, 0] <= bbox[g, 1]
        if not visible:
            # depth z = (Rcw p + t)_z is still a differentiable output
            g_means[g, 0] = Rc[6] * gz_depth
            g_means[g, 1] = Rc[7] * gz_depth
            g_means[g, 2] = Rc[8] * gz_depth
            continue
        mx, my, mz = means[g, 0], means[g, 1], means[g, 2]
        x = Rc[0] * mx + Rc[1] * my + Rc[2] * mz + tcw[0]
        y = Rc[3] * mx + Rc[4] * my + Rc[5] * mz + tcw[1]
        z = Rc[6] * mx + Rc[7] * my + Rc[8] * mz + tcw[2]
        A, R, qn, qw, qx, qy, qz = _world_cov_factor(quats, scales, g)
        M = _mm(Rc, A)
        Sc = _mm(M, _t(M))
        rz = 1.0 / z
        ux = x * rz
        uy = y * rz
        clamp_x = ux > lxp or ux < -lxn
        clamp_y = uy > lyp or uy < -lyn
        tx = z * min(lxp, max(-lxn, ux))
        ty = z * min(lyp, max(-lyn, uy))
        p, q, r, j00, j02, j11, j12 = _project_cov2d(Sc, x, y, z, fx, fy, lxp, lxn, lyp, lyn)
        det = p * r - q * q
        ca, cb, cc = r / det, -q / det, p / det
        # conic Q = inv(Sigma'): dL/dSigma' = -Q G Q with G the symmetric gradient of Q
        ga, gb, gc = g_conics[g, 0], 0.5 * g_conics[g, 1], g_conics[g, 2]
        # T = G Q
        t00 = ga * ca + gb * cb
        t01 = ga * cb + gb * cc
        t10 = gb * ca + gc * cb
        t11 = gb * cb + gc * cc
        v00 = -(ca * t00 + cb * t10)
        v01 = -(ca * t01 + cb * t11)
        v11 = -(cb * t01 + cc * t11)
        # Sigma2 = J Sc J^T: dL/dSc = J^T V J ; dL/dJ = 2 V J Sc
        # J rows: (j00, 0, j02), (0, j11, j12)
        vj0 = (v00 * j00, v01 * j11, v00 * j02 + v01 * j12)  # row 0 of V J
        vj1 = (v01 * j00, v11 * j11, v01 * j02 + v11 * j12)  # row 1 of V J
        gJ00 = 2.0 * (vj0[0] * Sc[0] + vj0[1] * Sc[3] + vj0[2] * Sc[6])
        gJ02 = 2.0 * (vj0[0] * Sc[2] + vj0[1] * Sc[5] + vj0[2] * Sc[8])
        gJ11 = 2.0 * (vj1[0] * Sc[1] + vj1[1] * Sc[4] + vj1[2] * Sc[7])
        gJ12 = 2.0 * (vj1[0] * Sc[2] + vj1[1] * Sc[5] + vj1[2] * Sc[8])
        # dL/dSc = J^T V J (3x3 symmetric), J^T row k = (J0k, J1k)
        jc0 = (j00, 0.0, j02)
        jc1 = (0.0, j11, j12)
        gSc = (
            jc0[0] * vj0[0] + jc1[0] * vj1[0], jc0[0] * vj0[1] + jc1[0] * vj1[1], jc0[0] * vj0[2] + jc1[0] * vj1[2],
            jc0[1] * vj0[0] + jc1[1] * vj1[0], jc0[1] * vj0[1] + jc1[1] * vj1[1], jc0[1] * vj0[2] + jc1[1] * vj1[2],
            jc0[2] * vj0[0] + jc1[2] * vj1[0], jc0[2] * vj0[1] + jc1[2] * vj1[1], jc0[2] * vj0[2] + jc1[2] * vj1[2],
        )  # fmt: skip
        # Sc = M M^T with M = Rc A: dL/dM = 2 gSc M, dL/dA = Rc^T dL/dM
        gM = _mm(gSc, M)
        gA = _mm(_t(Rc), gM)
        gA = (2.0 * gA[0], 2.0 * gA[1], 2.0 * gA[2], 2.0 * gA[3], 2.0 * gA[4], 2.0 * gA[5],
              2.0 * gA[6], 2.0 * gA[7], 2.0 * gA[8])  # fmt: skip
        s0, s1, s2 = scales[g, 0], scales[g, 1], scales[g, 2]
        g_scales[g, 0] = gA[0] * R[0] + gA[3] * R[3] + gA[6] * R[6]
        g_scales[g, 1] = gA[1] * R[1] + gA[4] * R[4] + gA[7] * R[7]
        g_scales[g, 2] = gA[2] * R[2] + gA[5] * R[5] + gA[8] * R[8]
        G = (gA[0] * s0, gA[1] * s1, gA[2] * s2, gA[3] * s0, gA[4] * s1, gA[5] * s2, gA[6] * s0, gA[7] * s1, gA[8] * s2)
        dw = 2.0 * (-qz * G[1] + qy * G[2] + qz * G[3] - qx * G[5] - qy * G[6] + qx * G[7])
        dx = 2.0 * (qy * G[1] + qz * G[2] + qy * G[3] - 2.0 * qx * G[4] - qw * G[5] + qz * G[6] + qw * G[7]
                    - 2.0 * qx * G[8])  # fmt: skip
        dy = 2.0 * (-2.0 * qy * G[0] + qx * G[1] + qw * G[2] + qx * G[3] + qz * G[5] - qw * G[6] + qz * G[7]
                    - 2.0 * qy * G[8])  # fmt: skip
        dz = 2.0 * (-2.0 * qz * G[0] - qw * G[1] + qx * G[2] + qw * G[3] - 2.0 * qz * G[4] + qy * G[5] + qx * G[6]
                    + qy * G[7])  # fmt: skip
        dot = qw * dw + qx * dx + qy * dy + qz * dz
        g_quats[g, 0] = (dw - qw * dot) / qn
        g_quats[g, 1] = (dx - qx * dot) / qn
        g_quats[g, 2] = (dy - qy * dot) / qn
        g_quats[g, 3] = (dz - qz * dot) / qn
        # camera-frame mean gradient from J, the 2D mean and the depth
        gu, gv = g_means2d[g, 0], g_means2d[g, 1]
        gxc = gu * fx * rz
        gyc = gv * fy * rz
        gzc = -(gu * fx * x + gv * fy * y) * rz * rz + gz_depth
        gzc += -gJ00 * fx * rz * rz - gJ11 * fy * rz * rz
        if clamp_x:
            gzc += gJ02 * fx * tx * rz * rz * rz  # j02 = -fx * lim / z
        else:
            gxc += -gJ02 * fx * rz * rz
            gzc += gJ02 * 2.0 * fx * x * rz * rz * rz
        if clamp_y:
            gzc += gJ12 * fy * ty * rz * rz * rz
        else:
            gyc += -gJ12 * fy * rz * rz
            gzc += gJ12 * 2.0 * fy * y * rz * rz * rz
        g_means[g, 0] = Rc[0] * gxc + Rc[3] * gyc + Rc[6] * gzc
        g_means[g, 1] = Rc[1] * gxc + Rc[4] * gyc + Rc[7] * gzc
        g_means[g, 2] = Rc[2] * gxc + Rc[5] * gyc + Rc[8] * gzc


# --------------------------------------------------------------------------- binning
@njit(cache=True)
def _count_and_fill(bbox, order, width, height, tile_size):
    """Counting sort of (tile, Gaussian) pairs by tile; ``order`` (front to back) fixes the order inside a tile."""
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    n_tiles = tiles_x * tiles_y
    offsets = np.zeros(n_tiles + 1, dtype=np.int64)
    for g in order:
        for ty in range(bbox[g, 2] // tile_size, bbox[g, 3] // tile_size + 1):
            for tx in range(bbox[g, 0] // tile_size, bbox[g, 1] // tile_size + 1):
                offsets[ty * tiles_x + tx + 1] += 1
    for t in range(n_tiles):
        offsets[t + 1] += offsets[t]
    cursor = offsets[:-1].copy()
    gids = np.empty(offsets[n_tiles], dtype=np.int64)
    for g in order:
        for ty in range(bbox[g, 2] // tile_size, bbox[g, 3] // tile_size + 1):
            for tx in range(bbox[g, 0] // tile_size, bbox[g, 1] // tile_size + 1):
                t = ty * tiles_x + tx
                gids[cursor[t]] = g
                cursor[t] += 1
    return offsets, gids


def bin_gaussians(bbox: np.ndarray, depths: np.ndarray, width: int, height: int, tile_size: int):
    """Per-tile, depth-sorted Gaussian lists.

    One stable global sort by depth (ties: lower id first), then a counting sort by tile that
    keeps that order. Returns ``offsets [n_tiles + 1] int64`` and ``gids [M] int64``: tile ``t``
    (row-major, ``ceil(W/ts)`` tiles per row) owns ``gids[offsets[t]:offsets[t+1]]``, nearest first.
    """
    visible = np.nonzero(bbox[:, 0] <= bbox[:, 1])[0]
    order = visible[np.argsort(depths[visible], kind="stable")]
    return _count_and_fill(bbox, order, width, height, tile_size)


# --------------------------------------------------------------------------- compositing
@njit(cache=True, inline="always")
def _tile_rect(t, tiles_x, tile_size, width, height):
    """Pixel rectangle ``[y0, y1) x [x0, x1)`` of row-major tile ``t``, clipped to the image."""
    y0 = (t // tiles_x) * tile_size
    x0 = (t % tiles_x) * tile_size
    return y0, x0, min(y0 + tile_size, height), min(x0 + tile_size, width)


@njit(parallel=True, cache=True, fastmath=False)
def raster_fwd(
    means2d, conics, opacities, colors, depths, bbox, offsets, gids, width, height, tile_size,
    out_color, out_depth, out_alpha, n_contrib, t_final,
):  # fmt: skip
    """Front-to-back compositing, parallel over tiles.

    colors [N,C]; outputs out_color [H,W,C], out_depth [H,W] (un-normalised sum w z),
    out_alpha [H,W], n_contrib [H,W] int (list entries consumed), t_final [H,W].
    """
    n_ch = colors.shape[1]
    tiles_x = (width + tile_size - 1) // tile_size
    n_tiles = offsets.shape[0] - 1
    for t in prange(n_tiles):
        y0, x0, y1, x1 = _tile_rect(t, tiles_x, tile_size, width, height)
        th, tw = y1 - y0, x1 - x0
        T = np.ones((th, tw))
        acc = np.zeros((th, tw, n_ch))
        accd = np.zeros((th, tw))
        last = np.zeros((th, tw), dtype=np.int64)
        done = np.zeros((th, tw), dtype=np.bool_)
        n_done = 0
        n_pix = th * tw
        s, e = offsets[t], offsets[t + 1]
        for k in range(s, e):
            if n_done == n_pix:
                break
            g = gids[k]
            ja, jb = max(bbox[g, 0], x0), min(bbox[g, 1], x1 - 1)
            ia, ib = max(bbox[g, 2], y0), min(bbox[g, 3], y1 - 1)
            mu, mv = means2d[g, 0], means2d[g, 1]
            ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
            o = opacities[g]
            z = depths[g]
            for i in range(ia, ib + 1):
                dy = mv - i
                li = i - y0
                for j in range(ja, jb + 1):
                    lj = j - x0
                    if done[li, lj]:
                        continue
                    dx = mu - j
                    power = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if power < 0.0:
                        continue
                    a = min(MAX_ALPHA, o * math.exp(-power))
                    if a < ALPHA_THRESHOLD:
                        continue
                    t_next = T[li, lj] * (1.0 - a)
                    if t_next <= TRANSMITTANCE_EPS:
                        done[li, lj] = True
                        n_done += 1
                        continue
                    w = a * T[li, lj]
                    for c in range(n_ch):
                        acc[li, lj, c] += w * colors[g, c]
                    accd[li, lj] += w * z
                    T[li, lj] = t_next
                    last[li, lj] = k - s + 1
        for li in range(th):
            for lj in range(tw):
                for c in range(n_ch):
                    out_color[y0 + li, x0 + lj, c] = acc[li, lj, c]
                out_depth[y0 + li, x0 + lj] = accd[li, lj]
                out_alpha[y0 + li, x0 + lj] = 1.0 - T[li, lj]
                n_contrib[y0 + li, x0 + lj] = last[li, lj]
                t_final[y0 + li, x0 + lj] = T[li, lj]


@njit(parallel=True, cache=True, fastmath=False)
def raster_bwd(
    means2d, conics, opacities, colors, depths, bbox, offsets, gids, width, height, tile_size,
    n_contrib, t_final, g_color, g_depth, g_alpha, isect_grad,
):  # fmt: skip
    """Back-to-front gradient pass, parallel over tiles.

    g_color [H,W,C], g_depth [H,W], g_alpha [H,W] are dL/d outputs of ``raster_fwd``.
    isect_grad [M, 7 + C] receives, per sorted list entry k, the gradient of that tile's pixels
    w.r.t. (u, v, conic a, b, c, depth, opacity, colour_0..C-1) of Gaussian gids[k].
    """
    n_ch = colors.shape[1]
    tiles_x = (width + tile_size - 1) // tile_size
    n_tiles = offsets.shape[0] - 1
    for t in prange(n_tiles):
        y0, x0, y1, x1 = _tile_rect(t, tiles_x, tile_size, width, height)
        th, tw = y1 - y0, x1 - x0
        s = offsets[t]
        T = np.empty((th, tw))
        # P = sum over Gaussians behind of w_j * <dL/dout, out_j>: all channels, depth and alpha
        # fold into one scalar because dL/dalpha_i only needs that dot product
        P = np.zeros((th, tw))
        max_last = 0
        for li in range(th):
            for lj in range(tw):
                T[li, lj] = t_final[y0 + li, x0 + lj]
                max_last = max(max_last, n_contrib[y0 + li, x0 + lj])
        gcol = np.zeros(n_ch)
        for k in range(s + max_last - 1, s - 1, -1):
            g = gids[k]
            ja, jb = max(bbox[g, 0], x0), min(bbox[g, 1], x1 - 1)
            ia, ib = max(bbox[g, 2], y0), min(bbox[g, 3], y1 - 1)
            mu, mv = means2d[g, 0], means2d[g, 1]
            ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
            o = opacities[g]
            z = depths[g]
            gu = gv = gca = gcb = gcc = gz = go = 0.0
            for c in range(n_ch):
                gcol[c] = 0.0
            local_k = k - s
            for i in range(ia, ib + 1):
                dy = mv - i
                li = i - y0
                for j in range(ja, jb + 1):
                    lj = j - x0
                    if local_k >= n_contrib[i, j]:
                        continue
                    dx = mu - j
                    power = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if power < 0.0:
                        continue
                    ex = math.exp(-power)
                    raw = o * ex
                    a = min(MAX_ALPHA, raw)
                    if a < ALPHA_THRESHOLD:
                        continue
                    inv_one_m = 1.0 / (1.0 - a)
                    Ti = T[li, lj] * inv_one_m
                    w = a * Ti
                    gd = g_depth[i, j]
                    dot = gd * z + g_alpha[i, j]
                    for c in range(n_ch):
                        gp = g_color[i, j, c]
                        gcol[c] += w * gp
                        dot += gp * colors[g, c]
                    gz += w * gd
                    dl_da = dot * Ti - P[li, lj] * inv_one_m
                    P[li, lj] += dot * w
                    T[li, lj] = Ti
                    if raw < MAX_ALPHA:
                        go += dl_da * ex
                        dpow = -dl_da * a
                        gu += dpow * (ca * dx + cb * dy)
                        gv += dpow * (cb * dx + cc * dy)
                        gca += 0.5 * dpow * dx * dx
                        gcb += dpow * dx * dy
                        gcc += 0.5 * dpow * dy * dy
            isect_grad[k, 0] = gu
            isect_grad[k, 1] = gv
            isect_grad[k, 2] = gca
            isect_grad[k, 3] = gcb
            isect_grad[k, 4] = gcc
            isect_grad[k, 5] = gz
            isect_grad[k, 6] = go
            for c in range(n_ch):
                isect_grad[k, 7 + c] = gcol[c]


@njit(cache=True)
def reduce_isect_grads(gids, isect_grad, out):
    """Sum per-intersection gradient rows into per-Gaussian rows: out [N, 7 + C] (zeroed here).

    Serial and row-wise: streaming through ``isect_grad`` once is memory-bound and beats a
    column-parallel split on a small CPU.
    """
    out[:] = 0.0
    n_cols = isect_grad.shape[1]
    for k in range(gids.shape[0]):
        g = gids[k]
        for c in range(n_cols):
            out[g, c] += isect_grad[k, c]
