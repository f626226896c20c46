"""`labeler embed DATASET`: one DINOv2 embedding per sample and per object, stored in the dataset.

A sample's embedding is its rectified left image's final-norm CLS token and the mean of its patch tokens,
concatenated (2C wide, float16); an object's is the mean of the patch tokens its mask covers, each weighted
by the share of its patch the mask covers (C wide); an object smaller than a patch takes the patch under
its centre. The image is resized so its short side is `input_size` px and both sides are multiples of 14.

The backbone is the heads' DINOv2 (`--backbone vits --weights dinov2_vits14_pretrain.pth`, or a Depth
Anything V2 / FoundationStereo checkpoint's ViT) or a seeded random-init one (`--random-init`; `tiny` is
always random-init). Shards are embedded in `batch_size` images per forward and committed one by one
(labeler/dataset/embeddings.py), so an interrupted run resumes where it stopped. On a GPU:
`labeler embed DATASET --backbone vits --weights W --gpu 0 --batch-size 64`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_schema.curation import EmbeddingSet
from data_schema.heads import Backbone, HeadsModelConfig
from data_schema.licences import ModelLicence, model_licence
from labeler.models.dinov2_dpt import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, DinoViT


@dataclass(frozen=True)
class EmbedRun:
    record: EmbeddingSet
    n_shards: int
    n_embedded: int  # shards embedded now (the others were done before)
    n_samples: int
    n_objects: int
    seconds: float


def build_backbone(
    backbone: Backbone, weights: Path | None, *, seed: int = 0
) -> tuple[DinoViT, ModelLicence, str | None]:
    """(the ViT, the licence of its weights, their sha256): strict loading, one line on a bad file."""
    from labeler.io import sha256_file
    from labeler.train.heads.model import HeadsModel
    from labeler.train.weights import load_backbone_weights

    torch.manual_seed(seed)
    model = HeadsModel(HeadsModelConfig(backbone=backbone, task="depth"))
    if weights is None:
        lic = model_licence("embedding", "dinov2-random-init")
        return model.pretrained.eval(), lic, None
    loaded = load_backbone_weights(model, weights, backbone=backbone)
    sha = sha256_file(weights)
    family = {"dinov2": "dinov2", "depth-anything-v2": "depth-anything-v2"}.get(loaded.kind, loaded.kind)
    return model.pretrained.eval(), model_licence("embedding", family, weights, weights_sha256=sha), sha


def input_shape(width: int, height: int, input_size: int) -> tuple[int, int]:
    """(H, W) fed to the ViT: short side `input_size`, both sides rounded to multiples of 14."""
    scale = input_size / min(width, height)
    h = max(PATCH_SIZE, round(height * scale / PATCH_SIZE) * PATCH_SIZE)
    w = max(PATCH_SIZE, round(width * scale / PATCH_SIZE) * PATCH_SIZE)
    return h, w


@torch.no_grad()
def embed_images(
    vit: DinoViT, images: list[np.ndarray], masks: list[np.ndarray], size: tuple[int, int], device: str
) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """Embed a batch of (H, W, 3) uint8 images and their (H, W) uint16 instance ids.

    Returns:
        ((B, 2C) float16 sample embeddings, per image {object id: (C,) float16}).
    """
    import cv2

    h, w = size
    raw = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    x = ((raw.astype(np.float32) / np.float32(255.0) - mean) / std).astype(np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
    ((tok, cls),) = vit.intermediate_layers(t, (len(vit.blocks) - 1,))
    patches: np.ndarray = tok.float().cpu().numpy()  # (B, gh*gw, C)
    cls_np: np.ndarray = cls.float().cpu().numpy()
    samples = np.concatenate([cls_np, patches.mean(axis=1)], axis=1).astype(np.float16)
    gh, gw = h // PATCH_SIZE, w // PATCH_SIZE
    objects = [_pool_objects(p, ids, gh, gw) for p, ids in zip(patches, masks, strict=True)]
    return samples, objects


def _pool_objects(patches: np.ndarray, ids: np.ndarray, gh: int, gw: int) -> dict[int, np.ndarray]:
    import cv2

    out: dict[int, np.ndarray] = {}
    for oid in np.unique(ids[ids > 0]).tolist():
        mask = (ids == oid).astype(np.float32)
        share = cv2.resize(mask, (gw, gh), interpolation=cv2.INTER_AREA).ravel()
        if share.sum() <= 0:
            ys, xs = np.nonzero(mask)
            cy = min(gh - 1, int(ys.mean() * gh / ids.shape[0]))
            cx = min(gw - 1, int(xs.mean() * gw / ids.shape[1]))
            share = np.zeros(gh * gw, np.float32)
            share[cy * gw + cx] = 1.0
        out[int(oid)] = (share @ patches / share.sum()).astype(np.float16)
    return out


def embedding_key(fields: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def run_embed(
    dataset: str | Path,
    *,
    backbone: Backbone = "vits",
    weights: Path | None = None,
    seed: int = 0,
    input_size: int = 224,
    batch_size: int = 16,
    device: str = "cpu",
    stop_after_shards: int | None = None,
) -> EmbedRun:
    """Embed every shard not yet embedded under these settings (see the module docstring)."""
    from labeler.dataset.embeddings import begin_embeddings, write_embedding_shard
    from labeler.dataset.reader import open_dataset

    start = time.perf_counter()
    ds = open_dataset(dataset)
    vit, lic, sha = build_backbone(backbone, weights, seed=seed)
    vit.to(device)
    key = embedding_key(
        {
            "backbone": backbone,
            "weights_sha256": sha,
            "seed": seed if sha is None else None,
            "input_size": input_size,
            "dataset": ds.version,
        }
    )
    record = EmbeddingSet(
        key=key,
        backbone=backbone,
        weights=str(weights) if weights is not None else None,
        weights_sha256=sha,
        seed=seed,
        input_size=input_size,
        embed_dim=vit.embed_dim,
        dataset_version=ds.version,
        licence=lic,
    )
    done = begin_embeddings(dataset, record, ds.manifest)
    width, height = ds.manifest.calibration.image_size
    size = input_shape(width, height, input_size)
    n_now = n_samples = n_objects = 0
    for entry in ds.entries:
        if entry.shard in done:
            continue
        if stop_after_shards is not None and n_now >= stop_after_shards:
            break
        shard = ds.shard_rows(entry)
        rows = [r.row for r in shard.ok]
        sample_parts, o_rows, o_ids, o_emb = [], [], [], []
        for k in range(0, len(rows), batch_size):
            chunk = rows[k : k + batch_size]
            arrays = [ds.read_row(r, ("left", "instance_ids")) for r in chunk]
            s_emb, objs = embed_images(
                vit, [a["left"] for a in arrays], [a["instance_ids"] for a in arrays], size, device
            )
            sample_parts.append(s_emb)
            for r, per in zip(chunk, objs, strict=True):
                for o in shard.objects_of(r):
                    o_rows.append(r)
                    o_ids.append(o.id)
                    o_emb.append(per[o.id])
        c = vit.embed_dim
        samples = np.concatenate(sample_parts) if sample_parts else np.zeros((0, 2 * c), np.float16)
        objects = (
            np.asarray(o_rows, np.int64),
            np.asarray(o_ids, np.int32),
            np.stack(o_emb) if o_emb else np.zeros((0, c), np.float16),
        )
        write_embedding_shard(dataset, key, entry, rows, samples, objects)
        n_now += 1
        n_samples += len(rows)
        n_objects += len(o_ids)
    return EmbedRun(record, len(ds.entries), n_now, n_samples, n_objects, time.perf_counter() - start)
