"""``emem experiment ...``: the end-to-end experiment, its restart half and seed sweeps.

    emem experiment run --config config/experiments/demo.yaml --out runs/demo [--no-ros] [--set stream.frames=120]
    emem experiment resume --run runs/demo          # session 2 (started by `run` in a fresh process)
    emem experiment sweep --config config/experiments/demo.yaml --seeds 0 1 2 --jobs 2 --out runs/sweep
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="end-to-end experiment: all memories, report, sweeps")
    esub = p.add_subparsers(dest="experiment_command", required=True)

    r = esub.add_parser("run", help="run one experiment and write its report")
    r.add_argument("--config", default=None, help="experiment YAML (default: built-in defaults)")
    r.add_argument("--out", required=True, help="run directory (report.html, metrics.json, maps, run.rrd, bag)")
    r.add_argument("--no-ros", action="store_true", help="feed the libraries directly instead of the ROS 2 graph")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. stream.frames=60")
    r.add_argument("--json", action="store_true", help="print the headline numbers as JSON")
    r.set_defaults(func=_run)

    s = esub.add_parser("resume", help="session 2: load a run's maps in this process and continue")
    s.add_argument("--run", required=True, help="run directory written by `emem experiment run`")
    s.set_defaults(func=_resume)

    w = esub.add_parser("sweep", help="run a config over seeds (x scenes x budgets) in parallel and aggregate")
    w.add_argument("--config", required=True)
    w.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    w.add_argument("--scenes", nargs="+", default=None)
    w.add_argument("--budgets", type=int, nargs="+", default=None, help="episodic memory budgets")
    w.add_argument("--jobs", type=int, default=2)
    w.add_argument("--out", required=True)
    w.add_argument("--no-ros", action="store_true")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    w.set_defaults(func=_sweep)


def _run(args: argparse.Namespace) -> int:
    from emem.experiment import load_config, run_experiment

    overrides = list(args.set) + (["ros=false"] if args.no_ros else [])
    cfg = load_config(args.config, overrides)
    m = run_experiment(cfg, args.out)
    if args.json:
        print(json.dumps(m["headline"], indent=2, default=float))
    else:
        for k, v in m["headline"].items():
            print(f"{k}: {v}")
        failed = {k: v.get("error") for k, v in m["stages"].items() if v["status"] != "ok"}
        if failed:
            print(f"stages not ok: {failed}", file=sys.stderr)
        print(f"report: {args.out}/report.html")
    return 0 if m["all_stages_ok"] else 1


def _resume(args: argparse.Namespace) -> int:
    from emem.experiment import resume_session

    res = resume_session(args.run)
    print(json.dumps({k: res[k] for k in ("pid", "transport", "frames", "timing_s")}, default=float))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from emem.experiment import run_sweep

    s = run_sweep(args.config, args.seeds, args.out, args.scenes, args.budgets, args.jobs, args.no_ros, args.set)
    print((Path(args.out) / "summary.md").read_text())
    return 0 if all(r["returncode"] == 0 for r in s["runs"]) else 1
