"""Small file helpers: atomic writes, content hashes, images read/written as RGB uint8."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from pydantic import BaseModel

from labeler.errors import InputError, LabelerError

M = TypeVar("M", bound=BaseModel)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v")


# FFmpeg (OpenCV's video backend) prints every damaged frame's complaint ("[mjpeg @ 0x..] error dc");
# a damaged frame is already a recorded failure, so FFmpeg is quiet unless the user sets the level.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
# What libpng and libjpeg print to the process's stderr about a damaged file: not the user's news.
_CODEC_CHATTER = re.compile(rb"^(libpng (warning|error)|Corrupt JPEG data|Premature end of JPEG|Invalid SOS)")
_quiet_lock = threading.Lock()
_quiet: dict[str, Any] = {"depth": 0, "saved": -1, "file": None}


@contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Hold back what C libraries write to fd 2 for the block, then pass on every line that is not codec
    chatter (_CODEC_CHATTER). Threads nest: the first in redirects, the last out restores and replays, so
    another thread's output is delayed, never lost."""
    with _quiet_lock:
        if _quiet["depth"] == 0:
            try:
                sys.stderr.flush()
                tmp = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(tmp.fileno(), 2)
            except (OSError, ValueError):  # no fd 2 to redirect: nothing to filter
                saved = -1
            _quiet.update(saved=saved, file=tmp if saved >= 0 else None)
        filtering = _quiet["file"] is not None
        _quiet["depth"] += filtering
    if not filtering:
        yield
        return
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                tmp, saved = _quiet["file"], _quiet["saved"]
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                kept = [ln for ln in tmp.read().splitlines(True) if not _CODEC_CHATTER.match(ln)]
                tmp.close()
                _quiet.update(saved=-1, file=None)
                if kept:
                    os.write(2, b"".join(kept))


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set straight back (once, at import: not
    os.umask(mask)  # thread-safe, and a process's umask is set before it starts writing)
    return mask


_UMASK = _read_umask()


def out_folder(path: str | Path) -> Path:
    """Create the folder `path` (and its parents) for a command's output; InputError, one line, when it or
    a folder above it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file, not a folder", "pass a folder to --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise InputError(path, f"{above} is a file, not a folder", "pass a path inside a folder") from None
    return path


def check_out_file(path: str | Path) -> Path:
    """`path` as a file a command may write (nothing is created): InputError, one line, when it is a folder
    or a folder above it is a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder", "pass a file name (a path that is not a folder)")
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(path, f"{above} is a file, not a folder", "pass a path inside a folder")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    InputError (naming `path`, never the temporary file) when `path` is a folder or a folder above it is
    a file."""
    path = check_out_file(path)
    out_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file gets what open() would give it
    try:
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except IsADirectoryError:  # made a folder while the block ran
            raise InputError(path, "is a folder", "pass a file name (a path that is not a folder)") from None
        except OSError as err:  # a full disk, say: the message names `path`, not the temporary file
            if err.filename in (tmp, Path(tmp)):
                err.filename = str(path)
            if err.filename2 in (str(path), path):
                err.filename2 = None
            raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def folder_lock(folder: str | Path, name: str, *, what: str) -> Iterator[None]:
    """Exclusive lock on `folder` (the file `folder/name`, created with the folder) for one writer; the OS
    drops it when the process dies (no stale lock). A second writer gets one line naming the first."""
    import fcntl

    path = out_folder(folder) / name
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise LabelerError(
                f"{folder}: another labeler process is writing {what} ({holder}); wait for it or "
                "use another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# The most pixels an input image may have (one file: a side-by-side frame holds both eyes). Checked from
# the header before decoding, so a small file that claims a huge image fails alone, without the memory.
MAX_IMAGE_PIXELS = 120_000_000
_HEADER_BYTES = 1 << 16  # a JPEG's frame header follows its EXIF / ICC segments; 64 KiB covers usual ones
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or WebP header, without decoding; None when not found."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB; InputError when it cannot be decoded."""
    return read_rgb_hashed(path)[0]


def read_rgb_hashed(path: str | Path) -> tuple[np.ndarray, str]:
    """Read an image once: (H, W, 3) uint8 RGB and the sha256 of the file's bytes."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found", "check the path")
    data = np.fromfile(path, dtype=np.uint8)
    size = header_size(data[:_HEADER_BYTES].tobytes())
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise InputError(
            path,
            f"its header says {size[0]}x{size[1]} px, over the limit of {MAX_IMAGE_PIXELS // 10**6} "
            "megapixels (a damaged or hostile file)",
            "replace or remove the file",
        )
    try:
        with native_stderr_filtered():
            img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:  # OpenCV's own size limit, for the formats header_size does not read
        img = None
    if img is None:
        raise InputError(path, "not a readable image", "replace or remove the file (PNG/JPEG expected)")
    # the hash reads the bytes in place (no copy)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), hashlib.sha256(data.data).hexdigest()


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) RGB or (H, W) grey uint8 image."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | Path, rgb: np.ndarray) -> bytes:
    """Write a PNG atomically; returns the bytes written (for hashing)."""
    data = encode_png(rgb)
    write_bytes_atomic(path, data)
    return data


def _is_json(line: bytes) -> bool:
    import json

    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def drop_partial_line(f: IO[bytes]) -> None:
    """End the file on a newline before the next append: a last line cut short by a kill is truncated; a
    complete JSON line that only lacks its newline (a hand edit, a copy) is kept and given one."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    start = max(0, size - (1 << 20))
    f.seek(start)
    tail = f.read()
    cut = tail.rfind(b"\n")
    if (cut >= 0 or start == 0) and _is_json(tail[cut + 1 :]):
        f.seek(0, os.SEEK_END)
        f.write(b"\n")
        return
    pos = size
    while pos > 0:  # back to the last newline, a block at a time
        step = min(pos, 1 << 16)
        f.seek(pos - step)
        block = f.read(step)
        cut = block.rfind(b"\n")
        if cut >= 0:
            f.truncate(pos - step + cut + 1)
            return
        pos -= step
    f.truncate(0)


def append_jsonl(path: Path, records: Sequence[BaseModel], *, lock: bool = False) -> None:
    """Append one JSON line per record and fsync before returning (once this returns, a crash keeps
    them); O(records), whatever the file's size. A line cut short by a kill is dropped first. `lock`:
    writers of several processes take turns (flock)."""
    if not records:
        return
    text = "".join(r.model_dump_json() + "\n" for r in records).encode()
    with open(path, "a+b") as f:
        if lock:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            drop_partial_line(f)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            if lock:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_jsonl(path: Path, model: type[M], *, what: str, problems: list[str] | None = None) -> list[M]:
    """The records of a JSON-lines file in order. A damaged line is skipped (and named in `problems` as
    "not a `what`"); a last line cut short by a kill (not JSON) is ignored, a complete last line without
    its newline is read; no file reads as no records."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    if not data.endswith(b"\n") and not _is_json(lines[-1]):
        lines = lines[:-1]  # a last line cut short by a kill; a complete one without its newline counts
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(model.model_validate_json(line))
        except ValueError as err:
            if problems is not None:
                problems.append(f"{path}:{n}: not a {what} ({' '.join(str(err).split())[:160]})")
    return out


# ----------------------------------------------------------------- names from input files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 120


def safe_name(name: str) -> str:
    """Names are not paths: the one rule that turns a name from an input file (a sample or pair id, a rig
    name, a class name, a file stem) into a single, safe file name before it touches the file system.

    `safe_name(name)`:
    - keeps letters, digits, `.`, `_` and `-`; any other character (`/`, `\\`, NUL, space...) becomes `_`;
    - a leading `.` becomes `_` (no `..`, no hidden file), an empty name becomes `_`;
    - is at most 120 characters;
    - when it changed anything, ends in `-` and 8 hex digits of the original's sha256, so two different
      names never share a file. A name that already follows the rule is returned unchanged.

    So `../../x` → `_._.._x-<hash>`, `/etc/passwd` → `_etc_passwd-<hash>`: always one component under
    the folder the command writes into.
    """
    out = _UNSAFE.sub("_", name)
    if out.startswith("."):
        out = "_" + out[1:]
    out = out or "_"
    if out == name and len(out) <= MAX_NAME:
        return out
    tag = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{out[: MAX_NAME - 9]}-{tag}"
