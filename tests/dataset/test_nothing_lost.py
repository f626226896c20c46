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
