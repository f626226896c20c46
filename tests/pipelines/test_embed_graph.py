"""`labeler embed` on Dask: one load → model → write chain per shard, the GPU resource on the model task
only, content-derived keys; a distributed run equals the in-process one bit for bit; a shard that fails
is a recorded failure while the others commit, and the next run embeds it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from data_schema.curation import EmbedConfig
from labeler import open_dataset
from labeler.cli.main import app
from tests.review.test_embed_curate import copies_dataset, tiny_embed  # noqa: F401 — the fixture


def _graph(ds_path, **overrides):
    from labeler.review.embed import input_shape
    from pipelines.embed import _record, build_embed_graph

    cfg = EmbedConfig(dataset=ds_path, backbone="tiny", input_size=42, progress=False, **overrides)
    ds = open_dataset(ds_path)
    return build_embed_graph(cfg, _record(cfg, ds.version), ds.entries, input_shape(128, 96, 42))


def test_one_chain_per_shard_and_the_gpu_on_the_model_task_only(copies_dataset):  # noqa: F811
    writes = _graph(copies_dataset, gpus=(0,))
    assert sorted(writes) == [0, 1]  # 7 samples, 4 per shard
    for w in writes.values():
        layers = w.__dask_graph__().layers
        kinds = sorted(name.split("-")[1] for name in layers)
        assert kinds == ["load", "model", "write"]
        for name, layer in layers.items():
            asked = dict(layer.annotations or {})
            if name.startswith("embed-model-"):
                assert asked == {"retries": 1, "resources": {"GPU": 1}}
            else:
                assert "resources" not in asked
    again = _graph(copies_dataset, gpus=(0,))
    assert [w.key for w in again.values()] == [w.key for w in writes.values()]  # content-derived keys
    cpu = _graph(copies_dataset)
    assert all(
        "resources" not in dict(layer.annotations or {})
        for w in cpu.values()
        for layer in w.__dask_graph__().layers.values()
    )


def test_a_distributed_run_equals_the_in_process_one(copies_dataset, tmp_path):  # noqa: F811
    from labeler.dataset.embeddings import load_embeddings

    a, b = tmp_path / "sync", tmp_path / "threads"
    shutil.copytree(copies_dataset, a)
    shutil.copytree(copies_dataset, b)
    tiny_embed(a, batch_size=3, scheduler="sync")
    run = tiny_embed(b, batch_size=3, scheduler="threads", workers=2)
    assert (run.n_embedded, run.n_samples, run.failed) == (2, 7, {})
    ea, eb = load_embeddings(a), load_embeddings(b)
    assert ea is not None and eb is not None
    for name in ("rows", "samples", "object_rows", "object_ids", "objects"):
        np.testing.assert_array_equal(getattr(ea, name), getattr(eb, name))


def test_a_failed_shard_is_recorded_the_others_commit_and_the_next_run_embeds_it(
    copies_dataset,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    from labeler.dataset.embeddings import embedding_index, read_embedding_record
    from labeler.dataset.validate import validate_dataset
    from labeler.review import embed as embed_module

    ds_path = tmp_path / "ds"
    shutil.copytree(copies_dataset, ds_path)
    prepare = embed_module.prepare_shard

    def failing(ds, entry, size):
        if entry.shard == 1:
            raise ValueError("row 5: left differs from its digest")
        return prepare(ds, entry, size)

    monkeypatch.setattr(embed_module, "prepare_shard", failing)
    args = ["embed", str(ds_path), "--backbone", "tiny", "--input-size", "42", "--scheduler", "sync"]
    res = CliRunner().invoke(app, args)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 1 and len(errors) == 1, res.output
    assert "shard 1 not embedded (ValueError: row 5: left differs from its digest)" in errors[0]
    record = read_embedding_record(ds_path)
    assert record is not None and sorted(embedding_index(ds_path, record.key)) == [0]
    assert any("shard 1 has no embeddings" in p for p in validate_dataset(ds_path))
    monkeypatch.setattr(embed_module, "prepare_shard", prepare)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "1 of 2 shards embedded now (3 samples" in res.output, res.output
    assert validate_dataset(ds_path) == []


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--backbone", "vits"], "no weights for --backbone vits"),
        (["--input-size", "50"], "--input-size: Input should be a multiple of 14"),
        (["--gpu", "x"], "--gpu x: expected CUDA ids"),
        (["--scheduler", "nonsense"], "--scheduler: String should match pattern"),
    ],
)
def test_bad_flags_are_one_line(copies_dataset, flags, says):  # noqa: F811
    res = CliRunner().invoke(app, ["embed", str(copies_dataset), "--backbone", "tiny", *flags])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and says in errors[0], res.output
