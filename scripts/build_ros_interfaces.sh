#!/usr/bin/env bash
# Build the ROS 2 interfaces of the root `embodied_memory` ament_cmake package (msg/, srv/) against
# the ROS 2 Jazzy wheels in the venv, with plain cmake (no /opt/ros, no colcon), into install/ros.
#
#   VENV=.venv bash scripts/build_ros_interfaces.sh      # idempotent; FORCE=1 rebuilds
#
# Afterwards `source install/ros/env.sh` (scripts/with_env.sh does it) makes the generated
# `embodied_memory.msg` / `embodied_memory.srv` modules importable. Our own Python packages are
# NOT installed into the prefix here: they keep coming from the editable source tree.
#
# Steps (each explained where it happens):
#   1. install build-only wheels that pip's dependency metadata of the ros-* wheels leaves out;
#   2. create the /opt/python/cp311-cp311/... include paths the wheels' CMake targets hard-code;
#   3. build tf2_msgs (TFMessage for /tf) when no tf2_msgs package is installed (no wheel exists);
#   4. configure, build and install embodied_memory; write install/ros/env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$(cd "${VENV:-$ROOT/.venv}" && pwd)
PY="$VENV/bin/python"
BUILD="$ROOT/build/ros"
PREFIX="$ROOT/install/ros"
JOBS=${JOBS:-$(nproc)}
start=$(date +%s)
log() { echo "[ros-build] $*"; }
die() { echo "[ros-build] ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY (set VENV=/path/to/venv; run scripts/setup.sh first)"
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
command -v c++ >/dev/null || die "a C++ compiler is needed (apt-get install g++)"

# Skip when nothing that shapes the generated code changed and the result is still there.
stamp_inputs() {
  cat CMakeLists.txt package.xml scripts/build_ros_interfaces.sh requirements/ros.txt msg/*.msg srv/*.srv
  "$PY" -c 'import sys; print(sys.version)'
  echo "$VENV $ROOT"
}
hash=$(stamp_inputs | sha256sum | cut -c1-16)
if [ "${FORCE:-0}" != 1 ] && [ -f "$PREFIX/env.sh" ] && [ "$(cat "$PREFIX/.stamp" 2>/dev/null)" = "$hash" ]; then
  log "interfaces up to date (install/ros, stamp $hash)"
  exit 0
fi

# 1. Build-only wheels (ament_cmake core, python_cmake_module, rosidl_core_generators, catkin-pkg,
#    empy 3, lark): pinned in requirements/ros.txt, installed only when one is missing.
if ! "$PY" - <<'EOF'
import importlib.util, os, sys
share = os.path.join(sys.prefix, "share")
need = ["ament_cmake_core", "ament_cmake_python", "ament_cmake_ros", "ament_cmake_gmock", "ament_cmake_pytest", "python_cmake_module",
        "rosidl_core_generators", "rosidl_default_generators", "service_msgs", "type_description_interfaces",
        "fastrtps_cmake_module", "rosgraph_msgs", "diagnostic_msgs", "visualization_msgs", "nav_msgs"]
missing = [p for p in need if not os.path.isdir(os.path.join(share, p))]
missing += [m for m in ("catkin_pkg", "em", "lark", "ament_package", "rclpy") if importlib.util.find_spec(m) is None]
sys.exit(1 if missing else 0)
EOF
then
  log "installing the ROS build wheels pinned in requirements/ros.txt"
  "$VENV/bin/pip" install -q -r requirements/ros.txt
fi

# 2. The exported CMake targets of the manylinux wheels name two include directories of the machine
#    they were built on. CMake refuses targets whose include directories do not exist, so point those
#    paths at this Python's headers and this venv's numpy headers. That needs root (it writes /opt).
py_inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$PY" -c 'import numpy; print(numpy.get_include())')
[ -f "$py_inc/Python.h" ] || die "Python headers not found at $py_inc (apt-get install python3-dev, or a Python built with headers)"
ensure_link() {  # ensure_link TARGET LINKPATH: keep an existing working path, else (re)create the link
  local target=$1 link=$2
  if [ -d "$link" ]; then return 0; fi
  if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$link")" ] && ! mkdir -p "$(dirname "$link")" 2>/dev/null; then
    die "the ROS wheels' CMake files require $link to exist; creating it needs root. Run once as root:
    sudo mkdir -p $(dirname "$link") && sudo ln -sfn $target $link"
  fi
  mkdir -p "$(dirname "$link")"
  rm -f "$link"
  ln -sfn "$target" "$link"
  log "linked $link -> $target"
}
OPT_NUMPY_INC=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
ensure_link "$py_inc" /opt/python/cp311-cp311/include/python3.11
ensure_link "$np_inc" "$OPT_NUMPY_INC"

# The environment every cmake/make step sees: the venv is the "ROS install" (ament index in $VENV/share).
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$PREFIX:$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$PREFIX:$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PYTHONPATH="$PREFIX/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$PREFIX/lib:$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake_common=(
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX="$PREFIX"
  -DPython3_EXECUTABLE="$PY"
  -DPython3_FIND_VIRTUALENV=ONLY
  -DPYTHON_EXECUTABLE="$PY"
  -DBUILD_TESTING=OFF
  # Through the /opt link, not the venv path: when the venv lives inside the source tree CMake rejects
  # exported include directories "prefixed in the source directory".
  -DPython3_NumPy_INCLUDE_DIR="$OPT_NUMPY_INC"
)
build_pkg() {  # build_pkg NAME SRC_DIR [extra cmake args...]
  local name=$1 src=$2; shift 2
  local t0; t0=$(date +%s)
  log "configure $name"
  cmake -S "$src" -B "$BUILD/$name" "${cmake_common[@]}" "$@" >"$BUILD/$name.configure.log" 2>&1 \
    || { tail -40 "$BUILD/$name.configure.log" >&2; die "cmake configure of $name failed (full log: $BUILD/$name.configure.log)"; }
  log "build + install $name (-j$JOBS)"
  cmake --build "$BUILD/$name" --target install -- -j"$JOBS" >"$BUILD/$name.build.log" 2>&1 \
    || { tail -40 "$BUILD/$name.build.log" >&2; die "build of $name failed (full log: $BUILD/$name.build.log)"; }
  log "$name done in $(( $(date +%s) - t0 )) s"
}
mkdir -p "$BUILD" "$PREFIX"

# 3. /tf and /tf_static carry tf2_msgs/msg/TFMessage, which has no PyPI wheel. Generate that one
#    package from its one-line definition; the type name and definition (hence the RIHS01 type hash)
#    are those of ROS 2's tf2_msgs, so our /tf interoperates with real tf2 nodes. On a robot tf2_msgs
#    comes from apt and this step is not used.
if [ ! -d "$VENV/share/tf2_msgs" ]; then
  tf_src="$BUILD/tf2_msgs_src"
  mkdir -p "$tf_src/msg"
  printf 'geometry_msgs/TransformStamped[] transforms\n' >"$tf_src/msg/TFMessage.msg"
  cat >"$tf_src/package.xml" <<'EOF'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.36.0</version>
  <description>TFMessage only, generated by embodied_memory's scripts/build_ros_interfaces.sh for venvs without tf2_msgs.</description>
  <maintainer email="maintainers@embodied-memory.invalid">embodied_memory maintainers</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
EOF
  cat >"$tf_src/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs NONE)
enable_language(C CXX)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
EOF
  build_pkg tf2_msgs "$tf_src"
fi

# 4. Our package. Python packages stay in the source tree (editable install), see the header.
build_pkg embodied_memory "$ROOT" -DEMEM_INSTALL_PYTHON_PACKAGES=OFF

site="$PREFIX/lib/python3.11/site-packages"
cat >"$PREFIX/env.sh" <<EOF
# Generated by scripts/build_ros_interfaces.sh: environment for the interfaces built in this prefix.
# The source tree comes first on PYTHONPATH so our Python packages are always the editable ones.
export AMENT_PREFIX_PATH="$PREFIX:$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export PYTHONPATH="$ROOT:$site\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$PREFIX/lib:$VENV/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF

# Smoke check: the generated types import and a service type resolves its request/response.
(
  # shellcheck disable=SC1091
  source "$PREFIX/env.sh"
  "$PY" -c 'from embodied_memory.srv import QueryText, RenderView, Relocalize, Recall, LastSeen, FilePath
from embodied_memory.msg import QueryHit, EpisodicEntry
from tf2_msgs.msg import TFMessage
QueryText.Request(text="chair", top_k=3); TFMessage()'
) || die "the generated interfaces do not import (see above)"
echo "$hash" >"$PREFIX/.stamp"
log "interfaces built into install/ros in $(( $(date +%s) - start )) s"
