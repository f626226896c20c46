"""Embeddings and curation: `labeler embed` (one DINOv2 embedding per sample and per object) and `labeler
curate` (near-duplicate groups, a diverse subset, outliers), and the named selections that trainers and
exports take (`--selection NAME`).

```
DATASET/
  embeddings/embeddings.json      EmbeddingSet: the model, its licence, sizes, the dataset version
  embeddings/index.jsonl          one EmbeddingShard per line: a shard's embeddings are done (commit point)
  embeddings/samples.zarr         (N, 2C) float16, one row per dataset row: [CLS token | mean patch token]
  embeddings/objects/s-<shard>.parquet  one row per object: `row`, `id`, `embedding` (list<float16>, C:
                                  its mask-pooled patch tokens, see EmbeddingSet.object_pooling)
  selections/<name>.json          Selection: sample ids, how they were chosen
  curation.json                   CurationReport of the last `labeler curate`
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, model_validator

from data_schema.heads import Backbone
from data_schema.licences import ModelLicence
from data_schema.record import Record

CURATION_SCHEMA_VERSION: Final = 1
SELECTION_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class EmbedConfig(Record):
    """`labeler embed DATASET`: one Dask task chain per dataset shard (load → model → write), on the same
    kind of cluster as labelling."""

    dataset: Path
    backbone: Backbone = "vits"
    weights: Path | None = Field(
        None, description="DINOv2 / Depth Anything V2 / FoundationStereo checkpoint (None: random-init)"
    )
    random_init: bool = Field(
        False, description="a seeded random-init ViT (tests and demos; `tiny` always is)"
    )
    seed: int = Field(0, description="the random-init seed")
    input_size: int = Field(
        224, ge=14, le=2016, multiple_of=14, description="short image side fed to the ViT"
    )
    batch_size: int = Field(16, ge=1, le=4096, description="images per forward pass")
    gpus: tuple[Annotated[int, Field(ge=0)], ...] = Field(
        (), description="CUDA device ids; one worker per GPU, the model task takes its GPU"
    )
    workers: int | None = Field(None, ge=1, description="CPU workers (default: cores)")
    scheduler: str | None = Field(
        None,
        pattern=r"^(sync|threads|processes|[a-z]+://\S+)$",
        description="sync | threads | processes, or a running Dask scheduler's address (tcp://host:port)",
    )
    progress: bool = True

    @model_validator(mode="after")
    def _weights_or_random_init(self) -> EmbedConfig:
        if self.random_init and self.weights is not None:
            raise ValueError(f"--weights {self.weights} with --random-init: choose one")
        if self.weights is None and not self.random_init and self.backbone != "tiny":
            raise ValueError(
                f"no weights for --backbone {self.backbone}: pass --weights FILE, or --random-init"
            )
        return self


class EmbeddingSet(Record):
    """`DATASET/embeddings/embeddings.json`: how the embeddings were made. A run with another `key` (model,
    weights, input size, dataset version) starts the embeddings again."""

    schema_version: Literal[1] = CURATION_SCHEMA_VERSION
    key: str = Field(description="sha256 of the settings below and the dataset version")
    backbone: Backbone
    weights: str | None = Field(description="checkpoint path as given (None: --random-init)")
    weights_sha256: str | None = None
    seed: int = Field(description="the random-init seed (same seed, same weights)")
    input_size: int = Field(ge=14, description="short image side fed to the ViT, px, multiple of 14")
    embed_dim: int = Field(ge=1, description="C, the ViT's token width; embeddings are 2C wide")
    dataset_version: str = Field(description="the dataset version they were computed for")
    licence: ModelLicence
    sample_layout: Literal["cls+mean_patch"] = Field(
        "cls+mean_patch", description="a sample's row: [final-norm CLS token | mean of its patch tokens]"
    )
    object_pooling: Literal["mask_mean"] = Field(
        "mask_mean",
        description="an object's row: the mean of the final-norm patch tokens, each weighted by the share of "
        "its patch the object's mask covers (C wide)",
    )
    dtype: Literal["float16"] = "float16"


class EmbeddingShard(Record):
    """One line of `embeddings/index.jsonl`: a dataset shard whose embeddings are written."""

    shard: int = Field(ge=0)
    key: str
    rows: list[int] = Field(description="the dataset rows (ok samples) embedded")
    n_objects: int = Field(ge=0)
    samples_sha256: str = Field(description="sha256 of the shard's sample embeddings (float16 C order)")
    objects_sha256: str = Field(description="sha256 of its objects' (row, id, embedding) in table order")


class Selection(Record):
    """`DATASET/selections/<name>.json`: a named set of samples (`--selection NAME`)."""

    schema_version: Literal[1] = CURATION_SCHEMA_VERSION
    name: str = Field(pattern=SELECTION_NAME_PATTERN)
    sample_ids: list[str]
    how: str = Field(description='what chose them ("k-center greedy, 50 of 400, cosine distance", ...)')
    dataset_version: str


class DuplicateGroup(Record):
    """Samples whose embeddings are within the threshold of one another (single linkage)."""

    sample_ids: list[str] = Field(min_length=2)
    min_cosine: float = Field(description="the least cosine similarity of the links that join the group")


class Outlier(Record):
    sample_id: str
    score: float = Field(description="1 - mean cosine similarity to its k nearest neighbours")


class CurationReport(Record):
    """`DATASET/curation.json`: what `labeler curate` found and the selections it wrote."""

    schema_version: Literal[1] = CURATION_SCHEMA_VERSION
    dataset_version: str
    embedding_key: str
    n_samples: int = Field(ge=0)
    duplicate_cosine: float = Field(gt=0, le=1, description="cosine similarity that makes a near-duplicate")
    groups: list[DuplicateGroup]
    diverse: list[str] = Field(description="the k-center greedy subset, in the order chosen")
    outliers: list[Outlier]
    selections: list[str] = Field(description="the selections written")
