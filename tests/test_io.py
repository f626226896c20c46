from __future__ import annotations

import numpy as np
import pytest

from labeler.errors import InputError
from labeler.io import atomic_path, read_rgb, write_png, write_text_atomic


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "a.json"
    write_text_atomic(path, "old")

    def crash() -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        crash()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_png_round_trip(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", img)
    assert np.array_equal(read_rgb(tmp_path / "x.png"), img)


def test_unreadable_image(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=r"x\.png: not a readable image; replace or remove"):
        read_rgb(tmp_path / "x.png")


def test_atomic_writes_respect_the_umask(tmp_path):
    """mkstemp's 0600 would lock other users out of a dataset; files get the umask's mode (issue 12)."""
    import os
    import stat

    from labeler import io

    write_text_atomic(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o666 & ~io._UMASK
