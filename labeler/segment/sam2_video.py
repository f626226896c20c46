"""`--masks sam2 --track`: automatic masks on keyframes, the official SAM2 video predictor in between.

`track_chunk(backend, frames, tracking=...)` labels one sequence chunk: the labelled frames of one sequence
within one shard, in frame order (positions 0..n-1 below; still frames skipped before do not count). Every
model call is the official package's: the automatic masks are the backend's (the steps of
`SAM2AutomaticMaskGenerator`); the propagation is `SAM2VideoPredictor.add_new_mask`, `propagate_in_video`
and `remove_object`, on the backend's own model, built as `build_sam2_video_predictor` builds it.

1. Keyframe at position 0: the automatic masks, resolved into one instance map (a pixel goes to its best
   mask, `labeler.depth.instance_map`), objects of at least `min_area_px` pixels; each becomes a new object
   of the session (`add_new_mask`), and its mask at that frame is the predictor's answer to that prompt.
2. The frames after a keyframe: `propagate_in_video` carries every live object on with the official memory
   (memory attention over each object's conditioning frame and its last `num_maskmem - 1` frames, object
   pointers of its last `max_obj_ptrs_in_encoder` frames).
3. The next keyframe comes `tracking.keyframe_every` frames after the last, or earlier at a frame whose
   propagated masks together cover less than `tracking.min_coverage` of the area the automatic masks
   covered at the last keyframe (objects lost, or gone out of view). There the frame's automatic objects
   are matched to its propagated masks by mask IoU (one-to-one, Hungarian, at least `tracking.min_iou`);
   known objects keep their ids and propagated masks, and each automatic object left over joins as a new
   object (a new object entering the view).
4. An object ends (`remove_object`) when its propagated mask stays empty for more than
   `tracking.max_gap_frames` frames, or when `tracking.max_keyframe_misses` keyframes in a row find no
   automatic mask that matches it (it drifted onto something else, or is gone): so the objects carried are
   those the generator keeps confirming, and their number stays bounded over a long chunk.

Bounded memory: the official session keeps every frame's output of every object (sam2 #264,
Grounded-SAM-2 #51), so it grows with the frames. After each frame, the outputs of frames the model can no
longer read (older than the memory frames and the object-pointer frames of the next frame) are released,
with their per-frame notes; what stays is per live object its conditioning output and a window of
`memory_window(model)` frames. Frames are prepared for the model on demand from the chunk's images, as the
official JPEG loader prepares them (only the current frame's features are cached, as in the official
session). Releasing changes no mask: tests compare with the official predictor run over the whole video.

Output: per frame a `Masks` of the live objects whose mask is not empty: score = sigmoid of the
predictor's object score, stability = SAM's stability score of the mask logits, `track_ids` = object ids.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from data_schema.manifest import TrackingConfig
from labeler.segment.base import Masks

if TYPE_CHECKING:
    import torch

    from labeler.segment.sam2_amg import Sam2MaskBackend

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the official loader's defaults (sam2.utils.misc)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class SessionFrames:
    """A chunk's images as the official JPEG loader turns frames into model input: resized to the model's
    square input by PIL, scaled to [0, 1], normalised by the ImageNet mean and std; (3, S, S) float32,
    made when the predictor asks for a frame (it caches the features of the last one it encoded)."""

    def __init__(self, frames: Sequence[np.ndarray], image_size: int) -> None:
        self.frames = frames
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> torch.Tensor:
        import torch
        from PIL import Image

        s = self.image_size
        img = np.asarray(Image.fromarray(self.frames[i]).resize((s, s))) / 255.0
        x = torch.from_numpy(img).permute(2, 0, 1).float()
        mean = torch.tensor(_IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(_IMAGENET_STD, dtype=torch.float32)[:, None, None]
        return (x - mean) / std


def new_session(model: Any, frames: Sequence[np.ndarray]) -> dict[str, Any]:
    """The official predictor's session state, with the keys and meanings `SAM2VideoPredictor.init_state`
    gives it, over in-memory frames instead of a folder of JPEGs (a test checks the keys against
    `init_state`'s). Frames stay on the host until encoded; outputs live on the model's device."""
    h, w = frames[0].shape[:2]
    return {
        "images": SessionFrames(frames, model.image_size),
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": False,
        "video_height": h,
        "video_width": w,
        "device": model.device,
        "storage_device": model.device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def memory_window(model: Any) -> int:
    """Frames back from the next frame that the model may still read: its non-conditioning memory frames
    (the last `num_maskmem - 1`, `memory_temporal_stride_for_eval` apart) and its object pointers (the last
    `max_obj_ptrs_in_encoder`)."""
    return max(
        int(model.max_obj_ptrs_in_encoder),
        int(model.num_maskmem) * int(model.memory_temporal_stride_for_eval),
    )


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU between the masks of (N, H, W) and (M, H, W) bool stacks (masks may overlap)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


class Sam2ChunkTracker:
    """One chunk's session (see the module docstring). After `run`: `keyframes` (positions),
    `added` ({position: {object id: its prompt mask}}), `ended` ({object id: position it ended after}),
    `stored_frames` (the most non-conditioning outputs any object held at once)."""

    def __init__(self, backend: Sam2MaskBackend, *, tracking: TrackingConfig, min_area_px: int = 1) -> None:
        self.backend = backend
        self.model = backend.model
        self.tracking = tracking
        self.min_area_px = min_area_px
        self.window = memory_window(self.model)
        self.keyframes: list[int] = []
        self.added: dict[int, dict[int, np.ndarray]] = {}
        self.ended: dict[int, int] = {}
        self.stored_frames = 0
        self._next_id = 1
        self._last_seen: dict[int, int] = {}
        self._misses: dict[int, int] = {}  # object id -> keyframes in a row without a matching automatic mask
        self._key_area = 0
        self._released = 0

    def run(self, frames: Sequence[np.ndarray]) -> list[Masks]:
        """Masks of every frame of the chunk, in order (see the module docstring)."""
        import torch

        if not len(frames):
            return []
        out: list[Masks] = []
        with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = new_session(self.model, frames)
            out.append(self._keyframe(state, frames, 0, _empty(frames[0].shape[:2])))
            pos = 1
            while pos < len(frames):
                pos = self._interval(state, frames, pos, out)
        _log_warnings(caught)
        return out

    # ----------------------------------------------------------------------------------------- steps

    def _interval(self, state: dict[str, Any], frames: Sequence[np.ndarray], start: int, out: list) -> int:
        """Propagate from `start` until a keyframe or an object ends; returns the next position to do."""
        cfg = self.tracking
        last_key = self.keyframes[-1]
        end = min(last_key + cfg.keyframe_every, len(frames) - 1)
        if not state["obj_ids"]:  # nothing to carry: empty frames up to the next keyframe
            lost = cfg.min_coverage > 0 and self._key_area > 0  # all gone: look again at once
            for pos in range(start, end + 1):
                nothing = _empty(frames[pos].shape[:2])
                if lost or pos == last_key + cfg.keyframe_every:
                    out.append(self._keyframe(state, frames, pos, nothing))
                    return pos + 1
                out.append(nothing)
            return end + 1
        for pos, found in self._propagate(state, start, end):
            self._release(state, pos)
            self._last_seen.update(dict.fromkeys(found.track_ids or (), pos))
            covered = int(found.masks.any(0).sum()) if len(found) else 0
            due = pos == last_key + cfg.keyframe_every
            lost = cfg.min_coverage > 0 and covered < cfg.min_coverage * self._key_area
            ending = [o for o, seen in self._last_seen.items() if pos - seen > cfg.max_gap_frames]
            if due or lost or ending:
                for obj in ending:
                    self.model.remove_object(state, obj, need_output=False)
                    del self._last_seen[obj]
                    self._misses.pop(obj, None)
                    self.ended[obj] = pos
                out.append(self._keyframe(state, frames, pos, found) if due or lost else found)
                return pos + 1
            out.append(found)
        return end + 1

    def _propagate(self, state: dict[str, Any], start: int, end: int) -> Iterator[tuple[int, Masks]]:
        """The official propagation over positions start..end, one frame's masks at a time."""
        gen = self.model.propagate_in_video(state, start_frame_idx=start, max_frame_num_to_track=end - start)
        with contextlib.closing(gen):
            quiet = contextlib.redirect_stderr(io.StringIO())  # its progress bar, once per interval
            with quiet:
                first = next(gen, None)
            step = first
            while step is not None:
                pos, obj_ids, logits = step
                yield pos, self._masks(state, pos, list(obj_ids), logits)
                step = next(gen, None)

    def _masks(self, state: dict[str, Any], pos: int, obj_ids: list[int], logits: torch.Tensor) -> Masks:
        """Masks of the objects whose mask at `pos` is not empty."""
        import torch
        from sam2.utils.amg import calculate_stability_score

        lg = logits[:, 0].float()
        masks = lg > 0
        keep = masks.flatten(1).any(1)
        scores = (
            torch.sigmoid(torch.stack([self._object_score(state, o, pos) for o in obj_ids]))
            if obj_ids
            else lg.new_zeros(0)
        )
        stability = calculate_stability_score(lg, 0.0, 1.0) if obj_ids else lg.new_zeros(0)
        ids = [o for o, k in zip(obj_ids, keep.tolist(), strict=True) if k]
        return Masks(
            masks=masks[keep].cpu().numpy(),
            scores=scores[keep].cpu().numpy().astype(np.float32),
            stability=stability[keep].clamp(0, 1).cpu().numpy().astype(np.float32),
            track_ids=tuple(ids),
        )

    def _object_score(self, state: dict[str, Any], obj_id: int, pos: int) -> torch.Tensor:
        idx = state["obj_id_to_idx"][obj_id]
        for book in (state["temp_output_dict_per_obj"][idx], state["output_dict_per_obj"][idx]):
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                found = book[kind].get(pos)
                if found is not None:
                    return found["object_score_logits"].float().reshape(())
        raise KeyError(f"object {obj_id} has no output at frame {pos}")

    def _keyframe(self, state: dict[str, Any], frames: Sequence[np.ndarray], pos: int, found: Masks) -> Masks:
        """Automatic masks of frame `pos`; those no propagated mask matches join as new objects."""
        from scipy.optimize import linear_sum_assignment

        from labeler.depth import instance_map

        self.keyframes.append(pos)
        auto = self.backend.masks(frames[pos])
        ids, _ = instance_map(auto.masks, auto.scores)
        objects = [ids == k for k in range(1, int(ids.max()) + 1)] if ids.size else []
        objects = [m for m in objects if int(m.sum()) >= self.min_area_px]
        self._key_area = int(np.any(objects, axis=0).sum()) if objects else 0
        new = list(range(len(objects)))
        confirmed: set[int] = set()
        if objects and len(found):
            iou = mask_iou(found.masks, np.stack(objects))
            rows, cols = linear_sum_assignment(-iou)
            pairs = [
                (int(r), int(c))
                for r, c in zip(rows, cols, strict=True)
                if iou[r, c] >= self.tracking.min_iou
            ]
            confirmed = {(found.track_ids or ())[r] for r, _ in pairs}
            new = [j for j in new if j not in {c for _, c in pairs}]
        found = self._end_unconfirmed(state, pos, found, confirmed)
        if not new:
            return found
        added: dict[int, np.ndarray] = {}
        result = None
        for j in new:
            obj = self._next_id
            self._next_id += 1
            added[obj] = objects[j]
            result = self.model.add_new_mask(state, pos, obj, objects[j])
        self.added[pos] = added
        assert result is not None
        _, obj_ids, logits = result
        rows = [k for k, o in enumerate(obj_ids) if o in added]
        for obj in added:  # an object whose first mask is empty still ends after max_gap_frames
            self._last_seen[obj] = pos
            self._misses[obj] = 0
        return _concat(found, self._masks(state, pos, [obj_ids[k] for k in rows], logits[rows]))

    def _end_unconfirmed(self, state: dict[str, Any], pos: int, found: Masks, confirmed: set[int]) -> Masks:
        """Count a keyframe's misses; end the objects missed `max_keyframe_misses` times in a row (their
        masks leave this frame's output too)."""
        gone = []
        for obj in list(state["obj_ids"]):
            self._misses[obj] = 0 if obj in confirmed else self._misses.get(obj, 0) + 1
            if self._misses[obj] >= self.tracking.max_keyframe_misses:
                gone.append(obj)
        for obj in gone:
            self.model.remove_object(state, obj, need_output=False)
            self._last_seen.pop(obj, None)
            self._misses.pop(obj)
            self.ended[obj] = pos
        if not gone:
            return found
        keep = [k for k, o in enumerate(found.track_ids or ()) if o not in gone]
        return Masks(
            masks=found.masks[keep],
            scores=found.scores[keep],
            stability=found.stability[keep],
            track_ids=tuple((found.track_ids or ())[k] for k in keep),
        )

    def _release(self, state: dict[str, Any], pos: int) -> None:
        """Drop the outputs and notes of frames the model can no longer read after `pos`."""
        cutoff = pos + 1 - self.window
        for idx, book in state["output_dict_per_obj"].items():
            old = book["non_cond_frame_outputs"]
            tracked = state["frames_tracked_per_obj"][idx]
            for f in range(self._released, cutoff):
                old.pop(f, None)
                if f not in book["cond_frame_outputs"]:
                    tracked.pop(f, None)
            self.stored_frames = max(self.stored_frames, len(old))
        self._released = max(self._released, cutoff)


def track_chunk(
    backend: Sam2MaskBackend, frames: Sequence[np.ndarray], *, tracking: TrackingConfig, min_area_px: int = 1
) -> list[Masks]:
    """Masks of a sequence chunk's frames with each object's id (`Sam2ChunkTracker`)."""
    return Sam2ChunkTracker(backend, tracking=tracking, min_area_px=min_area_px).run(frames)


def _empty(shape: tuple[int, ...]) -> Masks:
    z = np.zeros(0, np.float32)
    return Masks(masks=np.zeros((0, *shape[:2]), bool), scores=z, stability=z.copy(), track_ids=())


def _concat(a: Masks, b: Masks) -> Masks:
    return Masks(
        masks=np.concatenate([a.masks, b.masks]),
        scores=np.concatenate([a.scores, b.scores]),
        stability=np.concatenate([a.stability, b.stability]),
        track_ids=(*(a.track_ids or ()), *(b.track_ids or ())),
    )


def _log_warnings(caught: list[warnings.WarningMessage]) -> None:
    """The official predictor warns on every frame when its CUDA extension is missing (its hole filling is
    then skipped, as in the official session); say it once."""
    seen = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        key = "hole filling" if "Skipping the post-processing" in text else text[:120]
        if key not in seen:
            seen.add(key)
            log.info(
                "sam2 video: %s",
                "the CUDA extension sam2._C is not built: the predictor skips its hole "
                "filling (fill_hole_area), as the official session does"
                if key == "hole filling"
                else text[:300],
            )
