"""`labeler export coco`: pycocotools loads the file and its masks give back the dataset's instance ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_schema.commands import PseudoLabelConfig
from labeler import open_dataset
from labeler.cli.main import app
from labeler.export.coco import export_coco
from pipelines.pseudo_label import run_pseudo_label
from tests.conftest import identity_calibration_yaml, write_plane_pairs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three 128x96 pairs labelled with sgbm + classical masks."""
    root = tmp_path_factory.mktemp("export")
    write_plane_pairs(root / "rect", 3)
    calib = identity_calibration_yaml(root / "calib.yaml", 128, 96)
    run_pseudo_label(
        PseudoLabelConfig(
            inputs=root / "rect",
            calib=calib,
            out=root / "ds",
            scheduler="sync",
            progress=False,
            previews=False,
        )
    )
    return root / "ds"


def ids_from_coco(coco, image_id: int, shape: tuple[int, int]) -> np.ndarray:
    ids = np.zeros(shape, np.uint16)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        mask = coco.annToMask(ann).astype(bool)
        assert not (ids[mask] > 0).any(), "annotations of one image overlap"
        ids[mask] = ann["instance_id"]
    return ids


def assert_round_trip(dataset: Path, out: Path) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(out))
    ds = open_dataset(dataset)
    assert len(coco.getImgIds()) == len(ds) and coco.getCatIds() == [1]
    assert coco.loadCats([1])[0]["name"] == "object"
    rows = {ds[i].sample_id: ds[i].row for i in range(len(ds))}
    n_objects = 0
    for i in range(len(ds)):
        s = ds[i]
        (img,) = [im for im in coco.dataset["images"] if im["sample_id"] == s.sample_id]
        assert img["id"] == rows[s.sample_id] + 1 and (img["width"], img["height"]) == (128, 96)
        np.testing.assert_array_equal(ids_from_coco(coco, img["id"], (96, 128)), s.instance_ids)
        anns = {a["instance_id"]: a for a in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))}
        assert set(anns) == {o.id for o in s.objects}
        for o in s.objects:
            a = anns[o.id]
            assert (
                a["area"] == o.area_px and a["bbox"] == o.bbox and a["iscrowd"] == 0 and a["category_id"] == 1
            )
            assert a["score"] == o.score and a["valid_fraction"] == o.valid_fraction
            assert (a["depth_m_median"], a["depth_m_p10"], a["depth_m_p90"]) == (
                o.depth_m_median,
                o.depth_m_p10,
                o.depth_m_p90,
            )
            assert isinstance(a["segmentation"]["counts"], str)
        n_objects += len(s.objects)
    assert len(coco.getAnnIds()) == n_objects > 0
    assert len({a["id"] for a in coco.dataset["annotations"]}) == n_objects  # unique annotation ids


def test_masks_round_trip_exactly(dataset, tmp_path):
    out = export_coco(dataset, tmp_path / "coco" / "instances.json")
    assert out == tmp_path / "coco" / "instances.json"
    assert_round_trip(dataset, out)
    data = json.loads(out.read_text())
    assert data["info"]["masks"]["name"] == "classical" and data["info"]["version"]
    assert [p.name for p in out.parent.iterdir()] == ["instances.json"]  # atomic: no temporary left behind


def test_same_dataset_same_bytes(dataset, tmp_path):
    a, b = export_coco(dataset, tmp_path / "a.json"), export_coco(dataset, tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()


def test_tables_hold_no_rle(dataset):
    """Masks live in `instance_ids` only; the export encodes them (checked exactly above)."""
    names = set(open_dataset(dataset).objects.schema.names)
    assert "rle" not in names and {"sample_id", "row", "id", "bbox", "depth_m_median"} <= names


def test_images_are_written_when_asked(dataset, tmp_path):
    from labeler.io import read_rgb

    out = export_coco(dataset, tmp_path / "x" / "coco.json", images=tmp_path / "x" / "images")
    data = json.loads(out.read_text())
    ds = open_dataset(dataset)
    for img in data["images"]:
        assert img["file_name"] == f"images/{img['sample_id']}.png"
        left = read_rgb(out.parent / img["file_name"])
        np.testing.assert_array_equal(left, ds[ds.sample_ids.index(img["sample_id"])].left)


def test_cli(dataset, tmp_path):
    res = CliRunner().invoke(app, ["export", "coco", str(dataset), "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    assert f"COCO instances: {tmp_path / 'c.json'}" in res.output
    res = CliRunner().invoke(
        app, ["export", "coco", str(tmp_path / "nope"), "--out", str(tmp_path / "d.json")]
    )
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "no manifest" in res.output
