"""Scene registry: every scene the embedded simulator can load, by name."""

from __future__ import annotations

from spatial_memory.errors import ConfigError

from .scene import Scene

SCENE_NAMES: tuple[str, ...] = ("drake_living_room", "apartment")


def load_scene(name: str, seed: int = 0) -> Scene:
    """Load a scene by name.

    Args:
        name: one of :data:`SCENE_NAMES`: ``drake_living_room`` (the real furnished Drake room;
            ``seed`` is ignored) or ``apartment`` (procedural, 3 rooms, drawn from ``seed``).
        seed: apartment seed.

    Raises:
        ConfigError: unknown scene name.
        DatasetFormatError: the Drake room data is missing or malformed.
    """
    if name == "drake_living_room":
        from .drake_room import load_drake_living_room

        return load_drake_living_room()
    if name == "apartment":
        from .apartment import generate_apartment

        return generate_apartment(seed)
    raise ConfigError(f"unknown scene {name!r}; valid scenes: {', '.join(SCENE_NAMES)}")
