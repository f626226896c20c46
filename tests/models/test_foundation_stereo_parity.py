"""FoundationStereo parity: labeler's implementation against what the official code computes.

The vectors live in ../shared/foundation_stereo (see its README): deterministic release-layout
checkpoints built by `make_checkpoint.py`, a 160x224 pair, and the official outputs for it (float32,
CPU, iters=4) including intermediate outputs named by submodule. The pair goes through the backend
(checkpoint -> cfg.yaml -> strict load -> demo pre/post-processing) with hooks on the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("LABELER_SHARED_DIR", REPO.parent / "shared")) / "foundation_stereo"
DISP_TOL_PX = 1e-3
REL_TOL = 1e-4  # per intermediate key: max|diff| <= REL_TOL * max(1, max|expected|)

pytestmark = pytest.mark.skipif(
    not (SHARED / "make_checkpoint.py").is_file(),
    reason=f"FoundationStereo parity vectors not found at {SHARED} (shared test data beside the repository)",
)


def build_release(tmp_path_factory: pytest.TempPathFactory, vit: str) -> Path:
    """The shared generator's checkpoint folder for `vit`, built once per session; returns the .pth."""
    root = tmp_path_factory.getbasetemp() / f"foundation-stereo-{vit}"
    weights = root / "model_best_bp2.pth"
    if not weights.is_file():
        subprocess.run(
            [sys.executable, str(SHARED / "make_checkpoint.py"), vit, str(root)],
            check=True,
            capture_output=True,
        )
    return weights


def read_pair() -> tuple[np.ndarray, np.ndarray]:
    import cv2

    def rgb(name: str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(SHARED / name)), cv2.COLOR_BGR2RGB)

    return rgb("left_160x224.png"), rgb("right_160x224.png")


def run_with_hooks(weights: Path, *, device: str = "cpu") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Backend disparity of the shared pair (iters=4, no post-processing) and the model's intermediates,
    named like the expected npz keys (`feature.0.0`, `cnet.2.1`, `update_block.iter3.delta_disp`, ...)."""
    import torch

    from data_schema.backends import FoundationStereoConfig
    from labeler.stereo.foundation_stereo import FoundationStereoBackend

    config = FoundationStereoConfig(
        weights=weights, valid_iters=4, mixed_precision=False, remove_invisible=False, lr_check=False
    )
    backend = FoundationStereoBackend(config, device=device)
    model = backend.model
    captured: dict[str, np.ndarray] = {}

    def store(prefix: str, out: object) -> None:
        if isinstance(out, (list, tuple)):
            for i, item in enumerate(out):
                store(f"{prefix}.{i}", item)
        elif isinstance(out, torch.Tensor):
            captured[prefix] = out.detach().float().cpu().numpy()

    handles = [
        getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: store(name, out))
        for name in ("feature", "stem_2", "classifier", "cnet")
    ]
    steps = iter(range(10**6))
    handles.append(
        model.update_block.register_forward_hook(
            lambda _m, _i, out: store(f"update_block.iter{next(steps)}.delta_disp", out[2])
        )
    )
    try:
        disp = backend.disparity(*read_pair())
    finally:
        for h in handles:
            h.remove()
    return disp.disparity_px, captured


def compare(
    vit: str,
    disp: np.ndarray,
    captured: dict[str, np.ndarray],
    *,
    disp_tol: float,
    rel_tol: float,
    label: str = "",
) -> None:
    expected = np.load(SHARED / f"expected_{vit}_160x224_iters4.npz")
    lines, failures = [], []
    for key in expected.files:
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
        listed = json.loads((SHARED / f"keys_{vit}.json").read_text())
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
