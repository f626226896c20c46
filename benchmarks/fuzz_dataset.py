"""Damage every file of a small dataset, one file and one kind of damage at a time, and count what
`labeler validate` names and what `labeler repair` restores (issue 25's "every file guarded").

Kinds of damage: flip one byte in the middle, truncate to half, delete, edit (append one byte). Files:
every file of the dataset except the lock and what people look at (previews, gallery), which no label
depends on. A scenario is "named" when validate reports anything, "restored" when after `repair` the
dataset validates and holds the same labels (dataset version) as before.

    .venv/bin/python benchmarks/fuzz_dataset.py [--pairs 6] [--per-shard 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

UNGUARDED = ("previews", "gallery", "index.html", ".lock", "rectified")


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    if b:
        b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b) if b else b"x")


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _delete(p: Path) -> None:
    p.unlink()


def _edit(p: Path) -> None:
    p.write_bytes(p.read_bytes() + b"x")


DAMAGE = {"flip": _flip, "truncate": _truncate, "delete": _delete, "edit": _edit}


def kind_of(rel: Path) -> str:
    if rel.parts[0] == "data.zarr":
        return "zarr metadata" if rel.name == "zarr.json" else "array shard file"
    if rel.parts[0] == "tables":
        return f"{rel.parts[1]} table file"
    return rel.name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--per-shard", type=int, default=2)
    args = ap.parse_args()
    from data_schema.commands import PseudoLabelConfig
    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from labeler.errors import LabelerError
    from pipelines.pseudo_label import run_pseudo_label
    from pipelines.repair import repair_dataset
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    write_plane_pairs(root / "rect", args.pairs, 96, 64, seed=2)
    calib = identity_calibration_yaml(root / "calib.yaml", 96, 64)
    cfg = PseudoLabelConfig(
        inputs=root / "rect",
        calib=calib,
        out=root / "ds",
        samples_per_shard=args.per_shard,
        scheduler="sync",
        progress=False,
        previews=False,
    )
    run_pseudo_label(cfg)
    clean = root / "ds"
    assert validate_dataset(clean) == []
    version = open_dataset(clean).version
    files = sorted(
        p.relative_to(clean)
        for p in clean.rglob("*")
        if p.is_file() and not any(part in UNGUARDED for part in p.relative_to(clean).parts)
    )
    counts: Counter[tuple[str, str, str]] = Counter()
    missed = []
    for rel in files:
        for name, damage in DAMAGE.items():
            ds = root / "work"
            shutil.rmtree(ds, ignore_errors=True)
            shutil.copytree(clean, ds)
            damage(ds / rel)
            kind = kind_of(rel)
            counts[(kind, name, "scenarios")] += 1
            named = bool(validate_dataset(ds))
            counts[(kind, name, "named")] += named
            if not named:
                missed.append(f"not named: {name} {rel}")
                continue
            try:
                repair_dataset(ds)
                ok = validate_dataset(ds) == [] and open_dataset(ds).version == version
            except (LabelerError, OSError, ValueError) as err:
                ok = False
                missed.append(f"not restored: {name} {rel}: {' '.join(str(err).split())[:120]}")
            counts[(kind, name, "restored")] += ok
            if not ok and not missed[-1].startswith("not restored"):
                missed.append(f"not restored: {name} {rel}")
    kinds = sorted({k for k, _, _ in counts})
    print("| file kind | files | " + " | ".join(f"{d} named / restored" for d in DAMAGE) + " |")
    print("|---|---|" + "---|" * len(DAMAGE))
    for kind in kinds:
        n = counts[(kind, "flip", "scenarios")]
        cells = [f"{counts[(kind, d, 'named')]}/{n} · {counts[(kind, d, 'restored')]}/{n}" for d in DAMAGE]
        print(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    total = sum(v for (_, _, what), v in counts.items() if what == "scenarios")
    named = sum(v for (_, _, what), v in counts.items() if what == "named")
    restored = sum(v for (_, _, what), v in counts.items() if what == "restored")
    print(f"\n{total} scenarios: {named} named by validate, {restored} restored by repair")
    for line in missed:
        print(line)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
