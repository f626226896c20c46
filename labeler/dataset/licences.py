"""The licences of every model in a dataset's history: the backends that labelled it (recorded in the
manifest; read from its backend configs for datasets written before that) and the embedding model
(`labeler embed`), for `labeler validate`, the gallery, trained runs and every export."""

from __future__ import annotations

from pathlib import Path

from data_schema.licences import LicenceRecord, ModelLicence, backend_licences, strict_problems
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


def licence_record(models: list[ModelLicence]) -> LicenceRecord:
    return LicenceRecord(models=models)


def refuse(what: str, licences: list[ModelLicence], strict: StrictLicence | None) -> None:
    """Raise one line per refused model when `--strict-licence` says so."""
    problems = strict_problems(licences, strict)
    if problems:
        raise LicenceError(f"{what}: refused: " + "; ".join(problems))
