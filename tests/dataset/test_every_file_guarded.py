"""Issue 25, round three: a changed byte in any file is named, and repair restores what the sources allow.
A Parquet table part whose flipped byte still decodes to the same rows is named by its file sha256 (kept
through compaction); a damaged zarr.json is rewritten from the layout; a lost table part is restored from
the arrays and the sources its neighbours' records name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def _version(ds: Path) -> str:
    from labeler import open_dataset

    return open_dataset(ds).version


def _flip_same_rows(path: Path) -> None:
    """Flip a byte of the footer's `created_by` string: the file changes, its rows do not."""
    data = bytearray(path.read_bytes())
    at = data.index(b"parquet-cpp") + 3
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("table", ["samples", "objects"])
def test_a_flip_in_a_table_part_that_decodes_the_same_is_named_and_restored(base, copy, table):
    from labeler.dataset.index import read_shard_index
    from labeler.dataset.tables import rows_sha256, shard_objects, shard_samples
    from labeler.dataset.validate import validate_dataset
    from labeler.io import sha256_file
    from pipelines.repair import repair_dataset

    entry = read_shard_index(copy)[1]
    part = copy / "tables" / table / (entry.samples if table == "samples" else entry.objects).file
    _flip_same_rows(part)
    rows = shard_samples(copy, entry) if table == "samples" else shard_objects(copy, entry)
    assert rows_sha256(rows) == (entry.samples if table == "samples" else entry.objects).sha256  # same rows
    problems = validate_dataset(copy)
    assert len(problems) == 1 and str(part) in problems[0] and "file bytes changed" in problems[0], problems
    res = repair_dataset(copy)
    assert res.repaired.keys() == {1} and not res.not_restored and not res.failed
    assert validate_dataset(copy) == [] and _version(copy) == _version(base / "ds")
    fresh = read_shard_index(copy)[1]
    ref = fresh.samples if table == "samples" else fresh.objects
    assert ref.file_sha256 == sha256_file(copy / "tables" / table / ref.file)


def test_compaction_records_the_merged_files_sha256_and_a_flip_in_it_is_named_once(copy, monkeypatch):
    from labeler.dataset import tables
    from labeler.dataset.index import read_shard_index
    from labeler.dataset.validate import validate_dataset
    from labeler.dataset.writer import DatasetWriter
    from labeler.io import sha256_file

    monkeypatch.setattr(tables, "COMPACT_MIN_FILES", 2)
    with DatasetWriter(copy) as w:
        base = w.manifest()
        w.begin(base.model_copy(update={"layout": base.layout}), [], w.committed())
        w.finish()
    entries = read_shard_index(copy)
    assert {e.samples.file for e in entries.values()} == {"c-000000-000002-3.parquet"}
    for table in ("samples", "objects"):
        digest = sha256_file(copy / "tables" / table / "c-000000-000002-3.parquet")
        assert {(e.samples if table == "samples" else e.objects).file_sha256 for e in entries.values()} == {
            digest
        }
    assert validate_dataset(copy) == []
    merged = copy / "tables" / "objects" / "c-000000-000002-3.parquet"
    _flip_same_rows(merged)
    problems = validate_dataset(copy)
    assert problems == [
        f"{merged}: file bytes changed since written (sha256 differs from the shard index; the rows may "
        "still decode the same); shards [0, 1, 2] name it"
    ]


def _garble(p: Path) -> None:
    p.write_bytes(b'{"zarr_format": 3, "node_type": "arr')


def _respace(p: Path) -> None:  # the same JSON meaning, other bytes: named by the manifest's seal
    p.write_bytes(p.read_bytes().replace(b'"attributes": {}', b'"attributes":  {}'))


@pytest.mark.parametrize("damage", [_garble, _respace, Path.unlink])
@pytest.mark.parametrize("rel", ["data.zarr/zarr.json", "data.zarr/depth_m/zarr.json"])
def test_a_damaged_zarr_json_is_named_and_rewritten_by_repair(base, copy, rel, damage):
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset

    before = (copy / rel).read_bytes()
    damage(copy / rel)
    assert (copy / rel).exists() is False or (copy / rel).read_bytes() != before
    assert validate_dataset(copy)
    res = repair_dataset(copy)
    assert "data.zarr metadata" in res.rebuilt and not res.repaired and not res.not_restored
    assert (copy / rel).read_bytes() == before
    assert validate_dataset(copy) == [] and _version(copy) == _version(base / "ds")


@pytest.mark.parametrize("table", ["samples", "objects"])
def test_a_lost_table_part_is_restored_from_the_arrays_and_sources(base, copy, tmp_path, table):
    """The samples part lost: its ids come from the row plan and its sources from the folder the other
    shards' records name; a folder of other images with the same ids (--sources) is not taken."""
    from labeler.dataset.validate import validate_dataset
    from pipelines.repair import repair_dataset
    from tests.conftest import write_plane_pairs

    (copy / "tables" / table / "s-000001.parquet").unlink()
    decoy = write_plane_pairs(tmp_path / "decoy", 6, 96, 64, seed=9)  # same ids, other images
    res = repair_dataset(copy, sources=decoy)
    assert res.repaired.keys() == {1} and not res.not_restored and not res.failed
    assert validate_dataset(copy) == [] and _version(copy) == _version(base / "ds")
    left = hashlib.sha256((base / "rect" / "left" / "pair_002.png").read_bytes()).hexdigest()
    from labeler import open_dataset

    rec = open_dataset(copy).record_at_row(2)  # row 2: pair_002, the first sample of shard 1
    assert rec.sample_id == "pair_002" and rec.source is not None and rec.source.left_sha256 == left
