"""Layout v2: validate names each kind of damage, a kill during the tables' write resumes, v1 migrates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_schema.commands import PseudoLabelConfig
from labeler import open_dataset
from labeler.dataset import shards
from labeler.dataset.index import read_shard_index
from labeler.dataset.validate import validate_dataset
from pipelines.pseudo_label import run_pseudo_label
from tests.conftest import identity_calibration_yaml, write_plane_pairs


def quick_cfg(inputs: Path, calib: Path, out: Path, **kw) -> PseudoLabelConfig:
    """The tests' labelling settings: 2 samples per shard, in-process, quiet, no previews."""
    opts = {"samples_per_shard": 2, "scheduler": "sync", "progress": False, "previews": False, **kw}
    return PseudoLabelConfig(inputs=inputs, calib=calib, out=out, **opts)


def edit_table(ds: Path, table: str, shard: int, change) -> None:
    """Rewrite one shard's table file with `change(rows)` applied (as a hand edit would)."""
    import pyarrow as pa

    entry = read_shard_index(ds)[shard]
    ref = entry.samples if table == "samples" else entry.objects
    path = ds / "tables" / table / ref.file
    t = pq.read_table(path)
    rows = change(t.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), path)


def test_edited_object_depth_is_named(copy):
    def bump(rows):
        rows[0]["depth_m_median"] = rows[0]["depth_m_median"] * 1.5
        return rows

    edit_table(copy, "objects", 0, bump)
    problems = validate_dataset(copy)
    assert any(
        "depth_m_median is" in p and "the arrays give" in p and p.startswith("sample pair_000")
        for p in problems
    ), problems
    assert any("objects table rows in s-000000.parquet changed" in p for p in problems)


def test_dropped_sample_is_named(copy):
    edit_table(copy, "samples", 1, lambda rows: rows[1:])
    problems = validate_dataset(copy)
    assert any("shard 1: samples table rows" in p for p in problems)
    assert any("1 ok / 0 failed / 0 skipped samples" in p and "says 2 / 0 / 0 / 2" in p for p in problems), (
        problems
    )


def test_duplicated_sample_is_named(copy):
    edit_table(copy, "samples", 2, lambda rows: [rows[0], {**rows[0]}])
    problems = validate_dataset(copy)
    assert any(p.startswith("sample pair_004: listed twice") for p in problems), problems


def test_edited_sample_id_is_named(copy):
    def rename(rows):
        rows[0]["sample_id"] = "renamed"
        return rows

    edit_table(copy, "samples", 0, rename)
    problems = validate_dataset(copy)
    assert any(
        "sample renamed (row 0): sample_id differs from the row plan's 'pair_000'" in p for p in problems
    ), problems


def test_truncated_shard_file_and_edited_manifest_are_named(copy):
    f = copy / "data.zarr" / "depth_m" / "c" / "1" / "0" / "0"
    f.write_bytes(f.read_bytes()[:100])
    m = json.loads((copy / "manifest.json").read_text())
    m["dataset_version"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    problems = validate_dataset(copy)
    assert any("shard 1/depth_m: shard file is 100 bytes" in p for p in problems), problems
    assert any("manifest: dataset_version does not match" in p for p in problems)


def test_validate_on_a_cluster_matches_sync(copy):
    from pipelines.validate import run_validate

    edit_table(copy, "objects", 2, lambda rows: [{**rows[0], "area_px": rows[0]["area_px"] + 1}, *rows[1:]])
    sync = validate_dataset(copy)
    threads = run_validate(copy, scheduler="threads", workers=2, progress=False)
    assert sorted(threads) == sorted(sync) and any("area_px is" in p for p in sync)


_KILL_IN_TABLE_WRITE = """
import os, signal, sys
from labeler.dataset import tables
real = tables._write_parquet_atomic
calls = {"n": 0}
def dying(path, tables):
    calls["n"] += 1
    if calls["n"] == 3:  # the second shard's samples file: its temp file exists, the rename never happens
        import pyarrow.parquet as pq
        pq.write_table(tables[0], str(path) + ".tmp-half")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, tables)
tables._write_parquet_atomic = dying
from labeler.cli.main import app
sys.argv = ["labeler", *sys.argv[1:]]
app()
"""


def test_kill_during_the_tables_write_resumes(base, tmp_path):
    out = tmp_path / "ds"
    args = [
        "pseudo-label",
        str(base / "rect"),
        "--calib",
        str(base / "calib.yaml"),
        "--out",
        str(out),
        "--scheduler",
        "sync",
        "--samples-per-shard",
        "2",
        "--no-previews",
    ]
    killed = subprocess.run([sys.executable, "-c", _KILL_IN_TABLE_WRITE, *args], capture_output=True)
    assert killed.returncode == -9
    assert len(read_shard_index(out)) == 1 and validate_dataset(out) == []
    again = subprocess.run([sys.executable, "-m", "labeler.cli", *args], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert validate_dataset(out) == []
    ds = open_dataset(out)
    assert ds.sample_ids == [f"pair_{i:03d}" for i in range(6)]
    assert ds.version == open_dataset(base / "ds").version  # the same content as an uninterrupted run


def _to_v1(ds_path: Path) -> None:
    """Turn a v2 dataset into the v1 layout labeler 0.1 wrote (one manifest with every sample)."""
    from data_schema.manifest_v1 import ManifestV1, ObjectRecordV1, SampleRecordV1
    from labeler.dataset.tables import DOUBT_FIELDS  # v1 had no doubt signals
    from labeler.segment.rle import encode

    ds = open_dataset(ds_path)
    m = ds.manifest
    samples = []
    for shard in ds.iter_shards():
        for rec in shard.samples:
            objs = []
            if rec.status == "ok":
                ids = ds.read_row(rec.row, ("instance_ids",))["instance_ids"]
                objs = [
                    ObjectRecordV1(
                        **o.model_dump(exclude={"sample_id", "row", "class_name", "track_id", *DOUBT_FIELDS}),
                        rle=encode(ids == o.id),
                    )
                    for o in shard.objects_of(rec.row)
                ]
            samples.append(
                SampleRecordV1(
                    sample_id=rec.sample_id,
                    status=rec.status,
                    error=rec.error,
                    index=rec.row,
                    source=rec.source,
                    digests=rec.digests,
                    stats=rec.stats,
                    objects=objs,
                    seconds=rec.seconds,
                )
            )
    v1 = ManifestV1(
        dataset_version="v1-version",
        labeler_version="0.1.0",
        calibration=m.calibration,
        calibration_sha256=m.calibration_sha256,
        depth=m.depth,
        stereo=m.stereo,
        masks=m.masks,
        library_versions=m.library_versions,
        layout=m.layout,
        samples=samples,
    )
    for name in ("tables", "shards.jsonl", "rows.jsonl"):
        p = ds_path / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (ds_path / "parts").mkdir()
    (ds_path / "parts" / "shard_00000.json").write_text(json.dumps({"run_key": m.run_key}))
    (ds_path / "manifest.json").write_text(v1.model_dump_json())


def test_v1_is_refused_in_one_line_then_migrated(base, copy):
    from typer.testing import CliRunner

    from labeler.cli.main import app
    from labeler.errors import InputError

    before = open_dataset(base / "ds")
    _to_v1(copy)
    with pytest.raises(InputError, match="a v1 dataset.*labeler migrate"):
        open_dataset(copy)
    res = CliRunner().invoke(app, ["migrate", str(copy)])
    assert res.exit_code == 0 and "layout v2, 6 samples ok" in res.output, res.output
    after = open_dataset(copy)
    assert validate_dataset(copy) == []
    assert after.manifest.objects.min_area_px == 1  # v1 kept every mask: the migrated policy says so
    from labeler.dataset.tables import DOUBT_FIELDS  # v1 had no doubt signals: `labeler doubt` adds them

    def labels(d):
        return [[o.model_dump(exclude=DOUBT_FIELDS) for o in d[i].objects] for i in range(6)]

    assert labels(after) == labels(before)
    assert (copy / "manifest.v1.json").is_file()


def test_a_second_writer_is_refused_in_one_line(base, tmp_path):
    """One writer per dataset: a live lock holder makes the second run fail in one line naming it."""
    from labeler.errors import LabelerError

    out = tmp_path / "ds"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from labeler.dataset.manifest import dataset_lock\n"
            f"with dataset_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = PseudoLabelConfig(
            inputs=base / "rect", calib=base / "calib.yaml", out=out, scheduler="sync", progress=False
        )
        with pytest.raises(
            LabelerError, match=rf"another labeler process is writing this dataset \(pid {holder.pid}"
        ):
            run_pseudo_label(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert run_pseudo_label(cfg).manifest.counts.ok == 6  # the OS dropped the dead holder's lock


def test_inputs_that_do_not_belong_together_are_refused(base, tmp_path):
    """Issue 12: a rectified folder made with another calibration; an --out that is the input folder."""
    from labeler.errors import InputError
    from labeler.rig.rectify import load_rectified_set

    other = identity_calibration_yaml(tmp_path / "other.yaml", 96, 64, baseline_m=0.2)
    rect = tmp_path / "rect"
    shutil.copytree(base / "rect", rect)
    (rect / "pairs.json").write_text(_pairs_json(rect, base / "calib.yaml"))
    assert load_rectified_set(rect).pairs
    with pytest.raises(InputError, match=r"pairs.json: rectified with rig .* not with .*other.yaml"):
        run_pseudo_label(PseudoLabelConfig(inputs=rect, calib=other, out=tmp_path / "ds", scheduler="sync"))
    with pytest.raises(InputError, match="is also the input folder"):
        run_pseudo_label(
            PseudoLabelConfig(inputs=rect, calib=base / "calib.yaml", out=rect, scheduler="sync")
        )


def _pairs_json(rect: Path, calib: Path) -> str:
    """A pairs.json for a left/ + right/ folder, as `labeler rectify` writes it."""
    from data_schema.captures import RectifiedPair, RectifiedSet, StereoPairSource
    from labeler.io import sha256_file

    pairs = [
        RectifiedPair(
            pair_id=p.stem,
            status="ok",
            source=StereoPairSource(
                pair_id=p.stem, layout="pairs", left_path=str(p), right_path=str(rect / "right" / p.name)
            ),
            left_path=f"left/{p.name}",
            right_path=f"right/{p.name}",
            left_sha256=sha256_file(p),
            right_sha256=sha256_file(rect / "right" / p.name),
        )
        for p in sorted((rect / "left").iterdir())
    ]
    return RectifiedSet(
        calib_path=str(calib), calib_sha256=sha256_file(calib), rig="test", image_size=[96, 64], pairs=pairs
    ).model_dump_json()


def test_changed_captures_are_relabelled_and_said(base, tmp_path):
    """Issue 12: a pair whose rectified images changed since it was labelled is labelled again, never kept."""
    from labeler.io import write_png

    rect = tmp_path / "rect"
    shutil.copytree(base / "rect", rect)
    (rect / "pairs.json").write_text(_pairs_json(rect, base / "calib.yaml"))
    cfg = quick_cfg(rect, base / "calib.yaml", tmp_path / "ds")
    first = run_pseudo_label(cfg)
    before = open_dataset(tmp_path / "ds")[3]
    img = before.left.copy()
    img[10:20, 10:20] = 255
    write_png(rect / "left" / "pair_003.png", img)
    (rect / "pairs.json").write_text(_pairs_json(rect, base / "calib.yaml"))
    again = run_pseudo_label(cfg)
    assert again.relabelled_changed == ["pair_003"] and again.labelled == 1
    after = open_dataset(tmp_path / "ds")
    assert (
        (after[3].left == img).all()
        and after[3].row == before.row
        and after[2].left.tobytes() == open_dataset(base / "ds")[2].left.tobytes()
    )
    assert again.dataset_version != first.dataset_version and validate_dataset(tmp_path / "ds") == []


def test_garbage_manifest_and_zarr_json_are_one_line_and_a_rerun_rebuilds(base, copy):
    """Issue 12: a garbage manifest.json is one line for readers and validate, and a re-run rebuilds it
    from the shard index; a garbage zarr.json is one line from validate, not a crash."""
    from labeler.errors import InputError

    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest.json: not a valid manifest.*rebuilds the manifest"):
        open_dataset(copy)
    (problem,) = validate_dataset(copy)
    assert "not a valid manifest" in problem
    cfg = quick_cfg(base / "rect", base / "calib.yaml", copy)
    again = run_pseudo_label(cfg)
    assert again.labelled == 0 and again.dataset_version == open_dataset(base / "ds").version
    (copy / "data.zarr" / "depth_m" / "zarr.json").write_text("garbage")
    problems = validate_dataset(copy)
    assert problems and all("\n" not in p for p in problems) and any("depth_m" in p for p in problems)


def test_the_reader_never_returns_damaged_arrays(copy):
    """Issue 12: a sample whose stored arrays fail their digest is one line naming sample and array."""
    from labeler.dataset.reader import DamagedSampleError

    depth = shards.open_store(copy, "r+")["depth_m"]
    block = depth[2:4]
    block[1, 5, 5] = 42.0
    depth[2:4] = block  # the whole shard, as its one writer would
    ds = open_dataset(copy)
    assert ds[2].sample_id == "pair_002"
    with pytest.raises(DamagedSampleError, match=r"sample pair_003 \(row 3\) depth_m: content differs"):
        ds[3]
    with pytest.raises(DamagedSampleError):
        ds.read(3, ("depth_m",))
    assert ds.read(3, ("left",))["left"].shape == (64, 96, 3)  # other arrays still read
    assert open_dataset(copy, verify=False)[3].depth_m[5, 5] == 42.0


def test_repair_rewrites_damaged_shards_from_their_samples(base, copy):
    """Issue 12: a truncated shard file made every re-run crash; `labeler repair` rewrites that shard (and
    one with an edited table) from the samples' sources and says what it redid; the rest is untouched."""
    from typer.testing import CliRunner

    from labeler.cli.main import app

    f = copy / "data.zarr" / "left" / "c" / "1" / "0" / "0" / "0"
    f.write_bytes(f.read_bytes()[:50])
    edit_table(copy, "objects", 2, lambda rows: [{**rows[0], "depth_m_median": 99.0}, *rows[1:]])
    untouched = (copy / "data.zarr" / "left" / "c" / "0" / "0" / "0" / "0").stat().st_mtime_ns
    assert validate_dataset(copy)
    res = CliRunner().invoke(app, ["repair", str(copy)])
    assert res.exit_code == 0, res.output
    assert "repaired shard 1: shard 1/left: shard file is 50 bytes" in res.output
    assert "repaired shard 2:" in res.output and "2 shards rewritten" in res.output
    assert validate_dataset(copy) == []
    assert open_dataset(copy).version == open_dataset(base / "ds").version  # the same labels again
    assert (copy / "data.zarr" / "left" / "c" / "0" / "0" / "0" / "0").stat().st_mtime_ns == untouched
    assert "nothing to repair" in CliRunner().invoke(app, ["repair", str(copy)]).output


def test_a_dying_shard_task_is_a_recorded_failure_of_its_samples(base, tmp_path, monkeypatch):
    """Issue 12: a task that dies outside any sample (KilledWorker, say) fails its shard's samples, in the
    samples table with the reason; the other shards are labelled and the run ends normally."""
    from pipelines import graph

    real = graph._write

    def flaky(out, shard, *a, **k):
        if shard == 1:
            raise RuntimeError("worker died three times")
        return real(out, shard, *a, **k)

    monkeypatch.setattr(graph, "_write", flaky)
    cfg = quick_cfg(base / "rect", base / "calib.yaml", tmp_path / "ds")
    res = run_pseudo_label(cfg)
    assert res.manifest.counts.ok == 4 and res.n_new_failed == 2
    assert {f.sample_id for f in res.new_failures} == {"pair_002", "pair_003"}
    assert res.new_failures[0].error == "shard: RuntimeError: worker died three times"
    assert validate_dataset(tmp_path / "ds") == []
    monkeypatch.setattr(graph, "_write", real)
    again = run_pseudo_label(cfg.model_copy(update={"retry_failed": True}))
    assert again.manifest.counts.ok == 6 and again.labelled == 2


def test_bad_out_scheduler_and_gpu_are_one_line(base, tmp_path):
    """Issue 12: --out a file, an unreachable or nonsense --scheduler, --gpu -1: one line each, no store."""
    from pydantic import ValidationError

    from labeler.errors import InputError, LabelerError

    (tmp_path / "file").write_text("x")
    common = {"inputs": base / "rect", "calib": base / "calib.yaml", "progress": False}
    with pytest.raises(InputError, match="is a file, not a dataset folder"):
        run_pseudo_label(PseudoLabelConfig(out=tmp_path / "file", scheduler="sync", **common))
    with pytest.raises(LabelerError, match="--scheduler tcp://127.0.0.1:9: no Dask scheduler answers"):
        run_pseudo_label(PseudoLabelConfig(out=tmp_path / "ds", scheduler="tcp://127.0.0.1:9", **common))
    assert not (tmp_path / "ds" / "data.zarr").exists()
    with pytest.raises(ValidationError, match="scheduler"):
        PseudoLabelConfig(out=tmp_path / "ds", scheduler="nonsense", **common)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        PseudoLabelConfig(out=tmp_path / "ds", gpus=(-1,), **common)


def test_capture_names_in_any_script_and_unusable_entries(tmp_path, caplog):
    """Issue 12: non-ASCII names keep distinct ids (they all mapped to `pair`); a folder named like an
    image is named in a warning instead of skipped without a word."""
    from labeler.rig.captures import discover_pairs

    write_plane_pairs(tmp_path / "in", 2, 64, 48)
    for side in ("left", "right"):
        (tmp_path / "in" / side / "pair_000.png").rename(tmp_path / "in" / side / "フレーム.png")
        (tmp_path / "in" / side / "pair_001.png").rename(tmp_path / "in" / side / "кадр.png")
        (tmp_path / "in" / side / "odd.png").mkdir()
    with caplog.at_level("WARNING"):
        ids = [s.pair_id for s in discover_pairs(tmp_path / "in", layout="pairs")]
    assert sorted(ids) == sorted(["フレーム", "кадр"])
    assert any("odd.png: skipped, not a readable file" in r.message for r in caplog.records)


def test_a_frame_without_its_partner_fails_alone(tmp_path):
    """Issue 12: `labeler run` on captures where one frame lost its partner: that pair is a recorded
    failure; the others are labelled (it used to stop the whole run)."""
    raw = write_plane_pairs(tmp_path / "raw", 3, 96, 64, seed=6, suffix_layout=True)
    (raw / "pair_001_right.png").unlink()
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    res = run_pseudo_label(
        PseudoLabelConfig(
            inputs=raw,
            calib=calib,
            out=tmp_path / "ds",
            rectify=True,
            scheduler="sync",
            progress=False,
            previews=False,
        )
    )
    assert res.manifest.counts.ok == 2
    (fail,) = res.new_failures
    assert fail.sample_id == "pair_001" and "has no matching _left/_right partner" in fail.error
    assert validate_dataset(tmp_path / "ds") == []


def test_a_configuration_mistake_is_one_line_before_any_sample(base, tmp_path):
    """Issue 12: missing FoundationStereo weights used to be N per-sample failures with exit 0."""
    from data_schema.backends import FoundationStereoConfig
    from labeler.errors import LabelerError

    cfg = PseudoLabelConfig(
        inputs=base / "rect",
        calib=base / "calib.yaml",
        out=tmp_path / "ds",
        stereo=FoundationStereoConfig(weights=tmp_path / "nope.pth"),
        scheduler="sync",
    )
    with pytest.raises(LabelerError, match="nope.pth"):
        run_pseudo_label(cfg)
    assert not (tmp_path / "ds").exists()


def test_edited_manifest_configs_are_named(copy):
    """Issue 12: the manifest's configs, calibration hash and depth settings are covered by the run key."""
    m = json.loads((copy / "manifest.json").read_text())
    m["masks"]["n_segments"] = 999
    m["depth"]["baseline_m"] = 0.2
    (copy / "manifest.json").write_text(json.dumps(m))
    problems = validate_dataset(copy)
    assert "manifest: run_key does not match its configs, calibration_sha256 and depth (edited)" in problems
    assert "manifest: depth settings do not follow from the embedded calibration (edited)" in problems


def test_a_lost_shard_entry_keeps_every_sample_in_its_row(base, copy):
    """Issue 12: after a lost record of a shard that finished before later ones, samples used to move to
    new rows and leave holes; the row plan keeps each sample's row for life."""
    before = {s: open_dataset(base / "ds")[i].row for i, s in enumerate(open_dataset(base / "ds").sample_ids)}
    lines = (copy / "shards.jsonl").read_text().splitlines(keepends=True)
    (copy / "shards.jsonl").write_text("".join(line for line in lines if not line.startswith('{"shard":0,')))
    (copy / "manifest.json").unlink()
    cfg = quick_cfg(base / "rect", base / "calib.yaml", copy)
    again = run_pseudo_label(cfg)
    assert again.labelled == 2 and again.skipped == 4
    ds = open_dataset(copy)
    assert {s: ds[i].row for i, s in enumerate(ds.sample_ids)} == before
    assert ds.version == open_dataset(base / "ds").version and validate_dataset(copy) == []
