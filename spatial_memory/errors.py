"""Typed errors shared by every layer.

Each error names what is wrong (file, topic, field) so a robot operator can fix the input
without reading a traceback. All derive from :class:`EmemError`; most also derive from the
builtin they specialise (``ValueError``, ``FileNotFoundError``) so generic handlers still work.
"""

from __future__ import annotations


class EmemError(Exception):
    """Base class of every error raised by embodied_memory."""


class InvalidFrameError(EmemError, ValueError):
    """A frame is malformed: wrong dtype/shape, rgb/depth size mismatch, NaN/inf/negative depth."""


class InvalidPoseError(EmemError, ValueError):
    """A pose is not a rigid transform (non-orthonormal rotation, NaN, wrong shape)."""


class InvalidIntrinsicsError(EmemError, ValueError):
    """Camera intrinsics are inconsistent (non-positive focal length, principal point, size)."""


class ImageDecodeError(EmemError, ValueError):
    """An image file or message payload could not be decoded (corrupt, truncated, empty)."""


class UnsupportedEncodingError(EmemError, ValueError):
    """An image encoding is not one of the supported ones."""


class MissingTopicError(EmemError, KeyError):
    """A rosbag2 file lacks a topic that the reader was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "missing topic"


class DatasetFormatError(EmemError, ValueError):
    """A dataset folder does not follow the layout its reader expects."""


class MapFormatError(EmemError, ValueError):
    """A saved map is of another format version, misses tensors, or has mismatched shapes."""


class ConfigError(EmemError, ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


class QueryError(EmemError, ValueError):
    """A query is malformed: empty text, unknown extractor, bad arguments."""


class EmptyMapError(EmemError, RuntimeError):
    """An operation needs a non-empty map."""
