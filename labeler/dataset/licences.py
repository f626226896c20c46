"""The licences of every model in a dataset's history: the backends that labelled it (recorded in the
manifest; read from its backend configs for datasets written before that) and the embedding model
(`labeler embed`), for `labeler validate`, the gallery, trained runs and every export."""

from __future__ import annotations

from pathlib import Path

from data_schema.licences import (
    LicenceRecord,
    ModelLicence,
    backend_licences,
    inherited,
    model_licence,
    strict_problems,
)
from data_schema.licences import StrictLicence as StrictLicence
from data_schema.manifest import Manifest
from labeler.errors import LabelerError


class LicenceError(LabelerError):
    """`--strict-licence` refused a model."""


def manifest_licences(manifest: Manifest) -> list[ModelLicence]:
    return list(manifest.licences) or backend_licences(manifest.stereo, manifest.masks)


def dataset_licences(dataset: str | Path, manifest: Manifest | None = None) -> list[ModelLicence]:
    """Every model in the dataset's history: its labelling backends, then the embedding backbone if any."""
    from labeler.dataset.embeddings import read_embedding_record
    from labeler.dataset.manifest import load_manifest

    manifest = manifest or load_manifest(dataset)
    out = manifest_licences(manifest)
    emb = read_embedding_record(dataset)
    if emb is not None:
        out.append(emb.licence)
    return out


PARENT = "parent weights"
RUN_LICENCES = "licences.json"  # RUN/licences.json of a trained run (labeler/train/engine.py)


def parent_licences(
    kind: str, weights: str | Path | None, *, weights_sha256: str | None = None
) -> list[ModelLicence]:
    """The licences of the weights a trainer starts from: the file's own (by `kind`, the checkpoint's
    family: dinov2, depth-anything-v2, foundation-stereo; by file name or sha256, data_schema/licences.py;
    `weights` None: a seeded random init, licence "none"), then, where labeler trained them (a
    `licences.json` beside the file: adapt-backbone's OUT/backbone.pth), every model in that run's history.
    """
    if weights is None:
        return [model_licence(PARENT, "dinov2-random-init")]
    out = [model_licence(PARENT, kind, weights, weights_sha256=weights_sha256)]
    beside = Path(weights).expanduser().parent / RUN_LICENCES
    if beside.is_file():
        try:
            record = LicenceRecord.model_validate_json(beside.read_text())
        except ValueError:
            raise LabelerError(
                f"{beside}: not a licence record beside {Path(weights).name}; move it away or restore it"
            ) from None
        out += inherited(record.models, role_prefix=PARENT)
    return out


def licence_record(models: list[ModelLicence]) -> LicenceRecord:
    return LicenceRecord(models=models)


def refuse(what: str, licences: list[ModelLicence], strict: StrictLicence | None) -> None:
    """Raise one line per refused model when `--strict-licence` says so."""
    problems = strict_problems(licences, strict)
    if problems:
        raise LicenceError(f"{what}: refused: " + "; ".join(problems))
