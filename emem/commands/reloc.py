"""``emem reloc build|locate``: FaVoR relocalization maps; ``emem eval reloc``; ``emem bench reloc``.

Sources (``--source``): ``sim:drake_living_room`` / ``sim:apartment`` (rendered exploration,
densified to video rate), ``icl`` (the vendored ICL-NUIM micro sequence), a dataset folder
(anything :func:`sim.datasets.open_dataset` reads) or a rosbag2 directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("emem.reloc")

ICL_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "icl_nuim_livingroom_micro"


def _icl_root() -> Path:
    for cand in (Path("../shared/data/icl_nuim_livingroom_micro"), ICL_DEFAULT):
        if cand.is_dir():
            return cand
    from spatial_memory.errors import DatasetFormatError

    raise DatasetFormatError("ICL-NUIM micro sequence not found (expected ../shared/data/icl_nuim_livingroom_micro)")


def load_mapping_frames(source: str, frames: int, every: int, seed: int = 0, progress: bool = True) -> list:
    """Posed frames to build a map from (``frames`` at most, every ``every``-th of a dataset/bag)."""
    from spatial_memory.errors import ConfigError, DatasetFormatError

    if source.startswith("sim:"):
        from sim.trajectories import densify_poses
        from sim.simulator import SimFrameSource, make_trajectory, resolve_scene
        from spatial_memory.types import CameraIntrinsics

        scene = resolve_scene(source[4:], seed)
        keys = make_trajectory(scene, "explore", max(2, (frames + 1) // 2), seed)
        src = SimFrameSource(scene, densify_poses(keys, 2)[:frames], CameraIntrinsics.from_fov(640, 480, 70.0),
                             progress=progress)
        return list(src)
    if source == "icl":
        from relocalization.icl import load_icl_frames

        return load_icl_frames(_icl_root(), list(range(0, min(211, frames * every), every)))
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"--source {source!r}: not 'sim:<scene>', 'icl', a dataset folder or a bag")
    from sim.datasets import open_dataset

    out = []
    for i, f in enumerate(open_dataset(path)):
        if i % every == 0 and f.T_world_camera is not None:
            out.append(f)
        if len(out) >= frames:
            break
    if len(out) < 2:
        raise DatasetFormatError(f"{source}: fewer than 2 posed frames")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reloc", help="FaVoR relocalization maps")
    rs = p.add_subparsers(dest="reloc_command", required=True)
    b = rs.add_parser("build", help="build a FaVoR map from a posed RGB-D source")
    b.add_argument("--source", required=True, help="sim:drake_living_room | sim:apartment | icl | dataset folder | bag")
    b.add_argument("--out", required=True, help="map directory to write")
    b.add_argument("--frames", type=int, default=120, help="mapping frames (at most)")
    b.add_argument("--every", type=int, default=3, help="use every k-th frame of a dataset/bag")
    b.add_argument("--features", default="xfeat", choices=["xfeat"], help="FaVoR needs dense features")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=run_build)
    q = rs.add_parser("locate", help="localise one image against a map")
    q.add_argument("rmap", help="map directory from 'emem reloc build'")
    q.add_argument("--image", required=True)
    q.add_argument("--prior", default=None, help='"x y z qx qy qz qw" camera-to-world prior')
    q.add_argument("--intrinsics", default=None, help="fx,fy,cx,cy (default: the map's camera)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=run_locate)


def run_build(args: argparse.Namespace) -> int:
    from emem.cli import print_json
    from relocalization.favor import FavorConfig, FavorMap

    t0 = time.perf_counter()
    frames = load_mapping_frames(args.source, args.frames, args.every, args.seed)
    cfg = FavorConfig()
    cfg.map.features = args.features
    fmap = FavorMap.build(frames, cfg, progress=True)
    path = fmap.save(args.out)
    out = {"map": str(path), "landmarks": len(fmap), "keyframes": len(fmap.keyframes.poses),
           "map_bytes": fmap.nbytes, "seconds": time.perf_counter() - t0, **{"stats": fmap.stats}}
    if args.json:
        print_json(out)
    else:
        print(f"wrote {path}: {len(fmap)} landmarks, {fmap.nbytes / 1e6:.1f} MB, {out['seconds']:.1f} s")
    return 0


def parse_prior(text: str) -> np.ndarray:
    """``"x y z qx qy qz qw"`` -> ``[4, 4]`` pose (InvalidPoseError on bad input)."""
    from spatial_memory.errors import InvalidPoseError
    from spatial_memory.geometry import pose_from_tq

    try:
        v = np.array([float(x) for x in text.replace(",", " ").split()], np.float64)
    except ValueError:
        raise InvalidPoseError(f"--prior {text!r}: expected 7 numbers 'x y z qx qy qz qw'") from None
    if v.shape != (7,):
        raise InvalidPoseError(f"--prior {text!r}: expected 7 numbers, got {v.size}")
    return pose_from_tq(v[:3], v[3:])


def run_locate(args: argparse.Namespace) -> int:
    import cv2

    from emem.cli import print_json
    from relocalization.favor import FavorMap, FavorRelocalizer
    from spatial_memory.errors import ConfigError, ImageDecodeError
    from spatial_memory.geometry import tq_from_pose
    from spatial_memory.types import CameraIntrinsics

    fmap = FavorMap.load(args.rmap)
    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"{args.image}: cannot read the image")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    intr = fmap.intrinsics
    if args.intrinsics:
        try:
            fx, fy, cx, cy = (float(x) for x in args.intrinsics.split(","))
        except ValueError:
            raise ConfigError(f"--intrinsics {args.intrinsics!r}: expected fx,fy,cx,cy") from None
        intr = CameraIntrinsics(rgb.shape[1], rgb.shape[0], fx, fy, cx, cy)
    prior = parse_prior(args.prior) if args.prior else None
    res = FavorRelocalizer(fmap).locate(rgb, intr, prior)
    out = res.to_dict()
    if res.success:
        t, q = tq_from_pose(res.T_world_camera)
        out["translation"], out["quaternion_xyzw"] = t.tolist(), q.tolist()
    if args.json:
        print_json(out)
    else:
        print(f"{'OK' if res.success else 'FAILED'}: {res.message}")
        if res.success:
            print("t =", np.round(out["translation"], 4).tolist(), "q_xyzw =", np.round(out["quaternion_xyzw"], 4).tolist())
    return 0 if res.success else 1


# -- eval / bench ---------------------------------------------------------------------------
# Simulator trajectories of the headline evaluation. Seeds 3 and 4 are the development seeds
# (variants are compared there) and stay out of it; 8 trajectories because the baseline's median
# alone ranged 0.37-1.9 cm from one trajectory to the next (docs/relocalization.md).
SIM_TEST_SEEDS = (0, 1, 2, 5, 6, 7, 8, 9)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="sim:drake_living_room",
                   help="sim:<scene> (held-out viewpoints + changed lighting) | icl | dataset folder | bag")
    p.add_argument("--frames", type=int, default=60,
                   help="sim: trajectory key poses (rendered x2); other sources: posed frames read (x5)")
    p.add_argument("--queries", type=int, default=20, help="held-out views per seed (sim) / query frames")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SIM_TEST_SEEDS),
                   help="sim: one exploration trajectory (map) and view set per seed, results pooled over all queries; "
                        "other sources: the first seed picks the frames")
    p.add_argument("--plot-dir", default=None, help="write error-CDF PNGs here")


def _strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("errors_cm", "errors_deg", "times_s")}


def run_eval(args: argparse.Namespace) -> dict:
    """FaVoR and the baseline side by side. On the simulator every seed is a separate map (its own
    exploration trajectory) with its own held-out views; the headline pools all queries, since 20
    views of one map are too few to settle a median ratio (draws of 20 and 40 views gave 0.8x and
    0.4x), and a paired bootstrap interval of the ratio is reported with it."""
    from emem.reloc_eval import sim_dataset
    from relocalization.evaluate import compare, icl_dataset, median_ratio_ci, plot_error_cdf, pool, split_sequence

    seeds = list(args.seeds)
    if args.source.startswith("sim:"):
        def make(s: int):
            return sim_dataset(args.source[4:], frames=args.frames, queries=args.queries, seed=s)
        primary = "same_light"
    elif args.source == "icl":
        def make(s: int):
            return icl_dataset(_icl_root())
        seeds, primary = seeds[:1], "real"
    else:  # any posed sequence: map on every 3rd frame, query on unused ones
        def make(s: int):
            seq = load_mapping_frames(args.source, 5 * args.frames, 1, seed=s, progress=False)
            return split_sequence(args.source, seq, max_queries=args.queries)
        seeds, primary = seeds[:1], "real"
    runs, mapping_frames = [], []
    for s in seeds:  # one dataset in memory at a time
        ds = make(s)
        plot_dir = None if args.plot_dir is None else Path(args.plot_dir) / f"seed{s}"
        runs.append(compare(ds, plot_dir=plot_dir))
        mapping_frames.append(len(ds.mapping))
        name, query_sets = ds.name, list(ds.queries)
        del ds
    out: dict = {"dataset": name, "seeds": seeds, "mapping_frames": mapping_frames, "query_set": primary}
    for qset in query_sets:
        pooled = {m: pool([r[qset][m] for r in runs]) for m in ("favor", "baseline")}
        fav_cm, base_cm = np.asarray(pooled["favor"]["errors_cm"]), np.asarray(pooled["baseline"]["errors_cm"])
        entry = {m: _strip(v) for m, v in pooled.items()}
        entry["median_cm_ratio_ci90"] = list(median_ratio_ci(fav_cm, base_cm))
        if len(runs) > 1:  # trajectories differ more than views of one trajectory do
            seed_of = np.concatenate([np.full(len(r[qset]["favor"]["errors_cm"]), s) for s, r in zip(seeds, runs)])
            entry["median_cm_ratio_ci90_by_seed"] = list(median_ratio_ci(fav_cm, base_cm, groups=seed_of))
        if args.plot_dir is not None:
            tag = name.replace(":", "_")
            entry["plot"] = str(plot_error_cdf(pooled, Path(args.plot_dir) / f"reloc_cdf_{tag}_{qset}_pooled.png"))
        if len(runs) > 1:
            entry["per_seed"] = {str(s): {m: _strip(r[qset][m]) for m in ("favor", "baseline")} for s, r in zip(seeds, runs)}
        if qset == primary:
            out.update(entry)
        else:
            out[qset] = entry
    out["build"] = {str(s): r["build"] for s, r in zip(seeds, runs)}
    f, b = out["favor"], out["baseline"]
    out["targets"] = {
        "median_cm_ratio_vs_baseline": f["median_cm"] / b["median_cm"] if b["median_cm"] > 0 else float("inf"),
        "median_cm_ratio_ci90": out["median_cm_ratio_ci90"],
        "median_cm_ratio_ci90_by_seed": out.get("median_cm_ratio_ci90_by_seed"),
        "median_cm_ratio_target": 0.6,
        "recall_5cm_5deg_delta_vs_baseline": f["recall_5cm_5deg"] - b["recall_5cm_5deg"],
        "query_ms_target": 150.0,
    }
    return out


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda: also times batched landmark training on CUDA vs CPU")
    p.add_argument("--source", default="icl", help="icl (real ICL-NUIM, default) | sim:<scene> | dataset folder | bag")
    p.add_argument("--map-frames", type=int, default=40)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--scaled-landmarks", type=int, default=20000, help="with --device cuda: also time a map tiled to this many landmarks")


def run_bench(args: argparse.Namespace) -> dict:
    """Map build, landmark training throughput and query latency (default: the real ICL-NUIM frames,
    640x480): map on every 3rd of ``3 * map_frames`` frames, query on frames in between."""
    import torch

    from relocalization.baseline import KeyframeBaseline
    from relocalization.favor import FavorConfig, FavorMap, FavorRelocalizer
    from relocalization.evaluate import split_sequence
    from relocalization.mapping import build_landmarks, extract_sequence
    from relocalization.voxels import make_training_data

    seq = load_mapping_frames(args.source, 3 * args.map_frames, 1, progress=False)
    ds = split_sequence(args.source, seq, 3, max(1, len(seq) // max(args.queries, 1)), args.queries)
    mapping, queries = ds.mapping, ds.queries["real"]
    cfg = FavorConfig()
    t = time.perf_counter()
    fmap = FavorMap.build(mapping, cfg, progress=False)
    build_s = time.perf_counter() - t
    reloc = FavorRelocalizer(fmap)
    base = KeyframeBaseline.build(mapping, progress=False, extractor=reloc.extractor)
    reloc.locate_frame(queries[0])  # warm-up (allocations, first-call overheads)

    def time_queries(m) -> tuple[list[float], int]:
        ts, ok = [], 0
        for q in queries:
            t = time.perf_counter()
            ok += m.locate_frame(q).success
            ts.append(time.perf_counter() - t)
        return ts, ok

    c0 = time.process_time()
    fts, fok = time_queries(reloc)
    f_cpu = (time.process_time() - c0) / len(queries)
    bts, bok = time_queries(base)
    # One thread: wall ~ CPU time of the query itself, much less sensitive to other processes
    # sharing the machine than the multi-threaded wall time.
    import cv2
    import numba

    threads = (torch.get_num_threads(), numba.get_num_threads(), cv2.getNumThreads())
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        c0 = time.process_time()
        f1, _ = time_queries(reloc)
        f1_cpu = (time.process_time() - c0) / len(queries)
        b1, _ = time_queries(base)
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
        cv2.setNumThreads(threads[2])
    out = {
        "device": args.device, "source": args.source, "torch_threads": torch.get_num_threads(),
        "image": f"{mapping[0].intrinsics.width}x{mapping[0].intrinsics.height}",
        "map_frames": len(mapping), "landmarks": len(fmap), "build_seconds": build_s,
        "landmarks_per_s": fmap.stats["landmarks_per_s"], "landmarks_per_cpu_s": fmap.stats["landmarks_per_cpu_s"],
        "landmarks_per_s_target": 50.0, "load_average_1min": os.getloadavg()[0],
        "map_bytes": fmap.nbytes, "baseline_map_bytes": base.nbytes,
        "query_ms": 1000 * float(np.mean(fts)), "query_cpu_ms": 1000 * f_cpu, "query_ms_p90": 1000 * float(np.percentile(fts, 90)),
        "baseline_query_ms": 1000 * float(np.mean(bts)), "query_ms_ratio_vs_baseline": float(np.mean(fts) / np.mean(bts)),
        "query_ms_1thread": 1000 * float(np.mean(f1)), "query_cpu_ms_1thread": 1000 * f1_cpu,
        "baseline_query_ms_1thread": 1000 * float(np.mean(b1)),
        "query_ms_target": 150.0, "favor_successes": int(fok), "baseline_successes": int(bok), "queries": len(queries),
    }
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            out["cuda"] = "not available"
        else:
            feats = extract_sequence(mapping, reloc.extractor, True, progress=False)
            lms = build_landmarks(feats, mapping[0].intrinsics, reloc.extractor, cfg.map, progress=False)
            data = make_training_data(lms, np.stack([f.T_world_camera for f in feats]), mapping[0].intrinsics.K, cfg.voxel)
            out["cuda"] = {"gpu": torch.cuda.get_device_name(0), **_training_cpu_vs_cuda(data, lms.descriptors, cfg.voxel, args.device)}
            # the real map is small; tiling its landmarks shows throughput at a building-scale map
            k = max(1, -(-args.scaled_landmarks // len(data.centers)))
            big = _tile_training_data(data, k)
            out["cuda_scaled"] = _training_cpu_vs_cuda(big, np.tile(lms.descriptors, (k, 1)), cfg.voxel, args.device)
    return out


def _tile_training_data(data, k: int):
    """``k`` copies of every landmark and its observations (same rays; for throughput timing only)."""
    from relocalization.voxels import TrainingData

    O = len(data.obs_origin)
    return TrainingData(
        centers=np.tile(data.centers, (k, 1)), half_side=np.tile(data.half_side, k),
        obs_start=np.concatenate([data.obs_start + i * O for i in range(k)]), obs_count=np.tile(data.obs_count, k),
        obs_origin=np.tile(data.obs_origin, (k, 1)), obs_dirmat=np.tile(data.obs_dirmat, (k, 1, 1)),
        obs_xy=np.tile(data.obs_xy, (k, 1)), patches=np.tile(data.patches, (k, 1, 1)), patch_size=data.patch_size,
    )  # fmt: skip


def _training_cpu_vs_cuda(data, init_desc: np.ndarray, vcfg, device: str) -> dict:
    """Batched landmark training on the CPU and on ``device`` (default chunks, and one chunk of all
    landmarks on the GPU), with the mean fit cosine of each so the speed-up is at equal quality."""
    import dataclasses

    import torch

    from relocalization.voxels import train_fields

    L = len(data.centers)
    cpu_fields, cpu = train_fields(data, init_desc, vcfg, progress=False)
    vc = dataclasses.replace(vcfg, device=device)
    train_fields(data, init_desc, vc, progress=False)  # warm-up (CUDA context, kernels)
    gpu_fields, gpu = train_fields(data, init_desc, vc, progress=False)
    one = dataclasses.replace(vc, chunk_landmarks=max(L, 1))
    one_fields, one_chunk = train_fields(data, init_desc, one, progress=False)
    return {
        "landmarks": L, "cpu_landmarks_per_s": cpu["landmarks_per_s"], "cuda_landmarks_per_s": gpu["landmarks_per_s"],
        "speedup": gpu["landmarks_per_s"] / cpu["landmarks_per_s"], "chunk_landmarks": vcfg.chunk_landmarks,
        "cuda_one_chunk_landmarks_per_s": one_chunk["landmarks_per_s"],
        "cuda_one_chunk_speedup": one_chunk["landmarks_per_s"] / cpu["landmarks_per_s"],
        "fit_cos_mean_cpu": float(np.mean(cpu_fields.fit_cos)), "fit_cos_mean_cuda": float(np.mean(gpu_fields.fit_cos)),
        "fit_cos_mean_cuda_one_chunk": float(np.mean(one_fields.fit_cos)), "cuda_max_memory_mb": (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0),
    }  # fmt: skip


    return out


EVAL = {"reloc": (_eval_args, run_eval)}
BENCH = {"reloc": (_bench_args, run_bench)}
