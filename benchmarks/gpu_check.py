#!/usr/bin/env python
"""One prepared check of every CUDA path of labeler, in one command, with its results left as files.

    make gpu-check                                   # = python benchmarks/gpu_check.py --device cuda
    make gpu-check DEVICE=cpu                        # the same parts, small, on the CPU (proves they run)
    python benchmarks/gpu_check.py --device cuda --out $OUT --foundation-stereo-src ~/FoundationStereo

It builds the deterministic checkpoints itself (FoundationStereo:
labeler.testing.foundation_stereo_release; a tiny and a
full-size random SAM2; the heads are seeded random inits), then runs each part in its own process with
its own time budget: its share (`Profile.shares_s`) of the total (480 s on CUDA, 900 s on the CPU,
--total-budget-s) less the report's reserve, the shares adding up to it; what a part leaves unused goes to
the parts after it. A part that fails, stops at its budget or finds no time left is one line in the
report, and the other parts still run. Parts, in order:

  env, checkpoints          device, driver, versions, packages; the weights
  fs_parity                 FoundationStereo float32 on the device against the in-repo official vectors
  fs_speed                  pairs/s per ViT / size / iterations / dtype, peak memory, autocast vs float32
  fs_batches                1/4/8 pairs per call with the left-right pass at 480x640 and 800x1280
  fs_official               NVIDIA's code beside labeler's (with --foundation-stereo-src)
  sam2                      labeler's backend against the official generator (tiny, and 1024 px)
  sam3                      labeler's SAM 3 backend against the official processor (tiny, bf16)
  heads                     train step of ViT-S/B at 518 px, bf16; loader/train
  predict                   train-heads --gpu 0 (one epoch), then labeler predict --gpu 0
  doubt                     labeler doubt --heads RUN --gpu 0 (the monocular model on the device)
  pipeline                  labeler demo -> calibrate -> run --gpu 0 (GPU backends) -> validate
  trainers                  one step of each model trainer labeler has (hooks for those to come)
  multi_gpu                 train-heads and pseudo-label with --gpu 0,1 (two GPUs or more; else skipped)
  fs_compile                torch.compile on/off (last: the likeliest to use up its budget)

Writes OUT/results.json (everything measured), OUT/results.md (the same as tables, headed by the device,
driver, torch/CUDA versions and the command) and OUT/log.txt (every part's output); on CUDA the markdown
is also appended to benchmarks/RESULTS.md (--append-results / --no-append-results). Exits 1 when a part
failed or ran out of time, 0 otherwise (skipped parts are not failures).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_lib import PROFILES, REPO, REPORT_RESERVE_S, Part, Skip, one_line, part_budget_s  # noqa: E402

ORDER = (
    "env",
    "checkpoints",
    "fs_parity",
    "fs_speed",
    "fs_batches",
    "fs_official",
    "sam2",
    "sam3",
    "heads",
    "predict",
    "doubt",
    "pipeline",
    "trainers",
    "multi_gpu",
    "fs_compile",
)
MIN_PART_S = 20  # a part is not started with less time than this left
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--out", type=Path, default=REPO / "work" / "gpu-check", help="results folder (3 files)")
    p.add_argument(
        "--work", type=Path, default=None, help="checkpoints and datasets (default: a temp folder)"
    )
    p.add_argument("--parts", nargs="+", choices=ORDER, default=list(ORDER), help="a subset, in ORDER")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None, help="sizes (default: by device)")
    p.add_argument(
        "--total-budget-s",
        type=float,
        default=None,
        help="default: the profile's (480 on CUDA, 900 on the CPU)",
    )
    p.add_argument(
        "--foundation-stereo-src", type=Path, default=None, help="NVlabs/FoundationStereo checkout"
    )
    p.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (default: inductor on CUDA)"
    )
    p.add_argument(
        "--append-results",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="append the table to benchmarks/RESULTS.md (default: on CUDA only)",
    )
    p.add_argument("--child", choices=ORDER, help=argparse.SUPPRESS)  # internal: run one part here
    p.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deadline-s", type=float, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- one part, in this process


def run_child(args: argparse.Namespace) -> int:
    from gpu_check_more import PARTS as MORE
    from gpu_check_parts import PARTS as OTHER
    from gpu_check_stereo import PARTS as STEREO

    parts = {**OTHER, **STEREO, **MORE}
    part = Part(
        name=args.child,
        device=args.device,
        profile=PROFILES[args.profile],
        work=args.work,
        record=args.record,
        deadline=time.monotonic() + args.deadline_s,
        foundation_stereo_src=args.foundation_stereo_src,
        compile_backend=args.compile_backend,
    )
    try:
        parts[args.child](part)
    except Skip as why:
        part.skip(args.child, str(why))
    except Exception as err:
        part.fail(args.child, one_line(err))
        raise
    return 0


# ---------------------------------------------------------------- the parts, each in its own process


def run_part(name: str, command: list[str], timeout_s: float, record: Path, log: Any) -> dict[str, Any]:
    """Run one part's process (its own process group, so a timeout ends everything it started) and read
    its record; the status is ok | failed | timeout | skipped."""
    record.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    log.write(f"\n===== {name} (budget {timeout_s:.0f} s): {shlex.join(command)}\n")
    log.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            print(line, end="", flush=True)
            tail[:] = (tail + [line.strip()])[-40:]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(proc)
    reader.join(timeout=10)
    seconds = time.monotonic() - t0
    result = read_record(record)
    result.update(name=name, seconds=round(seconds, 1), budget_s=round(timeout_s), rc=proc.returncode)
    if timed_out:
        result["status"] = "timeout"
        result["reason"] = f"stopped at its {timeout_s:.0f} s budget; what it measured before is kept"
    elif proc.returncode != 0 or result["failures"]:
        result["status"] = "failed"
        errors = [f"{f['check']}: {f['error']}" for f in result["failures"]]
        last = next((line for line in reversed(tail) if line), "no output")
        result["reason"] = "; ".join(errors[:3]) if errors else f"exit {proc.returncode}: {last}"
    elif not result["tables"] and result["skips"]:
        result["status"] = "skipped"
        result["reason"] = "; ".join(s["reason"] for s in result["skips"])
    else:
        result["status"] = "ok"
        result["reason"] = "; ".join(f"{s['check']}: {s['reason']}" for s in result["skips"])
    return result


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the part's process group, SIGKILL 5 s later if it is still there."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def read_record(record: Path) -> dict[str, Any]:
    tables: dict[str, list[dict[str, Any]]] = {}
    out: dict[str, Any] = {"tables": tables, "failures": [], "skips": [], "notes": []}
    if not record.is_file():
        return out
    for line in record.read_text().splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:  # a line cut off by the kill
            continue
        kind = item.pop("kind")
        if kind == "row":
            tables.setdefault(item["table"], []).append(item["values"])
        elif kind == "fail":
            out["failures"].append(item)
        elif kind == "skip":
            out["skips"].append(item)
        else:
            out["notes"].append(item["text"])
    return out


def skipped(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "status": "skipped", "reason": reason, "seconds": 0, "budget_s": 0, "rc": None,
            "tables": {}, "failures": [], "skips": [], "notes": []}  # fmt: skip


# ---------------------------------------------------------------- the report


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git checkout)"
    return head + (" + local changes" if dirty else "")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], *, transpose: bool = False) -> list[str]:
    if transpose:  # one record of many fields (env): one field a line
        return ["| field | value |", "|---|---|", *(f"| {k} | {cell(v)} |" for k, v in rows[0].items())]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return lines


def render(results: dict[str, Any]) -> str:
    env: dict[str, Any] = next(
        (p["tables"].get("env", [{}])[0] for p in results["parts"] if p["name"] == "env"), {}
    )
    counts = {
        s: sum(p["status"] == s for p in results["parts"]) for s in ("ok", "failed", "timeout", "skipped")
    }
    lines = [
        f"### {results['title']}",
        "",
        f"- command: `{results['command']}`",
        f"- machine: {env.get('device_name', results['device'])}"
        + (f", driver {env['driver']}" if env.get("driver") else "")
        + (f", {env['memory_gib']} GiB" if env.get("memory_gib") else "")
        + f"; torch {env.get('torch', '?')}, CUDA {env.get('torch_cuda') or 'none'}, cuDNN {env.get('cudnn')}"
        + f"; Python {str(env.get('python', '?')).split(' ')[0]}",
        f"- labeler {results['git']}; profile {results['profile']}; started {results['started']}",
        f"- wall {results['wall_s']:.0f} s of the {results['total_budget_s']:.0f} s budget; parts: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
        "",
        "| part | status | s | budget s | note |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['name']} | {p['status']} | {p['seconds']} | {p['budget_s']} | {cell(p.get('reason', ''))} |"
        for p in results["parts"]
    ]
    for p in results["parts"]:
        if not (p["tables"] or p["notes"] or p["skips"] or p["failures"]):
            continue
        lines += ["", f"#### {p['name']}"]
        for table, rows in p["tables"].items():
            lines += ["", f"{table}:", "", *markdown_table(rows, transpose=table == "env")]
        extra = [f"- {n}" for n in p["notes"]] + [
            f"- skipped {s['check']}: {s['reason']}" for s in p["skips"]
        ]
        extra += [f"- FAILED {f['check']}: {f['error']}" for f in p["failures"]]
        if extra:
            lines += ["", *extra]
    return "\n".join(lines) + "\n"


def write_reports(results: dict[str, Any], out: Path) -> None:
    for name, text in (
        ("results.json", json.dumps(results, indent=1, default=str)),
        ("results.md", render(results)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.profile = args.profile or ("gpu" if cuda else "cpu")
    if args.child:
        return run_child(args)
    total = args.total_budget_s or PROFILES[args.profile].total_s
    append = cuda if args.append_results is None else args.append_results
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="labeler-gpu-check-")
        args.work = Path(tmp.name)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    t0 = time.monotonic()
    deadline = t0 + total
    results: dict[str, Any] = {
        "title": f"GPU check ({'CUDA' if cuda else 'CPU dry run'}, {args.device})",
        "command": "python benchmarks/gpu_check.py " + shlex.join(given),
        "device": args.device,
        "profile": args.profile,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git": git_state(),
        "total_budget_s": total,
        "wall_s": 0.0,
        "parts": [],
    }
    profile = PROFILES[args.profile]
    names = [n for n in ORDER if n in args.parts]
    try:
        with (out / "log.txt").open("w") as log:
            for i, name in enumerate(names):
                left = deadline - time.monotonic() - REPORT_RESERVE_S
                timeout = part_budget_s(profile, name, names[i:], left)
                if timeout < MIN_PART_S:
                    result = skipped(
                        name, f"no time left in the {total:.0f} s total budget (--total-budget-s)"
                    )
                else:
                    record = work / "records" / f"{name}.jsonl"
                    command = [sys.executable, str(Path(__file__).resolve()), "--child", name,
                               "--device", args.device, "--profile", args.profile, "--work", str(work),
                               "--record", str(record), "--deadline-s", str(timeout - 5)]  # fmt: skip
                    if args.foundation_stereo_src:
                        command += ["--foundation-stereo-src", str(args.foundation_stereo_src.resolve())]
                    if args.compile_backend:
                        command += ["--compile-backend", args.compile_backend]
                    (work / "records").mkdir(exist_ok=True)
                    result = run_part(name, command, timeout, record, log)
                print(
                    f"== {name}: {result['status']} ({result['seconds']} s) {result.get('reason', '')}",
                    flush=True,
                )
                results["parts"].append(result)
                results["wall_s"] = time.monotonic() - t0
                write_reports(results, out)
    finally:
        results["wall_s"] = time.monotonic() - t0
        write_reports(results, out)
        if append:
            with RESULTS_MD.open("a") as f:
                f.write("\n" + render(results))
        if tmp is not None:
            tmp.cleanup()
    print("\n" + render(results))
    print(
        f"results: {out}/results.json, results.md, log.txt"
        + (f"; appended to {RESULTS_MD}" if append else "")
    )
    bad = [p["name"] for p in results["parts"] if p["status"] in ("failed", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
