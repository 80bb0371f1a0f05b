"""Running torch on one thread for a while (the course's small tensors, and numbers that do not depend on the
machine's core count)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch single-threaded meanwhile, then restore the thread count.

    Small tensors gain little from a second thread, and on a machine whose cores are busy, waiting for the other
    thread at every operation costs milliseconds each time. Reductions also sum in another order with another
    thread count, which moves the last digits of a fitted model's scores: computing on one thread makes them the
    same on every machine.
    """
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)
