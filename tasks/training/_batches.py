"""Training batches from a seeded sampler, in-process or from DataLoader worker processes.

In-process (``workers=0``) one generator seeded with ``seed_key`` draws every batch, so a run
is reproducible on any machine. With ``workers=N`` each worker process draws its share from
its own generator (``seed_key`` + worker id) and batches arrive in a fixed round-robin order:
reproducible for the same N, and N times the sampling throughput, which is what keeps a GPU
busy when batches are rendered on the CPU. Workers are forked (the sources are inherited, not
pickled): use them from a training process of its own, as the trainers' command lines do, not
from a process running servers or cluster clients in other threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

BatchMaker = Callable[[np.random.Generator], tuple[Any, ...]]


def training_batches(
    make_batch: BatchMaker, seed_key: Sequence[int], n: int, workers: int = 0
) -> Iterator[tuple[Any, ...]]:
    """``n`` batches from ``make_batch(rng)``; see the module docstring for ``workers``."""
    if workers <= 0:
        rng = np.random.default_rng(list(seed_key))
        for _ in range(n):
            yield make_batch(rng)
        return
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    class BatchStream(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[tuple[Any, ...]]:
            info = get_worker_info()
            wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
            rng = np.random.default_rng([*seed_key, wid])
            for _ in range(wid, n, nw):
                yield make_batch(rng)

    loader = DataLoader(
        BatchStream(),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        multiprocessing_context="fork",
        collate_fn=lambda batch: batch,
    )
    yield from loader
