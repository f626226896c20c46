"""The run options of the trainer commands (train-heads, finetune, train-stereo, train-sam2, adapt-backbone),
declared once: the flag, its type and the help most of them show. A command whose option means something
narrower gives its own help with `with_help` (`Annotated[int, with_help(EpochsOpt, "adaptation epochs")]`);
the defaults are each command's, in its signature, as those of its config (data_schema/train.py).

`config_of` turns a trainer command's flags into its config: every flag sets the field of its name.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from typer.models import OptionInfo

from labeler.cli._app import SelectionOpt as ExportSelectionOpt
from labeler.cli._app import _gpus

C = TypeVar("C", bound=BaseModel)

EpochsOpt = Annotated[int, typer.Option(help="epochs over the training samples")]
BatchSizeOpt = Annotated[int, typer.Option(help="per process")]
LrOpt = Annotated[float, typer.Option(help="AdamW learning rate")]
WarmupOpt = Annotated[float, typer.Option(help="linear warm-up share of all steps, then cosine")]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay")]
HeldoutFracOpt = Annotated[float, typer.Option(help="share of sample ids held out for metrics")]
SeedOpt = Annotated[int, typer.Option(help="seed of the split and the augmentations")]
WorkersOpt = Annotated[int, typer.Option(help="DataLoader workers per process")]
GpuOpt = Annotated[str | None, typer.Option(help="CUDA ids, e.g. 0 or 0,1 (DDP)")]
AmpOpt = Annotated[bool, typer.Option(help="bf16 autocast on CUDA")]
ResumeOpt = Annotated[bool, typer.Option(help="continue the run in --out")]
IncludeRejectedOpt = Annotated[
    bool, typer.Option(help="also train on samples a review rejected (default: left out)")
]


def with_help(option: Any, help: str) -> OptionInfo:
    """The shared `option` (one of the aliases above) with this command's help."""
    (info,) = (m for m in option.__metadata__ if isinstance(m, OptionInfo))
    info = copy.copy(info)
    info.help = help
    return info


TrainSelectionOpt = Annotated[
    str | None,
    with_help(
        ExportSelectionOpt,
        "train and hold out only the samples of this named selection (`labeler curate` writes them)",
    ),
]


def config_of(config: type[C], flags: dict[str, Any], /, **parsed: Any) -> C:
    """The `config` of a command's flags (`dict(locals())` on entry): each flag sets the field of its name,
    but `gpu` (its CUDA ids set `gpus`) and those the command parsed itself, given as `parsed` (field:
    value). A flag that is no field of `config` fails validation, naming it."""
    fields = {k: v for k, v in flags.items() if k != "gpu" and k not in parsed}
    return config(**fields, gpus=_gpus(flags["gpu"]), **parsed)
