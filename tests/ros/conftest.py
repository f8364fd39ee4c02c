"""ROS 2 test set-up: loopback-only DDS and one ROS domain per test module.

``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is set here, before any test module imports rclpy,
so discovery and traffic stay on this machine. Each module gets its own ``ROS_DOMAIN_ID``
(fixture ``ros_domain``) so modules, and parallel runs of the suite, never see each other.
Modules skip (with the reason printed by ``-ra``) when the interfaces are not built: run
``bash scripts/build_ros_interfaces.sh`` and the tests through ``scripts/with_env.sh``.
"""

from __future__ import annotations

import os
import zlib

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; the range above replaces it

# `make test` builds the interfaces first and sets EMEM_REQUIRE_ROS=1: there a missing build is a
# failure, not a silent skip of every ROS test.
if os.environ.get("EMEM_REQUIRE_ROS") == "1":
    import embodied_memory.srv  # noqa: F401  (raises ImportError if the build is missing)

ROS_SKIP_REASON = (
    "ROS 2 interfaces not importable; build them with `bash scripts/build_ros_interfaces.sh` and run the "
    "tests through `bash scripts/with_env.sh` (make test does both)"
)


@pytest.fixture(scope="module")
def ros_domain(request) -> int:
    """A ROS domain id for this module, distinct per module and per process (10..99)."""
    key = f"{request.module.__name__}:{os.getpid()}".encode()
    return 10 + zlib.crc32(key) % 90


@pytest.fixture
def ros_context(ros_domain):
    """A private, initialised rclpy context on this module's domain; shut down afterwards."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx, domain_id=ros_domain)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


class RosProbe:
    """A test-side node on its own context: calls services, publishes, records topics.

    Everything goes over real DDS (loopback) to the nodes under test, which run in their own
    context (ros_nodes.bringup.Bringup) on the same domain.
    """

    def __init__(self, context) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.node = Node("test_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}

    def call(self, srv_type, name: str, request, timeout_s: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise TimeoutError(f"service {name} not available after {timeout_s} s")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
            if not future.done():
                raise TimeoutError(f"service {name} did not answer within {timeout_s} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def record(self, msg_type, topic: str, qos=10) -> list:
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, box.append, qos)
        return box

    def spin_until(self, predicate, timeout_s: float) -> bool:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return bool(predicate())

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def probe(ros_context):
    p = RosProbe(ros_context)
    yield p
    p.close()
