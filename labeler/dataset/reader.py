"""The dataset reader.

    from labeler import open_dataset
    ds = open_dataset("datasets/lab-2026-11")
    s = ds[0]   # s.sample_id, s.row, s.left, s.right, s.disparity_px, s.depth_m, s.confidence,
    #             s.instance_ids, s.objects
    near = ds.objects.to_table(filter=(pc.field("depth_m_median") < 2) & (pc.field("score") > 0.9))

Opening reads only the small manifest; the shard index is read on first use (one line per shard); `ds[i]`
then reads one row group of each table and one row of each array, so it costs the same at row 10 and
row 10^6. The reader pickles small (no open files, no caches) into DataLoader workers.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_schema.manifest import ARRAY_NAMES, Manifest, ObjectRow, SampleRecord, ShardEntry
from labeler.dataset import shards
from labeler.dataset.index import read_shard_index, shard_index_bytes
from labeler.dataset.manifest import load_manifest
from labeler.dataset.shards import SampleArrays
from labeler.dataset.tables import shard_objects, shard_samples, table_dataset
from labeler.errors import LabelerError

if TYPE_CHECKING:
    import pyarrow.dataset as pads

_SHARD_CACHE = 4  # shards' table rows kept per reader (sequential reads hit, random reads cost 1 read)


class DamagedSampleError(LabelerError):
    """A sample's stored arrays do not match their digests."""


class DamagedDatasetError(LabelerError):
    """The manifest, the shard index or another sealed file differs from what the manifest sealed."""


@dataclass(frozen=True)
class Sample(SampleArrays):
    """One labelled sample: its arrays (as SampleArrays), its id and row, and its objects
    (`objects` lists exactly the ids present in `instance_ids`)."""

    sample_id: str
    row: int
    objects: list[ObjectRow]


@dataclass(frozen=True)
class ShardRows:
    """One finished shard's table rows."""

    entry: ShardEntry
    samples: list[SampleRecord]
    objects: list[ObjectRow]

    @property
    def ok(self) -> list[SampleRecord]:
        return [s for s in self.samples if s.status == "ok"]

    def objects_of(self, row: int) -> list[ObjectRow]:
        return [o for o in self.objects if o.row == row]


class Dataset:
    """Read-only view of a dataset: `len(ds)` ok samples, `ds[i]` the i-th (in row order), `ds.failures`
    the failed ones, `ds.samples` / `ds.objects` the tables (lazy pyarrow datasets)."""

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.path = Path(path)
        self.verify = verify
        self.manifest: Manifest = load_manifest(self.path)
        from labeler.dataset.seal import record_intact

        if not record_intact(self.manifest):
            self._refuse(f"{self.path / 'manifest.json'}: edited after it was written")
        self._reset()

    def _refuse(self, problem: str) -> None:
        raise DamagedDatasetError(
            f"{problem}; find all damage with `labeler validate {self.path}`, fix it with "
            f"`labeler repair {self.path}`"
        )

    def _reset(self) -> None:
        self._entries: list[ShardEntry] | None = None
        self._ok_cum: np.ndarray | None = None
        self._arrays: dict[str, Any] | None = None
        self._cache: OrderedDict[int, ShardRows] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "manifest": self.manifest, "verify": self.verify}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.manifest, self.verify = state["path"], state["manifest"], state["verify"]
        self._reset()

    # ------------------------------------------------------------------ index

    @property
    def entries(self) -> list[ShardEntry]:
        """The finished shards, in shard order."""
        if self._entries is None:
            from labeler.dataset.manifest import seal_problems

            broken = seal_problems(self.path, self.manifest)  # the index and row plan as sealed
            if broken:
                self._refuse(broken[0])
            problems: list[str] = []
            index = read_shard_index(self.path, problems=problems)
            if problems:
                self._refuse(problems[0])
            self._entries = [index[s] for s in sorted(index)]
            self._ok_cum = np.cumsum([e.n_ok for e in self._entries], dtype=np.int64)
        return self._entries

    def _counts_current(self) -> bool:
        return self.manifest.shard_index_bytes == shard_index_bytes(self.path)

    def __len__(self) -> int:
        if self._entries is None and self._counts_current():
            return self.manifest.counts.ok
        self.entries  # noqa: B018 — loads the index
        assert self._ok_cum is not None
        return int(self._ok_cum[-1]) if self._ok_cum.size else 0

    def shard_rows(self, entry: ShardEntry) -> ShardRows:
        """One shard's table rows (cached for the last few shards)."""
        hit = self._cache.get(entry.shard)
        if hit is not None and hit.entry == entry:
            self._cache.move_to_end(entry.shard)
            return hit
        rows = ShardRows(entry, shard_samples(self.path, entry), shard_objects(self.path, entry))
        self._cache[entry.shard] = rows
        while len(self._cache) > _SHARD_CACHE:
            self._cache.popitem(last=False)
        return rows

    def iter_shards(self) -> Iterator[ShardRows]:
        for entry in self.entries:
            yield self.shard_rows(entry)

    def record(self, i: int) -> tuple[SampleRecord, list[ObjectRow]]:
        """The i-th ok sample's record and objects, without reading arrays."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range ({n} ok samples)")
        i = i % n
        entries = self.entries
        assert self._ok_cum is not None
        k = int(np.searchsorted(self._ok_cum, i, side="right"))
        before = int(self._ok_cum[k - 1]) if k else 0
        rows = self.shard_rows(entries[k])
        rec = rows.ok[i - before]
        return rec, rows.objects_of(rec.row)

    # ------------------------------------------------------------------ samples

    def read(self, i: int, names: tuple[str, ...] = ARRAY_NAMES) -> dict[str, np.ndarray]:
        """Only the named arrays of the i-th ok sample: training needs 4 of the 6, and decompressing the
        other two (both images) costs about as much as the rest."""
        unknown = set(names) - set(ARRAY_NAMES)
        if unknown:
            raise KeyError(f"no arrays {sorted(unknown)}; a dataset has {', '.join(ARRAY_NAMES)}")
        rec, _ = self.record(i)
        return self._checked(rec, self._read_unverified(rec.row, names))

    def read_row(self, row: int, names: tuple[str, ...] = ARRAY_NAMES) -> dict[str, np.ndarray]:
        """The named arrays of the ok sample stored at `row` (a row of the samples table), checked against
        their digests like `ds[i]`."""
        rec = self.record_at_row(row)
        return self._checked(rec, self._read_unverified(row, names))

    def record_at_row(self, row: int) -> SampleRecord:
        """The ok sample stored at `row` (KeyError when that row holds no ok sample)."""
        entries = self.entries
        k = bisect.bisect_right([e.row_start for e in entries], row) - 1
        if k >= 0 and row < entries[k].row_stop:
            for rec in self.shard_rows(entries[k]).ok:
                if rec.row == row:
                    return rec
        raise KeyError(f"{self.path}: row {row} holds no labelled sample")

    def _read_unverified(self, row: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Private: the arrays as stored, before the digest check every public read makes."""
        if self._arrays is None:
            self._arrays = shards.open_arrays(self.path)
        return shards.read_rows(self._arrays, row, names)

    def __getitem__(self, i: int) -> Sample:
        rec, objects = self.record(i)
        arrays = self._checked(rec, self._read_unverified(rec.row, ARRAY_NAMES))
        return Sample(sample_id=rec.sample_id, row=rec.row, objects=objects, **arrays)

    def _checked(self, rec: SampleRecord, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Arrays that fail their recorded digest are never returned (one line naming sample and array)."""
        if not self.verify or rec.digests is None:
            return arrays
        for name, a in arrays.items():
            if shards.digest(a) != getattr(rec.digests, name):
                raise DamagedSampleError(
                    f"{self.path}: sample {rec.sample_id} (row {rec.row}) {name}: content differs from its "
                    f"digest (damaged); find all damage with `labeler validate {self.path}`, fix it with "
                    f"`labeler repair {self.path}`"
                )
        return arrays

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the ok samples, in `ds[i]` order (reads one column of the samples table)."""
        import pyarrow.compute as pc

        t = self.samples.to_table(columns=["sample_id", "row"], filter=pc.field("status") == "ok")
        t = t.sort_by("row")
        return [str(s) for s in t.column("sample_id").to_pylist()]

    @property
    def failures(self) -> list[SampleRecord]:
        """Failed samples' records (sample_id, row, error)."""
        import pyarrow.compute as pc

        from labeler.dataset.tables import sample_from_row

        t = self.samples.to_table(filter=pc.field("status") == "failed").sort_by("row")
        return [sample_from_row(r) for r in t.to_pylist()]

    @property
    def samples(self) -> pads.Dataset:
        """The `samples` table as a lazy `pyarrow.dataset.Dataset` (one row per sample, ok or failed):
        `.to_table()`, `.to_table(filter=...)`; DuckDB and polars query it directly."""
        return table_dataset(self.path, "samples", self.entries)

    @property
    def objects(self) -> pads.Dataset:
        """The `objects` table (one row per object: sample_id, row, id, area_px, bbox, score, depth...)."""
        return table_dataset(self.path, "objects", self.entries)

    @property
    def version(self) -> str:
        return self.manifest.dataset_version


def open_dataset(path: str | Path, *, verify: bool = True) -> Dataset:
    """Open a dataset written by `labeler pseudo-label` / `labeler run`. `verify` (default) checks each
    array read against its digest (the arrays are decoded anyway; sha256 adds a few percent)."""
    return Dataset(path, verify=verify)
