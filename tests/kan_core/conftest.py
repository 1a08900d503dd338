"""Shared test setup for kan_core.

The engine never sets torch's thread count. These tests run on small tensors, where an OpenMP
parallel region (MKL uses one even for tiny matrix products) costs more than it saves, and on a
shared, oversubscribed CPU waits for a descheduled thread: closures then run ~10x slower. So the
kan_core tests run single-threaded, and the previous setting is restored afterwards.
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
