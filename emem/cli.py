"""``emem``: the command line of embodied_memory.

Each command group lives in ``emem/commands/<group>.py`` and exposes
``register(subparsers)``; a group whose module is missing is simply not offered.
``emem bench <component>`` and ``emem eval <component>`` are assembled from the
``BENCH`` / ``EVAL`` dicts of those modules (name -> (add_arguments, run)).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Callable

GROUPS = ["sim", "map", "reloc", "episodic", "ros", "experiment", "data"]


def _load_groups() -> list:
    mods = []
    for g in GROUPS:
        try:
            mods.append(importlib.import_module(f"emem.commands.{g}"))
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("emem.commands"):
                continue
            raise
    return mods


def print_json(obj: dict) -> None:
    """Print one JSON object on stdout (the contract of every ``--json`` command)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emem", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    mods = _load_groups()
    for m in mods:
        if hasattr(m, "register"):
            m.register(sub)
    # bench / eval: one sub-command per component, contributed by the groups.
    for verb in ("bench", "eval"):
        table: dict[str, tuple[Callable, Callable]] = {}
        for m in mods:
            table.update(getattr(m, verb.upper(), {}))
        vp = sub.add_parser(verb, help=f"{verb} a component (prints one JSON object with --json)")
        vsub = vp.add_subparsers(dest="component", required=True)
        for name, (add_args, run) in sorted(table.items()):
            p = vsub.add_parser(name)
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.add_argument("--out", default=None, help="also write the JSON object to this file")
            add_args(p)
            p.set_defaults(func=_wrap_json(run))
        if verb == "bench":
            p = vsub.add_parser("all", help="run every component benchmark")
            p.add_argument("--json", action="store_true")
            p.add_argument("--out", default=None)
            p.add_argument("--device", default="cpu")
            p.set_defaults(func=_bench_all(table))
    return parser


def _wrap_json(run: Callable) -> Callable:
    def go(args: argparse.Namespace) -> int:
        result = run(args)
        if args.out:
            from pathlib import Path

            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True, default=float))
        if args.json or not args.out:
            print_json(result)
        return 0

    return go


def _bench_all(table: dict) -> Callable:
    def go(args: argparse.Namespace) -> int:
        results = {}
        for name, (add_args, run) in sorted(table.items()):
            p = argparse.ArgumentParser()
            add_args(p)
            sub_args = p.parse_args(["--device", args.device] if any(a.dest == "device" for a in p._actions) else [])
            logging.getLogger("emem").info("bench %s", name)
            try:
                results[name] = run(sub_args)
            except Exception as e:  # one failing component must not hide the others' figures
                logging.getLogger("emem").exception("bench %s failed", name)
                results[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        return results

    return _wrap_json(go)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from spatial_memory.errors import EmemError

    try:
        return int(args.func(args) or 0)
    except EmemError as e:
        print(f"emem: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
