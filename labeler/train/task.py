"""What a trainer is to the engine (labeler/train/engine.py): a `Task` (the data, the model, its parameter
groups, the forward pass, the loss, the held-out evaluation, the typed per-epoch record), the `Items` it
trains on, and the `TrainTerms` the engine measures over an epoch. The trainers' tasks:
labeler/train/{heads,stereo,sam2,dino}/task.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from data_schema.record import Record


@dataclass(frozen=True)
class TrainTerms:
    """What the engine measured over one epoch's optimiser steps (means over every rank's batches)."""

    epoch: int
    loss: float
    lr: float  # of the first parameter group, at the epoch's end
    seconds: float
    samples_per_s: float
    terms: dict[str, float]  # the task's loss terms (unweighted), those its steps returned


class Items(Protocol):
    """A task's training or held-out items: item i of an epoch is `items[(epoch, i)]`."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]: ...


class Task(Protocol):
    """A trainer's definition. Instances are picklable (they travel to spawned GPU processes).

    Attributes:
        checkpoint_format: the `format` tag of its checkpoints.
        loss_terms: names of the loss terms `loss` returns beside "loss", in column order.
        record_type: its per-epoch record (a frozen pydantic Record with an `epoch` field).
        heldout_type: its held-out record (every field optional: the figures of a run without held-out).
        epoch_columns, step_columns: metrics.csv and steps.csv columns.
        curve_panels: curves.png panels after the loss one: (record fields, title) each.
        evaluate_initial: evaluate the model before the first step (RUN/initial.json).
    """

    # read-only: a task may set them as plain class attributes
    @property
    def checkpoint_format(self) -> str: ...
    @property
    def loss_terms(self) -> tuple[str, ...]: ...
    @property
    def record_type(self) -> type[Record]: ...
    @property
    def heldout_type(self) -> type[Record]: ...
    @property
    def epoch_columns(self) -> tuple[str, ...]: ...
    @property
    def step_columns(self) -> tuple[str, ...]: ...
    @property
    def curve_panels(self) -> tuple[tuple[tuple[str, ...], str], ...]: ...
    @property
    def evaluate_initial(self) -> bool: ...

    def datasets(self, train_ids: list[str], heldout_ids: list[str]) -> tuple[Items, Items | None]:
        """Training and held-out items, indexable by (epoch, i); None when nothing is held out."""
        ...

    def build_model(self) -> torch.nn.Module: ...

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """AdamW groups ("params", "lr", "name"): every trainable parameter in exactly one."""
        ...

    def train_mode(self, model: torch.nn.Module) -> None:
        """Put the model in training mode (e.g. with frozen normalisation statistics)."""
        ...

    def prepare(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """A collated batch on the device, ready for `forward`."""
        ...

    def forward(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """The model's outputs (runs under autocast)."""
        ...

    def loss(self, out: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss": the total to minimise, term: unweighted term, ...} (runs outside autocast)."""
        ...

    def evaluate(
        self, model: torch.nn.Module, loader: Any, device: torch.device, *, amp: bool, epoch: int
    ) -> tuple[Record, list[np.ndarray]]:
        """Held-out record and preview rows (RGB uint8) of the model in eval mode."""
        ...

    def epoch_record(self, train: TrainTerms, heldout: Record) -> Record: ...

    def score(self, row: Any) -> float:
        """Lower is better; the best epoch's model is saved by `save_best`."""
        ...

    def checkpoint_fields(self) -> dict[str, Any]:
        """Plain fields stored in every checkpoint beside the weights (what rebuilds the model)."""
        ...

    def save_best(self, run_dir: Path, model: torch.nn.Module, payload: dict[str, Any], *, step: int) -> None:
        """Keep the best epoch's model (`payload`: the checkpoint fields; `step`: optimiser steps so far)."""
        ...
