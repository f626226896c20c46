"""Issue 25, items 14 and 16: each class of bad input is one `error:` line with a non-zero exit, never a
traceback, never a hang (the commands run in-process through typer's runner; a traceback would surface as
the runner's exception)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labeler.cli.main import app


def one_line(args: list[str], code: int = 1) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(res.exception, SystemExit), res.exception  # not an exception escaping the command
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and res.exit_code == code, res.output
    assert "\n" not in errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.train.conftest import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.getbasetemp())


# ------------------------------------------------------------------ --scheduler (items 14 and 16)


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("tcp://127.0.0.1:abc", "numeric PORT"),
        ("tcp://127.0.0.1:70000", "not in 1..65535"),
        ("inproc://x", "is not sync, threads, processes"),
        ("foo://host:1", "is not sync, threads, processes"),
        ("tcp://:8786", "numeric PORT"),
        ("bogus", "is not sync, threads, processes"),
    ],
)
def test_a_malformed_scheduler_is_one_line(tiny, tmp_path, address, needle):
    line = one_line(["validate", tiny, "--scheduler", address])
    assert needle in line and "--scheduler" in line
    pairs, calib = tiny.parent / "pairs", tiny.parent / "calib.yaml"
    args = ["pseudo-label", pairs, "--calib", calib, "--out", tmp_path / "o", "--scheduler", address]
    line = one_line(args, code=2)
    assert needle in line and "--scheduler" in line and not (tmp_path / "o").exists()


@pytest.fixture
def not_dask() -> Iterator[tuple[int, int]]:
    """Two local TCP ports that are not Dask: one answers like a web server, one accepts and stays silent."""
    servers, held = [], []

    def serve(sock: socket.socket, reply: bytes) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)
            if reply:
                conn.sendall(reply)

    for reply in (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", b""):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        servers.append(s)
        threading.Thread(target=serve, args=(s, reply), daemon=True).start()
    yield servers[0].getsockname()[1], servers[1].getsockname()[1]
    for s in servers + held:
        s.close()


def test_a_scheduler_address_that_is_not_dask_is_one_line_never_a_hang(tiny, not_dask, monkeypatch):
    import pipelines.cluster

    monkeypatch.setattr(pipelines.cluster, "CONNECT_TIMEOUT_S", 1.0)
    web, silent = not_dask
    line = one_line(["validate", tiny, "--scheduler", f"tcp://127.0.0.1:{web}"])
    assert "is not a Dask scheduler" in line
    line = one_line(["validate", tiny, "--scheduler", f"tcp://127.0.0.1:{silent}"])
    assert "no Dask scheduler answered within 1 s" in line
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    line = one_line(["validate", tiny, "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert "no Dask scheduler answers there (Connection refused)" in line


def test_a_real_scheduler_passes_the_check():
    from distributed import LocalCluster

    from pipelines.cluster import check_scheduler

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None, protocol="tcp://") as cluster:
        check_scheduler(cluster.scheduler_address, timeout_s=5)


# ------------------------------------------------------------------ calibrate's board


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--board", "charuco"], "--marker-m"),
        (["--board", "charuco", "--marker-m", "0.02", "--dictionary", "DICT_NOPE"], "DICT_NOPE"),
        (["--board", "charuco", "--marker-m", "0.05", "--square-m", "0.03"], "smaller than square_m"),
    ],
)
def test_a_bad_charuco_board_is_one_line(tmp_path, flags, needle):
    out = tmp_path / "c.yaml"
    line = one_line(["calibrate", tmp_path, "--rig", "r", "--out", out, *flags], code=2)
    assert needle in line and not out.exists()


# ------------------------------------------------------------------ weights and runs


def test_a_binary_cfg_yaml_beside_a_foundation_stereo_checkpoint_is_one_line(tiny, tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "model_best_bp2.pth").write_bytes(b"\0" * 64)
    (fs / "cfg.yaml").write_bytes(bytes(range(128, 256)) * 3)
    pairs, calib = tiny.parent / "pairs", tiny.parent / "calib.yaml"
    line = one_line(
        ["pseudo-label", pairs, "--calib", calib, "--out", tmp_path / "o", "--stereo", "foundation-stereo"]
        + ["--stereo-weights", fs / "model_best_bp2.pth", "--scheduler", "sync"]
    )
    assert f"{fs / 'cfg.yaml'}: cannot read cfg.yaml" in line


@pytest.fixture
def damaged_run(tmp_path) -> Path:
    """A run folder whose best.pt is garbage and whose config.json is not JSON."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"\0garbage" * 64)
    (run / "config.json").write_text("{not json")
    (run / "split.json").write_text('{"train": [], "heldout": []}')
    return run


def test_a_damaged_checkpoint_or_config_is_one_line(tiny, damaged_run, tmp_path):
    best = damaged_run / "checkpoints" / "best.pt"
    image = sorted((tiny.parent / "pairs").rglob("*.png"))[0]
    line = one_line(["predict", image, "--run", damaged_run, "--out", tmp_path / "p"])
    assert f"{best}: damaged or not a torch checkpoint" in line
    line = one_line(["doubt", tiny, "--heads", damaged_run])
    assert f"{best}: damaged or not a torch checkpoint" in line
    line = one_line(["finetune", damaged_run, "--out", tmp_path / "f"])
    assert f"{damaged_run}: config.json or split.json is damaged" in line


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message a machine without CUDA gives"
)
@pytest.mark.parametrize("gpu", ["0", "-1"])
def test_gpu_without_cuda_is_one_line(tiny, damaged_run, tmp_path, gpu):
    image = sorted((tiny.parent / "pairs").rglob("*.png"))[0]
    need = "CUDA is not available" if gpu == "0" else "a CUDA id is 0 or more"
    line = one_line(["predict", image, "--run", damaged_run, "--out", tmp_path / "p", "--gpu", gpu])
    assert f"--gpu {gpu}: {need}" in line  # before the (damaged) run is read
    line = one_line(["doubt", tiny, "--heads", damaged_run, "--gpu", gpu])
    assert f"--gpu {gpu}: {need}" in line


# ------------------------------------------------------------------ exports and --out


@pytest.fixture(scope="module")
def all_failed(tmp_path_factory) -> Path:
    """A dataset whose every sample failed (its images are not images)."""
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = tmp_path_factory.mktemp("all-failed")
    write_plane_pairs(root / "pairs", 2, 64, 48, seed=1)
    for p in (root / "pairs").rglob("*.png"):
        p.write_bytes(b"\x89PNG not an image")
    calib = identity_calibration_yaml(root / "calib.yaml", 64, 48)
    cfg = PseudoLabelConfig(
        inputs=root / "pairs", calib=calib, out=root / "ds", scheduler="sync", previews=False, progress=False
    )
    run_pseudo_label(cfg)
    return root / "ds"


def test_export_hf_of_a_dataset_with_no_ok_sample_is_one_line(all_failed, tmp_path):
    line = one_line(["export", "hf", all_failed, "--out", tmp_path / "hf"])
    assert "no sample to export (0 ok, 2 failed)" in line and not (tmp_path / "hf").exists()


def test_export_ytvis_of_an_untracked_dataset_is_one_line(tiny, tmp_path):
    line = one_line(["export", "ytvis", tiny, "--out", tmp_path / "vis.json"])
    assert line == (
        f"error: {tiny}: has no tracks (it was labelled without --track); label the sequence with "
        "`labeler run ... --track`, or use `labeler export coco`"
    )
    assert not (tmp_path / "vis.json").exists()


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["export", "coco", "DS"], "folder"),
        (["export", "rerun", "DS"], "folder"),
        (["export", "ytvis", "DS"], "folder"),
        (["export", "hf", "DS"], "file"),
        (["export", "ros", "CALIB"], "file"),
        (["calibrate", "PAIRS", "--rig", "r"], "folder"),
        (["export", "coco", "DS"], "under-a-file"),
        (["export", "ros", "CALIB"], "under-a-file"),
        (["calibrate", "PAIRS", "--rig", "r"], "under-a-file"),
    ],
)
def test_an_out_of_the_wrong_kind_is_one_line(tiny, tmp_path, command, kind):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    a_folder = tmp_path / "a_folder"
    a_folder.mkdir()
    (a_folder / "keep.txt").write_text("keep me")
    out = {"folder": a_folder, "file": a_file, "under-a-file": a_file / "x" / "y.out"}[kind]
    where = {"DS": tiny, "CALIB": tiny.parent / "calib.yaml", "PAIRS": tiny.parent / "pairs"}
    line = one_line([where.get(str(a), a) for a in command] + ["--out", out])
    assert line.startswith(f"error: {out}: ") and "Traceback" not in line
    assert "is a folder" in line or "is a file" in line
    assert not any(".tmp" in ln for ln in line.split())  # names --out, never a temporary file
    assert a_file.read_text() == "keep me" and (a_folder / "keep.txt").read_text() == "keep me"
    assert sorted(p.name for p in a_folder.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------ a full disk under a process cluster


def test_a_full_disk_with_a_process_cluster_is_one_line(tmp_path):
    """16 samples start a local cluster of processes; Dask's "Compute Failed" report (with the task's
    traceback) stays out of the output, only the run's one line shows."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(tmp_path / "rect", 16, 320, 240, seed=4)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 320, 240)
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err})")
    try:
        cmd = [sys.executable, "-m", "labeler.cli", "pseudo-label", str(tmp_path / "rect"), "--calib"]
        cmd += [str(calib), "--out", str(disk / "ds"), "--samples-per-shard", "2", "--workers", "2"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    said = [
        ln
        for ln in res.stderr.replace("\r", "\n").splitlines()
        if ln.strip() and not ln.startswith("pseudo-label: ")
    ]
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(said) == 1 and "No space left on device" in said[0], res.stderr
    assert "Compute Failed" not in res.stderr


# ------------------------------------------------------------------ --track (issue 23)


def test_track_that_cannot_track_is_one_line(tmp_path):
    """`--track` on captures without a sequence, and SAM2's keyframe flags with a backend that does not
    track by itself: one line each, before anything is labelled."""
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    raw = write_plane_pairs(tmp_path / "raw", 2, 128, 96, seed=4, suffix_layout=True)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    out = tmp_path / "ds"
    args = ["run", raw, "--calib", calib, "--out", out, "--scheduler", "sync", "--track"]
    line = one_line(args)
    assert "--track needs a sequence" in line and str(raw) in line
    line = one_line([*args, "--keyframe-every", "3"])
    assert "--keyframe-every" in line and "--masks classical" in line
    assert not (out / "manifest.json").exists()
