"""A hand-built stand-in for the tiny SAM2's network that segments by colour, so tests can ask the `sam2`
backend to find an object (random weights find nothing: their masks are speckles).

`use_colour_network(model)` replaces a loaded SAM2's image encoder and mask decoder in place; its prompt
encoder stays, so the backend's whole path is the official one: the point grid, the coordinate
transforms, the official prompt encoder, the decoder call, upsampling of the low-resolution logits,
the quality and stability filters, NMS, the crops, sorting. Only what the network computes is simple:

- encoder: the (ImageNet-normalised) input colour, box-averaged to the feature strides 4, 8 and 16;
- decoder: finds the prompted cell by matching the point token against the positional encoding of
  every cell of the stride-4 grid (the similarity SAM's token-to-image attention starts from), reads
  the colour there, and predicts as mask logits `logit_scale · (tolerance - colour distance)`, one
  mask per tolerance (three for multimask output, the middle one otherwise). Its predicted IoU is the
  mask's stability at low resolution.

A plain-coloured object on a colourful background therefore comes out as one mask per prompt inside it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TOLERANCES = (0.5, 1.0, 1.5)
"""Colour distances (in ImageNet-normalised units, about 57 digital numbers each) of the three masks."""
LOGIT_SCALE = 32.0
"""Logits per unit of colour distance: the official stability offset of 1 logit is 1/32 unit (2 DN), so
a clean object mask passes the official stability threshold (0.95) and speckles do not."""


class ColourEncoder(nn.Module):
    """The input colour at strides 4, 8, 16 in the first 3 of `d_model` channels (SAM2's FPN layout)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        levels = [F.avg_pool2d(image, stride) for stride in (4, 8, 16)]
        fpn = [F.pad(level, (0, 0, 0, 0, 0, self.d_model - 3)) for level in levels]  # zero channels
        return {
            "vision_features": fpn[-1],
            "vision_pos_enc": [torch.zeros_like(level) for level in fpn],
            "backbone_fpn": fpn,
        }


class ColourDecoder(nn.Module):
    """Masks of the pixels whose colour is near the prompted pixel's; see the module docstring."""

    tolerances: torch.Tensor

    def __init__(self, prompt_encoder: Any) -> None:
        super().__init__()
        # SAM2Base.forward_image projects the two high-resolution levels with these: keep the colour
        self.conv_s0 = nn.Identity()
        self.conv_s1 = nn.Identity()
        # a plain list, so the prompt encoder (sam2's PromptEncoder) is not also a submodule here
        self._prompt_encoder: list[Any] = [prompt_encoder]
        self.register_buffer("tolerances", torch.tensor(TOLERANCES))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(low-res mask logits (B, M, h, w), predicted IoU (B, M), mask tokens, object score logits)
        for B one-point prompts; h, w = the stride-4 grid (a quarter of the model input)."""
        colour = high_res_features[0][:, :3]  # (1 or B, 3, h, w)
        h, w = colour.shape[-2:]
        encoder = self._prompt_encoder[0]
        cells_pe = encoder.pe_layer((h, w)).flatten(1)  # (C, h*w) at the cell centres
        point_pe = sparse_prompt_embeddings[:, 0] - encoder.point_embeddings[1].weight  # positive point
        cell = torch.cdist(point_pe, cells_pe.T).argmin(dim=1)  # (B,) the prompted cell
        flat = colour.flatten(2).expand(len(cell), -1, -1)  # (B, 3, h*w)
        at_prompt = flat.gather(2, cell[:, None, None].expand(-1, 3, 1))  # (B, 3, 1)
        distance = (flat - at_prompt).norm(dim=1).view(-1, 1, h, w)
        tolerances = self.tolerances if multimask_output else self.tolerances[1:2]
        logits = LOGIT_SCALE * (tolerances.view(1, -1, 1, 1) - distance)  # (B, M, h, w)
        inner = (logits > 1.0).flatten(2).sum(-1)
        outer = (logits > -1.0).flatten(2).sum(-1).clamp(min=1)
        iou = inner / outer  # the mask's stability at low resolution
        tokens = logits.new_zeros(logits.shape[0], logits.shape[1], image_embeddings.shape[1])
        return logits, iou, tokens, logits.new_full((logits.shape[0], 1), 10.0)


def use_colour_network(model: Any) -> Any:
    """Swap a SAM2 model's image encoder and mask decoder for the colour stand-ins (in place).

    Args:
        model: a loaded `SAM2Base` (e.g. `Sam2MaskBackend(...).model`); its prompt encoder is kept.

    Returns:
        The same model, in eval mode.
    """
    model.image_encoder = ColourEncoder(int(model.sam_prompt_encoder.embed_dim))
    model.sam_mask_decoder = ColourDecoder(model.sam_prompt_encoder)
    device = next(model.sam_prompt_encoder.parameters()).device
    return model.to(device).eval()
