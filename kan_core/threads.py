"""One BLAS thread for the many small least-squares problems of discovery.

numpy's and scipy's OpenBLAS start a thread per core for every product and factorisation. On the
(rows <= 2000, columns <= a few thousand) problems of the sparse search that costs more than it
gains even on an idle machine, and on a busy one the threads spin against each other: one
``scipy.linalg.lstsq`` of a (400, 250) matrix took 40x the CPU time of the single-threaded call.
`one_blas_thread` limits BLAS (not torch's OpenMP) to one thread inside a ``with`` block, through
threadpoolctl (a dependency of the package).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS libraries limited to one thread inside the block, restored after it."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
