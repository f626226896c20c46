"""`labeler review DATASET`: the review web app (FastAPI, served by uvicorn).

Routes: `/` the listing (query: ListQuery), `/sample/{id}` a sample's page, `/layer/{id}/{name}.png` its
layers, `/maps/{id}.bin` the pointer readout's depth and ids, `/thumb/{id}.png` the listing's thumbnails,
`POST /api/decide` one decision (saved before the answer: labeler/dataset/decisions.py); `/tracks` the
tracks, `/track/{id}` a track's strip, `/object/{id}/{object}.png` a frame with one object outlined,
`POST /api/decide-track` a decision on every frame of a track (labeler/review/tracks.py).

Bound to 127.0.0.1 by default. Then only requests naming a loopback host are served (another page the
browser has open cannot reach the app through a DNS name that points here), and a decision must come as
JSON, which a cross-site form cannot send without the browser asking first. Bound to any other address,
every request needs the server's token (as Jupyter does): the printed URL carries it once, the app turns it
into an HttpOnly SameSite=Strict cookie and sends the browser on without it; a script may send
`Authorization: token TOKEN`; anything else is 403. An invalid decision is a 422 with one line. (This
module imports FastAPI at the top, as its route signatures need: only `labeler review` imports it.)
"""

from __future__ import annotations

import getpass
import secrets
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from pydantic import Field, ValidationError
from starlette.middleware.trustedhost import TrustedHostMiddleware

from data_schema.record import Record
from data_schema.review import Decision
from labeler.errors import LabelerError
from labeler.review.listing import ListQuery, ReviewData

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STATIC = Path(__file__).parent / "static"
_THUMB_HEIGHT = 64
TOKEN_COOKIE = "labeler_review_token"
MIN_TOKEN_CHARS = 12
_R = TypeVar("_R", bound=Record)


class DecideRequest(Record):
    sample_id: str
    object_id: int | None = Field(None, ge=1)
    decision: Decision
    note: str = Field("", max_length=2000)


class DecideTrackRequest(Record):
    track_id: int = Field(ge=1)
    decision: Decision
    note: str = Field("", max_length=2000)


def new_token() -> str:
    """A random token for a server that listens beyond loopback (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _one_line(err: ValidationError) -> str:
    """A decision's validation errors as one line: `field: problem; field: problem`."""
    parts = []
    for e in err.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}".replace("\n", " "))
    return "invalid decision: " + "; ".join(parts)[:240]


def _token_guard(app: FastAPI, token: str) -> None:
    """Serve a request only with the token (query once, then the cookie; or an Authorization header)."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        given = request.query_params.get("token")
        if given is not None and secrets.compare_digest(given.encode(), token.encode()):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            answer = RedirectResponse(target, status_code=303)
            answer.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return answer
        header = request.headers.get("authorization", "")
        sent = header[6:] if header.startswith("token ") else request.cookies.get(TOKEN_COOKIE, "")
        if given is None and secrets.compare_digest(sent.encode(), token.encode()):
            return await call_next(request)
        return PlainTextResponse(
            "403: this review server needs its token: open the URL `labeler review` printed (…/?token=…)",
            status_code=403,
        )


def default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


class _Review:
    """What every route shares: the dataset's review data and who decides."""

    def __init__(self, dataset: str | Path, user: str) -> None:
        self.data = ReviewData(dataset)
        self.data.refresh()
        self.user = user
        self._similar: Any = None

    def similar(self) -> Any:
        """The embeddings' nearest-neighbour index (labeler/review/curate.py), built on first use."""
        from labeler.review.curate import SimilarityIndex

        if self._similar is None:
            self._similar = SimilarityIndex(self.data.path)
        return self._similar

    def near_duplicates(self, sample_id: str) -> list[str]:
        """The other samples of its near-duplicate group in the last `labeler curate` (none: not curated)."""
        from labeler.dataset.selections import read_curation

        rep = read_curation(self.data.path)
        if rep is None or rep.dataset_version != self.data.ds.version:
            return []
        for g in rep.groups:
            if sample_id in g.sample_ids:
                return [s for s in g.sample_ids if s != sample_id]
        return []

    def meta(self) -> dict[str, Any]:
        ds = self.data.ds
        width, height = ds.manifest.calibration.image_size
        return {
            "version": ds.version[:12],
            "n_ok": ds.manifest.counts.ok if ds.manifest.counts.ok else len(ds),
            "reviewed": self.data.decisions.summary(),
            "user": self.user,
            "width": width,
            "height": height,
            "classes": list(ds.manifest.classes or ()),  # the class filter's choices (none: no filter)
        }

    def ok_sample(self, sample_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            row, objects = self.data.sample(sample_id)
        except KeyError:
            raise HTTPException(404, f"no sample {sample_id!r} in {self.data.path}") from None
        if row["status"] != "ok":
            raise HTTPException(404, f"sample {sample_id!r} failed: {row['error']}")
        return row, objects

    def state(self, sample_id: str) -> dict[str, Any]:
        d = self.data.decisions
        objects = {str(o): r.decision for (s, o), r in d.current.items() if s == sample_id and o is not None}
        return {"sample": d.of(sample_id), "objects": objects}


def create_app(
    dataset: str | Path, *, user: str | None = None, host: str = "127.0.0.1", token: str | None = None
) -> FastAPI:
    """The app for one dataset; `host` is where it will listen (loopback: local requests only; any other
    address needs `token`, which every request must then carry; a token on loopback is enforced too)."""
    if host not in LOOPBACK and not token:
        raise LabelerError(
            f"review on {host}: a server beyond loopback needs a token (create_app(token=...))"
        )
    review = _Review(dataset, user or default_user())
    app = FastAPI(title="labeler review", docs_url=None, redoc_url=None, openapi_url=None)
    if token:
        _token_guard(app, token)
    if host in LOOPBACK:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    _page_routes(app, review)
    _api_routes(app, review)
    _track_routes(app, review)
    return app


def _page_routes(app: FastAPI, review: _Review) -> None:
    """The pages and the images they show."""
    from labeler.review import pages
    from labeler.review.layers import LAYERS, colour_layer, pointer_maps, render

    data = review.data

    @app.get("/", response_class=HTMLResponse)
    def index(q: Annotated[ListQuery, Query()]) -> str:
        return pages.list_page(data.listing(q), q, review.meta())

    @app.get("/sample/{sample_id}", response_class=HTMLResponse)
    def sample(sample_id: str, q: Annotated[ListQuery, Query()]) -> str:
        row, objects = review.ok_sample(sample_id)
        arrays = data.arrays(row["row"])
        ranges = {
            "disparity": colour_layer(arrays["disparity_px"])[1],
            "depth": colour_layer(arrays["depth_m"])[1],
        }
        place = data.place(q, sample_id)
        dups = review.near_duplicates(sample_id)
        return pages.sample_page(
            row, objects, review.state(sample_id), place, q, review.meta(), ranges, near_duplicates=dups
        )

    @app.get("/layer/{sample_id}/{name}.png")
    def layer(sample_id: str, name: str) -> Response:
        if name not in LAYERS:
            raise HTTPException(404, f"no layer {name!r}; layers: {', '.join(LAYERS)}")
        row, _ = review.ok_sample(sample_id)
        return Response(render(name, data.arrays(row["row"])), media_type="image/png")

    @app.get("/thumb/{sample_id}.png")
    def thumb(sample_id: str) -> Response:
        from labeler.dataset.sidecars import preview_path, previews_dir

        preview = preview_path(data.path, sample_id)
        if preview.is_file() and preview.resolve().parent == previews_dir(data.path).resolve():
            return FileResponse(preview, media_type="image/png")
        import cv2

        row, _ = review.ok_sample(sample_id)
        left = data.arrays(row["row"])["left"]
        h, w = left.shape[:2]
        small = cv2.resize(
            left, (max(1, w * _THUMB_HEIGHT // h), _THUMB_HEIGHT), interpolation=cv2.INTER_AREA
        )
        return Response(render("left", {"left": small}), media_type="image/png")

    @app.get("/maps/{sample_id}.bin")
    def maps(sample_id: str) -> Response:
        row, _ = review.ok_sample(sample_id)
        return Response(pointer_maps(data.arrays(row["row"])), media_type="application/octet-stream")

    @app.get("/static/sample.js")
    def script() -> FileResponse:
        return FileResponse(STATIC / "sample.js", media_type="text/javascript")


async def _body(request: Request, model: type[_R]) -> _R:
    """A decision's body: JSON only (415 otherwise: a cross-site form cannot send JSON without the browser
    asking first), valid (422 with one line otherwise)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send the decision as application/json")
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as err:
        raise HTTPException(422, _one_line(err)) from None


def _api_routes(app: FastAPI, review: _Review) -> None:
    """Decisions: one saved per POST (before the answer), and the state of a sample."""
    from labeler.dataset.decisions import decide

    data = review.data

    @app.post("/api/decide")
    async def decide_route(request: Request) -> JSONResponse:
        req = await _body(request, DecideRequest)
        row, objects = review.ok_sample(req.sample_id)
        if req.object_id is not None and req.object_id not in {o["id"] for o in objects}:
            raise HTTPException(422, f"sample {req.sample_id!r} has no object {req.object_id}")
        decide(
            data.path,
            sample_id=req.sample_id,
            labels=data.labels[req.sample_id],
            decision=req.decision,
            object_id=req.object_id,
            note=req.note,
            user=review.user,
        )
        data.refresh()
        return JSONResponse({**review.state(req.sample_id), "reviewed": data.decisions.summary()})

    @app.get("/api/similar/{sample_id}")
    def similar(sample_id: str, object: int | None = None, k: int = 8) -> dict[str, Any]:
        """ "More like this": the k nearest samples (or objects, with `object`) by embedding cosine."""
        review.ok_sample(sample_id)
        index = review.similar()
        k = max(1, min(k, 100))
        if not index.available:
            return {"available": False, "items": [], "hint": f"run `labeler embed {data.path}` first"}
        if object is None:
            items = [{"sample_id": s, "cosine": c} for s, c in index.similar_samples(sample_id, k)]
        else:
            items = [
                {"sample_id": s, "object_id": o, "cosine": c}
                for s, o, c in index.similar_objects(sample_id, object, k)
            ]
        return {"available": True, "items": items}

    @app.get("/api/decisions/{sample_id}")
    def decisions(sample_id: str) -> dict[str, Any]:
        review.ok_sample(sample_id)
        data.refresh()
        return review.state(sample_id)


def _track_routes(app: FastAPI, review: _Review) -> None:
    """The tracks listing, a track's strip, its frames' thumbnails and decisions on a whole track."""
    from labeler.dataset.decisions import decide_track
    from labeler.review import track_pages, tracks
    from labeler.review.layers import object_thumb

    data = review.data

    def frames_of(track_id: int) -> list[tracks.TrackFrame]:
        frames = tracks.track_frames(data, track_id)
        if not frames:
            have = "no tracks (labelled without --track)" if not tracks.tracks(data) else "no such track"
            raise HTTPException(404, f"no track {track_id} in {data.path}: the dataset has {have}")
        return frames

    @app.get("/tracks", response_class=HTMLResponse)
    def tracks_page(page: int = Query(1, ge=1, le=10**7), flagged: bool = False) -> str:
        listing = tracks.track_listing(data, page=page, flagged_only=flagged)
        return track_pages.tracks_page(listing, review.meta(), flagged_only=flagged)

    @app.get("/track/{track_id}", response_class=HTMLResponse)
    def track_page(track_id: int) -> str:
        frames = frames_of(track_id)
        rows = tracks.tracks(data)
        ids = [t.track_id for t in rows]
        if track_id not in ids:
            raise HTTPException(404, f"track {track_id}: objects carry it, the tracks table does not")
        k = ids.index(track_id)
        return track_pages.track_page(
            tracks.summary_of(rows[k], frames),
            frames,
            review.meta(),
            previous=ids[k - 1] if k > 0 else None,
            following=ids[k + 1] if k + 1 < len(ids) else None,
        )

    @app.get("/object/{sample_id}/{object_id}.png")
    def object_png(sample_id: str, object_id: int) -> Response:
        row, objects = review.ok_sample(sample_id)
        if object_id not in {o["id"] for o in objects}:
            raise HTTPException(404, f"sample {sample_id!r} has no object {object_id}")
        arrays = data.ds.read_row(row["row"], ("left", "instance_ids"))
        png = object_thumb(arrays["left"], arrays["instance_ids"], object_id)
        return Response(png, media_type="image/png")

    @app.post("/api/decide-track")
    async def decide_track_route(request: Request) -> JSONResponse:
        req = await _body(request, DecideTrackRequest)
        frames = frames_of(req.track_id)
        decide_track(
            data.path,
            track_id=req.track_id,
            frames=[(f.sample_id, f.object_id, data.labels[f.sample_id]) for f in frames],
            decision=req.decision,
            note=req.note,
            user=review.user,
        )
        data.refresh()
        state = tracks.track_state(tracks.track_frames(data, req.track_id))
        return JSONResponse({**state, "reviewed": data.decisions.summary()})

    @app.get("/static/track.js")
    def script() -> FileResponse:
        return FileResponse(STATIC / "track.js", media_type="text/javascript")


def serve(
    dataset: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    user: str | None = None,
    token: str | None = None,
) -> None:
    """Run the app until interrupted (uvicorn, one process: decisions are appended by one writer)."""
    import uvicorn

    app = create_app(dataset, user=user, host=host, token=token)
    uvicorn.run(app, host=host, port=port, log_level="warning")
