"""Command-line options every training script shares: where and how fast it trains."""

from __future__ import annotations

import argparse

__all__ = ["add_runtime_options"]


def add_runtime_options(
    parser: argparse.ArgumentParser, *, threads: int, batch: int, lr: float, device: str
) -> None:
    """--threads, --batch, --lr, --device and --loader-workers, with these defaults."""
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--device", default=device, help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--loader-workers", type=int, default=0, help="processes drawing batches (GPU runs)"
    )
