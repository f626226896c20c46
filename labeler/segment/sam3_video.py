"""`--masks sam3 --track` on CUDA: the official SAM 3 video model, built at the sizes of a `Sam3Arch`.

The model is the package's `Sam3VideoInferenceWithInstanceInteractivity`: its detector
(`Sam3ImageOnVideoMultiGPU`, the image model plus the second neck the tracker reads) finds every instance
of the text prompt on every frame, its tracker (`Sam3TrackerPredictor`, SAM 2's memory attention) carries
each object on, and its own heuristics (matching detections to masklets, hot start, keep-alive,
reconditioning) decide which objects start and end. `build_sam3_video(arch, ...)` builds it from the
package's classes with the arguments of `sam3.model_builder.build_sam3_video_model`, sizes taken from
the arch (input side, patch stride, feature grid = side / stride, memory-encoder interpolation = 16 x the
grid); at `Sam3Arch()` it is the released model (a test compares the two on the meta device).

A chunk (one sequence's frames in one shard, in order) runs one session per class, since the video model
takes one text prompt per session: `add_prompt(frame 0, text)` then `propagate_in_video`, the package's
own calls. Each object's id is unique over the chunk's classes and carries its class name.

Session state is ours, over in-memory frames (`new_video_session`: the keys `init_state` makes from a
folder of JPEGs, frames prepared on demand as its loader prepares them; a test checks the keys and the
masks against `init_state` on a JPEG folder). Memory stays bounded: the session keeps every frame's
tracker output, masks and per-frame notes; after each frame comes out, what no later frame can read is
released: tracker outputs older than the frames the tracker's own `frame_filter` (temporal
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_schema.backends import Sam3Config
from labeler.segment.base import Masks
from labeler.segment.sam3_model import (
    ARCH_FLAG,
    CHECKPOINT_FLAG,
    RELEASED_CHECKPOINT,
    Sam3Arch,
    Sam3ConfigError,
    Sam3WeightsError,
    _decoder,
    _encoder,
    _geometry,
    _mask_head,
    _scoring,
    _text,
    _vision,
    quiet_sam3_import,
)

if TYPE_CHECKING:
    import torch

# The image normalisation and the "up to 16 x the feature grid" memory-encoder input of the release.
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.5, 0.5, 0.5)
_MASK_STRIDE = 16


@dataclass(frozen=True)
class VideoThresholds:
    """The video model's detection thresholds (the rest are the release's heuristics)."""

    score_threshold_detection: float = 0.5  # a detection enters matching above this score
    det_nms_thresh: float = 0.1  # mask NMS between detections of a frame (0: off)
    new_det_thresh: float = 0.7  # an unmatched detection starts an object above this score


def _sine(dim: int) -> Any:
    with quiet_sam3_import():
        from sam3.model.position_encoding import PositionEmbeddingSine
    # no precomputed cache: the official builder fills it on "cuda" (see sam3_model._sine)
    return PositionEmbeddingSine(num_pos_feats=dim, normalize=True, scale=None, temperature=10000)


def _tracker(a: Sam3Arch) -> Any:
    """`sam3.model_builder.build_tracker(apply_temporal_disambiguation=True)` at the arch's sizes."""
    with quiet_sam3_import():
        from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
        from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
        from sam3.model.model_misc import TransformerWrapper
        from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
        from sam3.sam.transformer import RoPEAttention
    d, grid = a.d_model, a.resolution // a.patch_size
    maskmem = SimpleMaskEncoder(
        out_dim=a.tracker_mem_dim,
        position_encoding=_sine(a.tracker_mem_dim),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=d, kernel_size=3, stride=2, padding=1, interpol_size=[grid * _MASK_STRIDE] * 2
        ),
        fuser=SimpleFuser(
            layer=CXBlock(dim=d, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True),
            num_layers=2,
        ),
        in_dim=d,
    )

    def rope(**extra: Any) -> Any:
        return RoPEAttention(
            embedding_dim=d,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            rope_theta=10000.0,
            feat_sizes=[grid, grid],
            use_fa3=False,
            use_rope_real=False,
            **extra,
        )

    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=a.tracker_ffn_dim,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=rope(),
        d_model=d,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=rope(kv_in_dim=a.tracker_mem_dim, rope_k_repeat=True),
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=d,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=a.tracker_layers,
        use_act_checkpoint=False,
    )
    return Sam3TrackerPredictor(
        image_size=a.resolution,
        num_maskmem=a.tracker_num_maskmem,
        max_obj_ptrs_in_encoder=a.tracker_max_obj_ptrs,
        backbone=None,
        backbone_stride=a.patch_size,
        transformer=TransformerWrapper(encoder=encoder, decoder=None, d_model=d),
        maskmem_backbone=maskmem,
        multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True,
        trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False,
        non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False,
        max_cond_frames_in_attn=4,
        offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        clear_non_cond_mem_around_input=True,
        fill_hole_area=0,
        use_memory_selection=True,
    )


def build_sam3_video(arch: Sam3Arch, bpe_path: str | Path, thresholds: VideoThresholds | None = None) -> Any:
    """The video model of `arch` with the package's own initialisation (eval mode, float32, on the current
    default device), parts built in the official builder's order; `thresholds` replace the release's."""
    import torch

    with quiet_sam3_import():
        from sam3.model.model_misc import TransformerWrapper
        from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
        from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity
        from sam3.model.vl_combiner import SAM3VLBackbone

    a, t = arch, thresholds or VideoThresholds()
    autocast = torch.is_autocast_enabled("cuda")
    with quiet_sam3_import():  # its autocast warns on a machine without CUDA
        tracker = _tracker(a)
    # The tracker's constructor enters a CUDA bf16 autocast it never leaves ("for the entire model
    # process"), which would autocast every later CUDA op of this thread; the backend autocasts itself.
    tracker.bf16_context.__exit__(None, None, None)
    assert torch.is_autocast_enabled("cuda") == autocast
    neck = _vision(a, sam2_neck=True)
    text = _text(a, bpe_path)
    transformer = TransformerWrapper(encoder=_encoder(a), decoder=_decoder(a), d_model=a.d_model)
    head = _mask_head(a)
    geometry = _geometry(a)
    scoring = _scoring(a)
    detector = Sam3ImageOnVideoMultiGPU(
        num_feature_levels=1,
        backbone=SAM3VLBackbone(scalp=1, visual=neck, text=text),
        transformer=transformer,
        segmentation_head=head,
        semantic_segmentation_head=None,
        input_geometry_encoder=geometry,
        use_early_fusion=True,
        use_dot_prod_scoring=True,
        dot_prod_scoring=scoring,
        supervise_joint_box_scores=True,
    )
    model = Sam3VideoInferenceWithInstanceInteractivity(
        detector=detector,
        tracker=tracker,
        score_threshold_detection=t.score_threshold_detection,
        assoc_iou_thresh=0.1,
        det_nms_thresh=t.det_nms_thresh,
        new_det_thresh=t.new_det_thresh,
        hotstart_delay=15,
        hotstart_unmatch_thresh=8,
        hotstart_dup_thresh=8,
        suppress_unmatched_only_within_hotstart=True,
        min_trk_keep_alive=-1,
        max_trk_keep_alive=30,
        init_trk_keep_alive=30,
        suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
        suppress_det_close_to_boundary=False,
        fill_hole_area=16,
        recondition_every_nth_frame=16,
        masklet_confirmation_enable=False,
        decrease_trk_keep_alive_for_empty_masklets=False,
        image_size=a.resolution,
        image_mean=_MEAN,
        image_std=_STD,
        compile_model=False,
    )
    return model.eval()


def load_sam3_video(
    arch: str,
    checkpoint: str | Path | None,
    bpe_path: str | Path | None,
    thresholds: VideoThresholds,
    *,
    device: str = "cpu",
) -> Any:
    """Build the video model of `arch` and load `checkpoint` strictly (its `detector.` and `tracker.`
    weights, the release layout); eval mode, float32, on `device`.

    Raises:
        Sam3ConfigError: unknown arch or no BPE vocabulary.
        Sam3WeightsError: checkpoint missing or unreadable, without tracker weights, or not the arch's.
    """
    import torch

    from labeler.models.checkpoints import compare_keys
    from labeler.segment.sam3_model import (
        _COMPUTED_BUFFERS,
        check_checkpoint,
        find_bpe,
        read_checkpoint,
        resolve_arch,
    )

    sizes = resolve_arch(arch)
    vocab = find_bpe(bpe_path)
    ckpt = check_checkpoint(checkpoint)
    with torch.random.fork_rng(devices=[]):  # random init must not move the caller's RNG
        model = build_sam3_video(sizes, vocab, thresholds)
    state = read_checkpoint(ckpt)
    if not any(k.startswith("tracker.") for k in state):
        raise Sam3WeightsError(
            f"{ckpt}: no 'tracker.' weights in it (--track runs the SAM 3 video model, whose tracker a "
            f"release {RELEASED_CHECKPOINT} holds); pass {CHECKPOINT_FLAG} the full {RELEASED_CHECKPOINT}"
        )
    expected = model.state_dict()
    computed = {k for k in expected if k.rsplit(".", 1)[-1] in _COMPUTED_BUFFERS and k not in state}
    mismatch = compare_keys({k: v for k, v in expected.items() if k not in computed}, state)
    if mismatch:
        raise Sam3WeightsError(
            f"{ckpt}: does not match the {arch} video model ({mismatch.describe()}); pass {CHECKPOINT_FLAG} "
            f"{RELEASED_CHECKPOINT} (or the {ARCH_FLAG} it was trained with)"
        )
    model.load_state_dict(state, strict=not computed)
    return model.to(device).eval()


class VideoFrames:
    """A chunk's images as the official folder loader (`sam3.model.io_utils`) makes model input: PIL
    resize to the square input, [0, 1], float16, normalised by mean = std = 0.5; (3, S, S), made when the
    detector asks for a frame (it encodes one frame at a time)."""

    def __init__(self, frames: Sequence[np.ndarray], image_size: int) -> None:
        self.frames = frames
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.frames)

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
        per_class = [dict(self.session(frames, name)) for name in self.classes]
        ids: dict[tuple[int, int], int] = {}  # (class, session id) -> chunk id
        h, w = frames[0].shape[:2]
        out = []
        for t in range(len(frames)):
            masks, scores, names, tids = [], [], [], []
            for c, found in enumerate(per_class):
                f = found[t]
                for k, obj in enumerate(f.obj_ids.tolist()):
                    chunk_id = ids.setdefault((c, obj), len(ids) + 1)
                    if f.masks[k].any():
                        masks.append(f.masks[k])
                        scores.append(f.scores[k])
                        names.append(self.classes[c])
                        tids.append(chunk_id)
            order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
            out.append(
                Masks(
                    masks=np.stack(masks)[order] if masks else np.zeros((0, h, w), bool),
                    scores=np.asarray(scores, np.float32)[order].clip(0, 1),
                    stability=np.ones(len(masks), np.float32),
                    class_names=tuple(names[k] for k in order),
                    track_ids=tuple(tids[k] for k in order),
                )
            )
        return out

    def session(self, frames: Sequence[np.ndarray], name: str) -> Iterator[tuple[int, ClassFrame]]:
        """One class's session: the text prompt on the first frame, then the official propagation."""
        model = self.model
        state = new_video_session(model, frames)
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
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
