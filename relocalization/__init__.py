"""FaVoR relocalization (landmark voxel descriptor fields) and the keyframe-retrieval baseline."""
