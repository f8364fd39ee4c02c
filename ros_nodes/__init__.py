"""ROS 2 interface: rclpy nodes, message conversions, bring-up runner."""
