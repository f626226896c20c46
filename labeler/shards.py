"""The only owner of the Zarr v3 store layout (see data_schema/manifest.py) and the shared reader.

    from labeler import open_dataset
    ds = open_dataset("datasets/lab-2026-11")
    s = ds[0]   # s.sample_id, s.left, s.disparity_px, s.depth_m, s.confidence, s.instance_ids, s.objects

Writers: the client creates or grows the arrays (metadata has one writer); each shard is then written
by exactly one task, in one region write that covers the whole shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schema.manifest import ARRAY_NAMES, ArrayDigests, ArraySpec, Manifest, ObjectRecord, StoreLayout

DEFAULT_SAMPLES_PER_SHARD = 32
MANIFEST_NAME = "manifest.json"
STORE_NAME = "data.zarr"
COMPRESSOR = "blosc-zstd-3-shuffle"  # measured in benchmarks/bench_pipeline.py; see RESULTS.md

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
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _fill(dtype: str) -> float | int:
    return float("nan") if dtype.startswith("float") else 0


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


def _compressors():
    from zarr.codecs import BloscCodec, BloscShuffle

    return (BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),)


def prepare_store(dataset: str | Path, layout: StoreLayout) -> None:
    """Create the arrays, or grow them to `layout`'s sample count (client side, before any shard write)."""
    import zarr

    root = Path(dataset) / STORE_NAME
    group = zarr.open_group(root, mode="a", zarr_format=3)
    for spec in layout.arrays:
        if spec.name in group:
            arr = group[spec.name]
            if list(arr.shape[1:]) != spec.shape[1:] or list(arr.shards or arr.chunks) != spec.shard_shape:
                raise ValueError(
                    f"{root}/{spec.name}: stored shape {arr.shape} / shards {arr.shards} do not "
                    f"match this run's {spec.shape} / {spec.shard_shape}; use a new --out"
                )
            if arr.shape[0] < spec.shape[0]:
                arr.resize(tuple(spec.shape))
            continue
        group.create_array(
            spec.name,
            shape=tuple(spec.shape),
            chunks=tuple(spec.chunk_shape),
            shards=tuple(spec.shard_shape),
            dtype=spec.dtype,
            fill_value=_fill(spec.dtype),
            compressors=_compressors(),
        )


def shard_range(shard: int, layout: StoreLayout) -> range:
    n = layout.arrays[0].shape[0]
    s = layout.samples_per_shard
    return range(shard * s, min((shard + 1) * s, n))


def write_shard(dataset: str | Path, shard: int, layout: StoreLayout, rows: dict[int, SampleArrays]) -> None:
    """Write one whole shard in one region write per array; rows missing from `rows` get the fill value.

    Must be the only writer of this shard (the DAG gives every shard one task).
    """
    import zarr

    span = shard_range(shard, layout)
    if not set(rows) <= set(span):
        raise ValueError(f"rows {sorted(set(rows) - set(span))} are not in shard {shard} ({span})")
    group = zarr.open_group(Path(dataset) / STORE_NAME, mode="r+")
    for spec in layout.arrays:
        block = np.full((len(span), *spec.shape[1:]), _fill(spec.dtype), dtype=spec.dtype)
        for index, arrays in rows.items():
            block[index - span.start] = getattr(arrays, spec.name)
        group[spec.name][span.start : span.stop] = block


def load_manifest(dataset: str | Path) -> Manifest:
    from labeler.errors import InputError

    path = Path(dataset) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(
            path,
            "no manifest: not a labeler dataset (or its first run never finished a shard)",
            "run `labeler pseudo-label` or `labeler run` with --out pointing here",
        )
    return Manifest.model_validate_json(path.read_text())


@dataclass(frozen=True)
class Sample(SampleArrays):
    """One labelled sample: its arrays (as SampleArrays) plus its id and object table
    (`objects` lists exactly the ids present in `instance_ids`)."""

    sample_id: str
    objects: list[ObjectRecord]


class Dataset:
    """Read-only view of a dataset: `len(ds)` ok samples, `ds[i]` the i-th, `ds.failures` the rest.

    Opens the store lazily, so it can be pickled into DataLoader workers before first use.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = load_manifest(self.path)
        self._ok = self.manifest.ok
        self._group = None

    def __len__(self) -> int:
        return len(self._ok)

    def read(self, i: int, names: tuple[str, ...] = ARRAY_NAMES) -> dict[str, np.ndarray]:
        """Only the named arrays of the i-th ok sample: training needs 4 of the 6, and decompressing the
        other two (both images) costs about as much as the rest."""
        import zarr

        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range ({len(self)} ok samples)")
        if self._group is None:
            self._group = zarr.open_group(self.path / STORE_NAME, mode="r")
        unknown = set(names) - set(ARRAY_NAMES)
        if unknown:
            raise KeyError(f"no arrays {sorted(unknown)}; a dataset has {', '.join(ARRAY_NAMES)}")
        return {name: self._group[name][self._ok[i].index] for name in names}

    def __getitem__(self, i: int) -> Sample:
        rec = self._ok[i] if -len(self) <= i < len(self) else None
        arrays = self.read(i)
        return Sample(sample_id=rec.sample_id, objects=list(rec.objects), **arrays)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None}

    @property
    def sample_ids(self) -> list[str]:
        return [r.sample_id for r in self._ok]

    @property
    def failures(self):
        """Failed samples' records (sample_id, error)."""
        return self.manifest.failures

    @property
    def version(self) -> str:
        return self.manifest.dataset_version


def open_dataset(path: str | Path) -> Dataset:
    """Open a dataset written by `labeler pseudo-label` / `labeler run`."""
    return Dataset(path)
