"""Simulated robot: sim_node -> memory_node (+ reloc_node with use_reloc:=true).

    ros2 launch embodied_memory sim.launch.py device:=cuda scene:=apartment

The graph is config/sim.yaml (the same file ``emem ros up --config config/sim.yaml`` runs).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _graph_launch import graph_launch_description  # noqa: E402


def generate_launch_description():
    return graph_launch_description("sim.yaml")
