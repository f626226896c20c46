"""Video and timestamped sequences: one decode pass, frames equal a bare sequential decode, no counting pass,
truncation as one line per frame, a timestamped folder as a sequence, the still-frame test."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from labeler.rig import captures
from labeler.rig.captures import discover_pairs, load_pairs, probe_video, read_video_frames, timestamp_of


def _video(path: Path, n: int = 24, size: tuple[int, int] = (128, 48), fourcc: str = "MJPG") -> Path:
    import cv2

    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    for _ in range(n):
        w.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    w.release()
    return path


def _bare(path: Path) -> list[np.ndarray]:
    import cv2

    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("mp4v", ".mp4")])
@pytest.mark.parametrize("indices", [range(0, 24), range(0, 24, 5), range(7, 24, 4)])
def test_frames_equal_a_bare_sequential_decode(tmp_path, fourcc, suffix, indices):
    path = _video(tmp_path / f"v{suffix}", fourcc=fourcc)
    bare = _bare(path)
    got = dict(read_video_frames(path, indices))
    assert sorted(got) == list(indices)
    for i, frame in got.items():
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (48, 128, 3)
        assert np.array_equal(frame, bare[i]), i


class _Counting:
    """cv2.VideoCapture that counts opens and grabs."""

    opens = grabs = 0

    def __init__(self, real):
        self.real = real

    def __call__(self, *a):
        _Counting.opens += 1
        cap = self.real(*a)
        outer = self

        class Cap:
            def __getattr__(self, name):
                return getattr(cap, name)

            def grab(self):
                type(outer).grabs += 1
                return cap.grab()

        return Cap()


def test_discovery_reads_no_frame_and_labelling_one_pass(tmp_path, monkeypatch):
    import cv2

    path = _video(tmp_path / "walk.avi")
    counting = _Counting(cv2.VideoCapture)
    monkeypatch.setattr(cv2, "VideoCapture", counting)
    srcs = discover_pairs(path, stride=3)
    assert _Counting.grabs == 0 and _Counting.opens == 1  # the container's count, no counting pass
    assert [s.frame_index for s in srcs] == list(range(0, 24, 3))
    assert {s.sequence for s in srcs} == {"walk"}
    assert [s.timestamp_s for s in srcs] == pytest.approx([i / 10 for i in range(0, 24, 3)])
    loaded = list(load_pairs(srcs))
    assert _Counting.opens == 2 and _Counting.grabs == 22  # one capture, frames 0..21 grabbed once each
    assert all(isinstance(p, tuple) and p[0].shape == (48, 64, 3) for _, p in loaded)


def test_a_truncated_video_fails_the_missing_frames_in_one_line(tmp_path):
    path = _video(tmp_path / "v.avi", n=30)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    assert probe_video(cut).n_frames == 30  # the header still says 30
    out = dict(read_video_frames(cut, range(0, 30, 5)))
    ok = [i for i, f in out.items() if isinstance(f, np.ndarray)]
    bad = {i: str(f) for i, f in out.items() if not isinstance(f, np.ndarray)}
    assert ok and bad and max(ok) < min(bad)
    for i, line in bad.items():
        assert (
            line.startswith(f"{cut}: frame {i} cannot be decoded: the video ends after frame")
            and "\n" not in line
        )


def test_a_timestamped_folder_is_a_sequence_and_a_gap_is_one_warning(tmp_path, caplog):
    from labeler.io import write_png

    stamps = [1700000000.0 + 0.1 * k for k in (0, 1, 2, 3, 5, 6)]  # frame 4 is missing
    for t in reversed(stamps):
        write_png(tmp_path / f"{t:.3f}.png", np.zeros((8, 16, 3), np.uint8))
    write_png(tmp_path.parent / "lone.png", np.zeros((8, 16, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        srcs = discover_pairs(tmp_path)
    assert [s.frame_index for s in srcs] == [0, 1, 2, 3, 5, 6]
    assert [s.timestamp_s for s in srcs] == pytest.approx(stamps)
    assert {s.sequence for s in srcs} == {captures.safe_id(tmp_path.name)}
    gaps = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert len(gaps) == 1 and "1 frame(s) missing before 1700000000.500.png" in gaps[0]
    assert timestamp_of("scene_000") is None and timestamp_of("1700000000123") == pytest.approx(
        1700000000.123
    )


def test_still_filter_skips_noise_and_keeps_motion():
    from labeler.rig.still import StillFilter

    rng = np.random.default_rng(1)
    base = rng.integers(40, 200, (120, 160, 3)).astype(np.float32)
    noisy = lambda img: np.clip(img + rng.normal(0, 1.0, img.shape), 0, 255).astype(np.uint8)  # noqa: E731
    moved = base.copy()
    moved[40:70, 60:90] = np.roll(base[40:70, 60:90], 6, axis=1)  # a small object moves 6 px
    still = StillFilter(3.0)
    assert still.duplicate_of("a", noisy(base)) is None
    assert still.duplicate_of("b", noisy(base)) == "a"  # only the sensor noise differs
    assert still.duplicate_of("c", noisy(moved)) is None  # a small part of the view moved
    assert still.duplicate_of("d", noisy(moved)) == "c"
    with pytest.raises(ValueError, match="within 0..255"):
        StillFilter(300)
