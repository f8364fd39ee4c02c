"""Configuration of the M3 memory: which foundation models, their PSC thresholds and query widths."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from splatting.online import MapperConfig

from ..errors import ConfigError

# M3's thresholds per model family; 1.0 (exact duplicates only) for mask/label features.
DEFAULT_THETA = {"labels": 1.0, "clip": 0.8, "xfeat": 0.75}
DEFAULT_QUERY_DIM = {"labels": 16, "clip": 16, "xfeat": 16}


@dataclass
class ExtractorSpec:
    """One foundation model of the memory.

    Attributes:
        name: registry name (``labels``, ``xfeat``, ``clip``).
        theta: PSC greedy-filter cosine threshold.
        query_dim: floats per Gaussian for this model.
        options: constructor arguments of the extractor (e.g. ``checkpoint_path``).
        psc_max_size: cap on the bank size (None = unbounded).
    """

    name: str
    theta: float | None = None
    query_dim: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    psc_max_size: int | None = 4096

    def __post_init__(self) -> None:
        if self.theta is None:
            self.theta = DEFAULT_THETA.get(self.name, 0.8)
        if self.query_dim is None:
            self.query_dim = DEFAULT_QUERY_DIM.get(self.name, 16)
        if not 0.0 < float(self.theta) <= 1.0:
            raise ConfigError(f"extractor {self.name!r}: theta must be in (0, 1], got {self.theta}")
        if int(self.query_dim) < 1:
            raise ConfigError(f"extractor {self.name!r}: query_dim must be >= 1, got {self.query_dim}")


@dataclass
class QueryConfig:
    """How per-Gaussian text scores become 3D hits.

    Attributes:
        score_margin: Gaussians scoring within this of the best score are candidates.
        max_candidates: keep at most this many top-scoring candidates.
        min_opacity: ignore nearly transparent Gaussians.
        cluster_eps_m: DBSCAN neighbourhood radius in metres.
        min_support: drop clusters with fewer Gaussians.
    """

    score_margin: float = 0.1
    max_candidates: int = 20000
    min_opacity: float = 0.1
    cluster_eps_m: float = 0.15
    min_support: int = 5


@dataclass
class M3Config:
    """Everything needed to rebuild an :class:`~spatial_memory.m3.memory.M3Memory`."""

    extractors: list[ExtractorSpec] = field(default_factory=lambda: [ExtractorSpec("labels")])
    tau: float = 0.05
    train_W: bool = True
    mapper: MapperConfig = field(default_factory=MapperConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    render_backend: str = "auto"

    def __post_init__(self) -> None:
        if not self.extractors:
            raise ConfigError("M3Config: at least one extractor is required")
        names = [e.name for e in self.extractors]
        if len(set(names)) != len(names):
            raise ConfigError(f"M3Config: duplicate extractor names {names}")
        if self.tau <= 0:
            raise ConfigError(f"M3Config: tau must be > 0, got {self.tau}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "M3Config":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        d = dict(d)
        try:
            ex = [ExtractorSpec(**e) for e in d.pop("extractors", [{"name": "labels"}])]
            mapper = MapperConfig.from_dict(d.pop("mapper", {}))
            query = QueryConfig(**d.pop("query", {}))
            return cls(extractors=ex, mapper=mapper, query=query, **d)
        except TypeError as e:
            raise ConfigError(f"M3Config: {e}") from None
