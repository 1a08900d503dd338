"""One BLAS thread for the many small least-squares problems of discovery.

numpy's and scipy's OpenBLAS start a thread per core for every product and factorisation. On the
(rows <= 2000, columns <= a few thousand) problems of the sparse search that costs more than it
gains even on an idle machine, and on a busy one the threads spin against each other: one
``scipy.linalg.lstsq`` of a (400, 250) matrix took 40x the CPU time of the single-threaded call.
`one_blas_thread` limits BLAS (not torch's OpenMP) to one thread inside a ``with`` block, through
threadpoolctl where it is installed; without it, it does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS libraries limited to one thread inside the block, restored after it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the block runs with the libraries' own threads
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
