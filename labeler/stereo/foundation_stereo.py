"""`foundation-stereo`: NVIDIA's FoundationStereo from a local release checkpoint, run as the official demo.

Steps for one rectified pair (uint8 RGB, H x W):

1. refuse a pair whose images look swapped (`detect_swapped`): a cheap photometric test of which side
   the matches lie on, independent of the network (see `swap_evidence`);
2. resize both images by `scale` (bilinear, as the demo's `cv2.resize`);
3. replicate-pad to a multiple of 32, split evenly between the two sides (the odd pixel after);
4. run the network (`valid_iters` GRU iterations; coarse-to-fine with `hiera`), unpad;
5. bring the disparity back to H x W (bilinear) and rescale it by W / W_scaled;
6. `remove_invisible`: NaN where the match x - d falls left of the right image;
7. confidence, FoundationStereo having none of its own:
   - `lr_check` (default): the network also matches the mirrored, swapped pair (fliplr(right) as the
     left image, fliplr(left) as the right; a valid rectified pair whose disparity, mirrored back, is
     the right image's disparity). err = |d_L(x) - d_R(x - d_L(x))| in px; pixels with err >
     `consistency_px` (occlusions, mismatches) are NaN, the others get confidence exp(-err /
     consistency_px), in (1/e, 1]. Both directions run as one batch, doubling the cost.
   - otherwise: agreement between the last two GRU iterations, exp(-|last update| / consistency_px).

On CUDA the network runs under autocast (`amp_dtype`, float16 by default as in the release) when
`mixed_precision` (default: the release cfg.yaml's setting); each Disparity records scale, iterations, dtype;
on the CPU always in float32. A CUDA out-of-memory error is retried pair by pair, then at half the
scale (down to 1/8), each reduction reported as a `ScaleReducedWarning` and kept in `scales_used`;
past 1/8 a `StereoOutOfMemoryError` is raised.

Importing this module does not import torch; the model is loaded once per backend instance, on first
use (and not pickled with the instance, so a backend can be shipped to workers cheaply).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

from data_schema.backends import FoundationStereoConfig
from labeler.errors import LabelerError
from labeler.models.foundation_stereo.release import CheckpointError, find_release, read_release_config
from labeler.stereo.base import STEREO_BACKENDS, Disparity, StereoBackend, check_pair
from labeler.stereo.consistency import lr_difference, outside_right

if TYPE_CHECKING:
    from labeler.models.foundation_stereo.model import FoundationStereo

_MIN_SCALE = 0.125  # OOM retries stop here
_SWAP_MIN_SHARE = 0.3  # share of textured pixels that must match on the wrong side ...
_SWAP_RATIO = 4.0  # ... and outnumber right-side matches by this factor, to call a pair swapped
OUTSIDE_MARGIN_PX = 0.0  # the demo's remove_invisible: any match left of the right image's first column


class ScaleReducedWarning(RuntimeWarning):
    """CUDA ran out of memory; the pair(s) were computed at a smaller scale than configured."""


class StereoOutOfMemoryError(LabelerError, RuntimeError):
    """CUDA ran out of memory even at the smallest scale tried."""


class SwappedPairError(LabelerError, ValueError):
    """The left and right images look swapped."""


@STEREO_BACKENDS.register
class FoundationStereoBackend(StereoBackend[FoundationStereoConfig]):
    """FoundationStereo; see the module docstring for the steps and the confidence.

    Args:
        config: the backend settings; `config.weights` is the release checkpoint (`--stereo-weights`).
        device: "cpu" or a CUDA device ("cuda", "cuda:1").

    Raises:
        CheckpointError: (at construction) no checkpoint given, checkpoint or cfg.yaml missing, bad cfg.yaml;
            (at first use) keys or shapes that do not match.
    """

    config_type = FoundationStereoConfig

    @classmethod
    def check_config(cls, config: FoundationStereoConfig) -> None:
        """Before any sample: the checkpoint and its cfg.yaml exist and cfg.yaml reads (a missing
        --stereo-weights is one line, not one failure per sample), and its weights are finite. Keys are
        checked at the first load."""
        from labeler.models.checkpoints import non_finite_problem

        release = find_release(config.weights)
        read_release_config(release.cfg).with_max_disp(config.max_disp)
        problem = non_finite_problem(release.weights)
        if problem:
            raise CheckpointError(release.weights, problem)

    def __init__(self, config: FoundationStereoConfig, *, device: str = "cpu") -> None:
        self.config = config
        self.device = device
        self.release = find_release(config.weights)
        self.args = read_release_config(self.release.cfg).with_max_disp(config.max_disp)
        self.scales_used: list[float] = []  # scale each pair of the last call was computed at
        self._model: FoundationStereo | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    @property
    def model(self) -> FoundationStereo:
        """The network, loaded on first access (strictly, float32, eval mode, on `device`)."""
        if self._model is None:
            from labeler.models.foundation_stereo.loader import load_foundation_stereo

            self._model = load_foundation_stereo(
                self.release.weights, max_disp=self.config.max_disp, device=self.device
            )
        return self._model

    def disparity(self, left: np.ndarray, right: np.ndarray) -> Disparity:
        return self.disparity_many([(left, right)])[0]

    def disparity_many(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Disparity]:
        """Match several pairs; pairs of equal size share forward passes of up to `batch_size` pairs.

        Args:
            pairs: (left, right) uint8 RGB (H, W, 3) rectified pairs.

        Returns:
            One `Disparity` per pair, in order.
        """
        for left, right in pairs:
            check_pair(left, right)
            if self.config.detect_swapped:
                check_not_swapped(left, right)
        out: list[Disparity | None] = [None] * len(pairs)
        scales: list[float] = [self.config.scale] * len(pairs)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, (left, _) in enumerate(pairs):
            by_size.setdefault(left.shape, []).append(i)
        for idx in by_size.values():
            for start in range(0, len(idx), self.config.batch_size):
                chunk = idx[start : start + self.config.batch_size]
                results = self._match([pairs[i] for i in chunk], self.config.scale)
                for i, (disp, scale) in zip(chunk, results, strict=True):
                    out[i], scales[i] = disp, scale
        self.scales_used = scales
        return cast(list[Disparity], out)

    # ------------------------------------------------------------ inference

    def _match(
        self, pairs: list[tuple[np.ndarray, np.ndarray]], scale: float
    ) -> list[tuple[Disparity, float]]:
        """Match equal-size pairs at `scale`, retrying after CUDA OOM pair by pair, then smaller."""
        try:
            raw = self._infer(pairs, scale)
        except Exception as err:  # only CUDA out-of-memory is handled; the rest is re-raised
            if not _is_cuda_oom(err):
                raise
            _free_cuda_cache()
            if len(pairs) > 1:
                return [r for pair in pairs for r in self._match([pair], scale)]
            smaller = scale / 2
            h, w = pairs[0][0].shape[:2]
            if smaller < _MIN_SCALE:
                raise StereoOutOfMemoryError(
                    f"CUDA out of memory on a {w}x{h} pair even at scale {scale:g}; "
                    "use a smaller --scale or the CPU"
                ) from None
            warnings.warn(
                ScaleReducedWarning(
                    f"CUDA out of memory on a {w}x{h} pair at scale {scale:g}; retrying at {smaller:g}"
                ),
                stacklevel=3,
            )
            return self._match(pairs, smaller)
        dtype = self.config.amp_dtype if self.autocast else "float32"
        iters = self.config.valid_iters
        return [
            (dataclasses.replace(self._finish(*r), scale=scale, iters=iters, dtype=dtype), scale) for r in raw
        ]

    @property
    def autocast(self) -> bool:
        """Mixed precision: only on CUDA (see labeler/models/precision.py); the config's choice, else the
        release's cfg.yaml."""
        from labeler.models.precision import autocasts

        wanted = self.config.mixed_precision
        wanted = self.args.mixed_precision if wanted is None else wanted
        return autocasts(self.device, bool(wanted))

    def _infer(
        self, pairs: list[tuple[np.ndarray, np.ndarray]], scale: float
    ) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        """Run the network; per pair (d_left, d_right or None, last_update): (H, W) float32 px, input size."""
        import torch

        from labeler.models.foundation_stereo.model import Padding

        cfg = self.config
        h0, w0 = pairs[0][0].shape[:2]
        lefts = [_resize(left, scale) for left, _ in pairs]
        rights = [_resize(right, scale) for _, right in pairs]
        if cfg.lr_check:  # the mirrored, swapped pairs: their disparity is the right image's, mirrored
            lefts, rights = lefts + [im[:, ::-1] for im in rights], rights + [im[:, ::-1] for im in lefts]
        model = self.model
        device = torch.device(self.device)

        def batch(images: list[np.ndarray]) -> torch.Tensor:
            return (
                torch.from_numpy(np.ascontiguousarray(np.stack(images)))
                .to(device)
                .permute(0, 3, 1, 2)
                .float()
            )

        a, b = batch(lefts), batch(rights)
        h, w = a.shape[-2:]
        pad = Padding.to_multiple(h, w)
        a, b = pad.pad(a, b)
        amp = self.autocast
        dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            if cfg.hiera:
                est = model.estimate_hierarchical(a, b, iters=cfg.valid_iters)
            else:
                est = model.estimate(a, b, iters=cfg.valid_iters)
        disp = pad.unpad(est.disparity.float())[:, 0].cpu().numpy()
        update = pad.unpad(est.last_update.float())[:, 0].cpu().numpy()
        n = len(pairs)
        out = []
        for i in range(n):
            d_left = _restore(disp[i], h0, w0)
            d_right = _restore(disp[n + i][:, ::-1], h0, w0) if cfg.lr_check else None
            out.append((d_left, d_right, _restore(update[i], h0, w0)))
        return out

    def _finish(self, d_left: np.ndarray, d_right: np.ndarray | None, update: np.ndarray) -> Disparity:
        """Invalidate and score one full-resolution disparity (see the module docstring)."""
        cfg = self.config
        valid = np.isfinite(d_left)
        if cfg.remove_invisible:
            valid &= ~outside_right(d_left, margin_px=OUTSIDE_MARGIN_PX)
        if d_right is not None:
            err = np.abs(lr_difference(d_left, d_right, sampling="linear"))
            with np.errstate(invalid="ignore"):
                valid &= err <= cfg.consistency_px
        else:
            err = update
        with np.errstate(invalid="ignore", over="ignore"):
            conf = np.exp(-err / cfg.consistency_px)
        disp = np.where(valid, d_left, np.nan).astype(np.float32)
        conf = np.where(valid, np.clip(conf, 0.0, 1.0), np.nan).astype(np.float32)
        return Disparity(disparity_px=disp, confidence=conf)


# ---------------------------------------------------------------- helpers (numpy)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)


def _restore(disp: np.ndarray, h0: int, w0: int) -> np.ndarray:
    """A disparity map computed on a resized image, back at (h0, w0) in input-resolution px."""
    h, w = disp.shape
    if (h, w) == (h0, w0):
        return np.ascontiguousarray(disp, dtype=np.float32)
    up = cv2.resize(np.ascontiguousarray(disp, dtype=np.float32), (w0, h0), interpolation=cv2.INTER_LINEAR)
    return (up * (w0 / w)).astype(np.float32)


def swap_evidence(
    left: np.ndarray, right: np.ndarray, *, max_width: int = 320, search_frac: float = 0.25, box: int = 9
) -> tuple[float, float]:
    """Where do the matches of the left image lie in the right one? A model-free sign test.

    On x-gradients of the greyscale images, downscaled to at most `max_width` px, each textured pixel's
    best block match (SAD over `box` x `box`) is sought at disparities 1..search_frac*W on both sides:
    at x - d (a correct pair: positive disparity) and at x + d (a swapped pair). A side wins a pixel when
    its best cost is below 0.7x the other side's. Pixels within the search range of the border are left out.

    Returns:
        (share of textured pixels matched at positive disparity, share matched at negative disparity).
    """

    def grey_dx(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        g: np.ndarray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        if size is not None:
            g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        return cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)

    h, w = left.shape[:2]
    size = None if w <= max_width else (max_width, max(8, round(h * max_width / w)))
    gl, gr = grey_dx(left, size), grey_dx(right, size)
    w = gl.shape[1]
    reach = max(2, int(w * search_frac))
    if w - 2 * reach < 8:
        return 0.0, 0.0
    best_pos = np.full(gl.shape, np.inf, np.float32)
    best_neg = np.full(gl.shape, np.inf, np.float32)
    for d in range(1, reach + 1):
        np.minimum(best_pos[:, d:], cv2.blur(np.abs(gl[:, d:] - gr[:, :-d]), (box, box)), out=best_pos[:, d:])
        np.minimum(
            best_neg[:, :-d], cv2.blur(np.abs(gl[:, :-d] - gr[:, d:]), (box, box)), out=best_neg[:, :-d]
        )
    mid = slice(reach, w - reach)
    best_pos, best_neg = best_pos[:, mid], best_neg[:, mid]
    texture = cv2.blur(np.abs(gl), (box, box))[:, mid]
    textured = texture > max(2.0, 0.5 * float(np.median(texture)))
    n = int(textured.sum())
    if n == 0:
        return 0.0, 0.0
    pos = int((textured & (best_pos < 0.7 * best_neg)).sum())
    neg = int((textured & (best_neg < 0.7 * best_pos)).sum())
    return pos / n, neg / n


def check_not_swapped(left: np.ndarray, right: np.ndarray) -> None:
    """Raise `SwappedPairError` (one line) when most matches lie at negative disparity."""
    pos, neg = swap_evidence(left, right)
    if neg >= _SWAP_MIN_SHARE and neg > _SWAP_RATIO * pos:
        raise SwappedPairError(
            f"left and right images look swapped: {100 * neg:.0f}% of textured pixels match at negative "
            f"disparity (vs {100 * pos:.0f}% positive); pass the left camera's image as left "
            "(or set detect_swapped=False)"
        )


def _is_cuda_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "CUDA out of memory" in str(err)
    )


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
