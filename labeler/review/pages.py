"""HTML of the review pages: the listing and the sample page (layers, pointer readout, object table,
keyboard decisions). Plain HTML and one stylesheet; the sample page's script is static/sample.js. No build
step, no CDN (the machine may have no network). Every value from the dataset is escaped."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from labeler.doubt import SAMPLE_TERMS, describe
from labeler.review.listing import PAGE_SIZE, SORT_KEYS, Listing, ListQuery, Place

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#eee;padding:.5em 1em}header a{color:#9cf}
main{padding:.8em 1em}table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:middle}
th{background:#eceff1;position:sticky;top:0}tr.sel{background:#fff3c4}tr.obj{cursor:pointer}
.thumb{height:64px}.badge{padding:1px 6px;border-radius:8px;font-size:12px;color:#fff;background:#90a4ae}
.accept{background:#2e7d32}.reject{background:#c62828}.flag{background:#ef6c00}.stale{background:#6d4c41}
form.filters{display:flex;flex-wrap:wrap;gap:.6em;align-items:end;margin-bottom:.6em;font-size:13px}
form.filters label{display:flex;flex-direction:column}input[type=number]{width:6em}
.stack{position:relative;display:inline-block;max-width:100%;cursor:crosshair;background:#000}
.stack img,.stack canvas{position:absolute;left:0;top:0;width:100%;height:100%;image-rendering:pixelated}
.stack img.base{position:static;display:block;width:100%;height:auto}
.wrap{display:flex;gap:1em;flex-wrap:nowrap;align-items:start}
.imgcol{flex:1 1 auto;min-width:0}
.panel{flex:0 0 480px;max-height:calc(100vh - 9em);overflow:auto;font-size:13px}
.panel.tracked{flex-basis:530px}
.panel table{font-size:12px}.panel td,.panel th{padding:2px 4px}#note{width:95%}
#similar a{display:inline-block;margin:2px;padding:2px;border:1px solid #ccc;font-size:11px;text-align:center}
#similar img{height:48px;display:block}.keys{font-size:12px;color:#555}kbd{border:1px solid #aaa;
border-radius:3px;padding:0 3px;background:#fff;font-size:11px}#readout{font-family:monospace;height:1.4em}
#status{font-weight:bold;height:1.4em}.layers label{margin-right:.8em}
"""


def _page(title: str, body: str, script: str = "", style: str = "") -> str:
    """A whole page: the shared stylesheet (and `style`, a page's own rules), `body`, then `script`."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}{style}</style></head><body>{body}"
        + (f'<script src="{script}"></script>' if script else "")
        + "</body></html>"
    )


def _badge(decision: str | None) -> str:
    if decision is None:
        return '<span class="badge">undecided</span>'
    return f'<span class="badge {decision}">{html.escape(decision)}</span>'


def _num(v: Any, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def _header(title: str, meta: dict[str, Any]) -> str:
    return (
        f"<header><b>labeler review</b> · {html.escape(title)} · dataset <code>{meta['version']}</code>"
        f' · {meta["n_ok"]} samples · <a id="tracks-link" href="/tracks">tracks</a> · '
        f'<span id="reviewed">{html.escape(meta["reviewed"])}</span> · user '
        f"<b>{html.escape(meta['user'])}</b></header>"
    )


def _select(name: str, value: str, options: list[str]) -> str:
    opts = "".join(
        f'<option value="{o}"{" selected" if o == value else ""}>{html.escape(o)}</option>' for o in options
    )
    return f'<label>{name}<select name="{name}">{opts}</select></label>'


def _number(name: str, value: float | None, step: str = "any") -> str:
    v = "" if value is None else f"{value:g}"
    return f'<label>{name}<input type="number" name="{name}" step="{step}" value="{v}"></label>'


def _track_link(track_id: int | None) -> str:
    """An object's track as a link to the track's strip (`–`: untracked)."""
    return "–" if track_id is None else f'<a class="track" href="/track/{track_id}">{track_id}</a>'


def list_page(listing: Listing, q: ListQuery, meta: dict[str, Any]) -> str:
    """The listing: filters, a page of samples, page links."""
    form = (
        '<form class="filters" method="get" action="/">'
        + _select("sort", q.sort, list(SORT_KEYS))
        + _number("min", q.min)
        + _number("depth_min", q.depth_min)
        + _number("depth_max", q.depth_max)
        + _select("status", q.status, ["ok", "failed", "all"])
        + _select("decision", q.decision, ["all", "undecided", "decided", "accept", "reject", "flag"])
        + (
            _select("class_name", q.class_name or "all", ["all", *meta["classes"]])
            if meta.get("classes")
            else ""
        )
        + '<button type="submit">apply</button></form>'
    )
    rows = []
    for r in listing.rows:
        sid = r["sample_id"]
        link = f"/sample/{quote(sid)}?{q.params(page=None)}"
        depth = (
            f"{_num(r['depth_m_min'])}–{_num(r['depth_m_max'])} m" if r["depth_m_min"] is not None else "–"
        )
        valid = "–" if r["valid_depth_fraction"] is None else f"{r['valid_depth_fraction']:.0%}"
        rows.append(
            f'<tr data-sample="{html.escape(sid)}"><td><a href="{link}"><img class="thumb" loading="lazy" '
            f'src="/thumb/{quote(sid)}.png" alt=""></a></td><td><a href="{link}">{html.escape(sid)}</a></td>'
            f"<td>{html.escape(describe(r))}</td><td>{_num(r['confidence_mean'])}</td><td>{valid}</td>"
            f"<td>{depth}</td><td>{r['n_objects'] if r['n_objects'] is not None else '–'}</td>"
            f"<td>{_badge(r['decision'])}</td>"
            + (f'<td class="fail">{html.escape(r["error"] or "")}</td>' if r["status"] == "failed" else "")
            + "</tr>"
        )
    n_pages = max(1, -(-listing.total // PAGE_SIZE))
    pages = " ".join(
        f"<b>{k}</b>" if k == q.page else f'<a href="/?{q.params(page=k)}">{k}</a>'
        for k in range(1, n_pages + 1)
        if abs(k - q.page) < 6 or k in (1, n_pages)
    )
    table = (
        "<table><tr><th></th><th>sample</th><th>doubt (largest terms)</th><th>confidence</th>"
        "<th>valid depth</th><th>depth</th><th>objects</th><th>decision</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    body = (
        _header("samples", meta)
        + f"<main>{form}<p>{listing.total} samples match · page {q.page} of {n_pages}, sorted by "
        f"<code>{html.escape(q.sort)}</code> · {pages}</p>{table}<p>{pages}</p></main>"
    )
    return _page("labeler review", body)


def sample_page(
    row: dict[str, Any],
    objects: list[dict[str, Any]],
    decisions: dict[str, Any],
    place: Place,
    q: ListQuery,
    meta: dict[str, Any],
    ranges: dict[str, tuple[float, float]],
    *,
    near_duplicates: list[str] | None = None,
) -> str:
    """One sample: toggleable layers, the pointer readout, the object table and decisions; "more like
    this" (the nearest samples, or objects when one is selected) and its near-duplicates."""
    sid = row["sample_id"]
    qs = q.params(page=None)
    nav = [f'<a id="back" href="/?{qs}">← list</a>']
    if place.previous:
        nav.append(f'<a id="prev" href="/sample/{quote(place.previous)}?{qs}">previous (k)</a>')
    if place.next:
        nav.append(f'<a id="next" href="/sample/{quote(place.next)}?{qs}">next (j)</a>')
    where = f"{place.position + 1} of {place.total}" if place.position is not None else "not in this listing"
    tracked = any(o.get("track_id") is not None for o in objects)  # a track column (`--track` runs)
    obj_rows = "".join(
        f'<tr class="obj" data-id="{o["id"]}"><td>{o["id"]}</td><td>{o["area_px"]}</td>'
        f"<td>{_num(o['depth_m_median'])} ({_num(o['depth_m_p10'])}–{_num(o['depth_m_p90'])})</td>"
        f"<td>{_num(o['valid_fraction'])}</td><td>{_num(o['thickness_px'], '.0f')}</td>"
        f"<td>{_num(o['edge_alignment'])}</td><td>{_num(o['mono_disagreement'])}</td>"
        f"<td>{_num(o['doubt'])}</td>"
        + (f"<td>{_track_link(o.get('track_id'))}</td>" if tracked else "")
        + f"<td class='odec'>{_badge(decisions['objects'].get(str(o['id'])))}</td></tr>"
        for o in objects
    )
    terms = "".join(f"<tr><td>{t}</td><td>{_num(row[f'doubt_{t}'])}</td></tr>" for t in SAMPLE_TERMS)
    disp, depth = ranges["disparity"], ranges["depth"]
    layers = "".join(
        f'<label><input type="checkbox" id="layer-{name}" {"checked" if on else ""}> <kbd>{k}</kbd> {label}'
        "</label>"
        for k, (name, label, on) in enumerate(
            [
                ("left", "image", True),
                ("disparity", f"disparity {disp[0]:.1f}–{disp[1]:.1f} px", False),
                ("depth", f"depth {depth[0]:.2f}–{depth[1]:.2f} m", False),
                ("masks", "masks", True),
            ],
            1,
        )
    )
    w, h = meta["width"], meta["height"]
    stack = (
        f'<div class="stack" id="stack" style="width:100%;max-width:{w}px;aspect-ratio:{w}/{h}">'
        f'<img class="base" id="img-left" src="/layer/{quote(sid)}/left.png" width="{w}" height="{h}" alt="">'
        + "".join(
            f'<img id="img-{n}" src="/layer/{quote(sid)}/{n}.png" alt=""{" hidden" if n != "masks" else ""}>'
            for n in ("disparity", "depth", "masks")
        )
        + f'<canvas id="sel" width="{w}" height="{h}"></canvas></div>'
    )
    dups = (
        '<p id="near-dups">'
        + " ".join(f'<a href="/sample/{quote(d)}?{qs}">{html.escape(d)}</a>' for d in near_duplicates)
        + "</p>"
        if near_duplicates
        else '<p id="near-dups">none (or not curated: `labeler curate`)</p>'
    )
    badge = _badge(decisions["sample"]).replace("<span", '<span id="sample-decision"', 1)
    panel = (
        f'<div class="panel{" tracked" if tracked else ""}"><h3>{html.escape(sid)} {badge}</h3>'
        f"<p>{html.escape(describe(row))} · confidence {_num(row['confidence_mean'])} · valid depth "
        f"{_num(row['valid_depth_fraction'])} · {len(objects)} objects</p>"
        '<p>decide for <b id="target">the sample</b> <a id="open-track" hidden href="#">open its track '
        "<kbd>t</kbd></a>: "
        '<button data-d="accept"><kbd>a</kbd> accept</button> <button data-d="reject"><kbd>r</kbd> reject'
        '</button> <button data-d="flag"><kbd>f</kbd> flag</button> <button data-d="clear"><kbd>u</kbd> '
        'clear</button></p><p><input id="note" size="48" maxlength="2000" placeholder="note (n), saved '
        'with the next decision"></p><p id="status"></p>'
        "<table><tr><th>object</th><th>area px</th><th>depth m (p10–p90)</th><th>valid</th><th>thick px</th>"
        "<th>edges</th><th>mono</th><th>doubt</th>"
        + ("<th>track</th>" if tracked else "")
        + "<th>decision</th></tr>"
        f"{obj_rows}</table>"
        '<p><button id="more-like-this">more like this <kbd>m</kbd></button> '
        '<span id="similar-of"></span></p>'
        '<div id="similar"></div>'
        f"<h4>near-duplicates</h4>{dups}"
        f"<h4>sample doubt terms</h4><table>{terms}</table></div>"
    )
    keys = (
        '<p class="keys"><kbd>a</kbd>/<kbd>r</kbd>/<kbd>f</kbd>/<kbd>u</kbd> accept / reject / flag / clear '
        "the selected object, or the sample when none is · click an object or <kbd>[</kbd> <kbd>]</kbd> to "
        "select, <kbd>Esc</kbd> for the sample · <kbd>1</kbd>–<kbd>4</kbd> layers · <kbd>n</kbd> note · "
        "<kbd>j</kbd>/<kbd>k</kbd> next / previous · <kbd>m</kbd> more like this · <kbd>t</kbd> the selected "
        "object's track · <kbd>b</kbd> back to the list</p>"
    )
    data = {
        "sample_id": sid,
        "width": w,
        "height": h,
        "objects": [o["id"] for o in objects],
        "tracks": {str(o["id"]): o["track_id"] for o in objects if o.get("track_id") is not None},
        "decisions": decisions,
        "next": f"/sample/{quote(place.next)}?{qs}" if place.next else None,
        "prev": f"/sample/{quote(place.previous)}?{qs}" if place.previous else None,
        "back": f"/?{qs}",
        "maps": f"/maps/{quote(sid)}.bin",
        "query": qs,
    }
    body = (
        _header(sid, meta)
        + f"<main><nav>{' · '.join(nav)} · {where}</nav>{keys}<p class='layers'>{layers}</p>"
        f"<div class='wrap'><div class='imgcol'>{stack}<div id='readout'>point at the image</div></div>"
        f"{panel}</div></main>"
        f'<script type="application/json" id="data">{html.escape(json.dumps(data), quote=False)}</script>'
    )
    return _page(f"labeler review · {sid}", body, "/static/sample.js")
