"""Relocalization evaluation: pose errors, recalls, failure rate and timing on a query set.

Methods are anything with ``locate(rgb, intrinsics, prior=None, depth=None) -> LocalizationResult``
(FaVoR and the keyframe baseline). A failed query counts as a failure *and* as a miss in the
recalls; median errors are over all queries with failures at +inf (so a method cannot improve
its median by refusing hard queries), and also reported over successes only.

Datasets:
* any posed sequence (:func:`split_sequence`: map on every k-th frame, query on unused ones),
  e.g. the real ICL-NUIM living-room sequence (:func:`icl_dataset`; ground truth = the ``.log``
  trajectory, itself an estimate), a dataset folder or a rosbag2;
* the simulator's held-out viewpoints (0.2-1.0 m, 10-40 deg from the nearest mapping pose) with
  the mapping lighting or a changed one: :func:`emem.reloc_eval.sim_dataset` (this package imports
  no data source).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from spatial_memory.errors import ConfigError, EmptyMapError
from spatial_memory.geometry import pose_error
from spatial_memory.types import CameraIntrinsics, Frame

from .pnp import LocalizationResult

log = logging.getLogger(__name__)


class Localizer(Protocol):
    def locate(
        self, rgb: np.ndarray, intrinsics: CameraIntrinsics, prior: np.ndarray | None = None, depth: np.ndarray | None = None
    ) -> LocalizationResult: ...


def summarize(errors_m: np.ndarray, errors_deg: np.ndarray, times_s: np.ndarray) -> dict:
    """Metrics of per-query errors (``inf`` = failure) ``[Q]`` and query times ``[Q]``."""
    q = len(errors_m)
    if q == 0:
        raise ConfigError("no queries to evaluate")
    ok = np.isfinite(errors_m)
    cm = errors_m * 100.0

    def recall(tcm: float, tdeg: float) -> float:
        return float(np.mean(ok & (cm <= tcm) & (errors_deg <= tdeg)))

    return {
        "queries": int(q),
        "median_cm": float(np.median(cm)),
        "median_deg": float(np.median(errors_deg)),
        "median_cm_successes": float(np.median(cm[ok])) if ok.any() else float("inf"),
        "median_deg_successes": float(np.median(errors_deg[ok])) if ok.any() else float("inf"),
        "recall_5cm_5deg": recall(5.0, 5.0),
        "recall_10cm_10deg": recall(10.0, 10.0),
        "failure_rate": float(1.0 - ok.mean()),
        "query_ms": float(1000.0 * times_s.mean()),
        "query_ms_p90": float(1000.0 * np.percentile(times_s, 90)),
    }


def evaluate(method: Localizer, queries: list[Frame], use_prior: np.ndarray | None = None, progress: bool = False) -> dict:
    """Localise every query frame and score it against its ``T_world_camera``.

    Args:
        use_prior: optional ``[Q, 4, 4]`` priors (default: none, the method retrieves).

    Returns:
        :func:`summarize` metrics plus per-query ``errors_cm`` / ``errors_deg`` lists (inf = failed),
        and ``map_bytes`` / ``build_seconds`` when the method knows them.
    """
    from tqdm import tqdm

    em, ed, ts = [], [], []
    for i, f in enumerate(tqdm(queries, desc="queries", disable=not progress, leave=False)):
        if f.T_world_camera is None:
            raise ConfigError(f"query frame {f.index} has no ground-truth pose")
        prior = None if use_prior is None else use_prior[i]
        t = time.perf_counter()
        res = method.locate(f.rgb, f.intrinsics, prior, None)
        ts.append(time.perf_counter() - t)
        if res.success:
            dt, dr = pose_error(res.T_world_camera, f.T_world_camera)
        else:
            dt, dr = float("inf"), float("inf")
        em.append(dt)
        ed.append(dr)
    out = summarize(np.array(em), np.array(ed), np.array(ts))
    out["errors_cm"] = [float(e * 100.0) for e in em]
    out["errors_deg"] = [float(e) for e in ed]
    out["times_s"] = [float(t) for t in ts]
    fmap = getattr(method, "map", method)
    if hasattr(fmap, "nbytes"):
        out["map_bytes"] = int(fmap.nbytes)
    stats = getattr(fmap, "stats", {}) or {}
    if "build_seconds" in stats:
        out["build_seconds"] = float(stats["build_seconds"])
    return out


def pool(results: list[dict]) -> dict:
    """One summary over the queries of several :func:`evaluate` results (e.g. one per map/seed):
    the per-query errors and times are concatenated and summarised again (a median of medians
    would weigh small query sets like large ones). Map bytes / build seconds are averaged."""
    if not results:
        raise ConfigError("no results to pool")
    cm = np.concatenate([np.asarray(r["errors_cm"], float) for r in results])
    deg = np.concatenate([np.asarray(r["errors_deg"], float) for r in results])
    ts = np.concatenate([np.asarray(r["times_s"], float) for r in results])
    out = summarize(cm / 100.0, deg, ts)
    out["errors_cm"], out["errors_deg"], out["times_s"] = cm.tolist(), deg.tolist(), ts.tolist()
    for key in ("map_bytes", "build_seconds"):
        vals = [r[key] for r in results if key in r]
        if vals:
            out[key] = float(np.mean(vals)) if key == "build_seconds" else int(np.mean(vals))
    return out


def median_ratio_ci(errors_a_cm: np.ndarray, errors_b_cm: np.ndarray, level: float = 0.9, resamples: int = 2000,
                    seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Paired bootstrap interval of ``median(a) / median(b)`` over queries (``[Q]`` each, inf =
    failure, as in :func:`summarize`).

    Both methods answer the same queries, so queries are resampled together; the interval says
    how much the ratio of medians moves with the particular views drawn (20 views moved it
    between 0.4x and 0.8x here). With ``groups: [Q]`` (e.g. the map/trajectory each query belongs
    to) whole groups are resampled instead, so the interval also covers how much the ratio
    changes from one mapped trajectory to the next. A resample whose median of ``b`` is 0 or
    inf gives inf.
    """
    a, b = np.asarray(errors_a_cm, float), np.asarray(errors_b_cm, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ConfigError(f"paired per-query errors needed, got shapes {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, len(a), size=(resamples, len(a)))
        ma, mb = np.median(a[idx], axis=1), np.median(b[idx], axis=1)
    else:
        g = np.asarray(groups)
        if g.shape != a.shape:
            raise ConfigError(f"groups must label every query: shape {g.shape}, errors {a.shape}")
        members = [np.flatnonzero(g == u) for u in np.unique(g)]
        picks = rng.integers(0, len(members), size=(resamples, len(members)))
        ma, mb = np.empty(resamples), np.empty(resamples)
        for i, pick in enumerate(picks):
            idx = np.concatenate([members[j] for j in pick])
            ma[i], mb[i] = np.median(a[idx]), np.median(b[idx])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((mb > 0) & np.isfinite(mb), ma / mb, np.inf)
    r = np.where(np.isnan(r), np.inf, r)
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2], method="nearest")  # no inf - inf interpolation
    return float(lo), float(hi)


def plot_error_cdf(results: dict[str, dict], path: str | Path, max_cm: float = 50.0) -> Path:
    """Cumulative distributions of translation (cm) and rotation (deg) errors, one line per method.

    Args:
        results: ``{method name: evaluate() output}`` (uses ``errors_cm`` / ``errors_deg``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    limits = (max_cm, max_cm / 5)
    for name, r in results.items():
        for ax, key, xmax in zip(axes, ("errors_cm", "errors_deg"), limits):
            e = np.sort(np.asarray(r[key], dtype=float))
            y = np.arange(1, len(e) + 1) / max(len(e), 1)
            fin = np.isfinite(e)
            # Failures never arrive: the curve stays flat at the success fraction to the right edge.
            xs = np.r_[0.0, e[fin], max(xmax, e[fin].max() if fin.any() else 0.0)]
            ys = np.r_[0.0, y[fin], y[fin][-1] if fin.any() else 0.0]
            ax.step(xs, ys, where="post", label=f"{name} (fail {100 * (1 - fin.mean()):.0f}%)")
    axes[0].set_xlim(0, max_cm)
    axes[0].set_xlabel("translation error [cm]")
    axes[1].set_xlim(0, max_cm / 5)
    axes[1].set_xlabel("rotation error [deg]")
    for ax in axes:
        ax.set_ylabel("fraction of queries")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass
class RelocDataset:
    """Mapping frames and query frames of one evaluation setting."""

    name: str
    mapping: list[Frame]
    queries: dict[str, list[Frame]]


def split_sequence(name: str, frames: list[Frame], map_every: int = 3, query_every: int = 7,
                   max_queries: int | None = None) -> RelocDataset:
    """Any posed sequence (dataset folder, bag, simulator walk): map on every ``map_every``-th frame,
    query on every ``query_every``-th frame the map did not use (at most ``max_queries``)."""
    if map_every < 1 or query_every < 1:
        raise ConfigError(f"map_every / query_every must be >= 1, got {map_every} / {query_every}")
    posed = [f for f in frames if f.T_world_camera is not None]
    mapping = posed[::map_every]
    queries = [f for i, f in enumerate(posed) if i % map_every != 0 and i % query_every == 1 % query_every]
    queries = queries[:max_queries] if max_queries else queries
    if len(mapping) < 2 or not queries:
        raise EmptyMapError(
            f"{name}: {len(posed)} posed frames give {len(mapping)} mapping and {len(queries)} query frames "
            f"(need >= 2 and >= 1)"
        )
    return RelocDataset(name, mapping, {"real": queries})


def icl_dataset(root: str | Path, map_every: int = 3, map_end: int = 150, query_every: int = 7,
                size: tuple[int, int] | None = None) -> RelocDataset:
    """ICL-NUIM micro sequence: map on ``0:map_end:map_every``, query on unused frames of that range."""
    from .icl import load_icl_frames

    return split_sequence("icl_nuim_livingroom", load_icl_frames(root, list(range(map_end)), size), map_every, query_every)


def compare(dataset: RelocDataset, favor_config=None, baseline_config=None, progress: bool = False,
            plot_dir: str | Path | None = None) -> dict:
    """Build FaVoR and the keyframe baseline on the same mapping frames (one feature extraction)
    and evaluate both on every query set. Returns ``{query set: {"favor": ..., "baseline": ...}}``
    plus ``build`` statistics; writes error-CDF plots into ``plot_dir`` if given."""
    from .baseline import BaselineConfig, KeyframeBaseline
    from .favor import FavorConfig, FavorMap, FavorRelocalizer

    fcfg = favor_config or FavorConfig()
    fmap = FavorMap.build(dataset.mapping, fcfg, progress=progress)
    reloc = FavorRelocalizer(fmap)
    bcfg = baseline_config or BaselineConfig(features=fcfg.map.features, top_k=fcfg.map.top_k)
    base = KeyframeBaseline.build(dataset.mapping, bcfg, progress=progress, extractor=reloc.extractor)
    out: dict = {"dataset": dataset.name, "mapping_frames": len(dataset.mapping), "build": {
        "favor": fmap.stats, "baseline": base.stats}}
    for name, qs in dataset.queries.items():
        r = {"favor": evaluate(reloc, qs, progress=progress), "baseline": evaluate(base, qs, progress=progress)}
        out[name] = r
        if plot_dir is not None:
            r["plot"] = str(plot_error_cdf(r, Path(plot_dir) / f"reloc_cdf_{dataset.name.replace(':', '_')}_{name}.png"))
    return out
