"""Issue 25 item 11: an image is checked against a pixel limit from its header, before decoding. A 778-byte
PNG that claims 60000x60000 px fails its own sample under `run`, and is one line under `rectify` and
`predict`."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from labeler.errors import InputError
from labeler.io import MAX_IMAGE_PIXELS, header_size, read_rgb


def png_bomb(width: int = 60000, height: int = 60000, size: int = 778) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, a short IDAT: `size` bytes in all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    tail = chunk(b"IEND", b"")
    idat = zlib.compress(b"\0" * 100000, 9)
    filler = size - len(head) - len(tail) - 12
    return head + chunk(b"IDAT", (idat * (filler // len(idat) + 1))[:filler]) + tail


@pytest.mark.parametrize(
    ("ext", "params"),
    [
        (".png", []),
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: the VP8L header
    ],
)
def test_header_size_reads_the_size_without_decoding(ext, params):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params)
    assert ok and header_size(buf.tobytes()) == (53, 37)


def test_a_small_file_claiming_a_huge_image_is_refused_before_decoding(tmp_path):
    bomb = png_bomb()
    assert len(bomb) == 778 and header_size(bomb) == (60000, 60000)
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(InputError, match=r"bomb.png: its header says 60000x60000 px, over the limit"):
        read_rgb(tmp_path / "bomb.png")
    # at the limit's edge: a claim just over it is refused, a real image under it is read
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    (tmp_path / "edge.png").write_bytes(png_bomb(side, side))
    with pytest.raises(InputError, match="over the limit"):
        read_rgb(tmp_path / "edge.png")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((5, 7, 3), np.uint8))
    assert read_rgb(tmp_path / "ok.png").shape == (5, 7, 3)


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> tuple[Path, Path]:
    """Four pairs (left/ + right/) whose pair 1 left image is the bomb, and an identity calibration."""
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = tmp_path_factory.mktemp("bomb")
    write_plane_pairs(root / "pairs", 4, 96, 64, seed=3)
    lefts = sorted((root / "pairs" / "left").glob("*.png"))
    lefts[1].write_bytes(png_bomb())
    return root / "pairs", identity_calibration_yaml(root / "calib.yaml", 96, 64)


def test_run_fails_only_the_bombs_sample(captures, tmp_path):
    from labeler import open_dataset
    from labeler.cli.main import app

    pairs, calib = captures
    out = tmp_path / "ds"
    args = ["run", str(pairs), "--calib", str(calib), "--out", str(out), "--scheduler", "sync"]
    res = CliRunner().invoke(app, [*args, "--samples-per-shard", "4", "--no-previews"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    ds = open_dataset(out)
    assert ds.manifest.counts.ok == 3 and ds.manifest.counts.failed == 1
    failed = ds.samples.to_table(filter=None).to_pylist()
    errors = [r["error"] for r in failed if r["status"] == "failed"]
    assert len(errors) == 1 and "60000x60000" in errors[0]


def test_rectify_is_one_line(captures, tmp_path):
    from labeler.cli.main import app

    pairs, calib = captures
    res = CliRunner().invoke(
        app, ["rectify", str(pairs), "--calib", str(calib), "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    said = [ln for ln in res.output.splitlines() if "60000x60000" in ln]
    assert len(said) == 1 and "failed pair_001: " in said[0], res.output  # after the progress bar
    assert "3 of 4 pairs rectified" in res.output


def test_predict_is_one_line(captures, tmp_path_factory, tmp_path):
    from labeler.cli.main import app
    from tests.train.conftest import make_tiny_run

    run = make_tiny_run(tmp_path_factory.getbasetemp())
    pairs, _ = captures
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((pairs / "left").glob("*.png"))[:2]:
        shutil.copy(p, images / p.name)
    res = CliRunner().invoke(app, ["predict", str(images), "--run", str(run), "--out", str(tmp_path / "p")])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    said = [ln for ln in res.output.splitlines() if "60000x60000" in ln]
    assert len(said) == 1 and said[0].startswith("failed "), res.output
