"""Thread policy of a localisation query.

A query alternates between torch (XFeat, descriptor cosines), numba (descriptor rendering) and
small numpy BLAS products (point transforms, VLAD words). OpenBLAS workers busy-wait for a
while after each product, and on a small CPU they then compete with XFeat's threads for the
same cores: on the 2-core development box, one-thread BLAS inside the query made a FaVoR
simulator query 1.8-1.9x faster (134-151 ms -> 74-79 ms mean over 20 views, alternating runs;
XFeat alone 78-82 -> 36-39 ms), and the products are too small to gain from threads.
Both relocalizers therefore run their queries with BLAS limited to one thread; the previous
limit is restored afterwards, so the rest of the process keeps its own setting.

Limitation: OpenBLAS 0.3.31 (numpy's) sometimes ignores a thread count set from a thread other
than the main one (seen with a thread pool after concurrent use); a query on such a thread then
simply runs as before, with BLAS threads. Queries from the main thread (CLI, evaluation,
scripts) always get the limit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_controller = None
_active = 0  # queries inside single_threaded_blas (the limit is process-wide)
_limiter = None  # threadpoolctl limiter of the outermost query; restores the original setting


def _get_controller():
    """One :class:`threadpoolctl.ThreadpoolController` (building it scans the loaded libraries)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS (OpenBLAS/MKL/BLIS) to one thread inside the block; torch and numba keep theirs.
    Also a decorator (``@single_threaded_blas()``): each call enters its own block.

    The limit is process-wide, so concurrent queries (e.g. two ROS service calls) share it: the
    first to enter sets it, the last to leave restores the previous setting.
    """
    global _active, _limiter
    with _lock:
        if _active == 0:
            _limiter = _get_controller().limit(limits=1, user_api="blas")
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


__all__ = ["single_threaded_blas"]
