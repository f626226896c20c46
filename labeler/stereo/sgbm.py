"""`sgbm`: OpenCV semi-global matching with a per-pair search range, a left-right check and WLS filling.

One pass at `1/coarse_scale` resolution finds the disparity range of the pair; the full-resolution pass
searches only that range on images padded on the left, so the left-edge band that SGBM leaves empty
(x < max disparity) is matched too. Both views are matched; the left-right check keeps consistent
matches, the edge-aware fast global smoother (WLS) fills the rejected pixels from their consistent
neighbours, and pixels hidden in the right view (occluded, or matched outside the right image) are NaN.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from data_schema.backends import SgbmConfig
from labeler.stereo.base import STEREO_BACKENDS, Disparity, StereoBackend, check_pair
from labeler.stereo.consistency import lr_difference, occluded, outside_right

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
COARSE_LR_MAX_DIFF_PX = 1.0  # left-right tolerance of the coarse search-range pass, in coarse px


@STEREO_BACKENDS.register
class SgbmBackend(StereoBackend[SgbmConfig]):
    """Semi-global matching on the CPU; see the module docstring for the steps.

    Confidence is in [0.5, 1] for matches that passed the left-right check (1 at zero left-right
    difference, 0.5 at the tolerance) and in [0, 0.5) for WLS-filled pixels (their share of consistent
    support); NaN exactly where the disparity is NaN.
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
        d_left, d_right = match_both(
            *_views(left, right, color=cfg.color), min_disparity=lo, num_disparities=num, config=cfg
        )
        diff = lr_difference(d_left, d_right, sampling="nearest")
        with np.errstate(invalid="ignore"):
            consistent = np.abs(diff) <= cfg.lr_max_diff_px
            agreement = np.clip(1.0 - np.abs(diff) / cfg.lr_max_diff_px, 0.0, 1.0)
        disp = np.where(consistent, d_left, np.nan).astype(np.float32)
        if cfg.wls:
            smooth, support = wls_fill(
                left, disp, consistent, lam=cfg.wls_lambda, sigma_color=cfg.wls_sigma_color
            )
            # a consistent match far from its edge-aware neighbourhood is often a streak on a thin structure
            with np.errstate(invalid="ignore"):
                agreement = agreement * np.exp(-np.abs(d_left - smooth) / _OUTLIER_SCALE_PX)
            fill = ~consistent & (support >= cfg.wls_min_support)
            disp = np.where(fill, smooth, disp).astype(np.float32)
            conf = np.where(consistent, 0.5 + 0.5 * agreement, 0.5 * np.minimum(support, 0.999))
        else:
            conf = 0.5 + 0.5 * agreement
        conf = conf.astype(np.float32)
        hidden = (
            occluded(disp, tol_px=OCCLUSION_TOL_PX)
            | outside_right(disp, margin_px=OUTSIDE_MARGIN_PX)
            | ~np.isfinite(disp)
        )
        disp[hidden] = np.nan
        conf[hidden] = np.nan
        return Disparity(disparity_px=disp, confidence=conf)

    def search_range(self, left: np.ndarray, right: np.ndarray) -> tuple[int, int]:
        """(min_disparity, num_disparities) for this pair: from the config, or from a coarse pass.

        The coarse pass matches both views at 1/`coarse_scale` resolution (never narrower than 64 px)
        over [-16, max_disparity_frac * W) coarse px, keeps the left-right consistent pixels and takes
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
        d_l, d_r = match_both(
            *_views(*small, color=cfg.color), min_disparity=lo_c, num_disparities=num_c, config=coarse
        )
        with np.errstate(invalid="ignore"):
            good = d_l[np.abs(lr_difference(d_l, d_r, sampling="nearest")) <= COARSE_LR_MAX_DIFF_PX]
        if good.size < max(32, 0.01 * d_l.size):
            return lo_c * s, num_c * s
        p_lo, p_hi = np.percentile(good, _COARSE_PERCENTILES)
        lo = math.floor((p_lo - 2.0) * s)
        hi = math.ceil((p_hi + 2.0) * s)
        return lo, _ceil16(hi - lo)


def match_both(
    left: np.ndarray, right: np.ndarray, *, min_disparity: int, num_disparities: int, config: SgbmConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Disparity of the left view and of the right view (matched mirrored), both (H, W) float32 px."""
    lo, num = min_disparity, num_disparities
    d_left = match(left, right, min_disparity=lo, num_disparities=num, config=config)
    mirrored = match(right[:, ::-1], left[:, ::-1], min_disparity=lo, num_disparities=num, config=config)
    return d_left, np.ascontiguousarray(mirrored[:, ::-1])


def match(
    left: np.ndarray, right: np.ndarray, *, min_disparity: int, num_disparities: int, config: SgbmConfig
) -> np.ndarray:
    """One OpenCV SGBM pass over [min_disparity, min_disparity + num_disparities), edges padded.

    Args:
        left, right: (H, W) or (H, W, 3) uint8 views.

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
        disp12MaxDiff=-1,
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


def _ceil16(x: float) -> int:
    return max(16, 16 * math.ceil(x / 16))
