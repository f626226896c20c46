"""The pictures and the HTML page of `labeler diff` (the numbers are labeler/review/diff.py's)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.diff import DatasetDiff, SampleChange, TrackDiff

REL_CHANGE_MAX = 0.2  # the change map's colour scale ends at 20 %


def _titled(image: np.ndarray, title: str) -> np.ndarray:
    import cv2

    bar = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def side_by_side(
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    rel: np.ndarray,
    c: SampleChange,
    matches: list[tuple[int, int, float]],
) -> np.ndarray:
    """Two rows: depth A | depth B | relative change; masks A | masks B | image B (one depth scale).
    `matches`: (id in A, id in B, IoU) of the objects the diff matched."""
    from labeler.previews import colourise, mask_overlay
    from labeler.review.layers import value_range

    # B's objects drawn in the colour of the A object they match; the others in colours of their own
    n_a, n_b = int(a["instance_ids"].max(initial=0)), int(b["instance_ids"].max(initial=0))
    lut = np.arange(n_b + 1, dtype=np.int64) + n_a
    lut[0] = 0
    for ia, ib, _ in matches:
        lut[ib] = ia
    ids_b = lut[b["instance_ids"]].astype(np.uint16)

    both = np.concatenate([a["depth_m"].ravel(), b["depth_m"].ravel()])
    lo, hi = value_range(both)
    med = "n/a" if c.depth_rel_change_median is None else f"{c.depth_rel_change_median:.1%}"
    iou = "n/a" if c.mask_iou_mean is None else f"{c.mask_iou_mean:.2f}"
    top = [
        _titled(colourise(a["depth_m"], lo, hi), f"A depth {lo:.2f}-{hi:.2f} m"),
        _titled(colourise(b["depth_m"], lo, hi), "B depth (same scale)"),
        _titled(colourise(rel, 0.0, REL_CHANGE_MAX), f"|dz|/z 0-{REL_CHANGE_MAX:.0%}, median {med}"),
    ]
    bottom = [
        _titled(mask_overlay(a["left"], a["instance_ids"], []), "A masks"),
        _titled(mask_overlay(b["left"], ids_b, []), f"B masks (matched IoU {iou}, matched in A's colour)"),
        _titled(b["left"], f"B image: +{c.objects_appeared} / -{c.objects_vanished} objects"),
    ]
    return np.vstack([np.hstack(top), np.hstack(bottom)])


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _ids(ids: list[str], shown: int = 50) -> str:
    more = f" … and {len(ids) - shown} more (diff.json)" if len(ids) > shown else ""
    return ", ".join(html.escape(s) for s in ids[:shown]) + more if ids else "none"


def write_report(out: Path, r: DatasetDiff) -> Path:
    """OUT/index.html: the counts, the signal shifts, the held-out metrics, the changes largest first."""
    from labeler.io import write_text_atomic

    shifts = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{_f(s.mean_a)}</td><td>{_f(s.mean_b)}</td>"
        f"<td>{_f(s.shift, '+.3f')}</td><td>{s.n}</td></tr>"
        for s in r.doubt
    )
    metrics = "".join(
        f"<tr><td>{html.escape(m.name)}</td><td>{_f(m.a, '.4f')}</td><td>{_f(m.b, '.4f')}</td>"
        f"<td>{_f(m.change, '+.4f')}</td></tr>"
        for m in r.metrics
    )
    rows = []
    for c in r.changed:
        pic = (
            f'<tr class="pic"><td colspan="11"><img src="{html.escape(c.picture)}" loading="lazy"></td></tr>'
            if c.picture
            else ""
        )
        rows.append(
            f"<tr><td><b>{html.escape(c.sample_id)}</b></td><td>{c.magnitude:.3f}</td>"
            f"<td>{html.escape(', '.join(c.arrays))}</td>"
            f"<td>{_f(c.depth_rel_change_median, '.2%')}</td><td>{_f(c.depth_rel_change_p90, '.2%')}</td>"
            f"<td>{_f(c.mask_iou_mean)}</td><td>{c.objects_matched}</td><td>+{c.objects_appeared}</td>"
            f"<td>-{c.objects_vanished}</td><td>{_f(c.valid_depth_fraction_change, '+.1%')}</td>"
            f"<td>{_f(c.doubt_a)} → {_f(c.doubt_b)}</td></tr>{pic}"
        )
    body = (
        f"<h1>labeler diff</h1><p>A <code>{html.escape(r.a)}</code> (dataset {r.version_a[:12]}) → B "
        f"<code>{html.escape(r.b)}</code> (dataset {r.version_b[:12]})</p>"
        f"<p><b>{len(r.changed)}</b> changed · <b>{r.n_unchanged}</b> unchanged · <b>{len(r.added)}</b> "
        f"added · <b>{len(r.removed)}</b> removed · objects {r.objects_a} → {r.objects_b}</p>"
        f"{_class_counts(r.class_counts_a, r.class_counts_b)}"
        f"{''.join(f'<p><b>Made differently:</b> {html.escape(line)}</p>' for line in r.made_differently)}"
        f"<p>added: {_ids(r.added)}<br>removed: {_ids(r.removed)}</p>"
        "<h2>Doubt signals (samples in both)</h2><p>Means over the samples both have with the signal "
        "(n); <code>objects.*</code>: over every object of those samples on each side, so objects that "
        "vanished or appeared move them too.</p><table><tr><th>signal</th><th>mean A</th><th>mean B</th>"
        f"<th>B - A</th><th>n</th></tr>{shifts}</table>"
        + (
            "<h2>Held-out metrics (runs given)</h2><table><tr><th>figure</th><th>A</th><th>B</th>"
            f"<th>B - A</th></tr>{metrics}</table>"
            if r.metrics
            else ""
        )
        + _tracks(r.tracks)
        + "<h2>Changed samples, largest change first</h2><p>change = median |dz|/z + |valid-depth "
        "change| + (1 - mask IoU) + share of objects that appeared or vanished.</p>"
        "<table><tr><th>sample</th><th>change</th>"
        "<th>arrays changed</th><th>median |dz|/z</th><th>p90</th><th>mask IoU</th><th>matched</th>"
        "<th>appeared</th><th>vanished</th><th>valid depth</th><th>doubt A → B</th></tr>"
        f"{''.join(rows)}</table>"
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:1em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
        "img{max-width:1200px;width:100%}tr.pic td{border-bottom:2px solid #999;padding-bottom:1em}"
    )
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>labeler diff</title>'
        f"<style>{style}</style></head><body>{body}</body></html>"
    )
    path = out / "index.html"
    write_text_atomic(path, page)
    return path


def summary_line(r: DatasetDiff, out: Path) -> str:
    worst: Any = r.changed[0] if r.changed else None
    top = (
        f"; largest change {worst.sample_id} (median depth {_f(worst.depth_rel_change_median, '.1%')}, "
        f"valid depth {_f(worst.valid_depth_fraction_change, '+.1%')}, -{worst.objects_vanished} / "
        f"+{worst.objects_appeared} objects)"
        if worst is not None
        else ""
    )
    made = "".join(f"; {line}" for line in r.made_differently)
    t = r.tracks
    tracks = (
        f"; tracks {len(t.matched)} matched, {len(t.only_a)} only in A, {len(t.only_b)} only in B, "
        f"{t.id_switches} ID switches"
        if t is not None
        else ""
    )
    return (
        f"{len(r.changed)} changed, {r.n_unchanged} unchanged, {len(r.added)} added, {len(r.removed)} removed"
        f"{tracks}{top}{made}; report {out / 'index.html'}, {out / 'diff.json'}"
    )


def _class_counts(a: dict[str, int] | None, b: dict[str, int] | None) -> str:
    """ "<p>person 4 → 6 · forklift 1 → 1</p>" for datasets with classes; nothing for class-agnostic ones."""
    if a is None and b is None:
        return ""
    names = list(a or {}) + [n for n in (b or {}) if n not in (a or {})]
    shown = [f"{html.escape(n)} {(a or {}).get(n, 0)} → {(b or {}).get(n, 0)}" for n in names]
    return f"<p>objects per class: {' · '.join(shown)}</p>"


def _tracks(t: TrackDiff | None) -> str:
    """The tracks section: the counts, then the matched tracks, most ID switches first."""
    if t is None:
        return ""
    rows = "".join(
        f"<tr><td>{m.track_a}</td><td>{m.track_b}</td><td>{html.escape(m.sequence or '–')}</td>"
        f"<td>{m.iou:.3f}</td><td>{m.frames_a}</td><td>{m.frames_b}</td><td>{m.frames_both}</td>"
        f"<td>{m.id_switches}</td><td>{_f(m.depth_m_diff_median, '+.3f')}</td>"
        f"<td>{_f(m.depth_m_diff_max_abs)}</td></tr>"
        for m in sorted(t.matched, key=lambda m: (-m.id_switches, m.iou, m.track_a))
    )
    only_a = ", ".join(map(str, t.only_a)) or "none"
    only_b = ", ".join(map(str, t.only_b)) or "none"
    return (
        f"<h2>Tracks</h2><p>A {t.tracks_a} → B {t.tracks_b} tracks: <b>{len(t.matched)}</b> matched "
        f"(mask IoU over the samples both have, >= 0.5) · <b>{len(t.only_a)}</b> only in A · "
        f"<b>{len(t.only_b)}</b> only in B · <b>{t.id_switches}</b> ID switches (frames where an A track's "
        f"object matches another B track than before)</p><p>only in A: {only_a}<br>only in B: {only_b}</p>"
        "<table><tr><th>A track</th><th>B track</th><th>sequence</th>"
        "<th>IoU</th><th>frames A</th><th>frames B</th><th>frames matched</th><th>ID switches</th>"
        f"<th>depth B - A median, m</th><th>max |B - A|, m</th></tr>{rows}</table>"
    )
