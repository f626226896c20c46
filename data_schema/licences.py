"""The licences of the models in a label's history: which weights made (or shaped) the data, under what terms.

Whether a company may use a label depends on every model that made it: FoundationStereo's code and weights
are non-commercial (its LICENSE §3.3), so a dataset whose depth it made is too; SAM 2 and DINOv2 are
Apache-2.0; SAM 3 comes under Meta's own SAM licence; Depth Anything V2 is Apache-2.0 only for its Small
model (Base / Large / Giant: CC-BY-NC-4.0). The table below is how labeler knows: a model family whose code
decides (FoundationStereo, and the classical backends with no learned weights) is known by its backend
name; otherwise a checkpoint is known by its published file name (`KNOWN_WEIGHTS`) or by its sha256
(`KNOWN_SHA256`: checkpoints whose bytes were checked); anything else is "unknown".

The records (`ModelLicence`) go with the dataset manifest (`Manifest.licences`), each trained run
(`RUN/licences.json`) and every export; `labeler validate` and the gallery name any non-commercial model;
`--strict-licence commercial` refuses to label or export with a model that is not known to allow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Literal

from pydantic import Field

from data_schema.backends import (
    FoundationStereoConfig,
    MaskConfig,
    Sam2Config,
    Sam3Config,
    StereoConfig,
)
from data_schema.record import Record

LICENCES_SCHEMA_VERSION: Final = 1

CommercialUse = Literal["allowed", "non-commercial", "unknown"]
StrictLicence = Literal["commercial"]
How = Literal["backend", "file name", "sha256", "inherited", "unknown"]


class LicenceTerms(Record):
    """A licence as the table knows it."""

    licence: str = Field(description='SPDX id where there is one ("Apache-2.0", "CC-BY-NC-4.0"), else a name')
    commercial: CommercialUse
    source: str = Field(description="where the terms are stated")


class ModelLicence(Record):
    """One model in a label's history and the licence of what it ran with."""

    role: str = Field(description='what the model did: "stereo", "masks", "embedding", "parent weights", ...')
    model: str = Field(description="backend or model family (foundation-stereo, sam2, dinov2, ...)")
    weights: str | None = Field(None, description="the checkpoint's file name (None: no learned weights)")
    weights_sha256: str | None = Field(None, description="the checkpoint's sha256, where it was hashed")
    licence: str
    commercial: CommercialUse
    how: How = Field(description="how the licence was found: backend name, file name, sha256, inherited")


class LicenceRecord(Record):
    """`RUN/licences.json` of a trained run and the licences of an export: every model in the history."""

    schema_version: Literal[1] = LICENCES_SCHEMA_VERSION
    models: list[ModelLicence]


APACHE = "Apache-2.0"
FOUNDATION_STEREO = LicenceTerms(
    licence="NVIDIA-FoundationStereo-NC",
    commercial="non-commercial",
    source="NVlabs/FoundationStereo LICENSE §3.3: non-commercial use only (code and weights)",
)
SGBM = LicenceTerms(
    licence=APACHE, commercial="allowed", source="OpenCV StereoSGBM (Apache-2.0 since OpenCV 4.5); no weights"
)
CLASSICAL = LicenceTerms(
    licence="labeler", commercial="allowed", source="labeler's own classical masks (no learned weights)"
)
SAM2 = LicenceTerms(licence=APACHE, commercial="allowed", source="facebookresearch/sam2 LICENSE")
SAM3 = LicenceTerms(
    licence="SAM-License",
    commercial="allowed",
    source="facebookresearch/sam3 LICENSE (Meta's SAM License: commercial use with its conditions)",
)
DINOV2 = LicenceTerms(licence=APACHE, commercial="allowed", source="facebookresearch/dinov2 LICENSE")
DEPTH_ANYTHING_SMALL = LicenceTerms(
    licence=APACHE, commercial="allowed", source="DepthAnything/Depth-Anything-V2: Small is Apache-2.0"
)
DEPTH_ANYTHING_NC = LicenceTerms(
    licence="CC-BY-NC-4.0",
    commercial="non-commercial",
    source="DepthAnything/Depth-Anything-V2: Base / Large / Giant are CC-BY-NC-4.0",
)
RANDOM_INIT = LicenceTerms(
    licence="none", commercial="allowed", source="seeded random initialisation: no pretrained weights"
)
UNKNOWN = LicenceTerms(
    licence="unknown", commercial="unknown", source="not in labeler's table (data_schema/licences.py)"
)

# Families whose code decides, whatever the weights (a fine-tune of FoundationStereo is still under its
# licence), and backends without learned weights.
BY_BACKEND: Final[dict[str, LicenceTerms]] = {
    "foundation-stereo": FOUNDATION_STEREO,
    "sgbm": SGBM,
    "classical": CLASSICAL,
    "dinov2-random-init": RANDOM_INIT,
}

# Published checkpoint file names -> (family, terms).
KNOWN_WEIGHTS: Final[dict[str, tuple[str, LicenceTerms]]] = {
    "model_best_bp2.pth": ("foundation-stereo", FOUNDATION_STEREO),
    **{
        f"{v}_hiera_{s}.pt": ("sam2", SAM2)
        for v in ("sam2", "sam2.1")
        for s in ("tiny", "small", "base_plus", "large")
    },
    "sam3.pt": ("sam3", SAM3),
    **{f"dinov2_vit{s}14_pretrain.pth": ("dinov2", DINOV2) for s in ("s", "b", "l", "g")},
    **{f"dinov2_vit{s}14_reg4_pretrain.pth": ("dinov2", DINOV2) for s in ("s", "b", "l", "g")},
    "depth_anything_v2_vits.pth": ("depth-anything-v2", DEPTH_ANYTHING_SMALL),
    **{f"depth_anything_v2_vit{s}.pth": ("depth-anything-v2", DEPTH_ANYTHING_NC) for s in ("b", "l", "g")},
    **{
        f"depth_anything_v2_metric_{d}_vits.pth": ("depth-anything-v2", DEPTH_ANYTHING_SMALL)
        for d in ("hypersim", "vkitti")
    },
    **{
        f"depth_anything_v2_metric_{d}_vit{s}.pth": ("depth-anything-v2", DEPTH_ANYTHING_NC)
        for d in ("hypersim", "vkitti")
        for s in ("b", "l")
    },
}

# Checkpoints known by their bytes (sha256 -> family, terms). Only hashes checked against the published
# files belong here; none could be checked where this table was written, so it starts empty and a
# checkpoint is known by its file name until a hash is added.
KNOWN_SHA256: Final[dict[str, tuple[str, LicenceTerms]]] = {}


def model_licence(
    role: str, model: str, weights: str | Path | None = None, *, weights_sha256: str | None = None
) -> ModelLicence:
    """The licence of one model: by backend family, then by sha256, then by file name; else unknown.

    Args:
        role: what the model did ("stereo", "masks", "embedding", "parent weights", ...).
        model: the backend name or model family.
        weights: the checkpoint path (only its file name is read: nothing is opened).
        weights_sha256: the checkpoint's sha256 where the caller has it.
    """
    name = Path(weights).name if weights is not None else None

    def made(terms: LicenceTerms, how: How) -> ModelLicence:
        return ModelLicence(
            role=role,
            model=model,
            weights=name,
            weights_sha256=weights_sha256,
            licence=terms.licence,
            commercial=terms.commercial,
            how=how,
        )

    if model in BY_BACKEND:
        return made(BY_BACKEND[model], "backend")
    if weights_sha256 is not None and weights_sha256 in KNOWN_SHA256:
        return made(KNOWN_SHA256[weights_sha256][1], "sha256")
    if name is not None and name in KNOWN_WEIGHTS and KNOWN_WEIGHTS[name][0] == model:
        return made(KNOWN_WEIGHTS[name][1], "file name")
    return made(UNKNOWN, "unknown")


def inherited(licences: Iterable[ModelLicence], *, role_prefix: str) -> list[ModelLicence]:
    """Licences carried over from an input (the dataset a run trained on), their roles prefixed."""
    return [m.model_copy(update={"role": f"{role_prefix}: {m.role}", "how": "inherited"}) for m in licences]


def non_commercial(licences: Sequence[ModelLicence]) -> list[ModelLicence]:
    return [m for m in licences if m.commercial == "non-commercial"]


def describe(m: ModelLicence) -> str:
    """`foundation-stereo (stereo, model_best_bp2.pth): NVIDIA-FoundationStereo-NC, non-commercial`."""
    what = ", ".join(p for p in (m.role, m.weights) if p)
    return f"{m.model} ({what}): {m.licence}, {m.commercial}"


def licence_summary(licences: Sequence[ModelLicence]) -> str:
    """One line for `labeler validate` and the gallery: says "non-commercial" when a model is."""
    if not licences:
        return "licences: none recorded"
    bad = non_commercial(licences)
    unknown = [m for m in licences if m.commercial == "unknown"]
    if bad:
        head = "licences: NON-COMMERCIAL — " + "; ".join(describe(m) for m in bad)
    else:
        head = "licences: commercial use allowed by every known model"
    if unknown:
        head += "; unknown: " + "; ".join(describe(m) for m in unknown)
    return head


def strict_problems(licences: Sequence[ModelLicence], strict: StrictLicence | None) -> list[str]:
    """Why `--strict-licence` refuses (empty: it does not): a non-commercial or unknown model."""
    if strict is None:
        return []
    return [
        f"{describe(m)} (--strict-licence {strict} needs every model known to allow commercial use)"
        for m in licences
        if m.commercial != "allowed"
    ]


def backend_licences(stereo: StereoConfig, masks: MaskConfig) -> list[ModelLicence]:
    """The licences of a labelling run's stereo and mask backends (their configs; nothing is opened)."""
    stereo_weights = stereo.weights if isinstance(stereo, FoundationStereoConfig) else None
    mask_weights = masks.checkpoint if isinstance(masks, Sam2Config | Sam3Config) else None
    return [
        model_licence("stereo", stereo.name, stereo_weights),
        model_licence("masks", masks.name, mask_weights),
    ]
