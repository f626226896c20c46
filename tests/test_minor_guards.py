"""Issue 25 item 17: weights that load but hold NaN fail before the first sample (not every sample with
exit 0); libpng chatter stays off stderr; the dataset version does not depend on the --out folder's name;
`diff` says when two datasets were made with different calibrations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labeler.cli.main import app


def _one_error(res) -> str:
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and res.exit_code == 1, res.output
    return errors[0]


def test_non_finite_tensors_finds_nan_and_inf_in_nested_state():
    import torch

    from labeler.models.checkpoints import non_finite_tensors

    state = {
        "model": {"a.weight": torch.ones(3), "b.bias": torch.tensor([0.0, float("nan")])},
        "ema": [torch.tensor([float("inf")]), torch.zeros(2, dtype=torch.int64)],
        "step": 3,
    }
    assert non_finite_tensors(state) == ["model.b.bias", "ema.0"]
    assert non_finite_tensors({"w": torch.ones(2)}) == []


def _nan_copy(src: Path, dst: Path, key_part: str) -> str:
    import torch

    ck = torch.load(src, map_location="cpu", weights_only=False)
    state = ck["model"]
    name = next(k for k, v in state.items() if key_part in k and v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save(ck, dst)
    return name


def test_a_heads_run_with_nan_weights_fails_before_the_first_image(tmp_path_factory, tmp_path):
    from tests.train.conftest import make_tiny_dataset, make_tiny_run

    base = tmp_path_factory.getbasetemp()
    run = tmp_path / "run"
    shutil.copytree(make_tiny_run(base), run)
    name = _nan_copy(run / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt", "weight")
    images = make_tiny_dataset(base).parent / "pairs" / "left"
    res = CliRunner().invoke(app, ["predict", str(images), "--run", str(run), "--out", str(tmp_path / "p")])
    line = _one_error(res)
    assert "hold NaN or inf" in line and name in line and not (tmp_path / "p" / "predictions.json").exists()


def test_sam2_weights_with_nan_fail_the_run_before_any_sample(tmp_path):
    from labeler.testing.sam2_tiny import write_tiny_sam2
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    config, ckpt = write_tiny_sam2(tmp_path / "sam2")
    _nan_copy(ckpt, ckpt, "")
    write_plane_pairs(tmp_path / "rect", 2)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    args = ["pseudo-label", tmp_path / "rect", "--calib", calib, "--out", tmp_path / "ds", "--scheduler"]
    args += ["sync", "--masks", "sam2", "--sam2-config", config, "--sam2-checkpoint", ckpt]
    line = _one_error(CliRunner().invoke(app, [str(a) for a in args]))
    assert f"{ckpt}: " in line and "hold NaN or inf" in line and "--sam2-checkpoint" in line
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_codec_chatter_stays_off_stderr(tmp_path):
    """A damaged PNG (libpng) and a damaged MJPEG video (FFmpeg) under `rectify`: each is a recorded
    failure or a short video; stderr holds no library chatter."""
    import cv2
    import numpy as np

    from tests.conftest import identity_calibration_yaml, write_plane_pairs
    from tests.test_image_limits import png_bomb

    write_plane_pairs(tmp_path / "pairs", 3, 64, 48, seed=1)
    (
        tmp_path / "pairs" / "left" / sorted(p.name for p in (tmp_path / "pairs" / "left").iterdir())[0]
    ).write_bytes(
        png_bomb(64, 48, 400)  # a PNG header and a cut zlib stream: libpng complains when it decodes
    )
    rng = np.random.default_rng(0)
    video = tmp_path / "video" / "walk.avi"
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 48))
    for _ in range(20):
        writer.write(rng.integers(0, 255, (48, 128, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(video.read_bytes())
    for k in range(2000, len(data) - 100, 997):
        data[k] ^= 0x5A
    video.write_bytes(bytes(data))
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 64, 48)
    cli = [sys.executable, "-m", "labeler.cli", "rectify"]
    for src, out in ((tmp_path / "pairs", tmp_path / "r1"), (video, tmp_path / "r2")):
        res = subprocess.run(
            [*cli, str(src), "--calib", str(calib), "--out", str(out), "--layout", "auto"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        assert "libpng" not in res.stderr and "[mjpeg" not in res.stderr, res.stderr
        assert (out / "pairs.json").is_file()


def test_a_failed_atomic_write_names_the_destination_not_the_temporary_file(tmp_path):
    import errno

    from labeler.errors import disk_error
    from labeler.io import atomic_path

    dest = tmp_path / "out.json"
    with pytest.raises(OSError, match="No space left") as info, atomic_path(dest) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert info.value.filename == str(dest)
    line = str(disk_error(info.value, "a file"))
    assert line.startswith(f"{dest}: No space left on device") and ".tmp" not in line
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_the_dataset_version_does_not_depend_on_the_out_folders_name(tmp_path, monkeypatch):
    """`labeler run` keeps its rectified pairs in OUT/rectified: their paths are recorded relative to the
    dataset, so identical labels in two folders (or after a move) have one version."""
    from labeler import open_dataset
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(tmp_path / "raw", 2, 64, 48, seed=2)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 64, 48)
    versions = []
    for name in ("a", "a-much-longer-name"):
        out = tmp_path / name
        args = [
            "run",
            tmp_path / "raw",
            "--calib",
            calib,
            "--out",
            out,
            "--scheduler",
            "sync",
            "--no-previews",
        ]
        res = CliRunner().invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        ds = open_dataset(out)
        versions.append(ds.version)
        rows = ds.samples.to_table().to_pylist()
        assert {r["left_path"] for r in rows} == {
            "rectified/left/pair_000.png",
            "rectified/left/pair_001.png",
        }
    assert versions[0] == versions[1]
    moved = tmp_path / "moved"
    (tmp_path / "a").rename(moved)
    monkeypatch.chdir(tmp_path / "raw")  # repair finds the sources against the dataset, not the cwd
    res = CliRunner().invoke(app, ["validate", str(moved)])
    assert res.exit_code == 0, res.output


def test_diff_says_when_the_calibrations_differ(tmp_path):
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(tmp_path / "rect", 2, 64, 48, seed=2)
    for name, baseline in (("a", 0.1), ("b", 0.12)):
        calib = identity_calibration_yaml(tmp_path / f"{name}.yaml", 64, 48, baseline_m=baseline)
        run_pseudo_label(
            PseudoLabelConfig(
                inputs=tmp_path / "rect", calib=calib, out=tmp_path / name, scheduler="sync", progress=False
            )
        )
    res = CliRunner().invoke(
        app, ["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    assert "different calibrations: A " in res.output and "baseline 100.00 mm" in res.output
    assert "baseline 120.00 mm" in res.output
    report = json.loads((tmp_path / "d" / "diff.json").read_text())
    assert report["made_differently"][0].startswith("different calibrations")
    assert report["made_differently"][1] == "different depth settings: baseline_m 0.1 → 0.12"
    assert "Made differently:" in (tmp_path / "d" / "index.html").read_text()
    res = CliRunner().invoke(
        app, ["diff", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "e")]
    )
    assert "different" not in res.output
    assert json.loads((tmp_path / "e" / "diff.json").read_text())["made_differently"] == []
