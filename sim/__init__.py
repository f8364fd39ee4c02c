"""Frame sources: the embedded CPU simulator, the Habitat adapter, datasets and rosbag2 files."""
