"""Tracks on the demo's moving sequence: identity against the rendered truth, still frames skipped, and what
tracking costs against per-frame labelling (classical masks + sgbm, the CPU default).

The sequence of `labeler demo` (labeler/synthetic/sequence.py: 32 frames at 10 fps, objects move, one enters,
one leaves, 8 still frames) rendered with an ideal rectified rig of the demo's size and focal length, so the
truth's instance maps line up with the labelled ones pixel for pixel (identity calibration). In this one
process:
  1. `labeler run --stride 1` without --track (per-frame labelling, still frames skipped), wall time;
  2. the same with --track into another folder, wall time, and the track pass alone;
  3. IDF1 and identity switches of the tracks against the true ids (labeler/testing/tracking.py), the still
     frames skipped inside the still stretch and outside it.

    .venv/bin/python benchmarks/bench_tracks.py [--width 640 --height 480 --frames 32 --still 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from data_schema.commands import PseudoLabelConfig
    from labeler import open_dataset
    from labeler.synthetic import SyntheticRig
    from labeler.synthetic.sequence import write_demo_sequence
    from labeler.testing.tracking import score_dataset
    from pipelines import track as track_mod
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml

    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--still", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracks-"))
    f = 0.78 * args.width
    truth = write_demo_sequence(
        tmp / "demo",
        SyntheticRig.rectified(args.width, args.height, focal_px=f),
        n_frames=args.frames,
        still_frames=args.still,
    )
    calib = identity_calibration_yaml(tmp / "calib.yaml", args.width, args.height, fx=f)

    def run(out: str, track: bool):
        cfg = PseudoLabelConfig(
            inputs=tmp / "demo" / "sequence",
            calib=calib,
            out=tmp / out,
            rectify=True,
            stride=1,
            track=track,
            scheduler="sync",
            progress=False,
            previews=False,
        )
        t = time.perf_counter()
        res = run_pseudo_label(cfg)
        return res, time.perf_counter() - t

    spent: list[float] = []
    real = track_mod.track_sequences

    def timed(*a, **k):
        t = time.perf_counter()
        out = real(*a, **k)
        spent.append(time.perf_counter() - t)
        return out

    track_mod.track_sequences = timed
    _, t_plain = run("plain", False)
    res, t_tracked = run("tracked", True)
    ds = open_dataset(tmp / "tracked")
    samples = ds.samples.to_table().sort_by("row").to_pylist()
    score = score_dataset(ds, tmp / "demo" / "truth" / "sequence")
    still = {f.frame for f in truth.frames if f.still}
    skipped = {r["frame_index"] for r in samples if r["status"] == "skipped"}
    print(f"sequence: {args.frames} frames {args.width}x{args.height}, {len(still)} still; data in {tmp}")
    print("| figure | value |")
    print("|---|---|")
    print(f"| IDF1 (goal >= 0.9) | {score.idf1:.3f} |")
    print(f"| identity switches | {score.id_switches} |")
    print(f"| true / predicted detections, IDTP | {score.n_true} / {score.n_pred}, {score.idtp} |")
    print(f"| tracks | {res.tracks} |")
    print(f"| still frames skipped (goal >= 90 %) | {len(skipped & still)} of {len(still)} |")
    print(f"| frames skipped outside the still stretch (goal 0) | {len(skipped - still)} |")
    print(f"| labelling without --track, s | {t_plain:.1f} |")
    print(f"| labelling with --track, s | {t_tracked:.1f} |")
    print(f"| the track pass alone, s | {spent[0]:.2f} |")
    print(f"| with / without --track (goal <= 1.1) | {t_tracked / t_plain:.3f} |")
    print(f"| track pass / labelling without it | {spent[0] / t_plain:.3f} |")


if __name__ == "__main__":
    main()
