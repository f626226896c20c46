"""The pseudo-label DAG end to end: reader API, failures, resume, many writers, validate, demo accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import SampleRecord
from labeler import open_dataset
from labeler.dataset.validate import validate_dataset
from pipelines.pseudo_label import LabelRun, run_pseudo_label
from tests.conftest import identity_calibration_yaml, kill_after_first_shard, write_plane_pairs


def label(inputs: Path, calib: Path, out: Path, **kw) -> LabelRun:
    kw.setdefault("scheduler", "sync")
    return run_pseudo_label(PseudoLabelConfig(inputs=inputs, calib=calib, out=out, progress=False, **kw))


def records(out: Path) -> list[SampleRecord]:
    """Every sample's record (ok and failed), in row order, from the samples table."""
    from labeler.dataset.tables import sample_from_row

    return [sample_from_row(r) for r in open_dataset(out).samples.to_table().sort_by("row").to_pylist()]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Six rectified 128x96 pairs (one unreadable) labelled with sgbm + classical, 4 samples per shard."""
    root = tmp_path_factory.mktemp("small")
    write_plane_pairs(root / "rect", 6)
    (root / "rect" / "left" / "pair_006.png").write_bytes(b"broken")
    (root / "rect" / "right" / "pair_006.png").write_bytes(b"broken")
    calib = identity_calibration_yaml(root / "calib.yaml", 128, 96)
    manifest = label(root / "rect", calib, root / "ds", samples_per_shard=4)
    return root, calib, manifest


def test_reader_api(small):
    root, _, manifest = small
    ds = open_dataset(root / "ds")
    assert len(ds) == 6 and ds.sample_ids == [f"pair_{i:03d}" for i in range(6)]
    s = ds[0]
    assert s.sample_id == "pair_000"
    assert s.left.shape == (96, 128, 3) and s.left.dtype == np.uint8
    for name in ("disparity_px", "depth_m", "confidence"):
        a = getattr(s, name)
        assert a.shape == (96, 128) and a.dtype == np.float32
    assert s.instance_ids.dtype == np.uint16
    assert np.array_equal(np.isnan(s.confidence), np.isnan(s.disparity_px))
    # the box sits at 16 px: depth = fx·B/d = 300·0.1/16
    box = s.depth_m[30:66, 48:80]
    assert np.nanmedian(box) == pytest.approx(30 / 16, rel=0.01)
    ids = {int(i) for i in np.unique(s.instance_ids) if i}
    assert ids == {o.id for o in s.objects}
    assert all(o.bbox and o.area_px > 0 and 0 <= o.score <= 1 for o in s.objects)
    assert [f.sample_id for f in ds.failures] == ["pair_006"]
    assert ds[5].sample_id == "pair_005" and ds[-1].row == 5
    with pytest.raises(IndexError):
        ds[6]
    import pickle

    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 20_000 and clone[3].sample_id == "pair_003"


def test_tables_answer_queries_without_a_loop(small):
    """The README's query: objects nearer than 2 m with a score above 0.9, straight from the tables."""
    import duckdb
    import pyarrow.compute as pc

    root, _, _ = small
    ds = open_dataset(root / "ds")
    objects = ds.objects.to_table()
    near = ds.objects.to_table(filter=(pc.field("depth_m_median") < 2) & (pc.field("score") > 0.9))
    want = [
        (o.sample_id, o.id)
        for i in range(len(ds))
        for o in ds[i].objects
        if o.depth_m_median is not None and o.depth_m_median < 2 and o.score > 0.9
    ]
    assert sorted(zip(near["sample_id"].to_pylist(), near["id"].to_pylist(), strict=True)) == sorted(want)
    assert want, "the plane pairs have boxes at 1.9 m"
    n = duckdb.sql("SELECT count(*) FROM objects WHERE depth_m_median < 2 AND score > 0.9").fetchall()[0][0]
    assert n == len(want) and objects.num_rows == sum(len(ds[i].objects) for i in range(len(ds)))


def test_failure_is_one_line_in_the_samples_table(small):
    root, _, run = small
    (fail,) = run.new_failures
    assert fail.error.startswith("load: ") and "pair_006.png: not a readable image" in fail.error
    assert "\n" not in fail.error
    assert validate_dataset(root / "ds") == []


def test_manifest_records_how_data_was_made(small):
    root, calib, manifest = small
    data = json.loads((root / "ds" / "manifest.json").read_text())
    assert (
        data["schema_version"] == 3
        and data["stereo"]["name"] == "sgbm"
        and data["masks"]["name"] == "classical"
    )
    assert data["counts"] == {
        "samples": 7,
        "ok": 6,
        "failed": 1,
        "skipped": 0,
        "objects": data["counts"]["objects"],
        "shards": 2,
        "tracks": 0,
    }
    assert "samples" not in data and len((root / "ds" / "manifest.json").read_text()) < 20_000
    assert {"numpy", "zarr", "dask", "opencv-contrib-python-headless"} <= set(data["library_versions"])
    assert data["calibration_sha256"] and len(data["dataset_version"]) == 64
    left = data["layout"]["arrays"][0]
    assert left["chunk_shape"] == [1, 96, 128, 3] and left["shard_shape"] == [4, 96, 128, 3]
    ds = open_dataset(root / "ds")
    ok = records(root / "ds")[0]
    assert ok.source.left_sha256 and ok.digests.depth_m and ok.stats.n_objects == len(ds[0].objects)
    assert (root / "ds" / "previews" / "pair_000.png").is_file()
    index = (root / "ds" / "index.html").read_text()
    page = (root / "ds" / "gallery" / "page-00001.html").read_text()
    assert page.count("<figure>") == 6 and "pair_006" in index and "gallery/page-00001.html" in index


def test_rerun_is_idempotent_and_reads_no_arrays(small, monkeypatch):
    from labeler.dataset import shards

    root, calib, first = small
    before = records(root / "ds")
    tables = {p: p.stat().st_mtime_ns for p in (root / "ds" / "tables").rglob("*.parquet")}

    def no_reads(*a, **k):
        raise AssertionError("a no-op re-run read arrays")

    monkeypatch.setattr(shards, "read_rows", no_reads)
    again = label(root / "rect", calib, root / "ds", samples_per_shard=4)
    assert again.dataset_version == first.dataset_version and again.labelled == 0 and again.skipped == 7
    assert {p: p.stat().st_mtime_ns for p in (root / "ds" / "tables").rglob("*.parquet")} == tables
    assert records(root / "ds") == before


def test_partial_input_folder_keeps_earlier_samples(small, tmp_path):
    """Append-only: re-running with fewer inputs drops nothing."""
    import shutil

    root, calib, first = small
    shutil.copytree(root / "ds", tmp_path / "ds")
    write_plane_pairs(tmp_path / "few", 2)
    again = label(tmp_path / "few", calib, tmp_path / "ds", samples_per_shard=4)
    assert again.manifest.counts == first.manifest.counts and records(tmp_path / "ds") == records(root / "ds")


def test_new_samples_are_appended(small, tmp_path):
    root, calib, manifest = small
    import shutil

    shutil.copytree(root / "ds", tmp_path / "ds")
    shutil.copytree(root / "rect", tmp_path / "rect")
    write_plane_pairs(tmp_path / "more", 2, seed=5)
    for side in ("left", "right"):
        for i, p in enumerate(sorted((tmp_path / "more" / side).iterdir())):
            shutil.copy(p, tmp_path / "rect" / side / f"zz_new_{i}.png")
    old = {s.sample_id: s.row for s in records(root / "ds")}
    grown = label(tmp_path / "rect", calib, tmp_path / "ds", samples_per_shard=4)
    index = {s.sample_id: s.row for s in records(tmp_path / "ds")}
    assert all(index[k] == v for k, v in old.items())  # earlier rows keep their place
    assert sorted(index[k] for k in ("zz_new_0", "zz_new_1")) == [8, 9]  # a fresh shard: nothing rewritten
    assert grown.labelled == 2 and grown.skipped == 7
    assert len(open_dataset(tmp_path / "ds")) == 8 and validate_dataset(tmp_path / "ds") == []


def test_other_settings_need_another_out(small):
    from data_schema.backends import SgbmConfig
    from labeler.errors import InputError

    root, calib, _ = small
    with pytest.raises(InputError, match="other settings.*use a new --out"):
        label(root / "rect", calib, root / "ds", samples_per_shard=4, stereo=SgbmConfig(block_size=5))


def test_validate_finds_damage(small, tmp_path):
    import shutil

    import zarr
    from typer.testing import CliRunner

    from labeler.cli.main import app

    root, _, _ = small
    shutil.copytree(root / "ds", tmp_path / "ds")
    group = zarr.open_group(tmp_path / "ds" / "data.zarr", mode="r+")
    # rewrite a whole shard (its only writer), with one sample's depth changed
    block = group["depth_m"][0:4]
    block[1, 10, 10] = 123.0
    group["depth_m"][0:4] = block
    ids = group["instance_ids"][4:6]
    ids[0, 0, 0] = 77
    group["instance_ids"][4:6] = ids
    problems = validate_dataset(tmp_path / "ds")
    assert any(p.startswith("sample pair_001 (row 1)/depth_m: content hash differs") for p in problems)
    assert any("pair_001 (row 1)/depth_m: depth_m != fx·baseline/disparity_px" in p for p in problems)
    assert any(
        p.startswith("sample pair_004 (row 4)/instance_ids: ids [77] not in the objects table")
        for p in problems
    )
    res = CliRunner().invoke(app, ["validate", str(tmp_path / "ds")])
    assert res.exit_code == 1 and "pair_001" in res.output
    # a lost shard file reads back as fill values: every sample in it is reported
    shutil.rmtree(tmp_path / "ds" / "data.zarr" / "left")
    assert any("left" in p for p in validate_dataset(tmp_path / "ds"))


def test_many_workers_write_every_shard_once(tmp_path):
    """Eight workers, 20 samples, 2 per shard: every row written and intact (no lost shard writes)."""
    write_plane_pairs(tmp_path / "rect", 20, 96, 64, seed=3)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    manifest = label(
        tmp_path / "rect",
        calib,
        tmp_path / "ds",
        samples_per_shard=2,
        scheduler="threads",
        workers=8,
        previews=False,
    )
    assert manifest.manifest.counts.ok == 20 and manifest.manifest.counts.shards == 10
    assert validate_dataset(tmp_path / "ds") == []
    assert len(list((tmp_path / "ds" / "tables" / "samples").iterdir())) == 10


def test_killed_run_resumes_without_duplicates(tmp_path):
    """SIGKILL `labeler run` once its first shard is written, run it again: complete, valid, no duplicates."""
    raw = write_plane_pairs(tmp_path / "raw", 24, 480, 360, seed=1, suffix_layout=True)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 480, 360)
    out = tmp_path / "ds"
    cmd = [
        sys.executable,
        "-m",
        "labeler.cli",
        "run",
        str(raw),
        "--calib",
        str(calib),
        "--out",
        str(out),
        "--scheduler",
        "threads",
        "--workers",
        "2",
        "--samples-per-shard",
        "2",
    ]
    _, n_done = kill_after_first_shard(cmd, out)
    assert 0 < n_done < 12, "the run finished before it could be killed"
    assert validate_dataset(out) == []  # a killed dataset is valid as it stands
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert validate_dataset(out) == []
    ds = open_dataset(out)
    assert sorted(ds.sample_ids) == [f"pair_{i:03d}" for i in range(24)] and len(set(ds.sample_ids)) == 24
    assert len(json.loads((out / "rectified" / "pairs.json").read_text())["pairs"]) == 24


def test_demo_objects_depth_against_truth(calibrated, demo_dir, tmp_path):
    """Demo scenes: each rendered object's median depth, from sgbm + classical, within 3 % of the truth."""
    import cv2

    from labeler.rig.calibration import load_calibration
    from labeler.rig.rectify import RectifyMaps
    from labeler.synthetic.demo import load_demo_truth

    _, calib_path = calibrated
    manifest = label(demo_dir / "scenes", calib_path, tmp_path / "ds", rectify=True)
    assert manifest.manifest.counts.ok == 2
    maps = RectifyMaps.from_calibration(load_calibration(calib_path))
    ds = open_dataset(tmp_path / "ds")
    truth = {s.pair_id: s for s in load_demo_truth(demo_dir).scenes}
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        raw_ids = np.load(demo_dir / "truth" / f"{s.sample_id}.npz")["instance_ids"]
        rect_ids = cv2.remap(raw_ids.astype(np.float32), *maps.left, cv2.INTER_NEAREST).astype(int)
        for obj in truth[s.sample_id].objects:
            mask = rect_ids == obj.id
            ious = [
                (
                    np.logical_and(mask, s.instance_ids == o.id).sum()
                    / np.logical_or(mask, s.instance_ids == o.id).sum(),
                    o,
                )
                for o in s.objects
            ]
            iou, best = max(ious, key=lambda t: t[0])
            assert iou > 0.5, f"{s.sample_id} object {obj.id}: best IoU {iou:.2f}"
            assert abs(best.depth_m_median / obj.depth_m_median - 1) < 0.03
            checked += 1
    assert checked == 6


def test_gpu_flag_without_cuda_is_one_line(tmp_path):
    import torch

    from labeler.errors import LabelerError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    write_plane_pairs(tmp_path / "rect", 1, 96, 64)
    with pytest.raises(LabelerError, match=r"--gpu 0: CUDA device 0 not found \(0 visible\); drop --gpu"):
        label(tmp_path / "rect", calib, tmp_path / "ds", gpus=(0,))


def test_cpu_only_backends_stay_on_the_cpu_in_a_gpu_run(tmp_path, monkeypatch):
    """`--gpu 0` with sgbm + classical masks: the workers' device is cuda:0, yet both backends are built
    for the CPU (each refuses a GPU device outright), the graph asks for no GPU, and the labels are the CPU
    run's."""
    from data_schema.backends import ClassicalMasksConfig, SgbmConfig
    from labeler.segment.classical import ClassicalMaskBackend
    from labeler.stereo.sgbm import SgbmBackend
    from pipelines import graph, run

    with pytest.raises(ValueError, match="CPU only"):
        SgbmBackend(SgbmConfig(), device="cuda:0")
    with pytest.raises(ValueError, match="CPU only"):
        ClassicalMaskBackend(ClassicalMasksConfig(), device="cuda:0")
    devices: list[str] = []
    worker_device = graph._device
    monkeypatch.setattr(graph, "_device", lambda gpus: devices.append(worker_device(gpus)) or devices[-1])
    monkeypatch.setattr(run.cluster, "check_gpus", lambda gpus, scheduler: None)  # no cuda:0 here
    asked: list[dict] = []
    build = graph.build_graph

    def recording_build(*args, **kw):
        writes = build(*args, **kw)
        for w in writes.values():
            asked.extend(dict(layer.annotations or {}) for layer in w.__dask_graph__().layers.values())
        return writes

    monkeypatch.setattr(run, "build_graph", recording_build)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    write_plane_pairs(tmp_path / "rect", 2, 96, 64)
    gpu = label(tmp_path / "rect", calib, tmp_path / "gpu", gpus=(0,), previews=False)
    assert devices and set(devices) == {"cuda:0"}  # the stages were handed the worker's GPU...
    label(tmp_path / "rect", calib, tmp_path / "cpu", previews=False)
    assert gpu.manifest.counts.ok == 2 and not gpu.new_failures  # ...and ran on the CPU all the same
    assert any("retries" in a for a in asked)  # the annotations are where this looks for them
    assert not any("resources" in a for a in asked)
    assert [(s.sample_id, s.digests) for s in records(tmp_path / "gpu")] == [
        (s.sample_id, s.digests) for s in records(tmp_path / "cpu")
    ]


def test_batches_give_the_same_labels_and_isolate_a_bad_sample(tmp_path):
    """--batch-size 3: every sample's arrays identical to one-at-a-time; a wrong-size pair fails alone."""
    from labeler.io import write_png

    write_plane_pairs(tmp_path / "rect", 5, 96, 64, seed=9)
    rng = np.random.default_rng(0)
    for side in ("left", "right"):  # wrong size for the calibration, inside the first batch
        write_png(
            tmp_path / "rect" / side / "pair_001b.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        )
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    label(tmp_path / "rect", calib, tmp_path / "one", previews=False)
    three = label(tmp_path / "rect", calib, tmp_path / "three", previews=False, batch_size=3)
    assert [(s.sample_id, s.status, s.digests) for s in records(tmp_path / "one")] == [
        (s.sample_id, s.status, s.digests) for s in records(tmp_path / "three")
    ]
    (bad,) = three.new_failures
    assert bad.sample_id == "pair_001b" and "size 60x40 is not the calibration's 96x64" in bad.error
    assert three.manifest.counts.ok == 5 and validate_dataset(tmp_path / "three") == []


def test_existing_process_cluster(tmp_path):
    """`--scheduler tcp://…`: the same DAG on a running cluster of worker processes (tasks are pickled)."""
    from distributed import Client, LocalCluster

    write_plane_pairs(tmp_path / "rect", 4, 96, 64, seed=4)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    label(tmp_path / "rect", calib, tmp_path / "sync", previews=False)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        label(
            tmp_path / "rect",
            calib,
            tmp_path / "remote",
            previews=False,
            samples_per_shard=2,
            scheduler=cluster.scheduler_address,
        )
    assert [s.digests for s in records(tmp_path / "remote")] == [
        s.digests for s in records(tmp_path / "sync")
    ]
    assert validate_dataset(tmp_path / "remote") == []
