"""M3: 3D-spatial multimodal memory (Gaussian splats + per-Gaussian queries + PSC banks + memory attention).

Method: Zou et al., ICLR 2025 (arXiv 2503.16413); design notes and measured numbers in docs/m3.md.
"""

from .config import ExtractorSpec, M3Config, QueryConfig
from .memory import IngestResult, M3Memory, QueryHit, RenderedView

__all__ = ["M3Memory", "M3Config", "ExtractorSpec", "QueryConfig", "QueryHit", "IngestResult", "RenderedView"]
