"""Real robot: memory_node on a RealSense camera (+ reloc_node with use_reloc:=true).

    ros2 launch realsense2_camera rs_launch.py align_depth.enable:=true   # in another terminal
    ros2 launch embodied_memory robot.launch.py device:=cuda map_path:=/data/maps/home

The graph, its remappings to the RealSense topics and its TF frames are config/robot.yaml (see
docs/robot.md); pass config:=/path/to/your.yaml to use an edited copy.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("robot.yaml")
