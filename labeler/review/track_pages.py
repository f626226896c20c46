"""HTML of the track pages: the tracks listing and one track's strip (its frames in order, each with the
object outlined, its frame index, time, median depth and decision; a depth-over-time plot; decisions on
the whole track). Same style as labeler/review/pages.py; the strip's script is static/track.js. Every
value from the dataset is escaped."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from labeler.doubt import TRACK_JUMP_FULL
from labeler.review.pages import _badge, _header, _num, _page
from labeler.review.tracks import TrackFrame, TrackPage, TrackSummary

TRACK_STYLE = """
.strip{display:flex;flex-wrap:wrap;gap:6px;margin-top:.6em}
.frame{margin:0;padding:3px;border:1px solid #cfd8dc;background:#fff;font-size:12px;text-align:center}
.frame img{height:120px;display:block;image-rendering:pixelated}.frame a{color:inherit;text-decoration:none}
.frame.jump{border-color:#ef6c00;box-shadow:0 0 0 2px #ef6c00}.doubtful{color:#c62828;font-weight:bold}
svg.depth{background:#fff;border:1px solid #cfd8dc}svg.depth text{font-size:10px;fill:#555}#note{width:28em}
"""
_PLOT_W, _PLOT_H = 480, 120
PLOT_MIN_SPAN_M = 0.5


def _t(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def _frames(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}–{last}"


def _decided(counts: dict[str, int]) -> str:
    return " ".join(_badge(d).replace("</span>", f" {n}</span>") for d, n in sorted(counts.items())) or "–"


def _jump(jump: float | None) -> str:
    if jump is None:
        return "–"
    cls = ' class="doubtful"' if jump >= TRACK_JUMP_FULL else ""
    return f"<span{cls}>{jump:.2f}/s</span>"


def tracks_page(listing: TrackPage, meta: dict[str, Any], *, flagged_only: bool = False) -> str:
    """A page of the dataset's tracks (or a line saying the dataset has none)."""
    if not listing.rows and not flagged_only:
        body = (
            '<main><p><a href="/">← samples</a></p><p id="no-tracks">This dataset has no tracks: it was '
            "labelled without <code>--track</code> (rerun <code>labeler run … --track</code> on a video or "
            "a folder of timestamped frames).</p></main>"
        )
        return _page("labeler review · tracks", _header("tracks", meta) + body, style=TRACK_STYLE)
    lines = []
    for s in listing.rows:
        t = s.track
        near = "–" if t.depth_m_nearest is None else f"{t.depth_m_nearest:.2f} m (frame {t.nearest_frame})"
        lines.append(
            f'<tr data-track="{t.track_id}"><td><a href="/track/{t.track_id}">track {t.track_id}</a></td>'
            f"<td>{html.escape(t.class_name or '–')}</td><td>{html.escape(t.sequence)}</td>"
            f"<td>{_frames(t.first_frame, t.last_frame)}</td><td>{t.frames_seen}</td><td>{near}</td>"
            f"<td>{_num(t.approach_speed_m_s)}</td><td>{_jump(s.jump_per_s)}</td>"
            f"<td>{_decided(s.decisions)}</td></tr>"
        )
    table = (
        "<table><tr><th>track</th><th>class</th><th>sequence</th><th>frames</th><th>seen</th>"
        "<th>nearest depth</th><th>approach m/s</th><th>depth jump</th><th>decisions (frames)</th></tr>"
        + "".join(lines)
        + "</table>"
    )
    query = "&flagged=1" if flagged_only else ""
    nav = [f'<a id="prev-page" href="/tracks?page={listing.page - 1}{query}">← previous</a>'] * (
        listing.page > 1
    )
    nav += [f"page {listing.page} of {listing.pages}"]
    nav += [f'<a id="next-page" href="/tracks?page={listing.page + 1}{query}">next →</a>'] * (
        listing.page < listing.pages
    )
    shown = (
        '<a href="/tracks">all tracks</a>'
        if flagged_only
        else '<a id="only-flagged" href="/tracks?flagged=1">show only those</a>'
    )
    body = (
        f'<main><p><a href="/">← samples</a> · <span id="n-tracks">{listing.total}</span> '
        f'{"flagged " if flagged_only else ""}tracks · <span id="n-flagged">{listing.flagged}</span> '
        f"flagged: a depth jump of at least {TRACK_JUMP_FULL:g}/s (|ln(depth ratio)| between consecutive "
        f"labelled frames, per second) · {shown}</p>{table}<p>{' · '.join(nav)}</p></main>"
    )
    return _page("labeler review · tracks", _header("tracks", meta) + body, style=TRACK_STYLE)


def _plot(frames: list[TrackFrame]) -> str:
    """The object's median depth over time (frame index where there are no times), as inline SVG: the
    depth axis spans at least PLOT_MIN_SPAN_M, so stereo noise of a few cm does not look like a swing;
    frames with a depth jump are orange."""
    timed = all(f.timestamp_s is not None for f in frames)
    pts: list[tuple[float, float, bool]] = []
    for f in frames:
        x = f.timestamp_s if timed else f.frame_index
        if x is not None and f.depth_m_median is not None:
            pts.append((float(x), f.depth_m_median, _jumps(f)))
    if len(pts) < 2:
        return ""
    xs, zs = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1e-6)
    mid, half = (min(zs) + max(zs)) / 2, max(max(zs) - min(zs), PLOT_MIN_SPAN_M) / 2
    z0, z1 = mid - half, mid + half
    left, right, top, bottom = 52, _PLOT_W - 12, 8, _PLOT_H - 20

    def xy(x: float, z: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (z - z0) / (z1 - z0) * (bottom - top)

    at = [(*xy(x, z), jump) for x, z, jump in pts]
    line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in at)
    dots = "".join(
        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{"#ef6c00" if jump else "#1565c0"}"/>'
        for px, py, jump in at
    )
    unit = "s" if timed else "frame"
    return (
        f'<svg class="depth" id="depth-plot" width="{_PLOT_W}" height="{_PLOT_H}" '
        f'viewBox="0 0 {_PLOT_W} {_PLOT_H}"><path d="M{left},{top}V{bottom}H{right}" stroke="#90a4ae" '
        f'fill="none"/><polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{line}"/>{dots}'
        f'<text x="4" y="{top + 8}">{z1:.2f} m</text><text x="4" y="{bottom}">{z0:.2f} m</text>'
        f'<text x="4" y="{(top + bottom) / 2 + 4:.0f}">depth</text>'
        f'<text x="{left}" y="{_PLOT_H - 4}">{x0:.2f} {unit}</text>'
        f'<text x="{right}" y="{_PLOT_H - 4}" text-anchor="end">{x1:.2f} {unit}</text></svg>'
    )


def _jumps(f: TrackFrame) -> bool:
    return f.jump_per_s is not None and f.jump_per_s >= TRACK_JUMP_FULL


def _card(f: TrackFrame, track_id: int) -> str:
    jump = _jumps(f)
    frame = "–" if f.frame_index is None else str(f.frame_index)
    depth = "–" if f.depth_m_median is None else f"{f.depth_m_median:.2f} m"
    return (
        f'<figure class="frame{" jump" if jump else ""}" data-sample="{html.escape(f.sample_id)}" '
        f'data-object="{f.object_id}"><a href="/sample/{quote(f.sample_id)}" '
        f'title="{html.escape(f.sample_id)}">'
        f'<img src="/object/{quote(f.sample_id)}/{f.object_id}.png" alt="track {track_id} in '
        f'{html.escape(f.sample_id)}"></a><figcaption>frame <b>{frame}</b> · {_t(f.timestamp_s)}<br>'
        f'<span class="fdepth">{depth}</span> · jump {_jump(f.jump_per_s)}<br>'
        f'<span class="fdec">{_badge(f.decision)}</span></figcaption></figure>'
    )


def track_page(
    summary: TrackSummary,
    frames: list[TrackFrame],
    meta: dict[str, Any],
    *,
    previous: int | None,
    following: int | None,
) -> str:
    """One track: its numbers, the depth plot, decisions for all its frames and the strip of frames."""
    t = summary.track
    nav = ['<a id="back" href="/tracks">← tracks</a>', '<a href="/">samples</a>']
    if previous is not None:
        nav.append(f'<a id="prev" href="/track/{previous}">previous track (k)</a>')
    if following is not None:
        nav.append(f'<a id="next" href="/track/{following}">next track (j)</a>')
    near = (
        "–"
        if t.depth_m_nearest is None
        else f"{t.depth_m_nearest:.2f} m at frame {t.nearest_frame} ({_t(t.nearest_time_s)})"
    )
    flag = ' <span class="badge flag" id="jump-flag">depth jumps</span>' if summary.flagged else ""
    facts = (
        f"<p>{html.escape(t.class_name or 'no class')} · sequence <code>{html.escape(t.sequence)}</code> · "
        f"frames {_frames(t.first_frame, t.last_frame)} ({_t(t.first_time_s)} – {_t(t.last_time_s)}) · "
        f"<b id='n-frames'>{len(frames)}</b> labelled frames · nearest {near} · approach "
        f"{_num(t.approach_speed_m_s)} m/s · largest depth jump {_jump(summary.jump_per_s)}{flag}</p>"
    )
    decide = (
        f"<p>decide for <b>all {len(frames)} frames</b> of the track: "
        '<button data-d="accept"><kbd>a</kbd> accept</button> <button data-d="reject"><kbd>r</kbd> reject'
        '</button> <button data-d="flag"><kbd>f</kbd> flag</button> <button data-d="clear"><kbd>u</kbd> '
        'clear</button> <input id="note" size="40" maxlength="2000" placeholder="note (n), saved with the '
        'next decision"></p><p id="status"></p>'
    )
    keys = (
        '<p class="keys"><kbd>a</kbd>/<kbd>r</kbd>/<kbd>f</kbd>/<kbd>u</kbd> accept / reject / flag / clear '
        "the track's object in every frame · <kbd>n</kbd> note · <kbd>j</kbd>/<kbd>k</kbd> next / previous "
        "track · <kbd>b</kbd> back to the tracks · click a frame to open its sample</p>"
    )
    data = {
        "track_id": t.track_id,
        "next": f"/track/{following}" if following is not None else None,
        "prev": f"/track/{previous}" if previous is not None else None,
        "back": "/tracks",
    }
    body = (
        _header(f"track {t.track_id}", meta)
        + f"<main><nav>{' · '.join(nav)}</nav>{keys}<h3>track {t.track_id}</h3>{facts}{_plot(frames)}"
        f"{decide}<div class='strip' id='strip'>{''.join(_card(f, t.track_id) for f in frames)}</div></main>"
        f'<script type="application/json" id="data">{html.escape(json.dumps(data), quote=False)}</script>'
    )
    return _page(f"labeler review · track {t.track_id}", body, "/static/track.js", TRACK_STYLE)
