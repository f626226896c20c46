"""Scoring tracks against rendered truth: identity F1 (IDF1) and identity switches.

Per labelled frame, each predicted object is matched to the true object it overlaps with mask IoU at
least `min_iou` (one-to-one, Hungarian). A predicted object with less than half its pixels on true objects
lies on the background (the demo's wall and floor carry no truth) and is left out; any other unmatched
prediction is a false positive, and an unmatched true object of at least `min_area_px` pixels a miss.

IDF1 (Ristani et al. 2016): predicted tracks and true identities are paired once for the whole sequence
so that the frames they share are most; IDTP are those shared frames, and IDF1 = 2 IDTP / (2 IDTP + IDFP +
IDFN) with IDFP / IDFN the predicted / true detections left over. An identity switch (CLEAR MOT) is a true
object whose matched track id differs from the one it last had.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from labeler.dataset.reader import Dataset


@dataclass(frozen=True)
class TrackScore:
    idf1: float
    id_switches: int
    idtp: int
    n_true: int  # true detections counted
    n_pred: int  # predicted detections counted (background ones left out)
    frames: int


def frame_matches(
    pred_ids: np.ndarray,
    pred_tracks: dict[int, int],
    true_ids: np.ndarray,
    *,
    min_iou: float = 0.5,
    min_area_px: int = 200,
) -> tuple[dict[int, int], set[int], set[int]]:
    """One frame: ({true id: predicted track id} matched, counted true ids, counted predicted track ids).
    `pred_tracks`: the frame's {object id in pred_ids: track id}."""
    from scipy.optimize import linear_sum_assignment

    from labeler.segment.track import iou_matrix

    t_ids = [int(i) for i in np.unique(true_ids) if i > 0 and (true_ids == i).sum() >= min_area_px]
    on_truth = true_ids > 0
    p_ids = [oid for oid in sorted(pred_tracks) if (m := pred_ids == oid).any() and on_truth[m].mean() >= 0.5]
    iou = iou_matrix(true_ids.astype(np.int64), pred_ids.astype(np.int64), t_ids, p_ids)
    matched: dict[int, int] = {}
    if t_ids and p_ids:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols, strict=True):
            if iou[r, c] >= min_iou:
                matched[t_ids[r]] = pred_tracks[p_ids[c]]
    return matched, set(t_ids), {pred_tracks[o] for o in p_ids}


def score_tracks(frames: list[tuple[dict[int, int], set[int], set[int]]]) -> TrackScore:
    """IDF1 and identity switches over a sequence's frames (`frame_matches` of each, in frame order)."""
    from scipy.optimize import linear_sum_assignment

    shared: dict[tuple[int, int], int] = defaultdict(int)
    n_true = n_pred = switches = 0
    last: dict[int, int] = {}
    for matched, trues, preds in frames:
        n_true, n_pred = n_true + len(trues), n_pred + len(preds)
        for t, p in matched.items():
            shared[(t, p)] += 1
            if t in last and last[t] != p:
                switches += 1
            last[t] = p
    ts = sorted({t for t, _ in shared})
    ps = sorted({p for _, p in shared})
    idtp = 0
    if ts and ps:
        m = np.array([[shared.get((t, p), 0) for p in ps] for t in ts], np.float64)
        rows, cols = linear_sum_assignment(-m)
        idtp = int(m[rows, cols].sum())
    denom = n_true + n_pred
    return TrackScore(
        idf1=2 * idtp / denom if denom else 1.0,
        id_switches=switches,
        idtp=idtp,
        n_true=n_true,
        n_pred=n_pred,
        frames=len(frames),
    )


def score_dataset(ds: Dataset, truth_dir: Path) -> TrackScore:
    """A `--track` dataset of the demo sequence against its rendered truth (`truth_dir`:
    `labeler demo`'s `truth/sequence`, one `frame_<index>.npz` per frame): every labelled frame's
    instance map and track ids, matched as `frame_matches` does, then scored."""
    rows = ds.objects.to_table(columns=["row", "id", "track_id"]).to_pylist()
    tracks_of: dict[int, dict[int, int]] = defaultdict(dict)
    for o in rows:
        tracks_of[o["row"]][o["id"]] = o["track_id"]
    frames = []
    for r in ds.samples.to_table().sort_by("row").to_pylist():
        if r["status"] != "ok":
            continue
        pred = ds.read_row(r["row"], ("instance_ids",))["instance_ids"]
        true = np.load(truth_dir / f"frame_{r['frame_index']:06d}.npz")
        frames.append(frame_matches(pred, tracks_of[r["row"]], true["instance_ids"]))
    return score_tracks(frames)
