"""Landmark voxel descriptor fields (FaVoR), trained for all landmarks at once.

Each landmark owns an axis-aligned cube centred on it, side ``footprint_px * distance / focal``
(the 3D extent of a 7-pixel patch at the mean observation distance), holding a ``3x3x3``
density grid and a ``3x3x3xC`` descriptor grid with trilinear interpolation. A ray through the
cube is rendered DirectVoxGO-style:

    alpha_i = 1 - (1 + exp(sigma_i + shift)) ** (-interval_i)       (interval in voxels)
    desc    = sum_i T_i alpha_i d_i + T_end * background             (background = 0)

Batching trick: trilinear interpolation is linear in the grid values, so each ray's rendered
descriptor equals ``A @ F`` where ``A [27]`` accumulates the (weights x trilinear coefficients)
of its samples and ``F [27, C]`` is the grid. The per-sample trilinear coefficients are the
outer product of three 1D hat functions, so ``A`` for all landmarks and rays is a couple of
einsums and the descriptor render is a single batched matmul ``[L, R, 27] x [L, 27, C]``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from tqdm import tqdm

from spatial_memory.errors import ConfigError, EmptyMapError

log = logging.getLogger(__name__)

NODES = torch.tensor([-1.0, 0.0, 1.0])


@dataclass
class VoxelConfig:
    """Voxel-field training parameters (FaVoR defaults unless noted)."""

    footprint_px: float = 7.0
    samples_per_ray: int = 8  # ~0.25-0.45 voxel steps through the 2-voxel cube (paper: 0.1)
    rays_per_landmark: int = 32  # drawn once per landmark from its patches; paper: 1024 per iteration
    iterations: int = 50  # paper: 2000 per landmark; the median-descriptor init converges fast
    lr_density: float = 0.1
    lr_descriptor: float = 0.01
    w_cos: float = 0.2
    w_entropy: float = 0.1
    w_tv: float = 0.01
    tv_from: float = 0.5  # fraction of iterations after which TV is switched on
    alpha_init: float = 0.01
    fit_min_cos: float = 0.85
    max_landmarks: int = 20000
    chunk_landmarks: int = 4096  # landmarks per optimisation chunk (bounds memory)
    seed: int = 0
    device: str = "cpu"  # torch device of the training tensors (results always come back to CPU)

    def validate(self) -> "VoxelConfig":
        if self.samples_per_ray < 2 or self.rays_per_landmark < 1 or self.iterations < 1:
            raise ConfigError("samples_per_ray >= 2, rays_per_landmark >= 1 and iterations >= 1 are required")
        if not 0.0 < self.alpha_init < 1.0:
            raise ConfigError(f"alpha_init must be in (0, 1), got {self.alpha_init}")
        return self

    @property
    def shift(self) -> float:
        return math.log(1.0 / (1.0 - self.alpha_init) - 1.0)


@dataclass
class VoxelFields:
    """The trained fields of ``L`` landmarks.

    Attributes:
        centers: ``[L, 3] float64`` world cube centres (the landmarks).
        half_side: ``[L] float64`` half the cube side (metres); one voxel = ``half_side``.
        density: ``[L, 27] float32`` raw density at the grid nodes, node index ``9*ix + 3*iy + iz``.
        descriptors: ``[L, 27, C] float32``.
        fit_cos: ``[L] float32`` mean cosine between rendered and stored observation descriptors.
        shift: density shift of the alpha activation.
    """

    centers: np.ndarray
    half_side: np.ndarray
    density: torch.Tensor
    descriptors: torch.Tensor
    fit_cos: np.ndarray
    shift: float

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    def subset(self, idx: np.ndarray) -> "VoxelFields":
        t = torch.from_numpy(np.asarray(idx, np.int64))
        return VoxelFields(
            self.centers[idx], self.half_side[idx], self.density[t], self.descriptors[t], self.fit_cos[idx], self.shift
        )

    def render(self, origins: np.ndarray, idx: np.ndarray | None = None, samples: int = 8) -> np.ndarray:
        """One descriptor per landmark seen from ``origins``: the ray through the landmark centre.

        Args:
            origins: ``[3]`` (one camera) or ``[L', 3]`` camera centres in the world.
            idx: ``[L']`` landmarks to render (all when None).

        Returns:
            ``[L', C] float32`` L2-normalised descriptors.
        """
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, np.int64)
        if len(idx) == 0:
            return np.zeros((0, self.descriptors.shape[-1]), np.float32)
        origins = np.asarray(origins, np.float64)
        o = np.ascontiguousarray(np.broadcast_to(origins, (len(idx), 3)) if origins.ndim == 1 else origins)
        # the kernel reads the landmarks it needs in place (a torch gather would copy 27 x C floats each)
        return _render_centre_rays(
            o, idx, self.centers, self.half_side, self.density.detach().float().contiguous().numpy(),
            self.descriptors.detach().float().contiguous().numpy(), float(self.shift), int(samples),
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        return int(self.density.numel() * 4 + self.descriptors.numel() * 4 + self.centers.nbytes + self.half_side.nbytes)


@njit(cache=True, parallel=True, fastmath=False)
def _render_centre_rays(
    origins: np.ndarray, idx: np.ndarray, centers: np.ndarray, half_side: np.ndarray, density: np.ndarray,
    descriptors: np.ndarray, shift: float, samples: int,
) -> np.ndarray:
    """Inference-only twin of :func:`ray_weights` + ``A @ F`` for one ray per landmark, from
    ``origins [L', 3]`` through the centres of landmarks ``idx [L']``: ``[L', C]`` L2-normalised.

    Same maths as the torch path used in training (cube units, ``samples`` midpoints between the
    entry and exit of ``[-1, 1]^3``, trilinear "hat" weights on nodes -1/0/1, alpha
    ``1 - exp(-interval softplus(sigma + shift))``), without the per-landmark gathers and
    temporaries of batched tensor code.
    """
    n = len(idx)
    C = descriptors.shape[2]
    out = np.zeros((n, C), np.float32)
    for q in prange(n):
        k = idx[q]
        h = half_side[k]
        ox, oy, oz = (origins[q, 0] - centers[k, 0]) / h, (origins[q, 1] - centers[k, 1]) / h, (origins[q, 2] - centers[k, 2]) / h
        on = max(math.sqrt(ox * ox + oy * oy + oz * oz), 1e-9)
        o = (ox, oy, oz)
        d = (-ox / on, -oy / on, -oz / on)
        t0, t1 = 0.0, np.inf
        for a in range(3):
            da = d[a] if abs(d[a]) >= 1e-9 else 1e-9
            ta, tb = (-1.0 - o[a]) / da, (1.0 - o[a]) / da
            t0 = max(t0, min(ta, tb))
            t1 = min(t1, max(ta, tb))
        if not (t1 > t0):
            continue
        span = t1 - t0
        interval = span * math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) / samples
        A = np.zeros(27)
        w27 = np.empty(27)
        log_t = 0.0
        for si in range(samples):
            ts = t0 + span * (si + 0.5) / samples
            px = min(1.0, max(-1.0, o[0] + ts * d[0]))
            py = min(1.0, max(-1.0, o[1] + ts * d[1]))
            pz = min(1.0, max(-1.0, o[2] + ts * d[2]))
            sigma = 0.0
            j = 0
            for ix in range(3):
                wx = max(0.0, 1.0 - abs(px - (ix - 1.0)))
                for iy in range(3):
                    wxy = wx * max(0.0, 1.0 - abs(py - (iy - 1.0)))
                    for iz in range(3):
                        w = wxy * max(0.0, 1.0 - abs(pz - (iz - 1.0)))
                        w27[j] = w
                        sigma += w * density[k, j]
                        j += 1
            x = sigma + shift
            softplus = x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))
            lt = -interval * softplus
            weight = math.exp(log_t) * (1.0 - math.exp(lt))
            log_t += lt
            for j in range(27):
                A[j] += weight * w27[j]
        acc = np.zeros(C)
        for j in range(27):  # row-wise: contiguous reads of the [27, C] grid
            aj = A[j]
            for c in range(C):
                acc[c] += aj * descriptors[k, j, c]
        norm = 0.0
        for c in range(C):
            norm += acc[c] * acc[c]
        norm = max(math.sqrt(norm), 1e-12)
        for c in range(C):
            out[q, c] = acc[c] / norm
    return out


def hat(x: torch.Tensor) -> torch.Tensor:
    """1D linear-interpolation weights of positions ``x: [...]`` in [-1, 1] on nodes -1, 0, 1 -> ``[..., 3]``."""
    return (1.0 - (x[..., None] - NODES.to(x)).abs()).clamp_min(0.0)


def ray_box(o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit ray parameters of rays ``o + t d`` (``[..., 3]``) with the cube ``[-1, 1]^3``."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    ta, tb = (-1.0 - o) * inv, (1.0 - o) * inv
    t0 = torch.minimum(ta, tb).amax(-1).clamp_min(0.0)
    t1 = torch.maximum(ta, tb).amin(-1)
    return t0, t1


def ray_geometry(o: torch.Tensor, d: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parameter-free part of rendering: sample positions along rays through the landmarks' cubes.

    Args:
        o: ``[L, R, 3]`` ray origins and d ``[L, R, 3]`` directions, in cube units (node spacing 1).

    Returns:
        ``W [L, R, S, 27]`` trilinear coefficients of each sample, ``interval [L, R, 1]`` step
        length in voxels, ``hit [L, R] bool`` (rays that cross the cube).
    """
    t0, t1 = ray_box(o, d)
    hit = t1 > t0
    span = (t1 - t0).clamp_min(0.0)
    frac = (torch.arange(samples, dtype=o.dtype, device=o.device) + 0.5) / samples
    ts = t0[..., None] + span[..., None] * frac  # [L, R, S]
    p = (o[..., None, :] + ts[..., None] * d[..., None, :]).clamp(-1.0, 1.0)  # [L, R, S, 3]
    hx, hy, hz = hat(p[..., 0]), hat(p[..., 1]), hat(p[..., 2])
    W = (hx[..., :, None, None] * hy[..., None, :, None] * hz[..., None, None, :]).reshape(*p.shape[:3], 27)
    interval = (span * d.norm(dim=-1) / samples)[..., None]
    return W, interval, hit


def composite(
    W: torch.Tensor, interval: torch.Tensor, hit: torch.Tensor, density: torch.Tensor, shift: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha compositing of the density grid ``[L, 27]`` along rays from :func:`ray_geometry`.

    Returns:
        ``A [L, R, 27]`` (rendered descriptor = ``A @ F``) and accumulated opacity ``[L, R]``.
    """
    sigma = torch.einsum("lrsk,lk->lrs", W, density)
    # 1 - (1 + e^(s+shift))^(-interval) == 1 - exp(-interval * softplus(s + shift))
    log_trans = -interval * torch.nn.functional.softplus(sigma + shift)
    alpha = 1.0 - torch.exp(log_trans)
    T = torch.exp(torch.cumsum(log_trans, dim=-1) - log_trans)  # exclusive cumulative product
    w = (T * alpha) * hit[..., None]
    return torch.einsum("lrs,lrsk->lrk", w, W), w.sum(-1)


def ray_weights(
    o: torch.Tensor, d: torch.Tensor, density: torch.Tensor, shift: float, samples: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ray_geometry` then :func:`composite`: ``A [L, R, 27]``, opacity ``[L, R]``, hit ``[L, R]``."""
    W, interval, hit = ray_geometry(o, d, samples)
    A, acc = composite(W, interval, hit, density, shift)
    return A, acc, hit


@dataclass
class TrainingData:
    """Rays of every observation patch, flattened per landmark.

    Attributes:
        centers ``[L, 3]``, half_side ``[L]``; obs_start ``[L]``, obs_count ``[L]`` into the obs arrays;
        obs_origin ``[O, 3]`` camera centres; obs_dirmat ``[O, 3, 3]`` maps homogeneous pixels to world
        directions (``R_wc K^-1``); obs_xy ``[O, 2]``; patches ``[O, P*P, C] float16``; patch_size ``P``.
    """

    centers: np.ndarray
    half_side: np.ndarray
    obs_start: np.ndarray
    obs_count: np.ndarray
    obs_origin: np.ndarray
    obs_dirmat: np.ndarray
    obs_xy: np.ndarray
    patches: np.ndarray
    patch_size: int


def make_training_data(landmarks, poses: np.ndarray, K: np.ndarray, cfg: VoxelConfig) -> TrainingData:
    """Assemble ray data from a :class:`relocalization.mapping.LandmarkSet` and keyframe poses ``[F, 4, 4]``."""
    order = np.argsort(landmarks.obs_landmark, kind="stable")
    lm = landmarks.obs_landmark[order]
    L = len(landmarks)
    count = np.bincount(lm, minlength=L)
    if (count == 0).any():
        raise EmptyMapError("a landmark has no stored observation patch")
    start = np.r_[0, np.cumsum(count)[:-1]]
    frames = landmarks.obs_frame[order]
    P = landmarks.obs_patches.shape[1]
    Ki = np.linalg.inv(K)
    return TrainingData(
        centers=landmarks.points.astype(np.float64),
        half_side=0.5 * cfg.footprint_px * landmarks.mean_dist.astype(np.float64) / K[0, 0],
        obs_start=start,
        obs_count=count,
        obs_origin=poses[frames, :3, 3],
        obs_dirmat=poses[frames, :3, :3] @ Ki,
        obs_xy=landmarks.obs_xy[order].astype(np.float64),
        patches=landmarks.obs_patches[order].reshape(len(order), P * P, -1),
        patch_size=P,
    )


def _rays_local(data: TrainingData, lm: np.ndarray, obs: np.ndarray, pix: np.ndarray):
    """Local-cube rays of landmarks ``lm: [L]`` for ``obs: [L, R]`` observation rows and ``pix: [L, R]`` patch cells.

    Returns origins and directions ``[L, R, 3]`` in cube units.
    """
    P = data.patch_size
    r = (P - 1) / 2.0
    du = pix % P - r
    dv = pix // P - r
    uv1 = np.stack([data.obs_xy[obs, 0] + du, data.obs_xy[obs, 1] + dv, np.ones(obs.shape)], -1)
    d = np.einsum("lrij,lrj->lri", data.obs_dirmat[obs], uv1)
    h = data.half_side[lm][:, None, None]
    o = (data.obs_origin[obs] - data.centers[lm][:, None]) / h
    return torch.from_numpy(o).float(), torch.from_numpy(d / h).float()


def _entropy(acc: torch.Tensor) -> torch.Tensor:
    a = acc.clamp(1e-5, 1 - 1e-5)
    return -(a * a.log() + (1 - a) * (1 - a).log())


def _tv(density: torch.Tensor) -> torch.Tensor:
    g = density.view(-1, 3, 3, 3)
    return (
        (g[:, 1:] - g[:, :-1]).pow(2).mean() + (g[:, :, 1:] - g[:, :, :-1]).pow(2).mean()
        + (g[:, :, :, 1:] - g[:, :, :, :-1]).pow(2).mean()
    )


def _train_chunk(data: TrainingData, lm: np.ndarray, init_desc: np.ndarray, cfg: VoxelConfig, rng, bar) -> tuple:
    """Optimise the fields of landmarks ``lm: [L]`` jointly.

    The rays (``rays_per_landmark`` per landmark, drawn once from the stored patches) are fixed
    for the chunk, so their sample geometry is computed once and every iteration is three
    batched contractions plus the loss.
    """
    L, R = len(lm), cfg.rays_per_landmark
    C = data.patches.shape[-1]
    obs = data.obs_start[lm][:, None] + (rng.random((L, R)) * data.obs_count[lm][:, None]).astype(np.int64)
    pix = rng.integers(0, data.patch_size**2, size=(L, R))
    dev = torch.device(cfg.device)
    o, d = (x.to(dev) for x in _rays_local(data, lm, obs, pix))
    target = torch.from_numpy(data.patches[obs, pix].astype(np.float32)).to(dev)  # [L, R, C]
    W, interval, hit = ray_geometry(o, d, cfg.samples_per_ray)
    m = hit.float()
    n = m.sum().clamp_min(1.0)
    density = torch.zeros(L, 27, device=dev, requires_grad=True)
    feats = torch.from_numpy(np.repeat(init_desc[:, None, :], 27, axis=1)).float().to(dev).requires_grad_(True)
    opt = torch.optim.Adam([{"params": [density], "lr": cfg.lr_density}, {"params": [feats], "lr": cfg.lr_descriptor}])
    losses = []
    for it in range(cfg.iterations):
        A, acc = composite(W, interval, hit, density, cfg.shift)
        pred = torch.bmm(A, feats)
        mse = (((pred - target) ** 2).mean(-1) * m).sum() / n
        cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-8)
        # MSE is scaled by C: unit descriptors have per-channel values ~1/sqrt(C).
        loss = mse * C + cfg.w_cos * ((1 - cos) * m).sum() / n + cfg.w_entropy * (_entropy(acc) * m).sum() / n
        if it >= cfg.tv_from * cfg.iterations:
            loss = loss + cfg.w_tv * _tv(density)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if bar is not None:
            bar.update(1)
    # One host sync at the end instead of one per iteration (matters on CUDA).
    return density.detach().cpu(), feats.detach().cpu(), torch.stack(losses).cpu().tolist()


def evaluate_fit(fields: VoxelFields, data: TrainingData, samples: int) -> np.ndarray:
    """Mean cosine between the rendered descriptor and the stored centre-pixel descriptor of every
    observation, per landmark ``[L]`` (the centre ray of each observation patch)."""
    L = len(fields)
    lm = np.repeat(np.arange(L), data.obs_count)
    obs = np.arange(len(lm))
    P = data.patch_size
    centre = (P // 2) * P + P // 2
    o, d = _rays_local(data, lm, obs[:, None], np.full((len(lm), 1), centre))
    t = torch.from_numpy(lm)
    with torch.no_grad():
        A, _, _ = ray_weights(o, d, fields.density[t], fields.shift, samples)
        pred = torch.bmm(A, fields.descriptors[t])[:, 0]
    target = torch.from_numpy(data.patches[obs, centre].astype(np.float32))
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=-1, eps=1e-8).numpy()
    return (np.bincount(lm, cos, minlength=L) / np.maximum(data.obs_count, 1)).astype(np.float32)


def train_fields(
    data: TrainingData, init_desc: np.ndarray, cfg: VoxelConfig, progress: bool = True
) -> tuple[VoxelFields, dict]:
    """Train all landmarks' fields as batched tensors (chunks of ``chunk_landmarks``).

    Args:
        init_desc: ``[L, C]`` descriptor each grid starts from (the landmark's median descriptor).

    Returns:
        the fields of *all* landmarks (with ``fit_cos``) and stats: ``landmarks_per_s`` (wall),
        ``landmarks_per_cpu_s``, ``seconds``, ``cpu_seconds``, ``loss_first``, ``loss_last``.
    """
    cfg.validate()
    L = len(data.centers)
    if L == 0:
        raise EmptyMapError("no landmarks to train")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    chunks = [np.arange(s, min(s + cfg.chunk_landmarks, L)) for s in range(0, L, cfg.chunk_landmarks)]
    dens, feats, first, last = [], [], [], []
    t0, c0 = time.perf_counter(), time.process_time()
    with tqdm(total=cfg.iterations * len(chunks), desc=f"voxel fields ({L} landmarks)", disable=not progress, leave=False) as bar:
        for lm in chunks:
            d, f, losses = _train_chunk(data, lm, init_desc[lm], cfg, rng, bar)
            dens.append(d)
            feats.append(f)
            first.append(np.mean(losses[: max(1, len(losses) // 20)]))
            last.append(np.mean(losses[-max(1, len(losses) // 20) :]))
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    fields = VoxelFields(
        centers=data.centers, half_side=data.half_side, density=torch.cat(dens), descriptors=torch.cat(feats),
        fit_cos=np.zeros(L, np.float32), shift=cfg.shift,
    )
    fields.fit_cos = evaluate_fit(fields, data, cfg.samples_per_ray)
    stats = {
        "landmarks": L, "seconds": secs, "landmarks_per_s": L / max(secs, 1e-9),
        # CPU time of this process (all threads): robust to other processes sharing the machine.
        "cpu_seconds": cpu, "landmarks_per_cpu_s": L / max(cpu, 1e-9),
        "loss_first": float(np.mean(first)), "loss_last": float(np.mean(last)),
        "fit_cos_median": float(np.median(fields.fit_cos)),
    }
    log.info("trained %d landmark fields in %.1f s (%.0f landmarks/s)", L, secs, stats["landmarks_per_s"])
    return fields, stats


def select_landmarks(fit_cos: np.ndarray, n_obs: np.ndarray, min_cos: float, budget: int) -> np.ndarray:
    """Indices of landmarks with ``fit_cos >= min_cos``, the most observed (then best fitting) first, at most ``budget``."""
    good = np.flatnonzero(fit_cos >= min_cos)
    order = np.lexsort((-fit_cos[good], -n_obs[good]))
    return np.sort(good[order[:budget]])
