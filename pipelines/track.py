"""The `--track` pass of a run: after every shard is written, each sequence's labelled frames are shown to
the tracker in frame order (labeler/segment/track.py), the objects table gets their track ids and the
dataset a `tracks` table.

The pass reads only the instance maps and the objects table, never the images, and it starts from
scratch each time: a run killed anywhere and run again finds the same ids, so the same dataset version.
Track ids are numbered over the sequences in name order. For a mask backend that tracks objects itself
(sam2), the stored ids say which objects of a shard's chunk of a sequence are one object (the chunk's own
ids, or the tracks of an earlier pass: both group a chunk's objects alike) and the pass stitches chunks;
for the others, stored ids are ignored and the objects are associated frame by frame.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from data_schema.manifest import ObjectRow, SampleRecord, TrackingConfig, TrackRow
from labeler.dataset.writer import DatasetWriter


def track_sequences(
    writer: DatasetWriter, tracking: TrackingConfig, *, chunk_ids: bool = False
) -> list[TrackRow]:
    """Track every sequence of the dataset, store the ids and the tracks table; returns the tracks.
    `chunk_ids`: the objects' stored track ids are their ids within their shard's chunk of the sequence (a
    mask backend that tracks objects itself), stitched across shards (segment/track.ChunkStitcher);
    else they are ignored and the objects are associated frame by frame (IouDepthTracker)."""
    from labeler.dataset.shards import open_arrays, read_rows
    from labeler.segment.track import ChunkStitcher, IouDepthTracker, Sighting, track_row

    entries = writer.entries
    samples: list[SampleRecord] = []
    objects: dict[int, list[ObjectRow]] = {}  # shard -> its objects, in table order
    stored: dict[tuple[int, int], int | None] = {}  # (row, object id) -> the track id stored before
    shard_of: dict[int, int] = {}  # row -> shard
    for s in sorted(entries):
        records = writer.shard_records(entries[s])
        samples += records
        shard_of.update(dict.fromkeys((r.row for r in records), s))
        objects[s] = [o.model_copy(update={"track_id": None}) for o in writer.shard_objects(entries[s])]
        stored.update({(o.row, o.id): o.track_id for o in writer.shard_objects(entries[s])})
    by_row: dict[int, list[ObjectRow]] = defaultdict(list)
    for rows in objects.values():
        for o in rows:
            by_row[o.row].append(o)
    frames: dict[str, list[SampleRecord]] = defaultdict(list)
    for rec in samples:
        if rec.status == "ok" and rec.sequence is not None and rec.frame_index is not None:
            frames[rec.sequence].append(rec)
    store = open_arrays(writer.out)
    track_of: dict[tuple[int, int], int] = {}  # (row, object id) -> track id
    seen: dict[int, list[Sighting]] = defaultdict(list)
    sequence_of: dict[int, str] = {}
    next_id = 1
    for seq in sorted(frames):
        tracker = IouDepthTracker(tracking, first_id=next_id)
        stitcher = ChunkStitcher(tracking, first_id=next_id)
        for rec in sorted(frames[seq], key=lambda r: r.frame_index or 0):
            assert rec.frame_index is not None
            ids = np.asarray(read_rows(store, rec.row, ("instance_ids",))["instance_ids"])
            objs = {o.id: o for o in by_row.get(rec.row, [])}
            depth = {i: o.depth_m_median for i, o in objs.items()}
            names = {i: o.class_name for i, o in objs.items()}
            if chunk_ids:
                within = {i: stored[(rec.row, i)] for i in objs}
                found = stitcher.step(rec.frame_index, shard_of[rec.row], ids, within, depth, names)
            else:
                found = tracker.step(rec.frame_index, ids, depth, names)
            for oid, tid in found.items():
                track_of[(rec.row, oid)] = tid
                o = objs[oid]
                seen[tid].append(Sighting(rec.frame_index, rec.timestamp_s, o.depth_m_median, o.class_name))
                sequence_of[tid] = seq
        next_id = stitcher.next_id if chunk_ids else tracker.next_id
    changed = {}
    for s, rows in objects.items():
        new = [o.model_copy(update={"track_id": track_of.get((o.row, o.id))}) for o in rows]
        if new != writer.shard_objects(entries[s]):
            changed[s] = new
    writer.replace_objects(changed)
    tracks = [track_row(tid, sequence_of[tid], seen[tid]) for tid in sorted(seen)]
    writer.write_tracks(tracks, tracking)
    return tracks
