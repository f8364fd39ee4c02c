"""``emem sim ...``: run the embedded simulator; ``emem bench sim``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="embedded simulator")
    ssub = p.add_subparsers(dest="sim_command", required=True)
    e = ssub.add_parser("explore", help="drive the agent on an exploration path; write frames, a bag, an .rrd and a contact sheet")
    e.add_argument("--scene", default="drake_living_room", choices=["drake_living_room", "apartment"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--frames", type=int, default=60)
    e.add_argument("--width", type=int, default=640)
    e.add_argument("--height", type=int, default=480)
    e.add_argument("--hfov", type=float, default=70.0, help="horizontal field of view, degrees")
    e.add_argument("--trajectory", default="explore", choices=["explore", "loop"])
    e.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    e.add_argument("--out", required=True)
    e.set_defaults(func=run_explore)


def run_explore(args: argparse.Namespace) -> int:
    from emem.viz import RerunRecorder, contact_sheet, progress, topdown_map_png
    from sim.bags import write_bag
    from sim.export import write_frames_folder
    from sim.simulator import make_sim_source
    from spatial_memory.types import backproject_depth

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source = make_sim_source(
        scene=args.scene, seed=args.seed, frames=args.frames, width=args.width, height=args.height,
        hfov_deg=args.hfov, trajectory=args.trajectory,
    )
    frames = list(progress(source, desc=f"render {args.scene}", total=len(source)))
    t_render = time.perf_counter() - t0
    write_frames_folder(frames, out / "frames")
    bag_path = out / f"stream_{args.storage}"
    write_bag(frames, bag_path, storage=args.storage)
    poses = [f.T_world_camera for f in frames]
    pts, cols = [], []
    with RerunRecorder(out / "explore.rrd") as rec:
        for f in frames:
            rec.log_frame(f)
        rec.log_trajectory(poses, "world/trajectory")
        for f in frames[:: max(1, len(frames) // 20)]:
            p, vu = backproject_depth(f.depth, f.intrinsics, f.T_world_camera, stride=8)
            pts.append(p)
            cols.append(f.rgb[vu[:, 0], vu[:, 1]])
    import numpy as np

    pts_all, cols_all = np.concatenate(pts), np.concatenate(cols)
    contact_sheet(frames, out / "contact_sheet.png")
    topdown_map_png(out / "topdown.png", pts_all, cols_all, trajectories={"exploration": poses})
    summary = {
        "scene": args.scene,
        "seed": args.seed,
        "frames": len(frames),
        "skipped": source.stats.skipped,
        "render_s": round(t_render, 3),
        "bag": str(bag_path),
        "rrd": str(out / "explore.rrd"),
        "contact_sheet": str(out / "contact_sheet.png"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene", default="drake_living_room")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--device", default="cpu", help="unused: the embedded renderer is CPU only")


def _bench_run(args: argparse.Namespace) -> dict:
    from sim.bench import bench_sim

    return bench_sim(scene=args.scene, frames=args.frames)


BENCH = {"sim": (_bench_args, _bench_run)}
