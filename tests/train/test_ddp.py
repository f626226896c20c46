"""Data-parallel training under torchrun on the CPU (gloo): the same code path as a multi-node job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from data_schema.record import Record
from tests.train.conftest import TINY_INPUT, tiny_train_config

# ------------------------------------------------------------------ two processes = one, on a toy task


class ToyEpoch(Record):
    epoch: int
    loss: float


class ToyHeldout(Record):
    pass


class ToyItems:
    """n samples of y = x . (1, -2, 3, 0.5) + 0.3 + noise, x in R^4 (the same in every process)."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 3.0, 0.5]) + 0.3 + 0.1 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"x": self.x[key[1]], "y": self.y[key[1]]}


@dataclass(frozen=True)
class ToyTask:
    """A linear least-squares fit whose loss is a mean over the batch's samples: with equal shares per
    process, DDP's average of the processes' gradients is the gradient of one process's whole batch, so
    two processes of batch b step exactly as one of batch 2b (AdamW, clipping and the schedule included)."""

    n: int = 12
    checkpoint_format = "toy-linear"
    loss_terms = ()
    record_type = ToyEpoch
    heldout_type = ToyHeldout
    epoch_columns = ("epoch", "loss")
    step_columns = ("step", "epoch", "loss", "lr")
    curve_panels = ()
    evaluate_initial = False

    def datasets(self, train_ids, heldout_ids):
        return ToyItems(self.n), None

    def build_model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Linear(4, 1)

    def param_groups(self, model):
        return [{"params": list(model.parameters()), "lr": 0.05, "name": "all"}]

    def train_mode(self, model) -> None:
        model.train()

    def prepare(self, batch, device):
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, net, batch):
        return net(batch["x"])[:, 0]

    def loss(self, out, batch):
        return {"loss": ((out.float() - batch["y"]) ** 2).mean()}

    def evaluate(self, model, loader, device, *, amp, epoch):
        raise AssertionError("nothing is held out")

    def epoch_record(self, train, heldout):
        return ToyEpoch(epoch=train.epoch, loss=train.loss)

    def score(self, row) -> float:
        return row.loss

    def checkpoint_fields(self):
        return {}

    def save_best(self, run_dir: Path, model, payload, *, step: int) -> None:
        from labeler.train.run_folder import save_checkpoint

        save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)


def _toy_spec(dataset: Path, out: Path, batch_size: int):
    from data_schema.train import TrainRunConfig
    from labeler.train.engine import EngineSpec

    settings = TrainRunConfig(
        dataset=dataset, out=out, epochs=2, batch_size=batch_size, warmup_frac=0, workers=0, heldout_frac=0
    )
    ids = [f"s{i}" for i in range(ToyTask.n)]
    return EngineSpec(ToyTask(), settings, {"toy": batch_size}, ids, [], title="toy")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def test_two_gloo_processes_train_the_weights_one_process_trains_on_the_same_global_batch(
    tiny_dataset, tmp_path, monkeypatch
):
    """The engine's spawn path (`--gpu 0,1`, here two CPU processes with gloo), batch 2 per process, ends
    with the weights and epoch losses of one process with batch 4: 2 epochs x 3 AdamW steps."""
    from labeler.train import engine

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    two = engine.spawn_processes(_toy_spec(tiny_dataset, tmp_path / "two", 2), [torch.device("cpu")] * 2)
    one = engine.fit(_toy_spec(tiny_dataset, tmp_path / "one", 4))
    engine.fit(_toy_spec(tiny_dataset, tmp_path / "alone", 2))  # one process's share only
    a, b, c = (_weights(tmp_path / n) for n in ("two", "one", "alone"))
    initial = ToyTask().build_model().state_dict()
    for k in initial:
        assert not torch.allclose(b[k], initial[k], atol=1e-3)  # it trained
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)
    assert any(not torch.allclose(c[k], b[k], atol=1e-4) for k in initial)  # a half batch steps elsewhere
    assert [h.epoch for h in two] == [h.epoch for h in one] == [1, 2]
    for h2, h1 in zip(two, one, strict=True):  # epoch losses: means over every rank's batches
        assert h2.loss == pytest.approx(h1.loss, rel=1e-6)
    assert len(json.loads((tmp_path / "two" / "metrics.json").read_text())) == 2


@pytest.mark.slow  # 45 s on 2 shared cores: mostly the two spawned interpreters importing labeler
def test_the_gpu_spawn_path_runs_on_two_gloo_processes(tiny_dataset, tmp_path, monkeypatch):
    """The `--gpu 0,1` spawn path (`engine.spawn_processes`) on two CPU processes with gloo: rank 0 writes
    the run, each rank takes half of every step's samples (3 steps of 1 + 1 samples for 6 samples, as one
    process's 3 steps of 2), and the first step, taken before any update, has one process's loss."""
    import csv

    from labeler.train import engine
    from labeler.train.heads import api

    specs: list[engine.EngineSpec] = []
    monkeypatch.setattr(api, "launch", lambda spec, **kw: specs.append(spec) or [])
    api.train_heads(tiny_train_config(tiny_dataset, tmp_path / "two", epochs=1, batch_size=1, previews=0))
    (spec,) = specs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned processes' torch threads: two on two cores
    two = engine.spawn_processes(spec, [torch.device("cpu")] * 2)
    one = engine.fit(
        replace(spec, settings=spec.settings.model_copy(update={"out": tmp_path / "one", "batch_size": 2}))
    )
    assert [h.epoch for h in two] == [h.epoch for h in one] == [1]
    rows = {n: list(csv.DictReader((tmp_path / n / "steps.csv").open())) for n in ("two", "one")}
    assert len(rows["two"]) == len(rows["one"]) == 3
    # the same two samples in step 1; the depth loss is a mean over valid pixels, not over samples, so the
    # average of the ranks' losses is that of the pair only up to their valid-pixel counts
    assert float(rows["two"][0]["loss"]) == pytest.approx(float(rows["one"][0]["loss"]), rel=0.05)
    a = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = spec.task.build_model().state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the two ranks trained


@pytest.mark.slow
def test_torchrun_two_processes(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "labeler.cli",
        "train-heads",
        str(tiny_dataset),
        "--backbone",
        "tiny",
        "--input-size",
        str(TINY_INPUT),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--previews",
        "1",
    ]
    res = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("2 epochs on 6 samples") == 1  # only rank 0 reports
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    steps = (out / "steps.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 2 * 2  # 6 samples / 2 ranks / batch 2 -> 2 steps per epoch on each rank


@pytest.mark.slow
def test_torchrun_train_stereo(stereo_dataset, vits_release, tmp_path):
    """train-stereo on the same engine under torchrun (gloo): rank 0 reports, the ranks share the steps."""
    from tests.train.conftest import TINY_STEREO_FLAGS

    out = tmp_path / "ddp-stereo"
    ds, truth = stereo_dataset
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "labeler.cli", "train-stereo", str(ds), "--stereo-weights", str(vits_release)]
    cmd += ["--out", str(out), "--truth", str(truth), *TINY_STEREO_FLAGS, "--batch-size", "1"]
    res = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("1 epochs on 2 pairs (1 held out)") == 1  # only rank 0 reports
    steps = (out / "steps.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 1  # 2 pairs / 2 ranks / batch 1: one step on each rank
    assert (out / "model_best_bp2.pth").is_file() and (out / "summary.json").is_file()
