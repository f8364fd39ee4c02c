"""The frame-source interface every source implements (simulator, Habitat, datasets, bags).

A source is an iterable of :class:`spatial_memory.Frame` with a known camera. Sources that
can fail per frame (corrupt files, bad messages) skip the bad frame, count it in
``stats.skipped`` and log why, so a long stream never dies on one bad frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

from spatial_memory.types import CameraIntrinsics, Frame

log = logging.getLogger(__name__)


@dataclass
class SourceStats:
    """Counters a source keeps while streaming."""

    yielded: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    def skip(self, reason: str, keep: int = 100) -> None:
        self.skipped += 1
        if len(self.skip_reasons) < keep:
            self.skip_reasons.append(reason)
        log.warning("skipping frame: %s", reason)


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields posed RGB-D frames."""

    name: str
    stats: SourceStats

    @property
    def intrinsics(self) -> CameraIntrinsics: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def __len__(self) -> int: ...
