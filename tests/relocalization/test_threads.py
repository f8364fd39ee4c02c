"""The query-time BLAS limit: one thread inside, the previous setting restored after, also when
queries overlap in several threads (ROS service calls) or raise."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from relocalization.threads import single_threaded_blas


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def before() -> list[int]:
    """The process's BLAS setting (no outer ``threadpool_limits`` here: an outer limit context
    stops threadpoolctl from changing the setting from worker threads)."""
    b = _blas_threads()
    assert b, "numpy should load a BLAS library"
    if set(b) == {1}:
        pytest.skip("BLAS already runs one thread here (OPENBLAS_NUM_THREADS=1?): nothing to observe")
    return b


def test_limit_inside_restored_after_nested_and_on_error(before):
    with single_threaded_blas():
        assert set(_blas_threads()) == {1}
        with single_threaded_blas():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}  # the outer query is still running
    assert _blas_threads() == before
    with pytest.raises(RuntimeError):
        with single_threaded_blas():
            raise RuntimeError("query failed")
    assert _blas_threads() == before

    @single_threaded_blas()  # how the relocalizers' locate() use it: every call limits and restores
    def query() -> list[int]:
        return _blas_threads()

    assert set(query()) == {1} and set(query()) == {1}
    assert _blas_threads() == before


def test_overlapping_queries_restore_the_setting_once_all_left(before):
    """Query A (this thread) is running when query B (another thread, as with a multi-threaded
    ROS executor) enters and leaves: the limit must stay until A leaves too. (Reads happen on
    this thread: OpenBLAS 0.3.31 may ignore a limit *set* from another thread, see
    relocalization.threads.)"""
    seen = {}

    def query_b():
        with single_threaded_blas():
            np.ones((64, 64)) @ np.ones((64, 64))
        seen["b_done"] = True

    with single_threaded_blas():
        tb = threading.Thread(target=query_b)
        tb.start()
        tb.join(10)
        assert seen.get("b_done")
        assert set(_blas_threads()) == {1}  # B left, A still inside
    assert _blas_threads() == before
