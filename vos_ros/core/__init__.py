"""Framework-free video object segmentation core (numpy, OpenCV, torch; never rclpy)."""

from vos_ros.core.errors import VosError
from vos_ros.core.session import Result
from vos_ros.core.session import Session
from vos_ros.core.session import SessionConfig

__all__ = ['Result', 'Session', 'SessionConfig', 'VosError']
