"""Place-centric episodic memory: Spatially-Aware Transformer reader + Adaptive Memory Allocators.

See docs/episodic.md. The online API is :class:`EpisodicMemory`; task episodes are built from
plain walk records (:mod:`.tasks`; the simulator side is ``sim.episodes``), and training and
evaluation, which need both layers, live in ``emem.episodic_experiment`` (``emem episodic train`` /
``emem eval episodic``).
"""

from .memory import Answer, EpisodicConfig, EpisodicMemory, LastSeen, Models
from .store import ACTIONS, STRATEGIES, EpisodicEntry, EpisodicStore, PlaceClusterer

__all__ = [
    "ACTIONS", "STRATEGIES", "Answer", "EpisodicConfig", "EpisodicEntry", "EpisodicMemory", "EpisodicStore",
    "LastSeen", "Models", "PlaceClusterer",
]
