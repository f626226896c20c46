"""`--masks sam2 --track` on the tiny random SAM2 (CPU): the chunk tracker's masks equal the official video
predictor's run over the whole video (a folder of JPEGs, nothing released), keyframes come on schedule and
when coverage drops, objects end after their gap, and the session's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schema.manifest import TrackingConfig
from labeler.segment.sam2_amg import Sam2MaskBackend
from labeler.segment.sam2_video import Sam2ChunkTracker, mask_iou, memory_window, new_session
from labeler.testing.sam2_tiny import tiny_sam2_config
from tests.segment.video_frames import H, W, jpeg_round_trip, moving_frames


@pytest.fixture(scope="module")
def backend(tiny_sam2) -> Sam2MaskBackend:
    return Sam2MaskBackend(tiny_sam2_config(tiny_sam2, points_per_side=2))


@pytest.fixture(scope="module")
def one_prompt(tiny_sam2) -> Sam2MaskBackend:
    """One point prompt: at most 3 objects, so long chunks stay quick on a CPU."""
    return Sam2MaskBackend(tiny_sam2_config(tiny_sam2, points_per_side=1))


def official_video_predictor(tiny_sam2):
    """The official builder (`build_sam2_video_predictor`, hydra compose over the tiny config's folder)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labeler.segment.sam2_model import import_sam2

    import_sam2()
    from sam2.build_sam import build_sam2_video_predictor

    config, checkpoint = tiny_sam2
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config).parent.resolve()), version_base=None):
        model = build_sam2_video_predictor(Path(config).stem, str(checkpoint), device="cpu")
    GlobalHydra.instance().clear()
    return model


def official_masks(
    predictor, folder: Path, tracker: Sam2ChunkTracker, n: int
) -> dict[int, dict[int, np.ndarray]]:
    """The official session over the JPEG folder, given the same objects at the same keyframes:
    {frame: {object id: mask}} for every frame after each object's first."""
    import warnings

    state = predictor.init_state(video_path=str(folder))
    got: dict[int, dict[int, np.ndarray]] = {}
    keys = sorted(tracker.added)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, key in enumerate(keys):
            for obj, mask in tracker.added[key].items():
                predictor.add_new_mask(state, key, obj, mask)
            end = keys[k + 1] if k + 1 < len(keys) else n - 1
            for f, ids, logits in predictor.propagate_in_video(
                state, start_frame_idx=key, max_frame_num_to_track=end - key
            ):
                if f == end and k + 1 < len(keys):
                    pass  # the next keyframe's frame: propagated here, its new objects added next
                got.setdefault(f, {}).update({o: (logits[i, 0] > 0).numpy() for i, o in enumerate(ids)})
    return got


def test_the_official_builder_and_ours_make_the_same_model(tiny_sam2, backend):
    official = official_video_predictor(tiny_sam2)
    assert type(official) is type(backend.model)
    ours, theirs = backend.model.state_dict(), official.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in ours)
    for attr in ("fill_hole_area", "binarize_mask_from_pts_for_mem_enc", "non_overlap_masks"):
        assert getattr(official, attr) == getattr(backend.model, attr), attr


def test_the_session_state_has_the_official_keys(tmp_path, tiny_sam2, backend):
    frames = jpeg_round_trip(moving_frames(2), tmp_path / "jpg")
    official = backend.model.init_state(video_path=str(tmp_path / "jpg"))
    ours = new_session(backend.model, frames)
    assert ours.keys() == official.keys()
    assert (ours["video_height"], ours["video_width"], ours["num_frames"]) == (H, W, 2)
    # frames are prepared exactly as the official loader prepares them
    np.testing.assert_array_equal(ours["images"][1].numpy(), official["images"][1].numpy())


@pytest.mark.parametrize("every", [100, 4], ids=["one-keyframe", "keyframe-every-4"])
def test_same_masks_as_the_official_video_predictor(tmp_path, tiny_sam2, backend, every):
    n = 10
    frames = jpeg_round_trip(moving_frames(n), tmp_path / "jpg")
    tracking = TrackingConfig(
        keyframe_every=every, min_coverage=0, max_gap_frames=1000, max_keyframe_misses=1000
    )
    tracker = Sam2ChunkTracker(backend, tracking=tracking)
    ours = tracker.run(frames)
    assert len(ours) == n
    assert tracker.keyframes == list(range(0, n, every))
    assert tracker.added[0]  # the first keyframe's objects
    theirs = official_masks(official_video_predictor(tiny_sam2), tmp_path / "jpg", tracker, n)
    compared = 0
    for f, masks in enumerate(ours):
        assert masks.track_ids is not None
        want = {o: m for o, m in theirs[f].items() if m.any()}
        assert set(masks.track_ids) == set(want), f
        for obj, mask in zip(masks.track_ids, masks.masks, strict=True):
            assert mask_iou(mask[None], want[obj][None])[0, 0] >= 0.99, (f, obj)
            compared += 1
    assert compared >= n


def test_memory_stays_bounded_over_a_long_chunk(one_prompt):
    n = 40
    tracker = Sam2ChunkTracker(
        one_prompt, tracking=TrackingConfig(keyframe_every=10, min_coverage=0, max_keyframe_misses=1)
    )
    tracker.run(moving_frames(n))
    assert len(tracker.keyframes) == 4
    assert tracker.added[0]
    window = memory_window(one_prompt.model)
    assert window < n // 2
    assert tracker.stored_frames <= window  # the official session would hold n - 1


def test_keyframes_on_schedule_and_when_coverage_falls(one_prompt):
    frames = moving_frames(9)
    every = Sam2ChunkTracker(one_prompt, tracking=TrackingConfig(keyframe_every=3, min_coverage=0))
    out = every.run(frames)
    assert every.keyframes == [0, 3, 6] and len(out) == 9
    assert all(m.track_ids is not None and len(m.track_ids) == len(m) for m in out)
    # an object no keyframe's automatic masks confirm twice in a row has ended by then, and is not output
    for obj, at in every.ended.items():
        assert at in every.keyframes[2:] and all(obj not in (m.track_ids or ()) for m in out[at:])
    # a threshold no propagation can meet: a keyframe on every frame
    always = Sam2ChunkTracker(one_prompt, tracking=TrackingConfig(keyframe_every=1000, min_coverage=1.0))
    always.run(frames[:4])
    assert always.keyframes == [0, 1, 2, 3] or always._key_area == 0


def test_objects_whose_masks_stay_empty_end(one_prompt, monkeypatch):
    """The bookkeeping over the official calls: a propagation that returns empty masks from frame 2 on
    (what the predictor does for an object it has lost) ends every object after max_gap_frames."""
    from labeler.segment import sam2_video

    tracker = Sam2ChunkTracker(
        one_prompt, tracking=TrackingConfig(keyframe_every=1000, min_coverage=0, max_gap_frames=2)
    )
    real = tracker._propagate

    def losing(state, start, end):
        for pos, found in real(state, start, end):
            yield pos, (found if pos < 2 else sam2_video._empty((H, W)))

    monkeypatch.setattr(tracker, "_propagate", losing)
    out = tracker.run(moving_frames(8))
    first = set(tracker.added[0])
    assert first and set(out[1].track_ids or ()) <= first
    # last seen at frame 1, a gap of 2 frames allowed: ended after frame 4; then nothing is left to carry
    assert tracker.ended == {obj: 4 for obj in out[1].track_ids or ()}
    assert all(len(m) == 0 for m in out[2:])
