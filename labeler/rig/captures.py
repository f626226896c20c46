"""Find stereo pairs in a capture folder (any supported layout) and load them as RGB uint8."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    """List the stereo pairs under `root` in row order (`sequence_order`: a sequence's frames together, in
    time order; lone captures by pair id).

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
        sources = as_sequence(root, _pairs_from_folders(root, orphans))
    elif lay is CaptureLayout.suffix:
        sources = as_sequence(root, _pairs_from_suffixes(root, orphans))
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
        sources = sources if root.is_file() else as_sequence(root, sources)
    if not sources and not orphans:
        raise InputError(
            root, f"no stereo captures found (layout {lay.value})", "check the folder or pass --layout"
        )
    ids = [s.pair_id for s in sources]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[0]
        raise InputError(root, f"two captures map to the pair id {dup!r}", "rename one of them")
    return sorted(sources, key=sequence_order)


def sequence_order(src: StereoPairSource) -> tuple[str, int, str]:
    """Sources in row order: a sequence's frames together and in time order, lone captures by id."""
    frame = src.frame_index if src.sequence is not None and src.frame_index is not None else -1
    return (src.sequence or "", frame, src.pair_id)


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


@dataclass(frozen=True)
class VideoProbe:
    """What a video's header says, without decoding it."""

    n_frames: int  # from the container; counted by one grab pass only when the container has no count
    fps: float | None


def probe_video(video: str | Path) -> VideoProbe:
    """The frame count and rate from the container (cheap). A container that records no count (some
    streams) is counted by grabbing, the one case that costs a pass; a count the file cannot honour (a
    truncated video) shows up as frames that fail when the decode pass reaches the real end."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise InputError(video, "not a readable video", "re-encode it (e.g. MJPG .avi or H.264 .mp4)")
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    if n <= 0:
        log.info("%s: the container records no frame count; counting frames", video)
        n = 0
        while cap.grab():
            n += 1
    cap.release()
    return VideoProbe(n, fps if fps > 0 and np.isfinite(fps) else None)


def read_video_frames(
    video: str | Path, indices: Sequence[int]
) -> Iterator[tuple[int, np.ndarray | InputError]]:
    """Decode the frames `indices` (ascending) of a video in one sequential pass: every frame from the first
    wanted one on is grabbed (demuxed and decoded), only the wanted ones are converted to RGB. One seek to
    the first wanted frame when it is not the start (a chunk of a long video), checked against the
    decoder's position. Yields (index, (H, W, 3) uint8 RGB) or (index, the one-line error) for a frame the
    video does not hold (truncated, or a count the container got wrong)."""
    import cv2

    want = sorted(set(indices))
    if not want:
        return
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            err = InputError(video, "not a readable video", "re-encode it (e.g. MJPG .avi or H.264 .mp4)")
            for i in want:
                yield i, err
            return
        pos = 0
        if want[0] > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, want[0])
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if pos != want[0]:  # a container that cannot seek exactly: decode from the start instead
                cap.release()
                cap = cv2.VideoCapture(str(video))
                pos = 0
        k = 0
        while k < len(want):
            if not cap.grab():
                for i in want[k:]:
                    yield (
                        i,
                        InputError(
                            video,
                            f"frame {i} cannot be decoded: the video ends after frame {pos - 1} (truncated?)",
                            "re-encode or re-copy the video",
                        ),
                    )
                return
            if pos == want[k]:
                ok, frame = cap.retrieve()
                yield (
                    pos,
                    (
                        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                        if ok
                        else InputError(video, f"frame {pos} cannot be decoded", "re-encode the video")
                    ),
                )
                k += 1
            pos += 1
    finally:
        cap.release()


def _pairs_from_video(video: Path, stride: int) -> list[StereoPairSource]:
    probe = probe_video(video)
    seq = safe_id(video.stem)
    return [
        StereoPairSource(
            pair_id=safe_id(f"{video.stem}_f{i:06d}"),
            layout=CaptureLayout.video,
            left_path=str(video),
            frame_index=i,
            sequence=seq,
            timestamp_s=i / probe.fps if probe.fps else None,
        )
        for i in range(0, probe.n_frames, max(1, stride))
    ]


# A timestamped frame: any name ending in a Unix time with a fraction (1700000000.125), or in a whole
# number of 10 (s), 13 (ms), 16 (us) or 19 (ns) digits. A frame counter (frame_0001) is not a time.
_STAMP_RE = re.compile(
    r"(?P<stamp>\d{10}(?:\.\d+)?|\d{13}|\d{16}|\d{19})(?:_(?:left|right))?$", re.IGNORECASE
)
_STAMP_SCALE = {10: 1.0, 13: 1e-3, 16: 1e-6, 19: 1e-9}
GAP_FACTOR = 1.5  # a step longer than this many median steps: a frame is missing


def timestamp_of(stem: str) -> float | None:
    """The capture time (s) a frame's name records, or None."""
    m = _STAMP_RE.search(stem)
    if m is None:
        return None
    text = m["stamp"]
    return float(text) if "." in text else int(text) * _STAMP_SCALE[len(text)]


def as_sequence(root: Path, sources: list[StereoPairSource]) -> list[StereoPairSource]:
    """A folder whose every capture is named by its timestamp is one sequence (named after the folder),
    its frames numbered in time order. A step longer than GAP_FACTOR median steps is a missing frame:
    one warning line names it, and the frame numbers skip the gap so a tracker sees it."""
    stamps = [timestamp_of(Path(s.left_path).stem) for s in sources]
    if len(sources) < 2 or any(t is None for t in stamps):
        return sources
    order = sorted(range(len(sources)), key=lambda k: stamps[k] or 0.0)
    times = [stamps[k] or 0.0 for k in order]
    steps = np.diff(times)
    step = float(np.median(steps)) if len(steps) else 0.0
    seq = safe_id(root.resolve().name)
    out, frame = [], 0
    for n, k in enumerate(order):
        if n and step > 0 and steps[n - 1] > GAP_FACTOR * step:
            missing = round(steps[n - 1] / step) - 1
            log.warning(
                "%s: %d frame(s) missing before %s (%.3f s after the previous frame, %.3f s usual); "
                "tracks may break there: re-copy the capture if the frames exist",
                root,
                missing,
                Path(sources[k].left_path).name,
                steps[n - 1],
                step,
            )
            frame += missing
        out.append(
            sources[k].model_copy(update={"sequence": seq, "frame_index": frame, "timestamp_s": times[n]})
        )
        frame += 1
    return out


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
    _check_size(left, expected_size, src.left_path, calib_path)
    return left, right


def load_pairs(
    sources: Sequence[StereoPairSource],
    *,
    expected_size: tuple[int, int] | None = None,
    calib_path: str | None = None,
) -> Iterator[tuple[StereoPairSource, tuple[np.ndarray, np.ndarray] | InputError]]:
    """Load pairs in the order given; a run of frames of one video is decoded in one sequential pass
    (`read_video_frames`), never a seek per frame. Yields each source with its pair or its one-line error."""
    k = 0
    while k < len(sources):
        src = sources[k]
        if src.layout is not CaptureLayout.video:
            try:
                yield src, load_pair(src, expected_size=expected_size, calib_path=calib_path)
            except InputError as err:
                yield src, err
            k += 1
            continue
        run = [src]
        while k + len(run) < len(sources) and sources[k + len(run)].left_path == src.left_path:
            run.append(sources[k + len(run)])
        k += len(run)
        by_frame = {s.frame_index or 0: s for s in run}
        for i, frame in read_video_frames(src.left_path, sorted(by_frame)):
            s = by_frame[i]
            if isinstance(frame, InputError):
                yield s, frame
                continue
            try:
                left, right = split_side_by_side(frame, s.left_path)
                _check_size(left, expected_size, s.left_path, calib_path)
            except InputError as err:
                yield s, err
                continue
            yield s, (left, right)


def _check_size(
    left: np.ndarray, expected_size: tuple[int, int] | None, path: str, calib_path: str | None
) -> None:
    if expected_size is not None and (left.shape[1], left.shape[0]) != tuple(expected_size):
        w, h = expected_size
        raise InputError(
            path,
            f"frame size {left.shape[1]}x{left.shape[0]} per eye does not match "
            f"the calibration's {w}x{h} ({calib_path})",
            "use the calibration made for this rig and resolution, or re-calibrate",
        )
