"""foundation-stereo backend on the CPU with labeler's deterministic ViT-S release (random-like weights).

The weights make the disparity values meaningless (parity with the official code is tested in
tests/models/test_foundation_stereo_parity.py), so the value tests of the conformance suite are skipped;
everything else (contract, padding, scale, errors, swapped pairs, OOM fallback) is checked here.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from data_schema.backends import FoundationStereoConfig
from labeler.models.foundation_stereo.release import CheckpointError
from labeler.stereo.base import STEREO_BACKENDS
from labeler.stereo.consistency import lr_difference, outside_right
from labeler.stereo.foundation_stereo import (
    OUTSIDE_MARGIN_PX,
    FoundationStereoBackend,
    ScaleReducedWarning,
    StereoOutOfMemoryError,
    SwappedPairError,
    check_not_swapped,
    swap_evidence,
)
from labeler.testing.conformance import StereoBackendTests
from labeler.testing.scenes import RectifiedPair, plane_pair, square_scene

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def vits_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labeler's deterministic ViT-S release, built once per session (the parity test's folder)."""
    from tests.conftest import foundation_stereo_release

    return foundation_stereo_release(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """The parity vectors' 160x224 rectified pair (a rendered scene: its disparities are positive)."""
    from labeler.testing.foundation_stereo_vectors import read_pair
    from tests.conftest import FOUNDATION_STEREO_DATA

    return read_pair(FOUNDATION_STEREO_DATA)


@pytest.fixture(scope="module")
def plain(vits_weights: Path) -> FoundationStereoBackend:
    """No post-processing: the backend's disparity is the network's, at 2 iterations."""
    import torch

    torch.set_num_threads(2)
    cfg = FoundationStereoConfig(weights=vits_weights, valid_iters=2, lr_check=False, remove_invisible=False)
    return FoundationStereoBackend(cfg)


# ------------------------------------------------------------------ conformance

LR_MAX_DISP = 64  # the random-like weights' matches stay inside 64x96 scenes (see below)


class TestFoundationStereoConformance(StereoBackendTests):
    """Contract, errors and determinism; the value tests need real weights."""

    backend_name = "foundation-stereo"
    many_atol = 1e-3  # a batched forward pass rounds differently in float32 (as in test_batches_...)

    @pytest.fixture(scope="class", params=["lr-check", "no-lr-check"])
    @classmethod
    def backend(cls, request: pytest.FixtureRequest, vits_weights: Path) -> FoundationStereoBackend:
        # the left-right variant at the default tolerance (1 px): at the release's max_disp (416) the
        # random-like weights match beyond a 96-px-wide image almost everywhere, at 64 they keep ~70% of
        # the pixels inside it and ~40% within 1 px, so the check both keeps and drops pixels (measured in
        # test_left_right_check_keeps_exactly_the_consistent_pixels)
        fields = {"max_disp": LR_MAX_DISP} if request.param == "lr-check" else {"lr_check": False}
        return FoundationStereoBackend(FoundationStereoConfig(weights=vits_weights, valid_iters=2, **fields))

    # The contract (shapes, NaN with confidence, determinism) does not depend on the size: 64x96 scenes
    # (a multiple of 32, no padding) take half the ViT-S forward time of the suite's 96x128 ones.
    @pytest.fixture
    def plane(self) -> RectifiedPair:
        return plane_pair(64, 96)

    @pytest.fixture
    def square(self) -> RectifiedPair:
        return square_scene(64, 96)

    def test_fronto_parallel_plane(self) -> None:  # type: ignore[override]
        pytest.skip("needs real weights (the generated checkpoint's disparities are meaningless)")

    def test_square_in_front_of_plane(self) -> None:  # type: ignore[override]
        pytest.skip("needs real weights (the generated checkpoint's disparities are meaningless)")


# ------------------------------------------------------------------ model path


def test_output_contract_on_the_test_pair(vits_weights: Path, pair: tuple[np.ndarray, np.ndarray]) -> None:
    out = FoundationStereoBackend(FoundationStereoConfig(weights=vits_weights, valid_iters=2)).disparity(
        *pair
    )
    d, c = out.disparity_px, out.confidence
    assert d.shape == c.shape == pair[0].shape[:2] and d.dtype == c.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(d), np.isnan(c))
    finite = c[np.isfinite(c)]
    assert np.all((finite > np.exp(-1) - 1e-6) & (finite <= 1))  # lr-check confidence: exp(-err / tolerance)
    assert not outside_right(d, margin_px=OUTSIDE_MARGIN_PX).any()  # remove_invisible


def test_odd_size_is_padded_like_the_demo(
    plain: FoundationStereoBackend, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    """157x211 -> replicate-padded to 160x224 (left 6, right 7, top 1, bottom 2), then cropped back."""
    import torch

    from labeler.models.foundation_stereo import Padding

    left, right = (np.ascontiguousarray(im[:157, :211]) for im in pair)
    got = plain.disparity(left, right).disparity_px
    assert got.shape == (157, 211)
    assert Padding.to_multiple(157, 211) == Padding(left=6, right=7, top=1, bottom=2)
    padded = [np.pad(im, ((1, 2), (6, 7), (0, 0)), mode="edge") for im in (left, right)]
    a, b = (torch.from_numpy(im).permute(2, 0, 1)[None].float() for im in padded)
    with torch.inference_mode():
        want = plain.model(a, b, iters=2)[0, 0, 1:-2, 6:-7].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_scale_resizes_and_rescales_disparity(
    vits_weights: Path, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    cfg = FoundationStereoConfig(weights=vits_weights, valid_iters=2, lr_check=False, remove_invisible=False)
    half = FoundationStereoBackend(cfg.model_copy(update={"scale": 0.5}))
    got = half.disparity(*pair).disparity_px
    assert got.shape == (160, 224) and half.scales_used == [0.5]
    small = [cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_LINEAR) for im in pair]
    low = FoundationStereoBackend(cfg)
    low._model = half.model  # the same weights, loaded once
    at_half = low.disparity(*small).disparity_px  # (80, 112), in half-resolution px
    want = cv2.resize(at_half, (224, 160), interpolation=cv2.INTER_LINEAR) * 2.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_hierarchical_runs(vits_weights: Path, pair: tuple[np.ndarray, np.ndarray]) -> None:
    cfg = FoundationStereoConfig(weights=vits_weights, valid_iters=1, hiera=True, lr_check=False)
    out = FoundationStereoBackend(cfg).disparity(*pair)
    assert out.disparity_px.shape == (160, 224) and np.isfinite(out.disparity_px).any()


def test_max_disp_override(tmp_path: Path) -> None:
    (tmp_path / "model_best_bp2.pth").write_bytes(b"never loaded")
    (tmp_path / "cfg.yaml").write_text("vit_size: vits\nmax_disp: 416\n")
    backend = FoundationStereoBackend(FoundationStereoConfig(weights=tmp_path, max_disp=192))
    assert backend.args.max_disp == 192 and backend.args.vit_size == "vits"
    with pytest.raises(ValueError, match="multiple of 32"):
        FoundationStereoConfig(weights=tmp_path, max_disp=208)  # 16 x 13: the hourglass needs 32 x k


def test_batches_of_equal_size_match_single_pairs(
    vits_weights: Path, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    cfg = FoundationStereoConfig(weights=vits_weights, valid_iters=1, lr_check=False, batch_size=2)
    backend = FoundationStereoBackend(cfg)
    # crops of the test pair, small enough for a CPU (the full 160x224 pair takes several seconds)
    big = tuple(np.ascontiguousarray(im[:64, :96]) for im in pair)
    crop = tuple(np.ascontiguousarray(im[:32, :64]) for im in pair)
    many = backend.disparity_many([big, crop, big])  # the two 64x96 pairs share one forward pass
    assert [m.disparity_px.shape for m in many] == [(64, 96), (32, 64), (64, 96)]
    single = backend.disparity(*big)
    for got in (many[0], many[2]):
        np.testing.assert_allclose(got.disparity_px, single.disparity_px, rtol=0, atol=1e-3, equal_nan=True)


def test_labeler_run_with_foundation_stereo(vits_weights: Path, tmp_path: Path) -> None:
    """`labeler run --stereo foundation-stereo --stereo-weights ...` on the CPU, end to end."""
    import json

    from typer.testing import CliRunner

    from labeler import open_dataset
    from labeler.cli.main import app
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    raw = write_plane_pairs(tmp_path / "raw", 2, 128, 96, suffix_layout=True)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    out = tmp_path / "ds"
    args = [
        "run",
        str(raw),
        "--calib",
        str(calib),
        "--out",
        str(out),
        "--scheduler",
        "sync",
        "--stereo",
        "foundation-stereo",
        "--stereo-weights",
        str(vits_weights),
        "--valid-iters",
        "1",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ds = open_dataset(out)
    assert len(ds) == 2 and ds[0].disparity_px.shape == (96, 128)
    recorded = json.loads((out / "manifest.json").read_text())["stereo"]
    assert recorded["name"] == "foundation-stereo" and recorded["valid_iters"] == 1
    assert Path(recorded["weights"]) == vits_weights
    # per-sample provenance (issue 12): the scale, iterations, dtype and device each sample was made with
    made = ds.samples.to_table(columns=["stereo_scale", "stereo_iters", "stereo_dtype", "device"]).to_pylist()
    assert made == [{"stereo_scale": 1.0, "stereo_iters": 1, "stereo_dtype": "float32", "device": "cpu"}] * 2


def test_mixed_precision_follows_the_release(vits_weights: Path) -> None:
    """The release runs float16 autocast as its cfg.yaml says; bf16 is a choice; never on the CPU."""
    cfg = FoundationStereoConfig(weights=vits_weights)
    assert cfg.amp_dtype == "float16" and cfg.mixed_precision is None
    backend = FoundationStereoBackend(cfg)
    assert backend.args.mixed_precision is True and backend.autocast is False  # CPU: float32
    on_gpu = FoundationStereoBackend(cfg, device="cuda:0")  # nothing runs: only the decision is read
    assert on_gpu.autocast is True
    off = FoundationStereoBackend(cfg.model_copy(update={"mixed_precision": False}), device="cuda:0")
    assert off.autocast is False


# ------------------------------------------------------------------ errors


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_no_weights_names_the_flag() -> None:
    with pytest.raises(CheckpointError) as info:
        FoundationStereoBackend(FoundationStereoConfig(weights=None))
    assert "--stereo-weights" in _one_line(info.value)


def test_missing_checkpoint_names_file_expectation_and_flag(tmp_path: Path) -> None:
    missing = tmp_path / "ckpt" / "model_best_bp2.pth"
    with pytest.raises(CheckpointError) as info:
        FoundationStereoBackend(FoundationStereoConfig(weights=missing))
    text = _one_line(info.value)
    assert str(missing) in text and "not found" in text and "cfg.yaml" in text and "--stereo-weights" in text


def test_missing_cfg_yaml(tmp_path: Path) -> None:
    weights = tmp_path / "model_best_bp2.pth"
    weights.write_bytes(b"x")
    with pytest.raises(CheckpointError) as info:
        FoundationStereoBackend(FoundationStereoConfig(weights=weights))
    text = _one_line(info.value)
    assert str(tmp_path / "cfg.yaml") in text and "--stereo-weights" in text


def test_bad_cfg_yaml(tmp_path: Path) -> None:
    (tmp_path / "model_best_bp2.pth").write_bytes(b"x")
    (tmp_path / "cfg.yaml").write_text("vit_size: vitx\nmax_disp: 416\n")
    with pytest.raises(CheckpointError, match="vit_size 'vitx'") as info:
        FoundationStereoBackend(FoundationStereoConfig(weights=tmp_path))  # a folder works too
    _one_line(info.value)


def test_wrong_keys_fail_strictly_in_one_line(tmp_path: Path, vits_weights: Path) -> None:
    import torch

    (tmp_path / "cfg.yaml").write_text((vits_weights.parent / "cfg.yaml").read_text())
    state = torch.load(vits_weights, map_location="cpu", weights_only=True, mmap=True)["model"]
    state = {k: v for k, v in state.items() if not k.startswith("cnet.")}
    state["extra.weight"] = torch.zeros(1)
    state["classifier.2.bias"] = torch.zeros(2)
    torch.save({"model": state, "global_step": 0, "epoch": 0}, tmp_path / "model_best_bp2.pth")
    backend = FoundationStereoBackend(FoundationStereoConfig(weights=tmp_path / "model_best_bp2.pth"))
    with pytest.raises(CheckpointError) as info:
        _ = backend.model
    text = _one_line(info.value)
    assert "missing: cnet." in text and "1 unexpected: extra.weight" in text
    assert "classifier.2.bias [2] vs [1]" in text and "--stereo-weights" in text


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "model_best_bp2.pth").write_bytes(b"not a zip")
    (tmp_path / "cfg.yaml").write_text("vit_size: vits\nmax_disp: 416\n")
    backend = FoundationStereoBackend(FoundationStereoConfig(weights=tmp_path / "model_best_bp2.pth"))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        _ = backend.model


# ------------------------------------------------------------------ swapped pairs


def test_swapped_pair_is_detected(pair: tuple[np.ndarray, np.ndarray]) -> None:
    left, right = pair
    mirrored_ok = (np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1]))
    mirrored_swapped = (np.ascontiguousarray(left[:, ::-1]), np.ascontiguousarray(right[:, ::-1]))
    for ok in (pair, mirrored_ok):
        check_not_swapped(*ok)
        pos, neg = swap_evidence(*ok)
        assert pos > 0.5 and neg < 0.05
    for bad in ((right, left), mirrored_swapped):
        with pytest.raises(SwappedPairError, match="look swapped") as info:
            check_not_swapped(*bad)
        _one_line(info.value)
    check_not_swapped(left, left)  # zero disparity is not evidence either way


def test_backend_refuses_a_swapped_pair_before_running(
    tmp_path: Path, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    (tmp_path / "model_best_bp2.pth").write_bytes(b"never loaded")
    (tmp_path / "cfg.yaml").write_text("vit_size: vits\n")
    backend = FoundationStereoBackend(FoundationStereoConfig(weights=tmp_path))
    with pytest.raises(ValueError, match="look swapped"):
        backend.disparity(pair[1], pair[0])
    assert backend._model is None


# ------------------------------------------------------------------ helpers, OOM, packaging


def lr_error(d_left: np.ndarray, d_right: np.ndarray) -> np.ndarray:
    return np.abs(lr_difference(d_left, d_right, sampling="linear"))  # what the backend thresholds


def test_lr_error_and_outside_right_on_a_toy_row() -> None:
    d_left = np.array([[0.0, 1.0, 1.0, 5.0, 2.0, np.nan]], np.float32)
    d_right = np.array([[1.0, 1.0, 3.0, 3.0, 3.0, 3.0]], np.float32)
    err = lr_error(d_left, d_right)
    # x=0 -> right 0 (1.0): |0-1|; x=1 -> right 0: 0; x=2 -> right 1: 0; x=3 -> right -2: outside;
    # x=4 -> right 2 (3.0): 1; x=5: NaN disparity
    np.testing.assert_allclose(err[0, [0, 1, 2, 4]], [1.0, 0.0, 0.0, 1.0])
    assert np.isnan(err[0, 3]) and np.isnan(err[0, 5])
    half = lr_error(np.array([[0.0, 0.5]], np.float32), np.array([[0.0, 2.0]], np.float32))
    assert half[0, 1] == pytest.approx(abs(0.5 - 1.0))  # right x 0.5: halfway between 0 and 2
    np.testing.assert_array_equal(
        outside_right(d_left, margin_px=OUTSIDE_MARGIN_PX)[0], [False, False, False, True, False, False]
    )
    # the demo's rule has no margin: a match 0.25 px left of the image is outside (sgbm's 0.5 px keeps it)
    assert outside_right(np.array([[0.25]], np.float32), margin_px=OUTSIDE_MARGIN_PX)[0, 0]


def test_left_right_check_keeps_exactly_the_consistent_pixels(
    vits_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lr-check variant's check is on: with the default 1-px tolerance the backend keeps exactly the
    pixels whose left disparity and the right image's disparity at its match (read along the row, here
    with np.interp) agree within 1 px, with confidence exp(-error / 1 px), and drops the others."""
    import torch

    torch.set_num_threads(2)
    cfg = FoundationStereoConfig(
        weights=vits_weights, valid_iters=2, max_disp=LR_MAX_DISP, remove_invisible=False
    )
    assert cfg.lr_check and cfg.consistency_px == 1.0  # the defaults
    backend = FoundationStereoBackend(cfg)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    finish = backend._finish

    def recording(d_left: np.ndarray, d_right: np.ndarray | None, update: np.ndarray) -> Any:
        assert d_right is not None
        seen.append((d_left, d_right))
        return finish(d_left, d_right, update)

    monkeypatch.setattr(backend, "_finish", recording)
    scene = square_scene(64, 96)
    out = backend.disparity(scene.left, scene.right)
    ((d_left, d_right),) = seen
    assert not np.array_equal(d_left, d_right)  # the mirrored, swapped pass: the right image's own
    w = d_left.shape[1]
    err = np.full(d_left.shape, np.nan, np.float32)
    for y in range(d_left.shape[0]):
        xr = np.arange(w) - d_left[y]
        inside = (xr >= 0) & (xr <= w - 1)
        err[y, inside] = np.abs(d_left[y, inside] - np.interp(xr[inside], np.arange(w), d_right[y]))
    with np.errstate(invalid="ignore"):
        keep = err <= 1.0
    near = np.abs(err - 1.0) < 1e-4  # float32 rounding of the interpolation may fall either side of 1 px
    kept = np.isfinite(out.disparity_px)
    assert np.array_equal(kept[~near], keep[~near])
    assert 0.2 < kept.mean() < 0.8  # the check both keeps and drops pixels at a sane tolerance
    np.testing.assert_array_equal(out.disparity_px[kept], d_left[kept])
    np.testing.assert_allclose(out.confidence[kept], np.exp(-err[kept]), rtol=0, atol=1e-4)


def test_cuda_oom_retries_pair_by_pair_then_at_a_smaller_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    (tmp_path / "model_best_bp2.pth").write_bytes(b"never loaded")
    (tmp_path / "cfg.yaml").write_text("vit_size: vits\n")
    cfg = FoundationStereoConfig(weights=tmp_path, batch_size=2, detect_swapped=False)
    backend = FoundationStereoBackend(cfg)
    calls: list[tuple[int, float]] = []

    def fake_infer(pairs: list, scale: float) -> list:
        calls.append((len(pairs), scale))
        if len(pairs) > 1 or scale > 0.3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        h, w = pairs[0][0].shape[:2]
        d = np.full((h, w), 2.0, np.float32)
        return [(d, d, np.zeros_like(d))]

    monkeypatch.setattr(backend, "_infer", fake_infer)
    image = np.zeros((32, 48, 3), np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = backend.disparity_many([(image, image), (image, image)])
    assert calls[:4] == [(2, 1.0), (1, 1.0), (1, 0.5), (1, 0.25)]
    assert backend.scales_used == [0.25, 0.25]
    assert all(o.disparity_px.shape == (32, 48) for o in out)
    reduced = [w for w in caught if issubclass(w.category, ScaleReducedWarning)]
    assert len(reduced) == 4 and "retrying at 0.25" in str(reduced[1].message)

    def always_oom(pairs: list, scale: float) -> list:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(backend, "_infer", always_oom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(StereoOutOfMemoryError, match="even at scale 0.125"):
            backend.disparity(image, image)


def test_registered_and_pickles_without_the_model(tmp_path: Path) -> None:
    (tmp_path / "model_best_bp2.pth").write_bytes(b"never loaded")
    (tmp_path / "cfg.yaml").write_text("vit_size: vits\n")
    backend = STEREO_BACKENDS.get("foundation-stereo")(FoundationStereoConfig(weights=tmp_path))
    assert isinstance(backend, FoundationStereoBackend) and backend.args.vit_size == "vits"
    backend._model = object()  # type: ignore[assignment]
    clone = pickle.loads(pickle.dumps(backend))
    assert clone._model is None and clone.release == backend.release


def test_importing_the_backend_does_not_import_torch() -> None:
    code = "import sys, labeler.stereo.foundation_stereo; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


@pytest.mark.gpu
def test_cuda_mixed_precision_close_to_float32(
    vits_weights: Path, pair: tuple[np.ndarray, np.ndarray]
) -> None:
    cfg = FoundationStereoConfig(weights=vits_weights, valid_iters=4, lr_check=False, remove_invisible=False)
    fp32 = FoundationStereoBackend(cfg.model_copy(update={"mixed_precision": False}), device="cuda")
    bf16 = FoundationStereoBackend(cfg, device="cuda")
    bf16._model = fp32.model
    a, b = fp32.disparity(*pair).disparity_px, bf16.disparity(*pair).disparity_px
    assert np.isfinite(b).all()
    assert np.median(np.abs(a - b)) < 2.0  # random-like weights amplify rounding; a smoke bound


def test_cost_lookup_runs_with_cudnn_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: cuDNN's grid_sample fails from 65 536 rows (8 pairs + the left-right pass at 480x640 are
    307 200), so the lookup turns cuDNN off, as the release does (its PR #202)."""
    import torch
    import torch.nn.functional as F

    from labeler.models.foundation_stereo import volume

    seen = []
    real = F.grid_sample

    def spy(*a, **k):  # type: ignore[no-untyped-def]
        seen.append(torch.backends.cudnn.enabled)
        return real(*a, **k)

    monkeypatch.setattr(volume.F, "grid_sample", spy)
    out = volume._sample_rows(torch.arange(8.0).reshape(1, 1, 1, 8), torch.tensor([[[[2.5]]]]))
    assert seen == [False] and torch.backends.cudnn.enabled is True
    assert out.item() == pytest.approx(2.5)
