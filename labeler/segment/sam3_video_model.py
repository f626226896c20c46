"""The official SAM 3 video model, built at the sizes of a `Sam3Arch` (`--masks sam3 --track`, CUDA).

`build_sam3_video(arch, bpe_path, thresholds)` builds the package's
`Sam3VideoInferenceWithInstanceInteractivity` from the package's classes with the arguments of
`sam3.model_builder.build_sam3_video_model`: the tracker (`Sam3TrackerPredictor`: SAM 2's memory attention
and memory encoder, `build_tracker(apply_temporal_disambiguation=True)`), the detector
(`Sam3ImageOnVideoMultiGPU`: the image model of `sam3_model.py` plus the second neck the tracker reads),
and the release's heuristics. Sizes come from the arch: input side, patch stride, feature grid = side /
stride (the official 72), memory-encoder input = 16 x the grid (the official 1152), and the `tracker_*`
fields; at `Sam3Arch()` it is the released model (a test compares the two on the meta device). Positional
caches are not precomputed (the official builder fills them on "cuda").

The tracker's constructor enters a bfloat16 CUDA autocast it never leaves, which would autocast every later
CUDA op of the thread; the builder leaves it at once (the backend autocasts its own calls).

`load_sam3_video` loads a release checkpoint strictly, `detector.` and `tracker.` keys; one without tracker
weights, or of another arch, is a one-line `Sam3WeightsError` naming `--sam3-checkpoint`.

Importing this module imports neither torch nor sam3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeler.segment.sam3_model import (
    CHECKPOINT_FLAG,
    RELEASED_CHECKPOINT,
    Sam3Arch,
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

    from labeler.segment.sam3_model import (
        check_checkpoint,
        find_bpe,
        load_strict,
        read_checkpoint,
        resolve_arch,
    )

    sizes = resolve_arch(arch)
    vocab = find_bpe(bpe_path)
    ckpt = check_checkpoint(checkpoint)
    with torch.random.fork_rng(devices=[]):  # random init must not move the caller's RNG
        model = build_sam3_video(sizes, vocab, thresholds)
    state = read_checkpoint(ckpt)
    problem = tracker_weights_problem(ckpt, state)
    if problem:
        raise Sam3WeightsError(problem)
    return load_strict(model, state, ckpt, f"{arch} video model", device)


def tracker_weights_problem(ckpt: Path, state: dict[str, Any] | None = None) -> str | None:
    """The one line for a checkpoint without the video model's `tracker.` weights (an image-only one), or
    None; `state`: its tensors when already read, else the file is read memory-mapped (names only)."""
    if state is None:
        import pickle

        import torch

        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
            return None  # unreadable: the loader says why
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
    if isinstance(state, dict) and any(str(k).startswith("tracker.") for k in state):
        return None
    return (
        f"{ckpt}: no 'tracker.' weights in it (--track runs the SAM 3 video model, whose tracker a "
        f"release {RELEASED_CHECKPOINT} holds); pass {CHECKPOINT_FLAG} the full {RELEASED_CHECKPOINT}"
    )
