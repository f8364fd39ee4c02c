"""Message synchronisation and a TF buffer: our replacements for message_filters and tf2_ros.

Neither ``message_filters`` nor ``tf2_ros`` exists as a wheel, so the nodes use:

* :class:`ApproximateTimeSync` -- groups one message from each of N inputs whose stamps lie
  within ``slop`` seconds of each other (the policy of message_filters'
  ApproximateTimeSynchronizer, implemented here: each input keeps a bounded queue; when a message
  arrives, the closest message of every other queue is picked and the set is emitted if its stamp
  spread is within ``slop``; everything at or before the emitted set is then discarded).
* :class:`TfBuffer` -- keeps ``/tf`` and ``/tf_static`` (``tf2_msgs/TFMessage``) as a tree of
  time-stamped edges and answers ``lookup(target, source, stamp)`` by chaining edges through the
  tree, interpolating each dynamic edge in time (linear translation, slerp rotation).

Both are plain thread-safe Python objects (no rclpy), fed by node callbacks.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from spatial_memory.errors import EmemError
from spatial_memory.geometry import interpolate_pose, invert_pose, validate_pose


class TransformLookupError(EmemError, LookupError):
    """A transform between two frames is not available at the requested time (unknown frame,
    frames in disconnected trees, or a time outside the buffered window)."""


# ---------------------------------------------------------------------------------------------
# Approximate time synchroniser
# ---------------------------------------------------------------------------------------------


@dataclass
class SyncStats:
    received: list[int]
    emitted: int = 0
    discarded: int = 0  # messages that left a queue without being part of an emitted set


class ApproximateTimeSync:
    """Group messages from ``n_inputs`` streams whose stamps are within ``slop_s`` of each other.

    Args:
        n_inputs: number of streams (e.g. 3 for rgb, depth, pose).
        callback: called as ``callback(*msgs)`` with one message per input, in input order,
            from the thread that called :meth:`add` (outside the internal lock).
        slop_s: largest allowed spread ``max(stamp) - min(stamp)`` of a group, seconds.
        queue_size: messages kept per input; the oldest is discarded when full.
    """

    def __init__(self, n_inputs: int, callback: Callable[..., Any], slop_s: float = 0.02, queue_size: int = 10) -> None:
        if n_inputs < 2:
            raise ValueError(f"need at least 2 inputs to synchronise, got {n_inputs}")
        if not slop_s >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.n_inputs = n_inputs
        self.callback = callback
        self.slop_ns = int(round(slop_s * 1e9))
        self.queue_size = int(queue_size)
        # Per input: stamps sorted ascending and the messages in the same order.
        self._stamps: list[list[int]] = [[] for _ in range(n_inputs)]
        self._msgs: list[list[Any]] = [[] for _ in range(n_inputs)]
        self._lock = threading.Lock()
        self.stats = SyncStats(received=[0] * n_inputs)

    def add(self, index: int, msg: Any, stamp_ns: int) -> bool:
        """Offer ``msg`` (stamp ``stamp_ns``) on input ``index``; return True if a group was emitted."""
        if not 0 <= index < self.n_inputs:
            raise IndexError(f"input index {index} out of range for {self.n_inputs} inputs")
        with self._lock:
            self.stats.received[index] += 1
            stamps, msgs = self._stamps[index], self._msgs[index]
            pos = bisect.bisect_right(stamps, stamp_ns)
            stamps.insert(pos, stamp_ns)
            msgs.insert(pos, msg)
            if len(stamps) > self.queue_size:
                del stamps[0], msgs[0]
                self.stats.discarded += 1
            group = self._match(index, stamp_ns)
        if group is None:
            return False
        self.callback(*group)
        return True

    def _match(self, index: int, stamp_ns: int) -> list[Any] | None:
        """Pick, in every queue, the message closest to ``stamp_ns``; emit if the spread <= slop."""
        picks: list[int] = []
        for i in range(self.n_inputs):
            k = closest_by_stamp(self._stamps[i], stamp_ns)
            if k < 0:
                return None
            picks.append(k)
        chosen = [self._stamps[i][k] for i, k in enumerate(picks)]
        if max(chosen) - min(chosen) > self.slop_ns:
            return None
        group = [self._msgs[i][k] for i, k in enumerate(picks)]
        # Drop the emitted messages and everything older: a later group can never use them.
        for i, k in enumerate(picks):
            self.stats.discarded += k
            del self._stamps[i][: k + 1], self._msgs[i][: k + 1]
        self.stats.emitted += 1
        return group

    def pending(self) -> list[int]:
        """Messages currently queued per input."""
        with self._lock:
            return [len(s) for s in self._stamps]


# ---------------------------------------------------------------------------------------------
# TF buffer
# ---------------------------------------------------------------------------------------------


@dataclass
class _Edge:
    """Transforms ``T_parent_child`` of one tree edge, sorted by stamp (static: one, stamp ignored)."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)


class TfBuffer:
    """A tf2-style transform tree fed from ``/tf`` and ``/tf_static``.

    Each child frame has one parent. Dynamic edges keep ``cache_time_s`` of history; lookups at a
    stamp between two samples interpolate, and a stamp within ``extrapolation_tolerance_s`` of the
    nearest sample uses that sample. ``stamp_ns = 0`` means "latest time at which every edge of the
    chain is known" (tf2's ``TimePointZero``).
    """

    def __init__(self, cache_time_s: float = 10.0, extrapolation_tolerance_s: float = 0.05) -> None:
        self.cache_ns = int(cache_time_s * 1e9)
        self.tol_ns = int(extrapolation_tolerance_s * 1e9)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._lock = threading.Lock()

    # -- feeding ---------------------------------------------------------------------------
    def set_transform(self, parent: str, child: str, T_parent_child: np.ndarray, stamp_ns: int, static: bool = False) -> None:
        """Insert one transform. Raises InvalidPoseError for a non-rigid transform, ValueError for
        a self-loop or a child that would get a second parent (tf trees have one parent per frame)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise ValueError(f"bad transform frames parent={parent!r} child={child!r}")
        T = validate_pose(T_parent_child, f"transform {parent}->{child}")
        with self._lock:
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                # A new edge, or a re-parenting (tf2 accepts it, latest wins): never create a cycle.
                if (edge is None or edge.parent != parent) and self._is_ancestor_locked(child, parent):
                    raise ValueError(f"transform {parent}->{child} would create a cycle in the tf tree")
                edge = _Edge(parent=parent, static=static)
                self._edges[child] = edge
            if static:
                edge.stamps, edge.poses = [int(stamp_ns)], [T]
                return
            pos = bisect.bisect_right(edge.stamps, int(stamp_ns))
            if pos > 0 and edge.stamps[pos - 1] == int(stamp_ns):
                edge.poses[pos - 1] = T
            else:
                edge.stamps.insert(pos, int(stamp_ns))
                edge.poses.insert(pos, T)
            cutoff = edge.stamps[-1] - self.cache_ns
            drop = bisect.bisect_left(edge.stamps, cutoff)
            if drop > 0:
                del edge.stamps[:drop], edge.poses[:drop]

    def _is_ancestor_locked(self, frame: str, of: str) -> bool:
        """True if ``frame`` is ``of`` or one of its ancestors."""
        f = of
        seen = 0
        while f in self._edges and seen <= len(self._edges):
            f = self._edges[f].parent
            if f == frame:
                return True
            seen += 1
        return frame == of

    def add_tf_message(self, msg: Any, static: bool = False) -> int:
        """Insert every ``TransformStamped`` of a ``tf2_msgs/TFMessage``; return how many were
        accepted (bad ones, e.g. NaN, are skipped and not counted)."""
        from ros_nodes.conversions import stamp_to_ns, transform_msg_to_matrix

        ok = 0
        for ts in msg.transforms:
            try:
                T = transform_msg_to_matrix(ts.transform, f"{ts.header.frame_id}->{ts.child_frame_id}")
                self.set_transform(ts.header.frame_id, ts.child_frame_id, T, stamp_to_ns(ts.header.stamp), static)
                ok += 1
            except (ValueError, EmemError):
                continue
        return ok

    # -- queries ---------------------------------------------------------------------------
    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def _chain_locked(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]``."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > len(self._edges) + 1:
                raise TransformLookupError(f"cycle in the tf tree at {frame!r}")
        return chain

    def _edge_at_locked(self, child: str, stamp_ns: int) -> np.ndarray:
        e = self._edges[child]
        if e.static:
            return e.poses[0]
        st = e.stamps
        j = bisect.bisect_left(st, stamp_ns)
        if j < len(st) and st[j] == stamp_ns:
            return e.poses[j]
        if j == 0:
            if st[0] - stamp_ns <= self.tol_ns:
                return e.poses[0]
            raise TransformLookupError(
                f"lookup of {e.parent}->{child} at {stamp_ns * 1e-9:.3f} s would extrapolate into the past "
                f"(oldest is {st[0] * 1e-9:.3f} s)"
            )
        if j == len(st):
            if stamp_ns - st[-1] <= self.tol_ns:
                return e.poses[-1]
            raise TransformLookupError(
                f"lookup of {e.parent}->{child} at {stamp_ns * 1e-9:.3f} s would extrapolate into the future "
                f"(latest is {st[-1] * 1e-9:.3f} s)"
            )
        a = (stamp_ns - st[j - 1]) / float(st[j] - st[j - 1])
        return interpolate_pose(e.poses[j - 1], e.poses[j], a)

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """``T_target_source`` (maps points in ``source`` to ``target``) at ``stamp_ns``.

        Raises:
            TransformLookupError: unknown frame, disconnected trees, or the stamp is outside the
                buffered window of an edge on the path.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        with self._lock:
            if target == source:
                return np.eye(4)
            known = set(self._edges) | {e.parent for e in self._edges.values()}
            for f in (target, source):
                if f not in known:
                    raise TransformLookupError(f"frame {f!r} does not exist in the tf tree (known: {sorted(known)})")
            up_s, up_t = self._chain_locked(source), self._chain_locked(target)
            common = next((f for f in up_s if f in set(up_t)), None)
            if common is None:
                raise TransformLookupError(
                    f"frames {target!r} and {source!r} are not connected (roots {up_t[-1]!r} and {up_s[-1]!r})"
                )
            path_s = up_s[: up_s.index(common)]  # children whose edges lead source -> common
            path_t = up_t[: up_t.index(common)]
            if stamp_ns == 0:
                dyn = [self._edges[c].stamps[-1] for c in path_s + path_t if not self._edges[c].static]
                stamp_ns = min(dyn) if dyn else 0
            T_common_source = np.eye(4)
            for c in reversed(path_s):
                T_common_source = T_common_source @ self._edge_at_locked(c, stamp_ns)
            T_common_target = np.eye(4)
            for c in reversed(path_t):
                T_common_target = T_common_target @ self._edge_at_locked(c, stamp_ns)
        return invert_pose(T_common_target) @ T_common_source

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformLookupError:
            return False


def closest_by_stamp(stamps: Sequence[int], stamp_ns: int) -> int:
    """Index of the stamp closest to ``stamp_ns`` in an ascending list (-1 if empty)."""
    if not stamps:
        return -1
    j = bisect.bisect_left(stamps, stamp_ns)
    cands = [k for k in (j - 1, j) if 0 <= k < len(stamps)]
    return min(cands, key=lambda k: abs(stamps[k] - stamp_ns))
