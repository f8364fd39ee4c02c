"""Run a node graph (config/sim.yaml, config/robot.yaml) in one process, without ``ros2 launch``.

``launch``/``launch_ros`` are not available as wheels, so ``emem ros up`` uses this runner: the
graph YAML goes through the same :func:`ros_nodes.graph.build_graph` as the launch files, every
node is constructed in-process with its parameters and remappings, and one rclpy
``MultiThreadedExecutor`` spins them all on a private rclpy context (so a test or benchmark can
run several graphs one after another in one interpreter).

    with Bringup(graph_from_file("config/sim.yaml", {"sim": {"frames": 50}})) as up:
        up.spin_until(lambda: up.node("sim").done, timeout_s=60)
        print(up.node("memory").stats())
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from spatial_memory.errors import ConfigError

from .graph import EXECUTABLES, NodeDescription

log = logging.getLogger(__name__)


def node_class(executable: str) -> type:
    """The rclpy Node class behind an executable name (``memory_node`` -> MemoryNode)."""
    if executable not in EXECUTABLES:
        raise ConfigError(f"unknown executable {executable!r}; known: {sorted(EXECUTABLES)}")
    module, cls = EXECUTABLES[executable].split(":")
    return getattr(importlib.import_module(module), cls)


class Bringup:
    """Start a graph in-process; a context manager that tears everything down on exit.

    Args:
        nodes: node descriptions from :func:`ros_nodes.graph.build_graph`.
        inject: ``{node_name: {kwarg: object}}`` extra constructor arguments (e.g. a pre-built
            memory ``m3=...``), used by tests and benchmarks.
        num_threads: executor threads.
        domain_id: ROS domain of the private context (None: ``ROS_DOMAIN_ID`` or 0).
    """

    def __init__(
        self,
        nodes: Sequence[NodeDescription],
        inject: Mapping[str, Mapping[str, Any]] | None = None,
        num_threads: int = 4,
        domain_id: int | None = None,
    ) -> None:
        self.descriptions = list(nodes)
        self.inject = dict(inject or {})
        self.num_threads = num_threads
        self.domain_id = domain_id
        self.nodes: dict[str, Any] = {}
        self.context = None
        self.executor = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> "Bringup":
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        kw = {"domain_id": self.domain_id} if self.domain_id is not None else {}
        rclpy.init(args=[], context=self.context, **kw)
        try:
            for d in self.descriptions:
                cls = node_class(d.executable)
                log.info("starting %s (%s)", d.name, d.executable)
                self.nodes[d.name] = cls(
                    name=d.name, parameter_overrides=d.parameters, remappings=d.remappings, namespace=d.namespace,
                    context=self.context, **self.inject.get(d.name, {}),
                )
            self.executor = MultiThreadedExecutor(num_threads=self.num_threads, context=self.context)
            for n in self.nodes.values():
                self.executor.add_node(n)
        except BaseException:
            self.stop()
            raise
        self._stopping.clear()
        self._thread = threading.Thread(target=self._spin, name="bringup-executor", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        # spin_once in a loop, not spin(): stop() must end the spinning *before* it shuts the
        # executor down (see there)
        try:
            while not self._stopping.is_set():
                self.executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass

    def node(self, name: str) -> Any:
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(f"no node {name!r} in this graph ({sorted(self.nodes)})") from None

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
        """Wait (the executor spins in its own thread) until ``predicate()`` or the timeout; return which."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll_s)
        return bool(predicate())

    def stop(self) -> None:
        import rclpy

        # Order matters. rclpy 7.1 (Jazzy) Executor.shutdown() never waits for running callbacks
        # (it tests the flag it has just set) and destroys its guard condition while another thread
        # may still wait on it (AttributeError in the spin thread). So: stop spinning, let every
        # callback already handed to the worker pool run (queued ones too: one starting after the
        # nodes are destroyed fails with "cannot use Destroyable", unseen until garbage collection
        # prints "exception was never retrieved"), then shut the executor down and destroy nodes.
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self.executor is not None:
            pool = getattr(self.executor, "_executor", None)  # private: rclpy has no public drain
            if pool is not None:
                pool.shutdown(wait=True)
            self.executor.shutdown(timeout_sec=0)
        for n in self.nodes.values():
            close = getattr(n, "close", None)
            if close:
                close()
            n.destroy_node()
        self.nodes.clear()
        if self.context is not None and self.context.ok():
            rclpy.shutdown(context=self.context)
        self.executor = self._thread = None

    def __enter__(self) -> "Bringup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """Per-node counters: memory stats, frames published by sim nodes, relocalize answers."""
        out: dict[str, Any] = {}
        for name, n in self.nodes.items():
            if hasattr(n, "stats"):
                out[name] = n.stats()
            elif hasattr(n, "published"):
                out[name] = {"published": n.published, "skipped": n.skipped, "done": n.done}
            elif hasattr(n, "answered"):
                out[name] = {"answered": n.answered, "service_errors": n.service_errors}
        return out


def run_graph(
    nodes: Sequence[NodeDescription], duration_s: float | None = None, until_done: bool = True,
    domain_id: int | None = None,
) -> dict[str, Any]:
    """Run a graph until ``duration_s`` elapses, every sim node is done (``until_done``), or Ctrl-C.

    Returns:
        :meth:`Bringup.summary` at the end.
    """
    with Bringup(nodes, domain_id=domain_id) as up:
        sims = [n for n in up.nodes.values() if hasattr(n, "done")]
        start = time.monotonic()
        try:
            while True:
                if duration_s is not None and time.monotonic() - start >= duration_s:
                    break
                if until_done and sims and all(s.done for s in sims):
                    time.sleep(1.0)  # let the last frames reach the memory
                    break
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        return up.summary()
