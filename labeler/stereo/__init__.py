"""Stereo backends: `STEREO_BACKENDS.get(name)(config)`; importing this package registers them."""

from labeler.stereo import foundation_stereo as _foundation_stereo  # noqa: F401  (registers)
from labeler.stereo import sgbm as _sgbm  # noqa: F401
