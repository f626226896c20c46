"""What the export tests share: the tiny dataset with review decisions in force."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeler import open_dataset
from labeler.dataset.decisions import current_labels, decide


def reviewed_copy(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, str, tuple[str, int]]:
    """A copy of the tiny dataset with one sample rejected, one object of another rejected and a third
    sample accepted: (path, the rejected sample, (sample, object) rejected)."""
    from tests.train.conftest import make_tiny_dataset

    path = tmp_path_factory.mktemp(name) / "ds"
    shutil.copytree(make_tiny_dataset(tmp_path_factory.getbasetemp()), path)
    ds = open_dataset(path)
    labels = current_labels(ds)
    rejected = ds.sample_ids[0]
    obj = (ds.sample_ids[1], ds[1].objects[0].id)
    decide(path, sample_id=rejected, labels=labels[rejected], decision="reject", user="u")
    decide(path, sample_id=obj[0], labels=labels[obj[0]], decision="reject", object_id=obj[1], user="u")
    decide(path, sample_id=ds.sample_ids[2], labels=labels[ds.sample_ids[2]], decision="accept", user="u")
    return path, rejected, obj
