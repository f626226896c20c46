"""The one write path of a dataset: `DatasetWriter` (the client: lock, recovery, row plan, shard commits,
compaction, the manifest) and `write_shard_files` (a shard's single writer, run in a worker task).

A run holds the writer for its whole length:

    with DatasetWriter(out) as writer:           # the dataset lock; interrupted rewrites rolled back
        writer.refuse_other_settings(run_key)    # one folder, one set of labels
        ...plan from writer.row_plan(), writer.intact_entries(run_key), writer.stored_samples(...)...
        layout = writer.begin(base_manifest, new_rows, kept_entries)
        for entry in finished_shards:            # as the workers' write tasks finish
            writer.commit(entry)                 # O(entry): one index line; compaction every 64 shards
        manifest = writer.finish()               # compaction, stale files, the manifest sealed

A kill at any moment leaves a dataset that opens, validates and resumes where it stopped: a shard counts
once its entry is in the shard index, and the manifest is written at the start and the end only.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from data_schema.captures import RectifiedPair, RectifiedSet
from data_schema.manifest import (
    Manifest,
    ObjectRow,
    SampleRecord,
    ShardEntry,
    ShardPlan,
    StoreLayout,
    TableRef,
    TrackingConfig,
    TrackRow,
)
from labeler.dataset import journal
from labeler.dataset.index import (
    append_row_plan,
    append_shard_entries,
    dataset_version,
    index_counts,
    read_row_plan,
    read_shard_index,
    rewrite_shard_index,
    shard_index_bytes,
    shard_is_intact,
)
from labeler.dataset.manifest import (
    check_sealed,
    dataset_lock,
    load_manifest,
    manifest_schema_version,
    write_manifest,
)
from labeler.dataset.restore import RepairSteps
from labeler.dataset.seal import seal_root_files, write_settings
from labeler.dataset.shards import (
    prepare_store,
    remove_shard_files,
    store_layout,
)
from labeler.dataset.tables import (
    COMPACT_MIN_FILES,
    compact_tables,
    content_sha256,
    remove_unreferenced_tables,
    shard_objects,
    shard_samples,
    table_dataset,
    table_files,
)
from labeler.dataset.task_io import rectified_dir
from labeler.errors import InputError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredSample:
    """What planning needs of a finished sample."""

    status: str
    left_sha256: str | None
    right_sha256: str | None


class DatasetWriter(RepairSteps):
    """The owner of one dataset's writes for the length of a run (labelling or repair)."""

    def __init__(self, out: str | Path, *, repairing: bool = False) -> None:
        self.out = Path(out)
        self.repairing = repairing  # repair works on a damaged dataset; every other writer refuses one
        self.rolled_back: list[int] = []  # shards whose interrupted rewrite was rolled back on entry
        self._lock: AbstractContextManager[None] | None = None
        self._base: Manifest | None = None
        self._entries: dict[int, ShardEntry] = {}
        self._finished: list[ShardEntry] = []
        self._since_compaction = 0

    # ----------------------------------------------------------------------------------- lock, recovery
    def __enter__(self) -> DatasetWriter:
        self._lock = dataset_lock(self.out)
        self._lock.__enter__()
        try:
            self.rolled_back = journal.recover(self.out)  # a rewrite a killed process left half-done
            if not self.repairing:
                check_sealed(self.out, doing="this run")
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        if self.rolled_back:
            log.warning(
                "rolled back the interrupted rewrite of shard(s) %s", ", ".join(map(str, self.rolled_back))
            )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._lock is not None
        self._lock.__exit__(kind, err, tb)

    # ------------------------------------------------------------------------ what is committed already
    def refuse_other_settings(self, run_key: str) -> None:
        """A dataset folder holds one set of labels: other backends or calibration need another --out."""
        if manifest_schema_version(self.out) == 1:
            load_manifest(self.out)  # raises the one line naming `labeler migrate`
        index = read_shard_index(self.out)
        other = {e.run_key for e in index.values()} - {run_key}
        if other and any(e.n_ok for e in index.values()):
            try:
                old: Manifest | None = load_manifest(self.out)
            except InputError:
                old = None
            what = (
                f"stereo {old.stereo.name}, masks {old.masks.name}, calibration {old.calibration.rig}"
                if old
                else "another run key"
            )
            raise InputError(
                self.out,
                f"holds a dataset made with other settings ({what}, or other parameters)",
                "use a new --out",
            )

    def manifest(self) -> Manifest:
        return load_manifest(self.out)

    def row_plan(self) -> dict[int, ShardPlan]:
        return read_row_plan(self.out)

    def committed(self) -> dict[int, ShardEntry]:
        """The shard index: each shard's entry in force."""
        return read_shard_index(self.out)

    def intact_entries(
        self, committed: dict[int, ShardEntry], row_plan: dict[int, ShardPlan], run_key: str
    ) -> dict[int, ShardEntry]:
        """Committed shards of this run key whose files are there with their recorded sizes (the cheap
        check; content is `labeler validate`'s job)."""
        return {
            s: e
            for s, e in committed.items()
            if e.run_key == run_key and s in row_plan and shard_is_intact(self.out, e)
        }

    def stored_samples(self, entries: Sequence[ShardEntry]) -> dict[int, dict[str, StoredSample]]:
        """Finished shards' samples: id, status and source hashes (one scan of five columns)."""
        if not entries:
            return {}
        spans = sorted((e.row_start, e.shard) for e in entries)
        cols = ["sample_id", "row", "status", "left_sha256", "right_sha256"]
        t = table_dataset(self.out, "samples", entries).to_table(columns=cols)
        starts = [s for s, _ in spans]
        by_shard: dict[int, dict[str, StoredSample]] = {}
        for sid, row, status, left, right in zip(*(t.column(c).to_pylist() for c in cols), strict=True):
            shard = spans[bisect.bisect_right(starts, row) - 1][1]
            by_shard.setdefault(shard, {})[sid] = StoredSample(status, left, right)
        return by_shard

    def shard_records(self, entry: ShardEntry) -> list[SampleRecord]:
        return shard_samples(self.out, entry)

    def shard_objects(self, entry: ShardEntry) -> list[ObjectRow]:
        return shard_objects(self.out, entry)

    def shard_objects_by_row(self, entry: ShardEntry) -> dict[int, list[ObjectRow]]:
        by_row: dict[int, list[ObjectRow]] = {}
        for o in shard_objects(self.out, entry):
            by_row.setdefault(o.row, []).append(o)
        return by_row

    # --------------------------------------------------------------------------------------- the run
    def begin(
        self,
        base: Manifest,
        new_rows: Sequence[ShardPlan],
        entries: dict[int, ShardEntry],
        *,
        discard: Sequence[int] = (),
    ) -> StoreLayout:
        """Create or grow the arrays to `base.layout`, record the new rows, seal a first manifest over
        `entries` (the shards in force while the run works). `discard`: damaged shards whose array files
        are dropped first (repair). Returns the layout as stored."""
        layout = prepare_store(self.out, base.layout)
        for shard in discard:
            remove_shard_files(self.out, shard)
        append_row_plan(self.out, list(new_rows))
        write_settings(self.out, base)
        self._base = base.model_copy(update={"layout": layout})
        self._entries = dict(entries)
        self._seal()
        return layout

    @staticmethod
    def layout(n_rows: int, height: int, width: int, samples_per_shard: int) -> StoreLayout:
        """The array layout for n_rows samples of height x width in shards of samples_per_shard."""
        return store_layout(n_rows, height, width, samples_per_shard)

    @property
    def entries(self) -> dict[int, ShardEntry]:
        """The entries in force now (committed before the run, and by it)."""
        return dict(self._entries)

    @property
    def finished(self) -> list[ShardEntry]:
        """The shards this run committed, in commit order."""
        return list(self._finished)

    def commit(self, entry: ShardEntry) -> None:
        """A shard's write task finished: its entry goes into the index (what marks it done), its rewrite
        journal is dropped, and small table files are merged every COMPACT_MIN_FILES commits."""
        append_shard_entries(self.out, [entry])
        journal.end(self.out, entry.shard)  # committed: the old files are no longer needed
        old = self._entries.get(entry.shard)
        self._entries[entry.shard] = entry
        if old is not None:  # a rewritten shard: its old table rows, if in a file of their own, go
            remove_unreferenced_tables(self.out, self._entries, table_files([old]))
        self._finished.append(entry)
        self._since_compaction += 1
        if self._since_compaction >= COMPACT_MIN_FILES:
            self._compact(force=False)
            self._since_compaction = 0

    def abandon(self, shard: int) -> None:
        """A shard's write task died: a half-done rewrite gets its committed files back."""
        journal.roll_back(self.out, shard)

    def finish(self) -> Manifest:
        """Compact, drop stale table files, seal the manifest for the index as it now is."""
        self._compact(force=True)
        return self._seal()

    def finished_records(self) -> list[SampleRecord]:
        """The samples of the shards this run committed."""
        return [r for e in self._finished for r in shard_samples(self.out, e)]

    def failures(self) -> list[SampleRecord]:
        """The failed samples of the shards this run committed."""
        return [r for e in self._finished for r in shard_samples(self.out, e) if r.status == "failed"]

    def write_rectified_set(self, rect: RectifiedSet) -> Path:
        """OUT/rectified/pairs.json for `labeler run`, from every finished shard's record."""
        from labeler.io import write_text_atomic

        path = rectified_dir(self.out) / "pairs.json"
        write_text_atomic(path, rect.model_dump_json(indent=2))
        return path

    def rectified_pairs(self) -> list[RectifiedPair]:
        return sorted((p for e in self._entries.values() for p in e.rectified), key=lambda p: p.pair_id)

    # ------------------------------------------------------------------------------------ tracks (--track)
    def replace_objects(self, objects: dict[int, list[ObjectRow]]) -> None:
        """Finished shards' objects with new labels (their track ids): one objects table file for them (a
        row group per shard, atomically), then their entries, whose content hash follows, appended to the
        index. The old files go when the run finishes (no entry names them then)."""
        import hashlib

        from labeler.dataset.tables import objects_table, rows_sha256, write_table_file

        shards = sorted(objects)
        if not shards:
            return
        hashes = [rows_sha256(objects[s]) for s in shards]
        tag = hashlib.sha256("".join(hashes).encode()).hexdigest()[:12]
        name = f"k-{shards[0]:06d}-{shards[-1]:06d}-{len(shards)}-{tag}.parquet"
        digest = write_table_file(self.out, "objects", name, [objects_table(objects[s]) for s in shards])
        new = []
        for i, (s, h) in enumerate(zip(shards, hashes, strict=True)):
            e = self._entries[s]
            ref = TableRef(file=name, row_group=i, n_rows=len(objects[s]), sha256=h, file_sha256=digest)
            samples = shard_samples(self.out, e)
            new.append(
                e.model_copy(update={"objects": ref, "content_sha256": content_sha256(samples, objects[s])})
            )
        append_shard_entries(self.out, new)
        self._entries.update({e.shard: e for e in new})

    def write_tracks(self, rows: Sequence[TrackRow], tracking: TrackingConfig) -> TableRef:
        """The tracks table (tables/tracks/), named in the manifest when the run finishes."""
        from labeler.dataset.tables import write_tracks_table

        assert self._base is not None, "begin() first"
        ref = write_tracks_table(self.out, rows)
        self._base = self._base.model_copy(update={"tracks": ref, "tracking": tracking})
        return ref

    def _seal(self) -> Manifest:
        assert self._base is not None, "begin() first"
        manifest = seal_manifest(self.out, self._base, self._entries)
        from labeler.dataset.tables import remove_stale_tracks

        remove_stale_tracks(self.out, manifest.tracks)  # after the manifest names the current one
        return manifest

    def _compact(self, *, force: bool) -> None:
        self._entries = compact(self.out, self._entries, force=force)


def seal_manifest(out: Path, base: Manifest, entries: dict[int, ShardEntry]) -> Manifest:
    """The dataset record for the current shard index (version, counts, index size)."""
    counts = index_counts(entries).model_copy(update={"tracks": base.tracks.n_rows if base.tracks else 0})
    manifest = base.model_copy(
        update={
            "dataset_version": dataset_version(base.run_key, entries),
            "counts": counts,
            "shard_index_bytes": shard_index_bytes(out),
            "files": seal_root_files(out),
        }
    )
    return write_manifest(out, manifest)


def compact(out: Path, entries: dict[int, ShardEntry], *, force: bool = False) -> dict[int, ShardEntry]:
    """Merge small table files when enough have piled up; at the end of a run (`force`) also drop stale
    files and rewrite the shard index to its current entries when old lines outnumber them."""
    new = compact_tables(out, entries)
    if new:
        superseded = table_files(entries[e.shard] for e in new)
        append_shard_entries(out, new)
        entries = {**entries, **{e.shard: e for e in new}}
        remove_unreferenced_tables(out, entries, superseded)
    if force:
        if shard_index_bytes(out) > 2 * sum(len(e.model_dump_json()) + 1 for e in entries.values()):
            rewrite_shard_index(out, entries)
    return entries


def check_writable(out: Path) -> None:
    """--out must be a folder this process can write (before any work: one line, not a traceback)."""
    from labeler.io import write_text_atomic

    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file, not a dataset folder", "pass a folder to --out")
    probe = out / ".write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(probe, "")
        probe.unlink()
    except OSError as err:
        raise InputError(out, f"cannot write here ({err.strerror or err})", "pass a writable --out") from None
