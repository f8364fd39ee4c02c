"""pip-installable Python side of the ``embodied_memory`` ROS 2 package.

``pip install -e .`` works without ROS; ``colcon build`` uses CMakeLists.txt (ament_cmake)
which generates the msg/srv interfaces and installs these same Python packages.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> list[str]:
    # requirements/base.txt is the one place that pins dependencies.
    lines = (HERE / "requirements" / "base.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="embodied_memory",
    version="0.1.0",
    description="Spatial memory for robots: Gaussian-splat multimodal memory, FaVoR relocalization, "
    "place-centric episodic memory, as ROS 2 nodes and simulation experiments.",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(
        include=["spatial_memory*", "splatting*", "relocalization*", "sim*", "ros_nodes*", "emem*", "bench*"]
    ),
    package_data={"": ["*.json", "*.yaml", "*.safetensors"]},
    install_requires=_requirements(),
    entry_points={
        "console_scripts": [
            "emem = emem.cli:main",
            "memory_node = ros_nodes.memory_node:main",
            "reloc_node = ros_nodes.reloc_node:main",
            "sim_node = ros_nodes.sim_node:main",
        ]
    },
)
