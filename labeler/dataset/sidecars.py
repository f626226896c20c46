"""The files beside the labels: review decisions (`reviews.jsonl`, append-only), the last doubt pass
(`doubt.json`), and what people look at (PNG previews, the gallery pages and its index.html).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data_schema.review import DoubtPass, Review
from labeler.io import append_jsonl, read_jsonl, safe_name

REVIEWS_NAME = "reviews.jsonl"  # review decisions, append-only (data_schema/review.py)
DOUBT_PASS_NAME = "doubt.json"  # what the last `labeler doubt` pass computed


def reviews_path(dataset: str | Path) -> Path:
    return Path(dataset) / REVIEWS_NAME


def append_reviews(dataset: str | Path, reviews: Sequence[Review]) -> None:
    """Append decisions to reviews.jsonl and fsync before returning: once this returns, a crash keeps
    them. Writers of several processes take turns (flock); a line cut short by a kill is dropped first."""
    append_jsonl(reviews_path(dataset), reviews, lock=True)


def read_reviews(dataset: str | Path, *, problems: list[str] | None = None) -> list[Review]:
    """Every decision in the order made. A damaged line is skipped (and named in `problems`); a last
    line cut short by a kill is ignored."""
    return read_jsonl(reviews_path(dataset), Review, what="review decision", problems=problems)


def reviews_bytes(dataset: str | Path) -> int:
    """Size of reviews.jsonl (0: none): readers cache decisions until it changes."""
    path = reviews_path(dataset)
    return path.stat().st_size if path.is_file() else 0


def write_doubt_pass(dataset: str | Path, record: DoubtPass) -> DoubtPass:
    """Write doubt.json with its own hash; returns the record as written."""
    from labeler.dataset.seal import sealed
    from labeler.io import write_text_atomic

    record = sealed(record)
    write_text_atomic(Path(dataset) / DOUBT_PASS_NAME, record.model_dump_json(indent=1))
    return record


def read_doubt_pass(dataset: str | Path, *, problems: list[str] | None = None) -> DoubtPass | None:
    """The last doubt pass's record; None when there is none or it is damaged (named in `problems`)."""
    from labeler.dataset.seal import record_intact

    path = Path(dataset) / DOUBT_PASS_NAME
    if not path.is_file():
        return None
    try:
        record = DoubtPass.model_validate_json(path.read_bytes())
    except ValueError as err:
        if problems is not None:
            problems.append(f"{path}: not a doubt pass record ({' '.join(str(err).split())[:160]})")
        return None
    if not record_intact(record):
        if problems is not None:
            problems.append(f"{path}: edited after it was written (record_sha256 differs)")
        return None
    return record


PREVIEWS_DIR = "previews"
GALLERY_DIR = "gallery"
GALLERY_INDEX = "index.html"


def previews_dir(dataset: str | Path) -> Path:
    return Path(dataset) / PREVIEWS_DIR


def preview_path(dataset: str | Path, sample_id: str) -> Path:
    """Where a sample's PNG preview goes."""
    return previews_dir(dataset) / f"{safe_name(sample_id)}.png"


def gallery_page_path(dataset: str | Path, page: str) -> Path:
    return Path(dataset) / GALLERY_DIR / page


def gallery_index_path(dataset: str | Path) -> Path:
    return Path(dataset) / GALLERY_INDEX
