"""Find stereo pairs in a capture folder (any supported layout) and load them as RGB uint8."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from data_schema.captures import CaptureLayout, StereoPairSource
from labeler.errors import InputError
from labeler.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_rgb

_SUFFIX_RE = re.compile(r"^(?P<stem>.+)_(?P<side>left|right)$", re.IGNORECASE)


log = logging.getLogger(__name__)


def safe_id(text: str) -> str:
    """A filename-safe pair id; letters and digits of any script are kept (フレーム_01 stays itself)."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "pair"


def _images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted; an entry named like an image that cannot be read as a file (a
    folder, a broken link, a symlink loop) is named in a warning rather than skipped without a word."""
    found = []
    for p in folder.iterdir():
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.is_file():
            found.append(p)
        else:
            log.warning("%s: skipped, not a readable file (a folder, a broken link or a link loop)", p)
    return sorted(found)


def detect_layout(root: Path) -> CaptureLayout:
    """Guess the capture layout of a file or folder."""
    if root.is_file():
        if root.suffix.lower() in VIDEO_SUFFIXES:
            return CaptureLayout.video
        return CaptureLayout.side_by_side
    if (root / "left").is_dir() and (root / "right").is_dir():
        return CaptureLayout.pairs
    files = [p for p in root.iterdir() if p.is_file()]
    if any(_SUFFIX_RE.match(p.stem) and p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        return CaptureLayout.suffix
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files) and any(
        p.suffix.lower() in VIDEO_SUFFIXES for p in files
    ):
        return CaptureLayout.video
    return CaptureLayout.side_by_side


def discover_pairs(
    root: str | Path,
    *,
    layout: CaptureLayout | str = "auto",
    stride: int = 10,
    orphans: list[tuple[StereoPairSource, str]] | None = None,
) -> list[StereoPairSource]:
    """List the stereo pairs under `root`, sorted by pair id.

    Args:
        root: a folder (side-by-side frames, `left/`+`right/`, `*_left`/`*_right` files, or videos)
            or a single video / side-by-side image file.
        layout: "auto" or a CaptureLayout value.
        stride: for video, keep every `stride`-th frame.
        orphans: if given, a frame whose partner is missing is appended here (its source and the one-line
            problem) instead of stopping the discovery, so a run records it as that capture's failure.

    Raises:
        InputError: the folder does not exist, holds no captures, or (without `orphans`) a pair is
            incomplete.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "no such file or folder", "check the capture path")
    lay = detect_layout(root) if layout == "auto" else CaptureLayout(layout)
    if lay is CaptureLayout.pairs:
        sources = _pairs_from_folders(root, orphans)
    elif lay is CaptureLayout.suffix:
        sources = _pairs_from_suffixes(root, orphans)
    elif lay is CaptureLayout.video:
        videos = (
            [root]
            if root.is_file()
            else sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        )
        sources = [s for v in videos for s in _pairs_from_video(v, stride)]
    else:
        frames = [root] if root.is_file() else _images(root)
        sources = [StereoPairSource(pair_id=safe_id(p.stem), layout=lay, left_path=str(p)) for p in frames]
    if not sources and not orphans:
        raise InputError(
            root, f"no stereo captures found (layout {lay.value})", "check the folder or pass --layout"
        )
    ids = [s.pair_id for s in sources]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[0]
        raise InputError(root, f"two captures map to the pair id {dup!r}", "rename one of them")
    return sorted(sources, key=lambda s: s.pair_id)


def _orphan(
    orphans: list[tuple[StereoPairSource, str]] | None, src: StereoPairSource, err: InputError
) -> None:
    """A frame seen by one eye only is not a pair: say so (raise, or record it for the caller)."""
    if orphans is None:
        raise err
    orphans.append((src, str(err)))


def _pairs_from_folders(
    root: Path, orphans: list[tuple[StereoPairSource, str]] | None = None
) -> list[StereoPairSource]:
    lefts = {p.name: p for p in _images(root / "left")}
    rights = {p.name: p for p in _images(root / "right")}
    for name in sorted(set(lefts) ^ set(rights)):
        missing = "right" if name in lefts else "left"
        err = InputError(
            root / missing / name,
            f"missing: {name} exists only on the other side",
            "capture both eyes or remove the orphan frame",
        )
        src = StereoPairSource(
            pair_id=safe_id(Path(name).stem),
            layout=CaptureLayout.pairs,
            left_path=str(root / "left" / name),
            right_path=str(root / "right" / name),
        )
        _orphan(orphans, src, err)
    both = sorted(set(lefts) & set(rights))
    return [
        StereoPairSource(
            pair_id=safe_id(Path(n).stem),
            layout=CaptureLayout.pairs,
            left_path=str(lefts[n]),
            right_path=str(rights[n]),
        )
        for n in both
    ]


def _pairs_from_suffixes(
    root: Path, orphans: list[tuple[StereoPairSource, str]] | None = None
) -> list[StereoPairSource]:
    sides: dict[str, dict[str, Path]] = {}
    for p in _images(root):
        m = _SUFFIX_RE.match(p.stem)
        if m:
            sides.setdefault(m["stem"], {})[m["side"].lower()] = p
    out = []
    for stem, pair in sorted(sides.items()):
        if set(pair) != {"left", "right"}:
            have = next(iter(pair.values()))
            err = InputError(have, "has no matching _left/_right partner", "capture both eyes or remove it")
            src = StereoPairSource(
                pair_id=safe_id(stem), layout=CaptureLayout.suffix, left_path=str(have), right_path=str(have)
            )
            _orphan(orphans, src, err)
            continue
        out.append(
            StereoPairSource(
                pair_id=safe_id(stem),
                layout=CaptureLayout.suffix,
                left_path=str(pair["left"]),
                right_path=str(pair["right"]),
            )
        )
    return out


def _pairs_from_video(video: Path, stride: int) -> list[StereoPairSource]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise InputError(video, "not a readable video", "re-encode it (e.g. MJPG .avi or H.264 .mp4)")
    n = 0
    while cap.grab():  # count by decoding: CAP_PROP_FRAME_COUNT is unreliable for many containers
        n += 1
    cap.release()
    return [
        StereoPairSource(
            pair_id=safe_id(f"{video.stem}_f{i:06d}"),
            layout=CaptureLayout.video,
            left_path=str(video),
            frame_index=i,
        )
        for i in range(0, n, max(1, stride))
    ]


def split_side_by_side(frame: np.ndarray, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Split an Arducam 2W x H frame into its left and right halves."""
    w = frame.shape[1]
    if w % 2:
        raise InputError(
            path,
            f"side-by-side frame has odd width {w}; expected 2W x H with equal halves",
            "crop one column or pass --layout pairs if it is not side-by-side",
        )
    return np.ascontiguousarray(frame[:, : w // 2]), np.ascontiguousarray(frame[:, w // 2 :])


def _video_frame(path: str, index: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(path)
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise InputError(path, f"frame {index} cannot be decoded", "re-encode the video")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def load_pair(
    src: StereoPairSource, *, expected_size: tuple[int, int] | None = None, calib_path: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a pair as two (H, W, 3) uint8 RGB images.

    Args:
        src: the pair's source record.
        expected_size: (width, height) of one eye the calibration was made for; checked when given.
        calib_path: named in the size-mismatch error.
    """
    if src.layout is CaptureLayout.video:
        left, right = split_side_by_side(_video_frame(src.left_path, src.frame_index or 0), src.left_path)
    elif src.right_path is None:
        left, right = split_side_by_side(read_rgb(src.left_path), src.left_path)
    else:
        left, right = read_rgb(src.left_path), read_rgb(src.right_path)
        if left.shape != right.shape:
            raise InputError(
                src.right_path,
                f"size {right.shape[1]}x{right.shape[0]} differs from the left "
                f"image's {left.shape[1]}x{left.shape[0]}",
                "pair images from one capture",
            )
    if expected_size is not None and (left.shape[1], left.shape[0]) != tuple(expected_size):
        w, h = expected_size
        raise InputError(
            src.left_path,
            f"frame size {left.shape[1]}x{left.shape[0]} per eye does not match "
            f"the calibration's {w}x{h} ({calib_path})",
            "use the calibration made for this rig and resolution, or re-calibrate",
        )
    return left, right
