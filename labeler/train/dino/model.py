"""The model of `labeler adapt-backbone`: DINOv2 student and EMA teacher with their projection heads.

`DinoSSL` holds a student (ViT + projection head) and a teacher (a plain ViT + head, no gradients): the
teacher is an exponential moving average of the student, its momentum rising from `momentum` to 1 on a
cosine over all steps; its temperature warms up linearly from `warmup_teacher_temp` to `teacher_temp`.
The projection head (3-layer MLP, L2-normalised bottleneck, weight-normalised prototypes, shared by the
DINO and iBOT losses, as DINOv2's default) starts from a seeded random init: no trained heads were ever
released. A step (`forward` in training mode) first folds the student's latest weights into the teacher
(the update the official loop makes right after the optimiser step, so the two orders are the same), then
runs the teacher on the global crops (Sinkhorn-Knopp assignments of its class tokens and of the patches
the student sees masked) and the student on all crops (global ones with their masks).

What adapts: the last `unfreeze_last` blocks (with the final norm) and/or LoRA adapters (peft) on the
other blocks' linear layers. The teacher EMA follows the student's effective weights (base + LoRA delta),
so the teacher stays a plain ViT; `backbone_state` exports it (or the student after `merge_and_unload`)
as a bare state dict in the official DINOv2 layout, every key and shape of the parent.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_schema.dino_adapt import AdaptBackboneConfig
from labeler.io import atomic_path
from labeler.models.dinov2_dpt import DinoViT, ViTSpec
from labeler.train.dino.losses import sinkhorn_knopp

LORA_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.w12", "mlp.w3")


class DINOHead(nn.Module):
    """(..., D) tokens -> (..., K) prototype scores: MLP to a bottleneck, L2 norm, weight-normed linear."""

    def __init__(self, dim: int, prototypes: int, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck, prototypes, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last)
        with torch.no_grad():  # unit-norm prototypes to start with, as the official head
            self.last_layer.parametrizations.weight.original0.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(
            F.normalize(self.mlp(x), dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        )


def vit_of(backbone: nn.Module) -> DinoViT:
    """The DinoViT inside a backbone (itself, or a peft model's base model, LoRA layers in place)."""
    base = getattr(backbone, "get_base_model", None)
    inner = base() if callable(base) else backbone
    assert isinstance(inner, DinoViT)
    return inner


def encode(backbone: nn.Module, x: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) normalised images -> final-norm'd (class token (B, D), patch tokens (B, N, D)).

    `masks` (B, N) bool: those patch embeddings become the mask token (iBOT). Blocks before the first one
    with a trainable parameter run without autograd (the frozen part of an `--unfreeze-last` run).
    """
    vit = vit_of(backbone)
    first = next((i for i, b in enumerate(vit.blocks) if any(p.requires_grad for p in b.parameters())), None)
    h, w = x.shape[-2:]
    with torch.no_grad() if first != 0 else nullcontext():
        patches = vit.patch_embed(x)
        if masks is not None:
            patches = torch.where(masks[..., None], vit.mask_token.to(patches.dtype)[None], patches)
        tok = torch.cat([vit.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        tok = tok + vit.position_embedding(h // vit.patch_size, w // vit.patch_size, square_input=h == w)
    for i, block in enumerate(vit.blocks):
        with torch.no_grad() if first is None or i < first else nullcontext():
            tok = block(tok)
    with torch.no_grad() if first is None else nullcontext():
        tok = vit.norm(tok)
    return tok[:, 0], tok[:, 1:]


@torch.no_grad()
def effective_state(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's weights as a plain ViT would hold them (official names): LoRA deltas folded in."""
    vit = vit_of(backbone)
    out: dict[str, Tensor] = {
        n.replace(".base_layer", ""): p for n, p in vit.named_parameters() if ".lora_" not in n
    }
    for name, m in vit.named_modules():
        delta = getattr(m, "get_delta_weight", None)
        if callable(delta) and hasattr(m, "base_layer"):
            key = f"{name}.weight"
            out[key] = out[key] + delta("default").to(out[key].dtype)
    return out


def add_lora(backbone: DinoViT, blocks: range, rank: int, alpha: int) -> nn.Module:
    """A peft LoRA model over `backbone` with adapters on the linear layers of `blocks` (all else frozen)."""
    from peft import LoraConfig, get_peft_model

    def present(name: str) -> bool:
        try:
            return isinstance(backbone.get_submodule(name), nn.Linear)
        except AttributeError:
            return False

    targets = [f"blocks.{i}.{t}" for i in blocks for t in LORA_TARGETS if present(f"blocks.{i}.{t}")]
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    return get_peft_model(backbone, config)


@dataclass(frozen=True)
class Schedules:
    """Teacher temperature and EMA momentum as functions of the step (0-based) of the whole run."""

    total_steps: int
    teacher_temp: float
    warmup_teacher_temp: float
    warmup_steps: int
    momentum: float

    def temp(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.teacher_temp
        return (
            self.warmup_teacher_temp
            + (self.teacher_temp - self.warmup_teacher_temp) * step / self.warmup_steps
        )

    def mom(self, step: int) -> float:
        t = min(step / max(self.total_steps, 1), 1.0)
        return 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * t) + 1) / 2


class DinoSSL(nn.Module):
    """Student and EMA teacher (see the module docstring); `step` counts optimiser steps of the run."""

    step: Tensor

    def __init__(self, spec: ViTSpec, cfg: AdaptBackboneConfig, schedules: Schedules) -> None:
        super().__init__()
        dims = (cfg.prototypes, cfg.head_hidden, cfg.head_bottleneck)
        self.student = nn.ModuleDict({"backbone": DinoViT(spec), "head": DINOHead(spec.embed_dim, *dims)})
        self.teacher = nn.ModuleDict({"backbone": DinoViT(spec), "head": DINOHead(spec.embed_dim, *dims)})
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.schedules, self.sk_iterations = schedules, cfg.sinkhorn_iterations
        self.freeze_backbone()

    def freeze_backbone(self) -> None:
        self.student["backbone"].requires_grad_(False)

    def adapt(self, unfreeze_last: int, lora_rank: int, lora_alpha: int | None) -> None:
        """Make the last `unfreeze_last` blocks (+ final norm) trainable, LoRA on the blocks before them."""
        vit = vit_of(self.student["backbone"])
        depth = len(vit.blocks)
        first = depth - unfreeze_last
        if lora_rank and first > 0:
            self.student["backbone"] = add_lora(vit, range(first), lora_rank, lora_alpha or lora_rank)
            vit = vit_of(self.student["backbone"])
        for block in list(vit.blocks)[first:]:
            block.requires_grad_(True)
        if unfreeze_last:
            vit.norm.requires_grad_(True)

    def train(self, mode: bool = True) -> DinoSSL:
        super().train(mode)
        self.teacher.eval()  # as the official loop: the teacher never trains
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student (effective weights)."""
        s_back, t_back = (
            effective_state(self.student["backbone"]),
            dict(self.teacher["backbone"].named_parameters()),
        )
        pairs = [(t_back[k], s_back[k]) for k in t_back]
        s_head = dict(self.student["head"].named_parameters())
        pairs += [(p, s_head[k]) for k, p in self.teacher["head"].named_parameters()]
        for t, s in pairs:
            t.lerp_(s.to(t.dtype), 1.0 - momentum)  # exact where the student equals the teacher

    def forward(self, global_crops: Tensor, local_crops: Tensor, masks: Tensor) -> dict[str, Tensor]:
        """global_crops (2B, 3, G, G), local_crops (LB, 3, l, l) crop-major, masks (2B, N) bool -> scores and
        the teacher's assignments (module docstring); in training mode also one teacher update."""
        step = int(self.step)
        if self.training:
            if step > 0:
                self.update_teacher(self.schedules.mom(step - 1))
            temp = self.schedules.temp(step)
            self.step += 1
        else:
            temp = self.schedules.teacher_temp
        with torch.no_grad():
            t_cls, t_patch = encode(self.teacher["backbone"], global_crops)
            t_scores = self.teacher["head"](torch.cat([t_cls, t_patch[masks]]))
            n, its, ddp = t_cls.shape[0], self.sk_iterations, self.training  # held-out runs on one rank
            t_global = sinkhorn_knopp(t_scores[:n], temp, iterations=its, distributed=ddp)
            # on every rank, whether its crops have masked patches or not (the sums are collective)
            t_masked = sinkhorn_knopp(t_scores[n:], temp, iterations=its, distributed=ddp)
        s_cls, s_patch = encode(self.student["backbone"], global_crops, masks)
        head = self.student["head"]
        s_local = (
            head(encode(self.student["backbone"], local_crops)[0]) if local_crops.shape[0] else t_scores[:0]
        )
        return {
            "student_global": head(s_cls),
            "student_local": s_local,
            "student_masked": head(s_patch[masks]),
            "teacher_global": t_global,
            "teacher_masked": t_masked,
            "student_cls": s_cls,
            "teacher_cls": t_cls,
            "teacher_patch": t_patch,
            "teacher_temp": torch.tensor(temp),
            "momentum": torch.tensor(self.schedules.mom(max(step, 0))),
        }


def backbone_state(model: DinoSSL, which: str) -> dict[str, Tensor]:
    """The exported ViT (official layout, CPU, contiguous): the teacher with the pending EMA update folded
    in, or the student merged (peft `merge_and_unload`)."""
    if which == "teacher":
        teacher = copy.deepcopy(model.teacher["backbone"])
        step = int(model.step)
        if step > 0:
            s = effective_state(model.student["backbone"])
            with torch.no_grad():
                for k, p in teacher.named_parameters():
                    p.lerp_(s[k].to(p.dtype), 1.0 - model.schedules.mom(step - 1))
        state = teacher.state_dict()
    else:
        student = copy.deepcopy(model.student["backbone"])
        merge = getattr(student, "merge_and_unload", None)
        plain = merge() if callable(merge) else student
        state = plain.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_backbone(path: Path, state: dict[str, Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def parent_vit_state(path: Path, backbone: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(kind, the ViT's tensors in the official DINOv2 layout) of a DINOv2, Depth Anything V2 or
    FoundationStereo checkpoint, checked strictly against `backbone`; one WeightsError line otherwise."""
    from labeler.train.heads.model import BACKBONE_SPECS
    from labeler.train.weights import check_keys, classify, read_state_dict

    kind, state = classify(read_state_dict(path), path)
    vit = {k.removeprefix("pretrained."): v for k, v in state.items() if k.startswith("pretrained.")}
    with torch.device("meta"):  # names and shapes only: no memory for a ViT-g
        expected = DinoViT(BACKBONE_SPECS[backbone]).state_dict()
    check_keys(
        {f"pretrained.{k}": v for k, v in expected.items()},
        {f"pretrained.{k}": v for k, v in vit.items()},
        path,
        what=kind,
        backbone=backbone,
    )
    return kind, vit
