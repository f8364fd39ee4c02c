"""FaVoR: camera relocalization against landmark voxel descriptor fields.

``FavorMap.build`` turns a posed RGB(-D) sequence into landmarks with trained 3x3x3 voxel
fields (see :mod:`relocalization.mapping`, :mod:`relocalization.voxels`); ``FavorRelocalizer``
localises a query image:

1. prior = the given pose, else the top retrieved keyframes' poses (tried in order);
2. project the landmarks; drop those outside the (margin-enlarged) view, behind the camera or
   *occluded*: farther than the stored low-resolution depth of the keyframe nearest to the
   prior says the surface is (the original FaVoR has no occlusion handling);
3. render one descriptor per visible landmark along the ray from the prior camera centre;
4. mutual-NN match against the query keypoints' descriptors (cosine + ratio thresholds),
   restricted to a window around each projection after the first round;
5. PnP-RANSAC (poselib, 5 px) with LM refinement on the inliers; repeat from the new pose;
6. geometric refinement: associate every visible landmark with the nearest compatible detection
   of a denser candidate set in shrinking windows (4, 1.5 px) and solve again (ours).

A result is a success only with at least ``min_inliers`` PnP inliers; a blank image, or a
prior from which no landmark is visible, fails instead of returning a guess. When no prior
succeeds, one more pass with a looser ratio test must reach ``fallback_min_inliers``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatial_memory.errors import ConfigError, EmptyMapError, MapFormatError
from spatial_memory.geometry import invert_pose
from spatial_memory.persistence import load_map_dir, require_tensor, save_map_dir
from spatial_memory.types import CameraIntrinsics, Frame

from .features import Keypoints, LocalFeatures, make_features, match_in_windows, mutual_nn
from .mapping import KeyframeSet, MapConfig, build_keyframes, build_landmarks, check_mapping_frames, extract_sequence
from .pnp import LocalizationResult, confidence, far_from_map, solve_pnp, validate_query
from .retrieval import VladIndex
from .threads import single_threaded_blas
from .voxels import VoxelConfig, VoxelFields, make_training_data, select_landmarks, train_fields

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "favor"


@dataclass
class LocateConfig:
    """Localisation parameters."""

    iterations: int = 2  # descriptor rounds (geometric refinement rounds follow)
    retrieval_k: int = 3  # priors tried (in retrieval order) when no prior is given
    early_stop_inliers: int = 100  # stop trying further priors once a pose has this many inliers
    match_min_cos: float = 0.75
    match_ratio: float = 0.95
    window_px: tuple[float, ...] = (0.0, 8.0)  # per round; 0 = whole image
    view_margin_frac: float = 0.3  # landmarks projecting this far outside the prior view still count
    occlusion_rel_tol: float = 0.1
    occlusion_abs_tol: float = 0.05
    pnp_px: float = 5.0
    final_pnp_px: float = 3.0  # RANSAC threshold of the last round (the pose is close by then)
    min_inliers: int = 20  # PnP inliers of the descriptor rounds; fewer: refuse (12 let a 48 cm pose through)
    # When no prior reaches min_inliers, the priors are tried once more with a looser ratio test
    # (repetitive texture, e.g. a wooden floor, fails 0.95) but a higher bar on support, since
    # looser matching also makes spurious poses easier (> fallback_ratio = off).
    fallback_ratio: float = 0.98
    fallback_min_inliers: int = 30
    max_landmarks: int = 5000  # visible landmarks rendered per round, the best-observed first
    # Geometric refinement after the descriptor rounds: every landmark visible from the current
    # pose is associated with the *nearest* candidate detection within a shrinking window
    # (descriptor cosine >= match_min_cos), against a denser candidate set (weaker detections
    # too), then PnP again. Empty = off.
    refine_windows_px: tuple[float, ...] = (4.0, 1.5)
    refine_max_px: float = 2.0  # PnP-RANSAC threshold cap of the refinement rounds
    rerender_distance_m: float = 0.1  # re-render descriptors once the pose estimate moved this far
    candidate_top_k: int = 8192
    candidate_threshold: float = 0.01
    max_keyframe_distance_m: float = 2.0  # a pose farther from every keyframe is rejected

    def validate(self) -> "LocateConfig":
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.min_inliers < 4:
            raise ConfigError(f"min_inliers must be >= 4 (P3P needs 4 with a check), got {self.min_inliers}")
        if self.fallback_min_inliers < self.min_inliers:
            raise ConfigError(f"fallback_min_inliers ({self.fallback_min_inliers}) must be >= min_inliers ({self.min_inliers})")
        if any(w <= 0 for w in self.refine_windows_px) or self.refine_max_px <= 0:
            raise ConfigError(f"refine windows / refine_max_px must be > 0, got {self.refine_windows_px} / {self.refine_max_px}")
        return self


@dataclass
class FavorConfig:
    """Everything a FaVoR map is built and queried with."""

    map: MapConfig = field(default_factory=MapConfig)
    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    locate: LocateConfig = field(default_factory=LocateConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FavorConfig":
        try:
            m = dict(d.get("map", {}))
            if "keyframe_depth_wh" in m:
                m["keyframe_depth_wh"] = tuple(m["keyframe_depth_wh"])
            loc = dict(d.get("locate", {}))
            for key in ("window_px", "refine_windows_px"):
                if key in loc:
                    loc[key] = tuple(loc[key])
            return cls(MapConfig(**m), VoxelConfig(**d.get("voxel", {})), LocateConfig(**loc))
        except TypeError as e:
            raise ConfigError(f"invalid FaVoR config: {e}") from None


@dataclass
class FavorMap:
    """A FaVoR map: landmark voxel fields + keyframe retrieval/occlusion data.

    Attributes:
        fields: the kept landmarks' voxel fields (``L`` landmarks).
        n_obs: ``[L]`` observations per landmark.
        keyframes: poses, VLAD index and low-resolution depth of the mapping frames.
        intrinsics: the camera the map was built with (queries must match it).
        features: local feature extractor name.
        config: build/query configuration.
        stats: build statistics (seconds, landmarks/s, counts).
    """

    fields: VoxelFields
    n_obs: np.ndarray
    keyframes: KeyframeSet
    intrinsics: CameraIntrinsics
    features: str
    config: FavorConfig
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.fields)

    @classmethod
    def build(cls, frames: list[Frame], config: FavorConfig | None = None, progress: bool = True,
              extractor: LocalFeatures | None = None) -> "FavorMap":
        """Build from posed frames (depth optional but recommended: it fixes scale-free triangulation
        failures and enables occlusion checks)."""
        cfg = config or FavorConfig()
        cfg.map.validate()
        cfg.voxel.validate()
        cfg.locate.validate()
        intr = check_mapping_frames(frames)
        t0 = time.perf_counter()
        ex = extractor or make_features(cfg.map.features, top_k=cfg.map.top_k)
        if not ex.is_dense:
            raise ConfigError(f"FaVoR needs dense descriptors; features {ex.name!r} have none (use 'xfeat')")
        # The saved config must rebuild the same extractor at query time.
        cfg = dataclasses.replace(
            cfg, map=dataclasses.replace(cfg.map, features=ex.name, top_k=int(getattr(ex, "top_k", cfg.map.top_k)))
        )
        feats = extract_sequence(frames, ex, dense=True, progress=progress)
        t_feat = time.perf_counter() - t0
        lms = build_landmarks(feats, intr, ex, cfg.map, progress)
        kfs = build_keyframes(frames, feats, cfg.map)
        t_track = time.perf_counter() - t0 - t_feat
        data = make_training_data(lms, kfs.poses, intr.K, cfg.voxel)
        fields, tstats = train_fields(data, lms.descriptors, cfg.voxel, progress)
        keep = select_landmarks(fields.fit_cos, lms.n_obs, cfg.voxel.fit_min_cos, cfg.voxel.max_landmarks)
        if len(keep) == 0:
            raise EmptyMapError(f"no landmark field reached the fit threshold cos >= {cfg.voxel.fit_min_cos}")
        stats = {
            "frames": len(frames), "tracked_landmarks": len(lms), "kept_landmarks": int(len(keep)),
            "feature_seconds": t_feat, "tracking_seconds": t_track, "training_seconds": tstats["seconds"],
            "landmarks_per_s": tstats["landmarks_per_s"], "landmarks_per_cpu_s": tstats["landmarks_per_cpu_s"],
            "loss_first": tstats["loss_first"],
            "loss_last": tstats["loss_last"], "fit_cos_median": tstats["fit_cos_median"],
            "build_seconds": time.perf_counter() - t0,
        }
        log.info("FaVoR map: %d/%d landmarks kept, built in %.1f s", len(keep), len(lms), stats["build_seconds"])
        fields = fields.subset(keep)
        # Descriptors are stored as float16; rounding them here makes a loaded map localise
        # exactly like the one just built.
        fields.descriptors = fields.descriptors.half().float()
        return cls(fields, lms.n_obs[keep], kfs, intr, ex.name, cfg, stats)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the map directory (safetensors + meta.json, atomic)."""
        f, k = self.fields, self.keyframes
        meta = {
            "config": self.config.to_dict(), "intrinsics": self.intrinsics.to_dict(), "features": self.features,
            "shift": f.shift, "stats": self.stats,
        }
        tensors = {
            "landmarks": {
                "centers": f.centers.astype(np.float64), "half_side": f.half_side.astype(np.float64),
                "density": f.density.float(),
                # float16 halves the largest tensor (27 x C per landmark); loaded back as float32.
                "descriptors": f.descriptors.half(),
                "fit_cos": f.fit_cos.astype(np.float32), "n_obs": self.n_obs.astype(np.int64),
            },
            "keyframes": {
                "poses": k.poses.astype(np.float64), "depth_small": k.depth_small.astype(np.float16),
                "codebook": k.index.codebook, "global": k.index.descriptors, "frame_ids": k.frame_ids.astype(np.int64),
            },
        }
        return save_map_dir(path, KIND, FORMAT_VERSION, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> "FavorMap":
        """Read a map written by :meth:`save`. Raises MapFormatError (wrong kind/version/shape)."""
        meta, t = load_map_dir(path, KIND, FORMAT_VERSION)
        where = str(path)
        try:
            lm, kf = t["landmarks"], t["keyframes"]
        except KeyError as e:
            raise MapFormatError(f"{where}: missing tensor file {e}") from None
        centers = require_tensor(lm, "centers", (None, 3), where).numpy()
        L = len(centers)
        desc = require_tensor(lm, "descriptors", (L, 27, None), where)
        poses = require_tensor(kf, "poses", (None, 4, 4), where).numpy()
        F = len(poses)
        try:
            intr = CameraIntrinsics.from_dict(meta["intrinsics"])
            cfg = FavorConfig.from_dict(meta.get("config", {}))
            shift = float(meta["shift"])
            feats = str(meta["features"])
        except (KeyError, TypeError, ValueError) as e:
            raise MapFormatError(f"{where}: meta.json lacks or has an invalid field ({e})") from None
        fields = VoxelFields(
            centers=centers, half_side=require_tensor(lm, "half_side", (L,), where).numpy(),
            density=require_tensor(lm, "density", (L, 27), where).float(), descriptors=desc.float(),
            fit_cos=require_tensor(lm, "fit_cos", (L,), where).numpy(), shift=shift,
        )
        index = VladIndex(
            require_tensor(kf, "codebook", (None, desc.shape[-1]), where).numpy(),
            require_tensor(kf, "global", (F, None), where).numpy(),
        )
        kfs = KeyframeSet(
            poses=poses, depth_small=require_tensor(kf, "depth_small", (F, None, None), where).float().numpy(),
            index=index, intrinsics=intr, frame_ids=require_tensor(kf, "frame_ids", (F,), where).numpy(),
        )
        return cls(fields, require_tensor(lm, "n_obs", (L,), where).numpy(), kfs, intr, feats, cfg, meta.get("stats", {}))

    @property
    def nbytes(self) -> int:
        """Bytes of the map's arrays (what ``save`` writes, give or take the JSON)."""
        k = self.keyframes
        return int(
            self.fields.nbytes - self.fields.descriptors.numel() * 2 + self.n_obs.nbytes + k.poses.nbytes + k.depth_small.size * 2
            + k.index.codebook.nbytes + k.index.descriptors.nbytes
        )


def visible_landmarks(
    centers: np.ndarray, T_world_camera: np.ndarray, intr: CameraIntrinsics, margin_frac: float, near: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks in front of the camera projecting inside the image enlarged by ``margin_frac``.

    Returns:
        indices ``[V]`` and their pixels ``[V, 2]``.
    """
    T_cw = invert_pose(T_world_camera)
    pc = centers @ T_cw[:3, :3].T + T_cw[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([intr.fx * pc[:, 0] / z + intr.cx, intr.fy * pc[:, 1] / z + intr.cy], axis=1)
    mx, my = margin_frac * intr.width, margin_frac * intr.height
    ok = (z > near) & (uv[:, 0] >= -mx) & (uv[:, 0] < intr.width + mx) & (uv[:, 1] >= -my) & (uv[:, 1] < intr.height + my)
    idx = np.flatnonzero(ok)
    return idx, uv[idx]


def nearest_keyframe(poses: np.ndarray, T: np.ndarray, metres_per_rad: float = 1.0) -> int:
    """Keyframe closest to ``T`` by ``|dt| + metres_per_rad * angle``."""
    dt = np.linalg.norm(poses[:, :3, 3] - T[:3, 3], axis=1)
    cosang = (np.einsum("kij,ij->k", poses[:, :3, :3], T[:3, :3]) - 1.0) / 2.0
    return int(np.argmin(dt + metres_per_rad * np.arccos(np.clip(cosang, -1, 1))))


def occluded(
    points: np.ndarray, T_world_kf: np.ndarray, depth_small: np.ndarray, intr_small: CameraIntrinsics,
    rel_tol: float, abs_tol: float,
) -> np.ndarray:
    """``[N] bool``: points behind the surface the keyframe's depth map saw along their pixel.

    Points outside the keyframe's view or on unknown depth are not judged (False).
    """
    T_cw = invert_pose(T_world_kf)
    pc = points @ T_cw[:3, :3].T + T_cw[:3, 3]
    z = pc[:, 2]
    out = np.zeros(len(points), bool)
    front = z > 1e-3
    if not front.any():
        return out
    u = np.round(intr_small.fx * pc[front, 0] / z[front] + intr_small.cx).astype(int)
    v = np.round(intr_small.fy * pc[front, 1] / z[front] + intr_small.cy).astype(int)
    h, w = depth_small.shape
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d = np.zeros(len(u), np.float32)
    d[inside] = depth_small[v[inside], u[inside]]
    zz = z[front]
    occ = (d > 0) & (zz > d + np.maximum(abs_tol, rel_tol * d))
    out[np.flatnonzero(front)] = occ
    return out


class RenderCache:
    """Rendered landmark descriptors, reused while the camera centre stays within ``rerender_m``
    of where they were rendered (the fields are view-dependent: a retrieval prior can be a metre
    from the query, the refined pose is not)."""

    def __init__(self, fields: VoxelFields, rerender_m: float) -> None:
        self.fields, self.rerender_m = fields, rerender_m
        self.origin: np.ndarray | None = None
        self.row = np.full(len(fields), -1, np.int64)
        self.parts: list[np.ndarray] = []
        self.size = 0

    def get(self, idx: np.ndarray, origin: np.ndarray) -> np.ndarray:
        """``[len(idx), C]`` descriptors of landmarks ``idx`` seen from ``origin [3]``."""
        if self.origin is None or np.linalg.norm(origin - self.origin) > self.rerender_m:
            self.origin, self.parts, self.size = np.array(origin, np.float64), [], 0
            self.row[:] = -1
        todo = idx[self.row[idx] < 0]
        if len(todo):
            self.row[todo] = np.arange(self.size, self.size + len(todo))
            self.parts.append(self.fields.render(self.origin, todo))
            self.size += len(todo)
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        if not self.parts:
            return np.zeros((0, self.fields.descriptors.shape[-1]), np.float32)
        return self.parts[0][self.row[idx]]


class FavorRelocalizer:
    """Localise query images against a :class:`FavorMap`."""

    def __init__(self, fmap: FavorMap, config: LocateConfig | None = None, extractor: LocalFeatures | None = None) -> None:
        if len(fmap) == 0:
            raise EmptyMapError("the FaVoR map has no landmarks")
        self.map = fmap
        self.config = (config or fmap.config.locate).validate()
        self.extractor = extractor or make_features(fmap.features, top_k=fmap.config.map.top_k)
        if self.extractor.name != fmap.features:
            raise ConfigError(f"map was built with {fmap.features!r} features, extractor is {self.extractor.name!r}")

    @single_threaded_blas()  # see relocalization.threads
    def locate(
        self, rgb: np.ndarray, intrinsics: CameraIntrinsics, prior: np.ndarray | None = None, depth: np.ndarray | None = None
    ) -> LocalizationResult:
        """Estimate ``T_world_camera`` of ``rgb: [H, W, 3] uint8``.

        Args:
            intrinsics: the query camera; must equal the map's camera.
            prior: optional ``[4, 4]`` initial camera-to-world pose; else retrieval picks it.
            depth: accepted for interface parity; FaVoR localises from RGB only.

        Raises:
            InvalidFrameError, InvalidPoseError, EmptyMapError.
        """
        prior = validate_query(rgb, intrinsics, self.map.intrinsics, prior, depth)
        if len(self.map) == 0:
            raise EmptyMapError("the FaVoR map has no landmarks")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        cfg = self.config
        cand = None
        if cfg.refine_windows_px and hasattr(self.extractor, "detect_with_candidates"):
            kp, cand = self.extractor.detect_with_candidates(rgb, cfg.candidate_top_k, cfg.candidate_threshold)
        else:
            kp = self.extractor.detect(rgb)
        timings["features"] = time.perf_counter() - t0
        if len(kp) < cfg.min_inliers:
            return LocalizationResult(False, None, 0, 0.0, f"only {len(kp)} keypoints in the query image", 0, timings)
        t1 = time.perf_counter()
        if prior is not None:
            priors = [prior]
        else:
            idx, _ = self.map.keyframes.index.query(kp.descriptors, cfg.retrieval_k)
            priors = [self.map.keyframes.poses[i] for i in idx]
        timings["retrieval"] = time.perf_counter() - t1
        # Every retrieved prior is refined (a wrong retrieval can still yield a "successful" pose
        # with few inliers); the pose with the most inliers wins. A well-supported pose ends the
        # search early to bound query time.
        best = self._search(kp, cand, priors, intrinsics, timings, cfg)
        if not best.success and cfg.fallback_ratio > cfg.match_ratio:
            loose = dataclasses.replace(cfg, match_ratio=cfg.fallback_ratio)
            alt = self._search(kp, cand, priors, intrinsics, timings, loose, cfg.fallback_min_inliers)
            if alt.success:
                alt.message += f" (fallback ratio test {cfg.fallback_ratio})"
                best = alt
        timings["total"] = time.perf_counter() - t0
        best.timings = timings
        return best

    def _search(self, kp: Keypoints, cand: Keypoints | None, priors: list[np.ndarray], intr: CameraIntrinsics,
                timings: dict, cfg: LocateConfig, final_min_inliers: int | None = None) -> LocalizationResult:
        """Refine every prior in order; the pose with the most inliers wins, a well-supported one
        (``early_stop_inliers``) ends the search early to bound query time."""
        best: LocalizationResult | None = None
        for P in priors:
            res = self._refine(kp, cand, P, intr, timings, cfg, final_min_inliers or cfg.min_inliers)
            if best is None or (res.success, res.inliers) > (best.success, best.inliers):
                best = res
            if res.success and res.inliers >= cfg.early_stop_inliers:
                break
        assert best is not None
        return best

    def locate_frame(self, frame: Frame, prior: np.ndarray | None = None) -> LocalizationResult:
        return self.locate(frame.rgb, frame.intrinsics, prior, frame.depth)

    def _visible(self, T: np.ndarray, intr: CameraIntrinsics, margin_frac: float) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks to render from ``T``: in view (with a margin), not occluded in the nearest
        keyframe's depth, at most ``max_landmarks`` (the best-observed). Indices ``[V]``, pixels ``[V, 2]``."""
        cfg, f, kfs = self.config, self.map.fields, self.map.keyframes
        vis, uv = visible_landmarks(f.centers, T, intr, margin_frac)
        if len(vis) and kfs.depth_small.any():
            k = nearest_keyframe(kfs.poses, T)
            occ = occluded(f.centers[vis], kfs.poses[k], kfs.depth_small[k], kfs.small_intrinsics(),
                           cfg.occlusion_rel_tol, cfg.occlusion_abs_tol)
            vis, uv = vis[~occ], uv[~occ]
        if len(vis) > cfg.max_landmarks:
            top = np.argsort(-self.map.n_obs[vis], kind="stable")[: cfg.max_landmarks]
            vis, uv = vis[top], uv[top]
        return vis, uv

    def _refine(
        self, kp: Keypoints, cand: Keypoints | None, T: np.ndarray, intr: CameraIntrinsics, timings: dict,
        cfg: LocateConfig, final_min_inliers: int,
    ) -> LocalizationResult:
        """Descriptor rounds (each needs ``min_inliers``; the last one ``final_min_inliers``), then
        the geometric refinement rounds."""
        f = self.map.fields
        inliers, n_match, it = 0, 0, 0
        cache = RenderCache(f, cfg.rerender_distance_m)

        for it in range(1, cfg.iterations + 1):
            t = time.perf_counter()
            vis, uv = self._visible(T, intr, cfg.view_margin_frac)
            if len(vis) < cfg.min_inliers:
                return LocalizationResult(False, None, 0, 0.0, f"only {len(vis)} landmarks visible from the prior", it)
            desc = cache.get(vis, T[:3, 3])
            timings["render"] = timings.get("render", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            win = cfg.window_px[min(it - 1, len(cfg.window_px) - 1)]
            if win > 0:
                ia, ib, _ = match_in_windows(uv, desc, kp.xy, kp.descriptors, win, cfg.match_min_cos, cfg.match_ratio)
            else:
                ia, ib, _ = mutual_nn(desc, kp.descriptors, cfg.match_min_cos, cfg.match_ratio)
            n_match = len(ia)
            timings["match"] = timings.get("match", 0.0) + time.perf_counter() - t
            if n_match < cfg.min_inliers:
                return LocalizationResult(False, None, 0, 0.0, f"{n_match} matches < {cfg.min_inliers} (round {it})", it)
            t = time.perf_counter()
            px = cfg.final_pnp_px if it == cfg.iterations else cfg.pnp_px
            # windowed rounds start near the pose: mostly inliers, RANSAC's adaptive stop is early
            T_new, inl = solve_pnp(kp.xy[ib], f.centers[vis[ia]], intr, px, min_iterations=100 if win <= 0 else 20)
            timings["pnp"] = timings.get("pnp", 0.0) + time.perf_counter() - t
            inliers = int(inl.sum())
            if T_new is None or inliers < cfg.min_inliers:
                return LocalizationResult(
                    False, None, inliers, 0.0, f"{inliers} PnP inliers < {cfg.min_inliers} (round {it})", it
                )
            T = T_new
        if inliers < final_min_inliers:
            return LocalizationResult(False, None, inliers, 0.0, f"{inliers} PnP inliers < {final_min_inliers} after {it} rounds", it)
        rounds = f"{it} rounds"
        if cand is not None and len(cand):
            T, inliers, n_match, done = self._refine_geometric(cand, T, intr, cache, timings, inliers, n_match, cfg)
            rounds += f" + {done} refinement rounds"
        kfs = self.map.keyframes
        far = far_from_map(T, kfs.poses, cfg.max_keyframe_distance_m)
        if far is not None:
            return LocalizationResult(False, None, inliers, 0.0, f"pose is {far:.1f} m from every keyframe", it)
        conf = confidence(inliers, n_match, cfg.min_inliers)
        return LocalizationResult(True, T, inliers, conf, f"{inliers}/{n_match} inliers after {rounds}", it)

    def _refine_geometric(self, cand: Keypoints, T: np.ndarray, intr: CameraIntrinsics, cache: "RenderCache",
                          timings: dict, inliers: int, n_match: int, cfg: LocateConfig) -> tuple[np.ndarray, int, int, int]:
        """Shrinking-window rounds against the candidate detections (see ``LocateConfig``).

        Once the pose is good to a pixel or two, the nearest detection with a compatible rendered
        descriptor is the landmark's image more often than the most similar one within a wide
        window, and weak detections near predicted landmarks add correspondences; both cut the
        error of the final pose. A round that finds too little support keeps the previous pose.
        """
        f = self.map.fields
        done = 0
        for w in cfg.refine_windows_px:
            t = time.perf_counter()
            vis, uv = self._visible(T, intr, 0.0)
            desc = cache.get(vis, T[:3, 3])
            timings["render"] = timings.get("render", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            ia, ib, _ = match_in_windows(uv, desc, cand.xy, cand.descriptors, w, cfg.match_min_cos, by="distance")
            timings["match"] = timings.get("match", 0.0) + time.perf_counter() - t
            if len(ia) < cfg.min_inliers:
                break
            t = time.perf_counter()
            # associations near a good pose are mostly right: RANSAC's adaptive stop needs few samples
            T_new, inl = solve_pnp(cand.xy[ib], f.centers[vis[ia]], intr, min(w, cfg.refine_max_px), min_iterations=20)
            timings["pnp"] = timings.get("pnp", 0.0) + time.perf_counter() - t
            if T_new is None or int(inl.sum()) < max(cfg.min_inliers, inliers // 2):
                break
            T, inliers, n_match, done = T_new, int(inl.sum()), len(ia), done + 1
        return T, inliers, n_match, done


def load_favor(path: str | Path) -> FavorRelocalizer:
    """Load a map directory and wrap it in a relocalizer."""
    return FavorRelocalizer(FavorMap.load(path))


__all__ = [
    "FORMAT_VERSION", "FavorConfig", "FavorMap", "FavorRelocalizer", "LocateConfig", "LocalizationResult",
    "load_favor", "nearest_keyframe", "occluded", "visible_landmarks",
]

