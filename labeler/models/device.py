"""The torch device a `--gpu ID` flag names, checked before any model loads (one line when it is not here)."""

from __future__ import annotations

from labeler.errors import LabelerError


def torch_device(gpu: int | None, *, flag: str = "--gpu") -> str:
    """ "cpu" for None, else "cuda:ID" once CUDA and that device are known to be present.

    Raises:
        LabelerError: a negative id, no CUDA on this machine, or fewer devices than `gpu + 1`.
    """
    if gpu is None:
        return "cpu"
    if gpu < 0:
        raise LabelerError(f"{flag} {gpu}: a CUDA id is 0 or more; leave {flag} out to run on the CPU")
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        raise LabelerError(
            f"{flag} {gpu}: CUDA is not available on this machine; leave {flag} out to run on the CPU"
        )
    if gpu >= n:
        raise LabelerError(f"{flag} {gpu}: CUDA device {gpu} not found ({n} visible); name a visible device")
    return f"cuda:{gpu}"
