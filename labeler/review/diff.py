"""`labeler diff A B --out REPORT`: what changed between two datasets (versions of the same captures, or
overlapping ones), as REPORT/diff.json (data_schema/diff.py) and REPORT/index.html with PNGs.

Samples are matched by id. A sample in both is unchanged when all six array digests are equal — then only
the tables are read — and changed otherwise; for a changed sample the arrays of both are read once:

- depth: |z_B - z_A| / z_A over pixels with valid depth in both, its median and 90th percentile;
- masks: A's and B's objects matched one to one, greedily by IoU (largest first, IoU >= 0.5; IoUs from
  one joint histogram of the two id maps); the mean IoU of the matches, objects of B matched to none
  (appeared) and of A matched to none (vanished);
- the doubt score of both.

Doubt signals shift (mean over the samples both have with the signal, B - A) for every sample signal and
term, and for the object signals over every object of those samples on each side. With `--run-a` /
`--run-b` (runs trained on A and on B), the held-out figures of each run's last epoch and their change.
When both were labelled with `--track`, their tracks are matched by mask IoU over the samples both have,
with ID switches and depth differences per matched track (labeler/review/diff_tracks.py).
Changed samples are listed largest change first: by `magnitude` = median |dz|/z + |valid-depth change| +
(1 - mask IoU) + share of objects that appeared or vanished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.diff import DatasetDiff, MetricShift, SampleChange, SignalShift
from data_schema.manifest import ARRAY_NAMES, Manifest
from labeler.errors import LabelerError
from labeler.io import safe_name
from labeler.review.diff_tracks import MATCH_IOU, track_tally

SAMPLE_SIGNALS = ("confidence_mean", "valid_depth_fraction", "mono_disagreement", "temporal_instability")
OBJECT_SIGNALS = ("valid_fraction", "thickness_px", "edge_alignment", "mono_disagreement", "doubt")
_RUN_FIGURES = ("heldout_loss", "abs_rel", "delta1", "fg_iou", "mask_miou", "mask_ap50")


@dataclass(frozen=True)
class Side:
    """One dataset's reader and its tables with doubt columns, ok samples by id."""

    ds: Any
    samples: dict[str, dict[str, Any]]
    objects: Any  # pyarrow table with doubt columns


def _side(path: str | Path) -> Side:
    import pyarrow.compute as pc

    from labeler.dataset.reader import open_dataset
    from labeler.doubt import with_doubt

    ds = open_dataset(path)
    width, height = ds.manifest.calibration.image_size
    samples, objects = with_doubt(ds.samples.to_table(), ds.objects.to_table(), width * height)
    ok = samples.filter(pc.field("status") == "ok").to_pylist()
    return Side(ds, {r["sample_id"]: r for r in ok}, objects)


def class_counts(side: Side) -> dict[str, int] | None:
    """Objects per class, in the dataset's class order (None for a class-agnostic dataset)."""
    classes = side.ds.manifest.classes
    if classes is None:
        return None
    names = side.objects["class_name"].to_pylist()
    return {c: names.count(c) for c in classes}


def joint_histogram(ids_a: np.ndarray, ids_b: np.ndarray) -> np.ndarray:
    """(max A id + 1, max B id + 1) pixel counts of each (A id, B id) pair of two id maps."""
    na, nb = int(ids_a.max(initial=0)), int(ids_b.max(initial=0))
    return np.bincount(
        ids_a.astype(np.int64).ravel() * (nb + 1) + ids_b.astype(np.int64).ravel(),
        minlength=(na + 1) * (nb + 1),
    ).reshape(na + 1, nb + 1)


def match_objects(ids_a: np.ndarray, ids_b: np.ndarray) -> tuple[list[tuple[int, int, float]], int, int]:
    """Greedy one-to-one matching of two id maps by IoU.

    Returns:
        (matches [(id_a, id_b, iou)], number of A's objects left unmatched, number of B's).
    """
    return match_joint(joint_histogram(ids_a, ids_b))


def match_joint(joint: np.ndarray) -> tuple[list[tuple[int, int, float]], int, int]:
    """`match_objects` from the joint histogram of the two maps."""
    area_a, area_b = joint.sum(1), joint.sum(0)
    inter = joint[1:, 1:].astype(np.float64)
    union = area_a[1:, None] + area_b[None, 1:] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    present_a = set(np.flatnonzero(area_a[1:]) + 1)
    present_b = set(np.flatnonzero(area_b[1:]) + 1)
    matches = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < MATCH_IOU:
            break
        a, b = int(i) + 1, int(j) + 1
        if a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        matches.append((a, b, float(iou[i, j])))
    return matches, len(present_a - used_a), len(present_b - used_b)


def depth_change(depth_a: np.ndarray, depth_b: np.ndarray) -> tuple[float | None, float | None, np.ndarray]:
    """(median, p90) of |z_B - z_A| / z_A over pixels valid in both (None: none), and the per-pixel map."""
    ok = np.isfinite(depth_a) & np.isfinite(depth_b) & (depth_a > 0)
    rel = np.full(depth_a.shape, np.nan, np.float32)
    rel[ok] = np.abs(depth_b[ok] - depth_a[ok]) / depth_a[ok]
    if not ok.any():
        return None, None, rel
    med, p90 = np.percentile(rel[ok], [50, 90])
    return float(med), float(p90), rel


def _num(v: Any) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(got)) if got else None


def _object_values(side: Side, name: str) -> dict[int, list[float]]:
    """{sample row: the signal's values of its objects that have it}."""
    out: dict[int, list[float]] = {}
    for r, v in zip(side.objects["row"].to_pylist(), side.objects[name].to_pylist(), strict=True):
        x = _num(v)
        if x is not None:
            out.setdefault(r, []).append(x)
    return out


def _shifts(a: Side, b: Side, common: list[str]) -> list[SignalShift]:
    from labeler.doubt import SAMPLE_TERMS

    out = []
    for name in ("doubt", *[f"doubt_{t}" for t in SAMPLE_TERMS], *SAMPLE_SIGNALS):
        pairs = [(_num(a.samples[s].get(name)), _num(b.samples[s].get(name))) for s in common]
        both = [(x, y) for x, y in pairs if x is not None and y is not None]
        ma, mb = _mean([x for x, _ in both]), _mean([y for _, y in both])
        shift = None if ma is None or mb is None else mb - ma
        out.append(SignalShift(name=name, mean_a=ma, mean_b=mb, shift=shift, n=len(both)))
    # Objects: the mean over every object of the common samples that have the signal on both sides (the
    # objects themselves may differ: appeared and vanished ones count on their side); n counts those samples.
    for name in OBJECT_SIGNALS:
        va, vb = _object_values(a, name), _object_values(b, name)
        kept = [s for s in common if va.get(a.samples[s]["row"]) and vb.get(b.samples[s]["row"])]
        ma = _mean([v for s in kept for v in va[a.samples[s]["row"]]])
        mb = _mean([v for s in kept for v in vb[b.samples[s]["row"]]])
        shift = None if ma is None or mb is None else mb - ma
        out.append(SignalShift(name=f"objects.{name}", mean_a=ma, mean_b=mb, shift=shift, n=len(kept)))
    return out


def run_metrics(run_a: Path, run_b: Path) -> list[MetricShift]:
    """Held-out figures of the last epoch of two runs (RUN/metrics.json) and B - A."""

    def last(run: Path) -> dict[str, Any]:
        path = run / "metrics.json"
        if not path.is_file():
            raise LabelerError(f"{run}: no metrics.json; pass a train-heads or finetune run folder")
        rows = json.loads(path.read_text())
        if not rows:
            raise LabelerError(f"{path}: no epochs yet")
        return rows[-1]

    fa, fb = last(run_a), last(run_b)
    out = []
    for name in _RUN_FIGURES:
        x, y = fa.get(name), fb.get(name)
        if x is None and y is None:
            continue
        out.append(MetricShift(name=name, a=x, b=y, change=None if x is None or y is None else y - x))
    return out


def made_differently(a: Manifest, b: Manifest) -> list[str]:
    """One line per setting the two datasets were made with differently (the calibration first: depth
    and masks of two rigs, or of two calibrations of one rig, are not comparable sample by sample)."""
    lines = []
    if a.calibration_sha256 != b.calibration_sha256:
        ca, cb = a.calibration, b.calibration
        lines.append(
            f"different calibrations: A {ca.rig} (baseline {ca.baseline_m * 1000:.2f} mm, "
            f"{ca.image_size[0]}x{ca.image_size[1]}, sha256 {a.calibration_sha256[:12]}), B {cb.rig} "
            f"(baseline {cb.baseline_m * 1000:.2f} mm, {cb.image_size[0]}x{cb.image_size[1]}, sha256 "
            f"{b.calibration_sha256[:12]})"
        )
    for name, va, vb in (
        ("depth settings", a.depth, b.depth),
        ("stereo", a.stereo, b.stereo),
        ("masks", a.masks, b.masks),
        ("object policy", a.objects, b.objects),
    ):
        if va != vb:
            da, db = va.model_dump(mode="json"), vb.model_dump(mode="json")
            keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
            shown = ", ".join(f"{k} {da.get(k)} → {db.get(k)}" for k in keys[:4])
            lines.append(
                f"different {name}: {shown}" + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
            )
    return lines


def _sample_change(
    a: Side, b: Side, sid: str, differ: list[str]
) -> tuple[SampleChange, np.ndarray | None, list[tuple[int, int, float]]]:
    """A sample whose arrays differ: the change, the joint histogram of its two instance maps and the
    objects matched (None and none when the two differ in size)."""
    ra, rb = a.samples[sid], b.samples[sid]
    xa = a.ds.read_row(ra["row"], ("left", "depth_m", "instance_ids"))
    xb = b.ds.read_row(rb["row"], ("left", "depth_m", "instance_ids"))
    fields: dict[str, Any] = {"objects_matched": 0, "objects_appeared": 0, "objects_vanished": 0}
    joint: np.ndarray | None = None
    matches: list[tuple[int, int, float]] = []
    if xa["depth_m"].shape == xb["depth_m"].shape:
        med, p90, _ = depth_change(xa["depth_m"], xb["depth_m"])
        joint = joint_histogram(xa["instance_ids"], xb["instance_ids"])
        matches, vanished, appeared = match_joint(joint)
        fields = {
            "depth_rel_change_median": med,
            "depth_rel_change_p90": p90,
            "mask_iou_mean": _mean([m[2] for m in matches]) if matches else None,
            "objects_matched": len(matches),
            "objects_appeared": appeared,
            "objects_vanished": vanished,
        }
    va, vb = ra["valid_depth_fraction"], rb["valid_depth_fraction"]
    dvalid = None if va is None or vb is None else vb - va
    n_obj = max(1, fields["objects_matched"] + fields["objects_vanished"] + fields["objects_appeared"])
    iou = fields.get("mask_iou_mean")
    magnitude = (
        (fields.get("depth_rel_change_median") or 0.0)
        + abs(dvalid or 0.0)
        + (1 - iou if iou is not None else 0.0)
        + (fields["objects_appeared"] + fields["objects_vanished"]) / n_obj
    )
    change = SampleChange(
        sample_id=sid,
        arrays=differ,
        valid_depth_fraction_change=dvalid,
        doubt_a=_num(ra["doubt"]),
        doubt_b=_num(rb["doubt"]),
        magnitude=magnitude,
        **fields,
    )
    return change, joint, matches


def diff_datasets(
    path_a: str | Path,
    path_b: str | Path,
    out: str | Path,
    *,
    run_a: Path | None = None,
    run_b: Path | None = None,
    pictures: int = 20,
) -> DatasetDiff:
    """Compare two datasets; write OUT/diff.json, OUT/index.html and OUT/changes/*.png; return the report."""
    from labeler.io import write_png, write_text_atomic
    from labeler.review.diff_report import side_by_side, write_report

    if (run_a is None) != (run_b is None):
        raise LabelerError("--run-a and --run-b go together: a run trained on A and one trained on B")
    out = Path(out)
    a, b = _side(path_a), _side(path_b)
    common = sorted(set(a.samples) & set(b.samples))
    changes: list[SampleChange] = []
    matched: dict[str, list[tuple[int, int, float]]] = {}  # the object matches, for the report's pictures
    unchanged = 0
    tally = track_tally(a, b)  # None unless both were labelled with --track
    for sid in common:
        ra, rb = a.samples[sid], b.samples[sid]
        order = (ra.get("sequence") or "", ra.get("frame_index") or 0, sid)
        differ = [n for n in ARRAY_NAMES if ra[f"digest_{n}"] != rb[f"digest_{n}"]]
        if not differ:
            unchanged += 1
            if tally is not None:
                tally.add(ra["row"], rb["row"], order)
            continue
        change, joint, matches = _sample_change(a, b, sid, differ)
        changes.append(change)
        if joint is not None:
            matched[sid] = matches
            if tally is not None:
                tally.add(ra["row"], rb["row"], order, joint, matches)
    changes.sort(key=lambda c: (-c.magnitude, c.sample_id))
    listed = []
    for k, change in enumerate(changes):
        if k < pictures and change.depth_rel_change_median is not None:  # the largest: read them again
            xa = a.ds.read_row(a.samples[change.sample_id]["row"], ("left", "depth_m", "instance_ids"))
            xb = b.ds.read_row(b.samples[change.sample_id]["row"], ("left", "depth_m", "instance_ids"))
            name = f"changes/{k + 1:03d}-{safe_name(change.sample_id)}.png"
            rel = depth_change(xa["depth_m"], xb["depth_m"])[2]
            write_png(out / name, side_by_side(xa, xb, rel, change, matched[change.sample_id]))
            change = change.model_copy(update={"picture": name})
        listed.append(change)
    report = DatasetDiff(
        a=str(path_a),
        b=str(path_b),
        version_a=a.ds.version,
        version_b=b.ds.version,
        added=sorted(set(b.samples) - set(a.samples)),
        removed=sorted(set(a.samples) - set(b.samples)),
        n_unchanged=unchanged,
        changed=listed,
        doubt=_shifts(a, b, common),
        metrics=run_metrics(run_a, run_b) if run_a is not None and run_b is not None else [],
        objects_a=a.objects.num_rows,
        objects_b=b.objects.num_rows,
        class_counts_a=class_counts(a),
        class_counts_b=class_counts(b),
        made_differently=made_differently(a.ds.manifest, b.ds.manifest),
        tracks=tally.result() if tally is not None else None,
    )
    write_text_atomic(out / "diff.json", report.model_dump_json(indent=1))
    write_report(out, report)
    return report
