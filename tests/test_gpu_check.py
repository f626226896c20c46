"""benchmarks/gpu_check.py: one process per part with its own budget, a status for every part, the report.

The fast tests drive the runner with stand-in part processes (a row, a skip, a crash, a hang); the slow
one runs the whole check on the CPU at its small sizes, as `make gpu-check DEVICE=cpu` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def stand_in(code: str) -> list[str]:
    """A part process: Python code that may append JSON lines to the record file (sys.argv[1])."""
    return [sys.executable, "-c", "import json, sys, time\nrecord = open(sys.argv[1], 'a')\n" + code]


def run(tmp_path: Path, code: str, timeout_s: float = 30) -> dict:
    record = tmp_path / "record.jsonl"
    with (tmp_path / "log.txt").open("a") as log:
        return gpu_check.run_part("p", [*stand_in(code), str(record)], timeout_s, record, log)


ROW = (
    "record.write(json.dumps({'kind': 'row', 'table': 't', 'values': {'a': 1, 'b': 'x'}}) + '\\n')\n"
    "record.flush()\n"
)


def test_a_part_with_rows_is_ok_and_keeps_its_rows(tmp_path: Path) -> None:
    result = run(tmp_path, ROW + "print('measured')")
    assert result["status"] == "ok" and result["rc"] == 0
    assert result["tables"] == {"t": [{"a": 1, "b": "x"}]}
    assert "measured" in (tmp_path / "log.txt").read_text()


def test_a_skipped_part_says_why(tmp_path: Path) -> None:
    skip = "record.write(json.dumps({'kind': 'skip', 'check': 'p', 'reason': 'pass --flag'}) + '\\n')"
    result = run(tmp_path, skip)
    assert result["status"] == "skipped" and result["reason"] == "pass --flag"


def test_a_crash_is_a_failed_part_with_its_last_line(tmp_path: Path) -> None:
    result = run(tmp_path, ROW + "raise RuntimeError('cuDNN said no')")
    assert result["status"] == "failed" and result["rc"] == 1
    assert result["reason"] == "exit 1: RuntimeError: cuDNN said no"
    assert result["tables"]["t"] == [{"a": 1, "b": "x"}]  # what it measured before is kept


def test_a_failed_check_fails_the_part_that_exits_0(tmp_path: Path) -> None:
    fail = "record.write(json.dumps({'kind': 'fail', 'check': 'x8', 'error': 'OOM'}) + '\\n')"
    result = run(tmp_path, ROW + fail)
    assert result["status"] == "failed" and result["rc"] == 0 and result["reason"] == "x8: OOM"


def test_a_part_past_its_budget_is_stopped_and_its_rows_kept(tmp_path: Path) -> None:
    # the part also starts a grandchild: the whole process group goes at the budget
    hang = (
        ROW + "import subprocess; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    )
    t0 = time.monotonic()
    result = run(tmp_path, hang + "time.sleep(60)", timeout_s=2)
    assert time.monotonic() - t0 < 20
    assert result["status"] == "timeout" and "2 s budget" in result["reason"]
    assert result["tables"]["t"] == [{"a": 1, "b": "x"}]


def test_no_time_left_skips_every_part_and_still_writes_the_report(tmp_path: Path) -> None:
    before = gpu_check.RESULTS_MD.read_text()
    rc = gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "out"), "--total-budget-s", "1"])
    assert rc == 0
    assert gpu_check.RESULTS_MD.read_text() == before  # the CPU run appends only with --append-results
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [p["name"] for p in results["parts"]] == list(gpu_check.ORDER)
    assert {p["status"] for p in results["parts"]} == {"skipped"}
    assert all("1 s total budget" in p["reason"] for p in results["parts"])
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| fs_parity | skipped |" in md and "CPU dry run" in md
    assert (tmp_path / "out" / "log.txt").is_file()


def test_the_report_renders_tables_env_and_lines() -> None:
    env = {"device_name": "NVIDIA H200", "driver": "580.1", "memory_gib": 139.8, "torch": "2.11.0",
           "torch_cuda": "13.0", "cudnn": 91002, "python": "3.12.3 (/x)", "a": 1, "b": 2}  # fmt: skip
    part = {"seconds": 1.0, "budget_s": 10, "rc": 0, "failures": [], "skips": [], "notes": []}
    results = {
        "title": "GPU check (CUDA, cuda)", "command": "python benchmarks/gpu_check.py", "device": "cuda",
        "git": "abc", "profile": "gpu", "started": "now", "wall_s": 12.0, "total_budget_s": 480,
        "parts": [
            {**part, "name": "env", "status": "ok", "reason": "", "tables": {"env": [env]}},
            {**part, "name": "fs_batches", "status": "failed", "reason": "800x1280 x8: OOM",
             "tables": {"batches": [{"pairs": 1, "scales_used": [1.0]},
                                    {"pairs": 8, "scales_used": [0.5, 1.0]}]},
             "failures": [{"check": "800x1280 x8", "error": "OOM"}]},
        ],
    }  # fmt: skip
    md = gpu_check.render(results)
    assert "- machine: NVIDIA H200, driver 580.1, 139.8 GiB; torch 2.11.0, CUDA 13.0, cuDNN 91002" in md
    assert "| fs_batches | failed | 1.0 | 10 | 800x1280 x8: OOM |" in md
    assert "| pairs | scales_used |" in md and "| 8 | 0.5, 1.0 |" in md
    assert "| device_name | NVIDIA H200 |" in md  # env: one field a line
    assert "- FAILED 800x1280 x8: OOM" in md
    assert "parts: 1 ok, 1 failed" in md


@pytest.mark.slow
def test_cpu_dry_run_gives_every_part_a_status(tmp_path: Path) -> None:
    """The whole check on the CPU at its small sizes (several minutes on 2 cores)."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    results = json.loads((out / "results.json").read_text())
    statuses = {p["name"]: p["status"] for p in results["parts"]}
    assert list(statuses) == list(gpu_check.ORDER)
    assert done.returncode == 0, f"{statuses}: " + "; ".join(p["reason"] for p in results["parts"])
    assert set(statuses.values()) <= {"ok", "skipped"}
    parts = {p["name"]: p for p in results["parts"]}
    assert "--foundation-stereo-src" in parts["fs_official"]["reason"]
    assert "CUDA" in parts["fs_compile"]["reason"]
    (parity,) = parts["fs_parity"]["tables"]["parity"]
    assert parity["within_cpu_tolerance"] and parity["disp_max_abs_diff_px"] <= 1e-3
    assert [r["step"] for r in parts["pipeline"]["tables"]["pipeline"]] == [
        "demo",
        "calibrate",
        "run",
        "validate",
    ]
    (dataset,) = parts["pipeline"]["tables"]["pipeline dataset"]
    assert dataset["ok"] == dataset["samples"] >= 1 and dataset["failed"] == 0
    assert {r["pairs"] for r in parts["fs_batches"]["tables"]["batches"]} == {1, 2}
    assert "| part | status |" in (out / "results.md").read_text()


def test_the_parts_shares_add_up_to_each_profiles_total() -> None:
    from gpu_check_lib import PROFILES, REPORT_RESERVE_S, part_budget_s

    for profile in PROFILES.values():
        assert list(profile.shares_s) == list(gpu_check.ORDER), profile.name
        assert sum(profile.shares_s.values()) + REPORT_RESERVE_S == profile.total_s, profile.name
        left = profile.total_s - REPORT_RESERVE_S
        names = list(gpu_check.ORDER)
        assert [part_budget_s(profile, n, names[i:], left - sum(profile.shares_s[m] for m in names[:i]))
                for i, n in enumerate(names)] == pytest.approx(list(profile.shares_s.values()))  # fmt: skip
        # a part that ends early leaves its time to the parts after it, in proportion to their shares
        rest = names[3:]
        more = part_budget_s(profile, rest[0], rest, left)
        assert more == pytest.approx(
            left * profile.shares_s[rest[0]] / sum(profile.shares_s[n] for n in rest)
        )
    assert PROFILES["gpu"].total_s == 480


def test_a_cpu_dry_run_of_a_few_parts_within_its_total(tmp_path: Path) -> None:
    """`make gpu-check DEVICE=cpu` on three parts (env, SAM 3 against the official processor, the
    multi-GPU part that a CPU skips) inside a 120 s total: statuses, rows, the budgets it gave."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--out", str(out),
         "--work", str(tmp_path / "work"), "--total-budget-s", "120", "--parts", "env", "sam3", "multi_gpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    parts = {p["name"]: p for p in results["parts"]}
    assert {n: p["status"] for n, p in parts.items()} == {
        "env": "ok",
        "sam3": "ok",
        "multi_gpu": "skipped",
    }, done.stdout[-2000:]
    assert done.returncode == 0 and results["wall_s"] <= 120
    # the first part's budget is its share of the total less the report's reserve (env 30, sam3 40,
    # multi_gpu 10 on the CPU); the next ones share what is then left
    assert parts["env"]["budget_s"] == round((120 - 10) * 30 / 80)
    assert parts["env"]["seconds"] + parts["sam3"]["budget_s"] <= 120 - 10 + 1
    (row,) = parts["sam3"]["tables"]["sam3"]
    assert row["scores_finite"] and max(row["count_difference_vs_official"]) <= 1 and min(row["masks"]) > 0
    assert "two or more" in parts["multi_gpu"]["reason"]
    assert "| sam3 | ok |" in (out / "results.md").read_text()
