"""train-stereo items from a dataset written by the pipeline: augmentation keeps the stereo geometry valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeler.train.stereo.data import AugmentSettings, StereoAugment, StereoDataset
from labeler.train.stereo.losses import photometric_error


def _photometric(item: dict[str, torch.Tensor], shift: float = 0.0) -> float:
    """Mean photometric error of the item's clean pair at its target disparity (+ shift), valid pixels."""
    left, right = (item[k].float()[None] / 255 for k in ("left_clean", "right_clean"))
    d = item["disparity"][None] + shift
    err, valid = photometric_error(left, right, d)
    valid &= item["weight"][None] > 0
    return float(err[valid].mean())


def test_items_keep_the_pair_and_its_disparity_together(stereo_dataset):
    """Scaled, cropped, swapped-and-flipped items: the target disparity still maps the left crop onto the
    right one (photometric error far below a 3 px shift's), and scales with the image."""
    ds_path, truth = stereo_dataset
    aug = AugmentSettings(enabled=True, min_scale=1.2, max_scale=1.5, flip_prob=0.5, jitter=0.2)
    ds = StereoDataset(ds_path, ["pair_000", "pair_001"], train=True, crop=(64, 96), augment=aug, seed=1)
    swaps = 0
    for epoch in range(4):
        for i in range(len(ds)):
            item = ds[(epoch, i)]
            a = StereoAugment.draw(
                np.random.default_rng([1, epoch, i]), min_scale=1.2, max_scale=1.5, flip_prob=0.5, jitter=0.2
            )
            swaps += a.swap_flip
            assert item["left"].shape == (3, 64, 96) and item["disparity"].shape == (64, 96)
            assert item["left"].dtype == torch.uint8 and not torch.equal(item["left"], item["left_clean"])
            valid = item["weight"] > 0
            assert valid.float().mean() > 0.5 and float(item["disparity"][valid].min()) > 0
            # the wall is at 6 px, the box at 16 px before scaling
            # (SGBM's own left-right check lets a few box-edge pixels through at other levels: at most 2 %)
            levels = np.round(item["disparity"][valid].numpy() / a.scale)
            on_truth = np.isin(levels, [5.0, 6.0, 7.0, 15.0, 16.0, 17.0]).mean()
            assert on_truth >= 0.98, (epoch, i, on_truth, np.unique(levels))
            assert _photometric(item) < 0.4 * _photometric(item, 3.0)
    assert 0 < swaps < 8
    assert torch.equal(ds[(2, 1)]["left"], ds[(2, 1)]["left"])  # the draw depends on (seed, epoch, i) only


def test_heldout_items_are_whole_images_at_the_eval_scale(stereo_dataset):
    from labeler import open_dataset
    from labeler.train.stereo.truth import truth_source

    ds_path, truth_dir = stereo_dataset
    reader = open_dataset(ds_path)
    truth = truth_source(truth_dir, reader.manifest.calibration)
    ds = StereoDataset(ds_path, ["pair_002"], train=False, eval_scale=0.5, truth=truth)
    item = ds[0]
    assert item["left"].shape == (3, 48, 64) and item["disparity_full"].shape == (96, 128)
    assert torch.equal(item["truth"], torch.from_numpy(np.load(truth_dir / "pair_002.npy")))
    sample = reader[reader.sample_ids.index("pair_002")]
    assert np.array_equal(item["disparity_full"].numpy(), sample.disparity_px, equal_nan=True)


def test_bad_truth_is_one_line(stereo_dataset, tmp_path):
    from labeler import open_dataset
    from labeler.errors import LabelerError
    from labeler.train.stereo.truth import truth_source

    calib = open_dataset(stereo_dataset[0]).manifest.calibration
    with pytest.raises(LabelerError, match=r"--truth .*: neither a `labeler demo` folder"):
        truth_source(tmp_path, calib)
    np.save(tmp_path / "pair_000.npy", np.zeros((10, 10), np.float32))
    source = truth_source(tmp_path, calib)
    assert source is not None
    with pytest.raises(
        LabelerError, match=r"pair_000.npy: truth of shape \(10, 10\), the dataset's images are 128x96"
    ):
        source.disparity("pair_000")
