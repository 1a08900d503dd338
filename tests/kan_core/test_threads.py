"""kan_core.threads: BLAS limited to one thread inside the block, restored after it."""

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_info

from kan_core.threads import one_blas_thread


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_blas_runs_on_one_thread_inside_the_block_and_as_before_after_it():
    scipy.linalg.lstsq(np.eye(3), np.ones(3))  # scipy's BLAS loaded
    before = _blas_threads()
    with one_blas_thread():
        assert all(n == 1 for n in _blas_threads())
        coef = scipy.linalg.lstsq(np.eye(3), np.ones(3))[0]  # still computes
    assert np.allclose(coef, 1.0)
    assert _blas_threads() == before
