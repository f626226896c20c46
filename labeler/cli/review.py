"""The review loop's commands: `labeler doubt`, `labeler review`, `labeler diff`, `labeler export rerun`,
`labeler export ytvis`, `labeler export hf`, `labeler export webdataset`, `labeler export lerobot`.
Registered on the app of labeler/cli/_app.py; like the rest of the command line, nothing heavy is imported
until a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli._app import OverwriteOpt, SelectionOpt, StrictLicenceOpt, _gpus, app, export_app, run

IncludeRejected = Annotated[
    bool, typer.Option(help="also export samples and objects a review rejected (default: left out)")
]


@app.command()
def doubt(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    stereo_weights: Annotated[
        Path | None,
        typer.Option(
            help="FoundationStereo release checkpoint: its Depth Anything V2 branch is the mono model"
        ),
    ] = None,
    heads: Annotated[
        Path | None, typer.Option(help="or a train-heads / finetune run with a depth head")
    ] = None,
    gpu: Annotated[int | None, typer.Option(help="CUDA id for the monocular model")] = None,
) -> None:
    """Add the doubt signals a pass over the dataset gives: stereo-monocular disagreement (with a model),
    frame-to-frame instability of video captures, mask-shape signals missing from older tables."""
    from labeler.models.device import torch_device
    from labeler.review.doubt_pass import run_doubt
    from labeler.review.gallery import write_gallery
    from labeler.review.mono import mono_model

    def call(path: Path):
        device = torch_device(gpu)  # before any model loads
        rec = run_doubt(path, model=mono_model(stereo_weights=stereo_weights, heads=heads, device=device))
        from labeler.dataset.sidecars import gallery_index_path

        if gallery_index_path(path).is_file():
            write_gallery(path)  # the gallery's order follows the score
        return rec

    rec = run(lambda: dataset, call)
    typer.echo(
        f"{dataset}: {rec.n_mono} samples with mono_disagreement"
        + (f" ({rec.model})" if rec.model else " (no model: pass --stereo-weights or --heads)")
        + f", {rec.n_temporal} video frames with temporal_instability; {rec.n_shards_rewritten} shards' "
        f"tables rewritten in {rec.seconds:.1f} s; dataset {rec.dataset_version[:12]} (unchanged)"
    )


@app.command()
def review(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    host: Annotated[
        str,
        typer.Option(
            help="address to listen on; anything but loopback serves other machines too, with a token"
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8765,
    user: Annotated[
        str | None, typer.Option(help="name recorded with each decision (default: login)")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="the token every request must carry (default: a random one when --host is not loopback, "
            "printed in the URL; none on loopback)"
        ),
    ] = None,
) -> None:
    """Review a dataset in the browser: samples by doubt, layers, keyboard decisions saved at once."""
    from labeler.dataset.manifest import load_manifest
    from labeler.review.app import LOOPBACK, MIN_TOKEN_CHARS, default_user, new_token, serve

    if token is not None and (len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token):
        typer.echo(
            f"error: --token: use at least {MIN_TOKEN_CHARS} printable characters, no spaces", err=True
        )
        raise typer.Exit(2)
    run(lambda: dataset, load_manifest)  # one line for a folder that is not a dataset
    if host not in LOOPBACK:
        token = token or new_token()
        typer.echo(
            f"warning: listening on {host}: anyone who can reach this machine and has the URL below can read "
            f"{dataset} and record decisions in it; use the default 127.0.0.1 unless you mean it",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    typer.echo(f"labeler review: {url} ({dataset}, user {user or default_user()}); Ctrl-C stops")
    serve(dataset, host=host, port=port, user=user, token=token)


@export_app.command("rerun")
def export_rerun_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    out: Annotated[Path, typer.Option(help=".rrd file to write (open it with `rerun FILE`)")],
    include_rejected: IncludeRejected = False,
    selection: SelectionOpt = None,
    strict_licence: StrictLicenceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a Rerun recording: per sample the rectified image, depth, masks, a point cloud and the camera;
    the models' licences as the static `licences` document."""
    from labeler.export.coco import ExportScope
    from labeler.export.rerun import export_rerun

    scope = ExportScope(include_rejected=include_rejected, selection=selection, strict_licence=strict_licence)
    path = run(lambda: dataset, lambda d: export_rerun(d, out, scope=scope, overwrite=overwrite))
    typer.echo(f"Rerun recording: {path} (open with: rerun {path})")


@export_app.command("ytvis")
def export_ytvis_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder labelled with --track")],
    out: Annotated[Path, typer.Option(help="YouTube-VIS JSON to write")],
    images: Annotated[
        Path | None,
        typer.Option(help="also write the frames' left images here as PNG (file_names point at them)"),
    ] = None,
    include_rejected: IncludeRejected = False,
    selection: SelectionOpt = None,
    strict_licence: StrictLicenceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a tracked dataset as a YouTube-VIS video-instance JSON: a video per sequence, an annotation per
    track with per-frame RLE masks, boxes, areas and depths (null where the track is absent)."""
    from labeler.export.coco import ExportScope
    from labeler.export.ytvis import export_ytvis

    scope = ExportScope(include_rejected=include_rejected, selection=selection, strict_licence=strict_licence)
    path = run(
        lambda: dataset, lambda d: export_ytvis(d, out, images=images, scope=scope, overwrite=overwrite)
    )
    typer.echo(f"YouTube-VIS video instances: {path}")


@export_app.command("hf")
def export_hf_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    out: Annotated[Path, typer.Option(help="folder for the Hugging Face dataset (datasets.load_from_disk)")],
    include_rejected: IncludeRejected = False,
    selection: SelectionOpt = None,
    strict_licence: StrictLicenceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a Hugging Face `datasets` folder: images, float32 depth in metres, uint16 masks, objects;
    the models' licences in OUT/licences.json and the dataset's info.license."""
    from labeler.export.coco import ExportScope
    from labeler.export.hf import export_hf

    scope = ExportScope(include_rejected=include_rejected, selection=selection, strict_licence=strict_licence)
    path = run(lambda: dataset, lambda d: export_hf(d, out, scope=scope, overwrite=overwrite))
    typer.echo(f"Hugging Face dataset: {path} (datasets.load_from_disk)")


@app.command()
def embed(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    backbone: Annotated[
        str, typer.Option(help="DINOv2 size: vits | vitb | vitl | vitg | tiny (random-init)")
    ] = "vits",
    weights: Annotated[
        Path | None,
        typer.Option(help="DINOv2 / Depth Anything V2 / FoundationStereo checkpoint (local file)"),
    ] = None,
    random_init: Annotated[
        bool, typer.Option(help="a seeded random-init ViT (tests and demos only)")
    ] = False,
    input_size: Annotated[
        int, typer.Option(min=14, max=2016, help="short image side fed to the ViT, px (a multiple of 14)")
    ] = 224,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="images per forward pass")] = 16,
    gpu: Annotated[str | None, typer.Option(help="CUDA ids, e.g. 0 or 0,1 (one worker per GPU)")] = None,
    workers: Annotated[int | None, typer.Option(help="CPU workers (default: cores)")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="tcp://host:port of a running Dask scheduler, or threads | sync")
    ] = None,
    seed: Annotated[int, typer.Option(help="the random-init seed")] = 0,
) -> None:
    """Store a DINOv2 embedding per sample (CLS + mean patch token) and per object (mask-pooled patch
    tokens), float16, in the dataset; on Dask workers like labelling, one task chain per shard; resumes
    where an interrupted run stopped."""
    flags = dict(locals())
    from data_schema.curation import EmbedConfig
    from pipelines.embed import run_embed

    res = run(
        lambda: EmbedConfig(**{k: v for k, v in flags.items() if k != "gpu"}, gpus=_gpus(gpu)), run_embed
    )
    typer.echo(
        f"{dataset}: {res.n_embedded} of {res.n_shards} shards embedded now ({res.n_samples} samples, "
        f"{res.n_objects} objects) in {res.seconds:.1f} s; {res.record.backbone}, {2 * res.record.embed_dim} "
        f"floats per sample; licence {res.record.licence.licence} ({res.record.licence.commercial})"
    )
    for shard, why in res.failed.items():
        typer.echo(
            f"error: {dataset}: shard {shard} not embedded ({why}); run `labeler embed` again", err=True
        )
    if res.failed:
        raise typer.Exit(1)


@app.command()
def curate(
    dataset: Annotated[Path, typer.Argument(help="dataset folder (after `labeler embed`)")],
    duplicate_cosine: Annotated[
        float,
        typer.Option(min=0.5, max=1.0, help="cosine similarity at which two samples are near-duplicates"),
    ] = 0.98,
    diverse: Annotated[
        int, typer.Option(min=1, max=10_000_000, help="size of the k-center diverse subset")
    ] = 50,
    outliers: Annotated[int, typer.Option(min=0, max=10_000_000, help="outliers to list")] = 10,
) -> None:
    """Near-duplicate groups, a k-center diverse subset and outliers from the embeddings, written as the
    selections dedup, diverse and outliers (`--selection NAME`) and curation.json."""
    from labeler.review.curate import curate as run_curate

    rep = run(
        lambda: dataset,
        lambda d: run_curate(d, duplicate_cosine=duplicate_cosine, n_diverse=diverse, n_outliers=outliers),
    )
    dup = sum(len(g.sample_ids) for g in rep.groups)
    typer.echo(
        f"{dataset}: {rep.n_samples} samples; {len(rep.groups)} near-duplicate groups ({dup} samples, "
        f"cosine >= {rep.duplicate_cosine}); diverse {len(rep.diverse)}; outliers {len(rep.outliers)}; "
        f"selections {', '.join(rep.selections)} in {dataset / 'selections'}"
    )


@export_app.command("webdataset")
def export_webdataset_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    out: Annotated[Path, typer.Option(help="folder for the tar shards and info.json")],
    samples_per_tar: Annotated[int, typer.Option(min=1, max=100_000, help="samples per tar shard")] = 256,
    include_rejected: IncludeRejected = False,
    selection: SelectionOpt = None,
    strict_licence: StrictLicenceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write WebDataset tar shards: per sample the left image, depth (.npy, metres), masks (16-bit PNG),
    objects (JSON)."""
    from labeler.export.coco import ExportScope
    from labeler.export.webdataset import export_webdataset

    scope = ExportScope(include_rejected=include_rejected, selection=selection, strict_licence=strict_licence)
    path = run(
        lambda: dataset,
        lambda d: export_webdataset(
            d, out, samples_per_tar=samples_per_tar, scope=scope, overwrite=overwrite
        ),
    )
    typer.echo(f"WebDataset shards: {path} (info.json lists them)")


@export_app.command("lerobot")
def export_lerobot_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    out: Annotated[Path, typer.Option(help="folder for the LeRobot v3.0 dataset")],
    depth_format: Annotated[
        str,
        typer.Option(help="png16: 16-bit PNG in millimetres (0.5 mm steps); float32: metres bit for bit"),
    ] = "png16",
    fps: Annotated[int, typer.Option(min=1, max=1000, help="frame rate recorded in info.json")] = 10,
    include_rejected: IncludeRejected = False,
    selection: SelectionOpt = None,
    strict_licence: StrictLicenceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a LeRobot v3.0 dataset: left images, lossless depth, 16-bit masks, objects per frame."""
    from labeler.export.coco import ExportScope
    from labeler.export.lerobot import export_lerobot

    if depth_format not in ("png16", "float32"):
        typer.echo(f"error: --depth-format {depth_format}: choose png16 or float32", err=True)
        raise typer.Exit(2)
    scope = ExportScope(include_rejected=include_rejected, selection=selection, strict_licence=strict_licence)
    path = run(
        lambda: dataset,
        lambda d: export_lerobot(
            d,
            out,
            depth_format=depth_format,  # type: ignore[arg-type]
            fps=fps,
            scope=scope,
            overwrite=overwrite,
        ),
    )
    typer.echo(f"LeRobot dataset: {path} (meta/info.json)")


@app.command()
def diff(
    dataset_a: Annotated[Path, typer.Argument(metavar="A", help="dataset folder (before)")],
    dataset_b: Annotated[Path, typer.Argument(metavar="B", help="dataset folder (after)")],
    out: Annotated[Path, typer.Option(help="report folder: index.html, diff.json, changes/*.png")],
    run_a: Annotated[Path | None, typer.Option(help="a train-heads run on A: held-out metrics shift")] = None,
    run_b: Annotated[Path | None, typer.Option(help="the same kind of run on B")] = None,
    pictures: Annotated[int, typer.Option(help="largest changes drawn side by side")] = 20,
) -> None:
    """What changed between two datasets: samples added / removed / changed, depth and mask changes,
    doubt signal shifts (and held-out metrics of runs on each; for two --track datasets, tracks matched,
    only in A or B, ID switches and depth differences)."""
    from labeler.review.diff import diff_datasets
    from labeler.review.diff_report import summary_line

    report = run(
        lambda: (dataset_a, dataset_b),
        lambda ab: diff_datasets(ab[0], ab[1], out, run_a=run_a, run_b=run_b, pictures=pictures),
    )
    typer.echo(summary_line(report, out))
