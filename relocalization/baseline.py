"""hloc-style keyframe baseline: retrieve keyframes, match features, lift with depth, PnP.

The map stores, per mapping keyframe, its keypoints' descriptors and their 3D world points
(back-projected with the keyframe's depth; keypoints without valid depth are dropped). A query
retrieves the top-k keyframes with the same VLAD index as FaVoR, matches its keypoints to each
retrieved keyframe by mutual nearest neighbour (cosine + ratio test), pools the 2D-3D
correspondences (one per query keypoint: the most similar) and runs PnP-RANSAC + LM
refinement. It needs mapping frames with depth (hloc would triangulate an SfM model instead).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatial_memory.errors import ConfigError, EmptyMapError, InvalidFrameError, MapFormatError
from spatial_memory.persistence import load_map_dir, require_tensor, save_map_dir
from spatial_memory.types import CameraIntrinsics, Frame

from .features import LocalFeatures, make_features, mutual_nn
from .mapping import FrameFeatures, _depth_at, check_mapping_frames, extract_sequence
from .pnp import LocalizationResult, confidence, far_from_map, solve_pnp, validate_query
from .retrieval import VladIndex
from .threads import single_threaded_blas

FORMAT_VERSION = 1
KIND = "reloc_keyframes"


@dataclass
class BaselineConfig:
    """Keyframe-baseline parameters."""

    features: str = "xfeat"
    top_k: int = 1024
    retrieval_k: int = 3
    retrieval_words: int = 16
    match_min_cos: float = 0.8
    match_ratio: float = 0.95
    pnp_px: float = 5.0
    min_inliers: int = 12
    max_keyframe_distance_m: float = 2.0  # a pose farther from every keyframe is rejected
    descriptor_dtype: str = "float16"  # storage of the keyframe descriptors

    def validate(self) -> "BaselineConfig":
        if self.retrieval_k < 1:
            raise ConfigError(f"retrieval_k must be >= 1, got {self.retrieval_k}")
        if self.min_inliers < 4:
            raise ConfigError(f"min_inliers must be >= 4, got {self.min_inliers}")
        return self


@dataclass
class KeyframeBaseline:
    """Keyframe database + localiser.

    Attributes:
        kf_start: ``[F+1]`` offsets of each keyframe's features in the flat arrays.
        xyz: ``[N, 3] float64`` world points of all keyframe features.
        descriptors: ``[N, C]`` (float16 on disk and in memory; matched in float32).
        poses: ``[F, 4, 4]`` keyframe poses.
        index: VLAD retrieval index.
    """

    kf_start: np.ndarray
    xyz: np.ndarray
    descriptors: np.ndarray
    poses: np.ndarray
    index: VladIndex
    intrinsics: CameraIntrinsics
    config: BaselineConfig = field(default_factory=BaselineConfig)
    stats: dict = field(default_factory=dict)
    _extractor: LocalFeatures | None = None

    def __len__(self) -> int:
        return int(len(self.poses))

    @classmethod
    def build(
        cls, frames: list[Frame], config: BaselineConfig | None = None, progress: bool = True,
        extractor: LocalFeatures | None = None, features: list[FrameFeatures] | None = None,
    ) -> "KeyframeBaseline":
        """Build from posed RGB-D frames (``features`` may reuse an earlier extraction of the same frames)."""
        cfg = (config or BaselineConfig()).validate()
        intr = check_mapping_frames(frames)
        if any(f.depth is None for f in frames):
            raise InvalidFrameError("the keyframe baseline lifts keypoints with depth: every mapping frame needs depth")
        t0 = time.perf_counter()
        ex = extractor or make_features(cfg.features, top_k=cfg.top_k)
        # The saved config must rebuild the same extractor at load time.
        cfg = dataclasses.replace(cfg, features=ex.name, top_k=int(getattr(ex, "top_k", cfg.top_k)))
        feats = features if features is not None else extract_sequence(frames, ex, dense=False, progress=progress)
        starts, xyz, desc = [0], [], []
        Ki = np.linalg.inv(intr.K)
        for ff in feats:
            kp = ff.keypoints
            d = _depth_at(ff.depth, kp.xy)
            ok = d > 0
            rays = np.c_[kp.xy[ok], np.ones(int(ok.sum()))] @ Ki.T * d[ok, None]
            T = ff.T_world_camera
            xyz.append(rays @ T[:3, :3].T + T[:3, 3])
            desc.append(kp.descriptors[ok])
            starts.append(starts[-1] + int(ok.sum()))
        index = VladIndex.fit([ff.keypoints.descriptors for ff in feats], words=cfg.retrieval_words)
        allx = np.concatenate(xyz)
        if len(allx) == 0:
            raise EmptyMapError("no keyframe keypoint has valid depth")
        base = cls(
            kf_start=np.array(starts, np.int64), xyz=allx, descriptors=np.concatenate(desc).astype(cfg.descriptor_dtype),
            poses=np.stack([ff.T_world_camera for ff in feats]), index=index, intrinsics=intr, config=cfg,
        )
        base.stats = {"frames": len(frames), "points": int(len(allx)), "build_seconds": time.perf_counter() - t0}
        base._extractor = ex
        return base

    @property
    def extractor(self) -> LocalFeatures:
        if self._extractor is None:
            self._extractor = make_features(self.config.features, top_k=self.config.top_k)
        return self._extractor

    @property
    def nbytes(self) -> int:
        return int(
            self.kf_start.nbytes + self.xyz.nbytes + self.descriptors.nbytes + self.poses.nbytes
            + self.index.codebook.nbytes + self.index.descriptors.nbytes
        )

    def save(self, path: str | Path) -> Path:
        meta = {"config": dataclasses.asdict(self.config), "intrinsics": self.intrinsics.to_dict(), "stats": self.stats}
        tensors = {
            "keyframes": {
                "kf_start": self.kf_start, "xyz": self.xyz, "descriptors": self.descriptors, "poses": self.poses,
                "codebook": self.index.codebook, "global": self.index.descriptors,
            }
        }
        return save_map_dir(path, KIND, FORMAT_VERSION, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> "KeyframeBaseline":
        meta, t = load_map_dir(path, KIND, FORMAT_VERSION)
        where = str(path)
        if "keyframes" not in t:
            raise MapFormatError(f"{where}: missing keyframes.safetensors")
        k = t["keyframes"]
        poses = require_tensor(k, "poses", (None, 4, 4), where).numpy()
        F = len(poses)
        start = require_tensor(k, "kf_start", (F + 1,), where).numpy()
        xyz = require_tensor(k, "xyz", (None, 3), where).numpy()
        desc = require_tensor(k, "descriptors", (len(xyz), None), where).numpy()
        if start[-1] != len(xyz):
            raise MapFormatError(f"{where}: kf_start ends at {start[-1]} but there are {len(xyz)} points")
        try:
            cfg = BaselineConfig(**meta["config"])
            intr = CameraIntrinsics.from_dict(meta["intrinsics"])
        except (KeyError, TypeError) as e:
            raise MapFormatError(f"{where}: invalid meta.json ({e})") from None
        index = VladIndex(
            require_tensor(k, "codebook", (None, desc.shape[1]), where).numpy(),
            require_tensor(k, "global", (F, None), where).numpy(),
        )
        return cls(start, xyz, desc, poses, index, intr, cfg, meta.get("stats", {}))

    @single_threaded_blas()  # see relocalization.threads
    def locate(
        self, rgb: np.ndarray, intrinsics: CameraIntrinsics, prior: np.ndarray | None = None, depth: np.ndarray | None = None
    ) -> LocalizationResult:
        """Estimate ``T_world_camera``; ``prior`` (if given) picks the keyframes nearest to it instead of retrieval."""
        prior = validate_query(rgb, intrinsics, self.intrinsics, prior, depth)
        if len(self) == 0 or len(self.xyz) == 0:
            raise EmptyMapError("the keyframe map is empty")
        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        kp = self.extractor.detect(rgb)
        timings["features"] = time.perf_counter() - t0
        if len(kp) < cfg.min_inliers:
            return LocalizationResult(False, None, 0, 0.0, f"only {len(kp)} keypoints in the query image", 0, timings)
        t = time.perf_counter()
        if prior is None:
            kfs, _ = self.index.query(kp.descriptors, cfg.retrieval_k)
        else:
            kfs = np.argsort(np.linalg.norm(self.poses[:, :3, 3] - prior[:3, 3], axis=1))[: cfg.retrieval_k]
        timings["retrieval"] = time.perf_counter() - t
        t = time.perf_counter()
        best_cos = np.full(len(kp), -np.inf, np.float32)
        best_xyz = np.zeros((len(kp), 3))
        for k in kfs:
            s, e = self.kf_start[k], self.kf_start[k + 1]
            ia, ib, c = mutual_nn(
                kp.descriptors, self.descriptors[s:e].astype(np.float32), cfg.match_min_cos, cfg.match_ratio
            )
            better = c > best_cos[ia]
            best_cos[ia[better]] = c[better]
            best_xyz[ia[better]] = self.xyz[s + ib[better]]
        m = np.isfinite(best_cos)
        timings["match"] = time.perf_counter() - t
        n_match = int(m.sum())
        if n_match < cfg.min_inliers:
            timings["total"] = time.perf_counter() - t0
            return LocalizationResult(False, None, 0, 0.0, f"{n_match} matches < {cfg.min_inliers}", 1, timings)
        t = time.perf_counter()
        T, inl = solve_pnp(kp.xy[m], best_xyz[m], intrinsics, cfg.pnp_px)
        timings["pnp"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        inliers = int(inl.sum())
        if T is None or inliers < cfg.min_inliers:
            return LocalizationResult(False, None, inliers, 0.0, f"{inliers} PnP inliers < {cfg.min_inliers}", 1, timings)
        far = far_from_map(T, self.poses, cfg.max_keyframe_distance_m)
        if far is not None:
            return LocalizationResult(False, None, inliers, 0.0, f"pose is {far:.1f} m from every keyframe", 1, timings)
        return LocalizationResult(
            True, T, inliers, confidence(inliers, n_match, cfg.min_inliers), f"{inliers}/{n_match} inliers", 1, timings
        )

    def locate_frame(self, frame: Frame, prior: np.ndarray | None = None) -> LocalizationResult:
        return self.locate(frame.rgb, frame.intrinsics, prior, frame.depth)
