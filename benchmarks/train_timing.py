"""One timing of training steps for the trainers' benchmarks (bench_train_stereo, bench_train_sam2,
bench_adapt_backbone): seconds per optimiser step after a warm-up step, and the peak memory."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_steps(step: Callable[[int], None], steps: int, *, cuda: bool) -> tuple[float, float]:
    """(seconds per step, peak GiB) of `step(1) .. step(steps)` after a warm-up `step(0)`: CUDA's peak
    allocation from after the warm-up on, or the process's peak resident memory on the CPU."""
    import resource

    import torch

    step(0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    if cuda:
        return dt, torch.cuda.max_memory_allocated() / 2**30
    return dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
