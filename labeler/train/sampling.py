"""Which samples a trainer sees: a named selection's samples (`--selection`), the train / held-out split by
sample id (honouring review decisions) and the per-epoch sampler every trainer's loader uses.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from data_schema.train import TrainRunConfig
from labeler.dataset.reader import Dataset
from labeler.errors import LabelerError
from labeler.train.dist import is_main_process

log = logging.getLogger(__name__)


def split_ids(sample_ids: Sequence[str], heldout_frac: float, *, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split by sample id: the ids with the lowest sha256(seed:id) are held out.

    At least one id on each side when there are two or more and heldout_frac > 0; adding samples to a
    dataset keeps existing ids on their side unless they are near the cut.
    """
    order = sorted(sample_ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(order)
    k = round(heldout_frac * n)
    if heldout_frac > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    held = set(order[:k])
    return [s for s in sample_ids if s not in held], [s for s in sample_ids if s in held]


def selected_ids(ds: Dataset, selection: str | None) -> list[str]:
    """The dataset's sample ids (row order) in the named selection (`DATASET/selections/NAME.json`); all of
    them when `selection` is None. Ids the selection names but the dataset lacks (a selection of another
    version) are logged and skipped; a selection with none of the dataset's samples is one line."""
    if selection is None:
        return list(ds.sample_ids)
    from labeler.dataset.selections import read_selection, selection_path

    chosen = read_selection(ds.path, selection)
    wanted = set(chosen.sample_ids)
    ids = [s for s in ds.sample_ids if s in wanted]
    missing = len(wanted) - len(ids)
    if not ids:
        raise LabelerError(
            f"{selection_path(ds.path, selection)}: none of its {len(wanted)} sample(s) is an ok sample of "
            f"{ds.path} (made for dataset version {chosen.dataset_version[:12]}, this one is "
            f"{ds.version[:12]}); curate again: `labeler curate {ds.path}`"
        )
    if missing and is_main_process():
        log.warning(
            "%s: selection %r names %d sample(s) this dataset has no ok sample of; training on its other %d",
            ds.path,
            selection,
            missing,
            len(ids),
        )
    return ids


def run_split(ds: Dataset, cfg: TrainRunConfig) -> tuple[list[str], list[str], list[str]]:
    """(train, held-out, rejected ids left out) of a trainer's run: the samples of `cfg.selection` (all
    without one) split by id (`split_ids`: `cfg.heldout_frac`, `cfg.seed`), then those a review rejected
    left out unless `cfg.include_rejected` (`reviewed_split`)."""
    ids = selected_ids(ds, cfg.selection)
    return reviewed_split(
        ds, *split_ids(ids, cfg.heldout_frac, seed=cfg.seed), include_rejected=cfg.include_rejected
    )


def reviewed_split(
    ds: Dataset, train_ids: list[str], heldout_ids: list[str], *, include_rejected: bool
) -> tuple[list[str], list[str], list[str]]:
    """(train, held-out, rejected ids left out): a split by sample id (`data.split_ids`) without the
    samples a review rejected (labeler/review), unless `include_rejected`. Split first, then filter, so
    rejecting a sample moves no other sample across the split. Shared by train-heads, finetune and
    train-stereo."""
    from labeler.dataset.decisions import kept_sample_ids

    kept_train = kept_sample_ids(ds, train_ids, include_rejected=include_rejected)
    kept_held = kept_sample_ids(ds, heldout_ids, include_rejected=include_rejected)
    left_out = sorted((set(train_ids) - set(kept_train)) | (set(heldout_ids) - set(kept_held)))
    if left_out and is_main_process():
        log.info(
            "%s: %d sample(s) a review rejected left out (--include-rejected keeps them)",
            ds.path,
            len(left_out),
        )
    return kept_train, kept_held, left_out


def rejected_note(left_out: Sequence[str]) -> str:
    """`` (3 rejected by a review left out; --include-rejected keeps them)``, or nothing."""
    return (
        f" ({len(left_out)} rejected by a review left out; --include-rejected keeps them)" if left_out else ""
    )


class EpochSampler(torch.utils.data.Sampler):
    """(epoch, i) keys in a permutation drawn from (seed, epoch), this rank's share (padded to equal
    length across ranks, as DistributedSampler does). Call `set_epoch` before each epoch."""

    def __init__(self, n: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else np.arange(self.n)
        )
        total = len(self) * self.world
        order = np.resize(order, total)  # pads by repeating the start
        return iter((self.epoch, int(i)) for i in order[self.rank :: self.world])
