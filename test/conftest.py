"""Test-wide settings: DDS stays on loopback in a random domain; ROS logs go to tmp."""

import os
import random
import tempfile

# Set before anything imports rclpy: without it Fast DDS multicasts onto the real network.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 200)))
os.environ.setdefault('ROS_LOG_DIR', os.path.join(tempfile.gettempdir(), 'vos_ros_test_logs'))
