"""The run settings every trainer's command config shares, declared once.

`TrainOptions`: what every trainer command takes (train-heads, finetune, train-stereo, train-sam2,
adapt-backbone). `TrainRunConfig`: a trainer that trains on a dataset into a run folder, the record the
engine (labeler/train/engine.py) reads its settings from; TrainHeadsConfig, TrainStereoConfig,
TrainSam2Config and AdaptBackboneConfig derive from it, FinetuneConfig (its data, folder and most settings
are the frozen run's) from `TrainOptions` alone. A config restates a field only where its default or its
description differs; the field names are those of the saved config.json files, which load as before.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from data_schema.curation import SELECTION_NAME_PATTERN
from data_schema.record import Record


class TrainOptions(Record):
    """The options of every trainer command."""

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    gpus: tuple[int, ...] = Field((), description="CUDA ids; several -> DDP (one process per GPU)")
    resume: bool = Field(False, description="continue the run in --out from its last checkpoint")
    include_rejected: bool = Field(
        False, description="also train and evaluate on samples and objects a review rejected"
    )


class TrainRunConfig(TrainOptions):
    """A trainer on a pseudo-label dataset, into the run folder `out`: the settings the engine reads."""

    dataset: Path
    out: Path
    batch_size: int = Field(4, ge=1, description="per process")
    weight_decay: float = Field(0.01, ge=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="linear warm-up share of all steps, then cosine")
    heldout_frac: float = Field(0.2, ge=0, lt=1, description="share of sample ids held out for metrics")
    seed: int = 0
    workers: int = Field(2, ge=0, description="DataLoader workers per process")
    amp: bool = Field(True, description="bf16 autocast on CUDA (never on CPU)")
    selection: str | None = Field(
        None,
        pattern=SELECTION_NAME_PATTERN,
        description="train and hold out only the samples of this named selection (DATASET/selections/; "
        "`labeler curate` writes them); None: every sample",
    )
