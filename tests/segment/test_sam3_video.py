"""`--masks sam3 --track` with the official SAM 3 video model, on the tiny random model: labeler's builder
makes the official model, its chunk run gives the official session's masks (run on a folder of JPEGs,
nothing released) with ids unique over the classes, the session's stored state stays bounded, and a
checkpoint without tracker weights or a machine without CUDA is one line. On the CPU the video model
runs under the test-only stand-ins of tests/segment/sam3_video_cpu.py (it is CUDA-only in the product)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_schema.backends import Sam3Config
from data_schema.manifest import TrackingConfig
from labeler.models.precision import cpu_autocast
from labeler.segment.sam3 import Sam3MaskBackend
from labeler.segment.sam3_model import Sam3ConfigError, Sam3WeightsError, find_bpe, without_pinned_memory
from labeler.segment.sam3_video import Sam3VideoChunk, VideoFrames, new_video_session
from labeler.segment.sam3_video_model import VideoThresholds, build_sam3_video, load_sam3_video
from labeler.testing.sam3_tiny import TINY, write_tiny_sam3
from tests.segment.sam3_video_cpu import run_video_model_on_cpu
from tests.segment.video_frames import H, W, jpeg_round_trip, moving_frames

pytest.importorskip("sam3", reason="the sam3 package (SAM 3's official modules) is not installed")

CLASSES = ("person", "box")
# Random weights score every query near 0.3: these let some (not all) detections through and start
# objects from a few of them, so that objects start, persist and end within a short chunk.
THRESHOLDS = VideoThresholds(score_threshold_detection=0.3, det_nms_thresh=0.5, new_det_thresh=0.335)


def video_config(arch: Path, video: Path) -> Sam3Config:
    """The backend's config for the tiny video checkpoint, with the test's thresholds."""
    return Sam3Config(
        checkpoint=video,
        arch=str(arch),
        classes=CLASSES,
        confidence_threshold=THRESHOLDS.score_threshold_detection,
        det_nms_thresh=THRESHOLDS.det_nms_thresh,
        new_det_thresh=THRESHOLDS.new_det_thresh,
        track_with="video_model",
    )


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(architecture JSON, checkpoint) of the tiny SAM 3 video model, seed 0."""
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3_video"), seed=0, video=True)


@pytest.fixture
def model(tiny_video, monkeypatch):
    run_video_model_on_cpu(monkeypatch)
    arch, checkpoint = tiny_video
    return load_sam3_video(str(arch), checkpoint, None, THRESHOLDS)


def in_context():
    """How the backend runs the model (bf16 autocast: the detector hands the tracker bf16 features)."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    stack.enter_context(without_pinned_memory())
    return stack


def test_builds_the_official_video_model_on_the_meta_device(monkeypatch):
    """labeler's builder at the released sizes == `sam3.model_builder.build_sam3_video_model` on the meta
    device: the same 1465 tensors with the same shapes and dtypes, the same module class at every path,
    and the same sizes and thresholds where they are plain attributes."""
    import sam3.model.decoder as decoder
    import sam3.model_builder as builder

    from labeler.segment.sam3_model import OFFICIAL

    sine = builder.PositionEmbeddingSine  # the official builder precomputes caches on "cuda"
    monkeypatch.setattr(
        builder, "PositionEmbeddingSine", lambda *a, precompute_resolution=None, **k: sine(*a, **k)
    )
    coords = decoder.TransformerDecoder._get_coords
    monkeypatch.setattr(
        decoder.TransformerDecoder, "_get_coords", staticmethod(lambda h, w, device: coords(h, w, "cpu"))
    )
    linspace = torch.linspace  # stochastic-depth rates are read with .item()
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        ours = build_sam3_video(OFFICIAL, find_bpe(None))
        official = builder.build_sam3_video_model(
            bpe_path=str(find_bpe(None)), device="meta", checkpoint_path=None, load_from_HF=False
        )

    def layout(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}

    assert next(official.parameters()).is_meta
    assert len(layout(ours)) == 1465 and layout(ours) == layout(official)
    assert [(n, type(m)) for n, m in ours.named_modules()] == [
        (n, type(m)) for n, m in official.named_modules()
    ]

    def sizes(m: torch.nn.Module) -> tuple:
        t = m.tracker
        return (
            m.image_size,
            t.image_size,
            t.backbone_stride,
            t.num_maskmem,
            t.max_obj_ptrs_in_encoder,
            t.maskmem_backbone.mask_downsampler.interpol_size,
            t.transformer.encoder.layers[0].self_attn.freqs_cis.shape,
            m.score_threshold_detection,
            m.det_nms_thresh,
            m.new_det_thresh,
            m.hotstart_delay,
            t.use_memory_selection,
        )

    assert sizes(ours) == sizes(official)
    assert not torch.is_autocast_enabled("cuda")  # the tracker's constructor left its autocast


def test_the_session_state_is_the_official_one(tmp_path, model):
    """`new_video_session` over in-memory frames has `init_state`'s keys (on a JPEG folder), and the
    frames it gives the detector are the official loader's, bit for bit."""
    frames = jpeg_round_trip(moving_frames(3), tmp_path / "jpg")
    official = model.init_state(str(tmp_path / "jpg"), offload_video_to_cpu=True)
    ours = new_video_session(model, frames)
    assert set(ours) == set(official)
    assert (ours["orig_height"], ours["orig_width"], ours["num_frames"]) == (H, W, 3)
    want = official["input_batch"].img_batch
    got = ours["input_batch"].img_batch
    assert isinstance(got, VideoFrames) and len(got) == len(want) == 3
    for t in range(3):
        assert got[t].dtype == want[t].dtype == torch.float16
        assert torch.equal(got[t], want[t])
    assert [s.text_ids.tolist() for s in ours["input_batch"].find_inputs] == [
        s.text_ids.tolist() for s in official["input_batch"].find_inputs
    ]


def official_run(model, folder: Path) -> dict[str, dict[int, dict[int, tuple[np.ndarray, float]]]]:
    """The official session over the JPEG folder, its own API only: {class: {frame: {id: (mask, score)}}}."""
    out: dict[str, dict[int, dict[int, tuple[np.ndarray, float]]]] = {}
    state = model.init_state(str(folder), offload_video_to_cpu=True)
    for name in CLASSES:
        model.add_prompt(state, frame_idx=0, text_str=name)  # resets the state: a fresh session
        out[name] = {}
        for t, res in model.propagate_in_video(state, start_frame_idx=0):
            out[name][t] = {
                int(o): (m, float(p))
                for o, m, p in zip(res["out_obj_ids"], res["out_binary_masks"], res["out_probs"], strict=True)
                if m.any()
            }
    return out


def assert_same_objects(ours: list, theirs: dict) -> dict[tuple[str, int], int]:
    """Per frame and class, the official session's objects are ours: mask IoU >= 0.99, same score, one
    chunk id per (class, session id) that no other object shares; returns that id map."""
    chunk_id: dict[tuple[str, int], int] = {}
    for t, got in enumerate(ours):
        want = [(name, o, m, p) for name in CLASSES for o, (m, p) in theirs[name][t].items()]
        assert len(got) == len(want), t
        assert list(got.scores) == sorted(got.scores, reverse=True)
        for name, obj, mask, prob in want:
            rows = [
                k
                for k in range(len(got))
                if got.class_names[k] == name
                and chunk_id.get((name, obj), got.track_ids[k]) == got.track_ids[k]
                and (got.masks[k] & mask).sum() / max((got.masks[k] | mask).sum(), 1) >= 0.99
            ]
            assert rows, (t, name, obj)
            chunk_id.setdefault((name, obj), got.track_ids[rows[0]])
            assert got.scores[rows[0]] == pytest.approx(prob, abs=1e-6)
    assert len(set(chunk_id.values())) == len(chunk_id)  # unique over the classes too
    return chunk_id


def test_same_masks_as_the_official_video_model(tmp_path, model):
    """A chunk longer than the tracker's reach (4 frames in the tiny arch) and the hot-start delay, so that
    releasing old state could change a mask: per class the official session's objects, masks and scores
    on every frame, each object under one chunk id that no other object (of either class) shares."""
    n = 24
    frames = jpeg_round_trip(moving_frames(n), tmp_path / "jpg")
    stderr = sys.stderr
    with in_context():
        chunk = Sam3VideoChunk(model, CLASSES)
        ours = chunk.run(frames)
        assert sys.stderr is stderr  # the progress bars' redirection is undone
        theirs = official_run(model, tmp_path / "jpg")
    assert len(ours) == n
    ids = assert_same_objects(ours, theirs)
    assert all(sum(c == name for c, _ in ids) >= 2 for name in CLASSES)  # several objects of each class
    lengths: dict[int, int] = {}
    for got in ours:
        for tid in got.track_ids or ():
            lengths[tid] = lengths.get(tid, 0) + 1
    assert max(lengths.values()) >= 5  # objects were carried over frames, not only re-detected
    # state was released on the way (and changed no mask), and what stayed was bounded
    assert chunk.released_frames > 0 and chunk.stored_frames <= model.tracker.max_obj_ptrs_in_encoder


@pytest.mark.gpu
def test_on_cuda_the_backend_gives_the_official_sessions_masks(tmp_path, tiny_video):
    """No stand-ins: the product path on CUDA (bf16 autocast, session state on the GPU) against the
    official session on the same model, its own API on the JPEG folder under the same autocast."""
    arch, video = tiny_video
    config = video_config(arch, video)
    frames = jpeg_round_trip(moving_frames(12), tmp_path / "jpg")
    backend = Sam3MaskBackend(config, device="cuda")
    ours = backend.track_masks(frames, tracking=TrackingConfig())
    assert not torch.is_autocast_enabled("cuda")  # nothing left autocasting after the call
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        theirs = official_run(backend.video_model, tmp_path / "jpg")
    assert_same_objects(ours, theirs)
    assert sum(len(m) for m in ours) > 0


def test_stored_state_stays_bounded_over_a_long_chunk(model):
    """Ten times the tiny tracker's 4-frame reach and more than twice the 15-frame hot-start delay: per
    tracker state at most the frames its memory can still pick; the per-frame notes (masks, scores) stay
    within twice the hot-start delay, not the chunk's length."""
    frames = moving_frames(40)
    with in_context():
        chunk = Sam3VideoChunk(model, CLASSES[:1])
        out = chunk.run(frames)
    assert len(out) == 40 and sum(len(m) for m in out[-10:]) > 0  # objects still tracked at the end
    assert 0 < chunk.stored_frames <= model.tracker.max_obj_ptrs_in_encoder
    assert 0 < chunk.stored_notes <= 2 * (model.hotstart_delay + 1)


def test_checkpoint_without_tracker_weights_is_one_line(tiny_sam3, tiny_video, monkeypatch, tmp_path):
    run_video_model_on_cpu(monkeypatch)
    arch, image_only = tiny_sam3
    backend = Sam3MaskBackend(Sam3Config(checkpoint=image_only, arch=str(arch), classes=CLASSES))
    with pytest.raises(Sam3WeightsError, match="no 'tracker.' weights") as err:
        backend.track_masks(moving_frames(2), tracking=TrackingConfig())
    assert "\n" not in str(err.value) and "--sam3-checkpoint" in str(err.value)
    with pytest.raises(Sam3WeightsError, match="no 'tracker.' weights"):  # kept, not reloaded
        backend.track_masks(moving_frames(2), tracking=TrackingConfig())
    # a config that asks for the video model finds out before any frame (the run's backend check)
    with pytest.raises(Sam3WeightsError, match="no 'tracker.' weights.*pass --sam3-checkpoint"):
        Sam3MaskBackend(
            Sam3Config(checkpoint=image_only, arch=str(arch), classes=CLASSES, track_with="video_model")
        )
    # a tracker of another size: one line naming the differing tensors
    _, video = tiny_video
    other = tmp_path / "other.json"
    other.write_text(TINY.model_copy(update={"tracker_mem_dim": 8}).model_dump_json())
    with pytest.raises(Sam3WeightsError, match=r"does not match the .* video model \(.*wrong shape") as err:
        load_sam3_video(str(other), video, None, THRESHOLDS)
    assert "\n" not in str(err.value)


def test_the_image_backend_reads_a_video_checkpoint(tiny_sam3, tiny_video):
    """A release checkpoint holds the tracker and the tracker's neck too: the image model takes its part."""
    arch, image_only = tiny_sam3
    _, video = tiny_video
    image = Sam3MaskBackend(Sam3Config(checkpoint=video, arch=str(arch), classes=CLASSES)).model
    blob = torch.load(video, map_location="cpu", weights_only=True)["model"]
    for k, v in image.state_dict().items():
        assert torch.equal(v, blob[f"detector.{k}"])


def test_on_the_cpu_the_video_model_is_refused_in_one_line(tiny_video):
    arch, video = tiny_video
    backend = Sam3MaskBackend(Sam3Config(checkpoint=video, arch=str(arch), classes=CLASSES))
    with pytest.raises(Sam3ConfigError, match=r"runs on CUDA only .*sam3_tracker_base.py:657") as err:
        backend.track_masks(moving_frames(2), tracking=TrackingConfig())
    assert "\n" not in str(err.value)


def test_the_backend_tracks_through_the_video_model(tiny_video, monkeypatch):
    """`Sam3MaskBackend.track_masks` (the pipeline's call) == the chunk run on the same model and config
    thresholds, under the CPU stand-in of the backend's bf16 autocast."""
    run_video_model_on_cpu(monkeypatch)
    arch, video = tiny_video
    config = video_config(arch, video)
    frames = moving_frames(6)
    with cpu_autocast():
        got = Sam3MaskBackend(config).track_masks(frames, tracking=TrackingConfig())
    with in_context():
        want = Sam3VideoChunk(load_sam3_video(str(arch), video, None, THRESHOLDS), CLASSES).run(frames)
    assert [m.track_ids for m in got] == [m.track_ids for m in want]
    assert [m.class_names for m in got] == [m.class_names for m in want]
    assert all(np.array_equal(a.masks, b.masks) for a, b in zip(got, want, strict=True))
    assert sum(len(m) for m in got) > 0
