"""What the review pages show: the samples with their doubt and decisions, filtered and sorted.

`ReviewData` keeps the dataset's two tables with the doubt columns (labeler/doubt.py) in memory as
Arrow tables, re-read when the shard index changes (a `labeler doubt` pass, a resumed run), and the
decisions, re-read when reviews.jsonl changes. Filtering and sorting are Arrow compute over whole
columns; only a page's rows become Python objects, so a listing costs the same at 10^3 and 10^6 samples.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from data_schema.record import Record
from labeler.dataset.decisions import Decisions, current_labels, decisions_from
from labeler.dataset.index import shard_index_bytes
from labeler.dataset.sidecars import read_reviews, reviews_bytes
from labeler.doubt import SAMPLE_TERMS

PAGE_SIZE = 100
# Columns a listing can sort by (higher first, except sample_id).
SORT_KEYS = (
    "doubt",
    *[f"doubt_{t}" for t in SAMPLE_TERMS],
    "confidence_mean",
    "valid_depth_fraction",
    "mono_disagreement",
    "temporal_instability",
    "n_objects",
    "sample_id",
)
DecisionFilter = Literal["all", "undecided", "decided", "accept", "reject", "flag"]


class ListQuery(Record):
    """A listing's filters (the page's query string)."""

    sort: str = Field("doubt", description="a column of SORT_KEYS")
    min: float | None = Field(None, description="keep rows whose sort column is at least this")
    depth_min: float | None = Field(None, ge=0, description="keep samples with depth at or beyond, m")
    depth_max: float | None = Field(None, ge=0, description="keep samples with depth at or before, m")
    status: Literal["ok", "failed", "all"] = "ok"
    decision: DecisionFilter = "all"
    class_name: str | None = Field(
        None, description="keep samples with an object of this class (datasets with --classes)"
    )
    page: int = Field(1, ge=1)

    def params(self, **change: Any) -> str:
        """The query string of this listing, with `change` applied (links to pages, the sample pages)."""
        from urllib.parse import urlencode

        values = {**self.model_dump(), **change}
        defaults = ListQuery().model_dump()
        return urlencode({k: v for k, v in values.items() if v is not None and v != defaults[k]})


@dataclass(frozen=True)
class Listing:
    rows: list[dict[str, Any]]  # this page's samples
    total: int  # samples passing the filters


@dataclass(frozen=True)
class Place:
    """Where a sample stands in a listing (the sample page's previous / next)."""

    position: int | None  # 0-based; None: the filters leave it out
    total: int
    previous: str | None
    next: str | None


class ReviewData:
    """The tables and decisions of one dataset, cached until their files change."""

    def __init__(self, dataset: str | Path) -> None:
        self.path = Path(dataset)
        self._index_bytes = -1
        self._reviews_bytes = -1
        self._arrays: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------ cached state

    def refresh(self) -> None:
        from labeler.dataset.reader import open_dataset
        from labeler.doubt import with_doubt

        size = shard_index_bytes(self.path)
        if size != self._index_bytes:
            self.ds = open_dataset(self.path)
            width, height = self.ds.manifest.calibration.image_size
            self.image_px = width * height
            self.samples, self.objects = with_doubt(
                self.ds.samples.to_table(), self.ds.objects.to_table(), self.image_px
            )
            self.labels = current_labels(self.ds)
            self.by_id = {s: i for i, s in enumerate(self.samples.column("sample_id").to_pylist())}
            self._index_bytes, self._reviews_bytes = size, -1
            self._arrays.clear()
        rsize = reviews_bytes(self.path)
        if rsize != self._reviews_bytes:
            self.decisions: Decisions = decisions_from(read_reviews(self.path), self.labels)
            self._decision_col = self._decision_column()
            self._reviews_bytes = rsize

    def _decision_column(self) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        decided = {s: r.decision for (s, o), r in self.decisions.current.items() if o is None}
        keys = pa.array(list(decided), pa.string())
        where = pc.index_in(self.samples.column("sample_id"), value_set=keys)
        return pc.take(pa.array(list(decided.values()), pa.string()), where)

    # ------------------------------------------------------------ queries

    def _filtered(self, q: ListQuery) -> Any:
        import pyarrow.compute as pc

        self.refresh()
        t = self.samples.append_column("decision", self._decision_col)
        conds = []
        if q.status != "all":
            conds.append(pc.equal(t.column("status"), q.status))
        if q.decision == "undecided":
            conds.append(pc.is_null(t.column("decision")))
        elif q.decision == "decided":
            conds.append(pc.is_valid(t.column("decision")))
        elif q.decision != "all":
            conds.append(pc.equal(t.column("decision"), q.decision))
        if q.class_name is not None and q.class_name != "all":
            named = pc.equal(self.objects.column("class_name"), q.class_name)
            rows = pc.unique(pc.filter(self.objects.column("row"), pc.fill_null(named, False)))
            conds.append(pc.is_in(t.column("row"), value_set=rows))
        if q.depth_min is not None:
            conds.append(pc.greater_equal(t.column("depth_m_max"), q.depth_min))
        if q.depth_max is not None:
            conds.append(pc.less_equal(t.column("depth_m_min"), q.depth_max))
        sort = q.sort if q.sort in SORT_KEYS else "doubt"
        if q.min is not None and sort != "sample_id":
            conds.append(pc.greater_equal(t.column(sort), q.min))
        if conds:  # a null comparison (no such value) leaves the row out
            keep = pc.fill_null(conds[0], False)
            for cond in conds[1:]:
                keep = pc.and_(keep, pc.fill_null(cond, False))
            t = t.filter(keep)
        if sort == "sample_id":
            t = t.sort_by([("sample_id", "ascending")])
        else:
            t = t.sort_by([(sort, "descending"), ("sample_id", "ascending")])  # nulls last
        return t

    def listing(self, q: ListQuery) -> Listing:
        t = self._filtered(q)
        return Listing(t.slice((q.page - 1) * PAGE_SIZE, PAGE_SIZE).to_pylist(), t.num_rows)

    def place(self, q: ListQuery, sample_id: str) -> Place:
        import pyarrow.compute as pc

        ids = self._filtered(q).column("sample_id")
        k = pc.index(ids, sample_id).as_py()
        if k < 0:
            return Place(None, len(ids), None, None)
        prev = ids[k - 1].as_py() if k > 0 else None
        nxt = ids[k + 1].as_py() if k + 1 < len(ids) else None
        return Place(k, len(ids), prev, nxt)

    def sample(self, sample_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A sample's row (with doubt) and its objects' rows (with doubt), by id; KeyError if unknown."""
        import pyarrow.compute as pc

        self.refresh()
        row = self.samples.slice(self.by_id[sample_id], 1).to_pylist()[0]
        objects = self.objects.filter(pc.field("row") == row["row"]).sort_by("id").to_pylist()
        return row, objects

    def arrays(self, row: int) -> dict[str, np.ndarray]:
        """A sample's arrays (the last few kept: a page asks for four layers and the pointer maps)."""
        self.refresh()
        hit = self._arrays.get(row)
        if hit is None:
            hit = self.ds.read_row(row)
            self._arrays[row] = hit
            while len(self._arrays) > 6:
                self._arrays.popitem(last=False)
        return hit
