"""ROS 2 interface of vos_ros: the node and message conversions (imports rclpy)."""
