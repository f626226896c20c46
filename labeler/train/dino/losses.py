"""The DINOv2 self-supervised objective as plain functions over tensors (`labeler adapt-backbone`).

- `sinkhorn_knopp`: the teacher's prototype scores -> soft assignments whose prototypes share the batch
  equally (rows of the K x B matrix sum to 1/K) and whose samples each sum to 1 (the centering DINOv2
  uses for its large models, instead of a running centre);
- `dino_loss`: cross-entropy of the student's class-token distributions against the teacher's, over every
  (student crop, teacher global crop) pair of different views, averaged over pairs;
- `ibot_loss`: cross-entropy on masked patch tokens of the global crops, a mean over each crop's masked
  patches, summed over crops and divided by the number of global crops (unmasked crops count as zero);
- `koleo_loss`: the Kozachenko-Leonenko entropy estimate of L2-normalised class tokens, -mean log distance
  to each token's nearest neighbour, which spreads the features over the sphere.

Shapes: B images per batch, K prototypes, D feature width. Everything runs in float32 (the caller leaves
autocast first): softmax over 65536 prototypes in bf16 loses the small probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _dist(distributed: bool) -> bool:
    return distributed and torch.distributed.is_available() and torch.distributed.is_initialized()


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor, temperature: float, *, iterations: int = 3, distributed: bool = True
) -> Tensor:
    """Balanced soft assignments of the teacher's (N, K) prototype scores.

    Args:
        scores: (N, K) this process's rows (N may be 0: a rank whose crops have no masked patch).
        temperature: the teacher's.
        iterations: rounds of row and column normalisation.
        distributed: normalise over the rows of every DDP rank (every rank must call it then, as in a
            training step); False for a pass that runs on one rank (held-out).

    Returns:
        (N, K) float32: each row (a sample) sums to 1 exactly; each column (a prototype) sums to about
        N_total / K, closer with every round.
    """
    reduce = _dist(distributed)

    def all_sum(t: Tensor) -> Tensor:
        if reduce:
            torch.distributed.all_reduce(t)
        return t

    s = scores.float() / temperature
    # Subtracting the global maximum changes nothing after the normalisations and keeps exp finite at
    # small temperatures.
    top = s.max().clone() if s.numel() else s.new_full((), -torch.inf)
    if reduce:
        torch.distributed.all_reduce(top, op=torch.distributed.ReduceOp.MAX)
    if not reduce and s.shape[0] == 0:
        return s.clone()
    q = torch.exp(s - top).t()  # (K, N)
    k = q.shape[0]
    n_total = all_sum(torch.tensor(float(q.shape[1]), device=q.device))
    q /= all_sum(q.sum())
    for _ in range(iterations):
        q /= all_sum(q.sum(dim=1, keepdim=True))  # every prototype carries 1/K of the mass
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # every sample carries 1/N of it
        q /= n_total
    return (q * n_total).t()


def cross_entropy(target: Tensor, student: Tensor, temperature: float) -> Tensor:
    """(..., K) target distributions, (..., K) student scores -> (...) -sum target * log softmax."""
    return -(target * F.log_softmax(student.float() / temperature, dim=-1)).sum(dim=-1)


def dino_loss(
    student_global: Tensor, student_local: Tensor, teacher: Tensor, *, n_global: int, student_temp: float
) -> Tensor:
    """DINO class-token loss.

    Args:
        student_global: (n_global * B, K) scores of the student's global crops, crop-major.
        student_local: (n_local * B, K) scores of its local crops, crop-major (n_local may be 0).
        teacher: (n_global * B, K) the teacher's assignments of the same global crops, crop-major.
        n_global: global crops per image (2).
        student_temp: the student's softmax temperature.

    Returns:
        () the mean cross-entropy over the (student crop, teacher crop) pairs of different views.
    """
    t = teacher.chunk(n_global)
    total, pairs = student_global.new_zeros(()), 0
    for i, s in enumerate(student_global.chunk(n_global)):
        for j, tj in enumerate(t):
            if i != j:  # a global crop is never its own target
                total = total + cross_entropy(tj, s, student_temp).mean()
                pairs += 1
    n_local = student_local.shape[0] // max(t[0].shape[0], 1)
    for s in student_local.chunk(n_local) if n_local else ():
        for tj in t:
            total = total + cross_entropy(tj, s, student_temp).mean()
            pairs += 1
    return total / pairs


def ibot_loss(
    student_masked: Tensor, teacher_masked: Tensor, masks: Tensor, *, student_temp: float
) -> Tensor:
    """iBOT masked-patch loss.

    Args:
        student_masked: (M, K) student scores of the masked patches, in `masks.nonzero()` order.
        teacher_masked: (M, K) the teacher's assignments of the same patches (the teacher saw them).
        masks: (C, N) bool, the masks of the C global crops over their N patches.

    Returns:
        () sum over crops of the mean over its masked patches, divided by C; 0 when nothing is masked.
    """
    if student_masked.shape[0] == 0:
        return student_masked.sum() * 0.0
    per_patch = cross_entropy(teacher_masked, student_masked, student_temp)  # (M,)
    counts = masks.sum(dim=1).clamp(min=1).float()  # (C,)
    weight = (1.0 / counts)[masks.nonzero()[:, 0]]  # each patch's share of its crop's mean
    return (per_patch * weight).sum() / masks.shape[0]


def koleo_loss(features: Tensor, *, eps: float = 1e-8) -> Tensor:
    """(B, D) features -> () -mean over samples of log(distance to the nearest other sample), after L2
    normalisation; 0 for fewer than 2 samples (an epoch's last batch may hold one image)."""
    if features.shape[0] < 2:
        return features.sum() * 0.0
    x = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():
        sims = x @ x.t()
        sims.fill_diagonal_(-2.0)  # below any cosine: a sample is never its own neighbour
        nearest = sims.argmax(dim=1)
    dist = (x - x[nearest]).norm(dim=-1)
    return -torch.log(dist + eps).mean()
