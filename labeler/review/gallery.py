"""The dataset gallery: static pages of a fixed size sorted by doubt, and an index page.

`DATASET/index.html` has the summary, the licences of the models that made the labels (non-commercial ones
named), the first page's samples inline, the failures and links to `gallery/page-NNNNN.html`, each showing
PAGE_SIZE samples' previews, most doubtful first. Building it reads the two tables once (O(N)), never a
page's worth per page.

Doubt (higher = look first) is labeler/doubt.py's combined score: the mean of the sample's terms (stereo
confidence, holes in depth, monocular disagreement and video flicker where present, its most doubtful
object). Each caption names the score and its two largest terms.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from labeler.dataset.sidecars import gallery_index_path, gallery_page_path
from labeler.io import write_text_atomic

PAGE_SIZE = 100
_FAILURES_LISTED = 500
_STYLE = (
    "body{font-family:sans-serif;margin:1em}figure{margin:0 0 1.5em}img{max-width:100%}"
    ".fail{color:#a00}nav a{margin-right:.6em}"
)


def _page_name(k: int) -> str:
    return f"page-{k + 1:05d}.html"


def _html(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_gallery(dataset: str | Path) -> Path:
    """Write index.html and the pages; returns the index path."""
    import pyarrow.compute as pc

    from labeler.dataset.reader import open_dataset
    from labeler.doubt import with_doubt

    dataset = Path(dataset)
    ds = open_dataset(dataset)
    m = ds.manifest
    width, height = m.calibration.image_size
    samples, objects = with_doubt(ds.samples.to_table(), ds.objects.to_table(), width * height)
    ok = samples.filter(pc.field("status") == "ok").to_pylist()
    failed = samples.filter(pc.field("status") == "failed").sort_by("row").to_pylist()
    captions = _object_captions(objects.select(["row", "id", "depth_m_median", "class_name"]))
    ok.sort(key=lambda s: (-(s["doubt"] or 0.0), s["sample_id"]))
    from data_schema.licences import licence_summary, non_commercial
    from labeler.dataset.licences import dataset_licences

    licences = dataset_licences(dataset, m)
    licence_class = ' class="fail"' if non_commercial(licences) else ""
    n_pages = max(1, -(-len(ok) // PAGE_SIZE))
    version = m.dataset_version[:12]
    for k in range(n_pages):
        rows = ok[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]
        figures = "".join(_figure(s, captions.get(s["row"], ""), "../") for s in rows)
        nav = _nav(k, n_pages)
        body = (
            f'<p><a href="../index.html">dataset {version}</a> · page {k + 1} of {n_pages} · samples '
            f"{k * PAGE_SIZE + 1}–{k * PAGE_SIZE + len(rows)} of {len(ok)}, most doubtful first</p>"
            f"{nav}{figures}{nav}"
        )
        write_text_atomic(
            gallery_page_path(dataset, _page_name(k)), _html(f"labeler · {version} · {k + 1}", body)
        )
    fails = "".join(
        f"<li><b>{html.escape(s['sample_id'])}</b>: {html.escape(s['error'] or '')}</li>"
        for s in failed[:_FAILURES_LISTED]
    )
    more = (
        f"<p>… and {len(failed) - _FAILURES_LISTED} more (ds.failures)</p>"
        if len(failed) > _FAILURES_LISTED
        else ""
    )
    first = ok[:PAGE_SIZE]
    links = " ".join(f'<a href="gallery/{_page_name(k)}">{k + 1}</a>' for k in range(n_pages))
    c = m.counts
    body = (
        f"<h1>Dataset {version}</h1>"
        f"<p>{c.ok} samples ok, {c.failed} failed, {c.objects} objects in {c.shards} shards · stereo "
        f"<code>{m.stereo.name}</code> · masks <code>{m.masks.name}</code> · rig "
        f"<code>{html.escape(m.calibration.rig)}</code> · labeler {html.escape(m.labeler_version)}.</p>"
        f"<p{licence_class}>{html.escape(licence_summary(licences))}</p>"
        f"<p>Pages of {PAGE_SIZE}, most doubtful first (labeler/doubt.py: stereo confidence, holes, mask "
        "shapes and edges, depth spread; monocular disagreement and flicker after `labeler doubt`). "
        "Each row: rectified left | disparity (px) | objects with median depth.</p>"
        f"<h2>Pages</h2><nav>{links}</nav>"
        f"<h2>Page 1: the {len(first)} most doubtful samples</h2>"
        + "".join(_figure(s, captions.get(s["row"], ""), "") for s in first)
        + (
            f'<h2 class="fail">Failed ({len(failed)})</h2><ul class="fail">{fails}</ul>{more}'
            if failed
            else ""
        )
    )
    path = gallery_index_path(dataset)
    write_text_atomic(path, _html(f"labeler · {version}", body))
    return path


def _nav(k: int, n_pages: int) -> str:
    prev = f'<a href="{_page_name(k - 1)}">← previous</a>' if k > 0 else ""
    nxt = f'<a href="{_page_name(k + 1)}">next →</a>' if k + 1 < n_pages else ""
    return f"<nav>{prev}{nxt}</nav>"


def _object_captions(objects: Any) -> dict[int, str]:
    """Per row, "1: 1.52 m, 2: 3.10 m" ("person 1: 1.52 m, forklift 1: 3.10 m" with classes)."""
    from labeler.previews import object_names

    per_row: dict[int, list[tuple[int, float | None, str | None]]] = {}
    for row, oid, depth, name in zip(
        objects.column("row").to_pylist(),
        objects.column("id").to_pylist(),
        objects.column("depth_m_median").to_pylist(),
        objects.column("class_name").to_pylist(),
        strict=True,
    ):
        per_row.setdefault(row, []).append((oid, depth, name))
    out = {}
    for row, objs in per_row.items():
        called = object_names([o[0] for o in objs], [o[2] for o in objs])
        shown = [f"{called[oid]}: {depth:.2f} m" for oid, depth, _ in objs if depth is not None]
        if shown:
            out[row] = ", ".join(shown)
    return out


def _figure(s: dict[str, Any], objects: str, up: str) -> str:
    """One sample's preview and caption; `up`: the path from the page to the dataset folder."""
    from labeler.doubt import describe

    sid = html.escape(s["sample_id"])
    conf = s["confidence_mean"]
    return (
        f'<figure><img src="{up}previews/{sid}.png" loading="lazy">'
        f"<figcaption><b>{sid}</b> · {describe(s)} · confidence "
        f"{'n/a' if conf is None else f'{conf:.2f}'} · valid depth {s['valid_depth_fraction']:.0%} · "
        f"{html.escape(objects) or 'no objects'}</figcaption></figure>"
    )
