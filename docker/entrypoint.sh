#!/usr/bin/env bash
# Container entry point: source ROS 2 and the vos_ros workspace, then run the command.
# No command = `ros2 launch vos_ros vos.launch.py`; arguments that look like launch arguments
# (name:=value) or options (-x) are passed to that launch, e.g. `docker run IMAGE device:=cpu`.
set -eo pipefail

# setup.bash reads unset variables, so -u stays off while sourcing.
# shellcheck disable=SC1090
source "${ROS_SETUP:-/opt/ros/${ROS_DISTRO:?ROS_DISTRO is not set}/setup.bash}"
# shellcheck disable=SC1090,SC1091
source "${VOS_WS:-/ws}/install/setup.bash"
# The tools by name (vos_make_bag, vos_bag_eval ...), as well as through `ros2 run vos_ros`.
export PATH="${VOS_WS:-/ws}/install/vos_ros/lib/vos_ros:${PATH}"

if [[ $# -eq 0 || "$1" == *:=* || "$1" == -* ]]; then
    set -- ros2 launch vos_ros vos.launch.py "$@"
fi
exec "$@"
