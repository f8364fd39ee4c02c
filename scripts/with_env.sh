#!/usr/bin/env bash
# Run a command with the environment of the built ROS 2 interfaces (if built) on top of the venv.
set -eo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$ROOT/install/ros/env.sh" ]; then
  # shellcheck disable=SC1091
  source "$ROOT/install/ros/env.sh"
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$@"
