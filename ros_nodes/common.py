"""Pieces every node shares: construction kwargs, guarded callbacks, a latest-wins slot, ``main``.

A node callback must never raise into the executor (that kills the node on a robot): service
handlers are wrapped by :func:`guarded_service`, which turns any exception into
``success = False`` with a message naming the error, logs it and counts it.
"""

from __future__ import annotations

import functools
import sys
import threading
import traceback
from typing import Any, Callable, Mapping, Sequence


def node_kwargs(
    parameter_overrides: Mapping[str, Any] | None = None,
    remappings: Sequence[tuple[str, str]] = (),
    namespace: str = "",
    context: Any = None,
    specs: Sequence[Any] = (),
) -> dict[str, Any]:
    """Keyword arguments for ``rclpy.node.Node.__init__`` that apply parameter values and topic
    remappings to one node only.

    With ``specs`` (the node's :class:`ros_nodes.params.ParamSpec` list), integer values given for
    float parameters are converted (``--set sim.rate=20`` parses as an int; rclpy would reject it).
    """
    from rclpy.parameter import Parameter

    floats = {s.name for s in specs if isinstance(s.default, float)}
    values = {k: (float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else v)
              for k, v in (parameter_overrides or {}).items()}
    kw: dict[str, Any] = {
        "parameter_overrides": [Parameter(k, value=v) for k, v in values.items()],
        "automatically_declare_parameters_from_overrides": False,
    }
    if remappings:
        args = ["--ros-args"]
        for src, dst in remappings:
            args += ["-r", f"{src}:={dst}"]
        kw["cli_args"] = args
    if namespace:
        kw["namespace"] = namespace
    if context is not None:
        kw["context"] = context
    return kw


def guarded_service(name: str) -> Callable:
    """Decorator for a service handler ``(self, request, response) -> response``.

    Any exception is logged and answered in the response: ``success = False`` (``found = False``
    for responses without ``success``) and ``message = "<ErrorType>: <text>"``; the node's
    ``service_errors`` counter is incremented.
    """

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self, request, response):
            try:
                return fn(self, request, response)
            except Exception as e:  # a service must answer, whatever went wrong
                self.service_errors = getattr(self, "service_errors", 0) + 1
                msg = f"{type(e).__name__}: {e}"
                self.get_logger().warning(f"{name} failed: {msg}")
                self.get_logger().debug(traceback.format_exc())
                if hasattr(response, "success"):
                    response.success = False
                if hasattr(response, "found"):
                    response.found = False
                response.message = msg
                return response

        return wrapper

    return deco


class LatestSlot:
    """A queue of size one where the newest item wins.

    ``put`` never blocks: if the consumer has not taken the previous item yet, that item is
    replaced (and reported as dropped). A slow consumer therefore always works on the freshest
    data and the producer never builds up latency.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._has = False
        self._closed = False
        self._cv = threading.Condition()

    def put(self, item: Any) -> bool:
        """Store ``item``; return True if it replaced an item nobody had taken (a drop)."""
        with self._cv:
            dropped = self._has
            self._item, self._has = item, True
            self._cv.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Any:
        """Take the item, waiting up to ``timeout`` seconds; None on timeout or after :meth:`close`."""
        with self._cv:
            if not self._has and not self._closed:
                self._cv.wait(timeout)
            if not self._has:
                return None
            item, self._item, self._has = self._item, None, False
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def spin_main(node_factory: Callable[[], Any], args: Sequence[str] | None = None) -> int:
    """Console-script body: init rclpy, build the node, spin a MultiThreadedExecutor until Ctrl-C.

    Configuration errors at start-up (``EmemError``) are printed as one line and exit with 2.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from spatial_memory.errors import EmemError

    rclpy.init(args=list(args) if args is not None else sys.argv)
    node = None
    try:
        node = node_factory()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except EmemError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
