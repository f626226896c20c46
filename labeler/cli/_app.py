"""The `labeler` app every command module registers on, and what the commands share: `run` (config ->
call, one line per error), GPU-flag parsing and the options several commands declare.

Command modules import this one; only labeler/cli/main.py imports the command modules. Nothing heavy is
imported here: torch, sam2, dask and zarr load inside the commands that use them, so `labeler --help`
stays fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from data_schema.commands import Layout
from data_schema.licences import StrictLicence
from labeler.cli.backends import FlagError
from labeler.errors import LabelerError, disk_error

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Arducam stereo captures -> pseudo-label datasets (metric depth + instance masks).",
)
export_app = typer.Typer(no_args_is_help=True, help="Export calibrations and datasets to other formats.")
app.add_typer(export_app, name="export")

T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(build: Callable[[], Any], call: Callable[[Any], T]) -> T:
    """Build the config (a bad field or flag exits 2, one line each), then call (a LabelerError exits 1)."""
    try:
        cfg = build()
    except ValidationError as err:
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            typer.echo(f"error: --{field.replace('_', '-')}: {msg}" if field else f"error: {msg}", err=True)
        raise typer.Exit(2) from None
    except FlagError as err:
        for line in err.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None
    try:
        return call(cfg)
    except LabelerError as err:
        _fail(str(err), 1)
    except OSError as err:
        # a disk that fills up or turns read-only mid-command: one line (what was finished is kept)
        disk = disk_error(err, getattr(cfg, "out", None) or "a file")
        if disk is None:
            raise
        _fail(str(disk), 1)


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="debug logging, Dask's own logs (scheduler, workers) and the Dask dashboard, its address "
            "printed once; without it a run serves the dashboard only from 100 samples on (needs bokeh)",
        ),
    ] = False,
) -> None:
    # Dask's loggers are quiet unless this is DEBUG: pipelines/cluster.py reads it.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )


LayoutOpt = Annotated[Layout, typer.Option(help="capture layout (auto: detected from the files)")]
StrideOpt = Annotated[int, typer.Option(min=1, help="video input: use every Nth frame")]
# still frames of a sequence: `run`/`pseudo-label` and `predict` on a video
KeepDuplicatesOpt = Annotated[
    bool, typer.Option(help="label still frames of a sequence too (else skipped as duplicates)")
]
StillThresholdOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=255.0,
        help="still frame: 99th pct grey difference to the last kept frame at 64 px wide, 0-255",
    ),
]
# how a sequence's objects are linked over its frames: `run`/`pseudo-label --track` and `predict` on a video
TrackMinIouOpt = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="tracks: least mask IoU with the track's last mask")
]
TrackMaxDepthJumpOpt = Annotated[
    float, typer.Option(min=0.0, help="tracks: most change of an object's median depth between frames, m")
]
TrackMaxGapOpt = Annotated[
    int, typer.Option(min=1, help="tracks: a track unseen for more frames than this ends")
]


def _gpus(gpu: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(g) for g in gpu.split(",")) if gpu else ()
    except ValueError:
        _fail(f"--gpu {gpu}: expected CUDA ids such as 0 or 0,1", 2)


StrictLicenceOpt = Annotated[
    StrictLicence | None,
    typer.Option(
        help="commercial: refuse when a model in the history is non-commercial or of unknown licence "
        "(data_schema/licences.py)"
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(help="replace --out when it is this export's own earlier output (anything else is refused)"),
]
SelectionOpt = Annotated[
    str | None,
    typer.Option(help="only the samples of this named selection (`labeler curate` writes them)"),
]


def licence_line(dataset: Path) -> str:
    """`DATASET: licences: ...` naming any non-commercial model (empty line text when unreadable)."""
    from data_schema.licences import licence_summary
    from labeler.dataset.licences import dataset_licences

    try:
        return f"{dataset}: {licence_summary(dataset_licences(dataset))}"
    except LabelerError as err:
        return f"{dataset}: licences unknown ({err})"
