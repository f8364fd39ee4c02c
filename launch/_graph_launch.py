"""Shared body of sim.launch.py and robot.launch.py: graph YAML -> launch_ros Node actions.

The translation itself is :func:`ros_nodes.graph.build_graph` (pure, unit-tested, also used by
``emem ros up``); this file only adapts it to launch: every ``args`` entry of the YAML becomes a
``DeclareLaunchArgument``, and an ``OpaqueFunction`` resolves them at launch time.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ros_nodes.graph import PACKAGE, build_graph, declared_args
from ros_nodes.params import load_config


def _config_path(name: str) -> str:
    return os.path.join(get_package_share_directory(PACKAGE), "config", name)


def graph_launch_description(default_config: str) -> LaunchDescription:
    config_file = _config_path(default_config)
    declared = declared_args(load_config(config_file))

    def make_nodes(context):
        path = LaunchConfiguration("config").perform(context)
        cfg = load_config(path)
        values = {name: LaunchConfiguration(name).perform(context) for name in declared_args(cfg)}
        return [
            Node(
                package=d.package,
                executable=d.executable,
                name=d.name,
                namespace=d.namespace or None,
                parameters=[d.parameters],
                remappings=list(d.remappings),
                output="screen",
                emulate_tty=True,
            )
            for d in build_graph(cfg, args=values)
        ]

    actions = [DeclareLaunchArgument("config", default_value=config_file, description="graph YAML file")]
    actions += [DeclareLaunchArgument(n, default_value=d, description=desc) for n, (d, desc) in declared.items()]
    actions.append(OpaqueFunction(function=make_nodes))
    return LaunchDescription(actions)
