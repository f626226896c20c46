"""`--selection NAME` of the trainers: only the selection's samples are split into train and held-out (by the
same id hash as without one), the run's config.json names it, and a selection that is missing or names none
of the dataset's samples is one line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_schema.curation import Selection
from labeler import open_dataset
from labeler.cli.main import app
from labeler.dataset.selections import SelectionError, write_selection
from labeler.errors import LabelerError
from labeler.train.sampling import run_split, selected_ids, split_ids
from tests.train.conftest import tiny_train_config


@pytest.fixture
def selected(tiny_dataset, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the tiny dataset (8 samples) with the selection `pick` of 4 of them (not in row order)."""
    ds = shutil.copytree(tiny_dataset, tmp_path / "ds")
    ids = open_dataset(ds).sample_ids
    pick = [ids[6], ids[1], ids[3], ids[4]]
    write_selection(ds, Selection(name="pick", sample_ids=pick, how="test", dataset_version="x"))
    return ds, pick


def test_selected_ids_keep_row_order_and_only_the_selection(selected, caplog):
    ds_path, pick = selected
    ds = open_dataset(ds_path)
    assert selected_ids(ds, None) == ds.sample_ids
    assert selected_ids(ds, "pick") == [s for s in ds.sample_ids if s in pick]
    stale = Selection(name="stale", sample_ids=[pick[0], "gone_1", "gone_2"], how="t", dataset_version="x")
    write_selection(ds_path, stale)
    with caplog.at_level(logging.WARNING, logger="labeler.train.sampling"):
        assert selected_ids(ds, "stale") == [pick[0]]
    assert "names 2 sample(s) this dataset has no ok sample of" in caplog.text


def test_a_selection_of_other_samples_or_none_at_all_is_one_line(selected):
    ds_path, _ = selected
    ds = open_dataset(ds_path)
    write_selection(ds_path, Selection(name="other", sample_ids=["gone"], how="t", dataset_version="abc"))
    with pytest.raises(LabelerError) as err:
        selected_ids(ds, "other")
    msg = str(err.value)
    assert "\n" not in msg and "selections/other.json" in msg and "labeler curate" in msg
    with pytest.raises(SelectionError, match=r"no selection 'nope' \(known: other, pick\)"):
        selected_ids(ds, "nope")


def test_run_split_is_the_plain_split_of_the_selection(selected, tmp_path):
    ds_path, pick = selected
    ds = open_dataset(ds_path)
    cfg = tiny_train_config(ds_path, tmp_path / "r", selection="pick", heldout_frac=0.25)
    train, held, rejected = run_split(ds, cfg)
    in_order = [s for s in ds.sample_ids if s in pick]
    assert (train, held) == split_ids(in_order, 0.25, seed=0) and rejected == []
    assert sorted(train + held) == sorted(pick) and len(held) == 1
    whole = run_split(ds, cfg.model_copy(update={"selection": None}))
    assert len(whole[0]) + len(whole[1]) == 8


def test_train_heads_cli_trains_and_holds_out_only_the_selection(selected, tmp_path):
    ds_path, pick = selected
    out = tmp_path / "run"
    args = ["train-heads", str(ds_path), "--out", str(out), "--backbone", "tiny", "--random-init"]
    args += ["--input-size", "56", "--max-depth-m", "10", "--epochs", "1", "--batch-size", "2"]
    args += ["--workers", "0"]
    args += ["--heldout-frac", "0.25", "--previews", "0", "--no-augment", "--selection", "pick"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["heldout"]) == sorted(pick)
    assert (len(split["train"]), len(split["heldout"])) == (3, 1)
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["selection"] == "pick" and (record["n_train"], record["n_heldout"]) == (3, 1)
    bad = CliRunner().invoke(app, [*args[:-1], "missing"])
    errors = [ln for ln in bad.output.splitlines() if ln.startswith("error:")]
    assert bad.exit_code != 0 and len(errors) == 1 and "no selection 'missing'" in errors[0], bad.output


def test_adapt_backbone_adapts_only_on_the_selection(selected, tmp_path):
    from labeler.train.dino.api import adapt_backbone
    from tests.train.test_adapt_backbone import _cfg

    ds_path, pick = selected
    res = adapt_backbone(_cfg(ds_path, tmp_path / "a", head_epochs=0, epochs=1, selection="pick"))
    split = json.loads((tmp_path / "a" / "adapt" / "split.json").read_text())
    assert sorted(split["train"] + split["heldout"]) == sorted(pick) and res.n_train + res.n_heldout == 4
    record = json.loads((tmp_path / "a" / "adapt" / "config.json").read_text())
    assert record["config"]["selection"] == "pick"


def test_train_sam2_targets_only_the_selections_objects(selected, tmp_path):
    from labeler.testing.sam2_tiny import write_tiny_sam2
    from labeler.train.sam2.api import check_inputs
    from tests.train.test_train_sam2 import _cfg

    ds_path, pick = selected
    tiny = write_tiny_sam2(tmp_path / "sam2")
    whole = check_inputs(_cfg(ds_path, tmp_path / "w", tiny))
    part = check_inputs(_cfg(ds_path, tmp_path / "p", tiny, selection="pick"))
    assert sorted(part.sample_ids) == sorted(pick)
    assert part.targets.ids == {s: v for s, v in whole.targets.ids.items() if s in pick}
    objects = open_dataset(ds_path).objects.to_table(columns=["sample_id"]).to_pylist()
    assert part.targets.total == sum(r["sample_id"] in pick for r in objects)
