"""`labeler validate`: find any damage in a dataset — every problem one line naming sample and array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_schema.manifest import ARRAY_NAMES, DepthSettings, Manifest, SampleRecord
from labeler.shards import STORE_NAME, SampleArrays, digest, load_manifest

# depth·(disparity + doffs) must equal fx·B to float32 precision
_RELATION_RTOL = 1e-4


def sample_problems(group, rec: SampleRecord, manifest: Manifest) -> list[str]:
    """Problems of one ok sample: missing rows, shapes/dtypes, content hashes, depth ↔ disparity, ids."""
    where = f"sample {rec.sample_id} (row {rec.index})"
    try:
        raw = {name: group[name][rec.index] for name in ARRAY_NAMES}
    except Exception as err:  # noqa: BLE001 — any read error is damage to report, not to raise
        return [f"{where}: cannot read arrays: {' '.join(str(err).split())}"]
    try:
        arrays = SampleArrays(**raw)
    except ValueError as err:
        return [f"{where}: {err}"]
    h, w = arrays.left.shape[:2]
    problems = []
    if [w, h] != list(manifest.calibration.image_size):
        problems.append(f"{where}: size {w}x{h} is not the calibration's {manifest.calibration.image_size}")
    for name in ARRAY_NAMES:
        if rec.digests is not None and digest(raw[name]) != getattr(rec.digests, name):
            problems.append(
                f"{where}/{name}: content hash differs from the manifest (data changed or corrupt)"
            )
    problems += _relation_problems(where, arrays, manifest.depth)
    problems += _object_problems(where, arrays.instance_ids, rec)
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


def _object_problems(where: str, ids: np.ndarray, rec: SampleRecord) -> list[str]:
    counts = np.bincount(ids.ravel())
    present = {int(i) for i in np.flatnonzero(counts) if i > 0}
    listed = {o.id for o in rec.objects}
    problems = []
    if present != listed:
        problems.append(
            f"{where}/instance_ids: ids {sorted(present - listed)} not in the object table, "
            f"objects {sorted(listed - present)} have no pixels"
        )
    for o in rec.objects:
        if o.id in present and counts[o.id] != o.area_px:
            problems.append(
                f"{where}/instance_ids: object {o.id} has {counts[o.id]} px, the table says {o.area_px}"
            )
    return problems


def validate_dataset(dataset: str | Path) -> list[str]:
    """All problems found; empty when the dataset is intact."""
    import zarr

    from labeler.errors import LabelerError

    dataset = Path(dataset)
    try:
        manifest = load_manifest(dataset)
    except LabelerError as err:
        return [str(err)]
    except ValueError as err:
        return [f"{dataset / 'manifest.json'}: not a valid manifest ({' '.join(str(err).split())[:300]})"]
    try:
        group = zarr.open_group(dataset / STORE_NAME, mode="r")
    except Exception as err:  # noqa: BLE001
        return [f"{dataset / STORE_NAME}: cannot open the store ({err})"]
    problems = []
    for spec in manifest.layout.arrays:
        if spec.name not in group:
            problems.append(f"{dataset / STORE_NAME}/{spec.name}: array missing")
        elif list(group[spec.name].shape) != spec.shape or str(group[spec.name].dtype) != spec.dtype:
            arr = group[spec.name]
            problems.append(
                f"{dataset / STORE_NAME}/{spec.name}: shape {list(arr.shape)} {arr.dtype}, the "
                f"manifest says {spec.shape} {spec.dtype}"
            )
    if problems:
        return problems
    seen: dict[int, str] = {}
    for rec in manifest.samples:
        if rec.status != "ok":
            continue
        if rec.index is None or rec.index in seen:
            problems.append(
                f"sample {rec.sample_id}: row {rec.index} is missing or shared with {seen.get(rec.index)}"
            )
            continue
        seen[rec.index] = rec.sample_id
        problems += sample_problems(group, rec, manifest)
    ids = [s.sample_id for s in manifest.samples]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"sample {dup}: listed {ids.count(dup)} times in the manifest")
    return problems
