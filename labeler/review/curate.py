"""`labeler curate DATASET`: near-duplicates, a diverse subset and outliers from the sample embeddings
(`labeler embed`), written as named selections (`--selection NAME` of the trainers and exports) and
`curation.json`; and the nearest-neighbour queries of the review app's "more like this".

All on cosine similarity of the L2-normalised embeddings (a sample's [CLS | mean patch] row):

- **near-duplicates**: two samples whose similarity is at least `duplicate_cosine` (default 0.98) are
  linked, and a group is a connected set of links (single linkage); the `dedup` selection keeps the first
  sample (in row order) of each group and every sample in none.
- **diverse** (k-center greedy): start from the sample nearest the mean embedding, then add the sample
  farthest (in cosine distance 1 - s) from every one chosen so far, `n_diverse` times; each sample left out
  is then within the largest of those distances of a chosen one.
- **outliers**: score = 1 - the mean similarity to a sample's `k` nearest neighbours; the `n_outliers`
  highest.

Exact search with numpy, in blocks of rows (memory O(block x N)); benchmarks/bench_curation.py measures it
against faiss at 10^5 samples (RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_schema.curation import CurationReport, DuplicateGroup, Outlier, Selection

DUPLICATE_COSINE = 0.98
_BLOCK = 2048


def normalised(x: np.ndarray) -> np.ndarray:
    """(N, D) any float -> (N, D) float32 rows of unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _blocks(n: int) -> Iterator[slice]:
    for start in range(0, n, _BLOCK):
        yield slice(start, min(start + _BLOCK, n))


def duplicate_groups(x: np.ndarray, threshold: float) -> list[tuple[list[int], float]]:
    """Groups (indices ascending, least linking similarity) of rows linked by similarity >= threshold."""
    n = len(x)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    links: list[tuple[int, int, float]] = []
    for b in _blocks(n):
        sim = x[b] @ x.T
        ii, jj = np.nonzero(sim >= threshold)
        for i, j in zip(ii + b.start, jj, strict=True):
            if i < j:
                links.append((int(i), int(j), float(sim[i - b.start, j])))
                parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    least: dict[int, float] = {}
    for i, _, s in links:
        r = find(i)
        least[r] = min(least.get(r, 1.0), s)
    return [(sorted(g), least[r]) for r, g in groups.items() if len(g) > 1]


def k_center(x: np.ndarray, k: int) -> list[int]:
    """k-center greedy: k row indices, the first nearest the mean, each next the farthest from those
    chosen."""
    n = len(x)
    if n == 0 or k <= 0:
        return []
    first = int(np.argmax(x @ normalised(x.mean(axis=0, keepdims=True))[0]))
    chosen = [first]
    dist = 1.0 - x @ x[first]
    dist[first] = -np.inf
    while len(chosen) < min(k, n):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
        dist[chosen] = -np.inf
    return chosen


def nearest(
    x: np.ndarray, q: np.ndarray, k: int, *, exclude: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of x most similar to q (unit vectors): (indices, similarities), most similar first."""
    sim = x @ q
    if exclude is not None:
        sim[exclude] = -np.inf
    k = min(k, len(x) - (exclude is not None))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = np.argpartition(-sim, k - 1)[:k]
    top = top[np.argsort(-sim[top], kind="stable")]
    return top, sim[top]


def outlier_scores(x: np.ndarray, k: int) -> np.ndarray:
    """1 - mean similarity to each row's k nearest other rows (NaN with fewer than 2 rows)."""
    n = len(x)
    if n < 2:
        return np.full(n, np.nan)
    k = min(k, n - 1)
    out = np.empty(n, np.float64)
    for b in _blocks(n):
        sim = x[b] @ x.T
        sim[np.arange(b.stop - b.start), np.arange(b.start, b.stop)] = -np.inf
        top = -np.partition(-sim, k - 1, axis=1)[:, :k]
        out[b] = 1.0 - top.mean(axis=1)
    return out


def curate(
    dataset: str | Path,
    *,
    duplicate_cosine: float = DUPLICATE_COSINE,
    n_diverse: int = 50,
    n_outliers: int = 10,
    k_neighbours: int = 5,
) -> CurationReport:
    """Curate a dataset from its embeddings; writes the selections `dedup`, `diverse`, `outliers` and
    curation.json. One line when the dataset has no current embeddings."""
    from labeler.dataset.embeddings import load_embeddings
    from labeler.dataset.reader import open_dataset
    from labeler.dataset.selections import write_curation, write_selection
    from labeler.errors import LabelerError

    ds = open_dataset(dataset)
    emb = load_embeddings(dataset)
    if emb is None or emb.record.dataset_version != ds.version or len(emb.rows) != len(ds):
        raise LabelerError(
            f"{dataset}: no current embeddings of every sample; run `labeler embed {dataset}` first"
        )
    by_row = {rec.row: rec.sample_id for shard in ds.iter_shards() for rec in shard.ok}
    ids = [by_row[int(r)] for r in emb.rows]
    x = normalised(emb.samples)
    groups = duplicate_groups(x, duplicate_cosine)
    in_group = {i for g, _ in groups for i in g[1:]}
    diverse = k_center(x, n_diverse)
    scores = outlier_scores(x, k_neighbours)
    worst = [int(i) for i in np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable")[:n_outliers]]
    how = f"embeddings {emb.record.backbone} ({emb.record.key[:12]})"
    selections = {
        "dedup": (
            [ids[i] for i in range(len(ids)) if i not in in_group],
            f"near-duplicates (cosine >= {duplicate_cosine}) dropped but the first of each group; {how}",
        ),
        "diverse": (
            [ids[i] for i in diverse],
            f"k-center greedy, {len(diverse)} of {len(ids)}, cosine distance; {how}",
        ),
        "outliers": (
            [ids[i] for i in worst],
            f"the {len(worst)} highest 1 - mean cosine to {k_neighbours} nearest; {how}",
        ),
    }
    for name, (chosen, text) in selections.items():
        write_selection(
            dataset, Selection(name=name, sample_ids=chosen, how=text, dataset_version=ds.version)
        )
    report = CurationReport(
        dataset_version=ds.version,
        embedding_key=emb.record.key,
        n_samples=len(ids),
        duplicate_cosine=duplicate_cosine,
        groups=[DuplicateGroup(sample_ids=[ids[i] for i in g], min_cosine=s) for g, s in groups],
        diverse=[ids[i] for i in diverse],
        outliers=[Outlier(sample_id=ids[i], score=float(scores[i])) for i in worst],
        selections=list(selections),
    )
    write_curation(dataset, report)
    return report


class SimilarityIndex:
    """The review app's "more like this": nearest samples to a sample, nearest objects to an object."""

    def __init__(self, dataset: str | Path) -> None:
        from labeler.dataset.embeddings import load_embeddings
        from labeler.dataset.reader import open_dataset

        ds = open_dataset(dataset)
        emb = load_embeddings(dataset)
        self.available = emb is not None and emb.record.dataset_version == ds.version
        by_row = {rec.row: rec.sample_id for shard in ds.iter_shards() for rec in shard.ok}
        if emb is None or not self.available:
            emb_rows, samples, o_rows, o_ids, objects = (
                np.zeros(0, np.int64),
                np.zeros((0, 1)),
                np.zeros(0, np.int64),
                np.zeros(0, np.int32),
                np.zeros((0, 1)),
            )
        else:
            emb_rows, samples, o_rows, o_ids, objects = (
                emb.rows,
                emb.samples,
                emb.object_rows,
                emb.object_ids,
                emb.objects,
            )
        self.ids = [by_row.get(int(r), "") for r in emb_rows]
        self.index = {sid: i for i, sid in enumerate(self.ids)}
        self.x = normalised(samples)
        self.obj_keys = [(by_row.get(int(r), ""), int(i)) for r, i in zip(o_rows, o_ids, strict=True)]
        self.obj_index = {key: k for k, key in enumerate(self.obj_keys)}
        self.ox = normalised(objects)

    def similar_samples(self, sample_id: str, k: int = 8) -> list[tuple[str, float]]:
        i = self.index.get(sample_id)
        if i is None:
            return []
        top, sim = nearest(self.x, self.x[i], k, exclude=i)
        return [(self.ids[j], float(s)) for j, s in zip(top, sim, strict=True)]

    def similar_objects(self, sample_id: str, object_id: int, k: int = 8) -> list[tuple[str, int, float]]:
        i = self.obj_index.get((sample_id, object_id))
        if i is None:
            return []
        top, sim = nearest(self.ox, self.ox[i], k, exclude=i)
        return [(*self.obj_keys[j], float(s)) for j, s in zip(top, sim, strict=True)]
