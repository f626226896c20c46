"""Classes in the heads: a fusion model trained on a dataset labelled by `--masks sam3 --classes ...`
(a stand-in model that returns fixed named masks) learns the class map, `labeler predict` names its
objects ("forklift 1 at 1.52 m"), and a model of one class list does not train on another's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schema.backends import Sam3Config
from labeler.errors import LabelerError
from labeler.segment import sam3 as sam3_backend
from labeler.segment.base import Masks

CLASSES = ("person", "forklift")


class _HalvesNamed:
    """Per image, a forklift over the left half of the centre and a person over the right half."""

    def __init__(self, config: Sam3Config, device: str) -> None:
        pass

    def detect(self, images: list[np.ndarray]) -> list[Masks]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            masks = np.zeros((2, h, w), bool)
            masks[0, h // 4 : 3 * h // 4, w // 8 : w // 2] = True
            masks[1, h // 4 : 3 * h // 4, w // 2 : 7 * w // 8] = True
            scores = np.array([0.9, 0.8], np.float32)
            out.append(Masks(masks, scores, np.ones(2, np.float32), class_names=("forklift", "person")))
        return out


@pytest.fixture(scope="module")
def named_dataset(tmp_path_factory) -> Path:
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = tmp_path_factory.mktemp("sam3-heads")
    mp = pytest.MonkeyPatch()
    mp.setattr(sam3_backend, "_Loaded", _HalvesNamed)
    try:
        write_plane_pairs(root / "pairs", 6, 128, 96, seed=5)
        (root / "sam3.pt").write_bytes(b"stand-in: never read")
        run_pseudo_label(
            PseudoLabelConfig(
                inputs=root / "pairs",
                calib=identity_calibration_yaml(root / "calib.yaml", 128, 96),
                out=root / "ds",
                masks=Sam3Config(checkpoint=root / "sam3.pt", classes=CLASSES),
                scheduler="sync",
                previews=False,
                progress=False,
            )
        )
    finally:
        mp.undo()
    return root / "ds"


def test_instance_classes_by_mean_probability():
    from labeler.train.heads.predictor import instance_classes

    ids = np.array([[1, 1, 2, 2], [1, 1, 2, 0]], np.uint16)
    prob = np.zeros((3, 2, 4), np.float32)
    prob[0] = 0.2  # no object
    prob[1, :, :2], prob[2, :, :2] = 0.7, 0.1  # id 1: class 1 ("person")
    prob[1, :, 2:], prob[2, :, 2:] = 0.3, 0.5  # id 2: class 2 ("forklift")
    assert instance_classes(ids, prob, CLASSES) == ("person", "forklift")
    assert instance_classes(np.zeros((2, 4), np.uint16), prob, CLASSES) == ()


@pytest.mark.slow
def test_heads_learn_the_class_map_and_predict_names_objects(named_dataset, tmp_path):
    """30 epochs of the tiny fusion model (~30 s on a free CPU core)."""
    import cv2
    import torch

    from data_schema.commands import PredictConfig
    from labeler.dataset.reader import open_dataset
    from labeler.io import write_png
    from labeler.predict import predict_images, summary_line
    from labeler.train import train_heads
    from labeler.train.heads.data import normalise, resized_shape
    from labeler.train.heads.predictor import HeadsPredictor
    from tests.train.conftest import tiny_train_config, torch_threads

    run = tmp_path / "run"
    with torch_threads(1):
        train_heads(tiny_train_config(named_dataset, run, epochs=30, lr=5e-3, heldout_frac=0.0))
    predictor = HeadsPredictor.from_run(run, checkpoint="last")
    assert predictor.model_config.classes == CLASSES and predictor.model.class_head is not None
    ds = open_dataset(named_dataset)
    left = ds[0].left
    h, w = left.shape[:2]
    rh, rw = resized_shape(h, w, predictor.model_config.input_size)
    with torch.no_grad():
        x = normalise(cv2.resize(left, (rw, rh), interpolation=cv2.INTER_AREA))
        logits = predictor.model(x[None])["class_logits"][0]
    # the class map at the two objects' centres: forklift (2) left, person (1) right
    assert int(logits[:, rh // 2, rw * 5 // 16].argmax()) == 2
    assert int(logits[:, rh // 2, rw * 11 // 16].argmax()) == 1
    images = tmp_path / "images"
    write_png(images / "frame_0042.png", left)
    res = predict_images(PredictConfig(inputs=images, run=run, out=tmp_path / "pred", checkpoint="last"))
    objects = res.images[0].objects
    assert objects and all(o.class_name in CLASSES for o in objects)
    line = summary_line(res.images[0])
    first = objects[0]
    assert line.startswith(f"frame_0042.png: {first.class_name} 1 at ") and " m" in line


def test_class_head_training_learns_the_class_map(named_dataset, tmp_path):
    """The fast version of the test above: 12 epochs at a higher rate; the seg + class loss falls by 40 % and
    the class map names both objects at their centres."""
    import csv

    import cv2
    import torch

    from labeler.dataset.reader import open_dataset
    from labeler.train import train_heads
    from labeler.train.heads.data import normalise, resized_shape
    from labeler.train.heads.predictor import HeadsPredictor
    from tests.train.conftest import tiny_train_config, torch_threads

    run = tmp_path / "run"
    with torch_threads(1):
        train_heads(tiny_train_config(named_dataset, run, epochs=12, lr=5e-3, heldout_frac=0.0, previews=0))
    epochs = list(csv.DictReader((run / "metrics.csv").open()))
    first, last = float(epochs[0]["train_seg"]), float(epochs[-1]["train_seg"])
    assert last < 0.6 * first, (first, last)
    predictor = HeadsPredictor.from_run(run, checkpoint="last")
    left = open_dataset(named_dataset)[0].left
    h, w = left.shape[:2]
    rh, rw = resized_shape(h, w, predictor.model_config.input_size)
    with torch.no_grad():
        logits = predictor.model(normalise(cv2.resize(left, (rw, rh), interpolation=cv2.INTER_AREA))[None])
    classes = logits["class_logits"][0]
    assert int(classes[:, rh // 2, rw * 5 // 16].argmax()) == 2  # forklift, left
    assert int(classes[:, rh // 2, rw * 11 // 16].argmax()) == 1  # person, right
    assert int(classes[:, rh // 10, rw // 2].argmax()) == 0  # no object above them


def test_one_class_list_per_model(named_dataset, tmp_path):
    """A config naming other classes than its dataset's is refused in one line, as is training a
    class-naming model on a class-agnostic dataset's labels."""
    from data_schema.commands import HeadsModelConfig
    from labeler.train import train_heads
    from labeler.train.heads.data import HeadsDataset
    from tests.train.conftest import TINY_INPUT, make_tiny_dataset, tiny_train_config

    model = HeadsModelConfig(backbone="tiny", input_size=TINY_INPUT, classes=("pallet",))
    with pytest.raises(
        LabelerError, match=r"its classes \['person', 'forklift'\] differ from the model's"
    ) as e:
        train_heads(tiny_train_config(named_dataset, tmp_path / "a", model=model))
    assert "\n" not in str(e.value)
    with pytest.raises(LabelerError, match=r"none \(class-agnostic\) differ from the model's \['person'"):
        HeadsDataset(make_tiny_dataset(tmp_path), [], input_size=TINY_INPUT, train=True, classes=CLASSES)
