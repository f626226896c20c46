"""Where labeler autocasts, and the CPU stand-in its tests run the CUDA-only bodies under.

labeler autocasts only on CUDA: bfloat16 for training (every trainer's forward pass and held-out
evaluation), SAM2, SAM 3 and `labeler predict`; FoundationStereo's `amp_dtype` (float16 by default, as
the release). On the CPU everything stays float32 — except inside `cpu_autocast()`, where the same code
that autocasts on CUDA autocasts on the CPU instead, in the dtype it asks for. That is how the tests run
the autocast bodies on a machine with no GPU: the same calls, the same casts out of the autocast region,
the same float32 islands (`torch.autocast(..., enabled=False)` inside the FoundationStereo cost volume),
with CPU autocast's op lists (matmuls and convolutions in the low dtype, as on CUDA; a few ops differ, see
torch's "CPU Ops that can autocast"). What still only runs on CUDA is listed in docs/gpu.md.

`cpu_autocast` is a context variable: it holds in the thread (and asyncio task) that set it, not in
DataLoader workers or spawned processes, which run no model code under autocast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_CPU_STAND_IN: ContextVar[bool] = ContextVar("labeler_cpu_autocast", default=False)


@contextmanager
def cpu_autocast() -> Iterator[None]:
    """Within: code that autocasts on CUDA autocasts on the CPU too (for the tests; see the module)."""
    token = _CPU_STAND_IN.set(True)
    try:
        yield
    finally:
        _CPU_STAND_IN.reset(token)


def autocasts(device: torch.device | str, wanted: bool) -> bool:
    """Whether code asked for mixed precision (`wanted`) runs under autocast on `device`: on CUDA, or on
    the CPU inside `cpu_autocast()`."""
    kind = device if isinstance(device, str) else device.type
    kind = kind.split(":")[0]
    return bool(wanted) and (kind == "cuda" or (kind == "cpu" and _CPU_STAND_IN.get()))


def autocast(device: torch.device | str, wanted: bool, dtype: torch.dtype | None = None) -> Any:
    """`torch.autocast` on `device` in `dtype` (default bfloat16), enabled where `autocasts` says."""
    import torch

    kind = (device if isinstance(device, str) else device.type).split(":")[0]
    return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=autocasts(kind, wanted))
