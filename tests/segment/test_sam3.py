"""sam3: the tiny SAM 3's checkpoint round trip and one-line errors, parity with the official predictor,
and class names through `labeler run` into the tables, previews, COCO and the manifest (a stand-in model
that returns fixed named masks, so the chain is checked on known objects)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_schema.backends import Sam3Config
from labeler.errors import LabelerError
from labeler.segment import sam3 as sam3_backend
from labeler.segment.base import Masks
from labeler.segment.sam3 import Sam3MaskBackend
from labeler.segment.sam3_model import Sam3ConfigError, Sam3WeightsError, load_sam3
from labeler.testing.sam3_tiny import TINY
from labeler.testing.scenes import object_scene
from tests.conftest import identity_calibration_yaml, write_plane_pairs

CLASSES = ("person", "forklift")


def test_checkpoint_round_trip_is_strict_and_exact(tiny_sam3, tmp_path):
    arch, checkpoint = tiny_sam3
    model = load_sam3(str(arch), checkpoint, None)
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    state = model.state_dict()
    assert set(blob) == {f"detector.{k}" for k in state}
    assert all(torch.equal(blob[f"detector.{k}"], v) for k, v in state.items())
    # tracker keys of a release checkpoint are not the image model's: ignored, not an error
    torch.save({"model": {**blob, "tracker.maskmem_tpos_enc": torch.zeros(3)}}, tmp_path / "with_tracker.pt")
    load_sam3(str(arch), tmp_path / "with_tracker.pt", None)


def test_wrong_checkpoint_is_one_line(tiny_sam3, tmp_path):
    arch, checkpoint = tiny_sam3
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    blob.pop("detector.transformer.decoder.query_embed.weight")
    torch.save({"model": blob}, tmp_path / "short.pt")
    with pytest.raises(Sam3WeightsError, match=r"1 missing: transformer\.decoder\.query_embed") as err:
        load_sam3(str(arch), tmp_path / "short.pt", None)
    assert "\n" not in str(err.value) and "--sam3-checkpoint" in str(err.value)
    other = tmp_path / "other.json"  # the tiny weights against another architecture: shapes differ
    other.write_text(TINY.model_copy(update={"queries": 8}).model_dump_json())
    with pytest.raises(Sam3WeightsError, match=r"wrong shape .*query_embed.weight \[16, 32\] vs \[8, 32\]"):
        load_sam3(str(other), checkpoint, None)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Sam3WeightsError, match="not a readable torch checkpoint"):
        load_sam3(str(arch), tmp_path / "junk.pt", None)
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(Sam3WeightsError, match="no 'detector.' weights"):
        load_sam3(str(arch), tmp_path / "foreign.pt", None)
    with pytest.raises(Sam3WeightsError, match="pass --sam3-checkpoint PATH to sam3.pt"):
        Sam3MaskBackend(Sam3Config(classes=CLASSES))


def test_missing_vocabulary_is_one_line(tiny_sam3, tmp_path, monkeypatch):
    arch, checkpoint = tiny_sam3
    with pytest.raises(Sam3ConfigError, match="no such BPE vocabulary file; pass --sam3-bpe-path"):
        Sam3MaskBackend(
            Sam3Config(checkpoint=checkpoint, arch=str(arch), classes=CLASSES, bpe_path="nope.gz")
        )
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # open_clip not installed
    with pytest.raises(Sam3ConfigError, match="pip install open_clip_torch") as err:
        Sam3MaskBackend(Sam3Config(checkpoint=checkpoint, arch=str(arch), classes=CLASSES))
    assert "\n" not in str(err.value)


def test_classes_flag_is_validated():
    assert Sam3Config(classes=" person, cardboard box ").classes == ("person", "cardboard box")
    for bad, match in ((None, "needs the classes"), ("person,,box", "non-empty"), ("a,a", "must differ")):
        with pytest.raises(ValueError, match=match):
            Sam3Config(classes=bad)


def test_agrees_with_the_official_predictor(tiny_sam3):
    """Same model, same prompts: the official `Sam3Processor` (set_image, then set_text_prompt per class)
    and the backend (batched, one grounding pass) give the same masks and scores."""
    from PIL import Image

    from labeler.segment.sam3_model import without_pinned_memory
    from labeler.testing.sam3_tiny import official_processor

    arch, checkpoint = tiny_sam3
    backend = Sam3MaskBackend(
        Sam3Config(checkpoint=checkpoint, arch=str(arch), classes=CLASSES, confidence_threshold=0.27)
    )
    image = object_scene(seed=3).left
    ours = backend.masks(image)
    processor = official_processor(backend.model, resolution=TINY.resolution, confidence_threshold=0.27)
    want_masks, want_scores, want_names = [], [], []
    with without_pinned_memory():
        state = processor.set_image(Image.fromarray(image))
        for name in CLASSES:
            out = processor.set_text_prompt(name, state)
            want_masks.append(out["masks"][:, 0].numpy())
            want_scores.append(out["scores"].numpy())
            want_names += [name] * len(out["scores"])
    scores = np.concatenate(want_scores)
    order = np.argsort(-scores, kind="stable")
    masks = np.concatenate(want_masks)[order]
    keep = masks.reshape(len(masks), -1).any(1)
    assert 0 < len(ours) == keep.sum() < 2 * TINY.queries  # the threshold keeps some, not all
    np.testing.assert_allclose(ours.scores, scores[order][keep], atol=1e-5)
    assert ours.class_names == tuple(np.array(want_names)[order][keep])
    differ = np.count_nonzero(ours.masks != masks[keep])
    assert differ <= 1e-3 * masks[keep].size


class _FixedNamedMasks:
    """Stand-in for the loaded model: per image, a forklift (score 0.9) over the left half of the box
    scene's square region and a person (0.8) over the right half, named by the config's classes."""

    def __init__(self, config: Sam3Config, device: str) -> None:
        self.classes = config.classes

    def detect(self, images: list[np.ndarray]) -> list[Masks]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            masks = np.zeros((2, h, w), bool)
            masks[0, h // 4 : 3 * h // 4, w // 4 : w // 2] = True
            masks[1, h // 4 : 3 * h // 4, w // 2 : 3 * w // 4] = True
            scores = np.array([0.9, 0.8], np.float32)
            out.append(Masks(masks, scores, np.ones(2, np.float32), class_names=("forklift", "person")))
        return out


def test_class_names_through_labeler_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from labeler import open_dataset
    from labeler.cli.main import app
    from labeler.export.coco import export_coco
    from labeler.review.diff import diff_datasets

    monkeypatch.setattr(sam3_backend, "_Loaded", _FixedNamedMasks)
    raw = write_plane_pairs(tmp_path / "raw", 2, 128, 96, seed=4, suffix_layout=True)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    (tmp_path / "sam3.pt").write_bytes(b"stand-in: never read")
    out = tmp_path / "ds"
    args = ["run", str(raw), "--calib", str(calib), "--out", str(out), "--scheduler", "sync"]
    args += [
        "--masks",
        "sam3",
        "--classes",
        "person,forklift",
        "--sam3-checkpoint",
        str(tmp_path / "sam3.pt"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    from labeler.dataset.validate import validate_dataset

    assert validate_dataset(out) == []
    ds = open_dataset(out)
    assert ds.manifest.classes == ("person", "forklift")
    assert ds.manifest.masks.name == "sam3" and ds.manifest.masks.classes == ("person", "forklift")
    objects = ds.objects.to_table().to_pylist()
    assert len(objects) == 4
    assert sorted((o["row"], o["id"], o["class_name"]) for o in objects) == [
        (r, i, n) for r in (0, 1) for i, n in ((1, "forklift"), (2, "person"))
    ]
    coco = json.loads(export_coco(out, tmp_path / "coco.json").read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "person", "supercategory": "object"},
        {"id": 2, "name": "forklift", "supercategory": "object"},
    ]
    by_instance = {(a["image_id"], a["instance_id"]): a["category_id"] for a in coco["annotations"]}
    assert by_instance == {(r + 1, 1): 2 for r in (0, 1)} | {(r + 1, 2): 1 for r in (0, 1)}
    pages = " ".join(p.read_text() for p in (out / "gallery").glob("*.html"))
    assert "forklift 1: " in pages and "person 1: " in pages and " m" in pages
    from labeler.review.listing import ListQuery, ReviewData

    review = ReviewData(out)
    assert review.listing(ListQuery(class_name="person")).total == 2
    assert review.listing(ListQuery(class_name="pallet")).total == 0  # no such object
    assert review.listing(ListQuery(class_name="all")).total == 2
    report = diff_datasets(out, out, tmp_path / "diff", pictures=0)
    assert report.class_counts_a == report.class_counts_b == {"person": 2, "forklift": 2}
    assert "person 2 → 2 · forklift 2 → 2" in (tmp_path / "diff" / "index.html").read_text()


def test_class_agnostic_datasets_keep_one_category(tmp_path):
    """No classes: the manifest says None and COCO keeps the single "object" category."""
    from labeler.export.coco import CATEGORY, categories
    from labeler.previews import object_names

    assert object_names([2, 1, 3], [None, None, None]) == {1: "1", 2: "2", 3: "3"}
    assert object_names([2, 1, 3], ["box", "person", "box"]) == {1: "person 1", 2: "box 1", 3: "box 2"}

    class _M:
        classes = None

    assert categories(_M()) == [CATEGORY]  # type: ignore[arg-type]


def test_errors_are_labeler_errors():
    assert issubclass(Sam3WeightsError, LabelerError) and issubclass(Sam3ConfigError, LabelerError)


def test_builds_the_official_model_on_the_meta_device(monkeypatch):
    """labeler's builder at the released sizes == `sam3.model_builder.build_sam3_image_model`, built on the
    meta device (shapes and dtypes without memory or init, ~3 s): the same 1134 tensors with the same shapes
    and dtypes, and the same module class at every path. The slow test below builds both for real."""
    import sam3.model.decoder as decoder
    import sam3.model_builder as builder

    from labeler.segment.sam3_model import OFFICIAL, build_sam3, find_bpe

    sine = builder._create_position_encoding
    monkeypatch.setattr(builder, "_create_position_encoding", lambda precompute_resolution=None: sine(None))
    coords = decoder.TransformerDecoder._get_coords
    monkeypatch.setattr(
        decoder.TransformerDecoder, "_get_coords", staticmethod(lambda h, w, device: coords(h, w, "cpu"))
    )
    # the stochastic-depth rates are read with .item(), which a meta tensor cannot answer
    linspace = torch.linspace
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    # the official builder ends with .to(device); a meta model stays where it is
    monkeypatch.setattr(builder, "_setup_device_and_mode", lambda model, device, eval_mode: model)
    with torch.device("meta"):
        ours = build_sam3(OFFICIAL, find_bpe(None))
        official = builder.build_sam3_image_model(
            bpe_path=str(find_bpe(None)), device="meta", checkpoint_path=None, load_from_HF=False
        )

    def layout(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}

    assert next(official.parameters()).is_meta
    assert len(layout(ours)) == 1134
    assert layout(ours) == layout(official)
    classes = [[(n, type(m)) for n, m in model.named_modules()] for model in (ours, official)]
    assert classes[0] == classes[1]
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in official.parameters()) and 8.0e8 < n_params < 9.0e8


@pytest.mark.slow
def test_builds_the_official_model(monkeypatch):
    """labeler's builder at the released sizes == `sam3.model_builder.build_sam3_image_model`: the same
    tensors with the same shapes (840 M parameters each, random init on the CPU: ~30 s, ~7 GB)."""
    import sam3.model.decoder as decoder
    import sam3.model_builder as builder

    from labeler.segment.sam3_model import OFFICIAL, build_sam3, find_bpe

    # the official builder precomputes two caches on "cuda"; on a CPU machine build them on the CPU
    sine = builder._create_position_encoding
    monkeypatch.setattr(builder, "_create_position_encoding", lambda precompute_resolution=None: sine(None))
    coords = decoder.TransformerDecoder._get_coords
    monkeypatch.setattr(
        decoder.TransformerDecoder, "_get_coords", staticmethod(lambda h, w, device: coords(h, w, "cpu"))
    )
    ours = {k: tuple(v.shape) for k, v in build_sam3(OFFICIAL, find_bpe(None)).state_dict().items()}
    official = builder.build_sam3_image_model(
        bpe_path=str(find_bpe(None)), device="cpu", checkpoint_path=None, load_from_HF=False
    )
    assert ours == {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert len(ours) == 1134
