"""The exports open in their own libraries and honour review decisions: COCO (pycocotools), Rerun (the
.rrd read back with rerun's reader), Hugging Face (`datasets.load_from_disk`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from labeler import open_dataset
from labeler.dataset.decisions import current_labels, decide


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> tuple[Path, str, tuple[str, int]]:
    """The tiny dataset with one sample rejected and one object of another rejected."""
    from tests.train.conftest import make_tiny_dataset

    path = tmp_path_factory.mktemp("exports") / "ds"
    shutil.copytree(make_tiny_dataset(tmp_path_factory.getbasetemp()), path)
    ds = open_dataset(path)
    labels = current_labels(ds)
    rejected = ds.sample_ids[0]
    obj = (ds.sample_ids[1], ds[1].objects[0].id)
    decide(path, sample_id=rejected, labels=labels[rejected], decision="reject", user="u")
    decide(path, sample_id=obj[0], labels=labels[obj[0]], decision="reject", object_id=obj[1], user="u")
    decide(path, sample_id=ds.sample_ids[2], labels=labels[ds.sample_ids[2]], decision="accept", user="u")
    return path, rejected, obj


def test_coco_leaves_rejected_out_and_includes_them_on_request(reviewed, tmp_path):
    from pycocotools.coco import COCO

    from labeler.export.coco import export_coco

    path, rejected, (sid, oid) = reviewed
    ds = open_dataset(path)
    coco = COCO(str(export_coco(path, tmp_path / "coco.json")))
    names = {img["sample_id"]: img for img in coco.dataset["images"]}
    assert rejected not in names and len(names) == len(ds) - 1
    kept = coco.loadAnns(coco.getAnnIds(imgIds=[names[sid]["id"]]))
    assert oid not in [a["instance_id"] for a in kept]
    assert names[ds.sample_ids[2]]["review"] == "accept"
    full = COCO(str(export_coco(path, tmp_path / "all.json", include_rejected=True)))
    assert len(full.dataset["images"]) == len(ds)
    assert len(full.dataset["annotations"]) == sum(len(ds[i].objects) for i in range(len(ds)))
    mask = full.annToMask(next(a for a in full.dataset["annotations"] if a["review"] == "reject"))
    assert mask.sum() == ds[1].objects[0].area_px


def test_rerun_recording_reads_back(reviewed, tmp_path):
    import rerun.chunk as rc

    from labeler.export.rerun import export_rerun

    path, _, (sid, oid) = reviewed
    ds = open_dataset(path)
    rrd = export_rerun(path, tmp_path / "lab.rrd")
    reader = rc.RrdReader(rrd)
    assert [r.application_id for r in reader.recordings()] == ["labeler"]
    rows: dict[str, int] = {}
    columns: dict[str, set[str]] = {}
    for chunk in reader.stream():
        name = str(chunk.entity_path)
        rows[name] = rows.get(name, 0) + chunk.num_rows
        columns.setdefault(name, set()).update(chunk.to_record_batch().schema.names)
    n = len(ds) - 1  # the rejected sample is left out
    for entity in ("rgb", "depth", "masks"):
        assert rows[f"/world/camera/image/{entity}"] >= n
    assert rows["/world/points"] == n and rows["/world/sample"] == n
    assert "Pinhole:image_from_camera" in columns["/world/camera/image"]
    assert "Points3D:positions" in columns["/world/points"]


def test_back_projection_puts_a_pixel_at_its_depth():
    from labeler.export.rerun import back_project

    depth = np.full((4, 6), np.nan, np.float32)
    depth[1, 4] = 2.0
    pts, colours = back_project(depth, np.full((4, 6, 3), 9, np.uint8), (100.0, 50.0, 3.0, 2.0), stride=1)
    np.testing.assert_allclose(pts, [[(4 - 3) * 2 / 100, (1 - 2) * 2 / 50, 2.0]])
    assert colours.tolist() == [[9, 9, 9]]


def test_hugging_face_folder_has_float_depth_and_uint16_masks(reviewed, tmp_path):
    import datasets

    from labeler.export.hf import export_hf

    path, rejected, (sid, oid) = reviewed
    ds = open_dataset(path)
    hf = datasets.load_from_disk(str(export_hf(path, tmp_path / "hf")))
    assert hf.num_rows == len(ds) - 1 and rejected not in hf["sample_id"]
    assert hf.features["depth_m"].dtype == "float32" and hf.features["instance_ids"].dtype == "uint16"
    row = hf.with_format("numpy")[hf["sample_id"].index(sid)]
    s = ds[1]
    np.testing.assert_array_equal(row["depth_m"], s.depth_m)  # NaN where invalid, metres, bit for bit
    expected = s.instance_ids.copy()
    expected[expected == oid] = 0
    np.testing.assert_array_equal(row["instance_ids"], expected)
    plain = hf[hf["sample_id"].index(sid)]
    assert [o["id"] for o in plain["objects"]] == [o.id for o in s.objects if o.id != oid]
    np.testing.assert_array_equal(np.asarray(plain["left"]), s.left)  # PNG: lossless
    everything = datasets.load_from_disk(str(export_hf(path, tmp_path / "hf-all", include_rejected=True)))
    assert everything.num_rows == len(ds)
