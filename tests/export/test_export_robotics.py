"""The WebDataset and LeRobot exports: read back (webdataset package; LeRobot's documented v3.0 layout,
since the `lerobot` package's pins do not install beside labeler's), depth equal to the dataset's to the
documented precision, review decisions and selections honoured, licences recorded, --strict-licence."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from labeler import open_dataset


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> tuple[Path, str, tuple[str, int]]:
    """The tiny dataset with one sample rejected and one object of another rejected."""
    from tests.export.conftest import reviewed_copy

    return reviewed_copy(tmp_path_factory, "robotics")


def _png16(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.ndim == 2
    return img


def test_webdataset_reads_back_with_depth_bit_for_bit(reviewed, tmp_path):
    import webdataset as wds

    from labeler.export.webdataset import export_webdataset

    path, rejected, (sid, oid) = reviewed
    ds = open_dataset(path)
    out = export_webdataset(path, tmp_path / "wds", samples_per_tar=2)
    info = json.loads((out / "info.json").read_text())
    n = len(ds) - 1
    assert info["n_samples"] == n and len(info["shards"]) == -(-n // 2)
    assert {m["model"] for m in info["model_licences"]} == {"sgbm", "classical"}
    urls = [str(out / s["file"]) for s in info["shards"]]
    seen = {}
    for item in wds.WebDataset(urls, shardshuffle=False):
        objects = json.loads(item["objects.json"])
        depth = np.load(io.BytesIO(item["depth_m.npy"]))
        ids = _png16(item["instance_ids.png"])
        left = cv2.cvtColor(cv2.imdecode(np.frombuffer(item["left.png"], np.uint8), 1), cv2.COLOR_BGR2RGB)
        seen[objects["sample_id"]] = (depth, ids, left, objects)
    assert rejected not in seen and len(seen) == n
    for i, s_id in enumerate(ds.sample_ids):
        if s_id == rejected:
            continue
        depth, ids, left, objects = seen[s_id]
        s = ds[i]
        assert depth.dtype == np.float32 and depth.shape == s.depth_m.shape
        np.testing.assert_array_equal(depth, s.depth_m)  # NaN where invalid, bit for bit
        np.testing.assert_array_equal(left, s.left)
        want = s.instance_ids.copy()
        if s_id == sid:
            want[want == oid] = 0
        np.testing.assert_array_equal(ids, want)
        assert sorted(o["id"] for o in objects["objects"]) == sorted(np.unique(want[want > 0]).tolist())


@pytest.mark.parametrize("depth_format", ["png16", "float32"])
def test_lerobot_v3_layout_and_depth_precision(reviewed, tmp_path, depth_format):
    import pyarrow.parquet as pq

    from labeler.export.lerobot import depth_from_png16_mm, export_lerobot

    path, rejected, _ = reviewed
    ds = open_dataset(path)
    out = export_lerobot(path, tmp_path / "lr", depth_format=depth_format)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    n = len(ds) - 1
    assert info["total_frames"] == info["total_episodes"] == n and info["splits"] == {"train": f"0:{n}"}
    data_file = out / info["data_path"].format(chunk_index=0, file_index=0)
    data = pq.read_table(data_file)
    assert set(info["features"]) == set(data.column_names)
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert episodes.column("dataset_to_index").to_pylist()[-1] == n
    assert pq.read_table(out / "meta" / "tasks.parquet").num_rows == 1
    depth_info = info["features"]["observation.depth"]["info"]
    rows = data.to_pylist()
    assert rejected not in [r["labeler.sample_id"] for r in rows]
    h, w = ds[0].depth_m.shape
    for r in rows:
        want = ds[ds.sample_ids.index(r["labeler.sample_id"])].depth_m
        if depth_format == "png16":
            assert depth_info["depth_unit"] == "mm"
            got = depth_from_png16_mm(_png16(r["observation.depth"]["bytes"]))
            assert np.array_equal(np.isnan(got), np.isnan(want))  # invalid stays invalid
            assert np.nanmax(np.abs(got - want)) <= 0.0005 + 1e-6  # documented: 0.5 mm
        else:
            assert depth_info["depth_unit"] == "m"
            got = np.asarray(r["observation.depth"], dtype=np.float32).reshape(h, w)
            np.testing.assert_array_equal(got, want)
    labeler_meta = json.loads((out / "meta" / "labeler.json").read_text())
    assert labeler_meta["dataset_version"] == ds.version


def test_exports_take_a_selection_and_strict_licence(reviewed, tmp_path):
    from data_schema.curation import Selection
    from labeler.dataset.selections import write_selection
    from labeler.errors import LabelerError
    from labeler.export.coco import ExportScope
    from labeler.export.webdataset import export_webdataset

    path, rejected, _ = reviewed
    ds = open_dataset(path)
    chosen = ds.sample_ids[2:4]
    write_selection(path, Selection(name="pick", sample_ids=chosen, how="test", dataset_version=ds.version))
    out = export_webdataset(path, tmp_path / "sel", scope=ExportScope(selection="pick"))
    assert json.loads((out / "info.json").read_text())["n_samples"] == len(chosen)
    with pytest.raises(LabelerError, match="no selection 'nope'"):
        export_webdataset(path, tmp_path / "x", scope=ExportScope(selection="nope"))
    with pytest.raises(LabelerError, match="selection name"):
        export_webdataset(path, tmp_path / "x", scope=ExportScope(selection="../evil"))
    # sgbm + classical: commercial use allowed, so the strict export goes through
    export_webdataset(path, tmp_path / "strict", scope=ExportScope(strict_licence="commercial"))
