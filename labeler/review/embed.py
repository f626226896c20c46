"""What `labeler embed DATASET` computes: one DINOv2 embedding per sample and per object.

A sample's embedding is its rectified left image's final-norm CLS token and the mean of its patch tokens,
concatenated (2C wide, float16); an object's is the mean of the patch tokens its mask covers, each weighted
by the share of its patch the mask covers (C wide); an object smaller than a patch takes the patch under
its centre. The image is resized so its short side is `input_size` px and both sides are multiples of 14.

The backbone is the heads' DINOv2 (`--backbone vits --weights dinov2_vits14_pretrain.pth`, or a Depth
Anything V2 / FoundationStereo checkpoint's ViT) or a seeded random-init one (`--random-init`; `tiny` is
always random-init). A shard is read and prepared on the CPU (`prepare_shard`: images resized, each
object's patch shares), embedded `batch_size` images per forward (`embed_shard`, the model's part), then
written (labeler/dataset/embeddings.py); pipelines/embed.py runs these as Dask tasks, one chain per shard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_schema.heads import Backbone, HeadsModelConfig
from data_schema.licences import ModelLicence, model_licence
from data_schema.manifest import ShardEntry
from labeler.models.dinov2_dpt import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, DinoViT


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


def prepare_images(
    images: list[np.ndarray], masks: list[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """The CPU half of `embed_images`: the images resized to `size` and each object's patch shares.

    Args:
        images: (H, W, 3) uint8 each. masks: (H, W) uint16 instance ids each (0: no object).
        size: (h, w) fed to the ViT, multiples of 14.

    Returns:
        ((B, h, w, 3) uint8, per image {object id: (h/14 * w/14,) float32 share of each patch it covers}).
    """
    import cv2

    h, w = size
    raw = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    return raw, [_patch_shares(ids, h // PATCH_SIZE, w // PATCH_SIZE) for ids in masks]


@torch.no_grad()
def embed_prepared(
    vit: DinoViT, raw: np.ndarray, shares: list[dict[int, np.ndarray]], device: str
) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """The model half of `embed_images`: one forward of the (B, h, w, 3) uint8 batch, then each object's
    share-weighted mean of the patch tokens.

    Returns:
        ((B, 2C) float16 sample embeddings, per image {object id: (C,) float16}).
    """
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    x = ((raw.astype(np.float32) / np.float32(255.0) - mean) / std).astype(np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).to(device)
    ((tok, cls),) = vit.intermediate_layers(t, (len(vit.blocks) - 1,))
    patches: np.ndarray = tok.float().cpu().numpy()  # (B, gh*gw, C)
    cls_np: np.ndarray = cls.float().cpu().numpy()
    samples = np.concatenate([cls_np, patches.mean(axis=1)], axis=1).astype(np.float16)
    objects = [
        {oid: (share @ p / share.sum()).astype(np.float16) for oid, share in per.items()}
        for p, per in zip(patches, shares, strict=True)
    ]
    return samples, objects


def embed_images(
    vit: DinoViT, images: list[np.ndarray], masks: list[np.ndarray], size: tuple[int, int], device: str
) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """Embed a batch of (H, W, 3) uint8 images and their (H, W) uint16 instance ids.

    Returns:
        ((B, 2C) float16 sample embeddings, per image {object id: (C,) float16}).
    """
    return embed_prepared(vit, *prepare_images(images, masks, size), device)


def _patch_shares(ids: np.ndarray, gh: int, gw: int) -> dict[int, np.ndarray]:
    """{object id: (gh*gw,) float32 share of each patch its mask covers}; an object smaller than a patch
    takes the patch under its centre."""
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
        out[int(oid)] = share
    return out


def embedding_key(fields: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PreparedShard:
    """A dataset shard's ok samples ready for the model (what a CPU task hands the model task)."""

    rows: list[int]  # its ok rows, in order
    raw: np.ndarray  # (n, h, w, 3) uint8, the left images resized to the model's input
    shares: list[dict[int, np.ndarray]]  # per row {object id: (h/14 * w/14,) float32 patch shares}
    objects: list[tuple[int, int]]  # (row, object id) of its objects, in the objects table's order


def prepare_shard(ds: Any, entry: ShardEntry, size: tuple[int, int]) -> PreparedShard:
    """Read a shard's ok samples (verified reads of `left` and `instance_ids`) and prepare them (CPU)."""
    shard = ds.shard_rows(entry)
    rows = [r.row for r in shard.ok]
    arrays = [ds.read_row(r, ("left", "instance_ids")) for r in rows]
    h, w = size
    if rows:
        raw, shares = prepare_images([a["left"] for a in arrays], [a["instance_ids"] for a in arrays], size)
    else:
        raw, shares = np.zeros((0, h, w, 3), np.uint8), []
    objects = [(r, o.id) for r in rows for o in shard.objects_of(r)]
    return PreparedShard(rows, raw, shares, objects)


def embed_shard(
    vit: DinoViT, prep: PreparedShard, *, batch_size: int, device: str
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The model's part: `batch_size` images per forward.

    Returns:
        ((n, 2C) float16 sample embeddings, (rows (M,) int64, ids (M,) int32, (M, C) float16) of the
        shard's objects in table order).
    """
    c = vit.embed_dim
    parts: list[np.ndarray] = []
    per_row: dict[int, dict[int, np.ndarray]] = {}
    for k in range(0, len(prep.rows), batch_size):
        s_emb, objs = embed_prepared(
            vit, prep.raw[k : k + batch_size], prep.shares[k : k + batch_size], device
        )
        parts.append(s_emb)
        per_row.update(zip(prep.rows[k : k + batch_size], objs, strict=True))
    samples = np.concatenate(parts) if parts else np.zeros((0, 2 * c), np.float16)
    emb = [per_row[r][oid] for r, oid in prep.objects]
    objects = (
        np.asarray([r for r, _ in prep.objects], np.int64),
        np.asarray([oid for _, oid in prep.objects], np.int32),
        np.stack(emb) if emb else np.zeros((0, c), np.float16),
    )
    return samples, objects
