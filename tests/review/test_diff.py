"""`labeler diff`: matching, depth change, and a report of two labellings of the same pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labeler import open_dataset
from labeler.review.diff import depth_change, diff_datasets, match_objects


def test_objects_are_matched_one_to_one_by_iou():
    a = np.zeros((20, 20), np.uint16)
    b = np.zeros((20, 20), np.uint16)
    a[0:10, 0:10] = 1  # kept, shifted by a row in B
    b[1:11, 0:10] = 3
    a[12:20, 12:20] = 2  # vanished
    b[0:4, 15:20] = 1  # appeared
    matches, vanished, appeared = match_objects(a, b)
    assert [(ia, ib) for ia, ib, _ in matches] == [(1, 3)]
    assert matches[0][2] == pytest.approx(90 / 110)
    assert (vanished, appeared) == (1, 1)


def test_depth_change_over_pixels_valid_in_both():
    a = np.array([[1.0, 2.0, np.nan, 4.0]], np.float32)
    b = np.array([[1.1, 2.0, 3.0, np.nan]], np.float32)
    med, p90, rel = depth_change(a, b)
    assert med == pytest.approx(0.05) and p90 == pytest.approx(0.09)
    assert np.isnan(rel[0, 2:]).all()


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory) -> tuple[Path, Path]:
    """Six pairs labelled twice: A with the defaults, B with a nearer z_far and a larger min object area,
    and B without the last pair and with one pair A lacks."""
    from data_schema.commands import ObjectPolicy, PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = tmp_path_factory.mktemp("diff")
    write_plane_pairs(root / "pairs", 7, 96, 64, seed=5)
    calib = identity_calibration_yaml(root / "calib.yaml", 96, 64)
    # the box of each pair is its one object (~1 040-1 120 px): B's minimum area drops the smaller ones
    for name, drop, z_far, area in (("a", "pair_006", 20.0, 64), ("b", "pair_005", 2.5, 1070)):
        inputs = root / f"in-{name}"
        for side in ("left", "right"):
            (inputs / side).mkdir(parents=True)
            for p in sorted((root / "pairs" / side).glob("*.png")):
                if p.stem != drop:
                    (inputs / side / p.name).symlink_to(p)
        run_pseudo_label(
            PseudoLabelConfig(
                inputs=inputs,
                calib=calib,
                out=root / name,
                scheduler="sync",
                progress=False,
                previews=False,
                z_far_m=z_far,
                objects=ObjectPolicy(min_area_px=area),
            )
        )
    return root / "a", root / "b"


def test_report_of_two_labellings(two_versions, tmp_path):
    a, b = two_versions
    report = diff_datasets(a, b, tmp_path / "r", pictures=2)
    assert report.added == ["pair_006"] and report.removed == ["pair_005"]
    assert report.n_unchanged + len(report.changed) == 5
    assert report.changed, "a nearer z_far and a larger minimum area change labels"
    assert [c.magnitude for c in report.changed] == sorted(
        (c.magnitude for c in report.changed), reverse=True
    )
    first = report.changed[0]
    ds_a, ds_b = open_dataset(a), open_dataset(b)
    ra = ds_a[ds_a.sample_ids.index(first.sample_id)]
    rb = ds_b[ds_b.sample_ids.index(first.sample_id)]
    med, p90, _ = depth_change(ra.depth_m, rb.depth_m)
    assert (first.depth_rel_change_median, first.depth_rel_change_p90) == (med, p90)
    _, vanished, appeared = match_objects(ra.instance_ids, rb.instance_ids)
    assert (first.objects_vanished, first.objects_appeared) == (vanished, appeared)
    assert first.picture and (tmp_path / "r" / first.picture).is_file()
    assert (
        json.loads((tmp_path / "r" / "diff.json").read_text())["changed"][0]["sample_id"] == first.sample_id
    )
    html = (tmp_path / "r" / "index.html").read_text()
    assert first.sample_id in html and "Doubt signals" in html
    shift = {s.name: s for s in report.doubt}
    assert shift["valid_depth_fraction"].shift < 0  # z_far 2.5 m invalidates the far wall
    assert report.objects_b < report.objects_a


def test_a_dataset_against_itself_reads_only_tables(two_versions, tmp_path, monkeypatch):
    from labeler.dataset.reader import Dataset

    a, _ = two_versions

    def no_arrays(*args, **kwargs):
        raise AssertionError("unchanged samples must not read arrays")

    monkeypatch.setattr(Dataset, "read_row", no_arrays)
    report = diff_datasets(a, a, tmp_path / "same")
    assert report.changed == [] and report.n_unchanged == 6 and report.added == report.removed == []
    assert all(s.shift in (0.0, None) for s in report.doubt)


def test_held_out_metrics_of_runs_on_each(two_versions, tmp_path):
    a, b = two_versions
    for name, abs_rel in (("ra", 0.30), ("rb", 0.25)):
        (tmp_path / name).mkdir()
        rows = [{"epoch": 1, "abs_rel": 0.5, "delta1": 0.1}, {"epoch": 2, "abs_rel": abs_rel, "delta1": 0.6}]
        (tmp_path / name / "metrics.json").write_text(json.dumps(rows))
    report = diff_datasets(a, b, tmp_path / "r", run_a=tmp_path / "ra", run_b=tmp_path / "rb", pictures=0)
    got = {m.name: m for m in report.metrics}
    assert got["abs_rel"].change == pytest.approx(-0.05) and got["delta1"].change == 0.0


def test_object_signals_shift_over_every_object_of_the_samples_both_have():
    """A's sample s has objects of thickness 2 and 10, B's only the 10 one (the thin one vanished); t has
    no objects in B: the mean is over s's objects on each side, and n counts s alone."""
    import pyarrow as pa

    from labeler.review.diff import OBJECT_SIGNALS, Side, _shifts

    def side(rows: dict[str, int], objects: list[tuple[int, float]]) -> Side:
        cols = {"row": [r for r, _ in objects], **{n: [None] * len(objects) for n in OBJECT_SIGNALS}}
        cols["thickness_px"] = [t for _, t in objects]
        return Side(ds=None, samples={s: {"row": r} for s, r in rows.items()}, objects=pa.table(cols))

    a = side({"s": 0, "t": 1}, [(0, 2.0), (0, 10.0), (1, 4.0)])
    b = side({"s": 5, "t": 6}, [(5, 10.0)])
    shift = {s.name: s for s in _shifts(a, b, ["s", "t"])}["objects.thickness_px"]
    assert (shift.mean_a, shift.mean_b, shift.shift, shift.n) == (6.0, 10.0, 4.0, 1)
    assert {s.name: s for s in _shifts(a, b, ["s", "t"])}["objects.edge_alignment"].n == 0
