"""What a worker task writes and reads of a dataset: a shard's files (its single writer, one task per
shard), a carried sample's stored arrays, and where `labeler run` keeps the pairs it rectified. The client
side of the write path is `DatasetWriter` (writer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data_schema.captures import RectifiedPair
from data_schema.manifest import (
    ObjectRow,
    SampleRecord,
    ShardEntry,
    StoreLayout,
)
from labeler.dataset import journal
from labeler.dataset.shards import (
    SampleArrays,
    open_arrays,
    read_rows,
    remove_shard_files,
    shard_file_digests,
    shard_file_sizes,
    write_shard,
)
from labeler.dataset.tables import (
    content_sha256,
    write_shard_tables,
)

RECTIFIED_DIR = "rectified"  # `labeler run`: the rectified pairs it made, and their pairs.json


# ------------------------------------------------------------------------------ in the worker's task
def write_shard_files(
    dataset: str | Path,
    shard: int,
    layout: StoreLayout,
    run_key: str,
    records: Sequence[SampleRecord],
    objects: Sequence[ObjectRow],
    arrays: dict[int, SampleArrays],
    *,
    rectified: Sequence[RectifiedPair] = (),
    rewriting: str | None = None,
) -> ShardEntry:
    """The single writer of one shard (a worker task; zarr-python #3682: concurrent writers into one shard
    lose data): its arrays, then its table part files. Returns the shard's index entry; `commit` on the
    client is what marks it done. `rewriting`: the entry_sha256 (journal.py) of the shard's committed
    entry when it is written again: its files are journalled (hard links) and then removed, so the write
    never reads a damaged file and a kill leaves the old shard (the journal) or the new one."""
    if rewriting is not None:
        journal.begin(dataset, shard, rewriting)
        remove_shard_files(dataset, shard)
    write_shard(dataset, shard, layout, arrays)
    samples_ref, objects_ref = write_shard_tables(dataset, shard, list(records), list(objects))
    span = shard * layout.samples_per_shard
    return ShardEntry(
        shard=shard,
        row_start=span,
        row_stop=span + layout.samples_per_shard,
        run_key=run_key,
        n_ok=len(arrays),
        n_failed=sum(r.status == "failed" for r in records),
        n_skipped=sum(r.status == "skipped" for r in records),
        n_objects=len(objects),
        samples=samples_ref,
        objects=objects_ref,
        content_sha256=content_sha256(list(records), list(objects)),
        array_bytes=shard_file_sizes(dataset, shard),
        array_sha256=shard_file_digests(dataset, shard),
        rectified=list(rectified),
    )


def rectified_dir(dataset: str | Path) -> Path:
    """Where `labeler run` keeps the pairs it rectified."""
    return Path(dataset) / RECTIFIED_DIR


def stored_arrays(dataset: str | Path, row: int) -> SampleArrays:
    """A finished sample's arrays as stored, to carry it into a rewrite of its shard unchanged."""
    return SampleArrays(**read_rows(open_arrays(dataset), row))
