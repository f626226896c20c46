"""The exports open in their own libraries and honour review decisions: COCO (pycocotools), Rerun (the
.rrd read back with rerun's reader), Hugging Face (`datasets.load_from_disk`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from labeler import open_dataset


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> tuple[Path, str, tuple[str, int]]:
    """The tiny dataset with one sample rejected and one object of another rejected."""
    from tests.export.conftest import reviewed_copy

    return reviewed_copy(tmp_path_factory, "exports")


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


def test_rerun_and_hf_record_the_licences_and_take_a_selection(reviewed, tmp_path):
    """Both exports name every model in the labels' history, honour `--selection` (the rejected sample
    stays out of it too) and `--strict-licence`."""
    import datasets
    import rerun.chunk as rc

    from data_schema.curation import Selection
    from data_schema.licences import LicenceRecord
    from labeler.dataset.selections import write_selection
    from labeler.export.coco import ExportScope
    from labeler.export.hf import export_hf
    from labeler.export.rerun import export_rerun

    src, rejected, _ = reviewed
    path = shutil.copytree(src, tmp_path / "ds")
    ids = open_dataset(path).sample_ids
    pick = [rejected, ids[3], ids[5]]
    write_selection(path, Selection(name="pick", sample_ids=pick, how="test", dataset_version="x"))
    scope = ExportScope(selection="pick", strict_licence="commercial")  # sgbm + classical: allowed
    hf_dir = export_hf(path, tmp_path / "hf", scope=scope)
    hf = datasets.load_from_disk(str(hf_dir))
    assert sorted(hf["sample_id"]) == sorted(pick[1:])
    rec = LicenceRecord.model_validate_json((hf_dir / "licences.json").read_text())
    assert [(m.role, m.model, m.licence) for m in rec.models] == [
        ("stereo", "sgbm", "Apache-2.0"),
        ("masks", "classical", "labeler"),
    ]
    assert hf.info.license.splitlines() == [
        "sgbm (stereo): Apache-2.0, allowed",
        "classical (masks): labeler, allowed",
    ]
    rrd = export_rerun(path, tmp_path / "lab.rrd", scope=scope)
    rows: dict[str, int] = {}
    texts: list[str] = []
    for chunk in rc.RrdReader(rrd).stream():
        name = str(chunk.entity_path)
        rows[name] = rows.get(name, 0) + chunk.num_rows
        if name == "/licences":
            batch = chunk.to_record_batch()
            col = next(c for c in batch.schema.names if c.endswith(":text"))
            texts += [str(v) for v in batch.column(col).to_pylist()]
    assert rows["/world/sample"] == 2  # the selection's two kept samples
    assert len(texts) == 1 and "selection pick" in texts[0]
    assert "- sgbm (stereo): Apache-2.0, allowed" in texts[0] and "commercial use allowed" in texts[0]
