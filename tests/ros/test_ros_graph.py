"""Graph YAML -> node descriptions (shared by launch files and bring-up), parameters and QoS."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("embodied_memory.srv", reason="ROS 2 interfaces not built (scripts/build_ros_interfaces.sh)")

from ros_nodes.graph import build_graph, declared_args, flatten_parameters  # noqa: E402
from ros_nodes.params import (  # noqa: E402
    ParamSpec,
    declare_params,
    load_config,
    merge_layers,
    parse_overrides,
    qos_profile,
)
from spatial_memory.errors import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_sim_graph_defaults_and_overrides() -> None:
    cfg = load_config(REPO / "config/sim.yaml")
    nodes = build_graph(cfg, overrides={"sim": {"frames": 50}, "memory": {"qos.image_depth": 2}}, args={"device": "cuda"})
    by = {n.name: n for n in nodes}
    assert list(by) == ["sim", "memory"]  # reloc is disabled by default (use_reloc: false)
    assert by["sim"].executable == "sim_node" and by["sim"].parameters["frames"] == 50
    assert by["sim"].parameters["scene"] == "drake_living_room"
    assert by["memory"].parameters["device"] == "cuda"
    assert by["memory"].parameters["qos.image_depth"] == 2
    with_reloc = build_graph(cfg, args={"use_reloc": "true"})
    assert [n.name for n in with_reloc] == ["sim", "memory", "reloc"]


def test_robot_graph_remaps_to_realsense_topics() -> None:
    cfg = load_config(REPO / "config/robot.yaml")
    (mem,) = build_graph(cfg, args={"map_path": "/data/maps/home"})
    remaps = dict(mem.remappings)
    assert remaps["camera/color/image_raw"] == "/camera/camera/color/image_raw"
    assert remaps["camera/depth/image_raw"] == "/camera/camera/aligned_depth_to_color/image_raw"
    assert remaps["camera/color/camera_info"] == "/camera/camera/color/camera_info"
    assert mem.parameters["pose_source"] == "tf" and mem.parameters["device"] == "cuda"
    assert mem.parameters["map_path"] == "/data/maps/home"
    assert mem.parameters["qos.image_reliability"] == "best_effort"  # nested YAML flattened
    assert mem.ros_args()[:3] == ["--ros-args", "-r", "camera/color/image_raw:=/camera/camera/color/image_raw"]
    assert declared_args(cfg)["device"][0] == "cuda"


def test_arg_substitution_keeps_types_and_embeds_in_strings() -> None:
    cfg = {
        "args": {"rate": {"default": "5.0"}, "ns": "robot1"},
        "nodes": {"sim": {"executable": "sim_node", "parameters": {"rate": "$(arg rate)", "frame": "$(arg ns)/cam"}}},
    }
    (sim,) = build_graph(cfg, args={"rate": "12"})
    assert sim.parameters == {"rate": 12, "frame": "robot1/cam"}


@pytest.mark.parametrize(
    "cfg, kwargs, match",
    [
        ({"nodes": {}}, {}, "non-empty"),
        ({"nodes": {"a": {"executable": "nope"}}}, {}, "executable"),
        ({"nodes": {"1bad": {"executable": "sim_node"}}}, {}, "node name"),
        ({"nodes": {"a": {"executable": "sim_node", "parameters": {"x": "$(arg missing)"}}}}, {}, "missing"),
        ({"nodes": {"a": {"executable": "sim_node"}}}, {"args": {"device": "cuda"}}, "unknown launch argument"),
        ({"nodes": {"a": {"executable": "sim_node"}}}, {"overrides": {"b": {"x": 1}}}, "not in the graph"),
        ({"nodes": {"a": {"executable": "sim_node", "enabled": "maybe"}}}, {}, "enabled"),
        ({"nodes": {"a": {"executable": "sim_node", "remappings": ["x"]}}}, {}, "remappings"),
    ],
)
def test_graph_errors(cfg: dict, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_graph(cfg, **kwargs)


def test_layering_helpers() -> None:
    assert flatten_parameters({"a": 1, "qos": {"depth": 3, "x": {"y": True}}}) == {"a": 1, "qos.depth": 3, "qos.x.y": True}
    assert merge_layers({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}, None, {"d": [1]}) == {"a": {"b": 1, "c": 3}, "d": [1]}
    assert parse_overrides(["memory.slop=0.05", "memory.qos.image_depth=3", "sim.scene=apartment", "sim.loop=true"]) == {
        "memory": {"slop": 0.05, "qos.image_depth": 3}, "sim": {"scene": "apartment", "loop": True}}
    for bad in ("noequals", "nodot=1", ".x=1"):
        with pytest.raises(ConfigError):
            parse_overrides([bad])


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_param_spec_checks() -> None:
    spec = ParamSpec("rate", 10.0, "Hz", min=0.1, max=100.0)
    assert spec.check(5) == 5.0  # int accepted for a float parameter
    for bad in (0.0, 1000.0, "fast"):
        with pytest.raises(ConfigError):
            spec.check(bad)
    with pytest.raises(ConfigError, match="one of"):
        ParamSpec("mode", "a", "", choices=("a", "b")).check("c")


def test_declared_parameters_carry_descriptors_and_ranges(ros_context) -> None:
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from ros_nodes.common import node_kwargs

    specs = (ParamSpec("rate", 10.0, "Publishing rate (Hz).", min=0.1, max=100.0),
             ParamSpec("depth", 5, "Queue depth.", min=1, max=50),
             ParamSpec("mode", "a", "Mode.", choices=("a", "b")))
    node = Node("p", context=ros_context, **node_kwargs({"rate": 20.0}))
    try:
        values = declare_params(node, specs)
        assert values == {"rate": 20.0, "depth": 5, "mode": "a"}
        d = node.describe_parameter("rate")
        assert d.description == "Publishing rate (Hz)." and d.floating_point_range[0].to_value == 100.0
        assert node.describe_parameter("depth").integer_range[0].from_value == 1
        assert "One of: a, b" in node.describe_parameter("mode").description
        # rclpy enforces the declared range on later changes
        result = node.set_parameters([Parameter("rate", value=500.0)])[0]
        assert not result.successful and node.get_parameter("rate").value == 20.0
    finally:
        node.destroy_node()
    bad = Node("q", context=ros_context, **node_kwargs({"rate": 0.0}))
    try:
        with pytest.raises(ConfigError, match="rate"):
            declare_params(bad, specs)
    finally:
        bad.destroy_node()


def test_qos_profiles() -> None:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    q = qos_profile("best_effort", 3)
    assert q.reliability == ReliabilityPolicy.BEST_EFFORT and q.depth == 3
    assert qos_profile("reliable", 1, "transient_local").durability == DurabilityPolicy.TRANSIENT_LOCAL
    for args in (("lossy", 1), ("reliable", 0), ("reliable", 1, "forever")):
        with pytest.raises(ConfigError):
            qos_profile(*args)
