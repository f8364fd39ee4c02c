"""``emem ros ...``: run node graphs in-process; ``emem bench ros``.

    emem ros up --config config/sim.yaml [--arg device=cuda] [--set sim.frames=200] [--duration 60]
    emem ros graph --config config/robot.yaml --arg map_path=/data/maps/home     # print the nodes

rclpy and the generated interfaces are imported only when a command runs, so the rest of the CLI
works without them; run through ``scripts/with_env.sh`` (``make`` does) so they are importable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from spatial_memory.errors import ConfigError


def _require_ros() -> None:
    try:
        import rclpy  # noqa: F401

        import embodied_memory.srv  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"ROS 2 interfaces not importable ({e}); build them with `bash scripts/build_ros_interfaces.sh` "
            "and run emem through `bash scripts/with_env.sh`"
        ) from None


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"{what} {it!r} must look like name=value")
        k, v = it.split("=", 1)
        out[k.strip()] = v
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ros", help="ROS 2 node graphs (in-process bring-up)")
    rsub = p.add_subparsers(dest="ros_command", required=True)
    for name, helptext in (("up", "run a node graph in this process"), ("graph", "print a graph's nodes as JSON")):
        q = rsub.add_parser(name, help=helptext)
        q.add_argument("--config", required=True, help="graph YAML (config/sim.yaml, config/robot.yaml)")
        q.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="launch argument")
        q.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="parameter override")
        if name == "up":
            q.add_argument("--duration", type=float, default=None, help="seconds to run (default: until the "
                           "simulator finishes, or Ctrl-C)")
            q.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: environment)")
            q.add_argument("--json", action="store_true", help="print the final counters as one JSON object")
            q.set_defaults(func=run_up)
        else:
            q.set_defaults(func=run_graph_print)


def _graph(args: argparse.Namespace):
    from ros_nodes.graph import graph_from_file
    from ros_nodes.params import parse_overrides

    return graph_from_file(args.config, parse_overrides(args.set), _kv(args.arg, "--arg"))


def run_graph_print(args: argparse.Namespace) -> int:
    nodes = _graph(args)
    print(json.dumps([{"name": n.name, "executable": n.executable, "namespace": n.namespace,
                       "parameters": n.parameters, "remappings": [list(r) for r in n.remappings]} for n in nodes],
                     indent=2, sort_keys=True))
    return 0


def run_up(args: argparse.Namespace) -> int:
    _require_ros()
    from ros_nodes.bringup import run_graph

    nodes = _graph(args)
    print(f"[emem ros up] starting {', '.join(f'{n.name} ({n.executable})' for n in nodes)}", file=sys.stderr)
    summary = run_graph(nodes, args.duration, until_done=args.duration is None, domain_id=args.domain_id)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        for name, s in summary.items():
            print(f"{name}: {s}")
    return 0


# ---------------------------------------------------------------------------------------------
# emem bench ros
# ---------------------------------------------------------------------------------------------


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the input stream")
    p.add_argument("--rate", type=float, default=30.0, help="input rate, Hz")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--distinct-frames", type=int, default=8, help="frames rendered once and replayed in a loop")
    p.add_argument("--queries", type=int, default=20, help="query_text calls timed after the stream")
    p.add_argument("--query", default="sofa", help="query text")
    p.add_argument("--memories", default="m3,episodic", help="comma-separated memories the node runs (m3, episodic)")
    p.add_argument("--domain-id", type=int, default=None)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """30 Hz 640x480 RGB-D + pose into memory_node over loopback DDS for a few seconds.

    Reports the input rate the node received (``ingest_input_hz``), the rate it integrated
    (``integration_hz``), the fraction dropped by the latest-wins queue (``drop_rate``) and the
    round trip of ``~/query_text`` through an rclpy client (``query_text_ms``). Reference measured
    in the same run: the same query called in-process on the node's own memory, interleaved with
    the service calls (``ros_query_overhead`` = service round trip / direct call).
    ``published_hz`` is what the publisher achieved (it encodes 640x480 frames on the same CPU);
    ``node_ingest_ms`` is the mean time of one ``ingest`` inside the node.
    """
    _require_ros()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from embodied_memory.srv import QueryText
    from ros_nodes.bringup import Bringup
    from ros_nodes.graph import NodeDescription
    from sim.simulator import make_sim_source

    wanted = {m.strip() for m in args.memories.split(",") if m.strip()}
    if not wanted <= {"m3", "episodic"} or "m3" not in wanted:
        raise ConfigError(f"--memories must include m3 and may add episodic, got {args.memories!r}")
    domain = args.domain_id if args.domain_id is not None else 100 + os.getpid() % 100
    src = make_sim_source("drake_living_room", frames=args.distinct_frames, width=args.width, height=args.height,
                          progress=False)
    frames = list(src)
    total = int(round(args.seconds * args.rate))

    nodes = [
        NodeDescription("sim", "sim_node", parameters={
            "mode": "trajectory", "rate": float(args.rate), "loop": True, "max_frames": total,
            "wait_for_subscribers": 1, "width": args.width, "height": args.height, "publish_clock": False}),
        NodeDescription("memory", "memory_node", parameters={
            "device": args.device, "cloud_period": 0.0, "diagnostics_period": 1.0, "use_instances": True,
            "enable_episodic": "episodic" in wanted, "qos.image_reliability": "reliable"}),
    ]
    with Bringup(nodes, inject={"sim": {"source": frames}}, domain_id=domain) as up:
        sim, mem = up.node("sim"), up.node("memory")
        up.spin_until(lambda: sim.published > 0, 60)
        t_start = time.monotonic()
        up.spin_until(lambda: sim.done, args.seconds * 4 + 30)
        t_pub = time.monotonic() - t_start
        up.spin_until(lambda: mem.stats()["pending"] == 0, 60)
        t_all = time.monotonic() - t_start
        st = mem.stats()

        ctx = rclpy.Context()
        rclpy.init(args=[], context=ctx, domain_id=domain)
        client_node = Node("bench_client", context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(client_node)
        cli = client_node.create_client(QueryText, "/memory/query_text")
        cli.wait_for_service(timeout_sec=10.0)

        def call():
            fut = cli.call_async(QueryText.Request(text=args.query, top_k=5))
            ex.spin_until_future_complete(fut, timeout_sec=30.0)
            return fut

        call()  # warm-up: text embedding, decoded-feature cache
        q_ros, q_direct, ok = [], [], 0
        for _ in range(args.queries):
            t0 = time.perf_counter()
            fut = call()
            q_ros.append(time.perf_counter() - t0)
            ok += int(fut.done() and fut.result().success)
            # reference: the same query on the node's own memory, in-process, same state
            t0 = time.perf_counter()
            with mem.memory_lock:
                mem.m3.query_text(args.query, top_k=5)
            q_direct.append(time.perf_counter() - t0)
        ex.shutdown()
        client_node.destroy_node()
        rclpy.shutdown(context=ctx)

    node_ingest_ms = 1000 * st["mean_integration_s"]
    q_ros_ms, q_direct_ms = 1000 * statistics.median(q_ros), 1000 * statistics.median(q_direct)
    return {
        "device": args.device,
        "memories": sorted(wanted),
        "input": f"{args.width}x{args.height} rgb8 + 32FC1 + PoseStamped + CameraInfo at {args.rate:g} Hz "
                 f"for {args.seconds:g} s (reliable QoS, loopback DDS)",
        "published": sim.published,
        "received": st["received"],
        "integrated": st["integrated"],
        "not_integrated": st["not_integrated"],
        "dropped": st["dropped"],
        "skipped": st["skipped"],
        "ingest_input_hz": st["received"] / t_pub if t_pub > 0 else 0.0,
        "integration_hz": (st["integrated"] + st["not_integrated"]) / t_all if t_all > 0 else 0.0,
        "drop_rate": st["drop_rate"],
        "published_hz": sim.published / t_pub if t_pub > 0 else 0.0,
        "node_ingest_ms": node_ingest_ms,
        "query_text_ms": q_ros_ms,
        "query_text_direct_ms": q_direct_ms,
        "ros_query_overhead": q_ros_ms / q_direct_ms if q_direct_ms > 0 else None,
        "query_success": ok / max(args.queries, 1),
    }


BENCH = {"ros": (_bench_args, run_bench)}
