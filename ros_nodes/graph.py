"""Node-graph YAML -> node descriptions, shared by ``emem ros up`` and the ROS 2 launch files.

One YAML file (``config/sim.yaml``, ``config/robot.yaml``) describes a graph::

    name: sim
    args:                                  # launch arguments with defaults
      device: {default: cpu, description: "torch device of the memories"}
    nodes:
      memory:                              # node name
        executable: memory_node            # console script / lib/embodied_memory/<executable>
        namespace: ""                      # optional
        enabled: true                      # optional; may be "$(arg use_reloc)"
        parameters:                        # nested mappings flatten to dotted names (qos.image_depth)
          device: $(arg device)
        remappings:                        # topic the node uses -> topic in the graph
          camera/color/image_raw: /camera/camera/color/image_raw

``$(arg NAME)`` in a string is replaced by the launch argument's value; when it is the whole
string, the value is parsed as YAML so ``rate: $(arg rate)`` stays a number.
:func:`build_graph` is pure (no rclpy, no launch) so the launch files, the in-process bring-up
and the tests all use the same translation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from spatial_memory.errors import ConfigError

PACKAGE = "embodied_memory"
EXECUTABLES: dict[str, str] = {
    # executable -> "module:NodeClass" for in-process bring-up
    "memory_node": "ros_nodes.memory_node:MemoryNode",
    "reloc_node": "ros_nodes.reloc_node:RelocNode",
    "sim_node": "ros_nodes.sim_node:SimNode",
}
_ARG = re.compile(r"\$\(arg ([A-Za-z_][A-Za-z0-9_]*)\)")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class NodeDescription:
    """Everything needed to start one node, in-process or through launch_ros."""

    name: str
    executable: str
    package: str = PACKAGE
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    def ros_args(self) -> list[str]:
        """``--ros-args`` remapping arguments (for rclpy ``Node(cli_args=...)``)."""
        args: list[str] = ["--ros-args"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


def flatten_parameters(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"qos": {"image_depth": 3}}`` -> ``{"qos.image_depth": 3}`` (ROS 2 parameter naming)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_parameters(v, key + "."))
        else:
            out[key] = v
    return out


def resolve_args(spec: Mapping[str, Any] | None, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Launch-argument values: declared defaults, overridden by ``given``; unknown names are errors."""
    spec = dict(spec or {})
    values: dict[str, Any] = {}
    for name, decl in spec.items():
        default = decl.get("default") if isinstance(decl, Mapping) else decl
        values[name] = default
    for name, v in (given or {}).items():
        if name not in spec:
            raise ConfigError(f"unknown launch argument {name!r}; the graph declares {sorted(spec)}")
        values[name] = v
    return values


def _substitute(value: Any, args: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        whole = _ARG.fullmatch(value.strip())
        if whole:
            name = whole.group(1)
            if name not in args:
                raise ConfigError(f"{where}: $(arg {name}) is not a declared launch argument ({sorted(args)})")
            v = args[name]
            return yaml.safe_load(v) if isinstance(v, str) and v != "" else v

        def rep(m: re.Match) -> str:
            if m.group(1) not in args:
                raise ConfigError(f"{where}: $(arg {m.group(1)}) is not a declared launch argument ({sorted(args)})")
            return str(args[m.group(1)])

        return _ARG.sub(rep, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, args, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, args, where) for v in value]
    return value


def build_graph(
    config: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    args: Mapping[str, Any] | None = None,
) -> list[NodeDescription]:
    """Translate a graph YAML mapping into node descriptions.

    Args:
        config: the parsed YAML (see module docstring).
        overrides: ``{node_name: {param: value}}`` applied on top of the file's parameters
            (``emem ros up --set memory.slop=0.05``); a nested or dotted parameter name both work.
        args: launch-argument values (``device=cuda``) overriding the declared defaults.

    Returns:
        enabled nodes in file order.

    Raises:
        ConfigError: missing/unknown executable, bad node name, unknown launch argument, an
            override for a node that is not in the graph, malformed remappings.
    """
    nodes = config.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise ConfigError("graph config needs a non-empty 'nodes' mapping")
    arg_values = resolve_args(config.get("args"), args)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(nodes))
    if unknown:
        raise ConfigError(f"overrides name nodes {unknown} that are not in the graph ({sorted(nodes)})")
    out: list[NodeDescription] = []
    for name, spec in nodes.items():
        if not _NAME.match(str(name)):
            raise ConfigError(f"node name {name!r} must start with a letter and hold only letters, digits, _")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"node {name!r}: expected a mapping, got {type(spec).__name__}")
        spec = _substitute(dict(spec), arg_values, f"nodes.{name}")
        enabled = spec.get("enabled", True)
        if isinstance(enabled, str):
            enabled = yaml.safe_load(enabled)
        if not isinstance(enabled, bool):
            raise ConfigError(f"node {name!r}: enabled must be a bool, got {enabled!r}")
        if not enabled:
            continue
        exe = spec.get("executable")
        if exe not in EXECUTABLES:
            raise ConfigError(f"node {name!r}: executable {exe!r} is not one of {sorted(EXECUTABLES)}")
        params = flatten_parameters(spec.get("parameters") or {})
        params.update(flatten_parameters(overrides.get(name, {})))
        remaps = spec.get("remappings") or {}
        if not isinstance(remaps, Mapping):
            raise ConfigError(f"node {name!r}: remappings must be a mapping from -> to")
        for src, dst in remaps.items():
            if not isinstance(src, str) or not isinstance(dst, str) or not src or not dst:
                raise ConfigError(f"node {name!r}: bad remapping {src!r} -> {dst!r}")
        out.append(
            NodeDescription(
                name=str(name),
                executable=str(exe),
                namespace=str(spec.get("namespace") or ""),
                parameters=params,
                remappings=tuple((str(s), str(d)) for s, d in remaps.items()),
            )
        )
    return out


def graph_from_file(path: str, overrides: Mapping | None = None, args: Mapping | None = None) -> list[NodeDescription]:
    """:func:`build_graph` of a YAML file (see :func:`ros_nodes.params.load_config`)."""
    from .params import load_config

    return build_graph(load_config(path), overrides, args)


def declared_args(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """``{name: (default as string, description)}`` for ``DeclareLaunchArgument``."""
    out = {}
    for name, decl in (config.get("args") or {}).items():
        if isinstance(decl, Mapping):
            out[name] = (str(decl.get("default", "")), str(decl.get("description", "")))
        else:
            out[name] = (str(decl), "")
    return out


__all__ = ["NodeDescription", "build_graph", "graph_from_file", "declared_args", "flatten_parameters",
           "resolve_args", "EXECUTABLES", "PACKAGE"]
