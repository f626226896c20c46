"""The exports of a `--track` dataset (the demo sequence, tests/conftest.py): COCO carries track ids and the
frames' sequence, index and time; `export ytvis` writes YouTube-VIS video instances whose masks decode to
the dataset's; the Rerun recording has frame and time timelines and one entity per track."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from labeler import open_dataset
from labeler.errors import InputError
from tests.conftest import TRACK_FRAMES


@pytest.fixture(scope="module")
def tracked(tracked_sequence) -> Path:
    return tracked_sequence[0] / "ds"


def _rows(path: Path) -> list[dict]:
    return open_dataset(path).samples.to_table().sort_by("row").to_pylist()


def _track_of(path: Path) -> dict[tuple[str, int], int | None]:
    """(sample id, object id) -> track id, from the objects table."""
    return {
        (o["sample_id"], o["id"]): o["track_id"] for o in open_dataset(path).objects.to_table().to_pylist()
    }


def test_coco_carries_track_ids_and_frames(tracked, tmp_path):
    from pycocotools.coco import COCO

    from labeler.export.coco import export_coco

    coco = COCO(str(export_coco(tracked, tmp_path / "coco.json")))
    ok = [r for r in _rows(tracked) if r["status"] == "ok"]
    assert [
        (i["sample_id"], i["sequence"], i["frame_index"], i["timestamp_s"]) for i in coco.dataset["images"]
    ] == [(r["sample_id"], r["sequence"], r["frame_index"], r["timestamp_s"]) for r in ok]
    sample_of = {i["id"]: i["sample_id"] for i in coco.dataset["images"]}
    got = {(sample_of[a["image_id"]], a["instance_id"]): a["track_id"] for a in coco.dataset["annotations"]}
    assert got == _track_of(tracked) and all(t is not None for t in got.values())


def test_coco_doubt_counts_each_tracks_depth_jumps_across_shards(tracked, tmp_path):
    """An object's exported doubt is the review's: its track's depth jumps come from every frame of the
    track, whichever shard holds them (the demo sequence's tracks cross shards of 6 samples)."""
    from labeler.doubt import TRACK_JUMP, object_doubt, with_track_jumps
    from labeler.export.coco import export_coco

    ds = open_dataset(tracked)
    objects = with_track_jumps(ds.samples.to_table(), ds.objects.to_table())
    width, height = ds.manifest.calibration.image_size
    want = dict(
        zip(
            zip(objects.column("sample_id").to_pylist(), objects.column("id").to_pylist(), strict=True),
            object_doubt(objects, width * height).tolist(),
            strict=True,
        )
    )
    jumps = objects.column(TRACK_JUMP).to_pylist()
    assert sum(j is not None for j in jumps) > 10  # the term is there to count
    assert len({r // 6 for r, j in zip(objects.column("row").to_pylist(), jumps, strict=True) if j}) > 1
    coco = json.loads(export_coco(tracked, tmp_path / "coco.json").read_text())
    sample_of = {i["id"]: i["sample_id"] for i in coco["images"]}
    got = {(sample_of[a["image_id"]], a["instance_id"]): a["doubt"] for a in coco["annotations"]}
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)


def test_coco_of_an_untracked_dataset_has_null_tracks_and_frames(tmp_path_factory, tmp_path):
    from labeler.export.coco import export_coco
    from tests.train.conftest import make_tiny_dataset

    coco = json.loads(
        export_coco(make_tiny_dataset(tmp_path_factory.getbasetemp()), tmp_path / "c.json").read_text()
    )
    assert coco["annotations"] and {a["track_id"] for a in coco["annotations"]} == {None}
    assert {(i["sequence"], i["frame_index"], i["timestamp_s"]) for i in coco["images"]} == {
        (None, None, None)
    }


def test_ytvis_masks_decode_to_the_datasets(tracked, tmp_path):
    from pycocotools import mask as mask_utils

    from labeler.dataset.tables import read_tracks
    from labeler.export.ytvis import export_ytvis

    ds = open_dataset(tracked)
    doc = json.loads(export_ytvis(tracked, tmp_path / "vis.json", images=tmp_path / "img").read_text())
    (video,) = doc["videos"]
    rows = _rows(tracked)
    assert video["name"] == "walk" and video["length"] == len(video["file_names"]) == TRACK_FRAMES
    assert video["frame_indices"] == list(range(TRACK_FRAMES)) == [r["frame_index"] for r in rows]
    assert video["timestamps_s"] == [r["timestamp_s"] for r in rows]
    assert (video["width"], video["height"]) == tuple(ds.manifest.calibration.image_size)
    # a skipped still frame carries the frame it repeats: its labels, and its image
    labels_of = [r["duplicate_of"] or r["sample_id"] for r in rows]
    assert video["file_names"][8:12] == [video["file_names"][7]] * 4
    for name, sid in zip(video["file_names"], labels_of, strict=True):
        assert name == f"img/{sid}.png" and (tmp_path / name).is_file()
    tracks = read_tracks(tracked, ds.manifest.tracks)
    assert sorted(a["id"] for a in doc["annotations"]) == [t.track_id for t in tracks]
    assert doc["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    objects = defaultdict(dict)  # sample id -> track id -> object
    for o in ds.objects.to_table().to_pylist():
        objects[o["sample_id"]][o["track_id"]] = o
    masks = {
        r["sample_id"]: ds.read_row(r["row"], ("instance_ids",))["instance_ids"]
        for r in rows
        if r["status"] == "ok"
    }
    decoded = 0
    for ann in doc["annotations"]:
        assert ann["video_id"] == 1 and ann["category_id"] == 1
        for k, sid in enumerate(labels_of):
            obj = objects[sid].get(ann["id"])
            seg, box, area = ann["segmentations"][k], ann["bboxes"][k], ann["areas"][k]
            if obj is None:
                assert seg is box is area is ann["depths_m"][k] is None
                continue
            got = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
            np.testing.assert_array_equal(got, masks[sid] == obj["id"])
            assert box == obj["bbox"] and area == obj["area_px"] == got.sum()
            assert ann["depths_m"][k] == obj["depth_m_median"]
            decoded += 1
    n_objects = sum(len(objects[sid]) for sid in labels_of)
    assert decoded == n_objects > 0
    first = next(t for t in tracks if t.frames_seen == max(t.frames_seen for t in tracks))
    ann = next(a for a in doc["annotations"] if a["id"] == first.track_id)
    present = [video["frame_indices"][k] for k, s in enumerate(ann["segmentations"]) if s is not None]
    assert present[0] == first.first_frame and present[-1] == first.last_frame


def test_ytvis_leaves_rejected_frames_out_and_guards_its_out(tracked, tmp_path):
    from labeler.dataset.decisions import current_labels, decide
    from labeler.export.coco import export_coco
    from labeler.export.ytvis import export_ytvis

    path = shutil.copytree(tracked, tmp_path / "ds")
    labels = current_labels(open_dataset(path))
    for sid in ("walk_f000003", "walk_f000007"):  # 7: the still frames 8..11 repeat it
        decide(path, sample_id=sid, labels=labels[sid], decision="reject", user="u")
    out = export_ytvis(path, tmp_path / "vis.json")
    (video,) = json.loads(out.read_text())["videos"]
    assert video["frame_indices"] == [0, 1, 2, 4, 5, 6, 12, 13, 14, 15]
    with pytest.raises(InputError, match="pass --overwrite"):
        export_ytvis(path, out)
    assert export_ytvis(path, out, overwrite=True) == out
    coco = export_coco(path, tmp_path / "coco.json")
    with pytest.raises(InputError, match="not an earlier YouTube-VIS export"):
        export_ytvis(path, coco, overwrite=True)
    with pytest.raises(InputError, match="not an earlier COCO export"):
        export_coco(path, out, overwrite=True)


def test_ytvis_of_an_untracked_dataset_is_one_line(tmp_path_factory, tmp_path):
    from labeler.export.ytvis import export_ytvis
    from tests.train.conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path_factory.getbasetemp())
    with pytest.raises(InputError, match="has no tracks") as err:
        export_ytvis(ds, tmp_path / "vis.json")
    assert "\n" not in str(err.value) and "--track" in str(err.value)
    assert not (tmp_path / "vis.json").exists()


def test_rerun_has_frame_and_time_timelines_and_an_entity_per_track(tracked, tmp_path):
    import rerun.chunk as rc

    from labeler.export.rerun import export_rerun

    rows = {r["row"]: r for r in _rows(tracked)}
    frames: dict[int, list[int]] = defaultdict(list)  # track id -> the frames of its objects with a depth
    for o in open_dataset(tracked).objects.to_table().to_pylist():
        if o["depth_m_median"] is not None:
            frames[o["track_id"]].append(rows[o["row"]]["frame_index"])
    logged: dict[str, list[int]] = defaultdict(list)  # entity -> frames with positions
    times: dict[int, float] = {}
    timelines: set[str] = set()
    for chunk in rc.RrdReader(export_rerun(tracked, tmp_path / "lab.rrd")).stream():
        name, batch = str(chunk.entity_path), chunk.to_record_batch()
        if name == "/world/sample":
            timelines.update(chunk.timeline_names)
            t = batch.column("time").cast("int64").to_pylist()  # ns
            times.update(zip(batch.column("frame").to_pylist(), (v / 1e9 for v in t), strict=True))
        if name.startswith("/world/tracks/") and "Points3D:positions" in batch.schema.names:
            pos = batch.column("Points3D:positions").to_pylist()
            logged[name] += [f for f, p in zip(batch.column("frame").to_pylist(), pos, strict=True) if p]
    assert {"sample", "frame", "time"} <= timelines
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert times == pytest.approx({r["frame_index"]: r["timestamp_s"] for r in ok})
    assert {k: sorted(v) for k, v in logged.items()} == {
        f"/world/tracks/{t}": sorted(v) for t, v in frames.items()
    }
