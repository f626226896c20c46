"""`--masks sam3 --track` on CUDA: a sequence chunk through the official SAM 3 video model.

The model (segment/sam3_video_model.py, built at the arch's sizes) is the package's
`Sam3VideoInferenceWithInstanceInteractivity`: its detector finds every instance of the text prompt on
every frame, its tracker (SAM 2's memory attention) carries each object on, and its own heuristics
(matching detections to masklets, hot start, keep-alive, reconditioning) decide which objects start and
end. A chunk (one sequence's frames within one shard, in order) runs one session per class, since the model
takes one text prompt per session: `add_prompt(frame 0, text)` then `propagate_in_video`, the package's own
calls. Each object's id is unique over the chunk's classes and carries its class name.

Session state is ours, over in-memory frames (`new_video_session`: the keys `init_state` makes from a
folder of JPEGs, frames prepared on demand as its loader prepares them; a test checks the keys, the frames
and the masks against `init_state` on a JPEG folder). Memory stays bounded: the session keeps every
frame's tracker output, masks and per-frame notes; after each frame comes out, what no later frame can read
is released: tracker outputs older than the frames the tracker's own `frame_filter` (temporal
disambiguation) or memory window would pick next, and the yielded frame's masks and notes.

CUDA only, for three reasons in the package (sam3 0.1.4): its tracker moves memory to the GPU with hard
`.cuda()` calls on every tracked frame (`sam3/model/sam3_tracker_base.py:657,664`, in
`_prepare_memory_conditioned_features`); the video model opens tracker sessions without
`offload_state_to_cpu`, which stores their state on `torch.device("cuda")`
(`sam3/model/sam3_tracking_predictor.py:81`); and its CPU connected components (the hole filling of every
frame) fail on a frame without new detections (`torch.stack` of an empty list,
`sam3/perflib/connected_components.py:48`). So the choice is the config's `track_with`: "video_model" by
default with --gpu, "association" on the CPU (per-frame detections linked by labeler/segment/track.py),
recorded in the manifest; asking for the video model without CUDA is one line. Tests run this module on
the CPU with those three steps replaced inside the test only (tests/segment/sam3_video_cpu.py).

The tracker's constructor also enters a bfloat16 CUDA autocast it never leaves, which would autocast every
later CUDA op of the thread; the builder leaves it at once, and the backend autocasts its own calls to
bfloat16, always: the detector hands the tracker bfloat16 features (`sam3/model/sam3_image.py:839`), which
the tracker's float32 convolutions only take under autocast (`mixed_precision` does not apply here).

Importing this module imports neither torch nor sam3.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from data_schema.backends import Sam3Config
from labeler.segment.base import Masks
from labeler.segment.sam2_video import SessionFrames
from labeler.segment.sam3_model import Sam3ConfigError, quiet_sam3_import
from labeler.segment.sam3_video_model import _MEAN, _STD, VideoThresholds, load_sam3_video

if TYPE_CHECKING:
    import torch


class VideoFrames(SessionFrames):
    """A chunk's images as the official folder loader (`sam3.model.io_utils`) makes model input: PIL
    resize to the square input, [0, 1], float16, normalised by mean = std = 0.5; (3, S, S), made when the
    detector asks for a frame (it encodes one frame at a time). The chunk's frames as SAM2's session
    holds them; only the preparation of a frame differs (the package's own loader)."""

    def __getitem__(self, i: int) -> torch.Tensor:
        import torch
        from PIL import Image
        from torchvision.transforms import functional as tf

        s = self.image_size
        img = tf.to_tensor(tf.resize(Image.fromarray(self.frames[i]), size=[s, s])).half()
        img -= torch.tensor(_MEAN, dtype=torch.float16)[:, None, None]
        img /= torch.tensor(_STD, dtype=torch.float16)[:, None, None]
        return img


def new_video_session(model: Any, frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """The video model's session state as `Sam3VideoInference.init_state` makes it, over in-memory frames
    (a test compares the keys with `init_state`'s on a JPEG folder): the frames stay on the host until
    the detector encodes them."""
    import torch

    with quiet_sam3_import():
        from sam3.model.data_misc import BatchedDatapoint, FindStage, convert_my_tensors
        from sam3.model.geometry_encoders import Prompt
        from sam3.model.utils.misc import copy_data_to_device

    n, dev = len(frames), model.device
    h, w = frames[0].shape[:2]
    stages = [  # the per-frame detector inputs `init_state` makes (258 / 257: its historical widths)
        convert_my_tensors(
            FindStage(
                img_ids=[t],
                text_ids=[0],
                input_boxes=[torch.zeros(258)],
                input_boxes_mask=[torch.empty(0, dtype=torch.bool)],
                input_boxes_label=[torch.empty(0, dtype=torch.long)],
                input_points=[torch.empty(0, 257)],
                input_points_mask=[torch.empty(0)],
                object_ids=[],
            )
        )
        for t in range(n)
    ]
    batch = BatchedDatapoint(
        img_batch=[],
        find_text_batch=["<text placeholder>", "visual"],
        find_inputs=stages,
        find_targets=[None] * n,
        find_metadatas=[None] * n,
    )
    batch = copy_data_to_device(batch, dev, non_blocking=True)
    batch.img_batch = VideoFrames(frames, model.image_size)
    empty = Prompt(
        box_embeddings=torch.zeros(0, 1, 4, device=dev),
        box_mask=torch.zeros(1, 0, device=dev, dtype=torch.bool),
        box_labels=torch.zeros(0, 1, device=dev, dtype=torch.long),
        point_embeddings=torch.zeros(0, 1, 2, device=dev),
        point_mask=torch.zeros(1, 0, device=dev, dtype=torch.bool),
        point_labels=torch.zeros(0, 1, device=dev, dtype=torch.long),
    )
    return {
        "image_size": model.image_size,
        "num_frames": n,
        "orig_height": h,
        "orig_width": w,
        "constants": {"empty_geometric_prompt": empty},
        "input_batch": batch,
        "previous_stages_out": [None] * n,
        "text_prompt": None,
        "per_frame_raw_point_input": [None] * n,
        "per_frame_raw_box_input": [None] * n,
        "per_frame_visual_prompt": [None] * n,
        "per_frame_geometric_prompt": [None] * n,
        "per_frame_cur_step": [0] * n,
        "visual_prompt_embed": None,
        "visual_prompt_mask": None,
        "tracker_inference_states": [],
        "tracker_metadata": {},
        "feature_cache": {},
        "cached_frame_outputs": {},
        "action_history": [],
        "is_image_only": False,
    }


@dataclass(frozen=True)
class ClassFrame:
    """One frame of one class's session: object ids (the session's), masks, detection scores."""

    obj_ids: np.ndarray
    masks: np.ndarray
    scores: np.ndarray


class Sam3VideoChunk:
    """One chunk through the video model, one session per class (see the module docstring). After `run`:
    `stored_frames`, the most frame outputs any tracker state held at once; `released_frames`, how many
    it released; `stored_notes`, the most per-frame notes (masks, scores) a session held at once."""

    def __init__(self, model: Any, classes: Sequence[str]) -> None:
        self.model = model
        self.classes = tuple(classes)
        self.stored_frames = 0
        self.released_frames = 0
        self.stored_notes = 0

    def run(self, frames: Sequence[np.ndarray]) -> list[Masks]:
        """Masks of every frame of the chunk, in order, sorted by score; ids unique over the classes, from
        1 in order of first sight; empty masks left out (the non-overlap step can empty one)."""
        if not len(frames):
            return []
        ids: dict[tuple[int, int], int] = {}  # (class, session id) -> chunk id
        h, w = frames[0].shape[:2]
        out = []
        # the package's progress bars, once per session; set here, not in the interleaved sessions, whose
        # redirections would undo one another out of order
        with contextlib.ExitStack() as stack, contextlib.redirect_stderr(io.StringIO()):
            # the classes' sessions run in step, so that only one frame's masks per class wait here
            sessions = [
                stack.enter_context(contextlib.closing(self.session(frames, n))) for n in self.classes
            ]
            for t, step in enumerate(zip(*sessions, strict=True)):
                assert all(pos == t for pos, _ in step)  # the package yields every frame once, in order
                out.append(self._frame([f for _, f in step], ids, (h, w)))
        return out

    def _frame(
        self, per_class: list[ClassFrame], ids: dict[tuple[int, int], int], size: tuple[int, int]
    ) -> Masks:
        """One frame's masks of every class, sorted by score, under their chunk ids."""
        masks, scores, names, tids = [], [], [], []
        for c, f in enumerate(per_class):
            for k, obj in enumerate(f.obj_ids.tolist()):
                chunk_id = ids.setdefault((c, obj), len(ids) + 1)
                if f.masks[k].any():
                    masks.append(f.masks[k])
                    scores.append(f.scores[k])
                    names.append(self.classes[c])
                    tids.append(chunk_id)
        order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
        return Masks(
            masks=np.stack(masks)[order] if masks else np.zeros((0, *size), bool),
            scores=np.asarray(scores, np.float32)[order].clip(0, 1),
            stability=np.ones(len(masks), np.float32),
            class_names=tuple(names[k] for k in order),
            track_ids=tuple(tids[k] for k in order),
        )

    def session(self, frames: Sequence[np.ndarray], name: str) -> Generator[tuple[int, ClassFrame]]:
        """One class's session: the text prompt on the first frame, then the official propagation."""
        model = self.model
        state = new_video_session(model, frames)
        model.add_prompt(state, frame_idx=0, text_str=name)
        gen = model.propagate_in_video(state, start_frame_idx=0)
        with contextlib.closing(gen):
            for t, out in gen:
                yield (
                    t,
                    ClassFrame(
                        obj_ids=np.asarray(out["out_obj_ids"], np.int64),
                        masks=np.asarray(out["out_binary_masks"], bool),
                        scores=np.asarray(out["out_probs"], np.float32),
                    ),
                )
                self._release(state, t)

    def _release(self, state: dict[str, Any], t: int) -> None:
        """Drop what no later frame reads once frame `t` is out: per tracker state, the outputs of frames
        older than those its memory would pick for the next frame to run (the tracker's own choice,
        `frame_filter`, or its window: the frames it picks only move forward), and `t`'s masks and notes."""
        tracker = self.model.tracker
        n = state["num_frames"]
        # the hot start holds outputs back: the session may have run well past the frame it yields
        nxt = 1 + max(k for k, done in enumerate(state["previous_stages_out"]) if done is not None)
        for trk in state["tracker_inference_states"]:
            book = trk["output_dict"]["non_cond_frame_outputs"]
            if tracker.use_memory_selection:
                picked = tracker.frame_filter(trk["output_dict"], False, nxt, n, 1)
                oldest = min(picked) if picked else nxt
            else:
                oldest = nxt - max(tracker.max_obj_ptrs_in_encoder, tracker.num_maskmem)
            for f in [f for f in book if f < oldest]:
                del book[f]
                self.released_frames += 1
                for per_obj in trk["output_dict_per_obj"].values():
                    per_obj["non_cond_frame_outputs"].pop(f, None)
                trk["frames_already_tracked"].pop(f, None)
            self.stored_frames = max(self.stored_frames, len(book))
        state["cached_frame_outputs"].pop(t, None)
        meta = state["tracker_metadata"]
        meta["obj_id_to_tracker_score_frame_wise"].pop(t, None)
        meta.get("rank0_metadata", {}).get("suppressed_obj_ids", {}).pop(t, None)
        notes = len(state["cached_frame_outputs"]) + len(meta["obj_id_to_tracker_score_frame_wise"])
        self.stored_notes = max(self.stored_notes, notes)


def video_model_problem(device: str) -> str | None:
    """Why the video model cannot run on `device` ("cpu", "cuda", "cuda:1"), or None where it can."""
    if device.split(":")[0] == "cuda":
        return None
    return (
        "the SAM 3 video model runs on CUDA only (the sam3 package's tracker calls .cuda() on every "
        "tracked frame, sam3/model/sam3_tracker_base.py:657); add --gpu, or --sam3-track-with association"
    )


class LoadedVideoModel:
    """One backend instance's video model (loaded strictly, on `device`) and its classes."""

    def __init__(self, config: Sam3Config, device: str) -> None:
        import torch

        problem = video_model_problem(device)
        if problem:
            raise Sam3ConfigError(problem)
        assert config.classes is not None  # the config refuses None
        self.classes = config.classes
        self.device = torch.device(device)
        thresholds = VideoThresholds(
            score_threshold_detection=config.confidence_threshold,
            det_nms_thresh=config.det_nms_thresh,
            new_det_thresh=config.new_det_thresh,
        )
        self.model = load_sam3_video(
            config.arch, config.checkpoint, config.bpe_path, thresholds, device=device
        )

    def track(self, frames: Sequence[np.ndarray]) -> list[Masks]:
        """A chunk's masks with chunk-wide track ids and class names (`Sam3VideoChunk`)."""
        import torch

        from labeler.models.precision import autocast
        from labeler.segment.sam3_model import without_pinned_memory

        # Always bf16: the detector hands the tracker bfloat16 features (sam3_image.py, "cast the SAM2
        # backbone features to bfloat16"), which the tracker's float32 convolutions take only under autocast.
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), on_device, autocast(self.device, True), without_pinned_memory():
            return Sam3VideoChunk(self.model, self.classes).run(frames)
