"""Rectify raw stereo captures with a stored calibration, and measure how well it worked.

The remap tables are computed once per run from the calibration's stored rectification (R1, R2, P1, P2),
used as they are: a user may hand-edit the file or bring their own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schema.calibration import StereoCalibration
from data_schema.captures import RectifiedPair, RectifiedSet, StereoPairSource
from labeler.errors import InputError
from labeler.io import folder_lock, safe_name, sha256_bytes, sha256_file, write_png, write_text_atomic

log = logging.getLogger(__name__)
LOCK_NAME = ".rectify.lock"  # one `labeler rectify` per --out at a time (labeler/io.py folder_lock)

VERTICAL_OFFSET_WARN_PX = 1.0
# Remap tables closer than this to the pixel grid are the identity: copy instead of resampling.
IDENTITY_TOL_PX = 1e-3
_BATCH = 256  # `labeler rectify`: pairs per sequential pass (a long video: one seek per this many frames)


@dataclass(frozen=True)
class RectifyMaps:
    """cv2.remap tables (float32 x and y maps, (H, W)) for each eye."""

    left: tuple[np.ndarray, np.ndarray]
    right: tuple[np.ndarray, np.ndarray]
    size: tuple[int, int]  # (width, height)
    identity: bool

    @classmethod
    def from_calibration(cls, calib: StereoCalibration) -> RectifyMaps:
        import cv2

        w, h = calib.image_size
        rect = calib.rectification
        maps = []
        for cam, r, p in ((calib.left, rect.R1, rect.P1), (calib.right, rect.R2, rect.P2)):
            mx, my = cv2.initUndistortRectifyMap(
                np.array(cam.K), np.array(cam.dist), np.array(r), np.array(p), (w, h), cv2.CV_32FC1
            )
            maps.append((mx, my))
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        identity = all(
            np.abs(mx - gx).max() < IDENTITY_TOL_PX and np.abs(my - gy).max() < IDENTITY_TOL_PX
            for mx, my in maps
        )
        return cls(maps[0], maps[1], (w, h), identity)


def rectify_pair(left: np.ndarray, right: np.ndarray, maps: RectifyMaps) -> tuple[np.ndarray, np.ndarray]:
    """Rectify a raw pair ((H, W, 3) uint8 each); an identity rectification returns the input unchanged."""
    import cv2

    if maps.identity:
        return left, right
    out = []
    for img, (mx, my) in ((left, maps.left), (right, maps.right)):
        out.append(cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    return out[0], out[1]


def vertical_offset_px(
    left: np.ndarray, right: np.ndarray, *, max_dy_px: float = 16.0
) -> tuple[float | None, int]:
    """Median |y_left − y_right| of SIFT matches between a rectified pair (0 when perfectly rectified).

    Matches are Lowe-ratio filtered; those with negative disparity or a vertical gap over `max_dy_px`
    are mismatches, not rectification error, and are left out.

    Returns:
        (median vertical offset in px or None when fewer than 8 matches, number of matches used)
    """
    import cv2

    sift = cv2.SIFT.create(nfeatures=4000)
    kl, dl = sift.detectAndCompute(cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), None)
    kr, dr = sift.detectAndCompute(cv2.cvtColor(right, cv2.COLOR_RGB2GRAY), None)
    if dl is None or dr is None or len(kl) < 8 or len(kr) < 8:
        return None, 0
    dy = []
    for pair in cv2.BFMatcher(cv2.NORM_L2).knnMatch(dl, dr, k=2):
        if len(pair) < 2 or pair[0].distance > 0.75 * pair[1].distance:
            continue
        (xl, yl), (xr, yr) = kl[pair[0].queryIdx].pt, kr[pair[0].trainIdx].pt
        if xl - xr >= -1.0 and abs(yl - yr) <= max_dy_px:
            dy.append(abs(yl - yr))
    if len(dy) < 8:
        return None, len(dy)
    return float(np.median(dy)), len(dy)


def rectify_source(src: StereoPairSource, maps: RectifyMaps, calib_path: str, out: Path) -> RectifiedPair:
    """Load, rectify, write and measure one pair; any failure is returned as a failed record."""
    return rectify_sources([src], maps, calib_path, out)[0]


def rectify_sources(
    sources: Sequence[StereoPairSource],
    maps: RectifyMaps,
    calib_path: str,
    out: Path,
    *,
    still_threshold_dn: float | None = None,
) -> list[RectifiedPair]:
    """Load (a video's frames in one sequential pass), rectify, write and measure pairs, in the order given.
    With `still_threshold_dn`, a frame of a sequence that repeats the last kept frame before it
    (labeler/rig/still.py) is recorded as skipped and nothing is written for it. Failures are records."""
    from labeler.errors import LabelerError
    from labeler.rig.captures import load_pairs
    from labeler.rig.still import StillFilter

    records: list[RectifiedPair] = []
    stills: dict[str, StillFilter] = {}
    for src, loaded in load_pairs(sources, expected_size=maps.size, calib_path=calib_path):
        if isinstance(loaded, LabelerError):
            records.append(RectifiedPair(pair_id=src.pair_id, source=src, status="failed", error=str(loaded)))
            continue
        if still_threshold_dn is not None and src.sequence is not None:
            still = stills.setdefault(src.sequence, StillFilter(still_threshold_dn))
            dup = still.duplicate_of(src.pair_id, loaded[0])
            if dup is not None:
                records.append(
                    RectifiedPair(pair_id=src.pair_id, source=src, status="skipped", duplicate_of=dup)
                )
                continue
        records.append(_rectify_loaded(src, *loaded, maps, out))
    return records


def _rectify_loaded(
    src: StereoPairSource, left: np.ndarray, right: np.ndarray, maps: RectifyMaps, out: Path
) -> RectifiedPair:
    from labeler.errors import LabelerError

    try:
        left_r, right_r = rectify_pair(left, right, maps)
        shas = [
            sha256_bytes(write_png(out / side / f"{safe_name(src.pair_id)}.png", img))
            for side, img in (("left", left_r), ("right", right_r))
        ]
        dy, n = vertical_offset_px(left_r, right_r)
    except (LabelerError, OSError, ValueError) as err:
        return RectifiedPair(pair_id=src.pair_id, source=src, status="failed", error=str(err))
    if dy is not None and dy > VERTICAL_OFFSET_WARN_PX:
        log.warning(
            "%s: median vertical offset %.2f px after rectification (> %.1f px); the calibration "
            "may not fit this capture: re-calibrate",
            src.pair_id,
            dy,
            VERTICAL_OFFSET_WARN_PX,
        )
    return RectifiedPair(
        pair_id=src.pair_id,
        source=src,
        status="ok",
        left_path=f"left/{safe_name(src.pair_id)}.png",
        right_path=f"right/{safe_name(src.pair_id)}.png",
        left_sha256=shas[0],
        right_sha256=shas[1],
        vertical_offset_px=dy,
        n_matches=n,
    )


def _still_valid(rec: RectifiedPair, src: StereoPairSource, out: Path) -> bool:
    """A previous run's output can be kept: same source, ok, and both files intact."""
    if rec.status != "ok" or rec.source != src:
        return False
    for rel, sha in ((rec.left_path, rec.left_sha256), (rec.right_path, rec.right_sha256)):
        if rel is None:
            return False
        p = out / rel
        if not p.is_file() or sha256_file(p) != sha:
            return False
    return True


def rectify_folder(
    root: str | Path,
    *,
    calib_path: str | Path,
    out: str | Path,
    layout: str = "auto",
    stride: int = 10,
    progress: bool = True,
) -> RectifiedSet:
    """Rectify every pair under `root` into `out/left`, `out/right`, recorded in `out/pairs.json`.

    A re-run keeps pairs already rectified with the same calibration and redoes only the rest.
    """
    from labeler.rig.calibration import load_calibration

    out = Path(out)
    calib = load_calibration(calib_path)
    calib_sha = sha256_file(calib_path)
    src_root, dst = Path(root).resolve(), out.resolve()
    if dst == src_root or dst.is_relative_to(src_root):
        raise InputError(out, f"is, or lies inside, the captures folder {root}", "pass --out outside it")
    with folder_lock(out, LOCK_NAME, what="this rectified folder"):
        return _rectify_locked(root, calib_path, calib, calib_sha, out, layout, stride, progress)


def _rectify_locked(
    root: str | Path,
    calib_path: str | Path,
    calib: StereoCalibration,
    calib_sha: str,
    out: Path,
    layout: str,
    stride: int,
    progress: bool,
) -> RectifiedSet:
    from tqdm import tqdm

    from labeler.rig.captures import discover_pairs

    previous = load_rectified_set(out) if (out / "pairs.json").is_file() else None
    kept: dict[str, RectifiedPair] = {}
    if previous is not None and previous.calib_sha256 == calib_sha:
        kept = {p.pair_id: p for p in previous.pairs}
    maps = RectifyMaps.from_calibration(calib)
    orphans: list[tuple[StereoPairSource, str]] = []  # a frame without its partner fails alone
    sources = discover_pairs(root, layout=layout, stride=stride, orphans=orphans)
    records = [
        RectifiedPair(pair_id=src.pair_id, source=src, status="failed", error=problem)
        for src, problem in orphans
    ]
    redo = []
    for src in sources:
        old = kept.get(src.pair_id)
        if old is not None and _still_valid(old, src, out):
            records.append(old)
        else:
            redo.append(src)
    # every video in one sequential pass (sources come in sequence order); progress per finished pair
    with tqdm(total=len(redo), desc="rectify", unit="pair", disable=not progress) as bar:
        for k in range(0, len(redo), _BATCH):
            records += rectify_sources(redo[k : k + _BATCH], maps, str(calib_path), out)
            bar.update(len(redo[k : k + _BATCH]))
    result = RectifiedSet(
        calib_path=str(calib_path),
        calib_sha256=calib_sha,
        rig=calib.rig,
        image_size=list(calib.image_size),
        pairs=records,
    )
    write_text_atomic(out / "pairs.json", result.model_dump_json(indent=2))
    return result


def load_rectified_set(folder: str | Path) -> RectifiedSet:
    path = Path(folder) / "pairs.json"
    if not path.is_file():
        raise InputError(
            path,
            "no pairs.json: not a folder written by `labeler rectify`",
            "run `labeler rectify RAW --calib … --out FOLDER` first",
        )
    return RectifiedSet.model_validate_json(path.read_text())
