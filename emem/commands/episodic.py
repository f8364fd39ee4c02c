"""``emem episodic``: train the SAT reader and allocators; ``emem eval episodic``; ``emem bench episodic``.

    emem episodic train --task mixed                 # default weights -> spatial_memory/episodic/weights
    emem episodic train --task last_seen --budget 64 --out runs/last_seen
    emem episodic train-ama --kind bandit            # re-train one allocator on existing weights
    emem episodic train-ama --kind calibrate         # re-fit the decision offsets (validation) of existing weights
    emem eval episodic --json                        # accuracy table (test split)
    emem bench episodic --json                       # write / ingest / query latency, training time
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from spatial_memory.errors import ConfigError

log = logging.getLogger("emem.episodic")

TASK_CHOICES = ["what_was_there", "last_seen", "first_visit", "order", "mixed"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="default", help="config/episodic/<name>.yaml or a YAML path (tiny = test size)")
    p.add_argument("--cache", default=None, help="episode cache folder (default ~/.cache/embodied_memory/episodic)")
    p.add_argument("--no-progress", action="store_true")


def _cmd_train(args: argparse.Namespace) -> int:
    from emem.episodic_experiment import load_config, run_training
    from spatial_memory.episodic.memory import DEFAULT_WEIGHTS

    cfg = load_config(args.config)
    if args.budget is not None:
        if args.budget <= 0:
            raise ConfigError(f"--budget must be positive, got {args.budget}")
        cfg.budgets = (int(args.budget),)
    if args.task != "mixed" and args.out is None:
        raise ConfigError("a single-task reader needs --out (the shipped weights are the mixed-task reader)")
    out = Path(args.out) if args.out else DEFAULT_WEIGHTS
    meta = run_training(cfg, out, args.task, Path(args.cache) if args.cache else None, with_ama=not args.no_ama,
                        progress=not args.no_progress)
    print(f"wrote {out} ({', '.join(f'{k} {v:.1f}' for k, v in meta['times'].items())})")
    return 0


def _cmd_train_ama(args: argparse.Namespace) -> int:
    from emem.episodic_experiment import load_config, run_train_ama

    cfg = load_config(args.config)
    t = run_train_ama(cfg, Path(args.weights) if args.weights else None, args.kind,
                      Path(args.cache) if args.cache else None, progress=not args.no_progress)
    print(f"train-ama --kind {args.kind} done in {t:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("episodic", help="place-centric episodic memory (SAT reader + allocators)")
    sub = p.add_subparsers(dest="episodic_command", required=True)
    t = sub.add_parser("train", help="train encoder + SAT reader (+ T-FIFO, bandit, policy for --task mixed)")
    t.add_argument("--task", choices=TASK_CHOICES, default="mixed")
    t.add_argument("--budget", type=int, default=None, help="train on one budget L only (default: 32, 64, 128)")
    t.add_argument("--out", default=None, help="weights folder (default: the shipped spatial_memory/episodic/weights)")
    t.add_argument("--no-ama", action="store_true", help="skip the allocators")
    _common(t)
    t.set_defaults(func=_cmd_train)
    a = sub.add_parser("train-ama", help="(re)fit decision offsets / allocators of existing weights on validation")
    a.add_argument("--kind", choices=["calibrate", "bandit", "policy", "all"], default="bandit",
                   help="calibrate = refit the readers' decision offsets on validation; all = calibrate, bandit, policy")
    a.add_argument("--weights", default=None, help="weights folder (default: the shipped one)")
    _common(a)
    a.set_defaults(func=_cmd_train_ama)


# ---------------------------------------------------------------------------- eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped one)")
    _common(p)


def _eval_run(args: argparse.Namespace) -> dict:
    from emem.episodic_experiment import load_config, run_eval

    cfg = load_config(args.config)
    return run_eval(cfg, Path(args.weights) if args.weights else None, Path(args.cache) if args.cache else None,
                    progress=not args.no_progress)


# ---------------------------------------------------------------------------- bench
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped one)")
    p.add_argument("--writes", type=int, default=2000)
    p.add_argument("--device", default="cpu", help="accepted for `bench all`; the episodic memory runs on CPU")


def _percentiles(x: list[float]) -> dict:
    a = np.asarray(x) * 1e3
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def _bench_run(args: argparse.Namespace) -> dict:
    """Latency of store writes (vs a plain deque FIFO), frame ingest, recall and reader answers."""
    from collections import deque

    from spatial_memory.episodic.memory import EpisodicConfig, EpisodicMemory, Models
    from spatial_memory.episodic.store import STRATEGIES, EpisodicEntry, EpisodicStore
    from spatial_memory.geometry import make_pose, yaw_pitch_to_rotation
    from spatial_memory.types import CameraIntrinsics, Frame

    rng = np.random.default_rng(0)
    out: dict = {"write": {}}
    n = int(args.writes)
    places = rng.integers(0, 12, n)
    emb = np.zeros(32, np.float32)
    entries = [EpisodicEntry(emb, int(p), np.zeros(3), 0.0, i, step=i) for i, p in enumerate(places)]
    for L in (32, 64, 128):
        for s in STRATEGIES:
            st = EpisodicStore(L, s)
            ts = []
            for e in entries:
                t0 = time.perf_counter()
                st.write(e)
                ts.append(time.perf_counter() - t0)
            out["write"][f"{s}_L{L}"] = _percentiles(ts[L:])  # full-store writes only
    dq: deque = deque(maxlen=128)
    ts = []
    for e in entries:
        t0 = time.perf_counter()
        dq.append(e)
        ts.append(time.perf_counter() - t0)
    ref = float(np.mean(ts)) * 1e3
    out["write_reference_deque_mean_ms"] = ref
    worst = max(v["mean_ms"] for v in out["write"].values())
    out["write_worst_mean_ms"] = worst
    out["write_worst_vs_deque_ratio"] = worst / max(ref, 1e-9)
    out["write_under_1ms"] = bool(max(v["p99_ms"] for v in out["write"].values()) < 1.0)

    models = Models.load(args.weights)
    mem = EpisodicMemory(EpisodicConfig(budget=64, strategy="sat_pm"), models)
    intr = CameraIntrinsics.from_fov(64, 48, 80.0)
    ti, tr, ta = [], [], []
    for i in range(300):
        T = make_pose(yaw_pitch_to_rotation(rng.uniform(0, 6.28), -0.3), np.r_[rng.uniform(0, 8, 2), 1.3])
        f = Frame(i * 10**8, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), None, intr, T, index=i)
        t0 = time.perf_counter()
        mem.ingest(f)
        ti.append(time.perf_counter() - t0)
    for i in range(100):
        t0 = time.perf_counter()
        mem.recall(place_id=int(rng.integers(mem.places.n_places)))
        tr.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mem.answer("what_was_there", {"place_id": int(rng.integers(mem.places.n_places))})
        ta.append(time.perf_counter() - t0)
    out["ingest_64x48"] = _percentiles(ti)
    out["recall"] = _percentiles(tr)
    out["answer_L64"] = _percentiles(ta)
    out["answer_vs_ingest_ratio"] = out["answer_L64"]["mean_ms"] / out["ingest_64x48"]["mean_ms"]
    out["training_times_s"] = models.meta.get("times", {})
    return out


EVAL = {"episodic": (_eval_args, _eval_run)}
BENCH = {"episodic": (_bench_args, _bench_run)}
