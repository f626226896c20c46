"""`sam2` masks with a tiny random SAM2 (CPU): contract, parity with the official generator, id map and
objects, RLE, determinism, strict checkpoint loading and its one-line errors, the pipeline end to end."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_schema.backends import Sam2Config
from labeler.depth import instance_map, object_records
from labeler.segment.base import MASK_BACKENDS
from labeler.segment.sam2_amg import Sam2MaskBackend, fill_small_regions
from labeler.segment.sam2_model import Sam2ConfigError, Sam2WeightsError
from labeler.testing.sam2_tiny import official_generator, tiny_sam2_config, write_tiny_sam2
from labeler.testing.scenes import object_scene

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backend(tiny_sam2) -> Sam2MaskBackend:
    return Sam2MaskBackend(tiny_sam2_config(tiny_sam2))


@pytest.fixture(scope="module")
def scene():
    return object_scene()


def official_masks(model, config: Sam2Config, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official generator's non-empty masks and predicted IoUs, sorted by IoU (stable)."""
    records = [r for r in official_generator(model, config).generate(image) if r["area"] > 0]
    iou = np.array([r["predicted_iou"] for r in records], np.float32)
    order = np.argsort(-iou, kind="stable")
    masks = (
        np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *image.shape[:2]), bool)
    )
    return masks[order], iou[order]


# ------------------------------------------------------------------------------------------ results


def test_masks_come_out_with_the_contract(backend, scene):
    out = backend.masks(scene.left, disparity_px=scene.disparity_px)
    n = len(out)
    assert n > 10  # 16 prompts x 3 masks, thresholds open
    assert out.masks.shape == (n, 96, 128) and out.masks.dtype == np.bool_
    assert out.scores.dtype == np.float32 and out.stability.dtype == np.float32
    assert np.all((out.scores >= 0) & (out.scores <= 1)) and np.all(np.diff(out.scores) <= 0)
    assert np.all((out.stability >= 0) & (out.stability <= 1))
    assert out.masks.reshape(n, -1).any(axis=1).all()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"crop_n_layers": 1, "box_nms_thresh": 0.9, "pred_iou_thresh": 0.5},
        {"multimask_output": False, "points_per_batch": 5},
    ],
    ids=["open", "crops", "single-mask"],
)
def test_same_masks_as_the_official_generator(tiny_sam2, scene, overrides):
    cfg = tiny_sam2_config(tiny_sam2, **overrides)
    ours = Sam2MaskBackend(cfg)
    out = ours.masks(scene.left)
    want, iou = official_masks(ours.model, cfg, scene.left)
    assert len(out) == len(want) > 0
    np.testing.assert_array_equal(out.masks, want)
    np.testing.assert_allclose(out.scores, np.clip(iou, 0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"crop_n_layers": 1, "box_nms_thresh": 0.9, "pred_iou_thresh": 0.5}],
    ids=["open", "crops"],
)
def test_a_batch_of_images_gives_each_image_its_own_masks(tiny_sam2, scene, overrides):
    """masks_many encodes the images in one encoder batch; each result is that image's masks alone."""
    backend = Sam2MaskBackend(tiny_sam2_config(tiny_sam2, **overrides))
    images = [scene.left, np.ascontiguousarray(scene.left[:, ::-1]), np.roll(scene.left, 17, axis=1)]
    batched = backend.masks_many(images)
    for image, got in zip(images, batched, strict=True):
        alone = backend.masks(image)
        assert len(got) == len(alone) > 0
        # float32 batched convolutions may round differently in the last bits: masks agree to a few pixels
        assert np.abs(got.masks.astype(int) - alone.masks).sum() <= 0.001 * alone.masks.size
        np.testing.assert_allclose(got.scores, alone.scores, atol=1e-4)


@pytest.mark.parametrize(
    "overrides",
    [{"crop_n_layers": 1}, {"multimask_output": False}, {"min_mask_region_area": 20}],
    ids=["crops", "single-mask", "host-fill"],
)
def test_the_object_is_found_on_every_path(tiny_sam2, scene, overrides):
    """The colour stand-in network under the official thresholds: crops (uncropped masks, NMS across
    crops), one mask per prompt, and the SciPy hole fill all keep the object (measured IoU 0.90-0.95)."""
    from labeler.testing.conformance import best_iou
    from labeler.testing.sam2_colour import use_colour_network

    config, checkpoint = tiny_sam2
    backend = Sam2MaskBackend(
        Sam2Config(checkpoint=checkpoint, config=str(config), points_per_side=8, **overrides)
    )
    use_colour_network(backend.model)
    out = backend.masks(scene.left)
    assert best_iou(out.masks, scene.instance_ids == 1) > 0.85


def test_ids_and_objects_agree(backend, scene):
    out = backend.masks(scene.left)
    ids, source = instance_map(out.masks, out.scores)
    depth = np.full(ids.shape, 2.0, np.float32)
    depth[:, :10] = np.nan
    objects = object_records(ids, depth, out.scores[source], out.stability[source])
    present = {int(i) for i in np.unique(ids) if i}
    assert present == {o.id for o in objects} == set(range(1, len(source) + 1))
    covered = out.masks.any(axis=0)
    assert np.array_equal(ids > 0, covered)  # every covered pixel has an owner
    # overlaps: a pixel goes to the highest-scoring mask covering it
    best = np.where(out.masks, out.scores[:, None, None], -1.0).max(axis=0)
    owner_score = out.scores[source][np.maximum(ids.astype(int) - 1, 0)]
    np.testing.assert_array_equal(owner_score[covered], best[covered])
    for o in objects:
        k = ids == o.id
        assert o.area_px == int(k.sum())
        assert out.masks[source[o.id - 1]][k].all()  # an id only holds pixels of its own mask
        assert o.score == pytest.approx(float(out.scores[source[o.id - 1]]))
        assert o.stability == pytest.approx(float(out.stability[source[o.id - 1]]))
        assert o.depth_m_median == pytest.approx(2.0) or o.valid_fraction == 0
        x, y, w, h = o.bbox
        ys, xs = np.nonzero(k)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_same_seed_same_masks(tmp_path, tiny_sam2, backend, scene):
    again = write_tiny_sam2(tmp_path / "again", seed=0)
    other = write_tiny_sam2(tmp_path / "other", seed=1)
    a = backend.masks(scene.left)
    b = Sam2MaskBackend(tiny_sam2_config(again)).masks(scene.left)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
    c = Sam2MaskBackend(tiny_sam2_config(other)).masks(scene.left)
    assert c.masks.shape != a.masks.shape or not np.array_equal(c.masks, a.masks)


def test_min_mask_region_area_uses_the_fallback(tiny_sam2, scene):
    cfg = tiny_sam2_config(tiny_sam2, min_mask_region_area=25)
    backend = Sam2MaskBackend(cfg)
    out = backend.masks(scene.left)
    plain = Sam2MaskBackend(tiny_sam2_config(tiny_sam2)).masks(scene.left)
    assert len(out) > 0 and not (
        out.masks.shape == plain.masks.shape and np.array_equal(out.masks, plain.masks)
    )


def test_fill_small_regions_semantics():
    import torch

    logits = np.full((1, 1, 16, 16), -5.0, np.float32)
    logits[0, 0, 2:12, 2:12] = 5.0  # a 10x10 object ...
    logits[0, 0, 5:7, 5:7] = -5.0  # ... with a 4 px hole
    logits[0, 0, 14, 14] = 5.0  # a 1 px island
    logits[0, 0, 13, 15] = 5.0  # diagonal neighbour: 8-connected, the island is 2 px
    out = fill_small_regions(torch.from_numpy(logits), 4).numpy()[0, 0]
    assert (out[5:7, 5:7] == 10.0).all()  # hole filled
    assert out[14, 14] == -10.0 and out[13, 15] == -10.0  # island removed
    assert (out[2:12, 2:5] == 5.0).all() and out[0, 0] == -5.0  # large regions untouched
    assert np.array_equal(
        fill_small_regions(torch.from_numpy(logits), 1).numpy()[0, 0][5:7, 5:7], logits[0, 0, 5:7, 5:7]
    )


def test_bad_inputs_raise(backend, scene):
    with pytest.raises(ValueError, match="uint8"):
        backend.masks(scene.left.astype(np.float32))
    with pytest.raises(ValueError, match="disparity_px must be"):
        backend.masks(scene.left, disparity_px=scene.disparity_px[:, :-1])


# ------------------------------------------------------------------------------------------ loading


def test_registry_builds_it_and_loads_the_checkpoint_strictly(tiny_sam2):
    import torch

    cfg = tiny_sam2_config(tiny_sam2)
    backend = MASK_BACKENDS.get("sam2")(cfg, device="cpu")
    assert isinstance(backend, Sam2MaskBackend)
    saved = torch.load(tiny_sam2[1], map_location="cpu", weights_only=True)["model"]
    state = backend.model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert not backend.model.training


def test_building_does_not_move_the_callers_rng(tiny_sam2):
    import torch

    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    Sam2MaskBackend(tiny_sam2_config(tiny_sam2)).model  # noqa: B018 — loads the model
    assert torch.equal(torch.rand(3), want)


def test_the_model_is_loaded_once_and_not_pickled(backend, scene):
    backend.masks(scene.left)
    model = backend.model
    backend.masks(scene.left)
    assert backend.model is model
    clone = pickle.loads(pickle.dumps(backend))
    assert clone._state is None and len(pickle.dumps(backend)) < 10_000


def test_renamed_keys_fail_with_one_line(tmp_path, tiny_sam2):
    import torch

    state = torch.load(tiny_sam2[1], map_location="cpu", weights_only=True)["model"]
    renamed = {k.replace("sam_mask_decoder.", "mask_decoder."): v for k, v in state.items()}
    bad = tmp_path / "renamed.pt"
    torch.save({"model": renamed}, bad)
    with pytest.raises(Sam2WeightsError) as err:
        Sam2MaskBackend(tiny_sam2_config((tiny_sam2[0], bad))).model  # noqa: B018
    text = str(err.value)
    assert "\n" not in text and "--sam2-checkpoint" in text and str(bad) in text
    assert "missing: sam_mask_decoder." in text and "unexpected: mask_decoder." in text


def test_checkpoint_of_another_model_fails_naming_the_expected_file(tiny_sam2):
    """The tiny weights with the released t config: shapes differ; the error names sam2.1_hiera_tiny.pt."""
    with pytest.raises(Sam2WeightsError) as err:
        Sam2MaskBackend(Sam2Config(checkpoint=tiny_sam2[1], config="sam2.1_hiera_t")).model  # noqa: B018
    text = str(err.value)
    assert "\n" not in text and "wrong shape (checkpoint vs model)" in text and "sam2.1_hiera_tiny.pt" in text
    assert "--sam2-checkpoint" in text


@pytest.mark.parametrize("content", [{"state": {}}, "garbage"], ids=["no-model-key", "not-torch"])
def test_foreign_files_fail_with_one_line(tmp_path, tiny_sam2, content):
    import torch

    bad = tmp_path / "bad.pt"
    if content == "garbage":
        bad.write_bytes(b"not a checkpoint at all")
    else:
        torch.save(content, bad)
    with pytest.raises(Sam2WeightsError, match="--sam2-checkpoint") as err:
        Sam2MaskBackend(tiny_sam2_config((tiny_sam2[0], bad))).model  # noqa: B018
    assert "\n" not in str(err.value)


def test_missing_checkpoint_fails_at_construction(tmp_path):
    with pytest.raises(Sam2WeightsError) as err:
        Sam2MaskBackend(Sam2Config())
    assert "--sam2-checkpoint" in str(err.value) and "sam2.1_hiera_small.pt" in str(err.value)
    with pytest.raises(
        Sam2WeightsError, match="no such checkpoint file.*--sam2-checkpoint.*sam2.1_hiera_large.pt"
    ):
        Sam2MaskBackend(Sam2Config(checkpoint=tmp_path / "nope.pt", config="sam2.1_hiera_l"))


def test_unknown_config_fails(tmp_path):
    with pytest.raises(Sam2ConfigError, match="--sam2-config 'sam2.1_hiera_xl'"):
        Sam2MaskBackend(Sam2Config(checkpoint=tmp_path / "x.pt", config="sam2.1_hiera_xl"))


def test_config_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Sam2Config(pred_iou_thresh=1.5)
    with pytest.raises(ValidationError):
        Sam2Config(points_per_sid=16)


def test_import_is_light_and_building_leaves_no_hydra_state(tiny_sam2):
    code = (
        "import sys\n"
        "import labeler.segment\n"
        "assert 'torch' not in sys.modules and 'sam2' not in sys.modules, 'heavy import'\n"
        "import numpy as np\n"
        "from data_schema.backends import Sam2Config\n"
        "from labeler.segment.sam2_amg import Sam2MaskBackend\n"
        f"cfg = Sam2Config(config={str(tiny_sam2[0])!r}, checkpoint={str(tiny_sam2[1])!r}, "
        "points_per_side=2)\n"
        "Sam2MaskBackend(cfg).masks(np.zeros((32, 32, 3), np.uint8))\n"
        "from hydra.core.global_hydra import GlobalHydra\n"
        "assert not GlobalHydra.instance().is_initialized(), 'hydra global state leaked'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]


# ------------------------------------------------------------------------------------------ pipeline


def test_labeler_run_with_sam2(tmp_path, tiny_sam2):
    """`labeler run --masks sam2` on raw synthetic pairs: valid dataset, stability recorded per object,
    masks back exactly from the COCO export."""
    from pycocotools.coco import COCO

    from data_schema.commands import PseudoLabelConfig
    from labeler import open_dataset
    from labeler.dataset.validate import validate_dataset
    from labeler.export.coco import export_coco
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(tmp_path / "raw", 2, suffix_layout=True)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    cfg = PseudoLabelConfig(
        inputs=tmp_path / "raw",
        rectify=True,
        calib=calib,
        out=tmp_path / "ds",
        masks=tiny_sam2_config(tiny_sam2),
        scheduler="sync",
        progress=False,
    )
    res = run_pseudo_label(cfg)
    manifest = res.manifest
    assert manifest.counts.ok == 2 and not res.new_failures
    assert validate_dataset(tmp_path / "ds") == []
    assert manifest.masks == cfg.masks and "sam2" in manifest.library_versions
    ds = open_dataset(tmp_path / "ds")
    coco = COCO(str(export_coco(tmp_path / "ds", tmp_path / "coco.json")))
    for i in range(len(ds)):
        s = ds[i]
        assert s.objects and all(o.stability is not None and 0 <= o.stability <= 1 for o in s.objects)
        assert {int(k) for k in np.unique(s.instance_ids) if k} == {o.id for o in s.objects}
        (img,) = [im for im in coco.dataset["images"] if im["sample_id"] == s.sample_id]
        ids = np.zeros_like(s.instance_ids)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            ids[coco.annToMask(ann).astype(bool)] = ann["instance_id"]
            assert ann["stability"] is not None
        np.testing.assert_array_equal(ids, s.instance_ids)


def test_cli_flags_reach_the_manifest(tmp_path, tiny_sam2):
    from typer.testing import CliRunner

    from labeler.cli.main import app
    from labeler.dataset.manifest import load_manifest
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(tmp_path / "rect", 1)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    base = [
        "pseudo-label",
        str(tmp_path / "rect"),
        "--calib",
        str(calib),
        "--scheduler",
        "sync",
        "--no-previews",
        "--masks",
        "sam2",
    ]
    flags = [
        "--sam2-config",
        str(tiny_sam2[0]),
        "--sam2-points-per-side",
        "4",
        "--sam2-points-per-batch",
        "8",
        "--sam2-pred-iou-thresh",
        "0",
        "--sam2-stability-score-thresh",
        "0",
        "--sam2-box-nms-thresh",
        "1",
        "--sam2-min-mask-region-area",
        "3",
        "--sam2-crop-n-layers",
        "0",
    ]
    res = CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "ds"), "--sam2-checkpoint", str(tiny_sam2[1]), *flags]
    )
    assert res.exit_code == 0, res.output
    masks = load_manifest(tmp_path / "ds").masks
    assert isinstance(masks, Sam2Config) and masks.checkpoint == tiny_sam2[1]
    assert (
        masks.points_per_side,
        masks.points_per_batch,
        masks.min_mask_region_area,
        masks.box_nms_thresh,
    ) == (4, 8, 3, 1.0)
    assert masks.crop_nms_thresh == Sam2Config().crop_nms_thresh  # flags not given keep the official defaults

    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "none"), *flags])  # no --sam2-checkpoint
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "--sam2-checkpoint" in res.output and not (tmp_path / "none").exists()


def test_wrong_weights_fail_every_sample_without_reloading(tmp_path, tiny_sam2, scene, monkeypatch):
    from labeler.segment import sam2_model

    calls = []
    real = sam2_model.load_sam2
    monkeypatch.setattr(sam2_model, "load_sam2", lambda *a, **k: calls.append(1) or real(*a, **k))
    backend = Sam2MaskBackend(Sam2Config(checkpoint=tiny_sam2[1], config="sam2.1_hiera_t"))
    for _ in range(2):
        with pytest.raises(Sam2WeightsError):
            backend.masks(scene.left)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------ CUDA


@pytest.mark.gpu
def test_cuda_float32_matches_the_cpu(tiny_sam2, scene):
    cpu = Sam2MaskBackend(tiny_sam2_config(tiny_sam2)).masks(scene.left)
    gpu = Sam2MaskBackend(tiny_sam2_config(tiny_sam2, mixed_precision=False), device="cuda").masks(scene.left)
    assert len(gpu) == len(cpu)
    inter = (gpu.masks & cpu.masks).sum(axis=(1, 2))
    union = (gpu.masks | cpu.masks).sum(axis=(1, 2))
    assert float(np.mean(inter / union)) > 0.98


@pytest.mark.gpu
def test_cuda_bf16_contract(tiny_sam2, scene):
    out = Sam2MaskBackend(tiny_sam2_config(tiny_sam2), device="cuda").masks(scene.left)
    assert len(out) > 0 and out.masks.dtype == np.bool_ and np.all(np.diff(out.scores) <= 0)


@pytest.mark.gpu
@pytest.mark.skipif(
    not os.environ.get("SAM2_CHECKPOINT"),
    reason="set SAM2_CHECKPOINT (and SAM2_CONFIG) to a released checkpoint on disk",
)
def test_released_checkpoint_finds_the_object(scene):
    from labeler.testing.conformance import best_iou

    cfg = Sam2Config(
        checkpoint=os.environ["SAM2_CHECKPOINT"],
        config=os.environ.get("SAM2_CONFIG", "sam2.1_hiera_s"),
        points_per_side=16,
    )
    out = Sam2MaskBackend(cfg, device="cuda").masks(scene.left)
    assert best_iou(out.masks, scene.instance_ids == 1) >= 0.7
