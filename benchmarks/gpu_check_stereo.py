"""The GPU check's FoundationStereo parts (each runs in its own process; see gpu_check.py).

- `fs_parity`: float32 on the device against the official vectors in tests/models/data (the CPU test's
  tolerances), TF32 off,
  and once more with PyTorch's default flags (cuDNN convolutions in TF32), which is how the backend runs;
- `fs_speed`: pairs/s of the network per ViT, size, iterations and dtype (float32, float16 autocast as
  the release runs, bfloat16), peak memory, and each autocast dtype against float32 (EPE, bad-1);
- `fs_batches`: the backend (left-right pass on) on 1/4/8 equal pairs per call at both sizes: none may
  fail (cuDNN's grid_sample refuses 65 536 rows and more), and pairs/s per batch;
- `fs_compile`: eager, eager with cudnn.benchmark, and torch.compile of the network's heavy submodules;
- `fs_official`: NVIDIA's code on the same inputs and weights in the same process (--foundation-stereo-src).

Inputs are the parity vectors' 160x224 pair resized (bench_foundation_stereo.make_pair).
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from gpu_check_lib import (
    Part,
    Skip,
    disparity_difference,
    foundation_stereo_weights,
    gib,
    label,
    load_file,
    measure,
)

DTYPES = ("float32", "float16", "bfloat16")


def _pair_tensors(part: Part, h: int, w: int, batch: int = 1) -> tuple[Any, Any]:
    import bench_foundation_stereo as bench
    import torch

    left, right = bench.make_pair(h, w, batch)
    as_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().to(part.device)  # noqa: E731
    return as_tensor(left), as_tensor(right)


def _autocast(part: Part, dtype: str) -> Any:
    import torch

    on = dtype != "float32"  # (a float32 target dtype, even disabled, makes CUDA autocast warn)
    return torch.autocast(
        "cuda" if part.cuda else "cpu", dtype=getattr(torch, dtype if on else "bfloat16"), enabled=on
    )


def _dtypes(part: Part) -> tuple[str, ...]:
    if part.cuda:
        return DTYPES
    part.skip("float16 / bfloat16 autocast", "CUDA only: the backend runs float32 on the CPU")
    return ("float32",)


# ---------------------------------------------------------------- fs_parity


def fs_parity(part: Part) -> None:
    import torch

    parity = load_file("tests/models/test_foundation_stereo_parity.py")
    cpu_tol = (parity.DISP_TOL_PX, parity.REL_TOL)
    defaults = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    runs = [("float32, TF32 off", False)]
    if part.cuda:
        runs.append(("float32, PyTorch defaults (cuDNN TF32 on)", True))
    vits = part.profile.vits
    for vit in vits:
        weights = foundation_stereo_weights(part, vit)
        for run, tf32 in runs:
            with part.check(f"{vit} {run}"):
                _set_tf32(*(defaults if tf32 else (False, False)))
                try:
                    t0 = time.perf_counter()
                    disp, captured = parity.run_with_hooks(weights, device=part.device)
                    seconds = time.perf_counter() - t0
                finally:
                    _set_tf32(*defaults)
                expected = parity.expected_vectors(vit)
                disp_diff, worst_key, worst_rel, missing = _against_vectors(expected, disp, captured)
                passed = disp_diff <= cpu_tol[0] and worst_rel <= cpu_tol[1] and not missing
                part.row(
                    "parity",
                    vit=vit,
                    run=run,
                    device=part.device,
                    disp_max_abs_diff_px=float(f"{disp_diff:.3g}"),
                    worst_key=worst_key,
                    worst_rel_diff=float(f"{worst_rel:.3g}"),
                    within_cpu_tolerance=passed,
                    within_cuda_test_tolerance=disp_diff <= 1e-2 and worst_rel <= 1e-3 and not missing,
                    seconds=round(seconds, 1),
                )
                if missing:
                    part.fail(f"{vit} {run}", f"intermediate keys not produced: {', '.join(missing[:5])}")
                elif not passed and not tf32:  # the TF32 run is a measurement, not the parity check
                    part.fail(
                        f"{vit} {run}",
                        f"outside the CPU tolerances (disp {disp_diff:.3g} > {cpu_tol[0]:g} px or "
                        f"{worst_key} {worst_rel:.3g} > {cpu_tol[1]:g} relative)",
                    )


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn


def _against_vectors(
    expected: dict[str, np.ndarray], disp: np.ndarray, captured: dict[str, np.ndarray]
) -> tuple[float, str, float, list[str]]:
    """(disp max |diff| px, the intermediate key with the largest relative diff, that diff, keys missing)."""
    worst_key, worst_rel, disp_diff, missing = "", 0.0, float("inf"), []
    for key in expected:
        ref = expected[key]
        got = disp[None, None] if key == "disp" else captured.get(key)
        if got is None or got.shape != ref.shape:
            missing.append(key)
            continue
        diff = float(np.abs(got.astype(np.float64) - ref).max())
        if key == "disp":
            disp_diff = diff
            continue
        rel = diff / max(1.0, float(np.abs(ref).max()))
        if rel >= worst_rel:
            worst_key, worst_rel = key, rel
    return disp_diff, worst_key, worst_rel, missing


# ---------------------------------------------------------------- fs_speed


def fs_speed(part: Part) -> None:
    dtypes = _dtypes(part)
    for vit in part.profile.vits:
        _speed_of(part, vit, dtypes)
        _free(part)


def _speed_of(part: Part, vit: str, dtypes: tuple[str, ...]) -> None:
    import torch

    from labeler.models.foundation_stereo import load_foundation_stereo

    prof = part.profile
    model = load_foundation_stereo(foundation_stereo_weights(part, vit), device=part.device)
    last_s = 0.0
    for h, w in prof.sizes:
        left, right = _pair_tensors(part, h, w)
        for iters in prof.iters:
            reference = None
            # every dtype (and the autocast ones against float32) at the most iterations; at fewer, the
            # release's float16 alone, for pairs/s (keeps the grid inside its budget)
            chosen = dtypes if iters == max(prof.iters) or len(dtypes) == 1 else ("float16",)
            for dtype in chosen:
                name = f"{vit} {label(h, w)} iters {iters} {dtype}"
                if not part.enough_time(name, 2 * last_s + 5):
                    continue
                with part.check(name):
                    t0 = time.perf_counter()

                    def forward(
                        dtype: str = dtype, iters: int = iters, left: Any = left, right: Any = right
                    ) -> Any:
                        with torch.inference_mode(), _autocast(part, dtype):
                            return model(left, right, iters=iters)

                    t = measure(forward, device=part.device, warmup=prof.warmup, repeats=prof.repeats)
                    last_s = time.perf_counter() - t0
                    if dtype == "float32":
                        reference = t.out
                    epe = bad1 = None
                    if reference is not None and dtype != "float32":
                        epe, bad1, _ = disparity_difference(t.out, reference)
                    part.row(
                        "speed",
                        vit=vit,
                        size=label(h, w),
                        iters=iters,
                        dtype=dtype,
                        pairs_per_s=round(1 / t.median_s, 3),
                        s_per_pair=round(t.median_s, 4),
                        first_call_s=round(t.first_s, 2),
                        peak_gib=gib(t.peak_gib),
                        epe_vs_fp32_px=None if epe is None else float(f"{epe:.3g}"),
                        bad1_vs_fp32_pct=None if bad1 is None else round(bad1, 2),
                    )


def _free(part: Part) -> None:
    import gc

    import torch

    gc.collect()
    if part.cuda:
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- fs_batches


def fs_batches(part: Part) -> None:
    import bench_foundation_stereo as bench
    import torch

    from data_schema.backends import FoundationStereoConfig
    from labeler.stereo.foundation_stereo import FoundationStereoBackend

    prof = part.profile
    config = FoundationStereoConfig(
        weights=foundation_stereo_weights(part, prof.batch_vit),
        valid_iters=prof.batch_iters,
        lr_check=True,
        batch_size=max(prof.batches),
    )
    backend = FoundationStereoBackend(config, device=part.device)
    part.note(
        f"backend {prof.batch_vit}, iters {prof.batch_iters}, lr_check on, autocast "
        f"{config.amp_dtype if backend.autocast else 'off (float32)'}, "
        f"cudnn.enabled {torch.backends.cudnn.enabled}"
    )
    passes = [0]  # network passes (the feature extractor runs once per pass): > 1 a call = split after OOM
    backend.model.feature.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    last_s = 0.0
    for h, w in prof.sizes:
        left, right = bench.make_pair(h, w, max(prof.batches))
        if part.cuda:  # cuDNN picks its algorithms per shape on the first call
            with part.check(f"{label(h, w)} warm-up"):
                backend.disparity_many([(left[0], right[0])])
        for n in prof.batches:
            name = f"{label(h, w)} x{n}"
            if not part.enough_time(name, 2 * last_s + 5):
                continue
            with part.check(name), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pairs = [(left[i], right[i]) for i in range(n)]
                passes[0] = 0
                t0 = time.perf_counter()
                t = measure(partial(backend.disparity_many, pairs), device=part.device, warmup=0, repeats=1)
                last_s = time.perf_counter() - t0
                reduced = [str(c.message) for c in caught if "ScaleReduced" in type(c.message).__name__]
                valid = float(np.mean([np.isfinite(d.disparity_px).mean() for d in t.out]))
                part.row(
                    "batches",
                    vit=prof.batch_vit,
                    size=label(h, w),
                    pairs=n,
                    images_per_pass=2 * n,
                    network_passes=passes[0],
                    dtype=t.out[0].dtype,
                    pairs_per_s=round(n / t.median_s, 3),
                    peak_gib=gib(t.peak_gib),
                    scales_used=sorted(set(backend.scales_used)),
                    valid_pct=round(100 * valid, 1),
                )
                if reduced:
                    part.fail(name, f"ran out of memory and fell back: {reduced[0]}")
                elif passes[0] > 1:
                    part.fail(
                        name, f"{passes[0]} network passes for one batch: split after running out of memory"
                    )


# ---------------------------------------------------------------- fs_compile

COMPILED = ("feature", "cnet", "cost_agg", "update_block")  # the submodules that hold the time


def fs_compile(part: Part) -> None:
    import torch

    from labeler.models.foundation_stereo import load_foundation_stereo

    backend = part.compile_backend or part.profile.compile_backend
    if backend is None:
        raise Skip(
            "torch.compile is measured on CUDA (on the CPU inductor's C++ build alone takes minutes); "
            "--compile-backend eager|inductor runs it here"
        )
    prof = part.profile
    h, w = prof.compile_size
    dtype = "float16" if part.cuda else "float32"
    left, right = _pair_tensors(part, h, w)
    weights = foundation_stereo_weights(part, "vits")
    model = load_foundation_stereo(weights, device=part.device)

    def run(net: Any) -> Any:
        with torch.inference_mode(), _autocast(part, dtype):
            return net(left, right, iters=prof.compile_iters)

    eager = None
    for mode in ("eager", "eager, cudnn.benchmark", f"torch.compile ({backend}): {', '.join(COMPILED)}"):
        with part.check(mode):
            net = model
            if mode.startswith("torch.compile"):
                net = load_foundation_stereo(weights, device=part.device)
                for name in COMPILED:
                    setattr(net, name, torch.compile(getattr(net, name), backend=backend))
            torch.backends.cudnn.benchmark = "benchmark" in mode
            try:
                t = measure(partial(run, net), device=part.device, warmup=1, repeats=prof.repeats)
            finally:
                torch.backends.cudnn.benchmark = False
            if eager is None:
                eager = t.out
            _, _, max_diff = disparity_difference(t.out, eager)
            part.row(
                "compile",
                mode=mode,
                vit="vits",
                size=label(h, w),
                iters=prof.compile_iters,
                dtype=dtype,
                first_call_s=round(t.first_s, 2),
                pairs_per_s=round(1 / t.median_s, 3),
                peak_gib=gib(t.peak_gib),
                max_abs_diff_vs_eager_px=float(f"{max_diff:.3g}"),
            )


# ---------------------------------------------------------------- fs_official


def fs_official(part: Part) -> None:
    src = part.foundation_stereo_src
    if src is None:
        raise Skip(
            "pass --foundation-stereo-src PATH (a checkout of NVlabs/FoundationStereo, e.g. commit 6e88068) "
            "to run the official model on the same inputs and weights"
        )
    if not (src / "core" / "foundation_stereo.py").is_file():
        raise Skip(f"--foundation-stereo-src {src}: no core/foundation_stereo.py there")
    for vit in part.profile.vits:
        _official_of(part, src, vit)
        _free(part)


def _official_of(part: Part, src: Path, vit: str) -> None:
    import bench_foundation_stereo as bench
    import torch

    from labeler.models.foundation_stereo import load_foundation_stereo

    prof = part.profile
    dtypes = ("float32", "float16") if part.cuda else ("float32",)
    weights = foundation_stereo_weights(part, vit)
    ours = load_foundation_stereo(weights, device=part.device)
    official = bench.load_official(src, weights, part.device)
    iters = prof.official_iters
    warm = max(1, prof.warmup)  # a ratio of two timings: neither may carry the first call's costs
    for h, w in prof.official_sizes:
        left, right = _pair_tensors(part, h, w)
        for dtype in dtypes:
            name = f"{vit} {label(h, w)} {dtype}"
            if not part.enough_time(name, 10):
                continue
            with part.check(name):

                def run(
                    net: Any, official_api: bool, dtype: str = dtype, left: Any = left, right: Any = right
                ) -> Any:
                    with torch.inference_mode(), _autocast(part, dtype):
                        if official_api:
                            # the release wraps its blocks in autocast(enabled=args.mixed_precision): off,
                            # that would run them in float32 inside our float16 autocast
                            net.args["mixed_precision"] = dtype != "float32"
                            return net(left, right, iters=iters, test_mode=True)
                        return net(left, right, iters=iters)

                t_ours = measure(
                    partial(run, ours, False), device=part.device, warmup=warm, repeats=prof.repeats
                )
                t_off = measure(
                    partial(run, official, True), device=part.device, warmup=warm, repeats=prof.repeats
                )
                epe, _, max_diff = disparity_difference(t_ours.out, t_off.out)
                part.row(
                    "official",
                    vit=vit,
                    size=label(h, w),
                    iters=iters,
                    dtype=dtype,
                    ours_pairs_per_s=round(1 / t_ours.median_s, 3),
                    official_pairs_per_s=round(1 / t_off.median_s, 3),
                    ours_over_official_speed=round(t_off.median_s / t_ours.median_s, 2),
                    max_abs_diff_px=float(f"{max_diff:.3g}"),
                    epe_px=float(f"{epe:.3g}"),
                    ours_peak_gib=gib(t_ours.peak_gib),
                    official_peak_gib=gib(t_off.peak_gib),
                )


PARTS = {
    "fs_parity": fs_parity,
    "fs_speed": fs_speed,
    "fs_batches": fs_batches,
    "fs_official": fs_official,
    "fs_compile": fs_compile,
}
