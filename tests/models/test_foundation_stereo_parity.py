"""FoundationStereo parity: labeler's implementation against what the official code computes.

The vectors live beside this file (data/foundation_stereo_*, see data/foundation_stereo_vectors.json for the
official commit and the command): NVIDIA's code run by benchmarks/make_foundation_stereo_vectors.py on
labeler's deterministic releases (`labeler.testing.foundation_stereo_release`, ViT-S and ViT-L, random-like
weights) and a rendered 160x224 pair, float32, CPU, iters=4: the official state-dict key lists, the output
disparity and intermediate outputs named by submodule (sampled: `labeler.testing.foundation_stereo_vectors`).
The pair goes through the backend (checkpoint -> cfg.yaml -> strict load -> demo pre/post-processing) with
hooks on the model.

The demo's other steps (padding to a multiple of 32, `--hiera`, `--remove_invisible`, `--scale`) are checked
against vectors of the same run (data/foundation_stereo_demo_vits.npz, see the end of the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from labeler.testing.foundation_stereo_vectors import capture_intermediates, case_pair, read_pair, sample

if TYPE_CHECKING:
    from labeler.stereo.foundation_stereo import FoundationStereoBackend

DATA = Path(__file__).resolve().parent / "data"
VECTORS = DATA / "foundation_stereo_parity.npz"
OFFICIAL_KEYS = DATA / "foundation_stereo_official_keys.json"
DISP_TOL_PX = 1e-3
REL_TOL = 1e-4  # per intermediate key: max|diff| <= REL_TOL * max(1, max|expected|)


def build_release(tmp_path_factory: pytest.TempPathFactory, vit: str) -> Path:
    """labeler's deterministic release folder for `vit`, built once per session; returns the .pth."""
    from labeler.testing.foundation_stereo_release import cached_release

    return cached_release(vit, tmp_path_factory.getbasetemp() / f"foundation-stereo-{vit}")


def run_with_hooks(weights: Path, *, device: str = "cpu") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Backend disparity of the vectors' pair (iters=4, no post-processing) and the model's intermediates,
    named like the vectors' keys (`feature.0.0`, `cnet.2.1`, `update_block.iter3.delta_disp`, ...) and
    sampled as they are."""
    from data_schema.backends import FoundationStereoConfig
    from labeler.stereo.foundation_stereo import FoundationStereoBackend

    config = FoundationStereoConfig(
        weights=weights, valid_iters=4, mixed_precision=False, remove_invisible=False, lr_check=False
    )
    backend = FoundationStereoBackend(config, device=device)
    with capture_intermediates(backend.model) as captured:
        disp = backend.disparity(*read_pair(DATA))
    return disp.disparity_px, {k: sample(v) for k, v in captured.items()}


def expected_vectors(vit: str) -> dict[str, np.ndarray]:
    """The official outputs for `vit`, by key (`disp`, `feature.0.0`, ...)."""
    with np.load(VECTORS) as vectors:
        return {k.split("/", 1)[1]: vectors[k] for k in vectors.files if k.startswith(f"{vit}/")}


def compare(
    vit: str,
    disp: np.ndarray,
    captured: dict[str, np.ndarray],
    *,
    disp_tol: float,
    rel_tol: float,
    label: str = "",
) -> None:
    expected = expected_vectors(vit)
    assert "disp" in expected and len(expected) > 10, f"{VECTORS}: no vectors for {vit}"
    lines, failures = [], []
    for key in expected:
        ref = expected[key]
        got = disp[None, None] if key == "disp" else captured.get(key)
        if got is None or got.shape != ref.shape:
            failures.append(f"{key}: got {None if got is None else got.shape}, expected {ref.shape}")
            continue
        diff = float(np.abs(got.astype(np.float64) - ref).max())
        scale = max(1.0, float(np.abs(ref).max()))
        tol = disp_tol if key == "disp" else rel_tol * scale
        lines.append(f"{key}: max|diff| {diff:.3g} (relative {diff / scale:.3g})")
        if not diff <= tol:
            failures.append(f"{key}: max|diff| {diff:.3g} > {tol:.3g}")
    print(f"\n[{label or vit}] " + "; ".join(lines))
    assert not failures, "; ".join(failures)


def test_state_dict_matches_release_keys() -> None:
    """Names, shapes and dtypes exactly those of both releases (so real checkpoints load strictly)."""
    import torch

    from labeler.models.foundation_stereo import FoundationStereo, FoundationStereoArgs

    for vit in ("vits", "vitl"):
        with torch.device("meta"):  # shapes and dtypes only: no memory, no init time
            model = FoundationStereo(FoundationStereoArgs(vit_size=vit))
        ours = {k: (list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
        listed = json.loads(OFFICIAL_KEYS.read_text())[vit]
        release = {name: (shape, dtype) for name, shape, dtype in listed}
        assert ours == release, f"{vit}: {sorted(set(ours) ^ set(release))[:5]}"


def test_vits_parity(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    torch.set_num_threads(2)
    disp, captured = run_with_hooks(build_release(tmp_path_factory, "vits"))
    compare("vits", disp, captured, disp_tol=DISP_TOL_PX, rel_tol=REL_TOL)


@pytest.mark.slow
def test_vitl_parity(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    torch.set_num_threads(2)
    disp, captured = run_with_hooks(build_release(tmp_path_factory, "vitl"))
    compare("vitl", disp, captured, disp_tol=DISP_TOL_PX, rel_tol=REL_TOL)


@pytest.mark.gpu
def test_vits_parity_cuda_float32(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The float32 CUDA path (TF32 off) against the CPU vectors; looser: kernels differ from the CPU's."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        disp, captured = run_with_hooks(build_release(tmp_path_factory, "vits"), device="cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    compare("vits", disp, captured, disp_tol=1e-2, rel_tol=1e-3, label="vits cuda")


# ------------------------------------------------ the demo's padding, hiera, remove_invisible and scale
# Vectors from the official code run as its scripts/run_demo.py (CPU, float32, labeler's ViT-S release):
# data/foundation_stereo_demo_vits.npz, the cases in data/foundation_stereo_vectors.json, written by
# benchmarks/make_foundation_stereo_vectors.py with the parity vectors.


def demo_case(name: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The case's inputs (from the JSON) and the official disparity and remove_invisible mask."""
    case = json.loads((DATA / "foundation_stereo_vectors.json").read_text())["cases"][name]
    with np.load(DATA / "foundation_stereo_demo_vits.npz") as vectors:
        return case, vectors[f"{name}.disp"], vectors[f"{name}.invisible"]


def demo_backend(
    weights: Path, case: dict[str, Any], *, remove_invisible: bool = False
) -> FoundationStereoBackend:
    """The backend set up as the demo runs: the case's scale / hiera / iterations, no labeler-only steps."""
    import torch

    from data_schema.backends import FoundationStereoConfig
    from labeler.stereo.foundation_stereo import FoundationStereoBackend

    torch.set_num_threads(2)
    config = FoundationStereoConfig(
        weights=weights,
        valid_iters=case["valid_iters"],
        scale=case["scale"],
        hiera=case["hiera"],
        remove_invisible=remove_invisible,
        mixed_precision=False,
        lr_check=False,
        detect_swapped=False,  # a mirror-tiled pair is no real scene; the demo has no such check
    )
    return FoundationStereoBackend(config, device="cpu")


def max_diff(got: np.ndarray, expected: np.ndarray, label: str) -> float:
    assert got.shape == expected.shape, f"{label}: shape {got.shape}, expected {expected.shape}"
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    print(f"\n[{label}] max|diff| {diff:.3g} px over {expected.size} pixels")
    return diff


def test_demo_padding(tmp_path_factory: pytest.TempPathFactory) -> None:
    """61x421: replicate-padded to 64x448 (rows 1 + 2, columns 13 + 14), unpadded back."""
    case, expected, _ = demo_case("pad")
    disp = demo_backend(build_release(tmp_path_factory, "vits"), case).disparity(*case_pair(case, DATA))
    assert max_diff(disp.disparity_px, expected, "padding") <= DISP_TOL_PX


def test_demo_remove_invisible(tmp_path_factory: pytest.TempPathFactory) -> None:
    """NaN exactly where the demo sets inf (x - d < 0); the other pixels keep the demo's disparity."""
    case, expected, invisible = demo_case("pad")
    backend = demo_backend(build_release(tmp_path_factory, "vits"), case, remove_invisible=True)
    disp = backend.disparity(*case_pair(case, DATA)).disparity_px
    assert 0.2 < invisible.mean() < 0.8  # both kinds of pixels, so that a wrong rule shows
    x = np.arange(expected.shape[1])[None, :]
    # a pixel whose match lies within the disparity tolerance of the border may fall either way
    decided = np.abs(x - expected) > DISP_TOL_PX
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(np.isnan(disp)[decided], invisible[decided])
    visible = ~np.isnan(disp)
    assert max_diff(disp[visible], expected[visible], "remove_invisible") <= DISP_TOL_PX


def test_demo_hiera(tmp_path_factory: pytest.TempPathFactory) -> None:
    """93x211 coarse-to-fine: the coarse pass at 48x112 (itself padded to 64x128) seeds the 96x224 pass."""
    case, expected, _ = demo_case("hiera")
    disp = demo_backend(build_release(tmp_path_factory, "vits"), case).disparity(*case_pair(case, DATA))
    assert max_diff(disp.disparity_px, expected, "hiera") <= DISP_TOL_PX


def test_demo_scale(tmp_path_factory: pytest.TempPathFactory) -> None:
    """scale 0.6: the demo returns the 96x134 disparity of the resized pair; labeler brings it back to the
    input's 160x224, bilinearly, in input px (x 224/134), which at most scales the difference by 224/134."""
    import cv2

    case, expected, _ = demo_case("scale")
    left, right = case_pair(case, DATA)
    disp = demo_backend(build_release(tmp_path_factory, "vits"), case).disparity(left, right)
    h, w = left.shape[:2]
    restored = cv2.resize(expected, (w, h), interpolation=cv2.INTER_LINEAR) * (w / expected.shape[1])
    assert max_diff(disp.disparity_px, restored, "scale") <= DISP_TOL_PX * w / expected.shape[1]
