"""`sgbm`: OpenCV semi-global matching with a per-pair search range, a left-right check and filling.

Each pass runs at the resolution it needs:
1. the search range: one SGBM pass at `1/coarse_scale` resolution;
2. the left view at full resolution over that range only, on images padded on the left, so the
   left-edge band that SGBM leaves empty (x < max disparity) is matched too;
3. the left-right check of both passes is OpenCV's own (`disp12MaxDiff`): the right view's disparities
   are read off the same aggregated cost volume, so the check costs no second SGBM pass (a mirrored
   right pass, full or half size, scored no better on the real pairs of benchmarks/eval_stereo_real.py);
4. the edge-aware fast global smoother (WLS) fills the rejected pixels from their consistent neighbours;
5. pixels hidden in the right view (occluded, or matched outside the right image) and those without
   support take the farther of their row's visible neighbours (`consistency.fill_from_background`):
   the surface behind an occluder continues behind it. They keep confidence 0, so a consumer that
   wants observed depth only thresholds the confidence.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from data_schema.backends import SgbmConfig
from labeler.stereo.base import STEREO_BACKENDS, Disparity, StereoBackend, check_pair
from labeler.stereo.consistency import fill_from_background, occluded, outside_right

_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "hh4": cv2.STEREO_SGBM_MODE_HH4,
}
_COARSE_MIN_WIDTH = 64  # px; the coarse pass never works on an image narrower than this
_COARSE_PERCENTILES = (0.2, 99.8)  # robust ends of the coarse disparity histogram
_MIN_SUPPORT = 1e-3  # WLS fill weight below which a pixel has no consistent neighbours to borrow from
_OUTLIER_SCALE_PX = 2.0  # deviation from the WLS surface that costs a consistent match 1/e of its confidence
# the left-right check reads the right view at the nearest column, so a match up to half a pixel left of
# the image still reads column 0 and counts as inside
OUTSIDE_MARGIN_PX = 0.5
OCCLUSION_TOL_PX = 0.5  # a covering match must land this far past a pixel's own to hide it
COARSE_LR_MAX_DIFF_PX = 1  # left-right tolerance of the coarse search-range pass, in coarse px


@STEREO_BACKENDS.register
class SgbmBackend(StereoBackend[SgbmConfig]):
    """Semi-global matching on the CPU; see the module docstring for the steps.

    Confidence is in [0.5, 1] for matches that passed the left-right check (with WLS: 1 on the smoothed
    surface, towards 0.5 away from it; without WLS: 1), in (0, 0.5) for WLS-filled pixels (their share
    of consistent support) and 0 for pixels filled from the background (hidden in the right view, or
    without support); NaN exactly where the disparity is NaN (a row with no visible pixel).
    """

    config_type = SgbmConfig
    uses_cuda = False

    def __init__(self, config: SgbmConfig | None = None, *, device: str = "cpu") -> None:
        config = config or SgbmConfig()
        if device != "cpu":
            raise ValueError(f"the sgbm backend runs on the CPU only, got device={device!r}")
        self.config = config

    def disparity(self, left: np.ndarray, right: np.ndarray) -> Disparity:
        check_pair(left, right)
        cfg = self.config
        lo, num = self.search_range(left, right)
        views = _views(left, right, color=cfg.color)
        disp = match(*views, min_disparity=lo, num_disparities=num, config=cfg, lr_max_diff=_lr_px(cfg))
        consistent = np.isfinite(disp)  # NaN: no unique match, or rejected by the left-right check
        if cfg.wls:
            smooth, support = wls_fill(
                left, disp, consistent, lam=cfg.wls_lambda, sigma_color=cfg.wls_sigma_color
            )
            # a consistent match far from its edge-aware neighbourhood is often a streak on a thin structure
            with np.errstate(invalid="ignore"):
                agreement = np.exp(-np.abs(disp - smooth) / _OUTLIER_SCALE_PX)
            fill = ~consistent & (support >= cfg.wls_min_support)
            disp = np.where(fill, smooth, disp).astype(np.float32)
            conf = np.where(consistent, 0.5 + 0.5 * agreement, 0.5 * np.minimum(support, 0.999))
        else:
            conf = np.where(consistent, 1.0, 0.0)
        hidden = (
            occluded(disp, tol_px=OCCLUSION_TOL_PX)
            | outside_right(disp, margin_px=OUTSIDE_MARGIN_PX)
            | ~np.isfinite(disp)
        )
        disp = fill_from_background(disp, hidden)
        conf = np.where(hidden, 0.0, conf)
        conf[np.isnan(disp)] = np.nan
        return Disparity(disparity_px=disp, confidence=conf.astype(np.float32))

    def search_range(self, left: np.ndarray, right: np.ndarray) -> tuple[int, int]:
        """(min_disparity, num_disparities) for this pair: from the config, or from a coarse pass.

        The coarse pass matches the left view at 1/`coarse_scale` resolution (never narrower than 64 px)
        over [-16, max_disparity_frac * W) coarse px, keeps the pixels that pass OpenCV's left-right
        check (`disp12MaxDiff` of COARSE_LR_MAX_DIFF_PX) and takes
        the 0.2 and 99.8 percentiles of their disparity, widened by two coarse pixels each way and
        rounded up to a multiple of 16. With under 1 % consistent pixels it keeps the whole range.
        """
        cfg = self.config
        if cfg.num_disparities is not None:
            return (cfg.min_disparity or 0), cfg.num_disparities
        h, w = left.shape[:2]
        s = max(1, min(cfg.coarse_scale, w // _COARSE_MIN_WIDTH))
        size = (max(1, w // s), max(1, h // s))
        small = [cv2.resize(img, size, interpolation=cv2.INTER_AREA) for img in (left, right)]
        lo_c = -16
        num_c = _ceil16(cfg.max_disparity_frac * size[0] - lo_c)
        coarse = cfg.model_copy(
            update={
                "block_size": min(cfg.block_size, 3),
                "speckle_window_size": cfg.speckle_window_size // s**2,
            }
        )
        views = _views(*small, color=cfg.color)
        d_l = match(
            *views,
            min_disparity=lo_c,
            num_disparities=num_c,
            config=coarse,
            lr_max_diff=COARSE_LR_MAX_DIFF_PX,
        )
        good = d_l[np.isfinite(d_l)]
        if good.size < max(32, 0.01 * d_l.size):
            return lo_c * s, num_c * s
        p_lo, p_hi = np.percentile(good, _COARSE_PERCENTILES)
        lo = math.floor((p_lo - 2.0) * s)
        hi = math.ceil((p_hi + 2.0) * s)
        return lo, _ceil16(hi - lo)


def match(
    left: np.ndarray,
    right: np.ndarray,
    *,
    min_disparity: int,
    num_disparities: int,
    config: SgbmConfig,
    lr_max_diff: int = -1,
) -> np.ndarray:
    """One OpenCV SGBM pass over [min_disparity, min_disparity + num_disparities), edges padded.

    Args:
        left, right: (H, W) or (H, W, 3) uint8 views.
        lr_max_diff: OpenCV's own left-right check (`disp12MaxDiff`, px; -1: off).

    Returns:
        (H, W) float32 disparity of `left` in px (1/16 px steps), NaN where SGBM found no unique match.
    """
    w = left.shape[1]
    hi = min_disparity + num_disparities
    pad_l, pad_r = max(hi, 0), max(-min_disparity, 0)
    if pad_l or pad_r:
        left = cv2.copyMakeBorder(left, 0, 0, pad_l, pad_r, cv2.BORDER_REPLICATE)
        right = cv2.copyMakeBorder(right, 0, 0, pad_l, pad_r, cv2.BORDER_REPLICATE)
    cn = 1 if left.ndim == 2 else left.shape[2]
    area = config.block_size**2
    matcher = cv2.StereoSGBM.create(
        minDisparity=min_disparity,
        numDisparities=num_disparities,
        blockSize=config.block_size,
        P1=config.p1_per_px * cn * area,
        P2=config.p2_per_px * cn * area,
        disp12MaxDiff=lr_max_diff,
        preFilterCap=config.pre_filter_cap,
        uniquenessRatio=config.uniqueness_ratio,
        speckleWindowSize=config.speckle_window_size,
        speckleRange=config.speckle_range,
        mode=_MODES[config.mode],
    )
    raw = matcher.compute(np.ascontiguousarray(left), np.ascontiguousarray(right))[:, pad_l : pad_l + w]
    disp = raw.astype(np.float32) / 16.0
    disp[raw < min_disparity * 16] = np.nan
    return disp


def wls_fill(
    guide: np.ndarray, disparity: np.ndarray, weight_mask: np.ndarray, *, lam: float, sigma_color: float
) -> tuple[np.ndarray, np.ndarray]:
    """Edge-aware normalized smoothing (OpenCV fast global smoother) of the masked disparity.

    Args:
        guide: (H, W, 3) uint8 image whose edges stop the smoothing.
        disparity: (H, W) float32, used where `weight_mask`.
        weight_mask: (H, W) bool, the trusted pixels.

    Returns:
        (filled, support): (H, W) float32 disparity everywhere (NaN without support) and the smoothed
        mask in [0, 1], the share of trusted pixels behind each value.
    """
    fgs = cv2.ximgproc.createFastGlobalSmootherFilter(guide, lam, sigma_color)
    m = weight_mask.astype(np.float32)
    num = fgs.filter(np.where(weight_mask, disparity, 0.0).astype(np.float32))
    den = fgs.filter(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = np.where(den > _MIN_SUPPORT, num / den, np.nan).astype(np.float32)
    return filled, np.clip(den, 0.0, 1.0).astype(np.float32)


def _views(left: np.ndarray, right: np.ndarray, *, color: bool) -> tuple[np.ndarray, np.ndarray]:
    if color:
        return left, right
    return cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)


def _lr_px(config: SgbmConfig) -> int:
    """OpenCV's left-right tolerance is whole px: `lr_max_diff_px` rounded, at least 1."""
    return max(1, round(config.lr_max_diff_px))


def _ceil16(x: float) -> int:
    return max(16, 16 * math.ceil(x / 16))
