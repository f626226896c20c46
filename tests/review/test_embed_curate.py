"""`labeler embed` and `labeler curate`: embeddings equal to a direct forward pass, resumable by shard,
checked by validate; near-duplicates, k-center and outliers on known vectors and on a dataset with copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from labeler import open_dataset


def tiny_embed(dataset: Path, **overrides):
    """`labeler embed` with the tiny random-init ViT at a 42 px input, in-process unless told."""
    from data_schema.curation import EmbedConfig
    from pipelines.embed import run_embed

    stop = overrides.pop("stop_after_shards", None)
    fields = {"backbone": "tiny", "input_size": 42, "progress": False, **overrides}
    return run_embed(EmbedConfig(dataset=dataset, **fields), stop_after_shards=stop)


@pytest.fixture(scope="module")
def copies_dataset(tmp_path_factory) -> Path:
    """7 pairs 128x96, 4 samples per shard: pairs 0-2 the same image, 3-6 different."""
    from data_schema.commands import PseudoLabelConfig
    from labeler.io import write_png
    from labeler.testing.scenes import box_pair
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml

    root = tmp_path_factory.mktemp("curate")
    for i in range(7):
        pair = box_pair(np.random.default_rng(100 if i < 3 else i), 128, 96)
        write_png(root / "pairs" / "left" / f"pair_{i:03d}.png", pair.left)
        write_png(root / "pairs" / "right" / f"pair_{i:03d}.png", pair.right)
    calib = identity_calibration_yaml(root / "calib.yaml", 128, 96)
    ds = root / "ds"
    cfg = PseudoLabelConfig(
        inputs=root / "pairs",
        calib=calib,
        out=ds,
        samples_per_shard=4,
        scheduler="sync",
        previews=False,
        progress=False,
    )
    run_pseudo_label(cfg)
    return ds


def test_embeddings_equal_a_direct_forward_and_resume_by_shard(copies_dataset, tmp_path):
    import torch

    from labeler.dataset.embeddings import embedding_index, load_embeddings
    from labeler.models.dinov2_dpt import IMAGENET_MEAN, IMAGENET_STD
    from labeler.review.embed import build_backbone, input_shape

    ds_path = tmp_path / "ds"
    shutil.copytree(copies_dataset, ds_path)
    first = tiny_embed(ds_path, batch_size=3, stop_after_shards=1)
    assert (first.n_shards, first.n_embedded) == (2, 1)
    second = tiny_embed(ds_path, batch_size=3)
    assert second.n_embedded == 1 and len(embedding_index(ds_path, second.record.key)) == 2
    emb = load_embeddings(ds_path)
    ds = open_dataset(ds_path)
    assert emb is not None and emb.samples.shape == (len(ds), 128) and emb.samples.dtype == np.float16
    assert emb.objects.shape == (ds.objects.count_rows(), 64) and emb.objects.dtype == np.float16
    # the first sample and its first object, recomputed by hand
    vit, lic, _ = build_backbone("tiny", None)
    assert lic.commercial == "allowed"
    import cv2

    s = ds[0]
    h, w = input_shape(128, 96, 42)
    assert (h, w) == (42, 56)
    x = cv2.resize(s.left, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    with torch.no_grad():
        ((patches, cls),) = vit.intermediate_layers(torch.from_numpy(x).permute(2, 0, 1)[None], (3,))
    want = np.concatenate([cls[0].numpy(), patches[0].numpy().mean(0)])
    got = emb.samples[list(emb.rows).index(s.row)].astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)  # float16 storage
    oid = s.objects[0].id
    share = cv2.resize(
        (s.instance_ids == oid).astype(np.float32), (4, 3), interpolation=cv2.INTER_AREA
    ).ravel()
    want_obj = share @ patches[0].numpy() / share.sum()
    k = [(int(r), int(i)) for r, i in zip(emb.object_rows, emb.object_ids, strict=True)].index((s.row, oid))
    np.testing.assert_allclose(emb.objects[k].astype(np.float32), want_obj, rtol=2e-3, atol=2e-3)


def test_validate_finds_damaged_or_stale_embeddings(copies_dataset, tmp_path):
    import zarr

    from labeler.dataset.validate import validate_dataset

    ds_path = tmp_path / "ds"
    shutil.copytree(copies_dataset, ds_path)
    tiny_embed(ds_path)
    assert validate_dataset(ds_path) == []
    arr = zarr.open_array(ds_path / "embeddings" / "samples.zarr", mode="r+")
    arr[0, 0] = arr[0, 0] + np.float16(1)
    problems = validate_dataset(ds_path)
    assert len(problems) == 1 and "shard 0's sample embeddings differ from their hash" in problems[0]


def test_curation_on_known_vectors():
    from labeler.review.curate import duplicate_groups, k_center, normalised, outlier_scores

    x = normalised(
        np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 1, 0.001], [0, 0, 1], [1, 1, 0], [0.99, 0, 0.02]])
    )
    groups = duplicate_groups(x, 0.99)
    assert sorted(g for g, _ in groups) == [[0, 1, 6], [2, 3]]
    assert all(s >= 0.99 for _, s in groups)
    chosen = k_center(x, 4)
    assert chosen[:2] == [5, 4]  # nearest the mean, then the farthest from it
    radius = (1 - x @ x[chosen].T).min(axis=1).max()  # every vector this close to a chosen one
    assert len(set(chosen)) == 4 and radius < 0.001  # one per cluster: x-axis, y-axis, z-axis, [1, 1, 0]
    scores = outlier_scores(x, 1)
    assert int(np.argmax(scores)) == 4  # [0, 0, 1] has no close neighbour


def test_curate_groups_the_copies_and_writes_selections(copies_dataset, tmp_path):
    from labeler.dataset.selections import read_selection
    from labeler.review.curate import SimilarityIndex, curate

    ds_path = tmp_path / "ds"
    shutil.copytree(copies_dataset, ds_path)
    tiny_embed(ds_path)
    rep = curate(ds_path, n_diverse=4, n_outliers=2)
    ids = open_dataset(ds_path).sample_ids
    assert [g.sample_ids for g in rep.groups] == [ids[:3]]  # the three copies, nothing else
    dedup = read_selection(ds_path, "dedup").sample_ids
    assert dedup == [ids[0], *ids[3:]]
    diverse = read_selection(ds_path, "diverse").sample_ids
    assert len(diverse) == 4 and len(set(diverse) & set(ids[:3])) <= 1  # never two copies
    near = SimilarityIndex(ds_path).similar_samples(ids[0], k=2)
    assert {sid for sid, _ in near} == {ids[1], ids[2]} and all(s > 0.999 for _, s in near)
