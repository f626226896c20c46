"""Issue 25: checkpoints load with `weights_only=True`. What the engine writes (best.pt, last.pt) loads; a
checkpoint holding a pickled object that would run code when unpickled is refused in one line, and the
code never runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from labeler.errors import LabelerError
from labeler.train.heads.task import CHECKPOINT_FORMAT, load_checkpoint


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_engine_checkpoints_load_weights_only(tiny_run):
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(tiny_run / "checkpoints" / name)
        assert ck["format"] == CHECKPOINT_FORMAT
        assert all(isinstance(v, torch.Tensor) for v in ck["model"].values()) and ck["model"]
    last = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    assert isinstance(last["optimizer"]["state"], dict) and isinstance(last["record"], dict)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "evil": _RunsCode(marker)}, path)
    with pytest.raises(LabelerError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "could run code" in msg and "train again" in msg
    assert not marker.exists()


def test_predict_with_a_code_running_checkpoint_is_one_line(tiny_run, tmp_path):
    import numpy as np

    from labeler.cli.main import app
    from labeler.io import write_png

    image = tmp_path / "x.png"
    write_png(image, np.zeros((32, 48, 3), np.uint8))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for f in tiny_run.glob("*.json"):
        (run / f.name).write_bytes(f.read_bytes())
    marker = tmp_path / "ran"
    torch.save({"format": CHECKPOINT_FORMAT, "evil": _RunsCode(marker)}, run / "checkpoints" / "best.pt")
    res = CliRunner().invoke(app, ["predict", str(image), "--run", str(run), "--out", str(tmp_path / "p")])
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert "could run code" in res.output and not marker.exists(), res.output
