"""The GPU check's other parts (each runs in its own process; see gpu_check.py).

- `env`: device, driver, torch / CUDA / cuDNN versions, the flags the check runs under, and which of
  labeler's packages this Python has (the GPU image has its own Python: missing ones travel as wheels);
- `checkpoints`: the deterministic weights every later part uses, built into the work folder;
- `sam2`: labeler's backend against the official SAM2AutomaticMaskGenerator on the same model (tiny
  random SAM2, and a full-size random one at 1024 px): images/s and mask agreement (bench_sam2);
- `heads`: train step time of ViT-S/B at 518 px (bf16 autocast on CUDA) and loader/train (bench_train);
- `pipeline`: `labeler demo` -> `calibrate` -> `run` with the GPU backends (random weights) -> `validate`;
- `trainers`: one short step of each model trainer labeler has (TRAINERS names them).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gpu_check_lib import (
    REPO,
    Part,
    foundation_stereo_weights,
    full_sam2,
    gib,
    label,
    load_file,
    size_mb,
    tiny_sam2,
)

# import name -> distribution name, for every package labeler and the check import
PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "cv2": "opencv-contrib-python-headless",
    "pydantic": "pydantic",
    "typer": "typer",
    "yaml": "pyyaml",
    "zarr": "zarr",
    "numcodecs": "numcodecs",
    "dask": "dask",
    "distributed": "distributed",
    "pyarrow": "pyarrow",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "timm": "timm",
    "pycocotools": "pycocotools",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "iopath": "iopath",
    "sam2": "sam2",
    "pytest": "pytest",
}


# ---------------------------------------------------------------- env


def env(part: Part) -> None:
    import importlib.metadata
    import importlib.util

    found, missing = {}, []
    for module, dist in PACKAGES.items():
        if importlib.util.find_spec(module) is None:
            missing.append(dist)
            continue
        try:
            found[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # another distribution provides it
            found[module] = "present"
    import torch

    values: dict[str, object] = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if part.cuda:
        if not torch.cuda.is_available():
            part.fail("cuda", f"--device {part.device} but torch {torch.__version__} sees no CUDA device")
        else:
            dev = torch.device(part.device)
            props = torch.cuda.get_device_properties(dev)
            values.update(
                device_name=props.name,
                capability=f"{props.major}.{props.minor}",
                multiprocessors=props.multi_processor_count,
                memory_gib=round(props.total_memory / 2**30, 1),
                driver=_driver_version(),
            )
    else:
        values["device_name"] = _cpu_name()
    values["packages"] = ", ".join(f"{k} {v}" for k, v in found.items())
    try:
        import cv2

        if not hasattr(cv2, "ximgproc"):
            part.note("cv2 has no ximgproc (opencv-contrib): sgbm's WLS fill is off in the heads dataset")
    except ImportError:
        pass
    try:
        values["labeler_installed"] = importlib.metadata.version("labeler")
    except importlib.metadata.PackageNotFoundError:  # `labeler run` records its own version in manifests
        part.fail(
            "labeler",
            "not installed in this Python: python3 -m pip install --no-deps --no-index --no-build-isolation "
            "--ignore-requires-python -e .",
        )
    part.row("env", **values)
    if missing:
        part.fail(
            "packages",
            f"missing here: {', '.join(missing)}; carry them as wheels (README, Development: GPU check)",
        )


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    return "CPU " + (platform.processor() or platform.machine())


# ---------------------------------------------------------------- checkpoints


def checkpoints(part: Part) -> None:
    builders: list[tuple[str, Callable[[], Path]]] = [
        (
            f"FoundationStereo {vit} (labeler.testing.foundation_stereo_release)",
            partial(foundation_stereo_weights, part, vit),
        )
        for vit in dict.fromkeys((*part.profile.vits, part.profile.batch_vit, part.profile.pipeline_vit))
    ]
    builders.append(("SAM2 tiny random (labeler.testing.sam2_tiny, seed 0)", lambda: tiny_sam2(part)[1]))
    full = part.profile.sam2_full
    if full is not None:
        builders.append((f"SAM2 {full} random (seed 0, 1024 px input)", lambda: full_sam2(part, full)))
    else:
        part.skip("full-size SAM2", "the CPU profile runs the tiny SAM2 only")
    for what, build in builders:
        with part.check(what):
            t0 = time.perf_counter()
            path = build()
            part.row("checkpoints", what=what, mb=size_mb(path), seconds=round(time.perf_counter() - t0, 1))
    part.note("heads: seeded random init (labeler.train.heads.model.build_model, seed 0), no file needed")


# ---------------------------------------------------------------- sam2


def sam2(part: Part) -> None:
    import bench_sam2 as bench
    import numpy as np
    import torch

    from data_schema.backends import Sam2Config
    from labeler.segment.sam2_amg import Sam2MaskBackend
    from labeler.testing.sam2_tiny import OPEN_THRESHOLDS, official_generator
    from labeler.testing.scenes import object_scene

    prof = part.profile
    tiny_config, tiny_ckpt = tiny_sam2(part)
    models = [("tiny random", str(tiny_config), tiny_ckpt, prof.sam2_tiny_size, prof.sam2_tiny_points, "all")]
    if prof.sam2_full is not None:
        models.append(
            (
                f"{prof.sam2_full} random",
                prof.sam2_full,
                full_sam2(part, prof.sam2_full),
                prof.sam2_full_size,
                prof.sam2_full_points,
                "some",
            )
        )
    device = torch.device(part.device)
    for name, config, ckpt, (h, w), points, keep in models:
        with part.check(f"{name} {label(h, w)}"):
            images = [object_scene(h, w, seed=s).left for s in range(prof.sam2_images)]
            opened = {k: v for k, v in OPEN_THRESHOLDS.items() if k != "points_per_side"}
            cfg = Sam2Config(
                checkpoint=ckpt, config=config, mixed_precision=part.cuda, points_per_side=points, **opened
            )
            if keep == "some":  # a tenth of the masks survive, about what a trained model keeps
                cfg = cfg.model_copy(
                    update={"pred_iou_thresh": bench.iou_percentile(cfg, images[0], part.device, 90)}
                )
            ours = Sam2MaskBackend(cfg, device=part.device)
            official = official_generator(ours.model, cfg)

            def run_official(image: np.ndarray, official: object = official) -> np.ndarray:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=part.cuda):
                    return bench.official_masks(official, image)

            ours.masks(images[0])
            run_official(images[0])  # warm-up (cuDNN algorithms, the official predictor's transforms)
            if part.cuda:
                torch.cuda.reset_peak_memory_stats()
            t_ours, t_off, agree = [], [], []
            for image in images:
                a, (t, _) = bench.timed(lambda im=image, ours=ours: ours.masks(im).masks, device)
                t_ours.append(t)
                b, (t, _) = bench.timed(lambda im=image, run=run_official: run(im), device)
                t_off.append(t)
                agree.append((len(a), len(b), *bench.match_masks(a, b)))
            peak = torch.cuda.max_memory_allocated() / 2**30 if part.cuda else None
            matched = max(sum(x[3] for x in agree), 1)
            part.row(
                "sam2",
                model=name,
                image=label(h, w),
                points_per_side=points,
                keep=keep if keep == "all" else f"pred_iou > {cfg.pred_iou_thresh:.4f}",
                dtype="bfloat16" if part.cuda else "float32",
                masks_per_image=round(float(np.mean([x[0] for x in agree])), 1),
                labeler_img_per_s=round(1 / float(np.median(t_ours)), 3),
                official_img_per_s=round(1 / float(np.median(t_off)), 3),
                labeler_over_official=round(float(np.median(t_off) / np.median(t_ours)), 2),
                mean_iou_matched=round(float(np.nanmean([x[2] for x in agree])), 4),
                identical_pct=round(100 * sum(x[4] for x in agree) / matched, 1),
                unmatched_per_image=round(float(np.mean([x[5] for x in agree])), 1),
                peak_gib=gib(peak),
            )


# ---------------------------------------------------------------- heads


def heads_dataset(part: Part) -> Path:
    """A small dataset labelled by the pipeline (sgbm, classical masks) under the work folder."""
    from data_schema.backends import SgbmConfig
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label

    folder = part.work / "heads"
    if (folder / "ds" / "manifest.json").is_file():
        return folder / "ds"
    shutil.rmtree(folder, ignore_errors=True)
    conftest = load_file("tests/conftest.py")
    w, h = part.profile.heads_pair_size
    conftest.write_plane_pairs(folder / "rect", part.profile.heads_pairs, w, h, seed=11)
    calib = conftest.identity_calibration_yaml(folder / "calib.yaml", w, h)
    import cv2

    run_pseudo_label(
        PseudoLabelConfig(
            inputs=folder / "rect",
            calib=calib,
            out=folder / "ds",
            scheduler="sync",
            previews=False,
            progress=False,
            stereo=SgbmConfig(wls=hasattr(cv2, "ximgproc")),  # WLS needs opencv-contrib
        )
    )
    return folder / "ds"


def heads(part: Part) -> None:
    import bench_train as bench
    import torch

    from labeler import open_dataset
    from labeler.train.heads.data import HeadsDataset

    prof = part.profile
    t0 = time.perf_counter()
    dataset = heads_dataset(part)
    ids = open_dataset(dataset).sample_ids
    part.note(f"dataset: {len(ids)} samples labelled by sgbm in {time.perf_counter() - t0:.0f} s")
    workers = min(prof.heads_workers, os.cpu_count() or 1)
    for backbone, size in prof.heads_models:
        with part.check(f"{backbone} {size}"):
            loader = bench.loader_rate(
                HeadsDataset(dataset, ids, input_size=size, train=True), workers, prof.heads_batch
            )
            if part.cuda:
                torch.cuda.reset_peak_memory_stats()
            per_s, step_s = bench.train_rate(
                dataset, ids, backbone, size, prof.heads_batch, part.device, prof.heads_steps
            )
            part.row(
                "heads",
                backbone=f"{backbone} (frozen, fusion heads)",
                input=size,
                batch=prof.heads_batch,
                dtype="bfloat16 autocast" if part.cuda else "float32",
                s_per_step=round(step_s, 4),
                train_samples_per_s=round(per_s, 2),
                loader_samples_per_s=round(loader, 2),
                loader_workers=workers,
                loader_over_train=round(loader / per_s, 2),
                peak_gib=gib(torch.cuda.max_memory_allocated() / 2**30 if part.cuda else None),
            )


# ---------------------------------------------------------------- pipeline

CLI = "import sys; from labeler.cli.main import app; sys.argv[0] = 'labeler'; app()"


def labeler(part: Part, step: str, *args: object, table: str = "pipeline") -> bool:
    """Run `labeler ARGS` (from this checkout, whether installed or not) as one timed step; True when it
    exits 0. Its output goes to the log; the row keeps its last line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [part.python, "-c", CLI, *map(str, args)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(5.0, part.time_left_s() - 5),
        )
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        rc, stdout, stderr = -9, _text(err.stdout), f"{_text(err.stderr)}\nstopped at the part's budget"
    seconds = time.perf_counter() - t0
    print(f"$ labeler {' '.join(map(str, args))}\n{stdout}{stderr}", flush=True)
    # what the command says it did (stdout) when it succeeded; why it failed (stderr) when not
    said = stdout if rc == 0 and stdout.strip() else stdout + stderr
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    last = lines[-1].replace(str(part.work), "WORK")[:200] if lines else ""
    part.row(table, step=step, rc=rc, seconds=round(seconds, 1), last_line=last)
    if rc != 0:
        part.fail(step, f"exit {rc}: {lines[-1][:300] if lines else 'no output'}")
    return rc == 0


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def pipeline(part: Part) -> None:
    prof = part.profile
    root = part.work / "pipeline"
    shutil.rmtree(root, ignore_errors=True)
    weights = foundation_stereo_weights(part, prof.pipeline_vit)
    sam2_config, sam2_ckpt = tiny_sam2(part)
    calib = root / "calib" / "gpu-check-rig.yaml"
    steps: list[tuple[str, list[object]]] = [
        ("demo", ["demo", root / "demo", "--n-scenes", prof.pipeline_scenes,
                  "--n-boards", prof.pipeline_boards, "--no-middlebury"]),
        ("calibrate", ["calibrate", root / "demo" / "boards", "--rig", "gpu-check-rig",
                       "--board", "chessboard", "--cols", 9, "--rows", 6, "--square-m", 0.03,
                       "--out", calib]),
        ("run", ["run", root / "demo" / "scenes", "--calib", calib, "--out", root / "ds",
                 "--stereo", "foundation-stereo", "--stereo-weights", weights,
                 "--masks", "sam2", "--sam2-checkpoint", sam2_ckpt, "--sam2-config", sam2_config,
                 # the random tiny SAM2's masks pass no quality threshold (labeler.testing.sam2_tiny)
                 "--sam2-pred-iou-thresh", 0, "--sam2-stability-score-thresh", 0, "--sam2-box-nms-thresh", 1,
                 *prof.pipeline_flags]),
        ("validate", ["validate", root / "ds"]),
    ]  # fmt: skip
    for step, args in steps:
        if not labeler(part, step, *args):
            return
    from labeler import open_dataset

    ds = open_dataset(root / "ds")
    samples = ds.samples.to_table(columns=["status", "device", "stereo_dtype", "n_objects"]).to_pylist()
    devices = sorted({str(s["device"]) for s in samples})
    part.row(
        "pipeline dataset",
        samples=len(samples),
        ok=sum(s["status"] == "ok" for s in samples),
        failed=len(ds.failures),
        devices=", ".join(devices),
        stereo_dtypes=", ".join(sorted({str(s["stereo_dtype"]) for s in samples})),
        objects=sum(int(s["n_objects"] or 0) for s in samples),
        dataset_version=ds.version[:12],
    )
    if ds.failures:
        part.fail("samples", f"{len(ds.failures)} failed; first: {ds.failures[0].error}")
    if part.cuda and not any("cuda" in d for d in devices):
        part.fail("device", f"--gpu 0 but the samples record device {', '.join(devices)}")


# ---------------------------------------------------------------- trainers


def _train_stereo(part: Part, out: Path) -> list[object]:
    """One short epoch of FoundationStereo fine-tuning on the heads part's sgbm-labelled dataset."""
    prof = part.profile
    weights = foundation_stereo_weights(part, prof.batch_vit)
    return ["train-stereo", heads_dataset(part), "--stereo-weights", weights, "--out", out,
            "--epochs", 1, *prof.train_stereo_flags]  # fmt: skip


def _train_sam2(part: Part, out: Path) -> list[object]:
    """One short epoch of SAM2 retraining (labeler's tiny random SAM2) on the heads part's dataset; the
    generator's thresholds are opened (the random model's predicted IoU means nothing)."""
    config, checkpoint = tiny_sam2(part)
    gpu = ["--gpu", "0"] if part.cuda else []
    return ["train-sam2", heads_dataset(part), "--sam2-checkpoint", checkpoint, "--sam2-config", config,
            "--out", out, "--epochs", 1, "--batch-size", 1, "--corrections", 1, "--amg-points-per-side", 4,
            "--amg-pred-iou-thresh", 0, "--amg-stability-thresh", 0, "--workers", 0, *gpu]  # fmt: skip


def _adapt_backbone(part: Part, out: Path) -> list[object]:
    """One short epoch of DINOv2 adaptation (random init: no weights here) on the heads part's dataset,
    warm-up and probe included: the tiny ViT on the CPU, ViT-S/14 at the official crop sizes on CUDA."""
    if part.cuda:
        model = ["--backbone", "vits", "--gpu", "0", "--global-size", 224, "--local-size", 98]
    else:
        model = ["--backbone", "tiny", "--global-size", 112, "--local-size", 56]
    return ["adapt-backbone", heads_dataset(part), "--out", out, *model, "--random-init", "--head-epochs", 1,
            "--epochs", 1, "--batch-size", 2, "--local-crops", 2, "--prototypes", 1024, "--head-hidden", 256,
            "--head-bottleneck", 64, "--unfreeze-last", 1, "--lora-rank", 2, "--heldout-frac", 0.25,
            "--workers", 0, "--probe-epochs", 1, "--probe-input-size", 126,
            "--probe-batch-size", 2]  # fmt: skip


def _not_written(part: Part, out: Path) -> None:
    """HOOK for a trainer to come: return its one-short-step command as `_train_stereo` does."""
    return None


# trainer command -> its one-short-step command line (None: the trainer exists, its step is not written)
TRAINERS: dict[str, Callable[[Part, Path], list[object] | None]] = {
    "train-stereo": _train_stereo,
    "train-sam2": _train_sam2,
    "adapt-backbone": _adapt_backbone,
}


def trainers(part: Part) -> None:
    from labeler.cli.main import app

    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    for name, command in TRAINERS.items():
        if name not in commands:
            part.skip(name, f"`labeler {name}` is not in this labeler yet (a hook waits in TRAINERS)")
            continue
        out = part.work / "trainers" / name
        shutil.rmtree(out, ignore_errors=True)
        args = command(part, out)
        if args is None:
            part.fail(name, f"`labeler {name}` exists but TRAINERS gives it no one-step command yet")
            continue
        labeler(part, name, *args, table="trainers")


PARTS = {
    "env": env,
    "checkpoints": checkpoints,
    "sam2": sam2,
    "heads": heads,
    "pipeline": pipeline,
    "trainers": trainers,
}
