"""Issue 25, "nothing lost, round two": each reproduced loss of data has a test here (the closing note's
table maps issue items to these tests)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from data_schema.review import Review


def _review(sid: str, decision: str = "accept") -> Review:
    return Review(sample_id=sid, decision=decision, time=datetime.now(UTC), user="u", labels_sha256="0" * 64)


def test_item8_a_complete_last_decision_without_newline_is_kept(tmp_path):
    from labeler.dataset.sidecars import append_reviews, read_reviews, reviews_path

    reviews_path(tmp_path).write_text(_review("a").model_dump_json())  # no trailing newline
    assert [r.sample_id for r in read_reviews(tmp_path)] == ["a"]
    append_reviews(tmp_path, [_review("b")])
    assert [r.sample_id for r in read_reviews(tmp_path)] == ["a", "b"]
    # a line cut short by a kill is still dropped
    with open(reviews_path(tmp_path), "ab") as f:
        f.write(_review("c").model_dump_json().encode()[:30])
    assert [r.sample_id for r in read_reviews(tmp_path)] == ["a", "b"]
    append_reviews(tmp_path, [_review("d")])
    assert [r.sample_id for r in read_reviews(tmp_path)] == ["a", "b", "d"]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 0.0, -1.0])
def test_item10_z_far_must_be_finite_and_positive(tmp_path, value):
    from data_schema.commands import PseudoLabelConfig
    from data_schema.manifest import DepthSettings

    with pytest.raises(ValidationError):
        PseudoLabelConfig(inputs=tmp_path, calib=tmp_path / "c.yaml", out=tmp_path / "o", z_far_m=value)
    with pytest.raises(ValidationError):
        DepthSettings(fx_px=1.0, baseline_m=0.1, doffs_px=0.0, z_far_m=value)


def test_item10_cli_refuses_inf_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from labeler.cli.main import app

    res = CliRunner().invoke(
        app,
        [
            "pseudo-label",
            str(tmp_path),
            "--calib",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "o"),
            "--z-far-m",
            "inf",
        ],
    )
    assert res.exit_code == 2 and "--z-far-m" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ every file guarded (items 2, 3)
def _damage_index_empty(ds: Path) -> None:
    (ds / "shards.jsonl").write_text("")


def _damage_index_deleted(ds: Path) -> None:
    (ds / "shards.jsonl").unlink()


def _damage_index_garbled(ds: Path) -> None:
    p = ds / "shards.jsonl"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x20
    p.write_bytes(bytes(data))


def _damage_index_newline(ds: Path) -> None:
    p = ds / "shards.jsonl"
    p.write_bytes(p.read_bytes()[:-1])


def _damage_rows_flip(ds: Path) -> None:
    p = ds / "rows.jsonl"
    data = bytearray(p.read_bytes())
    data[40] ^= 0x01
    p.write_bytes(bytes(data))


def _damage_manifest_edit(ds: Path) -> None:
    m = json.loads((ds / "manifest.json").read_text())
    m["labeler_version"] = "0.0.0"
    (ds / "manifest.json").write_text(json.dumps(m))


def _damage_settings_edit(ds: Path) -> None:
    s = json.loads((ds / "settings.json").read_text())
    s["depth"]["z_far_m"] = 5.0
    (ds / "settings.json").write_text(json.dumps(s))


DAMAGE = {
    "shards.jsonl emptied": _damage_index_empty,
    "shards.jsonl deleted": _damage_index_deleted,
    "shards.jsonl garbled": _damage_index_garbled,
    "shards.jsonl lost its last newline": _damage_index_newline,
    "rows.jsonl one byte flipped": _damage_rows_flip,
    "manifest.json edited": _damage_manifest_edit,
    "settings.json edited": _damage_settings_edit,
}


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_items2_3_damage_is_named_refused_and_nothing_deleted(base, copy, what):
    """validate names it; the reader refuses; the next run refuses in one line naming repair and deletes
    nothing (it used to delete the table parts the damaged index lost track of)."""
    from labeler import open_dataset
    from labeler.dataset.reader import DamagedDatasetError
    from labeler.dataset.validate import validate_dataset
    from labeler.errors import InputError
    from pipelines.pseudo_label import run_pseudo_label
    from tests.dataset.test_dataset_v2 import quick_cfg

    DAMAGE[what](copy)
    assert validate_dataset(copy), what
    with pytest.raises(DamagedDatasetError, match="labeler repair"):
        open_dataset(copy).__getitem__(0)
    files = sorted(p.relative_to(copy) for p in (copy / "tables").rglob("*.parquet"))
    with pytest.raises(InputError, match="labeler repair"):
        run_pseudo_label(quick_cfg(base / "rect", base / "calib.yaml", copy))
    assert sorted(p.relative_to(copy) for p in (copy / "tables").rglob("*.parquet")) == files


def test_doubt_record_edit_is_named(copy):
    from data_schema.review import DoubtPass
    from labeler.dataset.sidecars import write_doubt_pass
    from labeler.dataset.validate import validate_dataset

    write_doubt_pass(
        copy,
        DoubtPass(
            dataset_version="x",
            n_mono=0,
            n_temporal=0,
            n_shards_rewritten=0,
            seconds=1.0,
            labeler_version="1",
        ),
    )
    assert validate_dataset(copy) == []
    p = copy / "doubt.json"
    p.write_text(p.read_text().replace('"n_mono": 0', '"n_mono": 3'))
    assert any("doubt.json: edited" in line for line in validate_dataset(copy))


# ------------------------------------------------------------------------- repair (items 2-6)
@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_repair_restores_each_damaged_record(base, copy, what):
    """Every record damage above: repair rebuilds it, the dataset validates and holds the same labels."""
    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset

    DAMAGE[what](copy)
    res = repair_dataset(copy)
    assert res.rebuilt and not res.not_restored
    assert validate_dataset(copy) == [], what
    assert open_dataset(copy).version == open_dataset(base / "ds").version


def test_item5_repair_uses_the_shards_settings_not_the_edited_manifest(base, copy):
    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset

    m = json.loads((copy / "manifest.json").read_text())
    m["depth"]["z_far_m"] = 5.0
    (copy / "manifest.json").write_text(json.dumps(m))
    f = copy / "data.zarr" / "depth_m" / "c" / "1" / "0" / "0"
    f.write_bytes(f.read_bytes()[:40])
    res = repair_dataset(copy)
    assert res.repaired.keys() == {1} and "manifest.json" in res.rebuilt
    assert validate_dataset(copy) == []
    assert open_dataset(copy).manifest.depth.z_far_m == 20.0
    assert open_dataset(copy).version == open_dataset(base / "ds").version


def test_item6_repair_finds_moved_sources_and_never_fails_good_samples(base, tmp_path, monkeypatch):
    """Sources resolved against the dataset or --sources DIR, never the current directory; a sample
    whose sources are gone but whose arrays pass is carried over, not marked failed."""
    import shutil

    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset

    shutil.copytree(base / "ds", tmp_path / "moved")
    ds = tmp_path / "moved"
    # an edited objects table row of shard 2: its samples must be relabelled from their sources
    from tests.dataset.test_dataset_v2 import edit_table

    edit_table(ds, "objects", 2, lambda rows: [{**rows[0], "depth_m_median": 99.0}, *rows[1:]])
    shutil.move(base / "rect", tmp_path / "elsewhere")  # the sources moved
    try:
        monkeypatch.chdir(tmp_path)
        res = repair_dataset(ds)
        assert res.not_restored and 2 in res.not_restored and "--sources" in res.not_restored[2]
        assert validate_dataset(ds)  # left as it was, said, not turned into failures
        res = repair_dataset(ds, sources=tmp_path / "elsewhere")
        assert res.repaired.keys() == {2} and not res.failed and not res.not_restored
        assert validate_dataset(ds) == []
        assert open_dataset(ds).manifest.counts.failed == 0
    finally:
        shutil.move(tmp_path / "elsewhere", base / "rect")


_KILL_IN_REPAIR = """
import os, signal, sys
from labeler.dataset import shards
real = shards.write_shard
def dying(dataset, shard, layout, rows):
    real(dataset, shard, layout.model_copy(update={"arrays": layout.arrays[:2]}), rows)
    os.kill(os.getpid(), signal.SIGKILL)
shards.write_shard = dying
from labeler.cli.main import app
sys.argv = ["labeler", *sys.argv[1:]]
app()
"""


def test_item4_a_killed_repair_leaves_the_old_shard_never_zeros(base, copy):
    import subprocess
    import sys

    from labeler.dataset import shards
    from labeler.dataset.validate import validate_dataset

    f = copy / "data.zarr" / "left" / "c" / "1" / "0" / "0" / "0"
    f.write_bytes(f.read_bytes()[:50])
    before = shards.shard_file_sizes(copy, 1)
    cmd = [sys.executable, "-c", _KILL_IN_REPAIR, "repair", str(copy)]
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == -9
    problems = validate_dataset(copy)
    assert any("a rewrite was cut short" in p for p in problems), problems
    from labeler.dataset import journal

    assert journal.recover(copy) == [1]
    assert shards.shard_file_sizes(copy, 1) == before  # the old (damaged) shard, not zeros
    res = subprocess.run([sys.executable, "-m", "labeler.cli", "repair", str(copy)], capture_output=True)
    assert res.returncode == 0 and validate_dataset(copy) == []


# ------------------------------------------------------------------------------ names (item 12)
@pytest.mark.parametrize(
    "name", ["../../../x", "/etc/passwd", "a/b", "..", ".", "", "x\x00y", "é" * 300, "C:\\win"]
)
def test_item12_safe_name_is_one_component(tmp_path, name):
    from labeler.io import safe_name

    out = safe_name(name)
    assert "/" not in out and "\\" not in out and not out.startswith(".") and 0 < len(out) <= 120
    assert (tmp_path / out).resolve().parent == tmp_path.resolve()
    assert safe_name("pair_000") == "pair_000"  # names that follow the rule are unchanged
    assert safe_name("a/b") != safe_name("a_b")  # changed names never collide with kept ones


def test_item12_hostile_ids_and_rig_stay_under_out(tmp_path):
    from data_schema.calibration import StereoCalibration
    from labeler.dataset.sidecars import preview_path
    from labeler.rig.calibration import load_calibration
    from labeler.rig.calibration_report import export_ros
    from tests.conftest import identity_calibration_yaml

    out = tmp_path / "out"
    for sid in ("/tmp/evil", "../../../evil"):
        assert preview_path(out, sid).resolve().is_relative_to(out.resolve())
    calib: StereoCalibration = load_calibration(identity_calibration_yaml(tmp_path / "c.yaml", 32, 24))
    hostile = calib.model_copy(update={"rig": str(tmp_path / "elsewhere" / "rig")})
    paths = export_ros(hostile, out)
    assert all(p.resolve().parent == out.resolve() for p in paths) and not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------- items 1, 7 and migrate's path
def test_item1_export_hf_never_deletes_what_it_did_not_create(copy, tmp_path):
    from labeler.errors import InputError
    from labeler.export.hf import export_hf

    files = sorted(p for p in copy.rglob("*"))
    for out in (copy, copy / "tables", tmp_path):  # the dataset, inside it, around it
        with pytest.raises(InputError):
            export_hf(copy, out)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an earlier Hugging Face export"):
        export_hf(copy, other)
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p for p in copy.rglob("*")) == files


def test_item7_migrate_refuses_to_reconvert_a_migrated_dataset(copy, tmp_path):
    from labeler.dataset.migrate import migrate_dataset
    from labeler.errors import InputError

    (copy / "manifest.v1.json").write_text("{}")  # as a migration leaves it
    (copy / "manifest.json").write_text("{garbage")
    with pytest.raises(InputError, match="labeler repair"):
        migrate_dataset(copy)
    with pytest.raises(InputError, match="no such dataset folder"):
        migrate_dataset(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("flag", [("samples_per_shard", 10**12), ("workers", 10**6)])
def test_item13_shard_size_and_workers_have_ranges(tmp_path, flag):
    from data_schema.commands import PseudoLabelConfig

    with pytest.raises(ValidationError):
        PseudoLabelConfig(inputs=tmp_path, calib=tmp_path / "c.yaml", out=tmp_path / "o", **dict([flag]))


# ------------------------------------------------------------------ per-file sha256 of the array files
def test_a_flipped_byte_in_any_array_file_is_named_and_repaired(base, copy):
    """Every array shard file: one middle byte flipped is named (by its sha256 in the shard index, even
    where the rows decode the same) and repair restores the same labels."""
    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset

    files = sorted(p for p in (copy / "data.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(files) == 18  # 6 arrays x 3 shards
    unnamed = []
    for p in files:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :])
        problems = validate_dataset(copy)
        if not problems:
            unnamed.append(p.relative_to(copy))
        p.write_bytes(data)
    assert unnamed == []
    target = files[len(files) // 2]
    data = target.read_bytes()
    target.write_bytes(
        data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :]
    )
    assert any("shard file bytes changed" in p or "differ" in p for p in validate_dataset(copy))
    repair_dataset(copy)
    assert validate_dataset(copy) == []
    assert open_dataset(copy).version == open_dataset(base / "ds").version


@pytest.mark.parametrize("name", ["shards.jsonl", "rows.jsonl"])
@pytest.mark.parametrize("tail", [b"not json\n", b'{"shard": 9', b"[1, 2]\n"])
def test_bytes_appended_to_an_index_file_are_named_and_repaired(base, copy, name, tail):
    """An append after the sealed bytes must be whole JSON-object lines: a non-JSON line or a cut tail is
    named (it used to read as a line cut by a kill, silently); repair restores the index."""
    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset

    with (copy / name).open("ab") as f:
        f.write(tail)
    assert any(
        name in p and ("not a JSON record" in p or "not a whole line" in p) for p in validate_dataset(copy)
    )
    repair_dataset(copy)
    assert validate_dataset(copy) == []
    assert open_dataset(copy).version == open_dataset(base / "ds").version


def test_a_damaged_objects_table_is_named_not_a_traceback(copy):
    from labeler.dataset.validate import validate_dataset

    part = sorted((copy / "tables" / "objects").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    problems = validate_dataset(copy)
    assert any(part.name in p for p in problems)
