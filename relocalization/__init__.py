"""FaVoR relocalization (landmark voxel descriptor fields) and the keyframe-retrieval baseline.

Public API: :class:`FavorMap` / :class:`FavorRelocalizer` (FaVoR), :class:`KeyframeBaseline`
(hloc-style), :func:`evaluate` / :func:`plot_error_cdf` (metrics), :func:`make_features`
(XFeat / SIFT / ORB). See docs/relocalization.md.
"""

from .baseline import BaselineConfig, KeyframeBaseline
from .evaluate import evaluate, plot_error_cdf
from .favor import FavorConfig, FavorMap, FavorRelocalizer, LocateConfig
from .features import DenseDescriptors, Keypoints, LocalFeatures, make_features
from .mapping import MapConfig
from .pnp import LocalizationResult
from .voxels import VoxelConfig

__all__ = [
    "BaselineConfig", "DenseDescriptors", "FavorConfig", "FavorMap", "FavorRelocalizer", "KeyframeBaseline",
    "Keypoints", "LocalFeatures", "LocalizationResult", "LocateConfig", "MapConfig", "VoxelConfig", "evaluate",
    "make_features", "plot_error_cdf",
]
