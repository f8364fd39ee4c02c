"""``emem map``: build, query and render M3 memories; ``emem eval m3`` and ``emem bench splat``.

    emem map build --source sim:drake_living_room --frames 60 --out maps/room
    emem map query maps/room "sofa" --top-k 3 --json
    emem map render maps/room --pose "1 0 1.2 0 0 0 1" --text sofa --out view.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spatial_memory.errors import ConfigError

log = logging.getLogger("emem.map")


# ---------------------------------------------------------------------------- sources
def open_source(spec: str, frames: int, seed: int, width: int, height: int) -> Any:
    """A frame source from ``sim:<scene>``, a dataset folder, or a rosbag2 folder/file.

    ``width``/``height`` apply to the simulator only (datasets and bags keep their resolution).
    """
    if spec.startswith("sim:"):
        from sim.simulator import make_sim_source

        # The mapping loop shows its own progress bar (rendering happens inside it).
        return make_sim_source(scene=spec[4:], seed=seed, frames=frames, width=width, height=height, progress=False)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"--source {spec!r}: not 'sim:<scene>' and no such file or folder")
    from sim.datasets import open_dataset

    return open_dataset(path)


def _take(source: Any, n: int):
    for i, f in enumerate(source):
        if i >= n:
            break
        yield f


# ---------------------------------------------------------------------------- map build
def _memory_config(args: argparse.Namespace):
    from spatial_memory.m3 import M3Config
    from spatial_memory.m3.config import ExtractorSpec

    specs = []
    for name in args.extractors.split(","):
        name = name.strip()
        opts = {}
        if name == "clip":
            opts = {"model_name": args.clip_model, "checkpoint_path": args.clip_checkpoint}
        specs.append(ExtractorSpec(name, options=opts))
    cfg = M3Config(extractors=specs, render_backend=args.backend)
    if args.iters is not None:
        cfg.mapper.iters_per_keyframe = int(args.iters)
    return cfg


def build_memory(source: Any, n_frames: int, config: Any, progress: bool = True):
    """Ingest up to ``n_frames`` frames; returns the memory and per-keyframe seconds."""
    from tqdm import tqdm

    from spatial_memory.m3 import M3Memory

    mem = M3Memory(config)
    seconds = []
    total = min(n_frames, len(source)) if hasattr(source, "__len__") else n_frames
    for f in tqdm(_take(source, n_frames), total=total, desc="map", unit="frame", disable=not progress):
        r = mem.ingest(f)
        if r.integrated:
            seconds.append(r.seconds)
    return mem, seconds


def _cmd_build(args: argparse.Namespace) -> int:
    src = open_source(args.source, args.frames, args.seed, args.width, args.height)
    mem, secs = build_memory(src, args.frames, _memory_config(args))
    out = mem.save(args.out)
    stats = mem.stats()
    stats["keyframe_seconds_mean"] = float(np.mean(secs)) if secs else 0.0
    stats["map"] = str(out)
    from emem.cli import print_json

    print_json(stats)
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from spatial_memory.m3 import M3Memory

    mem = M3Memory.load(args.map)
    hits = mem.query_text(args.text, top_k=args.top_k, min_score=args.min_score, extractor=args.extractor)
    result = {"query": args.text, "hits": [h.to_dict() for h in hits]}
    if args.json:
        from emem.cli import print_json

        print_json(result)
    else:
        for h in result["hits"]:
            p = h["position"]
            print(f"{h['label']}: ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}) score {h['score']:.3f} support {h['support']}")
    return 0


def parse_pose(text: str) -> np.ndarray:
    """``"x y z qx qy qz qw"`` -> ``T_world_camera [4, 4]`` (OpenCV optical camera frame)."""
    from spatial_memory.geometry import pose_from_tq

    try:
        v = [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"--pose {text!r}: expected 7 numbers 'x y z qx qy qz qw'") from None
    if len(v) != 7:
        raise ConfigError(f"--pose {text!r}: expected 7 numbers 'x y z qx qy qz qw', got {len(v)}")
    return pose_from_tq(np.array(v[:3]), np.array(v[3:]))


def _cmd_render(args: argparse.Namespace) -> int:
    import cv2

    from spatial_memory import CameraIntrinsics
    from spatial_memory.m3 import M3Memory

    mem = M3Memory.load(args.map)
    T = parse_pose(args.pose)
    if args.fx:
        intr = CameraIntrinsics(args.width, args.height, args.fx, args.fy or args.fx,
                                args.cx if args.cx is not None else (args.width - 1) / 2,
                                args.cy if args.cy is not None else (args.height - 1) / 2)
    else:
        intr = CameraIntrinsics.from_fov(args.width, args.height, args.hfov)
    view = mem.render(intr, T, text=args.text, decode=False)
    img = view.rgb
    if view.heatmap is not None:
        import matplotlib

        h = np.clip((view.heatmap - view.heatmap.min()) / max(np.ptp(view.heatmap), 1e-6), 0, 1)
        heat = (matplotlib.colormaps["inferno"](h)[..., :3] * 255).astype(np.uint8)
        img = np.concatenate([img, heat], axis=1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img[..., ::-1]):
        raise ConfigError(f"cannot write image {out}")
    print(str(out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("map", help="build / query / render M3 spatial multimodal memories")
    sub = p.add_subparsers(dest="map_command", required=True)

    b = sub.add_parser("build", help="map a frame source into an M3 memory directory")
    b.add_argument("--source", required=True, help="sim:drake_living_room | sim:apartment | dataset folder | bag")
    b.add_argument("--frames", type=int, default=60)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--width", type=int, default=320)
    b.add_argument("--height", type=int, default=240)
    b.add_argument("--extractors", default="labels", help="comma-separated: labels,xfeat,clip")
    b.add_argument("--clip-model", default="ViT-B-16")
    b.add_argument("--clip-checkpoint", default=None)
    b.add_argument("--iters", type=int, default=None, help="optimisation iterations per keyframe")
    b.add_argument("--backend", default="auto", help="rasterizer backend: auto|cpu|gsplat|torch")
    b.add_argument("--out", required=True)
    b.set_defaults(func=_cmd_build)

    q = sub.add_parser("query", help="find a text description in a saved map")
    q.add_argument("map")
    q.add_argument("text")
    q.add_argument("--top-k", type=int, default=5)
    q.add_argument("--min-score", type=float, default=0.0)
    q.add_argument("--extractor", default=None)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_query)

    r = sub.add_parser("render", help="render a saved map at a pose (optionally with a text heat map)")
    r.add_argument("map")
    r.add_argument("--pose", required=True, help='"x y z qx qy qz qw" camera-to-world, OpenCV optical frame')
    r.add_argument("--width", type=int, default=320)
    r.add_argument("--height", type=int, default=240)
    r.add_argument("--hfov", type=float, default=70.0)
    r.add_argument("--fx", type=float, default=None)
    r.add_argument("--fy", type=float, default=None)
    r.add_argument("--cx", type=float, default=None)
    r.add_argument("--cy", type=float, default=None)
    r.add_argument("--text", default=None)
    r.add_argument("--out", required=True)
    r.set_defaults(func=_cmd_render)


# ---------------------------------------------------------------------------- eval / bench
EVAL_FRAMES = {"drake_living_room": 100, "apartment": 150}

def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene", default="all", help="drake_living_room | apartment | all")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames per scene (default {EVAL_FRAMES}: enough for the camera to see every room)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--look-around", type=float, default=25.0,
                   help="head-tilt sweep of the exploration, degrees up from the base pitch (0: level camera)")


def _eval_run(args: argparse.Namespace) -> dict:
    from emem.m3_eval import evaluate_scene

    scenes = ["drake_living_room", "apartment"] if args.scene == "all" else [args.scene]
    out: dict[str, Any] = {"scenes": {}}
    for sc in scenes:
        frames = args.frames if args.frames is not None else EVAL_FRAMES.get(sc, 100)
        out["scenes"][sc] = evaluate_scene(sc, frames=frames, seed=args.seed, width=args.width,
                                           height=args.height, iters=args.iters,
                                           look_around_deg=args.look_around)
    keys = ("psnr_db", "feature_cosine_distance", "text_query_success", "compression_ratio")
    for k in keys:  # headline numbers: mean over scenes
        out[k] = float(np.mean([r[k] for r in out["scenes"].values()]))
    return out


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)


def _bench_run(args: argparse.Namespace) -> dict:
    from emem.m3_eval import bench_keyframe_integration, bench_query
    from splatting.bench import bench_rasterizer

    r = bench_rasterizer(device=args.device)
    out = {k: v for k, v in r.items()}
    out.update(bench_keyframe_integration())  # the M3 memory keeps its tensors on the CPU
    budget = bench_keyframe_integration(budget_s=1.0)
    out.update({f"{k}_budget_1s": v for k, v in budget.items() if k.startswith("keyframe_integration_s")
                or k == "keyframe_iterations_mean"})
    out.update(bench_query(n_gaussians=100_000, repeats=max(5, args.repeats * 5)))
    return out


EVAL = {"m3": (_eval_args, _eval_run)}
BENCH = {"splat": (_bench_args, _bench_run)}

__all__ = ["register", "EVAL", "BENCH", "open_source", "build_memory", "parse_pose"]
