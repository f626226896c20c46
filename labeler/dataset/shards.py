"""The only owner of a dataset's files (layout v2, see data_schema/manifest.py): the manifest, the shard
index, the Parquet tables and the Zarr v3 arrays. The reader is `labeler/dataset/reader.py`.

Writers: the client creates or grows the arrays (metadata has one writer) and is the only writer of the
manifest and the shard index; each shard's arrays and table part files are written by exactly one task,
in one region write per array that covers the whole shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from data_schema.manifest import (
    ARRAY_NAMES,
    ArrayDigests,
    ArraySpec,
    StoreLayout,
)
from labeler.errors import InputError

DEFAULT_SAMPLES_PER_SHARD = 32
STORE_NAME = "data.zarr"
JOURNAL_NAME = ".journal"  # array files of shards being rewritten, until the rewrite commits (journal.py)
# lz4 + byte shuffle: 6x zstd-3's write speed at 55 % instead of 39 % of raw, and faster reads
# (benchmarks/bench_codecs.py, RESULTS.md). Arrays made with another codec keep theirs.
COMPRESSOR = "blosc-lz4-5-shuffle"

_DTYPES = {
    "left": "uint8",
    "right": "uint8",
    "disparity_px": "float32",
    "depth_m": "float32",
    "confidence": "float32",
    "instance_ids": "uint16",
}


@dataclass(frozen=True)
class SampleArrays:
    """One sample's arrays, as stored: images (H, W, 3) uint8; maps (H, W) float32 (NaN invalid);
    instance_ids (H, W) uint16 (0 = no object)."""

    left: np.ndarray
    right: np.ndarray
    disparity_px: np.ndarray
    depth_m: np.ndarray
    confidence: np.ndarray
    instance_ids: np.ndarray

    def __post_init__(self) -> None:
        h, w = self.left.shape[:2]
        for name in ARRAY_NAMES:
            a = getattr(self, name)
            want = (h, w, 3) if name in ("left", "right") else (h, w)
            if a.shape != want or a.dtype != np.dtype(_DTYPES[name]):
                raise ValueError(f"{name} must be {want} {_DTYPES[name]}, got {a.shape} {a.dtype}")

    def digests(self) -> ArrayDigests:
        return ArrayDigests(**{name: digest(getattr(self, name)) for name in ARRAY_NAMES})


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()  # the buffer itself: no copy


def _fill(dtype: str) -> float | int:
    return float("nan") if dtype.startswith("float") else 0


# ------------------------------------------------------------------------------------------ arrays


def store_layout(n_samples: int, height: int, width: int, samples_per_shard: int) -> StoreLayout:
    specs = []
    for name in ARRAY_NAMES:
        tail = [height, width, 3] if name in ("left", "right") else [height, width]
        specs.append(
            ArraySpec(
                name=name,
                dtype=_DTYPES[name],
                shape=[n_samples, *tail],
                chunk_shape=[1, *tail],
                shard_shape=[samples_per_shard, *tail],
                fill_value=None if _DTYPES[name].startswith("float") else 0,
                compressor=COMPRESSOR,
            )
        )
    return StoreLayout(samples_per_shard=samples_per_shard, arrays=specs)


def _codecs() -> dict[str, Any]:
    from zarr.codecs import BloscCodec, BloscShuffle

    return {
        "blosc-lz4-5-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),
        "blosc-zstd-3-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),  # <= 0.1
    }


def _compressors() -> tuple[Any, ...]:
    return (_codecs()[COMPRESSOR],)


def _codec_name(arr: Any) -> str:
    """The name of an existing array's compressor (as `store_layout` spells it)."""

    found = [c.to_dict() for c in arr.compressors]
    for name, codec in _codecs().items():
        want = codec.to_dict()
        if len(found) == 1 and {k: v for k, v in found[0]["configuration"].items() if k != "typesize"} == {
            k: v for k, v in want["configuration"].items() if k != "typesize"
        }:
            return name
    return json.dumps(found, sort_keys=True)


def open_store(dataset: str | Path, mode: Literal["r", "r+", "a"] = "r") -> Any:
    """The dataset's Zarr group."""
    import zarr

    return zarr.open_group(Path(dataset) / STORE_NAME, mode=mode, zarr_format=3 if mode == "a" else None)


def prepare_store(dataset: str | Path, layout: StoreLayout) -> StoreLayout:
    """Create the arrays, or grow them to `layout`'s sample count (client side, before any shard write).
    Returns the layout as stored (arrays made earlier keep the compressor they were made with)."""
    root = Path(dataset) / STORE_NAME
    group = open_store(dataset, "a")
    specs = []
    for spec in layout.arrays:
        if spec.name in group:
            arr = group[spec.name]
            if list(arr.shape[1:]) != spec.shape[1:] or list(arr.shards or arr.chunks) != spec.shard_shape:
                raise InputError(
                    root / spec.name,
                    f"stored shape {arr.shape} / shards {arr.shards} do not match this run's "
                    f"{spec.shape} / {spec.shard_shape}",
                    "use a new --out",
                )
            if arr.shape[0] < spec.shape[0]:
                arr.resize(tuple(spec.shape))
            specs.append(spec.model_copy(update={"compressor": _codec_name(arr)}))
            continue
        specs.append(spec)
        _create_array(group, spec, _compressors())
    return layout.model_copy(update={"arrays": specs})


def _create_array(group: Any, spec: ArraySpec, compressors: tuple[Any, ...]) -> None:
    """The one `create_array` call of the store: what the writer makes and what repair compares with."""
    group.create_array(
        spec.name,
        shape=tuple(spec.shape),
        chunks=tuple(spec.chunk_shape),
        shards=tuple(spec.shard_shape),
        dtype=spec.dtype,
        fill_value=_fill(spec.dtype),
        compressors=compressors,
    )


def metadata_files(dataset: str | Path) -> list[Path]:
    """The store's metadata (the group's and each array's zarr.json), as the manifest seals them."""
    root = Path(dataset) / STORE_NAME
    return [p for p in [root / "zarr.json", *(root / n / "zarr.json" for n in ARRAY_NAMES)] if p.is_file()]


def _expected_metadata(layout: StoreLayout) -> dict[str, bytes]:
    """The zarr.json bytes zarr writes for `layout` (group first), keyed by their path in the store:
    made in a scratch store with the writer's own `create_array` call, so they are what it would write."""
    import tempfile

    import zarr

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        group = zarr.open_group(Path(tmp), mode="w", zarr_format=3)
        for spec in layout.arrays:
            _create_array(group, spec, (_codecs().get(spec.compressor, _codecs()[COMPRESSOR]),))
        for path in sorted(Path(tmp).rglob("zarr.json")):
            out[path.relative_to(tmp).as_posix()] = path.read_bytes()
    return out


def restore_metadata(dataset: str | Path, layout: StoreLayout, changed: set[Path]) -> list[Path]:
    """Rewrite (atomically, each file on its own) every zarr.json of the store that is missing,
    unreadable, or says other than `layout` (an array's length may have grown past it), and those in
    `changed` (the manifest's seal names them). Chunk files are never touched. Returns those rewritten."""
    from labeler.io import write_bytes_atomic

    root = Path(dataset) / STORE_NAME
    rewritten = []
    for rel, want in _expected_metadata(layout).items():
        path = root / rel
        try:
            have, expected = json.loads(path.read_bytes()), json.loads(want)
            if "shape" in expected and have["shape"][1:] == expected["shape"][1:]:
                if have["shape"][0] >= expected["shape"][0]:  # grown by a run that planned more rows
                    have = {**have, "shape": expected["shape"]}
            ok = have == expected
        except (OSError, ValueError, TypeError, IndexError, KeyError):
            ok = False
        if not ok or path in changed:
            write_bytes_atomic(path, want)
            rewritten.append(path)
    return rewritten


def shard_range(shard: int, layout: StoreLayout) -> range:
    n = layout.arrays[0].shape[0]
    s = layout.samples_per_shard
    return range(shard * s, min((shard + 1) * s, n))


def write_shard(dataset: str | Path, shard: int, layout: StoreLayout, rows: dict[int, SampleArrays]) -> None:
    """Write one whole shard in one region write per array; rows missing from `rows` get the fill value.

    Must be the only writer of this shard (the DAG gives every shard one task).
    """
    span = range(shard * layout.samples_per_shard, (shard + 1) * layout.samples_per_shard)
    if not set(rows) <= set(span):
        raise ValueError(f"rows {sorted(set(rows) - set(span))} are not in shard {shard} ({span})")
    group = open_store(dataset, "r+")
    for spec in layout.arrays:
        # every chunk is written, fill-valued ones too: zarr would otherwise compare each chunk with the
        # fill value before encoding it (a sixth of the write's time, benchmarks/RESULTS.md issue 27);
        # a failed row's chunk then holds its fill value instead of being absent, which reads the same
        arr = group[spec.name].with_config({"write_empty_chunks": True})
        stop = min(span.stop, arr.shape[0])
        block = np.full((stop - span.start, *spec.shape[1:]), _fill(spec.dtype), dtype=spec.dtype)
        for row, arrays in rows.items():
            block[row - span.start] = getattr(arrays, spec.name)
        arr[span.start : stop] = block


def open_arrays(dataset: str | Path) -> dict[str, Any]:
    """The dataset's arrays, opened once (opening one reads its metadata: keep them for many reads)."""
    group = open_store(dataset)
    return {name: group[name] for name in ARRAY_NAMES}


def read_rows(
    arrays: dict[str, Any], rows: slice | int, names: Sequence[str] = ARRAY_NAMES
) -> dict[str, np.ndarray]:
    """Arrays of one row (int) or of consecutive rows (slice: one read per array for a whole shard)."""
    return {name: arrays[name][rows] for name in names}


def _shard_file(dataset: str | Path, name: str, shard: int) -> Path:
    tail = "/0/0/0" if name in ("left", "right") else "/0/0"
    return Path(dataset) / STORE_NAME / name / "c" / f"{shard}{tail}"


def shard_array_files(dataset: str | Path, shard: int) -> dict[str, Path]:
    """Each array's file of this shard (whether written or not)."""
    return {name: _shard_file(dataset, name, shard) for name in ARRAY_NAMES}


def journal_path(dataset: str | Path) -> Path:
    return Path(dataset) / JOURNAL_NAME


def remove_shard_files(dataset: str | Path, shard: int) -> None:
    """Drop a damaged shard's array files (the writer then starts from nothing, never reading them)."""
    for name in ARRAY_NAMES:
        _shard_file(dataset, name, shard).unlink(missing_ok=True)


def shard_file_sizes(dataset: str | Path, shard: int) -> dict[str, int]:
    """Bytes of each array's file of this shard (0: not written, e.g. every row failed)."""
    out = {}
    for name in ARRAY_NAMES:
        path = _shard_file(dataset, name, shard)
        out[name] = path.stat().st_size if path.is_file() else 0
    return out


def shard_file_digests(dataset: str | Path, shard: int) -> dict[str, str]:
    """sha256 of each array's file of this shard ('': not written)."""
    from labeler.io import sha256_file

    out = {}
    for name in ARRAY_NAMES:
        path = _shard_file(dataset, name, shard)
        out[name] = sha256_file(path) if path.is_file() else ""
    return out


# ------------------------------------------------------------------------------------------ tables


# ------------------------------------------------------------------------------------- shard index


# ----------------------------------------------------------------------------------------- reviews


# ---------------------------------------------------------------------------------------- manifest
