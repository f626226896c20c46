"""What every part of the GPU check shares: its sizes (`Profile`), its record (`Part`), timing on the
device, and the deterministic checkpoints.

A part runs in its own process (see gpu_check.py) and writes one JSON line per result to its record file
as soon as it has it, so a part killed at its time limit still leaves what it measured.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
for _p in (str(REPO), str(BENCH)):  # labeler / tests helpers and the sibling benchmarks, run from anywhere
    if _p not in sys.path:
        sys.path.insert(0, _p)


class Skip(Exception):
    """The part (or one of its checks) cannot run here; the message is the one line that says why."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one run. `GPU` is what the check is for; `CPU` only proves that every path runs."""

    name: str
    vits: tuple[str, ...]  # FoundationStereo ViT sizes (speed, parity)
    sizes: tuple[tuple[int, int], ...]  # (H, W) of the speed and batch grids, multiples of 32
    iters: tuple[int, ...]  # valid_iters of the speed grid
    warmup: int
    repeats: int
    batches: tuple[int, ...]  # pairs per backend call (left-right pass on)
    batch_vit: str
    batch_iters: int
    compile_size: tuple[int, int]
    compile_iters: int
    compile_backend: str | None  # None: torch.compile is not measured with this profile
    official_sizes: tuple[tuple[int, int], ...]
    official_iters: int
    sam2_full: str | None  # released config of the full-size random SAM2 (1024 px input)
    sam2_full_size: tuple[int, int]
    sam2_full_points: int
    sam2_tiny_size: tuple[int, int]
    sam2_tiny_points: int
    sam2_images: int
    heads_pairs: int
    heads_pair_size: tuple[int, int]  # (W, H) of the pairs the heads dataset is labelled from
    heads_models: tuple[tuple[str, int], ...]  # (backbone, input size)
    heads_batch: int
    heads_steps: int
    heads_workers: int
    pipeline_scenes: int
    pipeline_boards: int
    pipeline_vit: str
    pipeline_flags: tuple[str, ...]  # extra `labeler run` flags
    train_stereo_flags: tuple[str, ...]  # `labeler train-stereo` flags besides --epochs 1
    total_s: float = 480  # the whole check, report included (--total-budget-s overrides it)
    # each part's share of the total less REPORT_RESERVE_S: they add up to it (a test checks), and a part
    # that ends early or is skipped leaves its time to the parts after it (see `part_budget_s`)
    shares_s: dict[str, float] = field(default_factory=dict)


GPU = Profile(
    name="gpu",
    vits=("vits", "vitl"),
    sizes=((480, 640), (800, 1280)),
    iters=(16, 32),
    warmup=1,
    repeats=2,
    batches=(1, 4, 8),
    batch_vit="vitl",
    batch_iters=16,
    compile_size=(480, 640),
    compile_iters=16,
    compile_backend="inductor",
    official_sizes=((480, 640), (800, 1280)),
    official_iters=32,
    sam2_full="sam2.1_hiera_s",
    sam2_full_size=(768, 1024),
    sam2_full_points=32,
    sam2_tiny_size=(480, 640),
    sam2_tiny_points=16,
    sam2_images=3,
    heads_pairs=16,
    heads_pair_size=(640, 480),
    heads_models=(("vits", 518), ("vitb", 518)),
    heads_batch=8,
    heads_steps=5,
    heads_workers=8,
    pipeline_scenes=4,
    pipeline_boards=14,
    pipeline_vit="vitl",
    pipeline_flags=("--gpu", "0", "--batch-size", "4", "--sam2-points-per-side", "16"),
    train_stereo_flags=(
        "--gpu",
        "0",
        "--batch-size",
        "2",
        "--crop",
        "320x640",
        "--train-iters",
        "8",
        "--valid-iters",
        "8",
        "--workers",
        "4",
        "--previews",
        "1",
    ),  # fmt: skip
    total_s=480,
    shares_s={
        "env": 10,
        "checkpoints": 40,
        "fs_parity": 25,
        "fs_speed": 55,
        "fs_batches": 40,
        "fs_official": 45,
        "sam2": 35,
        "sam3": 20,
        "heads": 30,
        "predict": 20,
        "doubt": 15,
        "pipeline": 45,
        "trainers": 45,
        "multi_gpu": 20,
        "fs_compile": 25,
    },
)

CPU = Profile(
    name="cpu",
    vits=("vits",),
    sizes=((32, 64),),
    iters=(1,),
    warmup=0,
    repeats=1,
    batches=(1, 2),
    batch_vit="vits",
    batch_iters=1,
    compile_size=(32, 64),
    compile_iters=1,
    compile_backend=None,
    official_sizes=((32, 64),),
    official_iters=1,
    sam2_full=None,
    sam2_full_size=(768, 1024),
    sam2_full_points=4,
    sam2_tiny_size=(96, 128),
    sam2_tiny_points=4,
    sam2_images=2,
    heads_pairs=3,
    heads_pair_size=(160, 120),
    heads_models=(("tiny", 126),),
    heads_batch=2,
    heads_steps=2,
    heads_workers=1,
    pipeline_scenes=1,
    pipeline_boards=8,
    pipeline_vit="vits",
    pipeline_flags=("--workers", "1", "--scale", "0.1", "--valid-iters", "1", "--sam2-points-per-side", "2"),
    train_stereo_flags=(
        "--batch-size",
        "2",
        "--crop",
        "64x96",
        "--train-iters",
        "1",
        "--valid-iters",
        "1",
        "--eval-scale",
        "0.25",
        "--heldout-frac",
        "0.34",
        "--workers",
        "0",
        "--previews",
        "0",
    ),  # fmt: skip
    total_s=900,
    shares_s={
        "env": 30,
        "checkpoints": 60,
        "fs_parity": 60,
        "fs_speed": 40,
        "fs_batches": 50,
        "fs_official": 30,
        "sam2": 50,
        "sam3": 40,
        "heads": 50,
        "predict": 60,
        "doubt": 40,
        "pipeline": 150,
        "trainers": 150,
        "multi_gpu": 10,
        "fs_compile": 70,
    },
)

PROFILES = {p.name: p for p in (GPU, CPU)}
REPORT_RESERVE_S = 10  # kept back from the total budget for writing the report


def part_budget_s(profile: Profile, name: str, remaining: list[str], left_s: float) -> float:
    """The budget of part `name` when `left_s` seconds are left for it and the parts after it
    (`remaining`, `name` first): its share of what is left, so the budgets of a run add up to its total
    and time a part did not use goes to those after it."""
    shares = [profile.shares_s[n] for n in remaining]
    return left_s * profile.shares_s[name] / sum(shares)


@dataclass
class Part:
    """One part's context in its own process: where it writes, what it may use, until when."""

    name: str
    device: str
    profile: Profile
    work: Path  # shared between parts: checkpoints, datasets
    record: Path  # this part's JSON lines
    deadline: float  # time.monotonic() by which the part should have stopped on its own
    foundation_stereo_src: Path | None = None
    compile_backend: str | None = None
    python: str = sys.executable

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def write(self, kind: str, **data: Any) -> None:
        with self.record.open("a") as f:
            f.write(json.dumps({"kind": kind, **data}, default=str) + "\n")

    def row(self, table: str, **values: Any) -> None:
        """One result row of the table `table` (rows of one table share their keys)."""
        self.write("row", table=table, values=values)
        print(f"[{self.name}] {table}: {values}", flush=True)

    def fail(self, check: str, error: str) -> None:
        """A check that did not pass (the part goes on with the next one)."""
        self.write("fail", check=check, error=error)
        print(f"[{self.name}] FAILED {check}: {error}", flush=True)

    def skip(self, check: str, reason: str) -> None:
        self.write("skip", check=check, reason=reason)
        print(f"[{self.name}] skipped {check}: {reason}", flush=True)

    def note(self, text: str) -> None:
        self.write("note", text=text)
        print(f"[{self.name}] {text}", flush=True)

    def time_left_s(self) -> float:
        return self.deadline - time.monotonic()

    def enough_time(self, check: str, need_s: float) -> bool:
        """False (and a skip line) when less than `need_s` is left of the part's budget."""
        if self.time_left_s() >= need_s:
            return True
        self.skip(check, f"{self.time_left_s():.0f} s left of the part's budget, about {need_s:.0f} s needed")
        return False

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Run one check: an exception is that check's failure line (with the last frame), not the part's."""
        try:
            yield
        except Skip as why:
            self.skip(name, str(why))
        except Exception as err:  # noqa: BLE001 — every failure is recorded; the part goes on
            self.fail(name, one_line(err))
            traceback.print_exc()


def one_line(err: BaseException) -> str:
    """`Type: message` in one line, with where it was raised (the innermost frame in labeler or here)."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = text[:300] + "…" if len(text) > 300 else text
    frames = [f for f in traceback.extract_tb(err.__traceback__) if str(REPO) in f.filename]
    where = f" ({Path(frames[-1].filename).relative_to(REPO)}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {text}{where}"


# ---------------------------------------------------------------- timing on the device


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Timing:
    median_s: float
    first_s: float  # the first call: warm-up, cuDNN algorithm search, compilation
    peak_gib: float | None  # torch.cuda.max_memory_allocated over every call; None on the CPU
    out: Any


def measure(fn: Callable[[], Any], *, device: str, warmup: int, repeats: int) -> Timing:
    """Median wall seconds of `fn()` over `repeats` calls after `warmup` untimed ones (synchronised
    around each call), with the peak device memory over all of them. `warmup + repeats` calls in all."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    times, first, out = [], None, None
    for i in range(max(0, warmup) + max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        seconds = time.perf_counter() - t0
        first = seconds if first is None else first
        if i >= warmup:
            times.append(seconds)
    assert first is not None
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return Timing(statistics.median(times), first, peak, out)


def gib(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def disparity_difference(got: Any, ref: Any) -> tuple[float, float, float]:
    """(EPE = mean |diff| px, bad-1 = % of pixels off by more than 1 px, max |diff| px) of two disparity
    tensors or arrays, over the pixels finite in both."""
    import numpy as np

    a = got.float().cpu().numpy() if hasattr(got, "cpu") else np.asarray(got, np.float32)
    b = ref.float().cpu().numpy() if hasattr(ref, "cpu") else np.asarray(ref, np.float32)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return float("nan"), float("nan"), float("nan")
    diff = np.abs(a[ok].astype(np.float64) - b[ok])
    return float(diff.mean()), float(100 * (diff > 1).mean()), float(diff.max())


# ---------------------------------------------------------------- deterministic checkpoints


def foundation_stereo_weights(part: Part, vit: str) -> Path:
    """labeler's deterministic release folder for `vit` (labeler.testing.foundation_stereo_release) under
    the work folder (built by `checkpoints`, or here when that part did not run); returns its .pth."""
    from labeler.testing.foundation_stereo_release import cached_release

    # each file is written whole or not at all: a part killed while writing leaves no half file
    return cached_release(vit, part.work / "foundation_stereo" / vit)


def tiny_sam2(part: Part) -> tuple[Path, Path]:
    """(config, checkpoint) of labeler's tiny random SAM2 (seed 0) under the work folder."""
    from labeler.testing.sam2_tiny import CHECKPOINT_NAME, CONFIG_NAME, write_tiny_sam2

    folder = part.work / "sam2_tiny"
    if (folder / CHECKPOINT_NAME).is_file():
        return folder / CONFIG_NAME, folder / CHECKPOINT_NAME
    return write_tiny_sam2(folder, seed=0)


def full_sam2(part: Part, config: str) -> Path:
    """A release-layout checkpoint ({"model": state_dict}) of the released `config` (full size, 1024 px
    input) initialised under torch.manual_seed(0): the speed of a real model, no download."""
    import torch
    from omegaconf import OmegaConf

    from labeler.segment.sam2_model import instantiate_model, resolve_config

    path = part.work / "sam2_full" / f"{config}_random_seed0.pt"
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = instantiate_model(OmegaConf.load(resolve_config(config)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict()}, tmp)
    tmp.rename(path)
    return path


def size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def label(h: int, w: int) -> str:
    return f"{h}x{w}"


def load_file(relative: str) -> Any:
    """A module of this repository loaded from its file (tests/ is no package, and the GPU image may
    hold an unrelated top-level `tests`)."""
    import importlib.util

    path = REPO / relative
    name = "gpu_check_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
