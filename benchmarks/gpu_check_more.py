"""GPU check parts for the commands the first parts do not reach: SAM 3, `labeler predict`, `labeler doubt`
and, on a machine with two GPUs or more, the multi-GPU paths. Each runs in its own process (gpu_check.py).

- `sam3`: labeler's SAM 3 backend against the official `Sam3Processor` on the same tiny random model
  (bf16 autocast on CUDA, both sides), masks' agreement and images/s; on CUDA also `--track`'s video model
  (`Sam3MaskBackend.track_masks`, no stand-ins) against the official video session on a JPEG folder;
- `predict`: one epoch of train-heads (tiny random ViT) on the heads part's dataset, then `labeler predict`
  on its rectified pairs (bf16 autocast on CUDA), as the user runs them (`--gpu 0`);
- `doubt`: `labeler doubt --heads RUN` (the monocular model on the device) on a copy of that dataset;
- `multi_gpu`: `train-heads --gpu 0,1` (one process per GPU, NCCL) and `pseudo-label --gpu 0,1` (one Dask
  worker per GPU, the tiny SAM2 as the GPU backend); skipped with fewer than two GPUs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from gpu_check_lib import Part, Skip, tiny_sam2
from gpu_check_parts import heads_dataset, labeler


def sam3(part: Part) -> None:
    import numpy as np
    from PIL import Image

    from data_schema.backends import Sam3Config
    from labeler.segment.sam3 import Sam3MaskBackend
    from labeler.segment.sam3_model import without_pinned_memory
    from labeler.testing.sam3_tiny import TINY, official_processor, write_tiny_sam3
    from labeler.testing.scenes import object_scene

    arch, checkpoint = write_tiny_sam3(part.work / "sam3_tiny", seed=0)
    classes = ("person", "forklift")
    config = Sam3Config(
        checkpoint=checkpoint, arch=str(arch), classes=classes, confidence_threshold=0.27,
        mixed_precision=part.cuda,
    )  # fmt: skip
    backend = Sam3MaskBackend(config, device=part.device)
    images = [object_scene(seed=s).left for s in range(3)]
    with part.check("tiny sam3"):
        backend.masks(images[0])  # load and warm up
        t0 = time.perf_counter()
        ours = [backend.masks(im) for im in images]
        per_s = len(images) / (time.perf_counter() - t0)
        processor = official_processor(backend.model, resolution=TINY.resolution, confidence_threshold=0.27)
        agree = []
        with without_pinned_memory():
            for image, got in zip(images, ours, strict=True):
                state = processor.set_image(Image.fromarray(image))
                n = sum(len(processor.set_text_prompt(name, state)["scores"]) for name in classes)
                agree.append(abs(n - len(got)))
        part.row(
            "sam3",
            model="tiny random (112 px)",
            dtype="bfloat16 autocast" if part.cuda else "float32",
            images_per_s=round(per_s, 2),
            masks=[len(m) for m in ours],
            count_difference_vs_official=agree,
            scores_finite=bool(all(np.all(np.isfinite(m.scores)) for m in ours)),
        )
        if max(agree) > 1:
            part.fail("sam3 parity", f"mask counts differ from the official processor's by {agree}")
    if not part.cuda:
        part.skip("sam3 video", "the SAM 3 video model runs on CUDA only (labeler/segment/sam3_video.py)")
        return
    with part.check("tiny sam3 video"):
        _sam3_video(part, classes)


def _sam3_video(part: Part, classes: tuple[str, ...]) -> None:
    """`--track`'s path on CUDA against the official session's own API (add_prompt, propagate_in_video)."""
    import numpy as np
    import torch
    from PIL import Image

    from data_schema.backends import Sam3Config
    from data_schema.manifest import TrackingConfig
    from labeler.segment.sam3 import Sam3MaskBackend
    from labeler.testing.sam3_tiny import write_tiny_sam3
    from labeler.testing.scenes import object_scene

    arch, checkpoint = write_tiny_sam3(part.work / "sam3_tiny_video", seed=0, video=True)
    config = Sam3Config(
        checkpoint=checkpoint, arch=str(arch), classes=classes, confidence_threshold=0.3,
        det_nms_thresh=0.5, new_det_thresh=0.335, track_with="video_model",
    )  # fmt: skip
    folder = part.work / "sam3_video_frames"
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(8):  # the object scene, shifted a little per frame, through JPEG as the official reads
        Image.fromarray(np.roll(object_scene(seed=0).left, 2 * k, axis=1)).save(
            folder / f"{k}.jpg", quality=95
        )
        frames.append(np.asarray(Image.open(folder / f"{k}.jpg").convert("RGB")))
    backend = Sam3MaskBackend(config, device=part.device)
    t0 = time.perf_counter()
    ours = backend.track_masks(frames, tracking=TrackingConfig())
    per_s = len(frames) / (time.perf_counter() - t0)
    model = backend.video_model
    worst, diff = 1.0, 0
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        state = model.init_state(str(folder), offload_video_to_cpu=True)
        for name in classes:
            model.add_prompt(state, frame_idx=0, text_str=name)
            for t, res in model.propagate_in_video(state, start_frame_idx=0):
                got = ours[t]
                want = [m for m in res["out_binary_masks"] if m.any()]
                mine = [got.masks[k] for k in range(len(got)) if got.class_names[k] == name]
                diff += abs(len(want) - len(mine))
                for m in want:  # each official mask's best match among ours of the class
                    ious = [(m & g).sum() / max((m | g).sum(), 1) for g in mine] or [0.0]
                    worst = min(worst, float(max(ious)))
    part.row(
        "sam3_video",
        model="tiny random video model (112 px)",
        dtype="bfloat16 autocast",
        frames_per_s=round(per_s, 2),
        objects=[len(m) for m in ours],
        count_difference_vs_official=diff,
        worst_iou_vs_official=round(worst, 4),
        autocast_left_on=torch.is_autocast_enabled("cuda"),
    )
    if diff or worst < 0.99:
        part.fail("sam3 video parity", f"{diff} objects differ, worst mask IoU {worst:.3f} vs the official")


def _heads_run(part: Part) -> Path | None:
    """A one-epoch train-heads run (tiny random ViT) on the heads part's dataset, made once."""
    run = part.work / "predict" / "heads-run"
    if (run / "checkpoints" / "best.pt").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    gpu = ["--gpu", "0"] if part.cuda else []
    ok = labeler(
        part, "train-heads", "train-heads", heads_dataset(part), "--out", run, "--backbone", "tiny",
        "--random-init", "--input-size", 56, "--epochs", 1, "--batch-size", 2, "--workers", 0, *gpu,
        table="predict",
    )  # fmt: skip
    return run if ok else None


def predict(part: Part) -> None:
    run = _heads_run(part)
    if run is None:
        return
    pairs = heads_dataset(part).parent / "rect"
    gpu = ["--gpu", "0"] if part.cuda else []
    labeler(part, "predict", "predict", pairs, "--run", run, "--out", part.work / "predict" / "out", *gpu,
            table="predict")  # fmt: skip


def doubt(part: Part) -> None:
    run = _heads_run(part)
    if run is None:
        return
    copy = part.work / "doubt" / "ds"
    shutil.rmtree(copy.parent, ignore_errors=True)
    shutil.copytree(heads_dataset(part), copy)  # doubt rewrites the tables: not the other parts' dataset
    gpu = ["--gpu", "0"] if part.cuda else []
    labeler(part, "doubt", "doubt", copy, "--heads", run, *gpu, table="doubt")


def multi_gpu(part: Part) -> None:
    import torch

    n = torch.cuda.device_count() if part.cuda else 0
    if n < 2:
        raise Skip(f"{n} CUDA device(s): the multi-GPU paths need two or more")
    out = part.work / "multi_gpu"
    shutil.rmtree(out, ignore_errors=True)
    labeler(
        part, "train-heads --gpu 0,1", "train-heads", heads_dataset(part), "--out", out / "heads",
        "--backbone", "tiny", "--random-init", "--input-size", 56, "--epochs", 1, "--batch-size", 2,
        "--workers", 0, "--gpu", "0,1", table="multi_gpu",
    )  # fmt: skip
    config, checkpoint = tiny_sam2(part)
    folder = heads_dataset(part).parent
    labeler(
        part, "pseudo-label --gpu 0,1", "pseudo-label", folder / "rect", "--calib", folder / "calib.yaml",
        "--out", out / "ds", "--masks", "sam2", "--sam2-checkpoint", checkpoint, "--sam2-config", config,
        "--sam2-points-per-side", 4, "--gpu", "0,1", table="multi_gpu",
    )  # fmt: skip


PARTS = {"sam3": sam3, "predict": predict, "doubt": doubt, "multi_gpu": multi_gpu}
