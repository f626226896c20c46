"""A tiny SAM 3 with deterministic random weights, for tests and CPU benchmarks (nothing is downloaded).

`write_tiny_sam3(folder)` writes `sam3_tiny.json` (a `Sam3Arch`: the released layout shrunk to a 112 px
input, a 2-block ViT of width 32, a 1-layer text encoder of width 32, width-32 fusion encoder / decoder of
one layer each with 16 queries) and `sam3_tiny.pt` (`{"model": {"detector.…": …}}`, the release layout,
of that model initialised by the package under `torch.manual_seed(seed)`), so it goes through the
user-facing loader like a real `sam3.pt`. About 1.7 M parameters (most of them the 49408-token
embedding), 7 MB; one 96 x 128 image with two classes takes well under a second on a CPU core.

`write_tiny_sam3(folder, video=True)` writes the whole video model instead (`sam3_tiny_video.pt`,
`{"model": {"detector.…", "tracker.…"}}` as the release holds it; the arch's tracker is 1 memory-attention
layer, 16-channel memory, 3 memory frames, object pointers of the last 4 frames), its tracker's
object-score head biased to "present" so that random weights carry objects over frames.

Random weights detect nothing in particular: scores sit near 0.25 (two sigmoids of small logits), so
`OPEN_THRESHOLD` lets every query through and the masks are whatever the random head draws.

`official_processor` builds the official image predictor (`Sam3Processor`) on the same model (the
reference of the parity test and the benchmark).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeler.segment.sam3_model import Sam3Arch

if TYPE_CHECKING:
    import torch

ARCH_NAME = "sam3_tiny.json"
CHECKPOINT_NAME = "sam3_tiny.pt"
VIDEO_CHECKPOINT_NAME = "sam3_tiny_video.pt"
OPEN_THRESHOLD = 0.0  # confidence_threshold that keeps every query of the random model

TINY = Sam3Arch(
    resolution=112,
    vit_dim=32,
    vit_depth=2,
    vit_heads=2,
    vit_mlp_ratio=2.0,
    vit_window=4,
    vit_global_blocks=(1,),
    vit_pretrain_size=112,
    text_width=32,
    text_heads=2,
    text_layers=1,
    d_model=32,
    heads=2,
    ffn_dim=64,
    encoder_layers=1,
    decoder_layers=1,
    queries=16,
    geometry_layers=1,
    tracker_layers=1,
    tracker_ffn_dim=64,
    tracker_mem_dim=16,
    tracker_num_maskmem=3,
    tracker_max_obj_ptrs=4,
)

# A mid-size model for CPU benchmarks (11.2 M parameters, 336 px input, 50 queries): compute, not per-call
# overhead, dominates as in the released model, while a pass still takes a fraction of a second.
SMALL = Sam3Arch(
    resolution=336,
    vit_dim=192,
    vit_depth=6,
    vit_heads=4,
    vit_mlp_ratio=4.0,
    vit_window=12,
    vit_global_blocks=(2, 5),
    vit_pretrain_size=336,
    text_width=128,
    text_heads=4,
    text_layers=4,
    d_model=64,
    heads=4,
    ffn_dim=256,
    encoder_layers=2,
    decoder_layers=2,
    queries=50,
    geometry_layers=1,
)


def write_tiny_sam3(
    folder: Path, *, seed: int = 0, arch: Sam3Arch = TINY, video: bool = False
) -> tuple[Path, Path]:
    """Write the tiny SAM 3's architecture JSON and checkpoint (seed-`seed` weights); returns both paths.
    `video`: the whole video model (detector with the tracker's neck, and tracker), as a release `sam3.pt`
    holds it, written as `sam3_tiny_video.pt`; the image backend reads its detector part."""
    import torch

    from labeler.segment.sam3_model import build_sam3, find_bpe, release_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    arch_path = folder / ARCH_NAME
    ckpt_path = folder / (VIDEO_CHECKPOINT_NAME if video else CHECKPOINT_NAME)
    arch_path.write_text(arch.model_dump_json(indent=2) + "\n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if video:
            from labeler.segment.sam3_video_model import build_sam3_video

            model = build_sam3_video(arch, find_bpe(None))
            image = model.detector
            # Random weights give the tracker's object-score head a negative logit, so it would call
            # every object absent and blank its mask on the next frame: bias it to "present", so that
            # the tracker carries objects and tests see tracks longer than one frame.
            torch.nn.init.constant_(model.tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias, 8.0)
        else:
            model = image = build_sam3(arch, find_bpe(None))
        # The package leaves two text-encoder tensors as torch.empty (a release checkpoint fills them);
        # random weights need values: CLIP's initialisation of the same tensors.
        text = image.backbone.language_backbone.encoder
        torch.nn.init.normal_(text.positional_embedding, std=0.01)
        torch.nn.init.normal_(text.text_projection, std=arch.text_width**-0.5)
    torch.save({"model": model.state_dict()} if video else release_state_dict(model), ckpt_path)
    return arch_path, ckpt_path


def official_processor(
    model: torch.nn.Module, *, resolution: int, device: str = "cpu", confidence_threshold: float = 0.5
) -> Any:
    """The official `Sam3Processor` on `model` at input side `resolution` (the arch's), its own transform."""
    from sam3.model.sam3_image_processor import Sam3Processor

    return Sam3Processor(
        model, resolution=resolution, device=device, confidence_threshold=confidence_threshold
    )
