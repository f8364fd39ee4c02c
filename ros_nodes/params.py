"""Node parameters, QoS profiles and layered YAML configuration.

* :class:`ParamSpec` lists describe each node's parameters once; :func:`declare_params` declares
  them on an rclpy node with a ``ParameterDescriptor`` (description, ``FloatingPointRange`` /
  ``IntegerRange``, read-only) and returns the resolved values.
* :func:`qos_profile` builds a QoS profile from parameter values (reliability, durability, depth);
  image subscriptions default to sensor-data QoS (best effort, shallow).
* :func:`load_config` / :func:`merge_layers` / :func:`parse_overrides` implement the layered
  configuration used by the bring-up runner and the launch files:
  parameter defaults <- config file <- command line / launch overrides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from spatial_memory.errors import ConfigError


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default (its type is the parameter's type), description, range.

    ``min``/``max`` become a ``FloatingPointRange`` or ``IntegerRange`` (inclusive) that rclpy
    enforces on every later ``set_parameters``; ``choices`` are checked by :func:`declare_params`.
    """

    name: str
    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | int = 0
    choices: tuple[str, ...] | None = None
    read_only: bool = False

    def check(self, value: Any) -> Any:
        """Coerce ``value`` to the default's type and check range/choices; raise ConfigError."""
        want = type(self.default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if want is not type(value) and not (want is list and isinstance(value, (list, tuple))):
            raise ConfigError(f"parameter {self.name!r}: expected {want.__name__}, got {type(value).__name__} ({value!r})")
        if self.min is not None and value < self.min:
            raise ConfigError(f"parameter {self.name!r} = {value} is below its minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"parameter {self.name!r} = {value} is above its maximum {self.max}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"parameter {self.name!r} = {value!r} is not one of {list(self.choices)}")
        return value


def descriptor_for(spec: ParamSpec):
    """The rclpy ``ParameterDescriptor`` of a spec."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = spec.description
    if spec.choices:
        desc += f" One of: {', '.join(spec.choices)}."
    d = ParameterDescriptor(description=desc, read_only=spec.read_only)
    if spec.min is not None or spec.max is not None:
        if isinstance(spec.default, bool):
            raise ConfigError(f"parameter {spec.name!r}: a bool cannot have a range")
        if isinstance(spec.default, int):
            d.integer_range = [
                IntegerRange(
                    from_value=int(spec.min if spec.min is not None else -(2**62)),
                    to_value=int(spec.max if spec.max is not None else 2**62),
                    step=int(spec.step),
                )
            ]
        else:
            d.floating_point_range = [
                FloatingPointRange(
                    from_value=float(spec.min if spec.min is not None else -1e300),
                    to_value=float(spec.max if spec.max is not None else 1e300),
                    step=float(spec.step),
                )
            ]
    return d


def declare_params(node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on ``node`` and return ``{name: value}``.

    Values given to the node (``parameter_overrides``, ``--ros-args -p``, a params file) take
    precedence over defaults; rclpy rejects out-of-range numbers against the descriptor, and
    this function additionally checks types and ``choices``.

    Raises:
        ConfigError: a provided value has the wrong type, is out of range or not a valid choice.
    """
    from rclpy.exceptions import InvalidParameterValueException

    values: dict[str, Any] = {}
    for spec in specs:
        try:
            p = node.declare_parameter(spec.name, spec.default, descriptor_for(spec))
        except InvalidParameterValueException as e:
            raise ConfigError(f"{node.get_name()}: parameter {spec.name!r}: {e}") from None
        except Exception as e:  # rclpy raises several types for a type mismatch
            raise ConfigError(f"{node.get_name()}: parameter {spec.name!r}: {type(e).__name__}: {e}") from None
        values[spec.name] = spec.check(p.value)
    return values


def qos_profile(reliability: str = "reliable", depth: int = 10, durability: str = "volatile"):
    """A keep-last QoS profile from parameter strings.

    Args:
        reliability: ``reliable`` or ``best_effort`` (``sensor_data`` is an alias for best-effort).
        durability: ``volatile`` or ``transient_local`` (late joiners get the last ``depth`` messages).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    rel = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT,
           "sensor_data": ReliabilityPolicy.BEST_EFFORT}
    dur = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}
    if reliability not in rel:
        raise ConfigError(f"QoS reliability {reliability!r} is not one of {sorted(rel)}")
    if durability not in dur:
        raise ConfigError(f"QoS durability {durability!r} is not one of {sorted(dur)}")
    if depth < 1:
        raise ConfigError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=rel[reliability], durability=dur[durability])


QOS_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("qos.image_reliability", "best_effort", "Reliability of image/camera_info subscriptions "
              "(sensor-data QoS is best effort; a reliable publisher matches either).",
              choices=("best_effort", "reliable")),
    ParamSpec("qos.image_depth", 5, "History depth of image subscriptions.", min=1, max=100),
    ParamSpec("qos.pose_depth", 50, "History depth of pose/odometry/tf subscriptions.", min=1, max=1000),
)


# ---------------------------------------------------------------------------------------------
# Layered YAML configuration
# ---------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> dict:
    """Read a YAML mapping; raise ConfigError naming the file on a missing file or bad YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def merge_layers(*layers: Mapping | None) -> dict:
    """Deep-merge mappings, later layers winning; nested mappings merge, everything else replaces."""
    out: dict = {}
    for layer in layers:
        if not layer:
            continue
        for k, v in layer.items():
            if isinstance(v, Mapping) and isinstance(out.get(k), dict):
                out[k] = merge_layers(out[k], v)
            else:
                out[k] = copy.deepcopy(v) if isinstance(v, (dict, list)) else v
    return out


def parse_overrides(items: Iterable[str]) -> dict:
    """``["memory.slop=0.05", "sim.rate=10"]`` -> ``{"memory": {"slop": 0.05}, "sim": {"rate": 10}}``.

    The key path is dot-separated (first part: node name, then the parameter name, which may itself
    contain dots: ``memory.qos.image_depth=3`` -> node ``memory``, parameter ``qos.image_depth``).
    Values are parsed as YAML scalars (``true``, ``3``, ``0.5``, ``[1, 2]``, ``cpu``).
    """
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like node.param=value")
        key, raw = item.split("=", 1)
        node, _, param = key.strip().partition(".")
        if not node or not param:
            raise ConfigError(f"override {item!r} must name a node and a parameter: node.param=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        out.setdefault(node, {})[param] = value
    return out
