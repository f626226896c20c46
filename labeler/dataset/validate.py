"""`labeler validate`: find any damage in a dataset — every problem one line naming sample and field.

Dataset-wide checks (`dataset_problems`) read the manifest, the shard index, the row plan and one column
of the samples table; per-shard checks (`shard_problems`, run on Dask workers by pipelines/validate.py)
read one shard's table rows and arrays, recompute every digest, the depth ↔ disparity relation and every
object's statistics from the stored `depth_m` and `instance_ids`, and compare them with the tables and
with the sha256 the shard index holds for each table. O(N) in all, O(shard) per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data_schema.manifest import ARRAY_NAMES, DepthSettings, Manifest, ObjectRow, SampleRecord, ShardEntry
from labeler.dataset import shards
from labeler.dataset.index import (
    dataset_version,
    index_counts,
    read_row_plan,
    read_shard_index,
    shard_index_bytes,
)
from labeler.dataset.manifest import load_manifest
from labeler.dataset.shards import SampleArrays, digest
from labeler.dataset.sidecars import read_reviews
from labeler.dataset.tables import TABLES_DIR, shard_objects, shard_samples, table_dataset
from labeler.errors import LabelerError

# depth·(disparity + doffs) must equal fx·B to float32 precision
_RELATION_RTOL = 1e-4
_STAT_RTOL = 1e-6
_OBJECT_FIELDS = ("area_px", "bbox", "valid_fraction", "depth_m_median", "depth_m_p10", "depth_m_p90")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=_STAT_RTOL, abs_tol=1e-9)  # type: ignore[arg-type]
    return a == b


def shard_problems(dataset: str | Path, entry: ShardEntry, manifest: Manifest) -> list[str]:
    """Every problem of one finished shard."""
    from labeler.dataset.tables import content_sha256, rows_sha256

    where = f"shard {entry.shard}"
    try:
        samples = shard_samples(dataset, entry)
        objects = shard_objects(dataset, entry)
    except Exception as err:  # noqa: BLE001 — unreadable tables are damage to report, not to raise
        return [f"{where}: cannot read its table rows ({_one_line(err)})"]
    problems = []
    for table, rows, ref in (("samples", samples, entry.samples), ("objects", objects, entry.objects)):
        if rows_sha256(rows) != ref.sha256:
            problems.append(
                f"{where}: {table} table rows in {ref.file} changed since written (sha256 differs from the "
                "shard index)"
            )
    if not problems and content_sha256(samples, objects) != entry.content_sha256:
        problems.append(f"{where}: labels differ from the content hash in the shard index")
    n_ok = sum(s.status == "ok" for s in samples)
    n_skip = sum(s.status == "skipped" for s in samples)
    n_fail = len(samples) - n_ok - n_skip
    if (n_ok, n_fail, n_skip, len(objects)) != (entry.n_ok, entry.n_failed, entry.n_skipped, entry.n_objects):
        problems.append(
            f"{where}: {n_ok} ok / {n_fail} failed / {n_skip} skipped samples and {len(objects)} objects in "
            f"the tables, the shard index says {entry.n_ok} / {entry.n_failed} / {entry.n_skipped} / "
            f"{entry.n_objects}"
        )
    sizes = shards.shard_file_sizes(dataset, entry.shard)
    digests = shards.shard_file_digests(dataset, entry.shard) if entry.array_sha256 is not None else {}
    for name in ARRAY_NAMES:
        if sizes[name] != entry.array_bytes.get(name):
            problems.append(
                f"{where}/{name}: shard file is {sizes[name]} bytes, the shard index says "
                f"{entry.array_bytes.get(name)} (truncated, replaced or lost)"
            )
        elif entry.array_sha256 is not None and digests[name] != entry.array_sha256.get(name):
            problems.append(
                f"{where}/{name}: shard file bytes changed since written (sha256 differs from the shard "
                "index; the decoded rows may still read the same)"
            )
    by_row: dict[int, list[ObjectRow]] = {}
    for o in objects:
        by_row.setdefault(o.row, []).append(o)
    inside = []
    for rec in samples:
        if entry.row_start <= rec.row < entry.row_stop:
            inside.append(rec)
        else:
            problems.append(f"sample {rec.sample_id}: row {rec.row} is outside shard {entry.shard}")
    ok = [s for s in inside if s.status == "ok"]
    block: dict[str, np.ndarray] = {}
    start = entry.row_start
    try:  # the whole shard in one read per array
        if ok:
            block = shards.read_rows(shards.open_arrays(dataset), slice(start, max(s.row for s in ok) + 1))
    except Exception as err:  # noqa: BLE001 — unreadable arrays are damage to report
        return [*problems, f"{where}: cannot read its arrays ({_one_line(err)})"]
    for rec in inside:
        if rec.status == "ok":
            raw = {name: block[name][rec.row - start] for name in ARRAY_NAMES}
            problems += sample_problems(raw, rec, by_row.get(rec.row, []), manifest)
        elif by_row.get(rec.row):
            problems.append(
                f"sample {rec.sample_id}: {rec.status}, yet the objects table lists objects for it"
            )
    known_rows = {s.row for s in samples}
    for row in sorted(set(by_row) - known_rows):
        problems.append(f"{where}: objects table lists objects of row {row}, which has no sample")
    return problems


def sample_problems(
    raw: dict[str, np.ndarray], rec: SampleRecord, objects: list[ObjectRow], manifest: Manifest
) -> list[str]:
    """Problems of one ok sample (its arrays as read): shapes/dtypes, digests, depth ↔ disparity, objects."""
    where = f"sample {rec.sample_id} (row {rec.row})"
    if rec.digests is None or rec.stats is None:
        return [f"{where}: ok sample without digests or stats in the samples table"]
    try:
        arrays = SampleArrays(**raw)
    except Exception as err:  # noqa: BLE001
        return [f"{where}: cannot read arrays: {_one_line(err)}"]
    h, w = arrays.left.shape[:2]
    problems = []
    if [w, h] != list(manifest.calibration.image_size):
        problems.append(f"{where}: size {w}x{h} is not the calibration's {manifest.calibration.image_size}")
    for name in ARRAY_NAMES:
        if digest(raw[name]) != getattr(rec.digests, name):
            problems.append(f"{where}/{name}: content hash differs from the samples table (data changed)")
    problems += _relation_problems(where, arrays, manifest.depth)
    problems += _object_problems(where, arrays, rec, objects, manifest.objects.min_depth_px)
    return problems


def _relation_problems(where: str, a: SampleArrays, depth: DepthSettings) -> list[str]:
    problems = []
    d_eff = a.disparity_px.astype(np.float64) + depth.doffs_px
    finite = np.isfinite(a.depth_m)
    if (finite & ~(d_eff > 0)).any():
        problems.append(f"{where}/depth_m: valid depth where the disparity is invalid or not positive")
    product = a.depth_m[finite].astype(np.float64) * d_eff[finite]
    if product.size and np.abs(product / (depth.fx_px * depth.baseline_m) - 1).max() > _RELATION_RTOL:
        problems.append(f"{where}/depth_m: depth_m != fx·baseline/disparity_px")
    if (a.depth_m[finite] > depth.z_far_m * (1 + 1e-6)).any():
        problems.append(f"{where}/depth_m: depth beyond z_far_m {depth.z_far_m}")
    expected = (d_eff > 0) & ~np.isfinite(a.depth_m)
    if (
        expected
        & (depth.fx_px * depth.baseline_m / np.where(d_eff > 0, d_eff, 1) <= depth.z_far_m * (1 - 1e-6))
    ).any():
        problems.append(f"{where}/depth_m: NaN where the disparity gives a valid depth")
    if (np.isnan(a.confidence) != np.isnan(a.disparity_px)).any():
        problems.append(f"{where}/confidence: NaN pattern differs from disparity_px")
    conf = a.confidence[np.isfinite(a.confidence)]
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        problems.append(f"{where}/confidence: values outside [0, 1]")
    return problems


def _object_problems(
    where: str, a: SampleArrays, rec: SampleRecord, objects: list[ObjectRow], min_depth_px: int
) -> list[str]:
    """Recompute every object's statistics from instance_ids and depth_m and compare with the table."""
    from labeler.depth import object_records, sample_stats

    ids = a.instance_ids
    present = {int(i) for i in np.unique(ids) if i > 0}
    listed = {o.id for o in objects}
    problems = []
    if present != listed:
        problems.append(
            f"{where}/instance_ids: ids {sorted(present - listed)} not in the objects table, "
            f"objects {sorted(listed - present)} have no pixels"
        )
    if any(o.sample_id != rec.sample_id for o in objects):
        other = sorted({o.sample_id for o in objects} - {rec.sample_id})
        problems.append(f"{where}: sample_id is {rec.sample_id!r} in the samples table, {other} in objects")
    n_max = int(ids.max()) if ids.size else 0
    fresh = {
        o.id: o for o in object_records(ids, a.depth_m, np.ones(n_max, np.float32), min_depth_px=min_depth_px)
    }
    for o in sorted(objects, key=lambda o: o.id):
        ref = fresh.get(o.id)
        if ref is None:
            continue
        for name in _OBJECT_FIELDS:
            if not _same(getattr(o, name), getattr(ref, name)):
                problems.append(
                    f"{where}: object {o.id} {name} is {getattr(o, name)} in the objects table, the arrays "
                    f"give {getattr(ref, name)}"
                )
    problems += _doubt_problems(where, a, rec, objects)
    dropped = rec.stats.n_objects_dropped if rec.stats else 0  # not in the arrays: as recorded
    stats = sample_stats(a.depth_m, a.confidence, len(present), n_objects_dropped=dropped)
    for name, value in stats.model_dump().items():
        if not _same(getattr(rec.stats, name), value):
            problems.append(
                f"{where}: {name} is {getattr(rec.stats, name)} in the samples table, the arrays give {value}"
            )
    return problems


def _doubt_problems(where: str, a: SampleArrays, rec: SampleRecord, objects: list[ObjectRow]) -> list[str]:
    """Doubt signals: the mask-shape ones are recomputed from the arrays (tables written before they
    existed hold None: nothing to compare). The model and video ones (mono_disagreement,
    temporal_instability) come from what validate cannot rerun (a model, the neighbouring frame): they are
    derived, covered by the table hashes, and their range is checked by the records on read."""
    from labeler.doubt import shape_signals

    problems = []
    fresh = shape_signals(a.instance_ids, a.depth_m)
    for o in sorted(objects, key=lambda o: o.id):
        if o.id not in fresh:
            continue
        for name, value in zip(("thickness_px", "edge_alignment"), fresh[o.id], strict=True):
            stored = getattr(o, name)
            if stored is not None and not _same(stored, value):
                problems.append(
                    f"{where}: object {o.id} {name} is {stored} in the objects table, the arrays give {value}"
                )
    return problems


def dataset_problems(dataset: str | Path) -> tuple[list[str], Manifest | None, list[ShardEntry]]:
    """The dataset-wide checks; returns (problems, manifest, the shard entries to check one by one)."""
    dataset = Path(dataset)
    try:
        manifest = load_manifest(dataset)
    except LabelerError as err:
        return [str(err)], None, []
    from labeler.dataset.manifest import seal_problems
    from labeler.dataset.sidecars import read_doubt_pass

    problems: list[str] = seal_problems(dataset, manifest, cut_tail=True)
    read_doubt_pass(dataset, problems=problems)
    try:
        group = shards.open_store(dataset)
    except Exception as err:  # noqa: BLE001
        return [f"{dataset / shards.STORE_NAME}: cannot open the store ({_one_line(err)})"], manifest, []
    for spec in manifest.layout.arrays:
        try:
            arr = group[spec.name]
        except Exception:  # noqa: BLE001
            problems.append(f"{dataset / shards.STORE_NAME}/{spec.name}: array missing or unreadable")
            continue
        if (
            list(arr.shape[1:]) != spec.shape[1:]
            or arr.shape[0] < spec.shape[0]
            or str(arr.dtype) != spec.dtype
        ):
            problems.append(
                f"{dataset / shards.STORE_NAME}/{spec.name}: shape {list(arr.shape)} {arr.dtype}, the "
                f"manifest says {spec.shape} {spec.dtype}"
            )
    if any(shards.STORE_NAME in p for p in problems):
        return problems, manifest, []
    index = read_shard_index(dataset, problems=problems)
    entries = [index[s] for s in sorted(index)]
    from labeler.dataset.journal import open_journals

    problems += [
        f"shard {s}: a rewrite was cut short by a killed process ({shards.JOURNAL_NAME}/{s}); run the same "
        "command again (it rolls the shard back first) or `labeler repair`"
        for s in open_journals(dataset)
    ]
    plan = read_row_plan(dataset, problems=problems)
    from labeler.dataset.runkey import run_key
    from labeler.depth import depth_settings

    m = manifest
    if depth_settings(m.calibration, z_far_m=m.depth.z_far_m) != m.depth:
        problems.append("manifest: depth settings do not follow from the embedded calibration (edited)")
    if (
        run_key(
            m.stereo,
            m.masks,
            m.calibration_sha256,
            m.depth,
            m.layout.samples_per_shard,
            m.objects,
            m.tracking,
        )
        != m.run_key
    ):
        problems.append("manifest: run_key does not match its configs, calibration_sha256 and depth (edited)")
    foreign = [e.shard for e in entries if e.run_key != manifest.run_key]
    if foreign:
        problems.append(f"shards {foreign[:10]}: made with another run key than the manifest's")
    if manifest.shard_index_bytes == shard_index_bytes(dataset):
        if manifest.dataset_version != dataset_version(manifest.run_key, index):
            problems.append("manifest: dataset_version does not match the shard index (edited or stale)")
        found = index_counts(index).model_copy(
            update={"tracks": manifest.tracks.n_rows if manifest.tracks else 0}
        )
        if manifest.counts != found:
            problems.append(f"manifest: counts {manifest.counts} differ from the shard index's {found}")
    for e in entries:
        if e.shard not in plan:
            problems.append(f"shard {e.shard}: finished but not in the row plan")
    problems += table_file_problems(dataset, entries)
    problems += _id_problems(dataset, entries, plan)
    problems += track_problems(dataset, manifest, entries)
    read_reviews(dataset, problems=problems)  # damaged decision lines
    problems += _embedding_problems(dataset, manifest, entries)
    return problems, manifest, entries


def table_file_problems(dataset: Path, entries: list[ShardEntry]) -> list[str]:
    """Table files whose bytes changed since written (every file hashed once: a compacted file holds many
    shards), one line per file; repair rewrites the shards that name it."""
    from labeler.dataset.tables import changed_table_files

    return [
        f"{path}: file bytes changed since written (sha256 differs from the shard index; the rows may still "
        f"decode the same); shards {names[:10]} name it"
        for path, names in changed_table_files(dataset, entries).items()
    ]


def _embedding_problems(dataset: Path, manifest: Manifest, entries: list[ShardEntry]) -> list[str]:
    """`labeler embed`'s arrays and table, where present (labeler/dataset/embeddings.py)."""
    from labeler.dataset.embeddings import embedding_problems, embeddings_dir

    if not embeddings_dir(dataset).is_dir():
        return []
    try:
        objects = table_dataset(dataset, "objects", entries).to_table(columns=["row", "id"])
    except Exception as err:  # noqa: BLE001
        return [f"{dataset / TABLES_DIR}: objects table unreadable ({_one_line(err)})"]
    return embedding_problems(dataset, manifest, entries, objects)


def track_problems(dataset: Path, manifest: Manifest, entries: list[ShardEntry]) -> list[str]:
    """The tracks table against its manifest record and the objects table: its hash, every track id of an
    object in it, and each track's frames seen."""
    from collections import Counter

    from labeler.dataset.tables import read_tracks, rows_sha256, table_dataset, tracks_path
    from labeler.io import sha256_file

    try:
        ids = table_dataset(dataset, "objects", entries).to_table(columns=["track_id"]).column("track_id")
    except Exception as err:  # noqa: BLE001 — a damaged part file (named per shard too): one line
        return [f"{dataset / TABLES_DIR}: objects table unreadable ({_one_line(err)})"]
    seen = Counter(t for t in ids.to_pylist() if t is not None)
    ref = manifest.tracks
    if ref is None:  # a tracked run stopped before its track pass: the next run of it makes the table
        return (
            [f"objects table: {len(seen)} track ids, but the manifest names no tracks table"]
            if seen and manifest.tracking is None
            else []
        )
    path = tracks_path(dataset, ref)
    try:
        tracks = read_tracks(dataset, ref)
    except Exception as err:  # noqa: BLE001 — an unreadable table is damage to report
        return [f"{path}: cannot read the tracks table ({_one_line(err)}); run the tracked run again"]
    if rows_sha256(tracks) != ref.sha256:
        return [f"{path}: tracks table rows changed since written (sha256 differs from the manifest)"]
    if ref.file_sha256 is not None and sha256_file(path) != ref.file_sha256:
        return [f"{path}: tracks table file bytes changed since written (sha256 differs from the manifest)"]
    problems = []
    by_id = {t.track_id: t for t in tracks}
    for tid in sorted(set(seen) - set(by_id))[:10]:
        problems.append(f"objects table: track id {tid} is not in the tracks table {path.name}")
    for tid, t in sorted(by_id.items()):
        if seen.get(tid, 0) != t.frames_seen:
            problems.append(
                f"{path.name}: track {tid} says {t.frames_seen} frames seen, the objects table has "
                f"{seen.get(tid, 0)}"
            )
    return problems[:20]


def _id_problems(dataset: Path, entries: list[ShardEntry], plan: dict) -> list[str]:
    """Every sample id once, at the row the row plan gave it (one scan of two columns)."""
    if not entries:
        return []
    try:
        t = table_dataset(dataset, "samples", entries).to_table(columns=["sample_id", "row"])
    except Exception as err:  # noqa: BLE001
        return [f"{dataset / TABLES_DIR}: samples table unreadable ({_one_line(err)})"]
    planned: dict[int, str] = {}
    for p in plan.values():
        for k, sid in enumerate(p.sample_ids):
            planned[p.row_start + k] = sid
    problems: list[str] = []
    seen_id: dict[str, int] = {}
    seen_row: dict[int, str] = {}
    for sid, row in zip(t.column("sample_id").to_pylist(), t.column("row").to_pylist(), strict=True):
        if sid in seen_id:
            problems.append(f"sample {sid}: listed twice (rows {seen_id[sid]} and {row})")
        if row in seen_row:
            problems.append(f"row {row}: held by two samples ({seen_row[row]} and {sid})")
        seen_id[sid], seen_row[row] = row, sid
        if planned.get(row, sid) != sid:
            problems.append(
                f"sample {sid} (row {row}): sample_id differs from the row plan's {planned[row]!r}"
            )
    return problems


def validate_dataset(
    dataset: str | Path, *, map_shards: Callable[[list[ShardEntry], Manifest], list[list[str]]] | None = None
) -> list[str]:
    """All problems found; empty when the dataset is intact. `map_shards` runs the per-shard checks
    (default: in this process, one after the other)."""
    problems, manifest, entries = dataset_problems(dataset)
    if manifest is None or not entries:
        return problems
    if map_shards is None:
        per_shard = [shard_problems(dataset, e, manifest) for e in entries]
    else:
        per_shard = map_shards(entries, manifest)
    return problems + [p for ps in per_shard for p in ps]
